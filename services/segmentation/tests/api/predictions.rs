//! Predicted value and churn (issue 19) through the gRPC API and the profiles feed handler: the
//! prediction config (defaults, every bad field named, etags, a change refits), the reads
//! before any fit, a fit refused for too little data (saying why on the job), a fit on a small
//! synthetic base whose per-customer summaries are checked against values worked out from the
//! purchases, the refresh of one customer's prediction per feed batch, and the activity
//! retention setting that decides which old purchases are kept.

#![allow(
    clippy::inconsistent_digit_grouping,
    reason = "amounts are written yuan_fen, e.g. 20_00 = 20.00 CNY"
)]

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use custops_common::consumer::EventHandler;
use custops_contracts::custops::common::v1::{Event, Money};
use custops_contracts::custops::profiles::v1 as pr;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::domain::predict::PredictError;
use custops_segmentation::feeds::profiles::ProfilesFeed;
use custops_segmentation::wire::timestamp;
use prost::{Message, Name};
use tonic::{Code, Status};

use crate::helpers::{TestApp, fields, reason, spawn_app, t0};

// ---------- customers and purchases ----------

/// The profiles customer id (a UUID, as the per-customer reads require) of customer `n`.
fn customer(n: i64) -> String {
    format!("0190f6f5-0000-7000-8000-{n:012}")
}

/// The as-of time T₀ of the fits on the synthetic base: 2026-11-23T09:30Z, half an hour before
/// the service's clock ([`t0`]), so a purchase at 09:45 that day is after it.
fn fit_as_of() -> DateTime<Utc> {
    t0() - Duration::minutes(30)
}

/// The UTC date `days` days before T₀'s date.
fn day(days: i64) -> NaiveDate {
    fit_as_of().date_naive() - Duration::days(days)
}

/// `date` at `hour`:`minute` UTC.
fn at(date: NaiveDate, hour: i64, minute: i64) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
        + Duration::hours(hour)
        + Duration::minutes(minute)
}

/// One purchase in CNY (the RFM config's default currency).
#[derive(Debug, Clone, Copy)]
struct Buy {
    customer: i64,
    time: DateTime<Utc>,
    amount_minor: i64,
}

/// Customers drawn by [`generated`]: 0..40.
const GENERATED: i64 = 40;
/// The seed of the base's draws.
const SEED: u64 = 1;
/// Ten weekly purchases that ended 297 days before T₀.
const SILENT: i64 = 40;
/// Ten weekly purchases, the last 2 days before T₀.
const RECENT: i64 = 41;
/// Two purchases on one UTC day (01:00 and 23:30), one 70 days later, one after T₀.
const SAME_DAY: i64 = 42;
/// Customers with a purchase in the base: 0..=42.
const BUYERS: i64 = 43;
/// Only a visit: never a buyer.
const VISITOR: i64 = 50;

/// Deterministic uniform numbers in (0, 1) (splitmix64), for the synthetic bases.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

/// Customers 0..`GENERATED` as BG/NBD describes them, drawn from a fixed seed: each first buys
/// 1 to 364 days before T₀, then buys at their own rate (exponential across customers, one
/// purchase in 50 days on average) and after each purchase drops out with their own
/// probability (Beta(1, 3) across customers, 25 % on average), amounts around their own mean.
fn generated(seed: u64) -> Vec<Buy> {
    let mut draw = Draws(seed);
    let mut buys = Vec::new();
    for i in 0..GENERATED {
        let first = 1 + (draw.next() * 364.0) as i64;
        let rate = -draw.next().ln() / 50.0;
        let dropout = 1.0 - draw.next().powf(1.0 / 3.0);
        let mean = 15_00.0 + 10_00.0 * -draw.next().ln();
        let mut after = 0.0;
        for k in 0.. {
            let days_before = first - after as i64;
            if days_before < 1 {
                break;
            }
            buys.push(Buy {
                customer: i,
                time: at(day(days_before), (i * 5 + k * 7) % 24, 0),
                amount_minor: (mean * (0.5 + draw.next())).round() as i64,
            });
            if draw.next() < dropout {
                break;
            }
            after += -draw.next().ln() / rate;
        }
    }
    buys
}

/// The synthetic base: [`generated`] customers, then [`SILENT`], [`RECENT`] and [`SAME_DAY`].
/// With seed 1 both fits are well inside their domains (r ≈ 0.31, α ≈ 1.7, a ≈ 0.86,
/// b ≈ 1.8; p ≈ 18, q ≈ 4.8, γ ≈ 600); see the ignored test for a seed that is not.
fn base() -> Vec<Buy> {
    let mut buys = generated(SEED);
    for k in 0..10 {
        buys.push(Buy {
            customer: SILENT,
            time: at(day(360 - 7 * k), 12, 0),
            amount_minor: 30_00 + k * 1_00,
        });
        buys.push(Buy {
            customer: RECENT,
            time: at(day(65 - 7 * k), 12, 0),
            amount_minor: 30_00 + k * 1_00,
        });
    }
    for (time, amount_minor) in [
        (at(day(100), 1, 0), 20_00),
        (at(day(100), 23, 30), 15_00),
        (at(day(30), 12, 0), 40_00),
        (at(day(0), 9, 45), 99_00),
    ] {
        buys.push(Buy {
            customer: SAME_DAY,
            time,
            amount_minor,
        });
    }
    buys
}

