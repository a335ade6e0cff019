//! Reads show points as they stand now: points past their expiry are expired and pending
//! points past their return window are available, before any job or change of the member
//! writes it, and exactly as the jobs then write it.

use chrono::Duration;
use custops_contracts::custops::loyalty::v1 as pb;

use crate::helpers::{
    TestApp, assert_ledger_invariants, by_id, program, purchase, redeem, rid, spawn_app,
};

/// Everything the API reads about a member's points: the member (FULL view, `update_time`
/// left out), every lot in every state, and what expires within a year.
#[derive(Debug, PartialEq)]
struct PointsView {
    member: pb::Member,
    lots: Vec<pb::PointLot>,
    expiring: pb::GetExpiringPointsResponse,
}

async fn points_view(app: &TestApp, member_id: &str) -> anyhow::Result<PointsView> {
    let mut client = app.client.clone();
    let mut member = client
        .get_member(pb::GetMemberRequest {
            member_id: member_id.to_owned(),
            view: pb::MemberView::Full.into(),
        })
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    // When the balances last changed: the expiry time in a read, the job's time once written.
    member.update_time = None;
    let lots = client
        .list_point_lots(pb::ListPointLotsRequest {
            member: by_id(member_id),
            page_size: 100,
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
    let mut expiring = client
        .get_expiring_points(pb::GetExpiringPointsRequest {
            member: by_id(member_id),
            within_days: 366,
        })
        .await?
        .into_inner();
    expiring.horizon_end_time = None;
    Ok(PointsView {
        member,
        lots,
        expiring,
    })
}

fn balances(view: &PointsView) -> (i64, i64, i64) {
    let b = view.member.balances.clone().unwrap_or_default();
    (
        b.available_points,
        b.pending_points,
        b.lifetime_expired_points,
    )
}

fn lot_states(view: &PointsView) -> Vec<(i32, i64, i64)> {
    view.lots
        .iter()
        .map(|l| (l.state, l.remaining_points, l.expired_points))
        .collect()
}

async fn run_jobs(app: &TestApp) -> anyhow::Result<()> {
    let mut client = app.client.clone();
    client
        .run_point_release(pb::RunPointReleaseRequest::default())
        .await?;
    client
        .run_point_expiry(pb::RunPointExpiryRequest::default())
        .await?;
    Ok(())
}

#[tokio::test]
async fn reads_never_show_points_past_their_expiry_as_available() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 30))
        .await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    app.grant(&member, 100).await?; // lot 1, expires on day 30
    app.clock.advance(Duration::days(20));
    app.grant(&member, 50).await?; // lot 2, expires on day 50
    client.redeem_points(redeem(rid(), &member, 30)).await?; // from lot 1: 70 left
    app.clock.advance(Duration::days(15)); // day 35: lot 1 is past its expiry

    // No job has run and the member has not changed: the stored ledger still holds lot 1.
    assert_ledger_invariants(&app.pool).await?;
    let view = points_view(&app, &member).await?;
    assert_eq!(
        balances(&view),
        (50, 0, 70),
        "lot 1's 70 points have expired"
    );
    let available = pb::PointLotState::Available as i32;
    let expired = pb::PointLotState::Expired as i32;
    assert_eq!(
        lot_states(&view),
        vec![(expired, 0, 70), (available, 50, 0)]
    );
    let soon = view.member.expiring.unwrap_or_default();
    assert_eq!(
        (
            soon.within_30_days_points,
            soon.next_expire_points,
            soon.next_expire_time
        ),
        (50, 50, view.lots[1].expire_time),
        "the next expiry is lot 2's, not lot 1's past one"
    );
    assert_eq!(view.expiring.total_points, 50);

    // The other reads agree: by customer, in a list (BASIC and FULL), and the default lot list.
    let customer_id = view.member.customer_id.clone();
    let by_customer = client
        .get_member_by_customer(pb::GetMemberByCustomerRequest {
            program_id: program_id.clone(),
            customer_id,
            ..Default::default()
        })
        .await?
        .into_inner()
        .member
        .and_then(|m| m.balances);
    assert_eq!(by_customer.map(|b| b.available_points), Some(50));
    for view in [pb::MemberView::Basic, pb::MemberView::Full] {
        let listed = client
            .list_members(pb::ListMembersRequest {
                program_id: program_id.clone(),
                view: view.into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .members;
        let listed: Vec<_> = listed
            .into_iter()
            .filter_map(|m| m.balances)
            .map(|b| (b.available_points, b.lifetime_expired_points))
            .collect();
        assert_eq!(listed, vec![(50, 70)], "ListMembers {view:?}");
    }
    let live_lots = client
        .list_point_lots(pb::ListPointLotsRequest {
            member: by_id(&member),
            ..Default::default()
        })
        .await?
        .into_inner()
        .point_lots;
    assert_eq!(live_lots.len(), 1, "only lot 2 has points left");

    // The expiry job then writes exactly what the reads showed.
    run_jobs(&app).await?;
    assert_eq!(points_view(&app, &member).await?, view);
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn reads_show_due_releases_and_a_repaid_debt_as_the_jobs_will_write_them()
-> anyhow::Result<()> {
    let app = spawn_app().await?;
    // A 14-day return window, points expire after 20 days, negative balances allowed.
    let mut rules = program(pb::ClawbackPolicy::AllowNegativeBalance, 20);
    rules.return_window_days = 14;
    let program_id = app.create_program(rules).await?;
    let mut client = app.client.clone();
    let plain = app.enrol(&program_id).await?;
    let indebted = app.enrol(&program_id).await?;
    // The indebted member owes 100: a grant spent, then reversed in full.
    let granted = app.grant(&indebted, 100).await?;
    client.redeem_points(redeem(rid(), &indebted, 100)).await?;
    client
        .reverse_points(pb::ReversePointsRequest {
            request_id: rid(),
            target: Some(pb::reverse_points_request::Target::LedgerEntryId(
                granted.ledger_entry.unwrap_or_default().ledger_entry_id,
            )),
            amount: Some(pb::reverse_points_request::Amount::AllRemaining(true)),
            reason: "Granted by mistake".to_owned(),
            ..Default::default()
        })
        .await?;
    // Both buy: 300 pending points each, released on day 14, expiring on day 20.
    client.earn_points(purchase(&plain, "o-1", 30_000)).await?;
    client
        .earn_points(purchase(&indebted, "o-2", 30_000))
        .await?;
    assert_eq!(
        balances(&points_view(&app, &indebted).await?),
        (-100, 300, 0)
    );

    // Day 15: released, the debt repaid from the released lot, with no job run.
    app.clock.advance(Duration::days(15));
    let available = pb::PointLotState::Available as i32;
    let exhausted = pb::PointLotState::Exhausted as i32;
    let expired = pb::PointLotState::Expired as i32;
    let plain_view = points_view(&app, &plain).await?;
    assert_eq!(balances(&plain_view), (300, 0, 0));
    assert_eq!(lot_states(&plain_view), vec![(available, 300, 0)]);
    let indebted_view = points_view(&app, &indebted).await?;
    assert_eq!(balances(&indebted_view), (200, 0, 0));
    assert_eq!(
        lot_states(&indebted_view),
        vec![(exhausted, 0, 0), (available, 200, 0)],
        "the reversed grant's lot, then the purchase's lot less the 100 repaid"
    );

    // Day 21: released and expired in one go; what expires is what the debt left.
    app.clock.advance(Duration::days(6));
    let plain_view = points_view(&app, &plain).await?;
    assert_eq!(balances(&plain_view), (0, 0, 300));
    let indebted_view = points_view(&app, &indebted).await?;
    assert_eq!(balances(&indebted_view), (0, 0, 200));
    assert_eq!(
        lot_states(&indebted_view),
        vec![(exhausted, 0, 0), (expired, 0, 200)]
    );
    // (The stored ledger still holds the debt here, which lots do not count: the invariants
    // are checked once the jobs have repaid it.)

    run_jobs(&app).await?;
    assert_eq!(points_view(&app, &plain).await?, plain_view);
    assert_eq!(points_view(&app, &indebted).await?, indebted_view);
    assert_ledger_invariants(&app.pool).await
}
