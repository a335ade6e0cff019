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
