//! Postgres storage of the feedback schema (sqlx, runtime-checked queries), one module per
//! table family, functions over a connection: the use cases in `workflow` run every mutation
//! in one transaction with its outbox events (and, for a call with a request id, its key in
//! `idempotency_keys`, written by `custops_common::idempotency`), so a failed call changes
//! nothing.

pub mod customers;
pub mod gauges;
pub mod metrics;
pub mod responses;
pub mod reviews;
pub mod rewards;
pub mod surveys;
pub mod tickets;

use sqlx::{PgPool, Row};

use crate::error::Error;

/// The feedback schema's pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    /// Connections whose `search_path` is the feedback schema.
    pub pool: PgPool,
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
