//! Money and points at their extremes (issue 14, point 5): every amount and count a request
//! carries is bounded and refused outside its range naming the field; what the bounds cannot
//! decide (many maximal earns, generous rules) is refused without a panic or a stored value
//! its reads cannot add up, and the member stays readable and spendable.

use custops_contracts::custops::common::v1::{Money, TimeRange};
use custops_contracts::custops::loyalty::v1 as pb;
use pb::earn_points_request::Source;
use tonic::{Code, Status};

use crate::helpers::{
    TestApp, assert_ledger_invariants, bad_fields, by_id, cny, error_info, grant, program,
    purchase, redeem, rid, spawn_app,
};

/// Largest money amount a request carries (10^15 minor units).
const MAX_AMOUNT: i64 = 1_000_000_000_000_000;
/// Largest balance a member reaches by its own changes (10^14 points).
const MAX_BALANCE: i64 = 100_000_000_000_000;

/// One request to any of the RPCs under test.
enum Call {
    Earn(pb::EarnPointsRequest),
    Calculate(pb::CalculatePurchasePointsRequest),
    Redeem(pb::RedeemPointsRequest),
    Adjust(pb::AdjustPointsRequest),
    Reverse(pb::ReversePointsRequest),
    CreateProgram(pb::Program),
    CreateReward(pb::Reward),
    UpdateReward(pb::Reward, &'static str),
    AdjustStock(String, i64),
    RedeemReward(String, i32),
}

async fn send(app: &TestApp, call: Call) -> Result<(), Status> {
    let mut c = app.client.clone();
    match call {
        Call::Earn(r) => c.earn_points(r).await.map(drop),
        Call::Calculate(r) => c.calculate_purchase_points(r).await.map(drop),
        Call::Redeem(r) => c.redeem_points(r).await.map(drop),
        Call::Adjust(r) => c.adjust_points(r).await.map(drop),
        Call::Reverse(r) => c.reverse_points(r).await.map(drop),
        Call::CreateProgram(program) => c
            .create_program(pb::CreateProgramRequest {
                request_id: rid(),
                program: Some(program),
            })
            .await
            .map(drop),
        Call::CreateReward(reward) => c
            .create_reward(pb::CreateRewardRequest {
                request_id: rid(),
                reward: Some(reward),
            })
            .await
            .map(drop),
        Call::UpdateReward(reward, path) => c
            .update_reward(pb::UpdateRewardRequest {
                reward: Some(reward),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![path.to_owned()],
                }),
            })
            .await
            .map(drop),
        Call::AdjustStock(reward_id, delta) => c
            .adjust_reward_stock(pb::AdjustRewardStockRequest {
                request_id: rid(),
                reward_id,
                delta,
                reason: "Stock count".to_owned(),
            })
            .await
            .map(drop),
        Call::RedeemReward(reward_id, quantity) => c
            .redeem_reward(pb::RedeemRewardRequest {
                request_id: rid(),
                member: None,
                reward_id,
                quantity,
                ..Default::default()
            })
            .await
            .map(drop),
    }
}