/// (x, t_x, T) of `who` as of `as_of` from `buys`, worked out as prediction.proto defines
/// them: purchases on one UTC day are one transaction, x = days − 1, t_x = (last − first day)
/// / 7, T = (as-of date − first day) / 7. `None` without a purchase by then.
fn summary(buys: &[Buy], who: i64, as_of: DateTime<Utc>) -> Option<(i64, f64, f64)> {
    let days: BTreeSet<NaiveDate> = buys
        .iter()
        .filter(|b| b.customer == who && b.time <= as_of)
        .map(|b| b.time.date_naive())
        .collect();
    let (first, last) = (*days.first()?, *days.last()?);
    let weeks = |from: NaiveDate, to: NaiveDate| (to - from).num_days() as f64 / 7.0;
    Some((
        i64::try_from(days.len()).ok()? - 1,
        weeks(first, last),
        weeks(first, as_of.date_naive()),
    ))
}

// ---------- the profiles feed ----------

/// An envelope for `payload` at feed position `sequence`.
fn event<M: Message + Name>(sequence: i64, aggregate_id: &str, payload: &M) -> Event {
    Event {
        sequence,
        event_id: format!("ev-{sequence}"),
        aggregate_type: "customer".into(),
        aggregate_id: aggregate_id.into(),
        event_type: M::full_name(),
        occur_time: Some(timestamp(t0())),
        payload: Some(prost_types::Any {
            type_url: M::type_url(),
            value: payload.encode_to_vec(),
        }),
        traceparent: String::new(),
    }
}

/// ActivityRecorded of a purchase.
fn purchase(sequence: i64, activity_id: &str, buy: &Buy) -> Event {
    let id = customer(buy.customer);
    let recorded = pr::ActivityRecorded {
        activity: Some(pr::Activity {
            activity_id: activity_id.into(),
            customer_id: id.clone(),
            source: "orders".into(),
            event_id: activity_id.into(),
            occur_time: Some(timestamp(buy.time)),
            channel: "store".into(),
            details: Some(pr::activity::Details::Purchase(pr::Purchase {
                order_id: activity_id.into(),
                amount: Some(Money {
                    amount_minor: buy.amount_minor,
                    currency: "CNY".into(),
                }),
                categories: vec!["tea".into()],
                item_count: 1,
            })),
            ..Default::default()
        }),
    };
    event(sequence, &id, &recorded)
}

/// ActivityRecorded of a visit of customer `n` at `time`.
fn visit(sequence: i64, activity_id: &str, n: i64, time: DateTime<Utc>) -> Event {
    let id = customer(n);
    let recorded = pr::ActivityRecorded {
        activity: Some(pr::Activity {
            activity_id: activity_id.into(),
            customer_id: id.clone(),
            source: "web".into(),
            event_id: activity_id.into(),
            occur_time: Some(timestamp(time)),
            channel: "web".into(),
            details: Some(pr::activity::Details::Interaction(pr::Interaction {
                interaction_kind: pr::InteractionKind::Visit as i32,
                ..Default::default()
            })),
            ..Default::default()
        }),
    };
    event(sequence, &id, &recorded)
}

/// Applies `events` as the consumer applies one batch of the profiles feed (one transaction,
/// every customer touched settled at the end, predictions included), at the app's clock.
async fn feed(app: &TestApp, events: &[Event]) -> anyhow::Result<()> {
    let profiles = ProfilesFeed::new(Arc::new(app.clock.clone()));
    let mut tx = app.pool.begin().await?;
    profiles
        .handle_batch(&mut tx, events)
        .await
        .map_err(|e| e.source.context(format!("event {}", e.index)))?;
    tx.commit().await?;
    Ok(())
}

/// Feeds `buys` (activity ids `{prefix}-{i}`, sequences from `first_sequence`) in one batch.
async fn feed_buys(
    app: &TestApp,
    buys: &[Buy],
    prefix: &str,
    first_sequence: i64,
) -> anyhow::Result<()> {
    let events: Vec<Event> = (first_sequence..)
        .zip(buys)
        .enumerate()
        .map(|(i, (sequence, buy))| purchase(sequence, &format!("{prefix}-{i}"), buy))
        .collect();
    feed(app, &events).await
}

// ---------- calls ----------

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

async fn get_config(app: &TestApp) -> anyhow::Result<pb::PredictionConfig> {
    Ok(app
        .client
        .clone()
        .get_prediction_config(pb::GetPredictionConfigRequest {})
        .await?
        .into_inner()
        .prediction_config
        .unwrap_or_default())
}

async fn update_config(
    app: &TestApp,
    config: pb::PredictionConfig,
    paths: &[&str],
) -> Result<pb::UpdatePredictionConfigResponse, Status> {
    Ok(app
        .client
        .clone()
        .update_prediction_config(pb::UpdatePredictionConfigRequest {
            prediction_config: Some(config),
            update_mask: mask(paths),
        })
        .await?
        .into_inner())
}

/// The sorted fields of an INVALID_ARGUMENT (fails on any other outcome).
fn bad_fields<T: std::fmt::Debug>(result: Result<T, Status>) -> Vec<String> {
    match result {
        Ok(answer) => vec![format!("accepted: {answer:?}")],
        Err(status) => {
            let mut got = fields(&status);
            got.sort();
            got
        }
    }
}

fn code_of<T>(result: Result<T, Status>) -> Option<Code> {
    result.err().map(|s| s.code())
}

