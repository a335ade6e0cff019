//! The ledger through the API: purchases through the earning rules, FIFO spending, expiry
//! on the injectable clock, reversals and the statement.

use std::sync::Arc;

use anyhow::Context;
use chrono::Duration;
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::TimeRange;
use custops_contracts::custops::loyalty::v1 as pb;
use custops_loyalty::domain::SystemClock;
use custops_testkit::TestDatabase;
use uuid::Uuid;

use crate::helpers::{by_id, cny, grant, program, redeem, rid, spawn_app, start};

fn purchase(member: &str, order: &str, amount_minor: i64) -> pb::EarnPointsRequest {
    pb::EarnPointsRequest {
        request_id: rid(),
        member: by_id(member),
        source: Some(pb::earn_points_request::Source::Purchase(pb::Purchase {
            order_id: order.to_owned(),
            amount: Some(cny(amount_minor)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[tokio::test]
async fn lots_are_spent_first_in_first_out_and_expire_on_the_clock() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 30))
        .await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();

    app.grant(&member, 100).await?; // lot A, expires at day 30
    app.clock.advance(Duration::days(10));
    app.grant(&member, 50).await?; // lot B, expires at day 40
    client.redeem_points(redeem(rid(), &member, 30)).await?; // from A: A 70, B 50

    app.clock.advance(Duration::days(25)); // day 35: A is due
    let out = client
        .redeem_points(redeem(rid(), &member, 10))
        .await?
        .into_inner();
    let balances = out.member.and_then(|m| m.balances).unwrap_or_default();
    assert_eq!(
        balances.available_points, 40,
        "A's 70 expired, 10 spent from B"
    );
    assert_eq!(balances.lifetime_expired_points, 70);

    let statement = client
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            member: by_id(&member),
            filter: Some(pb::LedgerEntryFilter {
                kinds: vec![pb::LedgerEntryKind::Expire as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    let expired: Vec<i64> = statement.ledger_entries.iter().map(|e| e.points).collect();
    assert_eq!(expired, [-70]);
    let lots: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT remaining_points, expired_points FROM point_lots ORDER BY earn_time",
    )
    .fetch_all(&app.pool)
    .await?;
    assert_eq!(lots, [(0, 70), (40, 0)]);
    let listed = client
        .list_point_lots(pb::ListPointLotsRequest {
            member: by_id(&member),
            states: vec![
                pb::PointLotState::Available as i32,
                pb::PointLotState::Expired as i32,
            ],
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        listed
            .point_lots
            .iter()
            .map(|l| l.remaining_points)
            .collect::<Vec<_>>(),
        [0]
    );
    assert!(!listed.next_page_token.is_empty());
    let expiring = client
        .get_expiring_points(pb::GetExpiringPointsRequest {
            member: by_id(&member),
            within_days: 30,
        })
        .await?
        .into_inner();
    assert_eq!(
        expiring.total_points, 40,
        "lot B, due at day 40, inside 30 days of day 35"
    );
    crate::helpers::assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn purchases_earn_through_the_rules_and_upgrade_the_tier_at_once() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();

    let small = client
        .earn_points(purchase(&member, "o-1", 12_990))
        .await?
        .into_inner();
    assert_eq!(small.ledger_entry.as_ref().map(|e| e.points), Some(129));
    assert!(small.tier_change.is_none());

    let big = client
        .earn_points(purchase(&member, "o-2", 40_000))
        .await?
        .into_inner();
    let change = big.tier_change.unwrap_or_default();
    assert_eq!(
        (change.from_tier_code.as_str(), change.to_tier_code.as_str()),
        ("member", "silver")
    );
    let tier = big.member.and_then(|m| m.tier).unwrap_or_default();
    assert_eq!((tier.tier_code.as_str(), tier.rank), ("silver", 1));

    let status = client
        .earn_points(purchase(&member, "o-2", 1_000))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("an order earned twice"))?;
    assert_eq!(
        crate::helpers::error_info(&status).0,
        "ORDER_ALREADY_EARNED"
    );
    Ok(())
}

#[tokio::test]
async fn a_refund_takes_points_back_pro_rata_and_the_statement_pages() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    client.earn_points(purchase(&member, "o-9", 30_000)).await?; // 300 points
    let refund = |amount| pb::ReversePointsRequest {
        request_id: rid(),
        target: Some(pb::reverse_points_request::Target::Order(
            pb::ProgramOrder {
                program_id: program_id.clone(),
                order_id: "o-9".to_owned(),
            },
        )),
        amount: Some(pb::reverse_points_request::Amount::RefundAmount(cny(
            amount,
        ))),
        ..Default::default()
    };
    let first = client.reverse_points(refund(10_000)).await?.into_inner();
    assert_eq!(first.ledger_entry.map(|e| e.points), Some(-100));
    let rest = client.reverse_points(refund(20_000)).await?.into_inner();
    let balances = rest.member.and_then(|m| m.balances).unwrap_or_default();
    assert_eq!(balances.available_points, 0);
    assert_eq!(balances.qualifying_points, 0);

    let mut tokens = String::new();
    let mut points = Vec::new();
    loop {
        let page = client
            .list_ledger_entries(pb::ListLedgerEntriesRequest {
                member: by_id(&member),
                page_size: 2,
                page_token: tokens.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        points.extend(page.ledger_entries.iter().map(|e| e.points));
        if page.next_page_token.is_empty() {
            break;
        }
        tokens = page.next_page_token;
    }
    assert_eq!(points, [-200, -100, 300], "newest first across pages");
    crate::helpers::assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn a_cancelled_redemption_returns_points_to_its_lots() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    app.grant(&member, 100).await?;
    let redeem_request = redeem(rid(), &member, 80);
    client.redeem_points(redeem_request.clone()).await?;
    let reversed = client
        .reverse_points(pb::ReversePointsRequest {
            request_id: rid(),
            target: Some(pb::reverse_points_request::Target::OriginalRequestId(
                redeem_request.request_id,
            )),
            amount: Some(pb::reverse_points_request::Amount::AllRemaining(true)),
            ..Default::default()
        })
        .await?
        .into_inner();
    let balances = reversed.member.and_then(|m| m.balances).unwrap_or_default();
    assert_eq!(balances.available_points, 100);
    assert_eq!(balances.lifetime_redeemed_points, 0);
    crate::helpers::assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn qualifying_balances_are_those_of_the_rolling_window() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    // A 365-day qualifying window; silver at 500.
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    client.earn_points(purchase(&member, "q-1", 60_000)).await?;
    app.clock.advance(Duration::days(200));
    let second = client
        .earn_points(purchase(&member, "q-2", 10_000))
        .await?
        .into_inner();
    let after = second.member.and_then(|m| m.balances).unwrap_or_default();
    assert_eq!(
        (
            after.qualifying_points,
            after.qualifying_spend.map(|m| m.amount_minor)
        ),
        (700, Some(70_000))
    );

    // Day 400: the first purchase has left the window.
    app.clock.advance(Duration::days(200));
    let read = |view: i32| {
        let mut client = app.client.clone();
        let member = member.clone();
        async move {
            anyhow::Ok(
                client
                    .get_member(pb::GetMemberRequest {
                        member_id: member,
                        view,
                    })
                    .await?
                    .into_inner()
                    .member
                    .and_then(|m| m.balances)
                    .unwrap_or_default(),
            )
        }
    };
    for view in [pb::MemberView::Basic as i32, pb::MemberView::Full as i32] {
        let b = read(view).await?;
        assert_eq!(
            (
                b.qualifying_points,
                b.qualifying_spend.map(|m| m.amount_minor)
            ),
            (100, Some(10_000)),
            "view {view}"
        );
    }
    let listed = client
        .list_members(pb::ListMembersRequest {
            program_id: program_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .members;
    assert_eq!(
        listed
            .iter()
            .map(|m| m
                .balances
                .as_ref()
                .map(|b| b.qualifying_points)
                .unwrap_or(-1))
            .collect::<Vec<_>>(),
        [100]
    );
    // A later entry's running balance is the window too, and so is the earn response.
    let granted = app.grant(&member, 5).await?;
    assert_eq!(
        granted
            .ledger_entry
            .and_then(|e| e.balances_after)
            .map(|b| b.qualifying_points),
        Some(100)
    );
    Ok(())
}

#[tokio::test]
async fn on_the_wall_clock_an_earn_answers_the_create_time_it_stored() -> anyhow::Result<()> {
    // Arrange: the service on the system clock, which reads nanoseconds that Postgres does
    // not keep.
    let db = TestDatabase::create().await?;
    let settings = ServiceSettings::for_local(ServiceKind::Loyalty, db.url());
    let (mut client, _stop) = start(settings, Arc::new(SystemClock), None).await?;
    let program_id = client
        .create_program(pb::CreateProgramRequest {
            request_id: rid(),
            program: Some(program(pb::ClawbackPolicy::WithinBalance, 0)),
        })
        .await?
        .into_inner()
        .program
        .context("no program")?
        .program_id;
    let member_id = client
        .enrol_member(pb::EnrolMemberRequest {
            request_id: rid(),
            program_id,
            customer_id: Uuid::now_v7().to_string(),
            enrol_channel: "app".to_owned(),
        })
        .await?
        .into_inner()
        .member
        .context("no member")?
        .member_id;

    // Act: an earn, its entry read back, and the statement from the earn's own time on.
    let earned = client
        .earn_points(grant(rid(), &member_id, 10))
        .await?
        .into_inner()
        .ledger_entry
        .context("no entry")?;
    let stored = client
        .get_ledger_entry(pb::GetLedgerEntryRequest {
            ledger_entry_id: earned.ledger_entry_id.clone(),
        })
        .await?
        .into_inner()
        .ledger_entry
        .context("no entry")?;
    let from_then = client
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            member: by_id(&member_id),
            filter: Some(pb::LedgerEntryFilter {
                create_time_range: Some(TimeRange {
                    start_time: earned.create_time,
                    end_time: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();

    // Assert: the answered time is the stored one, in whole microseconds, and a range
    // starting at it holds the entry.
    assert_eq!(earned.create_time, stored.create_time);
    assert_eq!(earned.create_time.map(|t| t.nanos % 1_000), Some(0));
    let listed: Vec<&str> = from_then
        .ledger_entries
        .iter()
        .map(|e| e.ledger_entry_id.as_str())
        .collect();
    assert_eq!(listed, [earned.ledger_entry_id.as_str()]);
    Ok(())
}

#[tokio::test]
async fn a_member_named_by_program_and_customer_earns_into_its_window() -> anyhow::Result<()> {
    // Arrange: a member, to be named by its program and customer rather than its id.
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member_id = app.enrol(&program_id).await?;
    let customer_id = app
        .client
        .clone()
        .get_member(pb::GetMemberRequest {
            member_id: member_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .member
        .context("no member")?
        .customer_id;
    let by_customer = Some(pb::MemberRef {
        key: Some(pb::member_ref::Key::ProgramCustomer(pb::ProgramCustomer {
            program_id,
            customer_id,
        })),
    });
    let qualifying_grant = |points: i64| {
        let mut request = grant(rid(), &member_id, points);
        request.member = by_customer.clone();
        if let Some(pb::earn_points_request::Source::Grant(grant)) = request.source.as_mut() {
            grant.qualifying = true;
        }
        request
    };

    // Act: two qualifying earns, the second summing the first into its window.
    let mut client = app.client.clone();
    client.earn_points(qualifying_grant(25)).await?;
    let second = client.earn_points(qualifying_grant(10)).await?.into_inner();

    // Assert
    let entry = second.ledger_entry.context("no entry")?;
    let balances = entry.balances_after.context("no balances")?;
    assert_eq!(entry.member_id, member_id);
    assert_eq!(
        (balances.available_points, balances.qualifying_points),
        (35, 35)
    );
    Ok(())
}
