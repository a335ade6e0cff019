//! Recompute jobs: queueing (a newer job for a segment supersedes a queued older one),
//! claiming with `FOR UPDATE SKIP LOCKED` (and resuming a running job whose replica stopped
//! showing life), progress and outcome.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

/// One segment's outcome within a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentResult {
    #[serde(with = "uuid_text")]
    pub segment_id: Uuid,
    pub segment_version: i64,
    pub entered_count: i64,
    pub exited_count: i64,
    pub member_count: i64,
    pub duration_millis: i64,
}

/// A recompute job as stored. Scope, trigger and state are the column slugs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub recompute_job_id: Uuid,
    pub scope: String,
    pub segment_id: Option<Uuid>,
    pub segment_version: i64,
    pub trigger: String,
    pub state: String,
    pub progress_percent: i32,
    pub segments_total: i64,
    pub segments_done: i64,
    pub customers_evaluated: i64,
    pub entered_count: i64,
    pub exited_count: i64,
    pub lifecycle_changed_count: i64,
    pub rfm_group_changed_count: i64,
    pub segment_results: Vec<SegmentResult>,
    pub create_time: DateTime<Utc>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub error_message: String,
    pub requester: String,
    /// PREDICTION jobs: the as-of time asked for (`None`: the job's start).
    pub prediction_as_of_time: Option<DateTime<Utc>>,
    /// PREDICTION jobs that succeeded: the model version fitted; 0 otherwise.
    pub prediction_model_version: i64,
    /// COMPUTED_TRAITS and ALL jobs: stored computed trait values that changed.
    pub computed_trait_changed_count: i64,
}

impl JobRecord {
    /// A new queued job.
    pub fn queued(
        scope: &str,
        segment: Option<(Uuid, i64)>,
        trigger: &str,
        requester: &str,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            recompute_job_id: Uuid::now_v7(),
            scope: scope.to_owned(),
            segment_id: segment.map(|s| s.0),
            segment_version: segment.map_or(0, |s| s.1),
            trigger: trigger.to_owned(),
            state: "queued".to_owned(),
            progress_percent: 0,
            segments_total: 0,
            segments_done: 0,
            customers_evaluated: 0,
            entered_count: 0,
            exited_count: 0,
            lifecycle_changed_count: 0,
            rfm_group_changed_count: 0,
            segment_results: Vec::new(),
            create_time: now,
            start_time: None,
            end_time: None,
            error_message: String::new(),
            requester: requester.to_owned(),
            prediction_as_of_time: None,
            prediction_model_version: 0,
            computed_trait_changed_count: 0,
        }
    }
}

const COLUMNS: &str = "recompute_job_id, scope, segment_id, segment_version, trigger, state, \
    progress_percent, segments_total, segments_done, customers_evaluated, entered_count, \
    exited_count, lifecycle_changed_count, rfm_group_changed_count, segment_results, \
    create_time, start_time, end_time, error_message, requester, prediction_as_of_time, \
    prediction_model_version, computed_trait_changed_count";

fn from_row(row: &PgRow) -> Result<JobRecord, sqlx::Error> {
    let results: serde_json::Value = row.try_get("segment_results")?;
    Ok(JobRecord {
        recompute_job_id: row.try_get("recompute_job_id")?,
        scope: row.try_get("scope")?,
        segment_id: row.try_get("segment_id")?,
        segment_version: row.try_get("segment_version")?,
        trigger: row.try_get("trigger")?,
        state: row.try_get("state")?,
        progress_percent: row.try_get("progress_percent")?,
        segments_total: row.try_get("segments_total")?,
        segments_done: row.try_get("segments_done")?,
        customers_evaluated: row.try_get("customers_evaluated")?,
        entered_count: row.try_get("entered_count")?,
        exited_count: row.try_get("exited_count")?,
        lifecycle_changed_count: row.try_get("lifecycle_changed_count")?,
        rfm_group_changed_count: row.try_get("rfm_group_changed_count")?,
        segment_results: serde_json::from_value(results).unwrap_or_default(),
        create_time: row.try_get("create_time")?,
        start_time: row.try_get("start_time")?,
        end_time: row.try_get("end_time")?,
        error_message: row.try_get("error_message")?,
        requester: row.try_get("requester")?,
        prediction_as_of_time: row.try_get("prediction_as_of_time")?,
        prediction_model_version: row.try_get("prediction_model_version")?,
        computed_trait_changed_count: row.try_get("computed_trait_changed_count")?,
    })
}

/// Inserts a queued job.
pub async fn insert(conn: &mut PgConnection, job: &JobRecord) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO recompute_jobs (recompute_job_id, scope, segment_id, segment_version, \
             trigger, state, create_time, requester, prediction_as_of_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(job.recompute_job_id)
    .bind(&job.scope)
    .bind(job.segment_id)
    .bind(job.segment_version)
    .bind(&job.trigger)
    .bind(&job.state)
    .bind(job.create_time)
    .bind(&job.requester)
    .bind(job.prediction_as_of_time)
    .execute(conn)
    .await?;
    Ok(())
}

/// Queues a recompute job of `scope` ("rfm", "lifecycle", "prediction" or "computed_traits") triggered by a config change,
/// for the recompute worker; returns its id.
pub async fn insert_config_recompute(
    conn: &mut PgConnection,
    scope: &str,
    requester: &str,
    now: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO recompute_jobs (recompute_job_id, scope, trigger, create_time, requester) \
         VALUES ($1, $2, 'config_changed', $3, $4)",
    )
    .bind(id)
    .bind(scope)
    .bind(now)
    .bind(requester)
    .execute(conn)
    .await?;
    Ok(id)
}