/// Lowers both fit minimums to 10 and waits for the PREDICTION job the change queued, which
/// fails when nobody has purchased yet.
async fn lower_minimums(app: &TestApp) -> anyhow::Result<pb::RecomputeJob> {
    let updated = update_config(
        app,
        pb::PredictionConfig {
            min_customers: 10,
            min_repeat_customers: 10,
            ..Default::default()
        },
        &["min_customers", "min_repeat_customers"],
    )
    .await?;
    anyhow::ensure!(
        !updated.recompute_job_id.is_empty(),
        "a change queued no job"
    );
    app.wait_job(&updated.recompute_job_id).await
}

async fn fit(
    app: &TestApp,
    as_of: Option<DateTime<Utc>>,
    request_id: &str,
) -> Result<pb::RecomputeJob, Status> {
    Ok(app
        .client
        .clone()
        .fit_prediction_model(pb::FitPredictionModelRequest {
            as_of_time: as_of.map(timestamp),
            request_id: request_id.to_owned(),
        })
        .await?
        .into_inner()
        .job
        .unwrap_or_default())
}

/// Queues a fit as of `as_of` and waits for its job.
async fn fit_and_wait(
    app: &TestApp,
    as_of: Option<DateTime<Utc>>,
) -> anyhow::Result<pb::RecomputeJob> {
    let queued = fit(app, as_of, "").await?;
    app.wait_job(&queued.recompute_job_id).await
}

async fn model(app: &TestApp, version: i64) -> Result<pb::PredictionModel, Status> {
    Ok(app
        .client
        .clone()
        .get_prediction_model(pb::GetPredictionModelRequest { version })
        .await?
        .into_inner()
        .model
        .unwrap_or_default())
}

async fn prediction(app: &TestApp, customer_id: &str) -> Result<pb::CustomerPrediction, Status> {
    Ok(app
        .client
        .clone()
        .get_customer_prediction(pb::GetCustomerPredictionRequest {
            customer_id: customer_id.to_owned(),
        })
        .await?
        .into_inner()
        .prediction
        .unwrap_or_default())
}

async fn count(app: &TestApp, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(&app.pool).await?)
}

// ---------- 1. the config ----------

