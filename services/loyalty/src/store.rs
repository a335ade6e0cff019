//! Postgres storage of the loyalty schema, and the transactions that apply the domain rules.
//!
//! Every mutation of a member runs in one transaction: lock the member's `balances` row
//! (`FOR UPDATE`), apply due expiries, append the ledger entry, update the projection and the
//! lots, then record the idempotency key with the response and append the outbox events in
//! one statement ([`PgStore::idempotent`]). Locking
//! the balances row first serialises all changes of one member, so no update is lost or
//! doubled and a spend sees the balance it is checked against.

pub mod birthdays;
pub mod erasure;
pub mod export;
pub mod jobs;
pub mod ledger;
pub mod lots;
pub mod members;
pub mod merges;
pub mod programs;
pub mod rewards;
pub mod schedule;
pub mod status;
pub mod tiers;

use std::sync::Arc;

use custops_common::idempotency::{self, KeyError};
pub use custops_common::idempotency::{Completed, RequestKey};
use futures_util::future::BoxFuture;
use sqlx::{PgConnection, PgPool};

use crate::domain::{Clock, Rejection};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The rules refused it.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Stored data that does not parse: a defect.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// `Result` of the store.
pub type StoreResult<T> = Result<T, StoreError>;

/// The loyalty schema, through one pool, with the service clock.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl PgStore {
    /// A store over `pool` using `clock` for "now".
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The service clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The stored response of an equal request under `key`, when one succeeded before (a
    /// replay); `None` when the key is unused or its first call has not committed. The same
    /// key with another request is `RequestIdReused`. For work that must happen before the
    /// transaction, such as asking another service, and must not happen again on a replay.
    pub async fn replay(&self, key: &RequestKey) -> StoreResult<Option<Vec<u8>>> {
        Ok(idempotency::stored(&self.pool, key).await?)
    }

    /// Runs `work` once per request key, at the service clock's now
    /// (`custops_common::idempotency::run`: the key recorded with the response and the events
    /// at the end of the call's transaction, replays answered the stored bytes).
    pub async fn idempotent<F>(&self, key: &RequestKey, work: F) -> StoreResult<Vec<u8>>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, StoreResult<Completed>>,
    {
        idempotency::run(&self.pool, key, self.clock.now(), work).await
    }
}

impl From<KeyError> for StoreError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Reused { request_id } => Rejection::RequestIdReused { request_id }.into(),
            KeyError::Database(error) => error.into(),
        }
    }
}

/// The sum of one member's lot points (or of what an operation takes from them). They add up
/// to a balance, which `domain::limits` bounds far inside i64, so an overflow can only be
/// corrupt data: reported as such, never a panic or a wrapped total.
pub(crate) fn points_sum(values: impl IntoIterator<Item = i64>) -> StoreResult<i64> {
    values.into_iter().try_fold(0_i64, |acc, v| {
        acc.checked_add(v)
            .ok_or_else(|| StoreError::Corrupt("a sum of lot points overflows".to_owned()))
    })
}

/// Reads a stored enum code into `T`, or reports corrupt data.
pub(crate) fn decode<T>(value: Option<T>, what: &str) -> StoreResult<T> {
    value.ok_or_else(|| StoreError::Corrupt(format!("unknown {what}")))
}
