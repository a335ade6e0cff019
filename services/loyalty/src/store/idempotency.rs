//! Idempotency records: one row per (calling service, request id) holding the request as sent
//! and the first successful response.

use chrono::{DateTime, Utc};
use custops_common::outbox::{self, OutboxEvent};
use sqlx::{PgConnection, PgPool, Row};

use super::StoreResult;
use crate::domain::Rejection;
use crate::domain::ledger::RequestKey;

/// Records the key with the response of its first successful call and appends `events` to
/// the outbox, in one statement (`outbox::append_all_with`), at the end of the call's
/// transaction. `false` when the key is taken (then nothing may be committed: the caller rolls
/// back and replays what is stored). A call holding the key uncommitted makes this wait for
/// its end, so of two calls with one key only one ever commits.
pub async fn record(
    conn: &mut PgConnection,
    key: &RequestKey,
    now: DateTime<Utc>,
    response: &[u8],
    events: &[OutboxEvent],
) -> StoreResult<bool> {
    let written = outbox::append_all_with(
        conn,
        events,
        "INSERT INTO idempotency_keys (caller, request_id, method, request, response, \
         create_time) VALUES ($7, $8, $9, $10, $11, $12) \
         ON CONFLICT (caller, request_id) DO NOTHING RETURNING 1",
        |query| {
            query
                .bind(&key.caller)
                .bind(&key.request_id)
                .bind(key.method)
                .bind(&key.fingerprint)
                .bind(response)
                .bind(now)
        },
    )
    .await?;
    Ok(written == 1)
}

/// The committed response to `key`, read without waiting: `None` when the key is unused or
/// its first call has not committed yet.
pub async fn stored(pool: &PgPool, key: &RequestKey) -> StoreResult<Option<Vec<u8>>> {
    let row = sqlx::query(
        "SELECT method, request, response FROM idempotency_keys \
         WHERE caller = $1 AND request_id = $2",
    )
    .bind(&key.caller)
    .bind(&key.request_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let method: String = row.try_get("method")?;
    let request: Vec<u8> = row.try_get("request")?;
    if method != key.method || request != key.fingerprint {
        return Err(Rejection::RequestIdReused {
            request_id: key.request_id.clone(),
        }
        .into());
    }
    Ok(Some(row.try_get("response")?))
}