/// Sends `call` and checks it is INVALID_ARGUMENT naming exactly `expected` (in any order).
async fn check(app: &TestApp, name: &str, call: Call, expected: &[&str]) {
    let status = match send(app, call).await {
        Ok(()) => panic!("{name}: accepted"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
    let mut fields = bad_fields(&status);
    fields.sort();
    let mut expected: Vec<String> = expected.iter().map(|f| (*f).to_owned()).collect();
    expected.sort();
    assert_eq!(fields, expected, "{name}: {status:?}");
}

fn earn_purchase(member: &str, purchase: pb::Purchase) -> Call {
    Call::Earn(pb::EarnPointsRequest {
        request_id: rid(),
        member: by_id(member),
        source: Some(Source::Purchase(purchase)),
        ..Default::default()
    })
}

fn order(amount: Money, lines: Vec<pb::PurchaseLine>) -> pb::Purchase {
    pb::Purchase {
        order_id: rid(),
        amount: Some(amount),
        lines,
        ..Default::default()
    }
}

fn line(amount_minor: i64) -> pb::PurchaseLine {
    pb::PurchaseLine {
        amount: Some(cny(amount_minor)),
        category: String::new(),
    }
}

fn adjust(member: &str, points: i64, qualifying_points: i64) -> Call {
    Call::Adjust(pb::AdjustPointsRequest {
        request_id: rid(),
        member: by_id(member),
        points,
        qualifying_points,
        reason: "Correction".to_owned(),
        ..Default::default()
    })
}

fn reverse(entry: &str, amount: pb::reverse_points_request::Amount) -> Call {
    Call::Reverse(pb::ReversePointsRequest {
        request_id: rid(),
        target: Some(pb::reverse_points_request::Target::LedgerEntryId(
            entry.to_owned(),
        )),
        amount: Some(amount),
        ..Default::default()
    })
}

fn threshold(amount: pb::qualifying_amount::Amount) -> Option<pb::QualifyingAmount> {
    Some(pb::QualifyingAmount {
        amount: Some(amount),
    })
}

/// A program earning 1 point per 10 yuan (1,000 fen), so the largest purchase earns exactly
/// the 10^12 points one earn may credit.
fn thousandth(clawback: pb::ClawbackPolicy) -> pb::Program {
    let mut p = program(clawback, 0);
    if let Some(rules) = p.earning_rules.as_mut() {
        rules.base_rate = Some(pb::EarnRate {
            points: 1,
            per_amount_minor: 1_000,
        });
    }
    p
}

async fn app_with_member(p: pb::Program) -> anyhow::Result<(TestApp, String, String)> {
    let app = spawn_app().await?;
    let program_id = app.create_program(p).await?;
    let member = app.enrol(&program_id).await?;
    Ok((app, program_id, member))
}

async fn member(app: &TestApp, member_id: &str) -> anyhow::Result<pb::Member> {
    app.client
        .clone()
        .get_member(pb::GetMemberRequest {
            member_id: member_id.to_owned(),
            view: pb::MemberView::Full as i32,
        })
        .await?
        .into_inner()
        .member
        .ok_or_else(|| anyhow::anyhow!("no member"))
}

#[tokio::test]
async fn a_purchase_of_i64_max_is_refused_and_the_member_stays_readable() -> anyhow::Result<()> {
    let (app, _, member_id) =
        app_with_member(thousandth(pb::ClawbackPolicy::WithinBalance)).await?;
    for _ in 0..2 {
        let status = app
            .client
            .clone()
            .earn_points(purchase(&member_id, &rid(), i64::MAX))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("a purchase of 2^63-1 was accepted"))?;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(bad_fields(&status), ["purchase.amount.amount_minor"]);
    }
    // The largest amount the contract takes is earned as usual.
    let earned = app
        .client
        .clone()
        .earn_points(purchase(&member_id, &rid(), MAX_AMOUNT))
        .await?
        .into_inner();
    assert_eq!(
        earned.ledger_entry.map(|e| e.points),
        Some(MAX_AMOUNT / 1_000)
    );
    app.client
        .clone()
        .redeem_points(redeem(rid(), &member_id, 1_000))
        .await?;
    let m = member(&app, &member_id).await?;
    assert_eq!(
        m.balances.map(|b| b.available_points),
        Some(MAX_AMOUNT / 1_000 - 1_000)
    );
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn every_amount_and_count_out_of_range_names_its_field() -> anyhow::Result<()> {
    let (app, program_id, m) =
        app_with_member(program(pb::ClawbackPolicy::WithinBalance, 0)).await?;
    let earned = app.grant(&m, 100).await?;
    let entry = earned
        .ledger_entry
        .map(|e| e.ledger_entry_id)
        .unwrap_or_default();
    let reward_id = app
        .create_reward(&program_id, "Mug", 10, 5)
        .await?
        .reward_id;
    use pb::reverse_points_request::Amount;

    for amount in [i64::MAX, MAX_AMOUNT + 1, i64::MIN, 0] {
        check(
            &app,
            &format!("purchase {amount}"),
            earn_purchase(&m, order(cny(amount), vec![])),
            &["purchase.amount.amount_minor"],
        )
        .await;
    }
    check(
        &app,
        "lines of i64::MAX and i64::MIN",
        earn_purchase(
            &m,
            order(cny(1), vec![line(i64::MAX), line(i64::MAX), line(i64::MIN)]),
        ),
        &[
            "purchase.lines[0].amount.amount_minor",
            "purchase.lines[1].amount.amount_minor",
            "purchase.lines[2].amount.amount_minor",
            "purchase.amount",
        ],
    )
    .await;
    check(
        &app,
        "preview of i64::MAX",
        Call::Calculate(pb::CalculatePurchasePointsRequest {
            program_id: program_id.clone(),
            customer_id: String::new(),
            purchase: Some(order(cny(i64::MAX), vec![])),
        }),
        &["purchase.amount.amount_minor"],
    )
    .await;
    for points in [i64::MAX, i64::MIN, 1_000_000_001] {
        check(
            &app,
            &format!("grant {points}"),
            Call::Earn(grant(rid(), &m, points)),
            &["grant.points"],
        )
        .await;
        check(
            &app,
            &format!("redeem {points}"),
            Call::Redeem(redeem(rid(), &m, points)),
            &["points"],
        )
        .await;
    }
    check(
        &app,
        "adjust i64::MIN / i64::MAX",
        adjust(&m, i64::MIN, i64::MAX),
        &["points", "qualifying_points"],
    )
    .await;
    check(
        &app,
        "adjust past 10^9 both ways",
        adjust(&m, 1_000_000_001, -1_000_000_001),
        &["points", "qualifying_points"],
    )
    .await;
    for points in [i64::MAX, i64::MIN, 1_000_000_000_001] {
        check(
            &app,
            &format!("reverse {points} points"),
            reverse(&entry, Amount::Points(points)),
            &["points"],
        )
        .await;
    }
    for amount in [i64::MAX, i64::MIN, MAX_AMOUNT + 1] {
        check(
            &app,
            &format!("refund {amount}"),
            reverse(&entry, Amount::RefundAmount(cny(amount))),
            &["refund_amount.amount_minor"],
        )
        .await;
    }
    for delta in [i64::MIN, i64::MAX, 1_000_000_001, -1_000_000_001] {
        check(
            &app,
            &format!("stock delta {delta}"),
            Call::AdjustStock(reward_id.clone(), delta),
            &["delta"],
        )
        .await;
    }
    for quantity in [i32::MAX, i32::MIN] {
        check(
            &app,
            &format!("reward quantity {quantity}"),
            Call::RedeemReward(reward_id.clone(), quantity),
            &["member", "quantity"],
        )
        .await;
    }
    check(
        &app,
        "reward of extreme cost, stock and limit",
        Call::CreateReward(pb::Reward {
            program_id: program_id.clone(),
            display_name: "Yacht".to_owned(),
            points_cost: i64::MAX,
            available_stock: i64::MAX,
            max_quantity_per_member: i32::MIN,
            ..Default::default()
        }),
        &[
            "reward.points_cost",
            "reward.available_stock",
            "reward.max_quantity_per_member",
        ],
    )
    .await;
    check(
        &app,
        "reward update to a negative cost",
        Call::UpdateReward(
            pb::Reward {
                reward_id: reward_id.clone(),
                etag: "1".to_owned(),
                points_cost: i64::MIN,
                ..Default::default()
            },
            "points_cost",
        ),
        &["reward.points_cost"],
    )
    .await;

    // Earning rules and tier rules at both extremes of their integers.
    let mut p = program(pb::ClawbackPolicy::WithinBalance, i32::MAX);
    p.return_window_days = i32::MIN;
    p.earning_rules = Some(pb::EarningRules {
        base_rate: Some(pb::EarnRate {
            points: i64::MAX,
            per_amount_minor: i64::MIN,
        }),
        rounding_mode: pb::RoundingMode::Down as i32,
        category_multipliers: vec![pb::CategoryMultiplier {
            category: "electronics".to_owned(),
            multiplier_percent: i32::MAX,
        }],
        tier_multipliers: vec![pb::TierMultiplier {
            tier_code: "gold".to_owned(),
            multiplier_percent: i32::MIN,
        }],
        birthday_multiplier_percent: i32::MAX,
        ..Default::default()
    });
    check(
        &app,
        "earning rules",
        Call::CreateProgram(p),
        &[
            "program.earning_rules.base_rate.points",
            "program.earning_rules.base_rate.per_amount_minor",
            "program.earning_rules.category_multipliers[0].multiplier_percent",
            "program.earning_rules.tier_multipliers[0].multiplier_percent",
            "program.earning_rules.birthday_multiplier_percent",
            "program.expiry_policy.expire_after_days",
            "program.return_window_days",
        ],
    )
    .await;
    let mut p = program(pb::ClawbackPolicy::WithinBalance, 0);
    p.tiers[2].threshold = threshold(pb::qualifying_amount::Amount::QualifyingPoints(i64::MAX));
    p.tier_policy = Some(pb::TierPolicy {
        qualifying_window_days: i32::MAX,
        review_schedule: pb::TierReviewSchedule::Anniversary as i32,
        review_period_months: i32::MIN,
        grace_period_days: i32::MAX,
        downgrade_mode: pb::TierDowngradeMode::OneTier as i32,
    });
    if let Some(rules) = p.earning_rules.as_mut() {
        rules.campaigns = vec![pb::BonusCampaign {
            campaign_code: "double".to_owned(),
            display_name: "Double".to_owned(),
            multiplier_percent: i32::MAX,
            active_period: Some(TimeRange {
                start_time: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: 1_800_000_000,
                    nanos: 0,
                }),
            }),
            ..Default::default()
        }];
    }
    check(
        &app,
        "tier rules",
        Call::CreateProgram(p),
        &[
            "program.tiers[2].threshold",
            "program.earning_rules.campaigns[0].multiplier_percent",
            "program.tier_policy.qualifying_window_days",
            "program.tier_policy.review_period_months",
            "program.tier_policy.grace_period_days",
        ],
    )
    .await;
    let mut p = program(pb::ClawbackPolicy::WithinBalance, 0);
    p.tiers[1].threshold = threshold(pb::qualifying_amount::Amount::QualifyingSpend(cny(
        MAX_AMOUNT,
    )));
    p.tiers[2].threshold = threshold(pb::qualifying_amount::Amount::QualifyingSpend(cny(
        MAX_AMOUNT + 1,
    )));
    check(
        &app,
        "spend threshold",
        Call::CreateProgram(p),
        &["program.tiers[2].threshold"],
    )
    .await;

    // Nothing was written by any of them.
    assert_eq!(app.balances(&m).await?.available_points, 100);
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn many_maximal_purchases_stop_at_the_balance_limit_and_the_member_stays_usable()
-> anyhow::Result<()> {
    let (app, program_id, member_id) =
        app_with_member(thousandth(pb::ClawbackPolicy::WithinBalance)).await?;
    let mut client = app.client.clone();
    // 100 purchases of 10^15 fen earn 10^12 points each: exactly the 10^14 limit, and
    // 10^17 fen of qualifying spend.
    for _ in 0..100 {
        client
            .earn_points(purchase(&member_id, &rid(), MAX_AMOUNT))
            .await?;
    }
    let status = client
        .earn_points(purchase(&member_id, &rid(), MAX_AMOUNT))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("an earn past the balance limit was accepted"))?;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "BALANCE_LIMIT");
    assert_eq!(metadata.get("balance").map(String::as_str), Some("points"));
    assert_eq!(
        metadata.get("limit").map(String::as_str),
        Some(MAX_BALANCE.to_string().as_str())
    );
    let status = client
        .adjust_points(pb::AdjustPointsRequest {
            request_id: rid(),
            member: by_id(&member_id),
            qualifying_points: 1,
            reason: "Goodwill".to_owned(),
            ..Default::default()
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("qualifying points past the limit were accepted"))?;
    assert_eq!(
        error_info(&status).1.get("balance").map(String::as_str),
        Some("qualifying_points")
    );

    // The member answers every read and can still spend.
    let m = member(&app, &member_id).await?;
    let balances = m.balances.unwrap_or_default();
    assert_eq!(balances.available_points, MAX_BALANCE);
    assert_eq!(balances.lifetime_earned_points, MAX_BALANCE);
    assert_eq!(balances.qualifying_points, MAX_BALANCE);
    assert_eq!(
        balances.qualifying_spend.map(|s| s.amount_minor),
        Some(100 * MAX_AMOUNT)
    );
    assert_eq!(m.tier.map(|t| t.tier_code).as_deref(), Some("gold"));
    client
        .redeem_points(redeem(rid(), &member_id, 1_000_000_000))
        .await?;
    // Spent points make room in the balance, but not in the lifetime total.
    let status = client
        .earn_points(grant(rid(), &member_id, 1))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("lifetime earned points past the limit"))?;
    assert_eq!(
        error_info(&status).1.get("balance").map(String::as_str),
        Some("lifetime_earned_points")
    );
    let statement = client
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            member: by_id(&member_id),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(statement.ledger_entries.len(), 101);
    assert_eq!(
        statement.ledger_entries[0]
            .balances_after
            .as_ref()
            .map(|b| b.available_points),
        Some(MAX_BALANCE - 1_000_000_000)
    );
    let customer_id = m.customer_id.clone();
    let members = client
        .list_members(pb::ListMembersRequest {
            program_id: program_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(members.members.len(), 1);
    client
        .get_expiring_points(pb::GetExpiringPointsRequest {
            member: by_id(&member_id),
            within_days: 366,
        })
        .await?;
    client
        .get_member_by_customer(pb::GetMemberByCustomerRequest {
            program_id,
            customer_id,
            view: pb::MemberView::Full as i32,
        })
        .await?;
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn rules_at_their_extremes_earn_without_overflow_or_are_refused() -> anyhow::Result<()> {
    // Every multiplier at its maximum, 200 overlapping campaigns multiplied together.
    let mut p = program(pb::ClawbackPolicy::WithinBalance, 0);
    let always = TimeRange {
        start_time: Some(prost_types::Timestamp {
            seconds: 0,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: 4_000_000_000,
            nanos: 0,
        }),
    };
    p.earning_rules = Some(pb::EarningRules {
        base_rate: Some(pb::EarnRate {
            points: 1_000_000,
            per_amount_minor: 1,
        }),
        rounding_mode: pb::RoundingMode::Up as i32,
        category_multipliers: vec![pb::CategoryMultiplier {
            category: "electronics".to_owned(),
            multiplier_percent: 10_000,
        }],
        tier_multipliers: vec![pb::TierMultiplier {
            tier_code: "member".to_owned(),
            multiplier_percent: 10_000,
        }],
        campaigns: (0..200)
            .map(|i| pb::BonusCampaign {
                campaign_code: format!("c{i}"),
                display_name: format!("Campaign {i}"),
                multiplier_percent: 10_000,
                active_period: Some(always),
                ..Default::default()
            })
            .collect(),
        bonus_stacking: pb::MultiplierStacking::Multiply as i32,
        ..Default::default()
    });
    let (app, program_id, member_id) = app_with_member(p).await?;
    let electronics = |amount_minor: i64| pb::Purchase {
        order_id: rid(),
        amount: Some(cny(amount_minor)),
        categories: vec!["electronics".to_owned()],
        ..Default::default()
    };
    // One fen: 10^6 points × 100 (category) × 10,000 (bonuses, combined at most 10,000×).
    let earned = app
        .client
        .clone()
        .earn_points(pb::EarnPointsRequest {
            request_id: rid(),
            member: by_id(&member_id),
            source: Some(Source::Purchase(electronics(1))),
            ..Default::default()
        })
        .await?
        .into_inner();
    let calculation = earned
        .ledger_entry
        .and_then(|e| e.details)
        .and_then(|d| match d {
            pb::ledger_entry::Details::PurchaseEarn(p) => p.calculation,
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("no calculation"))?;
    assert_eq!(calculation.total_points, 1_000_000_000_000);
    assert_eq!(calculation.bonus_multiplier_percent, 1_000_000);
    // Two fen would earn twice the 10^12 one earn may credit: refused on the amount, by the
    // earn and by its preview alike.
    check(
        &app,
        "earn past the entry limit",
        earn_purchase(&member_id, electronics(2)),
        &["purchase.amount.amount_minor"],
    )
    .await;
    check(
        &app,
        "preview past the entry limit",
        Call::Calculate(pb::CalculatePurchasePointsRequest {
            program_id,
            customer_id: String::new(),
            purchase: Some(electronics(MAX_AMOUNT)),
        }),
        &["purchase.amount.amount_minor"],
    )
    .await;
    assert_eq!(
        app.balances(&member_id).await?.available_points,
        1_000_000_000_000
    );
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn a_partial_refund_of_the_largest_earn_is_exact() -> anyhow::Result<()> {
    let (app, _, member_id) =
        app_with_member(thousandth(pb::ClawbackPolicy::WithinBalance)).await?;
    let earned = app
        .client
        .clone()
        .earn_points(purchase(&member_id, &rid(), MAX_AMOUNT))
        .await?
        .into_inner();
    let entry = earned
        .ledger_entry
        .map(|e| e.ledger_entry_id)
        .unwrap_or_default();
    // Half the points: the qualifying points and spend taken back are shares computed from
    // products (5 × 10^11 × 10^12, 10^15 × 5 × 10^11) far past i64.
    let reversed = app
        .client
        .clone()
        .reverse_points(pb::ReversePointsRequest {
            request_id: rid(),
            target: Some(pb::reverse_points_request::Target::LedgerEntryId(
                entry.clone(),
            )),
            amount: Some(pb::reverse_points_request::Amount::Points(500_000_000_000)),
            ..Default::default()
        })
        .await?
        .into_inner()
        .ledger_entry
        .ok_or_else(|| anyhow::anyhow!("no entry"))?;
    assert_eq!(reversed.points, -500_000_000_000);
    assert_eq!(reversed.qualifying_points_delta, -500_000_000_000);
    assert_eq!(
        reversed.qualifying_spend_delta.map(|m| m.amount_minor),
        Some(-MAX_AMOUNT / 2)
    );
    // The rest by amount: the last refund takes exactly what remains.
    let rest = app
        .client
        .clone()
        .reverse_points(pb::ReversePointsRequest {
            request_id: rid(),
            target: Some(pb::reverse_points_request::Target::LedgerEntryId(entry)),
            amount: Some(pb::reverse_points_request::Amount::RefundAmount(cny(
                MAX_AMOUNT,
            ))),
            ..Default::default()
        })
        .await?
        .into_inner()
        .ledger_entry
        .ok_or_else(|| anyhow::anyhow!("no entry"))?;
    assert_eq!(rest.points, -500_000_000_000);
    let balances = app.balances(&member_id).await?;
    assert_eq!(balances.available_points, 0);
    assert_eq!(balances.qualifying_points, 0);
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn reward_stock_stays_between_zero_and_its_limit() -> anyhow::Result<()> {
    let (app, program_id, _) =
        app_with_member(program(pb::ClawbackPolicy::WithinBalance, 0)).await?;
    let reward_id = app
        .create_reward(&program_id, "Gift card", 1_000_000_000, 1_000_000_000)
        .await?
        .reward_id;
    let adjust = |delta: i64| pb::AdjustRewardStockRequest {
        request_id: rid(),
        reward_id: reward_id.clone(),
        delta,
        reason: "Stock count".to_owned(),
    };
    let status = app
        .client
        .clone()
        .adjust_reward_stock(adjust(1))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("stock past its limit"))?;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "STOCK_LIMIT");
    assert_eq!(
        metadata.get("available_stock").map(String::as_str),
        Some("1000000000")
    );
    let left = app
        .client
        .clone()
        .adjust_reward_stock(adjust(-1_000_000_000))
        .await?
        .into_inner()
        .reward
        .map(|r| r.available_stock);
    assert_eq!(left, Some(0));
    let status = app
        .client
        .clone()
        .adjust_reward_stock(adjust(-1))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("negative stock"))?;
    assert_eq!(error_info(&status).0, "STOCK_WOULD_BE_NEGATIVE");
    Ok(())
}
