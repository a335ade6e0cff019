//! RFM scores and lifecycle stages of a fixture of 19 customers with known purchase histories,
//! computed by the full runs as of a fixed time A and compared with values worked out by hand
//! (the arithmetic is in the comments), read back through the gRPC API.

#![allow(
    clippy::inconsistent_digit_grouping,
    reason = "amounts are written yuan_fen, e.g. 100_00 = 100.00 CNY"
)]

use chrono::{DateTime, Duration, Utc};
use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::workflow::derived;
use custops_segmentation::workflow::membership::Cause;

use crate::helpers::{as_of, spawn_app_at};

/// A purchase `days` days (plus `minus_hours` hours less) before A.
struct Buy {
    customer: &'static str,
    days: i64,
    minus_hours: i64,
    amount_minor: i64,
    currency: &'static str,
}

const fn buy(customer: &'static str, days: i64, amount_minor: i64) -> Buy {
    Buy {
        customer,
        days,
        minus_hours: 0,
        amount_minor,
        currency: "CNY",
    }
}

/// The fixture. Default configs: RFM window 365 days in CNY; lifecycle new 30, active 90 (≥ 1
/// purchase), at_risk 60, dormant 120, churned 365, reactivated 30, gap multiplier 2.0.
fn purchases() -> Vec<Buy> {
    let mut all = Vec::new();
    let mut add = |customer, days: &[i64], amount| {
        for &d in days {
            all.push(buy(customer, d, amount));
        }
    };
    add("c01", &[2, 20, 40, 70, 100], 100_00);
    add("c02", &[5], 50_00);
    add("c02", &[15], 70_00);
    add("c03", &[1], 30_00);
    add("c04", &[10, 50, 90, 130, 170, 210, 250, 290, 330], 200_00);
    // Exactly at_risk_after_days (60) since the last purchase.
    add("c05", &[60, 200], 80_00);
    add("c06", &[150], 40_00);
    add("c07", &[130, 300], 500_00);
    add("c08", &[400, 500], 70_00);
    // Exactly 365 days: churned, and just outside the (A − 365 d, A] window.
    add("c09", &[365], 90_00);
    // Back after a 190-day gap (≥ dormant_after_days): reactivated.
    add("c10", &[10, 200, 260], 100_00);
    add("c11", &[33], 10_00);
    add("c13", &[25, 45, 65], 300_00);
    add("c14", &[80, 85], 20_00);
    add("c15", &[45, 100], 60_00);
    add("c16", &[40, 50], 10_00);
    // Ties c01 on frequency and monetary.
    add("c17", &[20, 30, 35, 60, 61], 100_00);
    // Ties c01 on recency and monetary.
    add("c18", &[2], 500_00);
    // 59 days 23 hours: d = floor(59.96) = 59, still active.
    all.push(Buy {
        minus_hours: 1,
        ..buy("c06", 60, 40_00)
    });
    // Other currencies count for frequency; for monetary only at a configured rate (none by
    // default, see the mixed-currency test).
    all.push(Buy {
        currency: "USD",
        ..buy("c11", 3, 999_00)
    });
    all.push(Buy {
        currency: "USD",
        ..buy("c12", 7, 50_00)
    });
    all
}

