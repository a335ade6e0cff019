//! The evaluation settings (configs row "evaluation") and the scheduler's run bookkeeping.
//! (The idempotency keys of keyed mutations are `custops_common::idempotency`'s.)

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, Row};

/// Deployment-wide evaluation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluationSettings {
    pub time_zone: String,
    pub full_recompute_interval: Duration,
    pub rollover_interval: Duration,
    /// Activities older than this when they arrive are not stored.
    pub activity_retention_days: i32,
    pub update_time: Option<DateTime<Utc>>,
    pub etag: String,
}

impl Default for EvaluationSettings {
    fn default() -> Self {
        Self {
            time_zone: "UTC".to_owned(),
            full_recompute_interval: Duration::from_secs(24 * 3600),
            rollover_interval: Duration::from_secs(300),
            activity_retention_days: DEFAULT_ACTIVITY_RETENTION_DAYS,
            update_time: None,
            etag: "default".to_owned(),
        }
    }
}

/// Days of activity history kept by default (3 years).
pub const DEFAULT_ACTIVITY_RETENTION_DAYS: i32 = 1095;

/// The JSON in `configs.value`; `time_zone` is also read by `store::facts::eval_context`.
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    time_zone: String,
    full_recompute_interval_secs: u64,
    rollover_interval_secs: u64,
    /// Absent in settings written before it existed: the default.
    #[serde(default)]
    activity_retention_days: Option<i32>,
}

/// The settings, or the defaults when never updated.
pub async fn get<'e>(executor: impl PgExecutor<'e>) -> Result<EvaluationSettings, sqlx::Error> {
    let row = sqlx::query("SELECT value, etag, update_time FROM configs WHERE name = 'evaluation'")
        .fetch_optional(executor)
        .await?;
    let Some(row) = row else {
        return Ok(EvaluationSettings::default());
    };
    let value: serde_json::Value = row.try_get("value")?;
    let defaults = EvaluationSettings::default();
    let stored: Option<Stored> = serde_json::from_value(value).ok();
    Ok(EvaluationSettings {
        time_zone: stored
            .as_ref()
            .map_or(defaults.time_zone, |s| s.time_zone.clone()),
        full_recompute_interval: stored
            .as_ref()
            .map_or(defaults.full_recompute_interval, |s| {
                Duration::from_secs(s.full_recompute_interval_secs)
            }),
        rollover_interval: stored.as_ref().map_or(defaults.rollover_interval, |s| {
            Duration::from_secs(s.rollover_interval_secs)
        }),
        activity_retention_days: stored
            .as_ref()
            .and_then(|s| s.activity_retention_days)
            .unwrap_or(defaults.activity_retention_days),
        update_time: row.try_get("update_time")?,
        etag: row.try_get("etag")?,
    })
}

/// The settings, row-locked (or the defaults, with no row to lock yet).
pub async fn get_for_update(conn: &mut PgConnection) -> Result<EvaluationSettings, sqlx::Error> {
    sqlx::query("SELECT 1 FROM configs WHERE name = 'evaluation' FOR UPDATE")
        .execute(&mut *conn)
        .await?;
    get(conn).await
}

/// Writes the settings.
pub async fn put(conn: &mut PgConnection, s: &EvaluationSettings) -> Result<(), sqlx::Error> {
    let value = serde_json::to_value(Stored {
        time_zone: s.time_zone.clone(),
        full_recompute_interval_secs: s.full_recompute_interval.as_secs(),
        rollover_interval_secs: s.rollover_interval.as_secs(),
        activity_retention_days: Some(s.activity_retention_days),
    })
    .unwrap_or_default();
    sqlx::query(
        "INSERT INTO configs (name, value, etag, update_time) VALUES ('evaluation', $1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET value = $1, etag = $2, update_time = $3",
    )
    .bind(value)
    .bind(&s.etag)
    .bind(s.update_time)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether Postgres knows `zone` (used by use, as `AT TIME ZONE` would).
pub async fn valid_time_zone(conn: &mut PgConnection, zone: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
        .bind(zone)
        .fetch_one(conn)
        .await
}

/// Decides under a row lock whether the scheduled task `name` is due at `now` after
/// `interval`, and if so records `now` as its last run. The first call only starts the clock.
/// `SKIP LOCKED`: while one replica decides (or runs the task in this transaction), the
/// others skip it.
pub async fn claim_schedule(
    conn: &mut PgConnection,
    name: &str,
    now: DateTime<Utc>,
    interval: Duration,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "INSERT INTO schedule_runs (name, last_run_time) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(name)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let last: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT last_run_time FROM schedule_runs WHERE name = $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(last) = last else {
        return Ok(false);
    };
    let interval = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
    if now - last < interval {
        return Ok(false);
    }
    sqlx::query("UPDATE schedule_runs SET last_run_time = $2 WHERE name = $1")
        .bind(name)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(true)
}

/// Serialises updates of one configs row (`rfm`, `lifecycle`) until the transaction ends.
pub async fn lock_config(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('segmentation.configs.' || $1))")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}
