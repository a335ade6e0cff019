//! The in-process scheduler runs the release, expiry and tier-review jobs by itself: two
//! replicas on one database release and expire each due lot once, with no RPC asking, and
//! review each member once even with runs asked of both replicas overlapping the schedulers'.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::loyalty::v1 as pb;
use custops_contracts::custops::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use custops_loyalty::domain::ManualClock;
use custops_loyalty::jobs::JobSchedule;
use custops_testkit::{TestDatabase, eventually};
use sqlx::PgPool;
use tonic::transport::Channel;

use crate::helpers::{assert_ledger_invariants, grant, program, purchase, rid, start, test_pool};

/// Entries of `kind` (the contract's number) and events of `event_type` stored so far.
async fn written(pool: &PgPool, kind: i16, event_type: &str) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledger_entries WHERE kind = $1), \
                (SELECT count(*) FROM outbox WHERE type = $2)",
    )
    .bind(kind)
    .bind(event_type)
    .fetch_one(pool)
    .await?)
}

#[tokio::test]
async fn two_replicas_release_and_expire_due_lots_once_by_themselves() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let pool = test_pool(&db).await?;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    // Each replica looks every 20 ms; each job runs once per hour of the service clock.
    let schedule = JobSchedule {
        tick: StdDuration::from_millis(20),
        interval: StdDuration::from_secs(3600),
    };
    let settings = || ServiceSettings::for_local(ServiceKind::Loyalty, db.url());
    let (mut client, stop_a) = start(settings(), clock.clone(), Some(schedule)).await?;
    let (_, stop_b) = start(settings(), clock.clone(), Some(schedule)).await?;

    // A 14-day return window; points expire after 30 days.
    let mut rules = program(pb::ClawbackPolicy::WithinBalance, 30);
    rules.return_window_days = 14;
    let program_id = client
        .create_program(pb::CreateProgramRequest {
            request_id: rid(),
            program: Some(rules),
        })
        .await?
        .into_inner()
        .program
        .unwrap_or_default()
        .program_id;
    let mut members = Vec::new();
    for i in 0..20 {
        let member = client
            .enrol_member(pb::EnrolMemberRequest {
                request_id: rid(),
                program_id: program_id.clone(),
                customer_id: uuid::Uuid::now_v7().to_string(),
                enrol_channel: String::new(),
            })
            .await?
            .into_inner()
            .member
            .unwrap_or_default()
            .member_id;
        client
            .earn_points(purchase(&member, &format!("o-{i}"), 10_000))
            .await?; // 100 pending
        client.earn_points(grant(rid(), &member, 50)).await?; // 50 available
        members.push(member);
    }

    // Past the return window: the scheduler releases every member's purchase points, once.
    clock.advance(Duration::days(15));
    let released = eventually(StdDuration::from_secs(10), || async {
        written(&pool, 6, "custops.loyalty.v1.PointsReleased")
            .await
            .is_ok_and(|counts| counts == (20, 20))
    })
    .await;
    assert!(released, "the scheduler released the due points");

    // Past the expiry: the scheduler expires both lots of every member in one entry each.
    clock.advance(Duration::days(16));
    let expired = eventually(StdDuration::from_secs(10), || async {
        written(&pool, 5, "custops.loyalty.v1.PointsExpired")
            .await
            .is_ok_and(|counts| counts == (20, 20))
    })
    .await;
    assert!(expired, "the scheduler expired the due lots");
    // Later ticks of either replica (within the interval, and after it) add nothing.
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    clock.advance(Duration::hours(2));
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    assert_eq!(
        written(&pool, 6, "custops.loyalty.v1.PointsReleased").await?,
        (20, 20)
    );
    assert_eq!(
        written(&pool, 5, "custops.loyalty.v1.PointsExpired").await?,
        (20, 20)
    );
    for member in &members {
        let balances: (i64, i64, i64) = sqlx::query_as(
            "SELECT available_points, pending_points, lifetime_expired_points FROM balances \
             WHERE member_id = $1::uuid",
        )
        .bind(member)
        .fetch_one(&pool)
        .await?;
        assert_eq!(
            balances,
            (0, 0, 150),
            "member {member}: stored, not only read"
        );
    }
    assert_ledger_invariants(&pool).await?;

    // Stopped replicas run nothing more: their schedulers end with the server (the shutdown
    // token is cancelled before the server stops answering).
    stop_a.send(()).ok();
    stop_b.send(()).ok();
    let down = eventually(StdDuration::from_secs(10), || {
        let mut client = client.clone();
        let program_id = program_id.clone();
        async move {
            client
                .get_program(pb::GetProgramRequest { program_id })
                .await
                .is_err()
        }
    })
    .await;
    assert!(down, "the replicas stopped");
    // A claim already under way when the token was cancelled finishes first (a scheduler
    // checks the token before each job, so at most one is in flight).
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    sqlx::query("UPDATE schedule_runs SET last_run_time = '-infinity'")
        .execute(&pool)
        .await?;
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    let untouched: i64 =
        sqlx::query_scalar("SELECT count(*) FROM schedule_runs WHERE last_run_time = '-infinity'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(untouched, 3, "no scheduler claimed a run after shutdown");
    Ok(())
}

