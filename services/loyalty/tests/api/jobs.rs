//! The scheduled jobs on the injectable clock: expiry first-in first-out, safe when runs
//! overlap and idempotent; tier upgrades at once and downgrades only at review + grace.

use chrono::Duration;
use custops_contracts::custops::loyalty::v1 as pb;

use crate::helpers::{assert_ledger_invariants, by_id, cny, program, redeem, rid, spawn_app};

#[tokio::test]
async fn expiry_takes_the_oldest_lots_once_even_when_runs_overlap() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 30))
        .await?;
    let mut members = Vec::new();
    for _ in 0..30 {
        let member = app.enrol(&program_id).await?;
        app.grant(&member, 100).await?; // lot 1, due at day 30
        members.push(member);
    }
    app.clock.advance(Duration::days(20));
    for member in &members {
        app.grant(member, 50).await?; // lot 2, due at day 50
        app.client
            .clone()
            .redeem_points(redeem(rid(), member, 30))
            .await?; // from lot 1
    }
    app.clock.advance(Duration::days(15)); // day 35: lot 1 (70 left) is due, lot 2 is not

    let runs: Vec<_> = (0..3)
        .map(|_| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                client
                    .run_point_expiry(pb::RunPointExpiryRequest::default())
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let (mut processed, mut lots, mut expired) = (0, 0, 0);
    for run in runs {
        let report = run.await??;
        processed += report.members_processed;
        lots += report.lots_expired;
        expired += report.points_expired;
    }
    assert_eq!(
        (processed, lots, expired),
        (30, 30, 30 * 70),
        "each member expired once"
    );
    for member in &members {
        let balances = app.balances(member).await?;
        assert_eq!(
            (balances.available_points, balances.lifetime_expired_points),
            (50, 70)
        );
    }
    let again = app
        .client
        .clone()
        .run_point_expiry(pb::RunPointExpiryRequest::default())
        .await?
        .into_inner();
    assert_eq!((again.members_processed, again.points_expired), (0, 0));
    assert_ledger_invariants(&app.pool).await
}

/// The member's `custops.loyalty.v1.<kind>` events in the outbox, in order, decoded.
async fn events_of<M: prost::Message + Default>(
    app: &crate::helpers::TestApp,
    kind: &str,
    member_id: &str,
) -> anyhow::Result<Vec<M>> {
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT payload FROM outbox WHERE type = $1 AND aggregateid = $2 \
         ORDER BY occurred_at, id",
    )
    .bind(format!("custops.loyalty.v1.{kind}"))
    .bind(member_id)
    .fetch_all(&app.pool)
    .await?;
    Ok(payloads
        .iter()
        .map(|p| M::decode(p.as_slice()))
        .collect::<Result<_, _>>()?)
}

#[tokio::test]
async fn upgrades_are_immediate_and_downgrades_wait_for_review_and_grace() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    // Silver at 500 qualifying points, 365-day window, reviews every 12 months, 30 days grace.
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    let earned = client
        .earn_points(pb::EarnPointsRequest {
            request_id: rid(),
            member: by_id(&member),
            source: Some(pb::earn_points_request::Source::Purchase(pb::Purchase {
                order_id: "o-1".to_owned(),
                amount: Some(cny(60_000)),
                ..Default::default()
            })),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        earned.tier_change.map(|c| c.to_tier_code).as_deref(),
        Some("silver")
    );

    let tier = |app: &crate::helpers::TestApp, member: String| {
        let mut client = app.client.clone();
        async move {
            anyhow::Ok(
                client
                    .get_member(pb::GetMemberRequest {
                        member_id: member,
                        view: 0,
                    })
                    .await?
                    .into_inner()
                    .member
                    .and_then(|m| m.tier)
                    .unwrap_or_default(),
            )
        }
    };
    let review = |app: &crate::helpers::TestApp| {
        let mut client = app.client.clone();
        async move {
            anyhow::Ok(
                client
                    .run_tier_review(pb::RunTierReviewRequest::default())
                    .await?
                    .into_inner(),
            )
        }
    };

    // Before the review is due nothing happens, whatever the qualifying amount.
    app.clock.advance(Duration::days(200));
    assert_eq!(review(&app).await?.members_reviewed, 0);

    // At the review (12 months on) the year-old purchase has left the window: the
    // downgrade is scheduled, not applied.
    app.clock.advance(Duration::days(170));
    let report = review(&app).await?;
    assert_eq!(
        (report.downgrades_scheduled, report.downgrades_applied),
        (1, 0)
    );
    let silver = tier(&app, member.clone()).await?;
    assert_eq!(silver.tier_code, "silver");
    assert!(silver.pending_downgrade.is_some());
    // Told on the feed: the member as scheduled, to be invited to re-qualify.
    let scheduled: Vec<pb::TierDowngradeScheduled> =
        events_of(&app, "TierDowngradeScheduled", &member).await?;
    let told = scheduled.first().and_then(|e| e.member.clone());
    assert_eq!(scheduled.len(), 1);
    assert_eq!(
        told.and_then(|m| m.tier).and_then(|t| t.pending_downgrade),
        silver.pending_downgrade
    );

    // Inside the grace period: still silver.
    app.clock.advance(Duration::days(20));
    assert_eq!(review(&app).await?.downgrades_applied, 0);
    assert_eq!(tier(&app, member.clone()).await?.tier_code, "silver");

    // Grace over: downgraded, with history.
    app.clock.advance(Duration::days(11));
    assert_eq!(review(&app).await?.downgrades_applied, 1);
    let base = tier(&app, member.clone()).await?;
    assert_eq!((base.tier_code.as_str(), base.rank), ("member", 0));
    assert!(base.pending_downgrade.is_none());
    let history: Vec<(String, String, i16)> = sqlx::query_as(
        "SELECT from_tier_code, to_tier_code, direction FROM tier_changes ORDER BY change_time",
    )
    .fetch_all(&app.pool)
    .await?;
    assert_eq!(
        history,
        [
            (String::new(), "member".to_owned(), 1),
            ("member".to_owned(), "silver".to_owned(), 2),
            ("silver".to_owned(), "member".to_owned(), 3),
        ]
    );
    let listed = client
        .list_tier_changes(pb::ListTierChangesRequest {
            member_id: member.clone(),
            page_size: 2,
            ..Default::default()
        })
        .await?
        .into_inner();
    let directions: Vec<i32> = listed.tier_changes.iter().map(|c| c.direction).collect();
    assert_eq!(
        directions,
        [
            pb::TierChangeDirection::Downgrade as i32,
            pb::TierChangeDirection::Upgrade as i32
        ]
    );
    assert!(!listed.next_page_token.is_empty());
    Ok(())
}

