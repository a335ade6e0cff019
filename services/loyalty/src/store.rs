//! Postgres storage of the loyalty schema, and the transactions that apply the domain rules.
//!
//! Every mutation of a member runs in one transaction: claim the idempotency key, lock the
//! member's `balances` row (`FOR UPDATE`), apply due expiries, append the ledger entry,
//! update the projection and the lots, then record the response and append the outbox events
//! in one statement. Locking
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
    /// replay); `None` when the key is unused or its first call is still running (then
    /// [`PgStore::idempotent`] waits for it). The same key with another request is
    /// `RequestIdReused`. For work that must happen before the transaction, such as asking
    /// another service, and must not happen again on a replay.
    pub async fn replay(&self, key: &RequestKey) -> StoreResult<Option<Vec<u8>>> {
        idempotency::stored(&self.pool, key).await
    }

    /// Runs `work` once per request key: in one transaction, claims `key`, runs `work`, then
    /// stores the response it returns and appends its events to the outbox in one statement.
    /// A replay of an equal request returns the stored bytes unchanged; the same key with
    /// another request is `RequestIdReused`. When `work` fails nothing is recorded, so the
    /// caller may retry with the same key.
    pub async fn idempotent<F>(&self, key: &RequestKey, work: F) -> StoreResult<Vec<u8>>
    where
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, StoreResult<Completed>>,
    {
        let mut tx = self.pool.begin().await?;
        let now = self.clock.now();
        if let idempotency::Claim::Replay(response) = idempotency::claim(&mut tx, key, now).await? {
            tx.rollback().await?;
            return Ok(response);
        }
        let completed = work(&mut tx).await?;
        idempotency::complete(&mut tx, key, &completed.response, &completed.events).await?;
        tx.commit().await?;
        Ok(completed.response)
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
