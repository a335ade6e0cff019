//! Predicted value and churn: fit requests (the config is read and updated by
//! `workflow::configs`; a change queues a PREDICTION job), the models and one customer's
//! predictions, and the engine a PREDICTION job runs ([`run_fit`]):
//! summarise every customer's purchase days as of T₀, fit BG/NBD and Gamma-Gamma by maximum
//! likelihood (`domain::predict`), store the model as a new version and everyone's predictions
//! from it, in one transaction.

use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use custops_common::idempotency::{Completed, RequestKey};
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::FitPredictionModelResponse;
use futures_util::FutureExt;
use prost::Message;
use uuid::Uuid;

use crate::domain::predict::{
    self, BgNbd, CustomerSummary, GammaGamma, PredictError, clv, conditional_expected_value,
    expected_purchases, p_alive,
};
use crate::domain::prediction_config::{PURCHASES_HORIZON_DAYS, PredictionConfig};
use crate::error::{Error, Result};
use crate::events::CustomerEvents;
use crate::state::AppState;
use crate::store::jobs::{self as job_store, JobRecord};
use crate::store::predictions::{self, PurchaseDays, StoredModel, StoredPrediction};
use crate::store::{self, Who, begin_long};
use crate::wire::jobs::job_to_proto;
use crate::wire::predictions::prediction_to_proto;
use crate::workflow::membership::Causes;

/// Queues a PREDICTION job as of `as_of` (`None`: when it starts), or replays the response
/// stored with `key`. `as_of` in the future is INVALID_ARGUMENT on `as_of_time`.
pub async fn fit(
    state: &AppState,
    caller: &str,
    as_of: Option<DateTime<Utc>>,
    key: Option<RequestKey>,
) -> Result<FitPredictionModelResponse> {
    let now = state.clock.now();
    if as_of.is_some_and(|t| t > now) {
        return Err(Error::invalid(
            "as_of_time",
            "must not be in the future: a fit sees only purchases that happened",
        ));
    }
    let caller = caller.to_owned();
    super::respond_once(state, key.as_ref(), now, move |conn| {
        async move {
            let mut job = JobRecord::queued("prediction", None, "requested", &caller, now);
            job.prediction_as_of_time = as_of;
            job_store::insert(&mut *conn, &job).await?;
            let response = FitPredictionModelResponse {
                job: Some(job_to_proto(&job)),
            };
            Ok(Completed::response(response.encode_to_vec()))
        }
        .boxed()
    })
    .await
}

/// Model `version`, or the current one for `None`; NOT_FOUND when there is none.
pub async fn model(state: &AppState, version: Option<i64>) -> Result<StoredModel> {
    let mut conn = custops_common::db::read(&state.pool).await?;
    predictions::model(&mut conn, version)
        .await?
        .ok_or_else(|| {
            Error::not_found(
                "prediction model",
                version.map_or_else(|| "current".to_owned(), |v| v.to_string()),
            )
        })
}

/// One customer's predictions and the currency of the model they come from; NOT_FOUND when
/// the customer has none (no model yet, or no purchase by its as-of time).
pub async fn customer(state: &AppState, customer_id: &str) -> Result<(StoredPrediction, String)> {
    let mut conn = custops_common::db::read(&state.pool).await?;
    let stored = predictions::prediction(&mut conn, customer_id)
        .await?
        .ok_or_else(|| Error::not_found("customer prediction", customer_id))?;
    let currency = predictions::model(&mut conn, Some(stored.model_version))
        .await?
        .map(|m| m.currency)
        .unwrap_or_default();
    Ok((stored, currency))
}

/// The spread of the current model's predictions over everyone or `segment`'s members, with
/// the model; NOT_FOUND when the segment does not exist or no model was fitted.
pub async fn distribution(
    state: &AppState,
    segment: Option<Uuid>,
) -> Result<(predictions::PredictionSpread, StoredModel)> {
    let mut conn = custops_common::db::read(&state.pool).await?;
    super::rfm::require_segment(&mut conn, segment).await?;
    let model = predictions::model(&mut conn, None)
        .await?
        .ok_or_else(|| Error::not_found("prediction model", "current"))?;
    let spread = predictions::spread(&mut conn, segment).await?;
    Ok((spread, model))
}

