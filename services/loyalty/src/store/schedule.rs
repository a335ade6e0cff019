//! When each scheduled job last started (`schedule_runs`), so that among several replicas,
//! each running the in-process scheduler, one starts a given job per interval.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::StoreResult;

/// Claims the run of job `name` at `now` when it last started at least `interval` ago (or
/// never): moves its `last_run_time` to `now` and answers true. One statement: the row is
/// locked with `SKIP LOCKED`, so a replica that finds another one claiming moves on, and one
/// that comes after sees the new time (Postgres re-checks the condition on the latest row
/// version) and claims nothing. Its two statements go in the caller's transaction.
pub async fn claim(
    conn: &mut PgConnection,
    name: &str,
    now: DateTime<Utc>,
    interval: Duration,
) -> StoreResult<bool> {
    // The first claim of a job finds it never run: jobs start right after a first deploy.
    sqlx::query(
        "INSERT INTO schedule_runs (name, last_run_time) VALUES ($1, '-infinity') \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .execute(&mut *conn)
    .await?;
    let claimed = sqlx::query(
        "WITH due AS ( \
           SELECT name FROM schedule_runs \
           WHERE name = $1 AND last_run_time <= $2 - make_interval(secs => $3) \
           FOR UPDATE SKIP LOCKED) \
         UPDATE schedule_runs s SET last_run_time = $2 FROM due WHERE s.name = due.name",
    )
    .bind(name)
    .bind(now)
    .bind(interval.as_secs_f64())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}
