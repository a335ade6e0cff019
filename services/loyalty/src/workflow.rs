//! The use cases, one function per operation: each opens its transaction (or connection),
//! runs `store`'s SQL and `domain`'s rules in it, appends the outbox events (`events`) before
//! the commit, and answers domain values or a `StoreError`. Handlers in `api` parse a request,
//! call one function here and convert the answer; the profiles feed (`feeds`) and the
//! scheduler (`jobs`) call here too. Every time stored or decided on is read from the service
//! clock (`Context::now`).
//!
//! A change with a request id runs once per key (`Context::once`,
//! `custops_common::idempotency`): the caller passes the reply, which is encoded inside the
//! transaction and recorded with the key and the events at its end, so a replay answers the
//! first call's reply byte for byte (the balances in it are those of the first call).
//!
//! - `programs`, `members`, `status`, `ledger`, `reversals`, `rewards`, `tiers`: the RPCs by
//!   area.
//! - `merges`, `customers`: what the profiles feed's events do.
//! - `jobs`: point release, point expiry and tier review.
//! - `export`: the data-subject export.

pub mod customers;
pub mod earn_group;
pub mod export;
pub mod jobs;
pub mod ledger;
pub mod members;
pub mod merges;
pub mod programs;
pub mod reversals;
pub mod rewards;
pub mod status;
pub mod tiers;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use custops_common::idempotency::{self, Completed, LastWrite, RequestKey};
use custops_common::outbox::OutboxEvent;
use futures_util::future::BoxFuture;
use prost::Message;
use sqlx::{PgConnection, PgPool};

use crate::directory::CustomerDirectory;
use crate::domain::{Clock, Rejection};
use crate::store::{StoreError, StoreResult, ledger as ledger_store};

/// What every use case needs: the pool of the loyalty schema, the service clock, when
/// configured profiles' customer directory, and the runners of grouped earns.
#[derive(Debug, Clone)]
pub struct Context {
    /// Connections whose `search_path` is the loyalty schema.
    pub pool: PgPool,
    /// The time source of everything stored or decided on.
    pub clock: Arc<dyn Clock>,
    /// Profiles, to check the customer of an enrolment; `None` when loyalty runs standalone
    /// (it then enrols any well-formed customer id).
    pub customers: Option<CustomerDirectory>,
    /// Where EarnPoints calls wait to be made together (`earn_group`); `None` in the
    /// runners' own context, whose earns run alone.
    earn_groups: Option<earn_group::EarnGroups>,
}

impl Context {
    /// Use cases over `pool`, reading time from `clock`, asking `customers` about enrolments;
    /// starts the runners of grouped earns (`earn_group`), which stop once every clone of
    /// the context is dropped.
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>, customers: Option<CustomerDirectory>) -> Self {
        let alone = Self {
            pool,
            clock,
            customers,
            earn_groups: None,
        };
        Self {
            earn_groups: Some(earn_group::EarnGroups::spawn(alone.clone())),
            ..alone
        }
    }

    /// Where earns wait to be made together, unless this is the runners' own context.
    pub(crate) fn earn_groups(&self) -> Option<&earn_group::EarnGroups> {
        self.earn_groups.as_ref()
    }

    /// Now, by the service clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The stored response of an equal request under `key`, when one succeeded before (a
    /// replay); `None` when the key is unused or its first call has not committed. The same
    /// key with another request is `RequestIdReused`. For work that must happen before the
    /// transaction, such as asking another service, and must not happen again on a replay.
    pub(crate) async fn replay(&self, key: &RequestKey) -> StoreResult<Option<Vec<u8>>> {
        Ok(idempotency::stored(&mut *custops_common::db::read(&self.pool).await?, key).await?)
    }

    /// Runs `work` once per request key, at the service clock's now
    /// (`custops_common::idempotency::run`): `reply` of its outcome is encoded in the
    /// transaction and recorded with the key, the outcome's events and its last write at its
    /// end, so a replay answers the first call's reply byte for byte. A last write that runs
    /// into an entry of the same request id with no stored response to answer (the key pruned)
    /// is `RequestIdReused`, as the entry's own statement says it.
    pub(crate) async fn once<T, R, W, F>(
        &self,
        key: &RequestKey,
        work: W,
        reply: F,
    ) -> StoreResult<R>
    where
        T: Send + 'static,
        R: Message + Default,
        W: for<'c> FnOnce(
                &'c mut PgConnection,
                DateTime<Utc>,
            ) -> BoxFuture<'c, StoreResult<Changed<T>>>
            + Send
            + 'static,
        F: FnOnce(T) -> R + Send + 'static,
    {
        let bytes = self
            .once_encoded(key, work, move |outcome| reply(outcome).encode_to_vec())
            .await?;
        decode(&bytes)
    }

    /// [`Context::once`] answering the reply's encoding, as it is recorded with the key.
    pub(crate) async fn once_encoded<T, W, F>(
        &self,
        key: &RequestKey,
        work: W,
        encode: F,
    ) -> StoreResult<Vec<u8>>
    where
        T: Send + 'static,
        W: for<'c> FnOnce(
                &'c mut PgConnection,
                DateTime<Utc>,
            ) -> BoxFuture<'c, StoreResult<Changed<T>>>
            + Send
            + 'static,
        F: FnOnce(T) -> Vec<u8> + Send + 'static,
    {
        let now = self.now();
        idempotency::run(&self.pool, key, now, move |conn| {
            Box::pin(async move {
                let changed = work(conn, now).await?;
                Ok::<_, StoreError>(
                    Completed::with_events(encode(changed.outcome), changed.events)
                        .with_last_write(changed.last_write),
                )
            })
        })
        .await
        .map_err(|error| match error {
            StoreError::Database(db) if ledger_store::reuses_a_request_id(&db) => {
                Rejection::RequestIdReused {
                    request_id: key.request_id.clone(),
                }
                .into()
            }
            other => other,
        })
    }
}

/// What a change's work leaves for [`Context::once`]: its outcome, its events, and the last
/// write it left for the statement that records the key (`store::ledger::EntryWrite`).
pub(crate) struct Changed<T> {
    outcome: T,
    events: Vec<OutboxEvent>,
    last_write: Option<LastWrite>,
}

impl<T> Changed<T> {
    /// The same with `last_write` left to the recording statement.
    pub(crate) fn with_last_write(mut self, last_write: Option<LastWrite>) -> Self {
        self.last_write = last_write;
        self
    }
}

impl<T> From<(T, Vec<OutboxEvent>)> for Changed<T> {
    fn from((outcome, events): (T, Vec<OutboxEvent>)) -> Self {
        Self {
            outcome,
            events,
            last_write: None,
        }
    }
}

/// A reply this service encoded (just now, or stored by the first call of a request id): one
/// that does not decode is corrupt data.
pub(crate) fn decode<R: Message + Default>(bytes: &[u8]) -> StoreResult<R> {
    R::decode(bytes).map_err(|e| StoreError::Corrupt(format!("a stored reply: {e}")))
}