#[tokio::test]
async fn the_config_has_defaults_names_every_bad_field_checks_etags_and_a_change_refits()
-> anyhow::Result<()> {
    let app = spawn_app().await?;
    let initial = get_config(&app).await?;
    assert_eq!(
        (
            initial.horizon_months,
            initial.monthly_discount_rate,
            initial.churn_threshold,
            initial.min_customers,
            initial.min_repeat_customers,
            initial.etag.as_str(),
            initial.update_time,
        ),
        (12, 0.01, 0.3, 100, 50, "initial", None)
    );

    // Every bad value at once, and a path that is no field: each named.
    let all_bad = pb::PredictionConfig {
        horizon_months: 0,
        monthly_discount_rate: 0.6,
        churn_threshold: 1.0,
        min_customers: 9,
        min_repeat_customers: 10_000_001,
        ..Default::default()
    };
    let paths = [
        "horizon_months",
        "monthly_discount_rate",
        "churn_threshold",
        "min_customers",
        "min_repeat_customers",
        "colour",
    ];
    assert_eq!(
        bad_fields(update_config(&app, all_bad, &paths).await),
        vec![
            "prediction_config.churn_threshold",
            "prediction_config.horizon_months",
            "prediction_config.min_customers",
            "prediction_config.min_repeat_customers",
            "prediction_config.monthly_discount_rate",
            "update_mask.paths[5]",
        ]
    );
    // Each bound, one field at a time: just outside is refused and names only that field.
    let config = pb::PredictionConfig::default;
    let cases = [
        (
            "horizon_months",
            pb::PredictionConfig {
                horizon_months: 0,
                ..config()
            },
        ),
        (
            "horizon_months",
            pb::PredictionConfig {
                horizon_months: 121,
                ..config()
            },
        ),
        (
            "monthly_discount_rate",
            pb::PredictionConfig {
                monthly_discount_rate: -0.001,
                ..config()
            },
        ),
        (
            "monthly_discount_rate",
            pb::PredictionConfig {
                monthly_discount_rate: 0.501,
                ..config()
            },
        ),
        (
            "monthly_discount_rate",
            pb::PredictionConfig {
                monthly_discount_rate: f64::NAN,
                ..config()
            },
        ),
        (
            "churn_threshold",
            pb::PredictionConfig {
                churn_threshold: 0.0,
                ..config()
            },
        ),
        (
            "churn_threshold",
            pb::PredictionConfig {
                churn_threshold: 1.0,
                ..config()
            },
        ),
        (
            "churn_threshold",
            pb::PredictionConfig {
                churn_threshold: f64::NAN,
                ..config()
            },
        ),
        (
            "min_customers",
            pb::PredictionConfig {
                min_customers: 9,
                ..config()
            },
        ),
        (
            "min_customers",
            pb::PredictionConfig {
                min_customers: 10_000_001,
                ..config()
            },
        ),
        (
            "min_repeat_customers",
            pb::PredictionConfig {
                min_repeat_customers: 9,
                ..config()
            },
        ),
        (
            "min_repeat_customers",
            pb::PredictionConfig {
                min_repeat_customers: 10_000_001,
                ..config()
            },
        ),
    ];
    for (field, input) in cases {
        let shown = format!("{input:?}");
        assert_eq!(
            bad_fields(update_config(&app, input, &[field]).await),
            vec![format!("prediction_config.{field}")],
            "{shown}"
        );
    }
    assert_eq!(
        bad_fields(update_config(&app, config(), &[]).await),
        vec!["update_mask"]
    );
    assert_eq!(
        get_config(&app).await?,
        initial,
        "a refused update changed the config"
    );

    // A change with the current etag: saved with a new etag, a PREDICTION job queued (which
    // fails, nobody having purchased, saying so).
    let changed = update_config(
        &app,
        pb::PredictionConfig {
            horizon_months: 24,
            etag: initial.etag.clone(),
            ..Default::default()
        },
        &["horizon_months"],
    )
    .await?;
    let saved = changed.prediction_config.clone().unwrap_or_default();
    assert_eq!(saved.horizon_months, 24);
    assert_eq!(saved.update_time, Some(timestamp(t0())));
    assert_ne!(saved.etag, initial.etag);
    let job = app.wait_job(&changed.recompute_job_id).await?;
    assert_eq!(
        (job.scope(), job.trigger(), job.state()),
        (
            pb::RecomputeScope::Prediction,
            pb::RecomputeTrigger::ConfigChanged,
            pb::RecomputeJobState::Failed
        )
    );
    assert_eq!(
        job.error_message,
        PredictError::TooFewCustomers {
            found: 0,
            needed: 100
        }
        .to_string()
    );

    // The first etag is stale now. An invalid request is the caller's to fix whatever its etag.
    let stale = |body: pb::PredictionConfig| pb::PredictionConfig {
        etag: initial.etag.clone(),
        ..body
    };
    assert_eq!(
        bad_fields(
            update_config(
                &app,
                stale(pb::PredictionConfig {
                    horizon_months: 0,
                    ..config()
                }),
                &["horizon_months"]
            )
            .await
        ),
        vec!["prediction_config.horizon_months"]
    );
    assert_eq!(
        bad_fields(
            update_config(
                &app,
                stale(pb::PredictionConfig {
                    horizon_months: 24,
                    ..config()
                }),
                &["horizon_months", "colour"]
            )
            .await
        ),
        vec!["update_mask.paths[1]"]
    );
    // A valid request with the stale etag: ABORTED, nothing changed.
    let aborted = update_config(
        &app,
        stale(pb::PredictionConfig {
            horizon_months: 36,
            ..config()
        }),
        &["horizon_months"],
    )
    .await;
    assert_eq!(code_of(aborted), Some(Code::Aborted));
    assert_eq!(get_config(&app).await?, saved);

    // The same value again (current etag): nothing changes, no job.
    let same = update_config(
        &app,
        pb::PredictionConfig {
            horizon_months: 24,
            etag: saved.etag.clone(),
            ..Default::default()
        },
        &["horizon_months"],
    )
    .await?;
    assert_eq!(same.recompute_job_id, "");
    assert_eq!(same.prediction_config, Some(saved.clone()));

    // Every bound itself is accepted.
    for bounds in [
        pb::PredictionConfig {
            horizon_months: 120,
            monthly_discount_rate: 0.5,
            churn_threshold: 0.999,
            min_customers: 10,
            min_repeat_customers: 10_000_000,
            ..Default::default()
        },
        pb::PredictionConfig {
            horizon_months: 1,
            monthly_discount_rate: 0.0,
            churn_threshold: 0.001,
            min_customers: 10_000_000,
            min_repeat_customers: 10,
            ..Default::default()
        },
    ] {
        let want = (
            bounds.horizon_months,
            bounds.monthly_discount_rate,
            bounds.churn_threshold,
            bounds.min_customers,
            bounds.min_repeat_customers,
        );
        let got = update_config(&app, bounds, &paths[..5])
            .await?
            .prediction_config
            .unwrap_or_default();
        assert_eq!(
            (
                got.horizon_months,
                got.monthly_discount_rate,
                got.churn_threshold,
                got.min_customers,
                got.min_repeat_customers,
            ),
            want
        );
    }
    // One PREDICTION job per change: the first and the two at the bounds.
    let jobs = count(
        &app,
        "SELECT count(*) FROM recompute_jobs WHERE scope = 'prediction' \
         AND trigger = 'config_changed'",
    )
    .await?;
    assert_eq!(jobs, 3);
    Ok(())
}

// ---------- 2. before any fit ----------

#[tokio::test]
async fn before_any_fit_models_and_predictions_are_not_found_and_bad_arguments_are_named()
-> anyhow::Result<()> {
    let app = spawn_app().await?;
    // A buyer, known to segmentation, but no model yet.
    let buy = Buy {
        customer: 1,
        time: t0() - Duration::days(3),
        amount_minor: 20_00,
    };
    feed_buys(&app, &[buy], "p", 1).await?;

    assert_eq!(code_of(model(&app, 0).await), Some(Code::NotFound));
    assert_eq!(code_of(model(&app, 1).await), Some(Code::NotFound));
    assert_eq!(bad_fields(model(&app, -1).await), vec!["version"]);
    assert_eq!(
        code_of(prediction(&app, &customer(1)).await),
        Some(Code::NotFound)
    );
    for bad in ["", "not-a-uuid", "0190f6f5-0000-7000-8000"] {
        assert_eq!(
            bad_fields(prediction(&app, bad).await),
            vec!["customer_id"],
            "{bad:?}"
        );
    }
    Ok(())
}

// ---------- 3. a refused fit, and the fit request's arguments ----------