/// Expected per customer: recency days, frequency, monetary, R, F, M, group, stage, churn
/// risk score, flag.
///
/// Bounds (18 scored customers; percentile_disc(k/5) takes the value at position
/// ceil(18·k/5) = 4, 8, 11, 15 of the sorted values):
/// - recency sorted: 1 2 2 3 | 5 7 10 10 | 20 25 40 | 45 59 60 80 | 130 365 400
///   → [3, 10, 40, 80];
/// - frequency sorted: 0 0 1 1 | 1 2 2 2 | 2 2 2 | 2 2 3 3 | 5 5 9 → [1, 2, 2, 3];
/// - monetary sorted: 0 0 0 1000 | 2000 3000 4000 8000 | 12000 12000 16000 |
///   30000 50000 50000 50000 | 90000 100000 180000 → [1000, 8000, 16000, 50000].
///
/// FM = (F + M + 1) / 2; the group from the (R, FM) grid. Churn risk = min(1, d / (2 × gap)),
/// gap = mean gap between purchases, or 60 (at_risk_after_days) with one purchase.
#[allow(clippy::type_complexity)]
fn expected() -> Vec<(
    &'static str,
    Option<i32>,
    i64,
    i64,
    i32,
    i32,
    i32,
    &'static str,
    &'static str,
    f64,
    bool,
)> {
    vec![
        // gap (100−2)/4 = 24.5 → 2/49
        (
            "c01",
            Some(2),
            5,
            50000,
            5,
            5,
            4,
            "champions",
            "active",
            2.0 / 49.0,
            false,
        ),
        // FM (2+3+1)/2 = 3; gap 10 → 5/20
        (
            "c02",
            Some(5),
            2,
            12000,
            4,
            2,
            3,
            "potential_loyalist",
            "new",
            0.25,
            false,
        ),
        (
            "c03",
            Some(1),
            1,
            3000,
            5,
            1,
            2,
            "potential_loyalist",
            "new",
            1.0 / 120.0,
            false,
        ),
        // 90 days ago is outside the active window but inside the RFM one; gap 320/8 = 40
        (
            "c04",
            Some(10),
            9,
            180000,
            4,
            5,
            5,
            "loyal",
            "active",
            10.0 / 80.0,
            false,
        ),
        (
            "c05",
            Some(60),
            2,
            16000,
            2,
            2,
            3,
            "at_risk",
            "at_risk",
            60.0 / 280.0,
            true,
        ),
        // gap 150 d − (60 d − 1 h) = 90 d 1 h
        (
            "c06",
            Some(59),
            2,
            8000,
            2,
            2,
            2,
            "hibernating",
            "active",
            59.0 / (2.0 * (90.0 + 1.0 / 24.0)),
            false,
        ),
        // FM (2+5+1)/2 = 4 with R 1
        (
            "c07",
            Some(130),
            2,
            100000,
            1,
            2,
            5,
            "at_risk",
            "dormant",
            130.0 / 340.0,
            true,
        ),
        (
            "c08",
            Some(400),
            0,
            0,
            1,
            1,
            1,
            "lost",
            "churned",
            0.0,
            false,
        ),
        (
            "c09",
            Some(365),
            0,
            0,
            1,
            1,
            1,
            "lost",
            "churned",
            0.0,
            false,
        ),
        // gap (260−10)/2 = 125
        (
            "c10",
            Some(10),
            3,
            30000,
            4,
            4,
            4,
            "loyal",
            "reactivated",
            10.0 / 250.0,
            false,
        ),
        // the USD purchase counts for F (2) but not M (1000)
        (
            "c11",
            Some(3),
            2,
            1000,
            5,
            2,
            1,
            "potential_loyalist",
            "active",
            3.0 / 60.0,
            false,
        ),
        (
            "c12",
            Some(7),
            1,
            0,
            4,
            1,
            1,
            "promising",
            "new",
            7.0 / 120.0,
            false,
        ),
        (
            "c13",
            Some(25),
            3,
            90000,
            3,
            4,
            5,
            "loyal",
            "active",
            25.0 / 40.0,
            false,
        ),
        // gap 5 → 80/10 capped at 1
        (
            "c14",
            Some(80),
            2,
            4000,
            2,
            2,
            2,
            "hibernating",
            "at_risk",
            1.0,
            true,
        ),
        (
            "c15",
            Some(45),
            2,
            12000,
            2,
            2,
            3,
            "at_risk",
            "active",
            45.0 / 110.0,
            false,
        ),
        // active but 40 days ≥ 2 × its 10-day gap: flagged
        (
            "c16",
            Some(40),
            2,
            2000,
            3,
            2,
            2,
            "about_to_sleep",
            "active",
            1.0,
            true,
        ),
        // gap (61−20)/4 = 10.25 → 20/20.5
        (
            "c17",
            Some(20),
            5,
            50000,
            3,
            5,
            4,
            "loyal",
            "active",
            20.0 / 20.5,
            false,
        ),
        // FM (1+4+1)/2 = 3
        (
            "c18",
            Some(2),
            1,
            50000,
            5,
            1,
            4,
            "potential_loyalist",
            "new",
            2.0 / 120.0,
            false,
        ),
        // no purchase at or before A
        ("c19", None, 0, 0, 0, 0, 0, "", "prospect", 0.0, false),
    ]
}

/// The profiles customer id (a UUID, as the per-customer reads require) of fixture customer
/// `name` ("c07" → "…-000000000007").
fn profiles_id(name: &str) -> String {
    let digits = name.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    format!("0190f6f5-0000-7000-8000-{digits:0>12}")
}

fn slug(name: &str, prefix: &str) -> String {
    let rest = name.strip_prefix(prefix).unwrap_or(name);
    if rest == "UNSPECIFIED" {
        String::new()
    } else {
        rest.to_ascii_lowercase()
    }
}

async fn arrange(pool: &sqlx::PgPool, a: DateTime<Utc>) -> anyhow::Result<()> {
    for (id, ..) in expected() {
        sqlx::query("INSERT INTO customer_facts (customer_id) VALUES ($1)")
            .bind(profiles_id(id))
            .execute(pool)
            .await?;
    }
    for (i, p) in purchases().iter().enumerate() {
        let time = a - Duration::days(p.days) + Duration::hours(p.minus_hours);
        sqlx::query(
            "INSERT INTO customer_activities \
               (activity_id, customer_id, kind, occur_time, amount_minor, currency) \
             VALUES ($1, $2, 'purchase', $3, $4, $5)",
        )
        .bind(format!("a{i}"))
        .bind(profiles_id(p.customer))
        .bind(time)
        .bind(p.amount_minor)
        .bind(p.currency)
        .execute(pool)
        .await?;
    }
    // c19: a purchase after A and an interaction; neither makes it a buyer as of A.
    sqlx::query(
        "INSERT INTO customer_activities \
           (activity_id, customer_id, kind, occur_time, amount_minor, currency) \
         VALUES ('late', $3, 'purchase', $1, 100, 'CNY'), \
                ('visit', $3, 'visit', $2, NULL, NULL)",
    )
    .bind(a + Duration::days(1))
    .bind(a - Duration::days(1))
    .bind(profiles_id("c19"))
    .execute(pool)
    .await?;
    Ok(())
}

