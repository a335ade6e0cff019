//! The survey reward queue: the `responses` row is the queue (`reward_status`,
//! `reward_next_attempt`, index `responses_rewards_due`). Leasing, recording a delivery's
//! outcome, and RetryReward's re-queue. Times are passed in (the caller's clock); nothing
//! here reads the time.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::domain::response::DueReward;
use crate::error::Error;

/// Leases up to `batch` rewards due at `now` (PENDING or RETRYING with `reward_next_attempt`
/// at or before it), counting the attempt and hiding them from other workers until
/// `lease_until` (`FOR UPDATE SKIP LOCKED`, so replicas share the work).
pub async fn lease(
    pool: &PgPool,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    batch: i64,
) -> Result<Vec<DueReward>, Error> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "UPDATE responses SET reward_next_attempt = $2, \
           reward_attempt_count = reward_attempt_count + 1, reward_last_attempt = $1 \
         WHERE response_id IN ( \
           SELECT response_id FROM responses \
           WHERE reward_status IN ('pending', 'retrying') AND reward_next_attempt <= $1 \
           ORDER BY reward_next_attempt LIMIT $3 FOR UPDATE SKIP LOCKED) \
         RETURNING response_id, survey_id, customer_id, reward_points, reward_program_id, \
           reward_attempt_count, reward_traceparent",
    )
    .bind(now)
    .bind(lease_until)
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut leased = Vec::with_capacity(rows.len());
    for row in &rows {
        leased.push(DueReward {
            response_id: row.try_get("response_id")?,
            survey_id: row.try_get("survey_id")?,
            customer_id: row.try_get("customer_id")?,
            points: row.try_get::<Option<i64>, _>("reward_points")?.unwrap_or(0),
            program_id: row
                .try_get::<Option<String>, _>("reward_program_id")?
                .unwrap_or_default(),
            attempt: row.try_get("reward_attempt_count")?,
            traceparent: row.try_get("reward_traceparent")?,
        });
    }
    Ok(leased)
}

/// Marks a queued reward DELIVERED with loyalty's ledger entry; `false` when it was no longer
/// queued (nothing changed).
pub async fn deliver(
    conn: &mut PgConnection,
    response_id: Uuid,
    ledger_entry_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let updated = sqlx::query(
        "UPDATE responses SET reward_status = 'delivered', reward_ledger_entry_id = $2, \
         reward_deliver_time = $3, reward_next_attempt = NULL, reward_last_error = '' \
         WHERE response_id = $1 AND reward_status IN ('pending', 'retrying')",
    )
    .bind(response_id)
    .bind(ledger_entry_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Marks a queued reward RETRYING, due again at `next`, with the failure's `reason`.
pub async fn retry(
    conn: &mut PgConnection,
    response_id: Uuid,
    next: DateTime<Utc>,
    reason: &str,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE responses SET reward_status = 'retrying', reward_next_attempt = $2, \
         reward_last_error = $3 \
         WHERE response_id = $1 AND reward_status IN ('pending', 'retrying')",
    )
    .bind(response_id)
    .bind(next)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a queued reward REJECTED with loyalty's `reason`; `false` when it was no longer
/// queued.
pub async fn reject(
    conn: &mut PgConnection,
    response_id: Uuid,
    reason: &str,
) -> Result<bool, Error> {
    let updated = sqlx::query(
        "UPDATE responses SET reward_status = 'rejected', reward_next_attempt = NULL, \
         reward_last_error = $2 \
         WHERE response_id = $1 AND reward_status IN ('pending', 'retrying')",
    )
    .bind(response_id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Re-queues a REJECTED reward, due at `now`, continuing the trace `traceparent`; other
/// states are left as they are.
pub async fn requeue(
    conn: &mut PgConnection,
    response_id: Uuid,
    now: DateTime<Utc>,
    traceparent: &str,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE responses SET reward_status = 'pending', reward_next_attempt = $2, \
           reward_traceparent = $3 \
         WHERE response_id = $1 AND reward_status = 'rejected'",
    )
    .bind(response_id)
    .bind(now)
    .bind(traceparent)
    .execute(conn)
    .await?;
    Ok(())
}
