//! What the metrics sampler (`jobs::gauges`) asks of feedback's tables: the rewards waiting for
//! delivery and the tickets past their SLA, each read over its partial index. Times are passed
//! in (the caller's clock).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::error::Error;

/// The rewards not yet delivered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitingRewards {
    /// PENDING rewards (never tried, or leased and not yet answered).
    pub pending: i64,
    /// RETRYING rewards (loyalty failed at least once).
    pub retrying: i64,
    /// When the oldest of them was submitted.
    pub oldest_submit_time: Option<DateTime<Utc>>,
}

/// The rewards waiting for delivery now (the reward queue's index, `responses_rewards_due`).
pub async fn waiting_rewards(conn: &mut PgConnection) -> Result<WaitingRewards, Error> {
    let rows: Vec<(String, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT reward_status, count(*), min(submit_time) FROM responses \
         WHERE reward_status IN ('pending', 'retrying') \
         GROUP BY reward_status",
    )
    .fetch_all(conn)
    .await?;
    let mut waiting = WaitingRewards::default();
    for (status, count, oldest) in rows {
        match status.as_str() {
            "pending" => waiting.pending = count,
            _ => waiting.retrying = count,
        }
        waiting.oldest_submit_time =
            Some(waiting.oldest_submit_time.map_or(oldest, |o| o.min(oldest)));
    }
    Ok(waiting)
}

/// Open and in-progress tickets whose next due time (first response, else resolution) is
/// before `now`, by severity (`tickets_by_next_due`).
pub async fn breached_tickets(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, Error> {
    Ok(sqlx::query_as(
        "SELECT severity, count(*) FROM tickets \
         WHERE next_due_time IS NOT NULL AND next_due_time < $1 GROUP BY severity",
    )
    .bind(now)
    .fetch_all(conn)
    .await?)
}
