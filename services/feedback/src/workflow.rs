//! The use cases: each runs one transaction over `store`, applying `domain` rules, writing
//! outbox events with the change. Handlers in `api` parse a request, call one function here
//! and convert the result.
//!
//! A use case with a request id runs its change through `once`
//! (`custops_common::idempotency`): the handler passes the reply, which is encoded inside the
//! transaction and recorded with the key and the events at its end, so a replay answers the
//! first call's reply, byte for byte — not the resource as it is now.

pub mod export;
pub mod metrics;
pub mod responses;
pub mod reviews;
pub mod surveys;
pub mod tickets;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use custops_common::idempotency::{self, Completed, RequestKey};
use custops_common::outbox::OutboxEvent;
use futures_util::future::BoxFuture;
use prost::Message;
use sqlx::PgConnection;

use crate::domain::Clock;
use crate::error::Error;
use crate::segments::SegmentDirectory;
use crate::store::PgStore;

/// What every use case needs: the store, the clock and, when configured, segmentation.
#[derive(Debug, Clone)]
pub struct Context {
    /// Storage.
    pub store: PgStore,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Segment membership; `None` when segmentation is not configured (segment-targeted
    /// surveys then cannot invite, and responses record no segments).
    pub segments: Option<Arc<dyn SegmentDirectory>>,
}

impl Context {
    /// Now, by the injected clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// Who acts: the calling service and, optionally, the agent it acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Calling service (from the token).
    pub service: String,
    /// Agent id, may be empty.
    pub actor_id: String,
}

/// What a change leaves in its transaction: its result and the outbox events to append at
/// the end, in order.
pub(crate) type Changed<T> = Result<(T, Vec<OutboxEvent>), Error>;

/// Runs `work` in one transaction and answers `reply` of its result.
///
/// With a request id (`key`), through `custops_common::idempotency::run`: the reply is
/// encoded in the transaction and recorded with the key and the events at its end; a replay
/// — or a call racing the first — answers the first call's reply, and the same key with
/// another RPC or request is REQUEST_ID_REUSED. A replay runs the work again and rolls it
/// back (it usually stops early, refused by what the first call changed), so a use case whose
/// work calls another service asks [`replayed`] first. Without a request id the change is
/// applied as sent.
pub(crate) async fn once<T, R, W, F>(
    ctx: &Context,
    key: Option<&RequestKey>,
    reply: F,
    work: W,
) -> Result<R, Error>
where
    T: Send + 'static,
    R: Message + Default,
    F: FnOnce(&T) -> R + Send + 'static,
    W: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Changed<T>> + Send + 'static,
{
    let bytes = idempotency::run_optional(&ctx.store.pool, key, ctx.now(), move |conn| {
        Box::pin(async move {
            let (value, events) = work(conn).await?;
            Ok::<_, Error>(Completed::with_events(
                reply(&value).encode_to_vec(),
                events,
            ))
        })
    })
    .await?;
    decode(&bytes)
}

/// The stored reply of `key`'s first call, read without running anything: `None` when the key
/// is unused (or its first call has not committed). Asked first by the use cases whose work
/// calls another service, so that a replay neither calls it again nor depends on its answer
/// today.
pub(crate) async fn replayed<R: Message + Default>(
    ctx: &Context,
    key: &RequestKey,
) -> Result<Option<R>, Error> {
    match idempotency::stored(&mut *custops_common::db::read(&ctx.store.pool).await?, key).await? {
        Some(bytes) => decode(&bytes).map(Some),
        None => Ok(None),
    }
}

/// A stored reply: this service encoded it, so a failure is a defect.
fn decode<R: Message + Default>(bytes: &[u8]) -> Result<R, Error> {
    R::decode(bytes).map_err(Error::internal)
}
