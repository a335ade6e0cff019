//! The use cases: each runs one transaction over `store`, applying `domain` rules and writing
//! outbox events, idempotency keys and queued jobs with the change. Handlers in `api` parse a
//! request, call one function here and return the result; the feed consumers (`feeds`) and
//! the background jobs (`jobs`) call the engines below inside their own transactions.
//!
//! - Per area of the API: `segments`, `lookups`, `catalog`, `facts`, `export`, `rfm`,
//!   `lifecycle`, `predictions`, `jobs` (recompute requests), `settings`.
//! - `membership`: keeps memberships current as facts change (feed batches, erasures, merges).
//! - `derived`: RFM values and lifecycle stages, for a batch's customers or in full runs.
//! - `recompute`: a rule segment applied set-based, and the segments referencing a changed one
//!   following it.
//!
//! A call with a request id (CreateSegment, UploadStaticMembers, RecomputeSegment,
//! RecomputeAll) runs through [`respond_once`]: `custops_common::idempotency` records its key
//! with the encoded response at the end of its transaction, and a replay answers those bytes.

pub mod catalog;
pub mod computed;
pub mod configs;
pub mod derived;
pub mod export;
pub mod facts;
pub mod jobs;
pub mod lifecycle;
pub mod lookups;
pub mod membership;
pub mod predictions;
pub mod recompute;
pub mod rfm;
pub mod segments;
pub mod settings;

use chrono::{DateTime, Utc};
use custops_common::idempotency::{self, Completed, RequestKey};
use futures_util::future::BoxFuture;
use prost::Message;
use sqlx::PgConnection;

use crate::error::{Error, Result};
use crate::state::AppState;

/// Runs `work` in one transaction that ends by appending the events it returns, and answers
/// the response it encoded. With a request key this is `custops_common::idempotency::run`: the
/// key is recorded with the response bytes at `now`, a replay of an equal request answers the
/// first call's bytes (not the current state), and the same key with another RPC or request is
/// [`Error::RequestIdReused`]; of calls racing with one key only one commits.
pub(crate) async fn respond_once<R, F>(
    state: &AppState,
    key: Option<&RequestKey>,
    now: DateTime<Utc>,
    work: F,
) -> Result<R>
where
    R: Message + Default,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Completed>>,
{
    let bytes = idempotency::run_optional(&state.pool, key, now, work).await?;
    R::decode(bytes.as_slice()).map_err(Error::internal)
}