#[tokio::test]
async fn requalifying_within_the_grace_period_cancels_the_downgrade() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    let qualifying_grant = |points| pb::EarnPointsRequest {
        request_id: rid(),
        member: by_id(&member),
        source: Some(pb::earn_points_request::Source::Grant(pb::PointsGrant {
            points,
            qualifying: true,
            expire_time: None,
        })),
        reason: "Bonus".to_owned(),
        ..Default::default()
    };
    client.earn_points(qualifying_grant(600)).await?;
    app.clock.advance(Duration::days(370));
    let report = client
        .run_tier_review(pb::RunTierReviewRequest::default())
        .await?
        .into_inner();
    assert_eq!(report.downgrades_scheduled, 1);
    app.clock.advance(Duration::days(5));
    client.earn_points(qualifying_grant(500)).await?;
    let tier = client
        .get_member(pb::GetMemberRequest {
            member_id: member.clone(),
            view: 0,
        })
        .await?
        .into_inner()
        .member
        .and_then(|m| m.tier)
        .unwrap_or_default();
    assert!(
        tier.pending_downgrade.is_none(),
        "re-qualifying cancels at once"
    );
    // Told on the feed, after the earn that re-qualified: the member after, and the
    // downgrade to the base tier that no longer happens.
    let cancelled: Vec<pb::TierDowngradeCancelled> =
        events_of(&app, "TierDowngradeCancelled", &member).await?;
    assert_eq!(cancelled.len(), 1);
    let told = &cancelled[0];
    assert_eq!(
        told.cancelled_downgrade
            .as_ref()
            .map(|d| (d.tier_code.as_str(), d.rank)),
        Some(("member", 0))
    );
    let after = told.member.clone().and_then(|m| m.tier).unwrap_or_default();
    assert_eq!(after.tier_code, "silver");
    assert!(after.pending_downgrade.is_none());
    assert_eq!(after.next_review_time, tier.next_review_time);
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT type FROM outbox WHERE aggregateid = $1 ORDER BY occurred_at, id",
    )
    .bind(&member)
    .fetch_all(&app.pool)
    .await?;
    let tail: Vec<&str> = types
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "custops.loyalty.v1.PointsEarned",
            "custops.loyalty.v1.TierDowngradeCancelled"
        ]
    );
    app.clock.advance(Duration::days(30));
    let report = client
        .run_tier_review(pb::RunTierReviewRequest::default())
        .await?
        .into_inner();
    assert_eq!(report.downgrades_applied, 0);
    let member = client
        .get_member(pb::GetMemberRequest {
            member_id: member,
            view: 0,
        })
        .await?
        .into_inner()
        .member
        .and_then(|m| m.tier)
        .unwrap_or_default();
    assert_eq!(member.tier_code, "silver");
    assert!(member.pending_downgrade.is_none());
    Ok(())
}