#[tokio::test]
async fn a_fit_with_too_few_buyers_fails_saying_why_and_leaves_no_model() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let refused = lower_minimums(&app).await?;
    assert_eq!(refused.state(), pb::RecomputeJobState::Failed);
    assert_eq!(
        refused.error_message,
        "only 0 customers have made a purchase; at least 10 are needed to learn how often \
         customers buy"
    );
    // Three buyers, two of them repeat buyers.
    let now = t0();
    let three: Vec<Buy> = [(1, 40), (1, 10), (2, 30), (2, 5), (3, 20)]
        .into_iter()
        .map(|(n, days)| Buy {
            customer: n,
            time: now - Duration::days(days),
            amount_minor: 25_00,
        })
        .collect();
    feed_buys(&app, &three, "p", 1).await?;

    let queued = fit(&app, None, "fit-1").await?;
    assert_eq!(
        (queued.scope(), queued.trigger(), queued.state()),
        (
            pb::RecomputeScope::Prediction,
            pb::RecomputeTrigger::Requested,
            pb::RecomputeJobState::Queued
        )
    );
    let job = app.wait_job(&queued.recompute_job_id).await?;
    assert_eq!(job.state(), pb::RecomputeJobState::Failed, "{job:?}");
    assert_eq!(
        job.error_message,
        "only 3 customers have made a purchase; at least 10 are needed to learn how often \
         customers buy"
    );
    assert_eq!(job.prediction_model_version, 0);
    assert_eq!(code_of(model(&app, 0).await), Some(Code::NotFound));
    assert_eq!(
        code_of(prediction(&app, &customer(1)).await),
        Some(Code::NotFound)
    );

    // Twelve buyers, still two repeat buyers: refused for the other minimum.
    let ones: Vec<Buy> = (4..13)
        .map(|n| Buy {
            customer: n,
            time: now - Duration::days(n),
            amount_minor: 10_00,
        })
        .collect();
    feed_buys(&app, &ones, "q", 100).await?;
    let job = fit_and_wait(&app, None).await?;
    assert_eq!(job.state(), pb::RecomputeJobState::Failed, "{job:?}");
    assert_eq!(
        job.error_message,
        PredictError::TooFewRepeatCustomers {
            found: 2,
            needed: 10
        }
        .to_string()
    );
    assert!(
        job.error_message
            .starts_with("only 2 customers made a repeat purchase")
    );
    assert_eq!(code_of(model(&app, 0).await), Some(Code::NotFound));

    // A replay returns the first job; the id with another as-of time is refused.
    let replay = fit(&app, None, "fit-1").await?;
    assert_eq!(replay.recompute_job_id, queued.recompute_job_id);
    let reused = fit(&app, Some(now - Duration::hours(1)), "fit-1").await;
    let status = reused.err().unwrap_or_else(|| Status::ok("accepted"));
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(reason(&status), "REQUEST_ID_REUSED");
    let requested = count(
        &app,
        "SELECT count(*) FROM recompute_jobs WHERE scope = 'prediction' AND trigger = 'requested'",
    )
    .await?;
    assert_eq!(requested, 2, "the replay queued a job");

    // T₀ must have happened and be a timestamp.
    assert_eq!(
        bad_fields(fit(&app, Some(now + Duration::seconds(1)), "fit-2").await),
        vec!["as_of_time"]
    );
    let invalid = app
        .client
        .clone()
        .fit_prediction_model(pb::FitPredictionModelRequest {
            as_of_time: Some(prost_types::Timestamp {
                seconds: now.timestamp(),
                nanos: -1,
            }),
            request_id: "fit-3".into(),
        })
        .await;
    assert_eq!(bad_fields(invalid), vec!["as_of_time"]);
    // T₀ = now itself is fine.
    let job = fit_and_wait(&app, Some(now)).await?;
    assert_eq!(
        job.prediction_as_of_time,
        Some(timestamp(now)),
        "the as-of time asked for"
    );
    Ok(())
}

// ---------- 4. a fit on a synthetic base ----------

/// A service whose fit minimums are 10, with the synthetic base (and a visitor who never
/// bought) fed through the profiles feed.
async fn app_with_base() -> anyhow::Result<(TestApp, Vec<Buy>)> {
    let app = spawn_app().await?;
    lower_minimums(&app).await?;
    let buys = base();
    feed_buys(&app, &buys, "p", 1).await?;
    feed(
        &app,
        &[visit(10_000, "v-1", VISITOR, t0() - Duration::days(3))],
    )
    .await?;
    Ok((app, buys))
}

/// Drawn from the same process as the base, 40 customers with seed 6 have their likelihood
/// maximised with the dropout distribution collapsed to one value: BG/NBD a ≈ 1.23 million,
/// b ≈ 6.33 million (p ≈ 0.16 for everyone), reported converged — a legitimate answer for a
/// small base. Every customer's expected purchases then need a ₂F₁ with parameters in the
/// millions. This failed the whole job until the series learnt to pair its ratio's factors the
/// tighter way, to use Pfaff's transformation for z < ½ and to sum the few million terms the
/// other customers need (`domain::predict::hypergeometric`, `bgnbd::expected_purchases`).
#[tokio::test]
async fn a_fit_whose_dropout_distribution_collapses_still_predicts() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    lower_minimums(&app).await?;
    let buys = generated(6);
    feed_buys(&app, &buys, "p", 1).await?;
    let job = fit_and_wait(&app, Some(fit_as_of())).await?;
    assert_eq!(job.state(), pb::RecomputeJobState::Succeeded, "{job:?}");
    let bg = model(&app, 0).await?.bg_nbd.unwrap_or_default();
    assert!(
        bg.a > 1e5 && bg.b > 1e5,
        "no longer the collapsed case: {bg:?}"
    );
    for n in 0..GENERATED {
        if let Some((x, ..)) = summary(&buys, n, fit_as_of()) {
            let got = prediction(&app, &customer(n)).await?;
            assert_eq!(got.repeat_transactions, x);
            assert!(got.expected_purchases_90d.is_finite());
        }
    }
    Ok(())
}

