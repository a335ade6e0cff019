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
pub mod idempotency;
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

use custops_common::outbox::OutboxEvent;
use futures_util::future::BoxFuture;
use sqlx::{PgConnection, PgPool};

use crate::domain::ledger::RequestKey;
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
        idempotency::stored(&self.pool, key).await
    }

    /// Runs `work` once per request key, in one transaction that ends by recording the key
    /// with the response `work` returns and appending its events to the outbox, in one
    /// statement. A replay of an equal request returns the stored bytes unchanged; the same
    /// key with another request is `RequestIdReused`. When `work` fails and no call with the
    /// key succeeded, nothing is recorded, so the caller may retry with the same key.
    ///
    /// The key is taken at the end, not claimed first (a round trip and a second write of the
    /// row on every call): a replay runs its work, then finds the key taken (or the
    /// first call's ledger entry, whose request id is unique) and rolls back, and its first
    /// call's response is returned. Whatever two calls with one key contend on (the member's
    /// lock, the entry's or the key's unique index) makes the later wait for the earlier's
    /// commit, so the replay reads a committed response, and only one call ever commits.
    pub async fn idempotent<F>(&self, key: &RequestKey, work: F) -> StoreResult<Vec<u8>>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, StoreResult<Completed>>,
    {
        let mut tx = self.pool.begin().await?;
        let now = self.clock.now();
        let completed = match work(&mut tx).await {
            Ok(completed) => completed,
            Err(error) => {
                // Rolled back on drop: a failed rollback (a broken connection) must not hide
                // the error of the work.
                drop(tx);
                return self.replay_or(key, error).await;
            }
        };
        let recorded =
            idempotency::record(&mut tx, key, now, &completed.response, &completed.events).await?;
        if recorded {
            tx.commit().await?;
            return Ok(completed.response);
        }
        tx.rollback().await?;
        self.replay(key).await?.ok_or_else(|| {
            StoreError::Corrupt("an idempotency key taken but not readable".to_owned())
        })
    }

    /// After `work` failed: the stored response when a call with `key` succeeded (a replay
    /// fails on what its first call changed, e.g. the ledger entry it made), else `error`.
    async fn replay_or(&self, key: &RequestKey, error: StoreError) -> StoreResult<Vec<u8>> {
        match idempotency::stored(&self.pool, key).await {
            Ok(Some(response)) => Ok(response),
            Err(reused @ StoreError::Rejected(Rejection::RequestIdReused { .. })) => Err(reused),
            Ok(None) | Err(_) => Err(error),
        }
    }
}

/// What an idempotent call's work leaves: the response stored for replays, and the events
/// of its change, appended with it ([`PgStore::idempotent`]).
#[derive(Debug)]
pub struct Completed {
    pub response: Vec<u8>,
    pub events: Vec<OutboxEvent>,
}

impl Completed {
    /// A response of a change that reports no event.
    pub fn response(response: Vec<u8>) -> Self {
        Self {
            response,
            events: Vec::new(),
        }
    }

    /// A response and the events of its change, in order.
    pub fn with_events(response: Vec<u8>, events: Vec<OutboxEvent>) -> Self {
        Self { response, events }
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
