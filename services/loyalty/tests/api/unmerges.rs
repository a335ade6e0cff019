//! A profiles `CustomerUnmerged` undoes exactly what the merge with its id did, once, however
//! often it arrives.

use chrono::Duration;
use custops_contracts::custops::common::v1::Event;
use custops_contracts::custops::loyalty::v1 as pb;
use custops_contracts::custops::profiles::v1::{CustomerMerged, CustomerUnmerged};
use uuid::Uuid;

use crate::helpers::{
    TestApp, assert_ledger_invariants, deliver, feed_event, program, purchase, redeem, rid,
    spawn_app,
};

fn merged(merge_id: &str, source: Uuid, target: Uuid) -> Event {
    feed_event(&CustomerMerged {
        merge_id: merge_id.to_owned(),
        source_customer_id: source.to_string(),
        target_customer_id: target.to_string(),
        ..Default::default()
    })
}

fn unmerged(merge_id: &str, source: Uuid, target: Uuid) -> Event {
    feed_event(&CustomerUnmerged {
        merge_id: merge_id.to_owned(),
        source_customer_id: source.to_string(),
        target_customer_id: target.to_string(),
        ..Default::default()
    })
}

async fn enrol(app: &TestApp, program_id: &str, customer: Uuid) -> anyhow::Result<String> {
    Ok(app
        .client
        .clone()
        .enrol_member(pb::EnrolMemberRequest {
            request_id: rid(),
            program_id: program_id.to_owned(),
            customer_id: customer.to_string(),
            enrol_channel: String::new(),
        })
        .await?
        .into_inner()
        .member
        .unwrap_or_default()
        .member_id)
}

async fn member(app: &TestApp, member_id: &str) -> anyhow::Result<pb::Member> {
    Ok(app
        .client
        .clone()
        .get_member(pb::GetMemberRequest {
            member_id: member_id.to_owned(),
            view: 0,
        })
        .await?
        .into_inner()
        .member
        .unwrap_or_default())
}

/// (available, pending, qualifying, tier code, status) of a member.
async fn state(app: &TestApp, member_id: &str) -> anyhow::Result<(i64, i64, i64, String, i32)> {
    let m = member(app, member_id).await?;
    let b = m.balances.unwrap_or_default();
    Ok((
        b.available_points,
        b.pending_points,
        b.qualifying_points,
        m.tier.map(|t| t.tier_code).unwrap_or_default(),
        m.status,
    ))
}