#[tokio::test]
async fn full_runs_match_hand_computed_scores_groups_and_stages() -> anyhow::Result<()> {
    let mut app = spawn_app_at(as_of()).await?;
    let a = as_of();
    arrange(&app.pool, a).await?;

    let mut tx = app.pool.begin().await?;
    let rfm_changed = derived::run_rfm(&mut tx, a).await?;
    let stage_changed = derived::run_lifecycle(&mut tx, a).await?;
    tx.commit().await?;

    // Everyone scored left the "" group; everyone who bought left PROSPECT.
    assert_eq!((rfm_changed, stage_changed), (18, 18));
    for (id, days, freq, money, r, f, m, group, stage, score, flag) in expected() {
        let rfm = app
            .client
            .get_customer_rfm(pb::GetCustomerRfmRequest {
                customer_id: profiles_id(id),
            })
            .await?
            .into_inner()
            .rfm
            .unwrap_or_default();
        let got = (
            rfm.recency_days,
            rfm.frequency,
            rfm.monetary.clone().unwrap_or_default().amount_minor,
            rfm.recency_score,
            rfm.frequency_score,
            rfm.monetary_score,
            slug(rfm.group().as_str_name(), "RFM_GROUP_"),
            rfm.scored,
        );
        assert_eq!(
            got,
            (days, freq, money, r, f, m, group.to_owned(), r > 0),
            "RFM of {id}"
        );
        assert_eq!(
            rfm.frequency_monetary_score,
            if r > 0 { (f + m + 1) / 2 } else { 0 }
        );
        assert_eq!(rfm.monetary.unwrap_or_default().currency, "CNY");
        let lifecycle = app
            .client
            .get_customer_lifecycle(pb::GetCustomerLifecycleRequest {
                customer_id: profiles_id(id),
            })
            .await?
            .into_inner()
            .lifecycle
            .unwrap_or_default();
        assert_eq!(
            slug(lifecycle.stage().as_str_name(), "LIFECYCLE_STAGE_"),
            stage,
            "stage of {id}"
        );
        assert!(
            (lifecycle.churn_risk_score - score).abs() < 1e-9,
            "churn risk score of {id}: {} ≠ {score}",
            lifecycle.churn_risk_score
        );
        assert_eq!(lifecycle.churn_risk, flag, "churn flag of {id}");
        assert_eq!(lifecycle.days_since_last_purchase, days, "days of {id}");
        let entered = if stage == "prospect" {
            pb::LifecycleStage::Unspecified
        } else {
            pb::LifecycleStage::Prospect
        };
        assert_eq!(
            lifecycle.previous_stage(),
            entered,
            "previous stage of {id}"
        );
    }

    let distribution = app
        .client
        .get_rfm_distribution(pb::GetRfmDistributionRequest::default())
        .await?
        .into_inner();
    let thresholds = distribution.thresholds.clone().unwrap_or_default();
    assert_eq!(thresholds.recency_days, vec![3, 10, 40, 80]);
    assert_eq!(thresholds.frequency, vec![1, 2, 2, 3]);
    let monetary: Vec<i64> = thresholds.monetary.iter().map(|m| m.amount_minor).collect();
    assert_eq!(monetary, vec![1000, 8000, 16000, 50000]);
    assert_eq!(
        distribution.compute_time,
        Some(custops_segmentation::wire::timestamp(a)),
        "the run's as-of time"
    );
    assert_eq!(
        (
            distribution.scored_customer_count,
            distribution.unscored_customer_count
        ),
        (18, 1)
    );
    let groups: Vec<(String, i64)> = distribution
        .group_counts
        .iter()
        .map(|g| {
            (
                slug(g.group().as_str_name(), "RFM_GROUP_"),
                g.customer_count,
            )
        })
        .collect();
    let want = [
        ("champions", 1),
        ("loyal", 4),
        ("potential_loyalist", 4),
        ("new_customers", 0),
        ("promising", 1),
        ("need_attention", 0),
        ("about_to_sleep", 1),
        ("at_risk", 3),
        ("cannot_lose", 0),
        ("hibernating", 2),
        ("lost", 2),
    ];
    let want: Vec<(String, i64)> = want.iter().map(|(g, n)| (g.to_string(), *n)).collect();
    assert_eq!(groups, want);
    assert_eq!(distribution.cell_counts.len(), 25);
    let cell = |r: i32, fm: i32| {
        distribution
            .cell_counts
            .iter()
            .find(|c| c.recency_score == r && c.frequency_monetary_score == fm)
            .map_or(-1, |c| c.customer_count)
    };
    // (R 4, FM 4): c10; (R 5, FM 2): c03, c11; (R 1, FM 1): c08, c09.
    assert_eq!((cell(4, 4), cell(5, 2), cell(1, 1)), (1, 2, 2));

    let stages = app
        .client
        .get_lifecycle_distribution(pb::GetLifecycleDistributionRequest::default())
        .await?
        .into_inner();
    let got: Vec<(String, i64, i64)> = stages
        .stage_counts
        .iter()
        .map(|s| {
            (
                slug(s.stage().as_str_name(), "LIFECYCLE_STAGE_"),
                s.customer_count,
                s.churn_risk_count,
            )
        })
        .collect();
    let want = [
        ("prospect", 1, 0),
        ("new", 4, 0),
        ("active", 8, 1),
        ("at_risk", 2, 2),
        ("dormant", 1, 1),
        ("churned", 2, 0),
        ("reactivated", 1, 0),
    ];
    let want: Vec<(String, i64, i64)> = want
        .iter()
        .map(|(s, n, r)| (s.to_string(), *n, *r))
        .collect();
    assert_eq!(got, want);
    assert_eq!((stages.customer_count, stages.churn_risk_count), (19, 4));

    // One event per change, on the outbox, keyed by customer.
    let events: Vec<(String, i64)> = sqlx::query_as(
        "SELECT type, count(*) FROM outbox WHERE aggregatetype = 'customer' \
         GROUP BY type ORDER BY type",
    )
    .fetch_all(&app.pool)
    .await?;
    let want = [
        ("custops.segmentation.v1.ChurnRiskChanged", 4),
        ("custops.segmentation.v1.LifecycleStageChanged", 18),
        ("custops.segmentation.v1.RfmGroupChanged", 18),
    ];
    let want: Vec<(String, i64)> = want.iter().map(|(t, n)| (t.to_string(), *n)).collect();
    assert_eq!(events, want);

    // A second run at the same instant changes nothing.
    let mut tx = app.pool.begin().await?;
    let again = (
        derived::run_rfm(&mut tx, a).await?,
        derived::run_lifecycle(&mut tx, a).await?,
    );
    tx.commit().await?;
    assert_eq!(again, (0, 0));
    Ok(())
}

