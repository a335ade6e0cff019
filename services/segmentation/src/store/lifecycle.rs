//! Lifecycle in Postgres: the config row ("lifecycle" in `configs`) and the stage and churn
//! risk of everyone, or of some customers, decided in one statement from the purchase history
//! by the ordered rules of lifecycle.proto (see `domain::lifecycle`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use crate::domain::lifecycle::LifecycleConfig;
use crate::store::facts::COUNTS_AS_PURCHASE;
use crate::store::{Who, configs};

/// The configs row name.
pub const ROW: &str = "lifecycle";

/// The stored config with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleState {
    pub config: LifecycleConfig,
    pub update_time: Option<DateTime<Utc>>,
    pub etag: String,
}

/// The stored config, or the defaults when never written.
pub async fn load(conn: &mut PgConnection) -> Result<LifecycleState, sqlx::Error> {
    Ok(match configs::load(conn, ROW).await? {
        Some(row) => LifecycleState {
            config: row.value,
            update_time: Some(row.update_time),
            etag: row.etag,
        },
        None => LifecycleState {
            config: LifecycleConfig::default(),
            update_time: None,
            etag: configs::INITIAL_ETAG.to_owned(),
        },
    })
}

/// Writes the config with `etag` at `update_time`.
pub async fn save(
    conn: &mut PgConnection,
    config: &LifecycleConfig,
    etag: &str,
    update_time: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    configs::save(conn, ROW, config, etag, update_time).await
}

/// One customer's stored lifecycle.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLifecycle {
    pub customer_id: String,
    pub stage: String,
    pub stage_start_time: DateTime<Utc>,
    pub previous_stage: String,
    pub days_since_last_purchase: Option<i32>,
    pub expected_gap_days: Option<f64>,
    pub churn_risk_score: f64,
    pub churn_risk: bool,
    pub evaluate_time: Option<DateTime<Utc>>,
}

/// A customer whose stage or churn flag changed in an evaluation pass.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleChange {
    pub old_stage: String,
    pub old_churn_risk: bool,
    pub lifecycle: StoredLifecycle,
}

const COLUMNS: &str = "f.customer_id, f.lifecycle_stage, f.lifecycle_stage_start_time, \
    f.lifecycle_previous_stage, f.lifecycle_days_since_last_purchase, \
    f.lifecycle_expected_gap_days, f.churn_risk_score, f.churn_risk, f.lifecycle_evaluate_time";

fn from_row(row: &sqlx::postgres::PgRow) -> Result<StoredLifecycle, sqlx::Error> {
    Ok(StoredLifecycle {
        customer_id: row.try_get("customer_id")?,
        stage: row.try_get("lifecycle_stage")?,
        stage_start_time: row.try_get("lifecycle_stage_start_time")?,
        previous_stage: row.try_get("lifecycle_previous_stage")?,
        days_since_last_purchase: row.try_get("lifecycle_days_since_last_purchase")?,
        expected_gap_days: row.try_get("lifecycle_expected_gap_days")?,
        churn_risk_score: row.try_get("churn_risk_score")?,
        churn_risk: row.try_get("churn_risk")?,
        evaluate_time: row.try_get("lifecycle_evaluate_time")?,
    })
}