/// Runs a claimed PREDICTION job: fits the models as of the job's T₀ (its start when unset),
/// stores them as a new version with everyone's predictions, and records the version on the
/// job. A fit the data cannot support fails with a [`PredictError`] whose message says why (the
/// worker shows it on the job); the current model then stays as it was.
pub async fn run_fit(state: &AppState, job: &mut JobRecord) -> anyhow::Result<()> {
    let started = Instant::now();
    let as_of = job
        .prediction_as_of_time
        .or(job.start_time)
        .unwrap_or_else(|| state.clock.now());
    // One statement reads everyone's purchase days: at a million customers it takes longer than
    // the pool's timeouts for API calls (the 1M bench failed on them), so it runs under the long
    // ones of set-based work.
    let mut read = begin_long(&state.pool).await?;
    let config = predictions::load_config(&mut read).await?.config;
    let rfm = store::rfm::load(&mut read).await?.config;
    let days = predictions::purchase_days(&mut read, as_of, &rfm, Who::Everyone).await?;
    read.commit().await?;
    // The optimisation is CPU work of seconds at a million customers: off the async workers.
    let fitted =
        tokio::task::spawn_blocking(move || fit_and_predict(&days, as_of, &config)).await??;
    let mut tx = begin_long(&state.pool).await?;
    let version = predictions::next_version(&mut tx).await?;
    let model = StoredModel {
        version,
        as_of_time: as_of,
        currency: rfm.currency.clone(),
        customer_count: i64::try_from(fitted.customers)?,
        repeat_customer_count: i64::try_from(fitted.repeat_customers)?,
        bg_nbd: fitted.bg_nbd.params,
        bg_log_likelihood: fitted.bg_nbd.log_likelihood,
        bg_converged: fitted.bg_nbd.converged,
        bg_iterations: i32::try_from(fitted.bg_nbd.iterations).unwrap_or(i32::MAX),
        gamma_gamma: fitted.gamma_gamma.params,
        gg_log_likelihood: fitted.gamma_gamma.log_likelihood,
        gg_converged: fitted.gamma_gamma.converged,
        gg_iterations: i32::try_from(fitted.gamma_gamma.iterations).unwrap_or(i32::MAX),
        fit_time: state.clock.now(),
        fit_millis: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        recompute_job_id: job.recompute_job_id,
    };
    predictions::insert_model(&mut tx, &model).await?;
    let rows: Vec<StoredPrediction> = fitted
        .predictions
        .into_iter()
        .map(|p| p.stored(version, as_of))
        .collect();
    let before = predictions::churn_flags(&mut tx, Who::Everyone).await?;
    predictions::replace_predictions(&mut tx, &rows).await?;
    let causes = Causes::new(pb::ChangeReason::Recompute, state.clock.now());
    report_churn_changes(&mut tx, &before, &rows, &model.currency, &causes).await?;
    job.prediction_model_version = version;
    job.customers_evaluated = model.customer_count;
    job_store::save(&mut tx, job).await?;
    tx.commit().await?;
    tracing::info!(
        version,
        customers = model.customer_count,
        repeat_customers = model.repeat_customer_count,
        r = model.bg_nbd.r,
        alpha = model.bg_nbd.alpha,
        a = model.bg_nbd.a,
        b = model.bg_nbd.b,
        p = model.gamma_gamma.p,
        q = model.gamma_gamma.q,
        gamma = model.gamma_gamma.gamma,
        fit_millis = model.fit_millis,
        "prediction model fitted"
    );
    Ok(())
}

/// Refreshes the predictions of `customer_ids` as of `now` with the current model's parameters
/// and the config (a feed batch's customers, like their RFM scores): their purchases up to now
/// summarised again, nothing refitted. Nothing happens before the first fit; customers without
/// a counted purchase get no prediction.
pub async fn refresh_customers(
    conn: &mut sqlx::PgConnection,
    customer_ids: &[String],
    causes: &Causes,
) -> anyhow::Result<()> {
    let now = causes.now;
    let Some(model) = predictions::model(&mut *conn, None).await? else {
        return Ok(());
    };
    let config = predictions::load_config(&mut *conn).await?.config;
    let rfm = store::rfm::load(&mut *conn).await?.config;
    let days =
        predictions::purchase_days(&mut *conn, now, &rfm, Who::Customers(customer_ids)).await?;
    let before = predictions::churn_flags(&mut *conn, Who::Customers(customer_ids)).await?;
    let mut rows = Vec::with_capacity(days.len());
    for (customer_id, summary) in summaries(&days, now)? {
        let prediction = predict_one(
            &model.bg_nbd,
            &model.gamma_gamma,
            &config,
            customer_id,
            summary,
        )?;
        rows.push(prediction.stored(model.version, now));
    }
    predictions::upsert_predictions(&mut *conn, &rows).await?;
    report_churn_changes(conn, &before, &rows, &model.currency, causes).await
}

