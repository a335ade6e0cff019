//! ExportCustomerData: every membership of the customer with its whole history, exactly as
//! the other reads show it, oldest first; memberships merged into the customer's come along;
//! an unknown customer exports nothing; the scope is `loyalty.privacy`.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use custops_common::auth::{AuthSettings, TokenIssuer};
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::loyalty::v1 as pb;
use custops_contracts::custops::profiles::v1::CustomerMerged;
use custops_loyalty::domain::ManualClock;
use custops_testkit::TestDatabase;
use tonic::Code;
use tonic::metadata::MetadataValue;
use uuid::Uuid;

use crate::helpers::{
    TestApp, bad_fields, by_id, deliver, feed_event, grant, program, purchase, redeem, rid,
    spawn_app, start,
};

/// Enrols `customer_id` in `program_id`; returns the member id.
pub(crate) async fn enrol_customer(
    app: &TestApp,
    program_id: &str,
    customer_id: Uuid,
) -> anyhow::Result<String> {
    Ok(app
        .client
        .clone()
        .enrol_member(pb::EnrolMemberRequest {
            request_id: rid(),
            program_id: program_id.to_owned(),
            customer_id: customer_id.to_string(),
            enrol_channel: "store".to_owned(),
        })
        .await?
        .into_inner()
        .member
        .unwrap_or_default()
        .member_id)
}

/// The export of `customer_id`.
pub(crate) async fn export(
    app: &TestApp,
    customer_id: &str,
) -> anyhow::Result<pb::CustomerDataExport> {
    Ok(app
        .client
        .clone()
        .export_customer_data(pb::ExportCustomerDataRequest {
            customer_id: customer_id.to_owned(),
        })
        .await?
        .into_inner()
        .customer_data_export
        .unwrap_or_default())
}

/// What the other read RPCs say about one member, in the export's order (oldest first); tier
/// changes are the member's own.
async fn as_read(app: &TestApp, member_id: &str) -> anyhow::Result<pb::MemberDataExport> {
    let mut client = app.client.clone();
    let member = client
        .get_member(pb::GetMemberRequest {
            member_id: member_id.to_owned(),
            view: pb::MemberView::Full.into(),
        })
        .await?
        .into_inner()
        .member;
    let ledger_entries = client
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            member: by_id(member_id),
            page_size: 1000,
            oldest_first: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .ledger_entries;
    let mut point_lots = client
        .list_point_lots(pb::ListPointLotsRequest {
            member: by_id(member_id),
            page_size: 1000,
            states: vec![
                pb::PointLotState::Pending.into(),
                pb::PointLotState::Available.into(),
                pb::PointLotState::Exhausted.into(),
                pb::PointLotState::Expired.into(),
            ],
            ..Default::default()
        })
        .await?
        .into_inner()
        .point_lots;
    point_lots.sort_by_key(|l| {
        let t = l.earn_time.unwrap_or_default();
        (t.seconds, t.nanos, l.point_lot_id.clone())
    });
    let mut tier_changes = client
        .list_tier_changes(pb::ListTierChangesRequest {
            member_id: member_id.to_owned(),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .tier_changes;
    tier_changes.retain(|c| c.member_id == member_id);
    tier_changes.reverse();
    let mut reward_redemptions = client
        .list_reward_redemptions(pb::ListRewardRedemptionsRequest {
            member_id: member_id.to_owned(),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .reward_redemptions;
    reward_redemptions.reverse();
    Ok(pb::MemberDataExport {
        member,
        ledger_entries,
        point_lots,
        tier_changes,
        reward_redemptions,
    })
}

fn kinds(data: &pb::MemberDataExport) -> Vec<i32> {
    data.ledger_entries.iter().map(|e| e.kind).collect()
}

#[tokio::test]
async fn an_export_holds_every_membership_with_its_whole_history() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 365))
        .await?;
    let second_program = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let reward = app
        .create_reward(&program_id, "Coffee voucher", 40, 10)
        .await?;
    let customer = Uuid::now_v7();
    let member = enrol_customer(&app, &program_id, customer).await?;
    let other_membership = enrol_customer(&app, &second_program, customer).await?;
    let stranger = app.enrol(&program_id).await?;
    // Earn to silver (a tier change), redeem points and a reward, earn again.
    let earned = client
        .earn_points(purchase(&member, "o-1", 60_000))
        .await?
        .into_inner();
    client.redeem_points(redeem(rid(), &member, 100)).await?;
    client
        .redeem_reward(pb::RedeemRewardRequest {
            request_id: rid(),
            member: by_id(&member),
            reward_id: reward.reward_id.clone(),
            quantity: 1,
            ..Default::default()
        })
        .await?;
    client.earn_points(grant(rid(), &member, 20)).await?;
    client
        .earn_points(grant(rid(), &other_membership, 5))
        .await?;
    client.earn_points(grant(rid(), &stranger, 7)).await?;

    let exported = export(&app, &customer.to_string()).await?;
    assert_eq!(exported.customer_id, customer.to_string());
    assert!(exported.export_time.is_some());
    let member_ids: Vec<_> = exported
        .members
        .iter()
        .filter_map(|m| m.member.as_ref().map(|m| m.member_id.clone()))
        .collect();
    assert_eq!(member_ids, vec![member.clone(), other_membership.clone()]);
    // Each membership exactly as the other reads show it: FULL member, every entry, lot,
    // tier change and redemption, oldest first.
    assert_eq!(exported.members[0], as_read(&app, &member).await?);
    assert_eq!(exported.members[1], as_read(&app, &other_membership).await?);
    let data = &exported.members[0];
    assert!(
        data.member
            .as_ref()
            .and_then(|m| m.expiring.as_ref())
            .is_some(),
        "the FULL view"
    );
    assert_eq!(kinds(data), vec![1, 2, 2, 1], "earn, redeem, reward, earn");
    let changes: Vec<_> = data
        .tier_changes
        .iter()
        .map(|c| (c.to_tier_code.as_str(), c.ledger_entry_id.as_str()))
        .collect();
    let earn_id = earned.ledger_entry.unwrap_or_default().ledger_entry_id;
    assert_eq!(changes, vec![("member", ""), ("silver", earn_id.as_str())]);
    assert_eq!(data.point_lots.len(), 2);
    assert_eq!(data.reward_redemptions.len(), 1);
    assert_eq!(data.reward_redemptions[0].reward_id, reward.reward_id);

    // A customer loyalty never saw exports nothing; a malformed id names the field.
    let unknown = Uuid::now_v7().to_string();
    let nothing = export(&app, &unknown).await?;
    assert_eq!(
        (nothing.customer_id.as_str(), nothing.members.len()),
        (unknown.as_str(), 0)
    );
    for bad in ["", "not-a-uuid"] {
        let status = client
            .export_customer_data(pb::ExportCustomerDataRequest {
                customer_id: bad.to_owned(),
            })
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("`{bad}` accepted"))?;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["customer_id"]);
    }
    Ok(())
}