#[tokio::test]
async fn a_purchase_between_runs_is_scored_with_the_last_runs_bounds() -> anyhow::Result<()> {
    let app = spawn_app_at(as_of()).await?;
    let a = as_of();
    arrange(&app.pool, a).await?;
    let mut tx = app.pool.begin().await?;
    derived::run_rfm(&mut tx, a).await?;
    derived::run_lifecycle(&mut tx, a).await?;
    tx.commit().await?;

    // c19 buys for 600 CNY one hour after A.
    let c19 = profiles_id("c19");
    let now = a + Duration::hours(1);
    let mut tx = app.pool.begin().await?;
    sqlx::query(
        "INSERT INTO customer_activities \
           (activity_id, customer_id, kind, occur_time, amount_minor, currency) \
         VALUES ('first', $2, 'purchase', $1, 60000, 'CNY')",
    )
    .bind(now)
    .bind(&c19)
    .execute(&mut *tx)
    .await?;
    let cause = Cause {
        reason: pb::ChangeReason::Event,
        event_id: "e-1".into(),
        now,
    };
    derived::refresh_customer(&mut tx, &c19, &cause).await?;
    tx.commit().await?;

    // Bounds of the run: R [3, 10, 40, 80] → d 0 scores 5; F [1, 2, 2, 3] → 1 scores 1;
    // M [1000, 8000, 16000, 50000] → 60000 scores 5; FM (1+5+1)/2 = 3 → potential_loyalist.
    let facts =
        custops_segmentation::store::facts::load_facts(&mut *app.pool.acquire().await?, &c19)
            .await?
            .unwrap_or_default();
    assert_eq!(
        (
            facts.rfm.recency_days,
            facts.rfm.frequency,
            facts.rfm.monetary_minor,
            facts.rfm.recency_score,
            facts.rfm.frequency_score,
            facts.rfm.monetary_score,
            facts.rfm.group.as_str(),
            facts.rfm.score_time,
        ),
        (Some(0), 1, 60000, 5, 1, 5, "potential_loyalist", Some(now))
    );
    assert_eq!(
        (
            facts.lifecycle.stage.as_str(),
            facts.lifecycle.previous_stage.as_str()
        ),
        ("new", "prospect")
    );
    assert_eq!(facts.lifecycle.stage_start_time, now);
    let events: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT type, payload FROM outbox WHERE aggregateid = $1 ORDER BY id")
            .bind(&c19)
            .fetch_all(&app.pool)
            .await?;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "custops.segmentation.v1.RfmGroupChanged",
            "custops.segmentation.v1.LifecycleStageChanged"
        ]
    );
    let changed = <pb::LifecycleStageChanged as prost::Message>::decode(events[1].1.as_slice())?;
    assert_eq!(changed.previous_stage(), pb::LifecycleStage::Prospect);
    assert_eq!(changed.cause_event_id, "e-1");
    assert_eq!(changed.reason(), pb::ChangeReason::Event);
    Ok(())
}

fn violations(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|f| f.field).collect())
        .unwrap_or_default()
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