/// A fit reads everyone's purchase days in one statement, which at a million customers outlasts
/// the pool's timeouts for API calls (the 1M bench's fit failed on the statement timeout). The
/// read runs under the long timeouts of set-based work: here it waits out a lock on the
/// activities held past the pool's 2 s lock timeout, and the fit still succeeds.
#[tokio::test]
async fn a_fit_waits_out_the_api_timeouts_reading_the_purchases() -> anyhow::Result<()> {
    let (app, _) = app_with_base().await?;
    let mut blocker = app.pool.begin().await?;
    sqlx::query("LOCK TABLE customer_activities IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await?;
    let queued = fit(&app, Some(fit_as_of()), "").await?;
    // Hold the lock from the moment the fit's read waits on it until past the lock timeout.
    let waiting = "SELECT count(*) FROM pg_locks \
                   WHERE NOT granted AND relation = 'customer_activities'::regclass";
    let read_waits = custops_testkit::eventually(std::time::Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>(waiting)
            .fetch_one(&app.pool)
            .await
            .is_ok_and(|n| n > 0)
    })
    .await;
    assert!(read_waits, "the fit never waited on the locked activities");
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    blocker.rollback().await?;
    let job = app.wait_job(&queued.recompute_job_id).await?;
    assert_eq!(job.state(), pb::RecomputeJobState::Succeeded, "{job:?}");
    assert!(model(&app, 0).await?.customer_count > 0);
    Ok(())
}

#[tokio::test]
async fn a_fit_on_a_small_base_stores_a_model_and_predictions_matching_the_purchases()
-> anyhow::Result<()> {
    let (app, buys) = app_with_base().await?;
    let config = get_config(&app).await?;
    let currency = app
        .client
        .clone()
        .get_rfm_config(pb::GetRfmConfigRequest {})
        .await?
        .into_inner()
        .rfm_config
        .unwrap_or_default()
        .currency;
    assert_eq!(currency, "CNY");

    let job = fit_and_wait(&app, Some(fit_as_of())).await?;
    assert_eq!(job.state(), pb::RecomputeJobState::Succeeded, "{job:?}");
    assert_eq!(
        (
            job.prediction_model_version,
            job.customers_evaluated,
            job.prediction_as_of_time
        ),
        (1, BUYERS, Some(timestamp(fit_as_of())))
    );

    let summaries: Vec<(i64, (i64, f64, f64))> = (0..BUYERS)
        .filter_map(|n| summary(&buys, n, fit_as_of()).map(|s| (n, s)))
        .collect();
    let repeaters = summaries.iter().filter(|(_, (x, ..))| *x > 0).count();
    // Seed 1: 21 of the 40 drawn came back, and the three special customers did.
    assert_eq!((summaries.len(), repeaters), (43, 24));

    let first = model(&app, 0).await?;
    assert_eq!(
        (
            first.version,
            first.as_of_time,
            first.currency.as_str(),
            first.customer_count,
            first.repeat_customer_count,
            first.recompute_job_id.as_str(),
        ),
        (
            1,
            Some(timestamp(fit_as_of())),
            "CNY",
            BUYERS,
            i64::try_from(repeaters)?,
            job.recompute_job_id.as_str(),
        )
    );
    let bg = first.bg_nbd.unwrap_or_default();
    let gg = first.gamma_gamma.unwrap_or_default();
    for (name, value) in [
        ("r", bg.r),
        ("alpha", bg.alpha),
        ("a", bg.a),
        ("b", bg.b),
        ("p", gg.p),
        ("q", gg.q),
        ("gamma", gg.gamma),
    ] {
        assert!(value.is_finite() && value > 0.0, "{name} = {value}");
    }
    assert!(bg.converged && gg.converged, "{bg:?} {gg:?}");
    assert!(bg.log_likelihood.is_finite() && gg.log_likelihood.is_finite());
    assert!(bg.iterations > 0 && gg.iterations > 0);
    assert!(first.fit_time.is_some() && first.fit_duration.is_some());
    assert_eq!(model(&app, 1).await?, first);
    // The mean spend of a customer without repeats: the population mean pγ/(q − 1).
    let population_mean = (gg.p * gg.gamma / (gg.q - 1.0)).round() as i64;

    let mut at_risk = 0;
    for (n, (x, t_x, t)) in &summaries {
        let got = prediction(&app, &customer(*n)).await?;
        let who = format!("customer {n}: {got:?}");
        assert_eq!(got.customer_id, customer(*n), "{who}");
        assert_eq!(
            (got.model_version, got.as_of_time),
            (1, Some(timestamp(fit_as_of()))),
            "{who}"
        );
        assert_eq!(
            (got.repeat_transactions, got.recency_weeks, got.age_weeks),
            (*x, *t_x, *t),
            "{who}"
        );
        let p = got.probability_alive;
        assert!((0.0..=1.0).contains(&p), "{who}");
        if *x == 0 {
            assert_eq!(p, 1.0, "{who}");
        }
        assert_eq!(got.churn_risk, p < config.churn_threshold, "{who}");
        at_risk += i64::from(got.churn_risk);
        assert!(
            got.expected_purchases_90d.is_finite() && got.expected_purchases_90d >= 0.0,
            "{who}"
        );
        let value = got.expected_transaction_value.clone().unwrap_or_default();
        let clv = got.clv.clone().unwrap_or_default();
        assert_eq!(
            (value.currency.as_str(), clv.currency.as_str()),
            (currency.as_str(), currency.as_str()),
            "{who}"
        );
        assert!(value.amount_minor > 0 && clv.amount_minor >= 0, "{who}");
        if *x == 0 {
            assert!((value.amount_minor - population_mean).abs() <= 1, "{who}");
        }
    }
    // Some at risk and some not: the comparison above is not vacuous.
    assert!(at_risk > 0 && at_risk < BUYERS, "{at_risk} at risk");

    // The special customers, by hand.
    let silent = prediction(&app, &customer(SILENT)).await?;
    let recent = prediction(&app, &customer(RECENT)).await?;
    let same_day = prediction(&app, &customer(SAME_DAY)).await?;
    // 360 days ago, then weekly to 297 days ago: 9 repeats over 63 days.
    assert_eq!(
        (
            silent.repeat_transactions,
            silent.recency_weeks,
            silent.age_weeks
        ),
        (9, 9.0, 360.0 / 7.0)
    );
    // 65 days ago, then weekly to 2 days ago.
    assert_eq!(
        (
            recent.repeat_transactions,
            recent.recency_weeks,
            recent.age_weeks
        ),
        (9, 9.0, 65.0 / 7.0)
    );
    // 01:00 and 23:30 on one day are one transaction; the 09:45 purchase on T₀'s day is after
    // T₀ and not seen.
    assert_eq!(
        (
            same_day.repeat_transactions,
            same_day.recency_weeks,
            same_day.age_weeks
        ),
        (1, 10.0, 100.0 / 7.0)
    );
    assert!(
        silent.probability_alive < recent.probability_alive,
        "silent {silent:?} vs recent {recent:?}"
    );
    assert!(silent.churn_risk && !recent.churn_risk);
    assert!(silent.expected_purchases_90d < recent.expected_purchases_90d);
    assert!(
        silent.clv.unwrap_or_default().amount_minor < recent.clv.unwrap_or_default().amount_minor
    );
    assert_eq!(
        code_of(prediction(&app, &customer(VISITOR)).await),
        Some(Code::NotFound),
        "a visitor who never bought has no prediction"
    );

    // A second fit, as of its start (the clock, after the 09:45 purchase): version 2, and
    // version 1 is still there as it was.
    let second = fit_and_wait(&app, None).await?;
    assert_eq!(
        second.state(),
        pb::RecomputeJobState::Succeeded,
        "{second:?}"
    );
    assert_eq!(second.prediction_model_version, 2);
    let current = model(&app, 0).await?;
    assert_eq!(
        (
            current.version,
            current.as_of_time,
            current.recompute_job_id
        ),
        (2, Some(timestamp(t0())), second.recompute_job_id)
    );
    assert_eq!(model(&app, 1).await?, first);
    assert_eq!(code_of(model(&app, 3).await), Some(Code::NotFound));
    let same_day = prediction(&app, &customer(SAME_DAY)).await?;
    assert_eq!(
        (
            same_day.model_version,
            same_day.repeat_transactions,
            same_day.recency_weeks,
            same_day.as_of_time
        ),
        (2, 2, 100.0 / 7.0, Some(timestamp(t0())))
    );
    Ok(())
}