/// Marks the queued jobs of `segment_id` superseded and returns them (for their events).
pub async fn supersede_queued(
    conn: &mut PgConnection,
    segment_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<JobRecord>, sqlx::Error> {
    let sql = format!(
        "UPDATE recompute_jobs SET state = 'superseded', progress_percent = 100, end_time = $2 \
         WHERE segment_id = $1 AND scope = 'segment' AND state = 'queued' RETURNING {COLUMNS}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(segment_id)
        .bind(now)
        .fetch_all(conn)
        .await?;
    rows.iter().map(from_row).collect()
}

/// The queued (not yet running) job of `scope` (and `segment_id` for SEGMENT scope), if any.
pub async fn queued<'e>(
    executor: impl PgExecutor<'e>,
    scope: &str,
    segment_id: Option<Uuid>,
) -> Result<Option<JobRecord>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM recompute_jobs \
         WHERE state = 'queued' AND scope = $1 AND segment_id IS NOT DISTINCT FROM $2 \
         ORDER BY create_time DESC LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(scope)
        .bind(segment_id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Whether a job of one of `scopes` is queued or running.
pub async fn active<'e>(
    executor: impl PgExecutor<'e>,
    scopes: &[&str],
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM recompute_jobs \
           WHERE scope = ANY($1) AND state IN ('queued', 'running'))",
    )
    .bind(scopes)
    .fetch_one(executor)
    .await
}

/// One job.
pub async fn get<'e>(
    executor: impl PgExecutor<'e>,
    job_id: Uuid,
) -> Result<Option<JobRecord>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM recompute_jobs WHERE recompute_job_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job_id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Filters of ListRecomputeJobs (column slugs).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub segment_id: Option<Uuid>,
    pub state: Option<String>,
    pub scope: Option<String>,
}

/// A page of jobs, newest first, before the keyset `before`.
pub async fn list<'e>(
    executor: impl PgExecutor<'e>,
    filter: &JobFilter,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<JobRecord>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM recompute_jobs \
         WHERE ($1::uuid IS NULL OR (segment_id = $1 AND scope = 'segment')) \
           AND ($2::text IS NULL OR state = $2) \
           AND ($3::text IS NULL OR scope = $3) \
           AND ($4::timestamptz IS NULL OR (create_time, recompute_job_id) < ($4, $5)) \
         ORDER BY create_time DESC, recompute_job_id DESC LIMIT $6"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(filter.segment_id)
        .bind(filter.state.as_deref())
        .bind(filter.scope.as_deref())
        .bind(before.map(|b| b.0))
        .bind(before.map(|b| b.1))
        .bind(limit)
        .fetch_all(executor)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Claims the oldest queued job, or a running one whose heartbeat is older than
/// `stale_secs` (its replica stopped), and marks it running. `SKIP LOCKED` lets several
/// replicas claim concurrently without waiting on each other.
pub async fn claim<'e>(
    executor: impl PgExecutor<'e>,
    now: DateTime<Utc>,
    stale_secs: f64,
) -> Result<Option<JobRecord>, sqlx::Error> {
    let sql = format!(
        "UPDATE recompute_jobs SET state = 'running', start_time = COALESCE(start_time, $1), \
             heartbeat_time = now() \
         WHERE recompute_job_id = ( \
             SELECT recompute_job_id FROM recompute_jobs \
             WHERE state = 'queued' \
                OR (state = 'running' AND heartbeat_time < now() - make_interval(secs => $2)) \
             ORDER BY create_time LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING {COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(stale_secs)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Shows that the running replica is alive.
pub async fn heartbeat<'e>(executor: impl PgExecutor<'e>, job_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE recompute_jobs SET heartbeat_time = now() \
         WHERE recompute_job_id = $1 AND state = 'running'",
    )
    .bind(job_id)
    .execute(executor)
    .await?;
    Ok(())
}

/// Writes progress, counts, results, state and times.
pub async fn save(conn: &mut PgConnection, job: &JobRecord) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE recompute_jobs SET state = $2, progress_percent = $3, segments_total = $4, \
             segments_done = $5, customers_evaluated = $6, entered_count = $7, \
             exited_count = $8, lifecycle_changed_count = $9, rfm_group_changed_count = $10, \
             segment_results = $11, end_time = $12, error_message = $13, segment_version = $14, \
             prediction_model_version = $15, computed_trait_changed_count = $16 \
         WHERE recompute_job_id = $1",
    )
    .bind(job.recompute_job_id)
    .bind(&job.state)
    .bind(job.progress_percent)
    .bind(job.segments_total)
    .bind(job.segments_done)
    .bind(job.customers_evaluated)
    .bind(job.entered_count)
    .bind(job.exited_count)
    .bind(job.lifecycle_changed_count)
    .bind(job.rfm_group_changed_count)
    .bind(serde_json::to_value(&job.segment_results).unwrap_or_default())
    .bind(job.end_time)
    .bind(&job.error_message)
    .bind(job.segment_version)
    .bind(job.prediction_model_version)
    .bind(job.computed_trait_changed_count)
    .execute(conn)
    .await?;
    Ok(())
}

/// Drops jobs ended more than 30 days before `now`.
pub async fn purge_old<'e>(
    executor: impl PgExecutor<'e>,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM recompute_jobs WHERE end_time < $1 - interval '30 days'")
        .bind(now)
        .execute(executor)
        .await?;
    Ok(done.rows_affected())
}

/// Uuids as text in the `segment_results` JSON.
mod uuid_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    pub(super) fn serialize<S: Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        let text = String::deserialize(d)?;
        Uuid::parse_str(&text).map_err(serde::de::Error::custom)
    }
}

/// Serialises RecomputeAll calls until the transaction ends, so two concurrent ones cannot
/// both queue a job.
pub async fn lock_recompute_all(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('recompute_all', 11))")
        .execute(conn)
        .await?;
    Ok(())
}
