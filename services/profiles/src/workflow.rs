//! The use cases, one function per operation: each opens its transaction (or connection),
//! runs `store`'s SQL and `domain`'s rules in it, appends the outbox events (`events`) before
//! the commit, and answers domain values or a `ProfilesError`. Handlers in `api` parse a
//! request, call one function here and convert the result. Every time stored or decided on
//! is read once from the service clock (`Context::now`).
//!
//! The mutations a `request_id` makes safe to retry (CreateCustomer, UpdateConsent,
//! MergeCustomers, UnmergeCustomer, EraseCustomer) run through [`idempotent`]: their answer is
//! built by the handler's `respond` inside the transaction, stored with the key and answered
//! to every replay, byte for byte (`custops_common::idempotency`).

pub mod activities;
pub mod attributes;
pub mod consents;
pub mod customers;
pub mod event_types;
pub mod merges;
pub mod privacy;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use custops_common::idempotency::{self, Completed};
use custops_common::outbox::OutboxEvent;
use futures_util::future::BoxFuture;
use prost::Message;
use sqlx::{PgConnection, PgPool};

pub use custops_common::idempotency::RequestKey;

use crate::domain::{Clock, Customer, CustomerState};
use crate::error::{ProfilesError, Result};

/// What every use case needs: the pool of the profiles schema and the service clock.
#[derive(Debug, Clone)]
pub struct Context {
    /// Connections whose `search_path` is the profiles schema.
    pub pool: PgPool,
    /// The time source of everything stored or decided on.
    pub clock: Arc<dyn Clock>,
}

impl Context {
    /// Use cases over `pool`, reading time from `clock`.
    pub fn new(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }

    /// Now, by the service clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// FAILED_PRECONDITION unless the customer may be edited (ACTIVE; DELETED when `allow_deleted`).
pub(crate) fn ensure_editable(customer: &Customer, allow_deleted: bool) -> Result<()> {
    match customer.state {
        CustomerState::Active => Ok(()),
        CustomerState::Deleted if allow_deleted => Ok(()),
        CustomerState::Deleted => Err(ProfilesError::CustomerDeleted),
        CustomerState::Merged => Err(ProfilesError::CustomerMerged {
            merged_into: customer.merged_into.unwrap_or(customer.id),
        }),
        CustomerState::Erased => Err(ProfilesError::CustomerErased),
    }
}

/// What a change's transaction leaves: its outcome and the outbox events of what it changed,
/// in feed order.
pub(crate) type Changed<T> = (T, Vec<OutboxEvent>);

/// Runs `work` in one transaction that ends by appending its events, and answers
/// `respond(outcome)`. With a request key the change happens once per key
/// (`idempotency::run`): the answer is encoded inside the transaction and recorded with the
/// key and the events in one statement, and a replay — even after the customer changed —
/// answers those first bytes; the key with another RPC or request is REQUEST_ID_REUSED. A
/// replay runs `work` again and rolls it back: it finds the key taken, or fails on what the
/// first call changed (a held identity, a merged source, a stale etag), and either way
/// answers the stored response.
pub(crate) async fn idempotent<T, R, F, A>(
    ctx: &Context,
    key: Option<&RequestKey>,
    now: DateTime<Utc>,
    work: F,
    respond: A,
) -> Result<R>
where
    R: Message + Default,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Changed<T>>> + Send + 'static,
    A: FnOnce(&T) -> R + Send + 'static,
{
    let bytes = idempotency::run_optional(&ctx.pool, key, now, move |conn| {
        Box::pin(async move {
            let (outcome, events) = work(conn).await?;
            Ok(Completed::with_events(
                respond(&outcome).encode_to_vec(),
                events,
            ))
        }) as BoxFuture<'_, Result<Completed>>
    })
    .await?;
    R::decode(bytes.as_slice()).map_err(|e| ProfilesError::Internal(e.into()))
}
