//! Idempotency records: one row per (calling service, request id) holding the request as sent
//! and the first successful response.

use chrono::{DateTime, Utc};
use custops_common::outbox::{self, OutboxEvent};
use sqlx::{PgConnection, PgPool, Row};

use super::StoreResult;
use crate::domain::Rejection;
use crate::domain::ledger::RequestKey;

/// Outcome of claiming a key.
#[derive(Debug)]
pub enum Claim {
    /// The key is ours now: do the work.
    New,
    /// An equal request succeeded before: its response.
    Replay(Vec<u8>),
}

/// Claims `key` inside the caller's transaction. If another transaction holds it, this waits
/// for that one to finish (the primary key's row lock): when it committed, its response is
/// replayed; when it rolled back, the key is ours.
pub async fn claim(
    conn: &mut PgConnection,
    key: &RequestKey,
    now: DateTime<Utc>,
) -> StoreResult<Claim> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (caller, request_id, method, request, create_time) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (caller, request_id) DO NOTHING",
    )
    .bind(&key.caller)
    .bind(&key.request_id)
    .bind(key.method)
    .bind(&key.fingerprint)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let row = sqlx::query(
        "SELECT method, request, response FROM idempotency_keys \
         WHERE caller = $1 AND request_id = $2",
    )
    .bind(&key.caller)
    .bind(&key.request_id)
    .fetch_one(&mut *conn)
    .await?;
    let method: String = row.try_get("method")?;
    let request: Vec<u8> = row.try_get("request")?;
    if method == key.method && request == key.fingerprint {
        Ok(Claim::Replay(row.try_get("response")?))
    } else {
        Err(Rejection::RequestIdReused {
            request_id: key.request_id.clone(),
        }
        .into())
    }
}

/// Records the response of the claimed key and appends `events` to the outbox, in one
/// statement (`outbox::append_all_with`).
pub async fn complete(
    conn: &mut PgConnection,
    key: &RequestKey,
    response: &[u8],
    events: &[OutboxEvent],
) -> StoreResult<()> {
    outbox::append_all_with(
        conn,
        events,
        Some("UPDATE idempotency_keys SET response = $9 WHERE caller = $7 AND request_id = $8"),
        |query| query.bind(&key.caller).bind(&key.request_id).bind(response),
    )
    .await?;
    Ok(())
}

/// The committed response to `key`, read without waiting: `None` when the key is unused or
/// its first call has not committed yet (the row is then invisible or has no response).
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
    let response: Vec<u8> = row.try_get("response")?;
    Ok((!response.is_empty()).then_some(response))
}