#[tokio::test]
async fn a_merged_membership_is_exported_with_the_survivor_and_under_its_own_customer()
-> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let (source_customer, target_customer) = (Uuid::now_v7(), Uuid::now_v7());
    let source = enrol_customer(&app, &program_id, source_customer).await?;
    let target = enrol_customer(&app, &program_id, target_customer).await?;
    app.grant(&source, 300).await?;
    app.grant(&target, 100).await?;
    deliver(
        &app,
        &feed_event(&CustomerMerged {
            merge_id: "merge-1".to_owned(),
            source_customer_id: source_customer.to_string(),
            target_customer_id: target_customer.to_string(),
            ..Default::default()
        }),
    )
    .await?;

    // The survivor's export holds its own membership and the one merged into it.
    let survivor = export(&app, &target_customer.to_string()).await?;
    let ids: Vec<_> = survivor
        .members
        .iter()
        .filter_map(|m| m.member.as_ref().map(|m| m.member_id.clone()))
        .collect();
    assert_eq!(ids, vec![source.clone(), target.clone()]);
    let merged = &survivor.members[0];
    assert_eq!(
        merged.member.as_ref().map(|m| m.status),
        Some(pb::MemberStatus::Merged as i32)
    );
    assert_eq!(kinds(merged), vec![1, 8], "earn, then MERGE_OUT");
    assert!(
        merged.point_lots.is_empty(),
        "its lots moved to the survivor"
    );
    assert_eq!(merged.tier_changes.len(), 1, "its own tier history only");
    let kept = &survivor.members[1];
    assert_eq!(kinds(kept), vec![1, 7], "earn, then MERGE_IN");
    assert_eq!(kept.point_lots.len(), 2, "its lot and the merged one");
    assert_eq!(kept.tier_changes.len(), 1, "its own tier history only");

    // The merged-away customer's export is its own (MERGED) membership.
    let merged_away = export(&app, &source_customer.to_string()).await?;
    assert_eq!(merged_away.members, vec![merged.clone()]);
    Ok(())
}

#[tokio::test]
async fn an_export_needs_the_privacy_scope() -> anyhow::Result<()> {
    const KEY: &str = "a-shared-key-of-at-least-32-bytes!";
    let db = TestDatabase::create().await?;
    let mut settings = ServiceSettings::for_local(ServiceKind::Loyalty, db.url());
    let auth = AuthSettings::jwt(KEY, "custops").map_err(anyhow::Error::msg)?;
    settings.server.auth = auth.clone();
    let (mut client, _stop) = start(
        settings,
        Arc::new(ManualClock::new(chrono::Utc::now())),
        None,
    )
    .await?;
    let issuer = TokenIssuer::from_settings(&auth).ok_or_else(|| anyhow::anyhow!("no issuer"))?;
    let call = |scope: &str| -> anyhow::Result<tonic::Request<pb::ExportCustomerDataRequest>> {
        let token = issuer
            .mint("profiles", &[scope], StdDuration::from_secs(300))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut request = tonic::Request::new(pb::ExportCustomerDataRequest {
            customer_id: Uuid::now_v7().to_string(),
        });
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}"))?,
        );
        Ok(request)
    };
    let reader = client.export_customer_data(call("loyalty.read")?).await;
    assert_eq!(reader.err().map(|s| s.code()), Some(Code::PermissionDenied));
    let privacy = client
        .export_customer_data(call("loyalty.privacy")?)
        .await?
        .into_inner();
    assert!(privacy.customer_data_export.is_some());
    Ok(())
}