/// Tier review's writes so far: downgrades in `tier_changes`, members with a downgrade
/// pending, and `TierChanged` and `TierDowngradeScheduled` events in the outbox.
async fn tier_written(pool: &PgPool) -> anyhow::Result<(i64, i64, i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT (SELECT count(*) FROM tier_changes WHERE direction = 3), \
                (SELECT count(*) FROM members WHERE pending_tier_code IS NOT NULL), \
                (SELECT count(*) FROM outbox WHERE type = 'custops.loyalty.v1.TierChanged'), \
                (SELECT count(*) FROM outbox \
                 WHERE type = 'custops.loyalty.v1.TierDowngradeScheduled')",
    )
    .fetch_one(pool)
    .await?)
}

/// `RunTierReview` asked twice of each replica at once; their reports. A requested run takes
/// no claim in `schedule_runs`, so these overlap each other and the schedulers' runs.
async fn review_on_both(
    replicas: [&LoyaltyServiceClient<Channel>; 2],
) -> anyhow::Result<Vec<pb::RunTierReviewResponse>> {
    let runs: Vec<_> = replicas
        .iter()
        .flat_map(|client| [(*client).clone(), (*client).clone()])
        .map(|mut client| {
            tokio::spawn(async move {
                client
                    .run_tier_review(pb::RunTierReviewRequest::default())
                    .await
                    .map(tonic::Response::into_inner)
            })
        })
        .collect();
    let mut reports = Vec::new();
    for run in runs {
        reports.push(run.await??);
    }
    Ok(reports)
}

#[tokio::test]
async fn two_replicas_review_each_member_once_whoever_runs_the_review() -> anyhow::Result<()> {
    // Arrange: two replicas with their schedulers on one database and one clock; twenty silver
    // members (silver at 500 qualifying points over 365 days, reviewed yearly, 30 days' grace),
    // enrolled through either replica.
    let db = TestDatabase::create().await?;
    let pool = test_pool(&db).await?;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let schedule = JobSchedule {
        tick: StdDuration::from_millis(20),
        interval: StdDuration::from_secs(3600),
    };
    let settings = || ServiceSettings::for_local(ServiceKind::Loyalty, db.url());
    let (first, _stop_first) = start(settings(), clock.clone(), Some(schedule)).await?;
    let (second, _stop_second) = start(settings(), clock.clone(), Some(schedule)).await?;
    let program_id = first
        .clone()
        .create_program(pb::CreateProgramRequest {
            request_id: rid(),
            program: Some(program(pb::ClawbackPolicy::WithinBalance, 0)),
        })
        .await?
        .into_inner()
        .program
        .unwrap_or_default()
        .program_id;
    for i in 0..20 {
        let mut client = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        let member = client
            .enrol_member(pb::EnrolMemberRequest {
                request_id: rid(),
                program_id: program_id.clone(),
                customer_id: uuid::Uuid::now_v7().to_string(),
                enrol_channel: String::new(),
            })
            .await?
            .into_inner()
            .member
            .unwrap_or_default()
            .member_id;
        client
            .earn_points(purchase(&member, &format!("o-{i}"), 60_000))
            .await?; // 600 qualifying points: silver at once
    }
    let (_, _, tier_changed_before, _) = tier_written(&pool).await?;
    let silver: i64 = sqlx::query_scalar("SELECT count(*) FROM members WHERE tier_code = 'silver'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(silver, 20);

    // Act: a year on the purchases have left the window; both schedulers and four overlapping
    // runs review the members.
    clock.advance(Duration::days(370));
    let asked = review_on_both([&first, &second]).await?;

    // Assert: one downgrade scheduled per member, none applied yet.
    let scheduled = eventually(StdDuration::from_secs(10), || async {
        tier_written(&pool)
            .await
            .is_ok_and(|written| written == (0, 20, tier_changed_before, 20))
    })
    .await;
    assert!(scheduled, "the downgrades were never all scheduled");
    let by_requests: i64 = asked.iter().map(|r| r.downgrades_scheduled).sum();
    assert!(by_requests <= 20, "{asked:?}");

    // Act: past the grace period, reviewed again everywhere.
    clock.advance(Duration::days(31));
    let asked = review_on_both([&first, &second]).await?;

    // Assert: one downgrade applied per member.
    let applied = eventually(StdDuration::from_secs(10), || async {
        tier_written(&pool)
            .await
            .is_ok_and(|(downgrades, _, _, _)| downgrades >= 20)
    })
    .await;
    assert!(applied, "the downgrades were never all applied");
    let by_requests: i64 = asked.iter().map(|r| r.downgrades_applied).sum();
    assert!(by_requests <= 20, "{asked:?}");

    // Later runs, the schedulers' next interval and both replicas asked again, find nothing.
    let last_run = || async {
        sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
            "SELECT last_run_time FROM schedule_runs WHERE name = 'tier_review'",
        )
        .fetch_one(&pool)
        .await
    };
    let reviewed_at = last_run().await?;
    clock.advance(Duration::hours(2));
    let rerun = eventually(StdDuration::from_secs(10), || async {
        last_run().await.is_ok_and(|last| last > reviewed_at)
    })
    .await;
    assert!(rerun, "no scheduler claimed the next interval");
    for report in review_on_both([&first, &second]).await? {
        assert_eq!(
            (
                report.downgrades_scheduled,
                report.downgrades_applied,
                report.upgrades
            ),
            (0, 0, 0),
            "{report:?}"
        );
    }
    assert_eq!(
        tier_written(&pool).await?,
        (20, 0, tier_changed_before + 20, 20),
        "(downgrades, pending, TierChanged events, TierDowngradeScheduled events: once each)"
    );
    let member: i64 = sqlx::query_scalar("SELECT count(*) FROM members WHERE tier_code = 'member'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(member, 20);
    assert_ledger_invariants(&pool).await
}
