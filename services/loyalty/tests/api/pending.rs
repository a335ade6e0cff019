//! Pending points: purchase points inside the return window are counted but not spendable,
//! are released once (by the job or just before the member's next mutation), and refunds
//! take them back while they are pending.

use chrono::Duration;
use custops_contracts::custops::loyalty::v1 as pb;
use tonic::Code;

use crate::helpers::{
    TestApp, assert_ledger_invariants, by_id, error_info, program, purchase, redeem, rid, spawn_app,
};

/// A program with a 14-day return window.
async fn pending_program(app: &TestApp, clawback: pb::ClawbackPolicy) -> anyhow::Result<String> {
    let mut p = program(clawback, 0);
    p.return_window_days = 14;
    app.create_program(p).await
}

async fn statement_kinds(app: &TestApp, member: &str) -> anyhow::Result<Vec<i32>> {
    let page = app
        .client
        .clone()
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            member: by_id(member),
            page_size: 100,
            oldest_first: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(page.ledger_entries.iter().map(|e| e.kind).collect())
}

#[tokio::test]
async fn pending_points_cannot_be_spent_until_their_window_ends() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = pending_program(&app, pb::ClawbackPolicy::WithinBalance).await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    app.grant(&member, 50).await?; // grants are never pending
    let earned = client
        .earn_points(purchase(&member, "o-1", 30_000))
        .await?
        .into_inner();
    let entry = earned.ledger_entry.unwrap_or_default();
    assert_eq!(
        (
            entry.points,
            entry.available_points_delta,
            entry.pending_points_delta
        ),
        (300, 0, 300)
    );
    let release_time = entry.release_time;
    assert!(release_time.is_some(), "the earn says when it is released");
    let balances = app.balances(&member).await?;
    assert_eq!(
        (balances.available_points, balances.pending_points),
        (50, 300)
    );
    let lots = client
        .list_point_lots(pb::ListPointLotsRequest {
            member: by_id(&member),
            ..Default::default()
        })
        .await?
        .into_inner()
        .point_lots;
    let pending: Vec<_> = lots
        .iter()
        .filter(|l| l.state == pb::PointLotState::Pending as i32)
        .collect();
    assert_eq!(lots.len(), 2, "pending and available lots are listed");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].release_time, release_time);

    let refused = client
        .redeem_points(redeem(rid(), &member, 100))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("pending points are not spendable"))?;
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let (reason, metadata) = error_info(&refused);
    assert_eq!(reason, "INSUFFICIENT_POINTS");
    assert_eq!(metadata.get("shortfall").map(String::as_str), Some("50"));
    assert_eq!(
        metadata.get("available_points").map(String::as_str),
        Some("50")
    );

    app.clock.advance(Duration::days(13));
    let still = client
        .redeem_points(redeem(rid(), &member, 100))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("the window has not ended"))?;
    assert_eq!(still.code(), Code::FailedPrecondition);

    // The window ends; the next mutation releases the points just before it spends.
    app.clock.advance(Duration::days(1) + Duration::seconds(1));
    let spent = client
        .redeem_points(redeem(rid(), &member, 100))
        .await?
        .into_inner();
    let after = spent.member.and_then(|m| m.balances).unwrap_or_default();
    assert_eq!((after.available_points, after.pending_points), (250, 0));
    let kinds = statement_kinds(&app, &member).await?;
    assert_eq!(
        kinds,
        [
            pb::LedgerEntryKind::Earn as i32,
            pb::LedgerEntryKind::Earn as i32,
            pb::LedgerEntryKind::Release as i32,
            pb::LedgerEntryKind::Redeem as i32,
        ]
    );
    let job = client
        .run_point_release(pb::RunPointReleaseRequest::default())
        .await?
        .into_inner();
    assert_eq!(
        (job.members_processed, job.points_released),
        (0, 0),
        "already released"
    );
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn release_runs_once_per_member_even_when_two_runs_overlap() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = pending_program(&app, pb::ClawbackPolicy::WithinBalance).await?;
    let mut client = app.client.clone();
    let mut members = Vec::new();
    for i in 0..40 {
        let member = app.enrol(&program_id).await?;
        client
            .earn_points(purchase(&member, &format!("o-{i}-a"), 10_000))
            .await?;
        client
            .earn_points(purchase(&member, &format!("o-{i}-b"), 5_000))
            .await?;
        members.push(member);
    }
    app.clock.advance(Duration::days(7));
    let late = app.enrol(&program_id).await?;
    client.earn_points(purchase(&late, "o-late", 7_000)).await?;
    let early = client
        .run_point_release(pb::RunPointReleaseRequest::default())
        .await?
        .into_inner();
    assert_eq!(early.members_processed, 0, "no window has ended yet");

    app.clock.advance(Duration::days(7) + Duration::seconds(1));
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                client
                    .run_point_release(pb::RunPointReleaseRequest::default())
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let (mut processed, mut lots, mut points) = (0, 0, 0);
    for run in runs {
        let report = run.await??;
        processed += report.members_processed;
        lots += report.lots_released;
        points += report.points_released;
    }
    assert_eq!((processed, lots, points), (40, 80, 40 * 150));
    for member in &members {
        let balances = app.balances(member).await?;
        assert_eq!(
            (balances.available_points, balances.pending_points),
            (150, 0)
        );
    }
    let late_balances = app.balances(&late).await?;
    assert_eq!(
        (late_balances.available_points, late_balances.pending_points),
        (0, 70),
        "its window has a week to go"
    );
    let (entries, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledger_entries WHERE kind = 6), \
                (SELECT count(*) FROM outbox WHERE type = 'custops.loyalty.v1.PointsReleased')",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(
        (entries, events),
        (40, 40),
        "one RELEASE entry and event per member"
    );
    let again = client
        .run_point_release(pb::RunPointReleaseRequest::default())
        .await?
        .into_inner();
    assert_eq!((again.members_processed, again.points_released), (0, 0));

    app.clock.advance(Duration::days(7));
    let bounded = client
        .run_point_release(pb::RunPointReleaseRequest {
            program_id: program_id.clone(),
            max_members: 1,
        })
        .await?
        .into_inner();
    assert_eq!(
        (
            bounded.members_processed,
            bounded.points_released,
            bounded.more_due
        ),
        (1, 70, false)
    );
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn refunds_take_pending_points_back_and_released_ones_follow_the_policy() -> anyhow::Result<()>
{
    let app = spawn_app().await?;
    let program_id = pending_program(&app, pb::ClawbackPolicy::PendingOnly).await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    client.earn_points(purchase(&member, "o-1", 20_000)).await?;
    let reverse = |refund_minor: i64| pb::ReversePointsRequest {
        request_id: rid(),
        target: Some(pb::reverse_points_request::Target::Order(
            pb::ProgramOrder {
                program_id: program_id.clone(),
                order_id: "o-1".to_owned(),
            },
        )),
        amount: Some(pb::reverse_points_request::Amount::RefundAmount(
            crate::helpers::cny(refund_minor),
        )),
        reason: "Refund".to_owned(),
        ..Default::default()
    };
    let first = client
        .reverse_points(reverse(10_000))
        .await?
        .into_inner()
        .ledger_entry
        .unwrap_or_default();
    assert_eq!(
        (
            first.points,
            first.pending_points_delta,
            first.available_points_delta
        ),
        (-100, -100, 0),
        "a refund inside the window takes back pending points"
    );
    let balances = app.balances(&member).await?;
    assert_eq!(
        (balances.available_points, balances.pending_points),
        (0, 100)
    );

    app.clock.advance(Duration::days(15));
    client
        .run_point_release(pb::RunPointReleaseRequest::default())
        .await?;
    let second = client
        .reverse_points(reverse(10_000))
        .await?
        .into_inner()
        .ledger_entry
        .unwrap_or_default();
    let waived = match second.details {
        Some(pb::ledger_entry::Details::Reversal(r)) => r.waived_points,
        _ => -1,
    };
    assert_eq!(
        (second.points, waived),
        (0, 100),
        "PENDING_ONLY waives released points"
    );
    let balances = app.balances(&member).await?;
    assert_eq!(
        (balances.available_points, balances.pending_points),
        (100, 0)
    );
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn closing_a_member_forfeits_pending_points_too() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = pending_program(&app, pb::ClawbackPolicy::WithinBalance).await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    app.grant(&member, 40).await?;
    client.earn_points(purchase(&member, "o-1", 12_000)).await?;
    let closed = client
        .close_member(pb::CloseMemberRequest {
            member: by_id(&member),
            reason: "Customer asked".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let balances = closed.member.and_then(|m| m.balances).unwrap_or_default();
    assert_eq!((balances.available_points, balances.pending_points), (0, 0));
    app.clock.advance(Duration::days(15));
    let job = client
        .run_point_release(pb::RunPointReleaseRequest::default())
        .await?
        .into_inner();
    assert_eq!(job.members_processed, 0, "a forfeited lot is not released");
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn a_release_repays_a_negative_balance_first() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = pending_program(&app, pb::ClawbackPolicy::AllowNegativeBalance).await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    // 100 granted and spent, then the grant reversed in full: the balance is -100.
    let granted = app.grant(&member, 100).await?;
    client.redeem_points(redeem(rid(), &member, 100)).await?;
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
    client.earn_points(purchase(&member, "o-1", 30_000)).await?;
    let balances = app.balances(&member).await?;
    assert_eq!(
        (balances.available_points, balances.pending_points),
        (-100, 300)
    );

    app.clock.advance(Duration::days(15));
    let released = client
        .run_point_release(pb::RunPointReleaseRequest::default())
        .await?
        .into_inner();
    assert_eq!(released.points_released, 300);
    let balances = app.balances(&member).await?;
    assert_eq!(
        (balances.available_points, balances.pending_points),
        (200, 0)
    );
    // The released lot holds what is left after the debt, so lots still equal the balance.
    assert_ledger_invariants(&app.pool).await
}