/// The PredictedChurnRiskChanged events in the outbox, decoded.
async fn churn_events(app: &TestApp) -> anyhow::Result<Vec<pb::PredictedChurnRiskChanged>> {
    let payloads = app
        .events(&pb::PredictedChurnRiskChanged::full_name())
        .await?;
    Ok(payloads
        .iter()
        .map(|p| pb::PredictedChurnRiskChanged::decode(p.as_slice()))
        .collect::<Result<_, _>>()?)
}

#[tokio::test]
async fn a_fit_reports_every_customer_whose_churn_flag_moved_and_a_refit_reports_none()
-> anyhow::Result<()> {
    // Arrange: the base, no prediction yet (no customer flagged).
    let (app, buys) = app_with_base().await?;

    // Act
    let job = fit_and_wait(&app, Some(fit_as_of())).await?;
    assert_eq!(job.state(), pb::RecomputeJobState::Succeeded, "{job:?}");

    // Assert: one RECOMPUTE event per customer now at risk (P(alive) below the default 0.3),
    // carrying its prediction; the long-silent frequent buyer among them.
    let mut at_risk = BTreeSet::new();
    for n in buys.iter().map(|b| b.customer).collect::<BTreeSet<_>>() {
        let p = prediction(&app, &customer(n)).await?;
        assert_eq!(p.churn_risk, p.probability_alive < 0.3);
        if p.churn_risk {
            at_risk.insert(customer(n));
        }
    }
    assert!(at_risk.contains(&customer(SILENT)), "{at_risk:?}");
    let events = churn_events(&app).await?;
    let reported: BTreeSet<String> = events.iter().map(|e| e.customer_id.clone()).collect();
    assert_eq!(reported, at_risk);
    assert_eq!(events.len(), at_risk.len());
    for e in &events {
        assert_eq!(e.reason(), pb::ChangeReason::Recompute, "{e:?}");
        assert!(e.cause_event_id.is_empty());
        let p = e.prediction.clone().unwrap_or_default();
        assert!(p.churn_risk && p.probability_alive < 0.3, "{e:?}");
    }

    // A refit on the same data moves no flag: nothing more is reported.
    let again = fit_and_wait(&app, Some(fit_as_of())).await?;
    assert_eq!(again.state(), pb::RecomputeJobState::Succeeded, "{again:?}");
    assert_eq!(churn_events(&app).await?.len(), events.len());
    Ok(())
}

// ---------- 5. refresh per feed batch ----------