/// Decides the stage and churn risk of `who` at `now` and stores them; returns the customers
/// whose stage or churn flag changed.
///
/// Parameters: $1 T, $2 customer ids or NULL (see [`Who`]), $3 new_window_days, $4 active_window_days,
/// $5 active_min_purchases, $6 at_risk_after_days, $7 dormant_after_days,
/// $8 churned_after_days, $9 reactivated_window_days, $10 churn_risk_gap_multiplier.
pub async fn evaluate(
    conn: &mut PgConnection,
    config: &LifecycleConfig,
    now: DateTime<Utc>,
    who: Who<'_>,
) -> Result<Vec<LifecycleChange>, sqlx::Error> {
    let a = who.condition("a.customer_id", 2);
    let f = who.condition("f.customer_id", 2);
    let sql = format!(
        "WITH p AS ( \
           SELECT a.customer_id, a.occur_time, \
                  lag(a.occur_time) OVER (PARTITION BY a.customer_id \
                                          ORDER BY a.occur_time, a.activity_id) AS prev \
           FROM customer_activities a \
           WHERE {COUNTS_AS_PURCHASE} AND a.occur_time <= $1 \
             AND {a}), \
         h AS ( \
           SELECT customer_id, min(occur_time) AS first_time, max(occur_time) AS last_time, \
                  count(*) AS n, \
                  count(*) FILTER (WHERE occur_time > $1 - $4 * interval '24 hours') AS active_n, \
                  max(occur_time) FILTER (WHERE occur_time - prev >= $7 * interval '24 hours') \
                    AS reactivate_time \
           FROM p GROUP BY customer_id), \
         c AS ( \
           SELECT f.customer_id, h.first_time, h.last_time, h.active_n, h.reactivate_time, \
                  floor(extract(epoch FROM ($1 - h.last_time)) / 86400)::int AS d, \
                  CASE WHEN h.last_time IS NULL THEN NULL \
                       WHEN h.n >= 2 THEN \
                         extract(epoch FROM (h.last_time - h.first_time))::float8 / 86400 \
                           / (h.n - 1) \
                       ELSE $6::float8 END AS gap \
           FROM customer_facts f LEFT JOIN h USING (customer_id) \
           WHERE {f}), \
         s AS ( \
           SELECT c.*, \
             CASE WHEN last_time IS NULL THEN 'prospect' \
                  WHEN d >= $8 THEN 'churned' \
                  WHEN d >= $7 THEN 'dormant' \
                  WHEN d >= $6 THEN 'at_risk' \
                  WHEN first_time > $1 - $3 * interval '24 hours' THEN 'new' \
                  WHEN reactivate_time > $1 - $9 * interval '24 hours' THEN 'reactivated' \
                  WHEN active_n >= $5 THEN 'active' \
                  ELSE 'at_risk' END AS stage, \
             CASE WHEN last_time IS NULL THEN 0::float8 \
                  WHEN $10 * gap <= 0 THEN CASE WHEN d > 0 THEN 1::float8 ELSE 0::float8 END \
                  ELSE least(1::float8, d / ($10 * gap)) END AS raw_score \
           FROM c), \
         r AS ( \
           SELECT s.customer_id, s.stage, s.d, s.gap, \
             CASE WHEN s.stage IN ('prospect', 'churned') THEN 0::float8 ELSE s.raw_score END \
               AS score, \
             s.stage IN ('at_risk', 'dormant') \
               OR (s.stage IN ('new', 'active', 'reactivated') AND s.raw_score >= 1) AS flag \
           FROM s), \
         old AS ( \
           SELECT f.customer_id, f.lifecycle_stage AS old_stage, f.churn_risk AS old_churn_risk \
           FROM customer_facts f JOIN r USING (customer_id)), \
         upd AS ( \
           UPDATE customer_facts f SET \
             lifecycle_previous_stage = CASE WHEN f.lifecycle_stage <> r.stage \
               THEN f.lifecycle_stage ELSE f.lifecycle_previous_stage END, \
             lifecycle_stage_start_time = CASE WHEN f.lifecycle_stage <> r.stage \
               THEN $1 ELSE f.lifecycle_stage_start_time END, \
             lifecycle_stage = r.stage, \
             lifecycle_days_since_last_purchase = r.d, \
             lifecycle_expected_gap_days = r.gap, \
             churn_risk_score = r.score, churn_risk = r.flag, lifecycle_evaluate_time = $1 \
           FROM r JOIN old USING (customer_id) \
           WHERE f.customer_id = r.customer_id \
           RETURNING {COLUMNS}, old.old_stage, old.old_churn_risk) \
         SELECT * FROM upd f \
         WHERE old_stage <> lifecycle_stage OR old_churn_risk <> churn_risk"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(who.ids())
        .bind(config.new_window_days)
        .bind(config.active_window_days)
        .bind(config.active_min_purchases)
        .bind(config.at_risk_after_days)
        .bind(config.dormant_after_days)
        .bind(config.churned_after_days)
        .bind(config.reactivated_window_days)
        .bind(config.churn_risk_gap_multiplier)
        .fetch_all(conn)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(LifecycleChange {
                old_stage: row.try_get("old_stage")?,
                old_churn_risk: row.try_get("old_churn_risk")?,
                lifecycle: from_row(row)?,
            })
        })
        .collect()
}

/// One customer's stored lifecycle, or `None` when unknown.
pub async fn get(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<Option<StoredLifecycle>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM customer_facts f WHERE f.customer_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(customer_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// `(stage, customers, of which flagged)` per non-empty stage, over everyone or the members
/// of `segment`.
pub async fn distribution(
    conn: &mut PgConnection,
    segment: Option<uuid::Uuid>,
) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT f.lifecycle_stage, count(*) AS n, count(*) FILTER (WHERE f.churn_risk) AS risk \
         FROM customer_facts f \
         WHERE $1::uuid IS NULL OR EXISTS (SELECT 1 FROM memberships m \
           WHERE m.segment_id = $1 AND m.customer_id = f.customer_id) \
         GROUP BY 1",
    )
    .bind(segment)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect()
}
