//! Predictions in Postgres: the config row ("prediction" in `configs`), the purchase days a fit
//! summarises, the fitted models (`prediction_models`, one row per version) and each customer's
//! predictions (`customer_predictions`).

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use crate::domain::predict::{BgNbd, GammaGamma};
use crate::domain::prediction_config::PredictionConfig;
use crate::domain::rfm::{RfmConfig, counted_currencies};
use crate::store::facts::{COUNTS_AS_PURCHASE, NET_AMOUNT};
use crate::store::{Who, configs};

/// The configs row name.
pub const ROW: &str = "prediction";

/// The config with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionState {
    pub config: PredictionConfig,
    pub update_time: Option<DateTime<Utc>>,
    pub etag: String,
}

/// The stored config, or the defaults when never written.
pub async fn load_config(conn: &mut PgConnection) -> Result<PredictionState, sqlx::Error> {
    Ok(match configs::load(conn, ROW).await? {
        Some(row) => PredictionState {
            config: row.value,
            update_time: Some(row.update_time),
            etag: row.etag,
        },
        None => PredictionState {
            config: PredictionConfig::default(),
            update_time: None,
            etag: configs::INITIAL_ETAG.to_owned(),
        },
    })
}

/// Writes the config with its etag at `update_time`.
pub async fn save_config(
    conn: &mut PgConnection,
    state: &PredictionState,
    update_time: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    configs::save(conn, ROW, &state.config, &state.etag, update_time).await
}

/// One customer's purchase days up to a fit's as-of time, oldest first: each day's total in
/// minor units of the RFM currency.
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseDays {
    pub customer_id: String,
    pub days: Vec<(NaiveDate, i64)>,
}

/// The purchase days at or before `as_of` (UTC calendar days) of `who` among the live
/// customers, in the RFM config's currency by its rules: per customer, day and currency the
/// amounts are summed and converted exactly at the currency's rate, rounded down (as RFM
/// monetary value is); purchases in a currency the RFM config does not count are left out.
/// Net of refunds, as RFM: [`NET_AMOUNT`]s of the purchases that [`COUNTS_AS_PURCHASE`].
/// Ordered by customer, then day.
pub async fn purchase_days(
    conn: &mut PgConnection,
    as_of: DateTime<Utc>,
    rfm: &RfmConfig,
    who: Who<'_>,
) -> Result<Vec<PurchaseDays>, sqlx::Error> {
    let (currencies, amounts, values) = counted_currencies(rfm);
    let sql = format!(
        "WITH c AS ( \
           SELECT a.customer_id, (a.occur_time AT TIME ZONE 'UTC')::date AS day, a.currency, \
                  sum({NET_AMOUNT})::numeric AS total \
           FROM customer_activities a JOIN customer_facts f ON f.customer_id = a.customer_id \
           WHERE {COUNTS_AS_PURCHASE} AND a.occur_time <= $1 AND {} \
           GROUP BY 1, 2, 3) \
         SELECT c.customer_id, c.day, \
                LEAST(sum(div(c.total * r.value, r.amount)), 9223372036854775807)::bigint AS value \
         FROM c JOIN unnest($2::text[], $3::bigint[], $4::bigint[]) AS r (currency, amount, value) \
           ON r.currency = c.currency \
         GROUP BY c.customer_id, c.day \
         ORDER BY c.customer_id, c.day",
        who.condition("a.customer_id", 5)
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(as_of)
        .bind(&currencies)
        .bind(&amounts)
        .bind(&values)
        .bind(who.ids())
        .fetch_all(conn)
        .await?;
    let mut customers: Vec<PurchaseDays> = Vec::new();
    for row in rows {
        let customer_id: String = row.try_get("customer_id")?;
        let day: NaiveDate = row.try_get("day")?;
        let value: i64 = row.try_get("value")?;
        match customers.last_mut() {
            Some(last) if last.customer_id == customer_id => last.days.push((day, value)),
            _ => customers.push(PurchaseDays {
                customer_id,
                days: vec![(day, value)],
            }),
        }
    }
    Ok(customers)
}

/// A fitted model as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredModel {
    pub version: i64,
    pub as_of_time: DateTime<Utc>,
    pub currency: String,
    pub customer_count: i64,
    pub repeat_customer_count: i64,
    pub bg_nbd: BgNbd,
    pub bg_log_likelihood: f64,
    pub bg_converged: bool,
    pub bg_iterations: i32,
    pub gamma_gamma: GammaGamma,
    pub gg_log_likelihood: f64,
    pub gg_converged: bool,
    pub gg_iterations: i32,
    pub fit_time: DateTime<Utc>,
    pub fit_millis: i64,
    pub recompute_job_id: Uuid,
}

/// The version the next fit gets (one above the highest), taken under a transaction lock so
/// two fits never share one.
pub async fn next_version(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('segmentation.prediction', 0))")
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar("SELECT COALESCE(max(version), 0) + 1 FROM prediction_models")
        .fetch_one(conn)
        .await
}

