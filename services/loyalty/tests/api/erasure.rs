//! Merge, unmerge, then erasure of the once-merged customer, all from the profiles feed: the
//! erased customer's membership is closed and anonymised, the other customer keeps exactly
//! its own points, and neither export holds the other's data.

use custops_contracts::custops::loyalty::v1 as pb;
use custops_contracts::custops::profiles::v1::{CustomerErased, CustomerMerged, CustomerUnmerged};
use tonic::Code;
use uuid::Uuid;

use crate::export::{enrol_customer, export};
use crate::helpers::{
    assert_ledger_invariants, by_id, deliver, error_info, feed_event, program, redeem, rid,
    spawn_app,
};

#[tokio::test]
async fn erasing_a_customer_after_merge_and_unmerge_leaves_the_other_its_own_points()
-> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let (s_customer, t_customer) = (Uuid::now_v7(), Uuid::now_v7());
    let s = enrol_customer(&app, &program_id, s_customer).await?;
    let t = enrol_customer(&app, &program_id, t_customer).await?;
    app.grant(&s, 300).await?;
    client.redeem_points(redeem(rid(), &s, 50)).await?;
    app.grant(&t, 100).await?;

    // S merged into T: T holds both balances.
    let merge_id = "merge-s-into-t".to_owned();
    deliver(
        &app,
        &feed_event(&CustomerMerged {
            merge_id: merge_id.clone(),
            source_customer_id: s_customer.to_string(),
            target_customer_id: t_customer.to_string(),
            ..Default::default()
        }),
    )
    .await?;
    assert_eq!(app.balances(&t).await?.available_points, 350);

    // Unmerged: S has its own 250 back.
    deliver(
        &app,
        &feed_event(&CustomerUnmerged {
            merge_id,
            source_customer_id: s_customer.to_string(),
            target_customer_id: t_customer.to_string(),
            ..Default::default()
        }),
    )
    .await?;
    assert_eq!(app.balances(&s).await?.available_points, 250);

    // S erased.
    deliver(
        &app,
        &feed_event(&CustomerErased {
            customer_id: s_customer.to_string(),
            ..Default::default()
        }),
    )
    .await?;

    // S's membership: closed, its points forfeited, no longer linked to anyone.
    let erased = client
        .get_member(pb::GetMemberRequest {
            member_id: s.clone(),
            view: 0,
        })
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    assert_eq!(
        (
            erased.status,
            erased.anonymized,
            erased.customer_id.as_str(),
            erased.balances.map(|b| b.available_points)
        ),
        (pb::MemberStatus::Closed as i32, true, "", Some(0))
    );
    let statement = client
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            member: by_id(&s),
            oldest_first: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .ledger_entries;
    assert!(
        statement.iter().all(|e| e.customer_id.is_empty()),
        "no entry names the erased customer"
    );
    assert_eq!(
        statement.last().map(|e| (e.kind, e.points)),
        Some((9, -250))
    );

    // T: exactly its own 100 points, in its own lot, with its own lifetime counters.
    let kept = app.balances(&t).await?;
    assert_eq!(
        (
            kept.available_points,
            kept.lifetime_earned_points,
            kept.lifetime_redeemed_points
        ),
        (100, 100, 0)
    );
    let lots = client
        .list_point_lots(pb::ListPointLotsRequest {
            member: by_id(&t),
            ..Default::default()
        })
        .await?
        .into_inner()
        .point_lots;
    assert_eq!(
        lots.iter()
            .map(|l| (l.member_id.as_str(), l.remaining_points))
            .collect::<Vec<_>>(),
        vec![(t.as_str(), 100)]
    );

    // The erased customer exports nothing; T exports its own membership only.
    let nothing = export(&app, &s_customer.to_string()).await?;
    assert!(nothing.members.is_empty(), "{nothing:?}");
    let own = export(&app, &t_customer.to_string()).await?;
    assert_eq!(own.members.len(), 1);
    let data = &own.members[0];
    assert_eq!(
        data.member.as_ref().map(|m| m.member_id.as_str()),
        Some(t.as_str())
    );
    assert!(
        data.ledger_entries
            .iter()
            .all(|e| e.member_id == t && e.customer_id == t_customer.to_string())
    );
    assert!(data.point_lots.iter().all(|l| l.member_id == t));
    assert!(data.reward_redemptions.is_empty());
    // T's MERGE_IN / UNMERGE_OUT entries stay (the ledger is append-only), but no longer name
    // the erased customer.
    let merge_entries: Vec<&pb::MergeDetails> = data
        .ledger_entries
        .iter()
        .filter_map(|e| match &e.details {
            Some(pb::ledger_entry::Details::Merge(merge)) => Some(merge),
            _ => None,
        })
        .collect();
    assert_eq!(merge_entries.len(), 2, "{:?}", data.ledger_entries);
    assert!(
        merge_entries.iter().all(|m| m.other_customer_id.is_empty()),
        "{merge_entries:?}"
    );
    assert!(!format!("{own:?}").contains(&s_customer.to_string()));

    // And S cannot enrol again.
    let refused = client
        .enrol_member(pb::EnrolMemberRequest {
            request_id: rid(),
            program_id,
            customer_id: s_customer.to_string(),
            enrol_channel: String::new(),
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("an erased customer enrolled again"))?;
    assert_eq!(
        (refused.code(), error_info(&refused).0.as_str()),
        (Code::FailedPrecondition, "CUSTOMER_ERASED")
    );
    assert_ledger_invariants(&app.pool).await
}