#[tokio::test]
async fn calendar_reviews_fall_on_quarter_starts_in_the_program_time_zone() -> anyhow::Result<()> {
    use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
    use custops_loyalty::domain::Clock;

    // Quarterly CALENDAR reviews in Asia/Shanghai (UTC+8 all year), a 30-day window and 30
    // days of grace.
    let app = spawn_app().await?;
    let mut calendar = program(pb::ClawbackPolicy::WithinBalance, 0);
    calendar.time_zone = "Asia/Shanghai".to_owned();
    calendar.tier_policy = Some(pb::TierPolicy {
        qualifying_window_days: 30,
        review_schedule: pb::TierReviewSchedule::Calendar as i32,
        review_period_months: 3,
        grace_period_days: 30,
        downgrade_mode: pb::TierDowngradeMode::ToQualifiedTier as i32,
    });
    let program_id = app.create_program(calendar).await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    let shanghai = chrono::Duration::hours(8);
    // Midnight in Shanghai on the first day of the quarter after the local date `after`.
    let quarter_start = |after: NaiveDate| -> anyhow::Result<DateTime<Utc>> {
        let start = NaiveDate::from_ymd_opt(after.year(), after.month0() / 3 * 3 + 1, 1)
            .and_then(|d| d.checked_add_months(Months::new(3)))
            .ok_or_else(|| anyhow::anyhow!("no quarter after {after}"))?;
        Ok(start.and_time(chrono::NaiveTime::MIN).and_utc() - shanghai)
    };
    let go_to = |at: DateTime<Utc>| app.clock.advance(at - app.clock.now());
    let tier = |member: String| {
        let mut client = app.client.clone();
        async move {
            anyhow::Ok(
                client
                    .get_member(pb::GetMemberRequest {
                        member_id: member,
                        view: 0,
                    })
                    .await?
                    .into_inner()
                    .member
                    .and_then(|m| m.tier)
                    .unwrap_or_default(),
            )
        }
    };
    let review = || {
        let mut client = app.client.clone();
        async move {
            anyhow::Ok(
                client
                    .run_tier_review(pb::RunTierReviewRequest::default())
                    .await?
                    .into_inner(),
            )
        }
    };
    let seconds = |at: DateTime<Utc>| at.timestamp();

    // Arrange: upgraded to silver 40 days into a quarter.
    let this_quarter = quarter_start((app.clock.now() + shanghai).date_naive())?;
    go_to(this_quarter + Duration::days(40));
    let earned = client
        .earn_points(pb::EarnPointsRequest {
            request_id: rid(),
            member: by_id(&member),
            source: Some(pb::earn_points_request::Source::Grant(pb::PointsGrant {
                points: 600,
                qualifying: true,
                expire_time: None,
            })),
            reason: "Status match".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        earned.tier_change.map(|c| c.to_tier_code).as_deref(),
        Some("silver")
    );
    // Reviewed at the next quarter's start, local midnight, not 3 months after the upgrade.
    let boundary = quarter_start((app.clock.now() + shanghai).date_naive())?;
    let silver = tier(member.clone()).await?;
    assert_eq!(
        silver.next_review_time.map(|t| t.seconds),
        Some(seconds(boundary))
    );

    // Act and assert: nothing is due a second before the boundary.
    go_to(boundary - Duration::seconds(1));
    assert_eq!(review().await?.members_reviewed, 0);

    // At the boundary the points have left the 30-day window: the downgrade is scheduled
    // for the end of the grace period.
    go_to(boundary);
    let report = review().await?;
    assert_eq!(
        (
            report.members_reviewed,
            report.downgrades_scheduled,
            report.downgrades_applied
        ),
        (1, 1, 0)
    );
    let pending = tier(member.clone()).await?;
    assert_eq!(pending.tier_code, "silver");
    assert_eq!(
        pending
            .pending_downgrade
            .and_then(|p| p.downgrade_time)
            .map(|t| t.seconds),
        Some(seconds(boundary + Duration::days(30)))
    );

    // Still silver inside the grace period; downgraded once it is over.
    go_to(boundary + Duration::days(29));
    assert_eq!(review().await?.downgrades_applied, 0);
    assert_eq!(tier(member.clone()).await?.tier_code, "silver");
    go_to(boundary + Duration::days(30));
    assert_eq!(review().await?.downgrades_applied, 1);
    let base = tier(member.clone()).await?;
    assert_eq!(
        (base.tier_code.as_str(), base.next_review_time),
        ("member", None)
    );
    Ok(())
}

#[tokio::test]
async fn calendar_reviews_need_a_period_that_divides_the_year() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut calendar = program(pb::ClawbackPolicy::WithinBalance, 0);
    calendar.tier_policy = Some(pb::TierPolicy {
        qualifying_window_days: 365,
        review_schedule: pb::TierReviewSchedule::Calendar as i32,
        review_period_months: 5,
        grace_period_days: 30,
        downgrade_mode: pb::TierDowngradeMode::ToQualifiedTier as i32,
    });
    let status = app
        .client
        .clone()
        .create_program(pb::CreateProgramRequest {
            request_id: rid(),
            program: Some(calendar),
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a 5-month calendar period was accepted"))?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        crate::helpers::bad_fields(&status),
        ["program.tier_policy.review_period_months"]
    );
    Ok(())
}