#[tokio::test]
async fn config_updates_validate_fields_check_etags_and_queue_a_recompute() -> anyhow::Result<()> {
    let mut app = spawn_app_at(as_of()).await?;
    let config = app
        .client
        .get_lifecycle_config(pb::GetLifecycleConfigRequest {})
        .await?
        .into_inner()
        .lifecycle_config
        .unwrap_or_default();
    assert_eq!(
        (
            config.at_risk_after_days,
            config.dormant_after_days,
            config.churned_after_days
        ),
        (60, 120, 365)
    );

    let bad = app
        .client
        .update_lifecycle_config(pb::UpdateLifecycleConfigRequest {
            lifecycle_config: Some(pb::LifecycleConfig {
                dormant_after_days: 50,
                churn_risk_gap_multiplier: 11.0,
                ..Default::default()
            }),
            update_mask: mask(&["dormant_after_days", "churn_risk_gap_multiplier"]),
        })
        .await
        .err()
        .map(|s| violations(&s));
    assert_eq!(
        bad,
        Some(vec![
            "lifecycle_config.churn_risk_gap_multiplier".to_owned(),
            "lifecycle_config.dormant_after_days".to_owned()
        ])
    );

    let updated = app
        .client
        .update_lifecycle_config(pb::UpdateLifecycleConfigRequest {
            lifecycle_config: Some(pb::LifecycleConfig {
                at_risk_after_days: 45,
                etag: config.etag.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["at_risk_after_days"]),
        })
        .await?
        .into_inner();
    assert_eq!(
        updated
            .lifecycle_config
            .clone()
            .unwrap_or_default()
            .at_risk_after_days,
        45
    );
    let job: (String, String, String) = sqlx::query_as(
        "SELECT scope, trigger, requester FROM recompute_jobs WHERE recompute_job_id::text = $1",
    )
    .bind(&updated.recompute_job_id)
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(
        job,
        (
            "lifecycle".into(),
            "config_changed".into(),
            "anonymous".into()
        )
    );

    // The etag read before the update is stale now.
    let stale = app
        .client
        .update_lifecycle_config(pb::UpdateLifecycleConfigRequest {
            lifecycle_config: Some(pb::LifecycleConfig {
                at_risk_after_days: 50,
                etag: config.etag,
                ..Default::default()
            }),
            update_mask: mask(&["at_risk_after_days"]),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(stale, Some(tonic::Code::Aborted));

    let bad = app
        .client
        .update_rfm_config(pb::UpdateRfmConfigRequest {
            rfm_config: Some(pb::RfmConfig {
                window_days: 10,
                fixed_thresholds: Some(pb::RfmThresholds {
                    recency_days: vec![10, 20, 30, 40],
                    frequency: vec![1, 3, 2, 4],
                    monetary: Vec::new(),
                }),
                ..Default::default()
            }),
            update_mask: mask(&["window_days", "fixed_thresholds"]),
        })
        .await
        .err()
        .map(|s| violations(&s));
    assert_eq!(
        bad,
        Some(vec![
            "rfm_config.fixed_thresholds.frequency".to_owned(),
            "rfm_config.fixed_thresholds.monetary".to_owned(),
            "rfm_config.window_days".to_owned(),
        ])
    );
    let updated = app
        .client
        .update_rfm_config(pb::UpdateRfmConfigRequest {
            rfm_config: Some(pb::RfmConfig {
                window_days: 180,
                ..Default::default()
            }),
            update_mask: mask(&["window_days"]),
        })
        .await?
        .into_inner();
    let scope: String =
        sqlx::query_scalar("SELECT scope FROM recompute_jobs WHERE recompute_job_id::text = $1")
            .bind(&updated.recompute_job_id)
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(scope, "rfm");
    // The same value again changes nothing and queues nothing.
    let same = app
        .client
        .update_rfm_config(pb::UpdateRfmConfigRequest {
            rfm_config: Some(pb::RfmConfig {
                window_days: 180,
                ..Default::default()
            }),
            update_mask: mask(&["window_days"]),
        })
        .await?
        .into_inner();
    assert_eq!(same.recompute_job_id, "");

    let missing = app
        .client
        .get_rfm_distribution(pb::GetRfmDistributionRequest {
            segment_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(missing, Some(tonic::Code::NotFound));
    Ok(())
}

#[tokio::test]
async fn an_invalid_config_update_with_a_stale_etag_is_invalid_argument() -> anyhow::Result<()> {
    let mut app = spawn_app_at(as_of()).await?;
    // Move both configs on once, so the etags read first are stale.
    let rfm_before = app
        .client
        .get_rfm_config(pb::GetRfmConfigRequest {})
        .await?
        .into_inner()
        .rfm_config
        .unwrap_or_default();
    let lifecycle_before = app
        .client
        .get_lifecycle_config(pb::GetLifecycleConfigRequest {})
        .await?
        .into_inner()
        .lifecycle_config
        .unwrap_or_default();
    app.client
        .update_rfm_config(pb::UpdateRfmConfigRequest {
            rfm_config: Some(pb::RfmConfig {
                window_days: 180,
                ..Default::default()
            }),
            update_mask: mask(&["window_days"]),
        })
        .await?;
    app.client
        .update_lifecycle_config(pb::UpdateLifecycleConfigRequest {
            lifecycle_config: Some(pb::LifecycleConfig {
                at_risk_after_days: 45,
                ..Default::default()
            }),
            update_mask: mask(&["at_risk_after_days"]),
        })
        .await?;

    // Stale etag and an invalid body: the body is what the caller must fix.
    let rfm = app
        .client
        .update_rfm_config(pb::UpdateRfmConfigRequest {
            rfm_config: Some(pb::RfmConfig {
                window_days: 10,
                etag: rfm_before.etag.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["window_days"]),
        })
        .await
        .err()
        .map(|s| violations(&s));
    assert_eq!(rfm, Some(vec!["rfm_config.window_days".to_owned()]));
    let lifecycle = app
        .client
        .update_lifecycle_config(pb::UpdateLifecycleConfigRequest {
            lifecycle_config: Some(pb::LifecycleConfig {
                churn_risk_gap_multiplier: 11.0,
                etag: lifecycle_before.etag.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["churn_risk_gap_multiplier"]),
        })
        .await
        .err()
        .map(|s| violations(&s));
    assert_eq!(
        lifecycle,
        Some(vec![
            "lifecycle_config.churn_risk_gap_multiplier".to_owned()
        ])
    );
    // An unknown mask path is the request's fault too.
    let path = app
        .client
        .update_rfm_config(pb::UpdateRfmConfigRequest {
            rfm_config: Some(pb::RfmConfig {
                etag: rfm_before.etag.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["colour"]),
        })
        .await
        .err()
        .map(|s| violations(&s));
    assert_eq!(path, Some(vec!["update_mask.paths[0]".to_owned()]));

    // Stale etag and a valid body: ABORTED, nothing changed.
    let stale = app
        .client
        .update_rfm_config(pb::UpdateRfmConfigRequest {
            rfm_config: Some(pb::RfmConfig {
                window_days: 90,
                etag: rfm_before.etag,
                ..Default::default()
            }),
            update_mask: mask(&["window_days"]),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(stale, Some(tonic::Code::Aborted));
    let stale = app
        .client
        .update_lifecycle_config(pb::UpdateLifecycleConfigRequest {
            lifecycle_config: Some(pb::LifecycleConfig {
                at_risk_after_days: 50,
                etag: lifecycle_before.etag,
                ..Default::default()
            }),
            update_mask: mask(&["at_risk_after_days"]),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(stale, Some(tonic::Code::Aborted));
    let window = app
        .client
        .get_rfm_config(pb::GetRfmConfigRequest {})
        .await?
        .into_inner()
        .rfm_config
        .unwrap_or_default()
        .window_days;
    assert_eq!(window, 180);
    Ok(())
}

/// A purchase of `amount_minor` `currency` by `customer`, `days` before A (`hours` later).
async fn buy_at(
    pool: &sqlx::PgPool,
    customer: &str,
    time: DateTime<Utc>,
    amount_minor: i64,
    currency: &str,
) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO customer_facts (customer_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(customer)
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO customer_activities \
           (activity_id, customer_id, kind, occur_time, amount_minor, currency) \
         VALUES ($1, $2, 'purchase', $3, $4, $5)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(customer)
    .bind(time)
    .bind(amount_minor)
    .bind(currency)
    .execute(pool)
    .await?;
    Ok(())
}

fn money(
    amount_minor: i64,
    currency: &str,
) -> Option<custops_contracts::custops::common::v1::Money> {
    Some(custops_contracts::custops::common::v1::Money {
        amount_minor,
        currency: currency.to_owned(),
    })
}

fn rate(
    amount_minor: i64,
    currency: &str,
    value_minor: i64,
    value_currency: &str,
) -> pb::CurrencyRate {
    pb::CurrencyRate {
        amount: money(amount_minor, currency),
        value: money(value_minor, value_currency),
    }
}

/// Monetary value over purchases in four currencies, worked out by hand. RFM currency CNY,
/// window 365 days; rates: 1.00 USD (100) counts as 7.12 CNY (712), 100 JPY (JPY has no minor
/// unit) as 4.78 CNY (478); EUR has no rate.
///
/// | customer | purchases in the window                         | monetary (fen)                      |
/// |----------|-------------------------------------------------|-------------------------------------|
/// | m1       | 100.00 CNY, 250.00 USD                          | 10000 + 25000·712/100 = 188000      |
/// | m2       | 1,001 JPY, 999 JPY                              | ⌊2000·478/100⌋ = 9560 (per purchase it would be 4784 + 4775 = 9559: rounded once per currency) |
/// | m3       | 500.00 EUR (and 1.00 CNY 400 days ago)          | 0: EUR has no rate, the CNY is outside the window; F = 1 |
/// | m4       | 0.01 USD                                        | ⌊1·712/100⌋ = ⌊7.12⌋ = 7            |
/// | m5       | 50.00 CNY, 10.00 USD, 100 JPY, 10.00 EUR        | 5000 + 7120 + 478 = 12598           |
/// | m6       | none (buys 20.00 USD one hour after A)          | then ⌊2000·712/100⌋ = 14240          |
///
/// Quintile bounds over the 5 scored customers (positions ceil(5·k/5) = k of the sorted values
/// 0, 7, 9560, 12598, 188000): [0, 7, 9560, 12598], so M scores m3 1, m4 2, m2 3, m5 4, m1 5.
/// Without rates (the default) the values are 10000, 0, 0, 0, 5000: bounds [0, 0, 0, 5000], the
/// degenerate picture of the sample data before rates existed.
#[tokio::test]
async fn monetary_counts_other_currencies_at_the_configured_rates() -> anyhow::Result<()> {
    let mut app = spawn_app_at(as_of()).await?;
    let a = as_of();
    let id = |n: &str| profiles_id(n);
    let days = |d: i64| a - Duration::days(d);
    buy_at(&app.pool, &id("m1"), days(10), 100_00, "CNY").await?;
    buy_at(&app.pool, &id("m1"), days(20), 250_00, "USD").await?;
    buy_at(&app.pool, &id("m2"), days(5), 1_001, "JPY").await?;
    buy_at(&app.pool, &id("m2"), days(6), 999, "JPY").await?;
    buy_at(&app.pool, &id("m3"), days(3), 500_00, "EUR").await?;
    buy_at(&app.pool, &id("m3"), days(400), 1_00, "CNY").await?;
    buy_at(&app.pool, &id("m4"), days(1), 1, "USD").await?;
    buy_at(&app.pool, &id("m5"), days(30), 50_00, "CNY").await?;
    buy_at(&app.pool, &id("m5"), days(40), 10_00, "USD").await?;
    buy_at(&app.pool, &id("m5"), days(50), 100, "JPY").await?;
    buy_at(&app.pool, &id("m5"), days(60), 10_00, "EUR").await?;
    sqlx::query("INSERT INTO customer_facts (customer_id) VALUES ($1)")
        .bind(id("m6"))
        .execute(&app.pool)
        .await?;
    let monetary_of = |app: &crate::helpers::TestApp, n: &'static str| {
        let mut client = app.client.clone();
        async move {
            let rfm = client
                .get_customer_rfm(pb::GetCustomerRfmRequest {
                    customer_id: profiles_id(n),
                })
                .await?
                .into_inner()
                .rfm
                .unwrap_or_default();
            let monetary = rfm.monetary.unwrap_or_default();
            anyhow::ensure!(monetary.currency == "CNY", "{monetary:?}");
            Ok::<_, anyhow::Error>((monetary.amount_minor, rfm.monetary_score, rfm.frequency))
        }
    };

    // The default config: only CNY counts.
    let mut tx = app.pool.begin().await?;
    derived::run_rfm(&mut tx, a).await?;
    tx.commit().await?;
    let mut got = Vec::new();
    for n in ["m1", "m2", "m3", "m4", "m5"] {
        got.push(monetary_of(&app, n).await?.0);
    }
    assert_eq!(got, vec![10000, 0, 0, 0, 5000]);
    let bounds = |d: pb::GetRfmDistributionResponse| -> Vec<i64> {
        d.thresholds
            .unwrap_or_default()
            .monetary
            .iter()
            .map(|m| m.amount_minor)
            .collect()
    };
    let distribution = app
        .client
        .get_rfm_distribution(pb::GetRfmDistributionRequest::default())
        .await?
        .into_inner();
    assert_eq!(bounds(distribution), vec![0, 0, 0, 5000]);

    // Bad rates are refused, each named.
    let refused = app
        .client
        .update_rfm_config(pb::UpdateRfmConfigRequest {
            rfm_config: Some(pb::RfmConfig {
                currency_rates: vec![
                    rate(1, "CNY", 1, "CNY"),
                    rate(100, "USD", 712, "EUR"),
                    rate(0, "JPY", 478, "CNY"),
                    pb::CurrencyRate {
                        amount: money(100, "GBP"),
                        value: None,
                    },
                ],
                ..Default::default()
            }),
            update_mask: mask(&["currency_rates"]),
        })
        .await
        .err()
        .map(|s| violations(&s));
    assert_eq!(
        refused,
        Some(vec![
            "rfm_config.currency_rates[0].amount.currency".to_owned(),
            "rfm_config.currency_rates[1].value.currency".to_owned(),
            "rfm_config.currency_rates[2].amount.amount_minor".to_owned(),
            "rfm_config.currency_rates[3].value.currency".to_owned(),
            "rfm_config.currency_rates[3].value.amount_minor".to_owned(),
        ])
    );

    // The rates, set; the RFM job they queue rescores everyone (the full run's SQL).
    let updated = app
        .client
        .update_rfm_config(pb::UpdateRfmConfigRequest {
            rfm_config: Some(pb::RfmConfig {
                currency_rates: vec![rate(100, "USD", 712, "CNY"), rate(100, "JPY", 478, "CNY")],
                ..Default::default()
            }),
            update_mask: mask(&["currency_rates"]),
        })
        .await?
        .into_inner();
    let config = updated.rfm_config.unwrap_or_default();
    assert_eq!(
        config.currency_rates,
        vec![rate(100, "JPY", 478, "CNY"), rate(100, "USD", 712, "CNY")],
        "kept in currency order"
    );
    wait_job(&mut app, &updated.recompute_job_id).await?;
    let mut got = Vec::new();
    for n in ["m1", "m2", "m3", "m4", "m5"] {
        got.push(monetary_of(&app, n).await?);
    }
    assert_eq!(
        got,
        vec![
            (188000, 5, 2),
            (9560, 3, 2),
            (0, 1, 1),
            (7, 2, 1),
            (12598, 4, 4)
        ]
    );
    let distribution = app
        .client
        .get_rfm_distribution(pb::GetRfmDistributionRequest::default())
        .await?
        .into_inner();
    assert_eq!(bounds(distribution), vec![0, 7, 9560, 12598]);

    // The rule field rfm.monetary reads the same value in both evaluators: the recompute (SQL)
    // and the incremental evaluation of the per-customer refresh below (Rust).
    let created = app
        .client
        .create_segment(pb::CreateSegmentRequest {
            segment: Some(pb::Segment {
                display_name: "Spent 100+ CNY".into(),
                kind: pb::SegmentKind::Rule.into(),
                rule: Some(pb::Condition {
                    kind: Some(pb::condition::Kind::Predicate(pb::Predicate {
                        field: "rfm.monetary".into(),
                        operator: pb::Operator::GreaterOrEqual.into(),
                        values: vec![pb::Value {
                            kind: Some(pb::value::Kind::IntegerValue(100_00)),
                        }],
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    wait_job(&mut app, &created.recompute_job_id).await?;
    let segment_id = created.segment.unwrap_or_default().segment_id;
    let members = |app: &crate::helpers::TestApp| {
        let pool = app.pool.clone();
        let segment_id = segment_id.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT customer_id FROM memberships WHERE segment_id = $1::uuid ORDER BY 1",
            )
            .bind(segment_id)
            .fetch_all(&pool)
            .await
        }
    };
    assert_eq!(members(&app).await?, vec![id("m1"), id("m5")]);

    // m6 buys 20.00 USD an hour after A: the per-customer refresh (same SQL, one customer,
    // the run's bounds) counts it at the rate, 14240 > 12598 scores M 5, and the customer
    // enters the segment incrementally.
    let now = a + Duration::hours(1);
    app.clock.set(now);
    buy_at(&app.pool, &id("m6"), now, 20_00, "USD").await?;
    let cause = Cause {
        reason: pb::ChangeReason::Event,
        event_id: "e-m6".into(),
        now,
    };
    let mut tx = app.pool.begin().await?;
    derived::refresh_customer(&mut tx, &id("m6"), &cause).await?;
    custops_segmentation::workflow::membership::reevaluate_customer(&mut tx, &id("m6"), &cause)
        .await?;
    tx.commit().await?;
    let (monetary, score, frequency) = monetary_of(&app, "m6").await?;
    assert_eq!((monetary, score, frequency), (14240, 5, 1));
    assert_eq!(members(&app).await?, vec![id("m1"), id("m5"), id("m6")]);
    for (n, member) in [("m2", false), ("m5", true), ("m6", true)] {
        let explained = app
            .client
            .explain_membership(pb::ExplainMembershipRequest {
                segment_id: segment_id.clone(),
                customer_id: id(n),
            })
            .await?
            .into_inner();
        assert_eq!(
            (explained.member, explained.rule_result),
            (member, member),
            "{n}"
        );
    }

    // Changing the currency needs new rates in the same update.
    let stale_rates = app
        .client
        .update_rfm_config(pb::UpdateRfmConfigRequest {
            rfm_config: Some(pb::RfmConfig {
                currency: "USD".into(),
                ..Default::default()
            }),
            update_mask: mask(&["currency"]),
        })
        .await
        .err()
        .map(|s| violations(&s));
    assert_eq!(
        stale_rates,
        Some(vec![
            "rfm_config.currency_rates[0].value.currency".to_owned(),
            "rfm_config.currency_rates[1].amount.currency".to_owned(),
            "rfm_config.currency_rates[1].value.currency".to_owned(),
        ])
    );
    let cleared = app
        .client
        .update_rfm_config(pb::UpdateRfmConfigRequest {
            rfm_config: Some(pb::RfmConfig {
                currency: "USD".into(),
                ..Default::default()
            }),
            update_mask: mask(&["currency", "currency_rates"]),
        })
        .await?
        .into_inner()
        .rfm_config
        .unwrap_or_default();
    assert_eq!(
        (cleared.currency.as_str(), cleared.currency_rates.len()),
        ("USD", 0)
    );
    Ok(())
}

/// Waits (up to 60 s) until a recompute job succeeded.
async fn wait_job(app: &mut crate::helpers::TestApp, id: &str) -> anyhow::Result<()> {
    for _ in 0..1200 {
        let job = app
            .client
            .get_recompute_job(pb::GetRecomputeJobRequest {
                recompute_job_id: id.to_owned(),
            })
            .await?
            .into_inner()
            .job
            .unwrap_or_default();
        if job.state == i32::from(pb::RecomputeJobState::Succeeded) {
            return Ok(());
        }
        anyhow::ensure!(
            job.state != i32::from(pb::RecomputeJobState::Failed),
            "job failed: {job:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("job {id} did not end")
}

#[tokio::test]
async fn config_numbers_at_their_extremes_name_the_field() -> anyhow::Result<()> {
    // Issue 14, point 5: every number of the RFM and lifecycle configs is bounded.
    let mut app = spawn_app_at(as_of()).await?;
    let cny = |amount_minor: i64| custops_contracts::custops::common::v1::Money {
        amount_minor,
        currency: "CNY".to_owned(),
    };
    let usd = |amount_minor: i64| custops_contracts::custops::common::v1::Money {
        amount_minor,
        currency: "USD".to_owned(),
    };
    let bad = app
        .client
        .update_rfm_config(pb::UpdateRfmConfigRequest {
            rfm_config: Some(pb::RfmConfig {
                window_days: i32::MIN,
                currency: "CNY".to_owned(),
                fixed_thresholds: Some(pb::RfmThresholds {
                    recency_days: vec![0, 10, 20, i32::MAX],
                    frequency: vec![1, 2, 3, i64::MAX],
                    monetary: vec![cny(1), cny(2), cny(3), cny(1_000_000_000_000_001)],
                }),
                currency_rates: vec![pb::CurrencyRate {
                    amount: Some(usd(i64::MAX)),
                    value: Some(cny(i64::MIN)),
                }],
                ..Default::default()
            }),
            update_mask: mask(&["window_days", "fixed_thresholds", "currency_rates"]),
        })
        .await
        .err()
        .map(|s| sorted_violations(&s));
    assert_eq!(
        bad,
        Some(vec![
            "rfm_config.currency_rates[0].amount.amount_minor".to_owned(),
            "rfm_config.currency_rates[0].value.amount_minor".to_owned(),
            "rfm_config.fixed_thresholds.frequency".to_owned(),
            "rfm_config.fixed_thresholds.monetary".to_owned(),
            "rfm_config.fixed_thresholds.recency_days".to_owned(),
            "rfm_config.window_days".to_owned(),
        ])
    );
    // The largest bounds are accepted.
    app.client
        .update_rfm_config(pb::UpdateRfmConfigRequest {
            rfm_config: Some(pb::RfmConfig {
                currency: "CNY".to_owned(),
                fixed_thresholds: Some(pb::RfmThresholds {
                    recency_days: vec![0, 10, 20, 36_500],
                    frequency: vec![1, 2, 3, 1_000_000_000],
                    monetary: vec![cny(1), cny(2), cny(3), cny(1_000_000_000_000_000)],
                }),
                ..Default::default()
            }),
            update_mask: mask(&["fixed_thresholds"]),
        })
        .await?;

    let bad = app
        .client
        .update_lifecycle_config(pb::UpdateLifecycleConfigRequest {
            lifecycle_config: Some(pb::LifecycleConfig {
                new_window_days: i32::MAX,
                active_window_days: i32::MIN,
                active_min_purchases: i32::MAX,
                reactivated_window_days: i32::MIN,
                churn_risk_gap_multiplier: f64::MAX,
                ..Default::default()
            }),
            update_mask: mask(&[
                "new_window_days",
                "active_window_days",
                "active_min_purchases",
                "reactivated_window_days",
                "churn_risk_gap_multiplier",
            ]),
        })
        .await
        .err()
        .map(|s| sorted_violations(&s));
    assert_eq!(
        bad,
        Some(vec![
            "lifecycle_config.active_min_purchases".to_owned(),
            "lifecycle_config.active_window_days".to_owned(),
            "lifecycle_config.churn_risk_gap_multiplier".to_owned(),
            "lifecycle_config.new_window_days".to_owned(),
            "lifecycle_config.reactivated_window_days".to_owned(),
        ])
    );
    Ok(())
}

fn sorted_violations(status: &tonic::Status) -> Vec<String> {
    let mut fields = violations(status);
    fields.sort();
    fields
}