/// Appends a PredictedChurnRiskChanged for each of `rows` whose flag differs from `before` (no
/// prediction before counts as not at risk), in one insert.
async fn report_churn_changes(
    conn: &mut sqlx::PgConnection,
    before: &std::collections::HashMap<String, bool>,
    rows: &[StoredPrediction],
    currency: &str,
    causes: &Causes,
) -> anyhow::Result<()> {
    let mut events = CustomerEvents::default();
    for row in rows {
        let was = before.get(&row.customer_id).copied().unwrap_or(false);
        if was == row.churn_risk {
            continue;
        }
        let cause = causes.of(&row.customer_id);
        let event = pb::PredictedChurnRiskChanged {
            customer_id: row.customer_id.clone(),
            prediction: Some(prediction_to_proto(row, currency)),
            reason: cause.reason as i32,
            cause_event_id: if cause.reason == pb::ChangeReason::Event {
                cause.event_id
            } else {
                String::new()
            },
        };
        events.push(&row.customer_id, &event);
    }
    events.append(conn).await?;
    Ok(())
}

/// What a fit produced, before it is stored.
struct Fitted {
    customers: usize,
    repeat_customers: usize,
    bg_nbd: predict::FitReport<BgNbd>,
    gamma_gamma: predict::FitReport<GammaGamma>,
    predictions: Vec<Prediction>,
}

/// One customer's prediction, before it is stored.
struct Prediction {
    customer_id: String,
    summary: CustomerSummary,
    probability_alive: f64,
    expected_purchases_90d: f64,
    expected_value: f64,
    clv: f64,
    churn_risk: bool,
}

impl Prediction {
    fn stored(self, model_version: i64, as_of_time: DateTime<Utc>) -> StoredPrediction {
        StoredPrediction {
            customer_id: self.customer_id,
            model_version,
            as_of_time,
            // x counts days: a whole number however it is carried.
            repeat_transactions: self.summary.x.round() as i64,
            recency_weeks: self.summary.t_x,
            age_weeks: self.summary.t,
            mean_value: self.summary.m,
            probability_alive: self.probability_alive,
            expected_purchases_90d: self.expected_purchases_90d,
            expected_value_minor: minor_units(self.expected_value),
            clv_minor: minor_units(self.clv),
            churn_risk: self.churn_risk,
        }
    }
}

/// A value in minor units, rounded, saturating (a model's value is never near the bounds).
fn minor_units(value: f64) -> i64 {
    if value.is_finite() {
        value.round().clamp(i64::MIN as f64, i64::MAX as f64) as i64
    } else {
        0
    }
}

/// Summaries, both fits and every customer's predictions (CPU only).
fn fit_and_predict(
    days: &[PurchaseDays],
    as_of: DateTime<Utc>,
    config: &PredictionConfig,
) -> std::result::Result<Fitted, PredictError> {
    let summaries = summaries(days, as_of)?;
    let all: Vec<CustomerSummary> = summaries.iter().map(|(_, s)| *s).collect();
    let minimum = config.minimum_data();
    let bg_nbd = predict::fit_bgnbd(&all, &minimum)?;
    let gamma_gamma = predict::fit_gamma_gamma(&all, &minimum)?;
    let repeat_customers = all.iter().filter(|s| s.x > 0.0).count();
    let predictions = summaries
        .into_iter()
        .map(|(customer_id, summary)| {
            predict_one(
                &bg_nbd.params,
                &gamma_gamma.params,
                config,
                customer_id,
                summary,
            )
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Fitted {
        customers: all.len(),
        repeat_customers,
        bg_nbd,
        gamma_gamma,
        predictions,
    })
}

/// Each customer's summary as of `as_of` (customers without a purchase by then have none).
fn summaries(
    days: &[PurchaseDays],
    as_of: DateTime<Utc>,
) -> std::result::Result<Vec<(String, CustomerSummary)>, PredictError> {
    let mut summaries = Vec::with_capacity(days.len());
    for customer in days {
        let purchases: Vec<(DateTime<Utc>, f64)> = customer
            .days
            .iter()
            .map(|(day, value)| {
                (
                    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN)),
                    *value as f64,
                )
            })
            .collect();
        if let Some(summary) = predict::summarize(&purchases, as_of)? {
            summaries.push((customer.customer_id.clone(), summary));
        }
    }
    Ok(summaries)
}

/// One customer's predictions from the parameters and the config.
fn predict_one(
    bg_nbd: &BgNbd,
    gamma_gamma: &GammaGamma,
    config: &PredictionConfig,
    customer_id: String,
    summary: CustomerSummary,
) -> std::result::Result<Prediction, PredictError> {
    let horizon_weeks = PURCHASES_HORIZON_DAYS / predict::DAYS_PER_WEEK;
    let months = u32::try_from(config.horizon_months).unwrap_or(12);
    let probability_alive = p_alive(bg_nbd, &summary);
    Ok(Prediction {
        expected_purchases_90d: expected_purchases(bg_nbd, &summary, horizon_weeks)?,
        expected_value: conditional_expected_value(gamma_gamma, summary.x, summary.m)?,
        clv: clv(
            bg_nbd,
            gamma_gamma,
            &summary,
            months,
            config.monthly_discount_rate,
        )?,
        churn_risk: probability_alive < config.churn_threshold,
        probability_alive,
        customer_id,
        summary,
    })
}