#[tokio::test]
async fn an_unmerge_delivered_twice_restores_both_members_exactly_once() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut p = program(pb::ClawbackPolicy::WithinBalance, 0);
    p.return_window_days = 14;
    let program_id = app.create_program(p).await?;
    let mut client = app.client.clone();
    let (source_customer, target_customer) = (Uuid::now_v7(), Uuid::now_v7());
    let target = enrol(&app, &program_id, target_customer).await?;
    let source = enrol(&app, &program_id, source_customer).await?;
    app.grant(&target, 100).await?;
    app.clock.advance(Duration::seconds(1));
    app.grant(&source, 200).await?;
    // 600 pending points, and 600 qualifying points: silver.
    client
        .earn_points(purchase(&source, "o-src", 60_000))
        .await?;
    let active = pb::MemberStatus::Active as i32;
    assert_eq!(
        state(&app, &source).await?,
        (200, 600, 600, "silver".to_owned(), active)
    );

    deliver(&app, &merged("m-1", source_customer, target_customer)).await?;
    assert_eq!(
        state(&app, &target).await?,
        (300, 600, 600, "silver".to_owned(), active)
    );
    // While merged the survivor spends its own 100 points and 50 of the source's, and earns.
    client.redeem_points(redeem(rid(), &target, 150)).await?;
    app.grant(&target, 30).await?;

    let unmerge = unmerged("m-1", source_customer, target_customer);
    deliver(&app, &unmerge).await?;
    deliver(&app, &unmerge).await?;

    assert_eq!(
        state(&app, &source).await?,
        (150, 600, 600, "silver".to_owned(), active),
        "the restored member gets its unspent points, pending ones, qualifying and tier back"
    );
    let (available, pending, qualifying, _, status) = state(&app, &target).await?;
    assert_eq!(
        (available, pending, qualifying, status),
        (30, 0, 0, active),
        "the survivor keeps what is its own"
    );
    let (events, unmerge_out, unmerge_in): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM outbox WHERE type = 'custops.loyalty.v1.MembersUnmerged'), \
                (SELECT count(*) FROM ledger_entries WHERE kind = 11), \
                (SELECT count(*) FROM ledger_entries WHERE kind = 10)",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!((events, unmerge_out, unmerge_in), (1, 1, 1), "applied once");

    // The restored member is its own again: mutations by its id no longer go to the survivor.
    let spent = client
        .redeem_points(redeem(rid(), &source, 150))
        .await?
        .into_inner();
    assert_eq!(
        spent.member.map(|m| m.member_id).unwrap_or_default(),
        source,
        "no longer resolved to the survivor"
    );
    assert_eq!(state(&app, &target).await?.0, 30);
    // Its pending lot is released to it, not to the survivor.
    app.clock.advance(Duration::days(15));
    let released = client
        .run_point_release(pb::RunPointReleaseRequest::default())
        .await?
        .into_inner();
    assert_eq!(
        (released.members_processed, released.points_released),
        (1, 600)
    );
    assert_eq!(state(&app, &source).await?.0, 600);
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn an_unmerge_gives_a_re_linked_membership_back_to_the_restored_customer()
-> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let (source_customer, target_customer) = (Uuid::now_v7(), Uuid::now_v7());
    let source = enrol(&app, &program_id, source_customer).await?;
    app.grant(&source, 80).await?;
    let of_customer = |customer: Uuid| {
        let mut client = app.client.clone();
        let program_id = program_id.clone();
        async move {
            anyhow::Ok(
                client
                    .list_members(pb::ListMembersRequest {
                        program_id,
                        customer_id: customer.to_string(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner()
                    .members,
            )
        }
    };
    deliver(&app, &merged("m-2", source_customer, target_customer)).await?;
    let relinked = of_customer(target_customer).await?;
    assert_eq!(
        relinked
            .iter()
            .map(|m| m.member_id.as_str())
            .collect::<Vec<_>>(),
        [source.as_str()]
    );

    let unmerge = unmerged("m-2", source_customer, target_customer);
    deliver(&app, &unmerge).await?;
    deliver(&app, &unmerge).await?;
    let back = of_customer(source_customer).await?;
    assert_eq!(
        back.iter()
            .map(|m| m.member_id.as_str())
            .collect::<Vec<_>>(),
        [source.as_str()]
    );
    assert_eq!(state(&app, &source).await?.0, 80);
    assert!(
        of_customer(target_customer).await?.is_empty(),
        "the survivor no longer has the membership"
    );
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE type = 'custops.loyalty.v1.MembersUnmerged'",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(events, 1);
    // An unmerge of a merge loyalty never saw changes nothing.
    deliver(
        &app,
        &unmerged("m-unknown", source_customer, target_customer),
    )
    .await?;
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn mutations_of_a_merged_member_go_to_the_survivor_until_the_unmerge() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let (source_customer, target_customer) = (Uuid::now_v7(), Uuid::now_v7());
    let target = enrol(&app, &program_id, target_customer).await?;
    let source = enrol(&app, &program_id, source_customer).await?;
    app.grant(&source, 40).await?;
    deliver(&app, &merged("m-3", source_customer, target_customer)).await?;
    let earned = app.grant(&source, 5).await?;
    assert_eq!(
        earned.member.map(|m| m.member_id).unwrap_or_default(),
        target,
        "a merged member's mutations go to the survivor"
    );
    deliver(&app, &unmerged("m-3", source_customer, target_customer)).await?;
    assert_eq!(state(&app, &source).await?.0, 40);
    assert_eq!(state(&app, &target).await?.0, 5);
    assert_ledger_invariants(&app.pool).await
}