/// Stores a fitted model.
pub async fn insert_model(conn: &mut PgConnection, model: &StoredModel) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO prediction_models (version, as_of_time, currency, customer_count, \
           repeat_customer_count, bg_r, bg_alpha, bg_a, bg_b, bg_log_likelihood, bg_converged, \
           bg_iterations, gg_p, gg_q, gg_gamma, gg_log_likelihood, gg_converged, gg_iterations, \
           fit_time, fit_millis, recompute_job_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
           $18, $19, $20, $21)",
    )
    .bind(model.version)
    .bind(model.as_of_time)
    .bind(&model.currency)
    .bind(model.customer_count)
    .bind(model.repeat_customer_count)
    .bind(model.bg_nbd.r)
    .bind(model.bg_nbd.alpha)
    .bind(model.bg_nbd.a)
    .bind(model.bg_nbd.b)
    .bind(model.bg_log_likelihood)
    .bind(model.bg_converged)
    .bind(model.bg_iterations)
    .bind(model.gamma_gamma.p)
    .bind(model.gamma_gamma.q)
    .bind(model.gamma_gamma.gamma)
    .bind(model.gg_log_likelihood)
    .bind(model.gg_converged)
    .bind(model.gg_iterations)
    .bind(model.fit_time)
    .bind(model.fit_millis)
    .bind(model.recompute_job_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Model `version`, or the current one (the highest version) for `None`.
pub async fn model(
    conn: &mut PgConnection,
    version: Option<i64>,
) -> Result<Option<StoredModel>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT * FROM prediction_models WHERE $1::bigint IS NULL OR version = $1 \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(version)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(model_from_row).transpose()
}

fn model_from_row(row: &PgRow) -> Result<StoredModel, sqlx::Error> {
    Ok(StoredModel {
        version: row.try_get("version")?,
        as_of_time: row.try_get("as_of_time")?,
        currency: row.try_get("currency")?,
        customer_count: row.try_get("customer_count")?,
        repeat_customer_count: row.try_get("repeat_customer_count")?,
        bg_nbd: BgNbd {
            r: row.try_get("bg_r")?,
            alpha: row.try_get("bg_alpha")?,
            a: row.try_get("bg_a")?,
            b: row.try_get("bg_b")?,
        },
        bg_log_likelihood: row.try_get("bg_log_likelihood")?,
        bg_converged: row.try_get("bg_converged")?,
        bg_iterations: row.try_get("bg_iterations")?,
        gamma_gamma: GammaGamma {
            p: row.try_get("gg_p")?,
            q: row.try_get("gg_q")?,
            gamma: row.try_get("gg_gamma")?,
        },
        gg_log_likelihood: row.try_get("gg_log_likelihood")?,
        gg_converged: row.try_get("gg_converged")?,
        gg_iterations: row.try_get("gg_iterations")?,
        fit_time: row.try_get("fit_time")?,
        fit_millis: row.try_get("fit_millis")?,
        recompute_job_id: row.try_get("recompute_job_id")?,
    })
}

/// One customer's summary and predictions as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPrediction {
    pub customer_id: String,
    pub model_version: i64,
    pub as_of_time: DateTime<Utc>,
    pub repeat_transactions: i64,
    pub recency_weeks: f64,
    pub age_weeks: f64,
    pub mean_value: f64,
    pub probability_alive: f64,
    pub expected_purchases_90d: f64,
    pub expected_value_minor: i64,
    pub clv_minor: i64,
    pub churn_risk: bool,
}

/// Rows written per statement by [`replace_predictions`].
const CHUNK: usize = 10_000;

/// Replaces every customer's predictions with `predictions` (those of one model): customers
/// absent from it (no purchase by the as-of time, or gone) are left without one.
pub async fn replace_predictions(
    conn: &mut PgConnection,
    predictions: &[StoredPrediction],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM customer_predictions")
        .execute(&mut *conn)
        .await?;
    upsert_predictions(conn, predictions).await
}

