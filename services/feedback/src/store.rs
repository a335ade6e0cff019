//! Postgres storage of the feedback schema (sqlx, runtime-checked queries). Every mutation runs
//! in one transaction together with its outbox events and its idempotency key, so a failed
//! call changes nothing.

pub mod customers;
pub mod metrics;
pub mod responses;
pub mod reviews;
pub mod rewards;
pub mod surveys;
pub mod tickets;

use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::error::Error;

/// The feedback schema's pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    /// Connections whose `search_path` is the feedback schema.
    pub pool: PgPool,
}

/// The idempotency key of one mutating call (AIP-155), scoped to the calling service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The calling service.
    pub caller: String,
    /// The RPC, e.g. `SubmitResponse`.
    pub operation: &'static str,
    /// The caller's request id.
    pub request_id: String,
    /// Hash of the request payload.
    pub fingerprint: Vec<u8>,
}

/// Serialises calls with the same key, then looks the key up: `Some(resource)` when it was
/// used before with the same payload (a replay), REQUEST_ID_REUSED with another payload.
pub async fn claim_key(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
) -> Result<Option<Uuid>, Error> {
    // Two concurrent calls with one key: the second waits here until the first commits, then
    // finds its row and replays it.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2 || '/' || $3, 7))")
        .bind(&key.caller)
        .bind(key.operation)
        .bind(&key.request_id)
        .execute(&mut *conn)
        .await?;
    let row = sqlx::query(
        "SELECT fingerprint, resource_id FROM idempotency_keys \
         WHERE caller = $1 AND operation = $2 AND request_id = $3",
    )
    .bind(&key.caller)
    .bind(key.operation)
    .bind(&key.request_id)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        None => Ok(None),
        Some(row) => {
            let fingerprint: Vec<u8> = row.try_get("fingerprint")?;
            if fingerprint == key.fingerprint {
                Ok(Some(row.try_get("resource_id")?))
            } else {
                Err(Error::RequestIdReused)
            }
        }
    }
}

/// Records `key` as having produced `resource_id`, in the caller's transaction.
pub async fn record_key(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    resource_id: Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO idempotency_keys (caller, operation, request_id, fingerprint, resource_id, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&key.caller)
    .bind(key.operation)
    .bind(&key.request_id)
    .bind(&key.fingerprint)
    .bind(resource_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A stored enum column that does not parse: the data is corrupt, an internal error.
pub(crate) fn corrupt(column: &str, value: &str) -> Error {
    Error::internal(anyhow::anyhow!(
        "unexpected value `{value}` in column {column}"
    ))
}

/// Parses a stored enum column with `parse`.
pub(crate) fn parse_col<T>(
    row: &sqlx::postgres::PgRow,
    column: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, Error> {
    let value: String = row.try_get(column)?;
    parse(&value).ok_or_else(|| corrupt(column, &value))
}