#[tokio::test]
async fn a_new_purchase_refreshes_the_buyers_prediction_with_the_stored_model() -> anyhow::Result<()>
{
    let (app, buys) = app_with_base().await?;
    let job = fit_and_wait(&app, Some(fit_as_of())).await?;
    assert_eq!(job.state(), pb::RecomputeJobState::Succeeded, "{job:?}");
    let before = prediction(&app, &customer(RECENT)).await?;
    let other = prediction(&app, &customer(SILENT)).await?;
    assert_eq!(before.repeat_transactions, 9);

    // A day later RECENT buys again, and a newcomer buys for the first time.
    app.clock.advance(Duration::days(1));
    let now = t0() + Duration::days(1);
    let new = [
        Buy {
            customer: RECENT,
            time: now - Duration::hours(1),
            amount_minor: 45_00,
        },
        Buy {
            customer: 60,
            time: now - Duration::hours(2),
            amount_minor: 45_00,
        },
    ];
    feed_buys(&app, &new, "late", 20_000).await?;

    let after = prediction(&app, &customer(RECENT)).await?;
    let all: Vec<Buy> = buys.iter().chain(&new).copied().collect();
    let (x, t_x, t) = summary(&all, RECENT, now).unwrap_or_default();
    // First purchase 65 days before T₀'s date, the new one on the day after it: 66 days.
    assert_eq!((x, t_x, t), (10, 66.0 / 7.0, 66.0 / 7.0));
    assert_eq!(
        (
            after.model_version,
            after.as_of_time,
            after.repeat_transactions,
            after.recency_weeks,
            after.age_weeks
        ),
        (1, Some(timestamp(now)), x, t_x, t)
    );
    assert_ne!(after.probability_alive, before.probability_alive);
    assert!((0.0..=1.0).contains(&after.probability_alive));
    assert_eq!(after.churn_risk, after.probability_alive < 0.3);
    let newcomer = prediction(&app, &customer(60)).await?;
    assert_eq!(
        (
            newcomer.model_version,
            newcomer.repeat_transactions,
            newcomer.age_weeks,
            newcomer.probability_alive
        ),
        (1, 0, 0.0, 1.0)
    );
    // Nothing refitted; customers outside the batch untouched.
    assert_eq!(model(&app, 0).await?.version, 1);
    assert_eq!(
        count(&app, "SELECT count(*) FROM prediction_models").await?,
        1
    );
    assert_eq!(prediction(&app, &customer(SILENT)).await?, other);
    Ok(())
}

// ---------- 6. activity retention ----------

async fn purchase_count(app: &TestApp, n: i64) -> anyhow::Result<i64> {
    Ok(app
        .client
        .clone()
        .get_customer_facts(pb::GetCustomerFactsRequest {
            customer_id: customer(n),
        })
        .await?
        .into_inner()
        .facts
        .unwrap_or_default()
        .purchases
        .unwrap_or_default()
        .purchase_count)
}

async fn set_retention(
    app: &TestApp,
    days: i32,
) -> Result<pb::UpdateEvaluationSettingsResponse, Status> {
    Ok(app
        .client
        .clone()
        .update_evaluation_settings(pb::UpdateEvaluationSettingsRequest {
            evaluation_settings: Some(pb::EvaluationSettings {
                activity_retention_days: days,
                ..Default::default()
            }),
            update_mask: mask(&["activity_retention_days"]),
        })
        .await?
        .into_inner())
}

#[tokio::test]
async fn activities_older_than_the_retention_are_not_stored_until_it_is_raised()
-> anyhow::Result<()> {
    let app = spawn_app().await?;
    let settings = app
        .client
        .clone()
        .get_evaluation_settings(pb::GetEvaluationSettingsRequest {})
        .await?
        .into_inner()
        .evaluation_settings
        .unwrap_or_default();
    assert_eq!(settings.activity_retention_days, 1095);
    for days in [0, 29, 36_501, -1] {
        assert_eq!(
            bad_fields(set_retention(&app, days).await),
            vec!["evaluation_settings.activity_retention_days"],
            "{days} days"
        );
    }

    // Customer 1 visits today and bought 1,096 days ago (older than 3 years): the purchase is
    // dropped; one 1,094 days ago is kept (customer 2).
    let now = t0();
    let old = |n: i64, days: i64| Buy {
        customer: n,
        time: now - Duration::days(days),
        amount_minor: 10_00,
    };
    feed(
        &app,
        &[
            visit(1, "v-1", 1, now - Duration::hours(1)),
            purchase(2, "old-1", &old(1, 1096)),
            purchase(3, "kept-2", &old(2, 1094)),
        ],
    )
    .await?;
    assert_eq!(purchase_count(&app, 1).await?, 0);
    assert_eq!(purchase_count(&app, 2).await?, 1);

    // Raised to ten years: an equally old purchase is kept now (the dropped one is not
    // brought back).
    let raised = set_retention(&app, 3650)
        .await?
        .evaluation_settings
        .unwrap_or_default();
    assert_eq!(raised.activity_retention_days, 3650);
    feed(&app, &[purchase(4, "old-1b", &old(1, 1096))]).await?;
    assert_eq!(purchase_count(&app, 1).await?, 1);
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM customer_activities WHERE activity_id IN ('old-1', 'old-1b')",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(stored, 1);
    // The bounds themselves are accepted.
    for days in [30, 36_500] {
        let got = set_retention(&app, days)
            .await?
            .evaluation_settings
            .unwrap_or_default();
        assert_eq!(got.activity_retention_days, days);
    }
    Ok(())
}