/// Writes `predictions`, replacing the customers' previous ones.
pub async fn upsert_predictions(
    conn: &mut PgConnection,
    predictions: &[StoredPrediction],
) -> Result<(), sqlx::Error> {
    for chunk in predictions.chunks(CHUNK) {
        let column = |f: fn(&StoredPrediction) -> f64| chunk.iter().map(f).collect::<Vec<_>>();
        let ints = |f: fn(&StoredPrediction) -> i64| chunk.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO customer_predictions (customer_id, model_version, as_of_time, \
               repeat_transactions, recency_weeks, age_weeks, mean_value, probability_alive, \
               expected_purchases_90d, expected_value_minor, clv_minor, churn_risk) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::bigint[], \
               $5::float8[], $6::float8[], $7::float8[], $8::float8[], $9::float8[], \
               $10::bigint[], $11::bigint[], $12::bool[]) \
             ON CONFLICT (customer_id) DO UPDATE SET model_version = EXCLUDED.model_version, \
               as_of_time = EXCLUDED.as_of_time, \
               repeat_transactions = EXCLUDED.repeat_transactions, \
               recency_weeks = EXCLUDED.recency_weeks, age_weeks = EXCLUDED.age_weeks, \
               mean_value = EXCLUDED.mean_value, probability_alive = EXCLUDED.probability_alive, \
               expected_purchases_90d = EXCLUDED.expected_purchases_90d, \
               expected_value_minor = EXCLUDED.expected_value_minor, \
               clv_minor = EXCLUDED.clv_minor, churn_risk = EXCLUDED.churn_risk",
        )
        .bind(
            chunk
                .iter()
                .map(|p| p.customer_id.clone())
                .collect::<Vec<_>>(),
        )
        .bind(ints(|p| p.model_version))
        .bind(chunk.iter().map(|p| p.as_of_time).collect::<Vec<_>>())
        .bind(ints(|p| p.repeat_transactions))
        .bind(column(|p| p.recency_weeks))
        .bind(column(|p| p.age_weeks))
        .bind(column(|p| p.mean_value))
        .bind(column(|p| p.probability_alive))
        .bind(column(|p| p.expected_purchases_90d))
        .bind(ints(|p| p.expected_value_minor))
        .bind(ints(|p| p.clv_minor))
        .bind(chunk.iter().map(|p| p.churn_risk).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The stored churn-risk flag of each of `who` that has a prediction.
pub async fn churn_flags(
    conn: &mut PgConnection,
    who: Who<'_>,
) -> Result<std::collections::HashMap<String, bool>, sqlx::Error> {
    let sql = format!(
        "SELECT customer_id, churn_risk FROM customer_predictions WHERE {}",
        who.condition("customer_id", 1)
    );
    let rows: Vec<(String, bool)> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(who.ids())
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// How the stored predictions spread (GetPredictionDistribution).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PredictionSpread {
    pub customers: i64,
    pub churn_risk: i64,
    /// The 10th … 90th percentiles; empty without customers.
    pub clv_deciles: Vec<i64>,
    pub probability_alive_deciles: Vec<f64>,
    pub mean_clv: i64,
}

/// Deciles and counts over every stored prediction, or those of `segment`'s members.
pub async fn spread(
    conn: &mut PgConnection,
    segment: Option<Uuid>,
) -> Result<PredictionSpread, sqlx::Error> {
    let row = sqlx::query(
        "SELECT count(*) AS customers, count(*) FILTER (WHERE p.churn_risk) AS churn_risk, \
           percentile_disc(ARRAY[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]) \
             WITHIN GROUP (ORDER BY p.clv_minor) AS clv, \
           percentile_disc(ARRAY[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]) \
             WITHIN GROUP (ORDER BY p.probability_alive) AS alive, \
           COALESCE(floor(avg(p.clv_minor)), 0)::bigint AS mean_clv \
         FROM customer_predictions p \
         WHERE $1::uuid IS NULL OR EXISTS (SELECT 1 FROM memberships m \
           WHERE m.segment_id = $1 AND m.customer_id = p.customer_id)",
    )
    .bind(segment)
    .fetch_one(conn)
    .await?;
    Ok(PredictionSpread {
        customers: row.try_get("customers")?,
        churn_risk: row.try_get("churn_risk")?,
        clv_deciles: row
            .try_get::<Option<Vec<i64>>, _>("clv")?
            .unwrap_or_default(),
        probability_alive_deciles: row
            .try_get::<Option<Vec<f64>>, _>("alive")?
            .unwrap_or_default(),
        mean_clv: row.try_get("mean_clv")?,
    })
}

/// One customer's stored predictions.
pub async fn prediction(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<Option<StoredPrediction>, sqlx::Error> {
    let row = sqlx::query("SELECT * FROM customer_predictions WHERE customer_id = $1")
        .bind(customer_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref()
        .map(|row| {
            Ok(StoredPrediction {
                customer_id: row.try_get("customer_id")?,
                model_version: row.try_get("model_version")?,
                as_of_time: row.try_get("as_of_time")?,
                repeat_transactions: row.try_get("repeat_transactions")?,
                recency_weeks: row.try_get("recency_weeks")?,
                age_weeks: row.try_get("age_weeks")?,
                mean_value: row.try_get("mean_value")?,
                probability_alive: row.try_get("probability_alive")?,
                expected_purchases_90d: row.try_get("expected_purchases_90d")?,
                expected_value_minor: row.try_get("expected_value_minor")?,
                clv_minor: row.try_get("clv_minor")?,
                churn_risk: row.try_get("churn_risk")?,
            })
        })
        .transpose()
}
