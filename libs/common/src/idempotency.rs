//! Request-id idempotency, one way for every service: a retried mutation returns the stored
//! response of its first successful call, byte for byte.
//!
//! Each service's schema holds one `idempotency_keys` table of one shape — `caller`,
//! `request_id` (the primary key), `method`, `fingerprint` (of the request), `response` (the
//! first one's bytes), `create_time` (indexed, for pruning) — created by its migrations. The same key with another RPC or another request is `REQUEST_ID_REUSED`.
//!
//! A call runs in one transaction that ends by recording its key with its response and
//! appending its outbox events, in one statement ([`run`]), which also makes the work's last
//! write when it left one ([`LastWrite`]). The key is taken at the end, not
//! claimed first (which costs a round trip and a second write of the row on every call): a
//! replay runs its work, finds the key taken — or fails on what its first call changed, such
//! as a unique index — rolls back and returns the stored response. Whatever two calls with one
//! key contend on (a row lock, a unique index, the key itself) makes the later wait for the
//! earlier's commit, so a replay reads a committed response and only one call ever commits.
//! Work that must not run twice before the transaction (a call to another service) asks
//! [`stored`] first.
//!
//! Keys are kept for [`RETENTION`], 35 days (a retry comes within minutes; the contracts promise
//! 30 days; a month bounds the table),
//! then [`prune`]d by [`spawn_pruner`], which every service runs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgExecutor, PgPool, Row};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::outbox::{self, OutboxEvent};

/// How long a key is kept after its first call: replays within it get the stored response
/// (the contracts promise at least 30 days).
pub const RETENTION: Duration = Duration::from_secs(35 * 24 * 60 * 60);

/// One call's identity for replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// Calling service (from its token; `anonymous` without auth).
    pub caller: String,
    /// The caller's request id.
    pub request_id: String,
    /// The RPC's name (the method of its service), so one key cannot be replayed against
    /// another method.
    pub method: &'static str,
    /// [`fingerprint`] of the request.
    pub fingerprint: Vec<u8>,
}

impl RequestKey {
    /// The key of `request` (its encoding fingerprinted) sent by `caller` to `method`.
    pub fn new(
        caller: impl Into<String>,
        request_id: impl Into<String>,
        method: &'static str,
        request: &impl prost::Message,
    ) -> Self {
        Self {
            caller: caller.into(),
            request_id: request_id.into(),
            method,
            fingerprint: fingerprint(request),
        }
    }
}

/// SHA-256 of a request's protobuf encoding. Prost encodes fields in field-number order and
/// the contracts' maps are `BTreeMap`s (`libs/contracts/build.rs`), so equal messages give
/// equal fingerprints however they were decoded.
pub fn fingerprint(request: &impl prost::Message) -> Vec<u8> {
    Sha256::digest(request.encode_to_vec()).to_vec()
}

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The request id was used before with another RPC or another request.
    #[error("request_id `{request_id}` was already used with a different request")]
    Reused {
        /// The request id.
        request_id: String,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What an idempotent call's work leaves: the response stored for replays, the events of its
/// change, appended with it, and the change's last write when it left one to make with them.
#[derive(Debug)]
pub struct Completed {
    /// The encoded response, returned now and to every replay.
    pub response: Vec<u8>,
    /// The change's outbox events, in order.
    pub events: Vec<OutboxEvent>,
    /// The change's last write, made in the recording statement.
    pub last_write: Option<LastWrite>,
}

impl Completed {
    /// A response of a change that reports no event.
    pub fn response(response: Vec<u8>) -> Self {
        Self::with_events(response, Vec::new())
    }

    /// A response and the events of its change, in order.
    pub fn with_events(response: Vec<u8>, events: Vec<OutboxEvent>) -> Self {
        Self {
            response,
            events,
            last_write: None,
        }
    }

    /// The same, with the change's last write left to the recording statement.
    pub fn with_last_write(mut self, last_write: Option<LastWrite>) -> Self {
        self.last_write = last_write;
        self
    }
}

/// The bind of a [`LastWrite`]'s parameters, in order.
type BindLastWrite = Box<
    dyn for<'q> FnOnce(
            sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        )
            -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>
        + Send,
>;

/// The first parameter of a [`LastWrite`]'s steps in the recording statement: `$1`–`$6` are
/// the events', `$7`–`$12` the key's.
pub const LAST_WRITE_FIRST_PARAMETER: usize = 13;

/// A change's last write, when nothing it returns is needed (the values it writes were made
/// by the caller): data-modifying `WITH` items of fixed SQL, parameters numbered from
/// [`LAST_WRITE_FIRST_PARAMETER`], and what binds them. [`run`] makes it in the statement that records the key and appends the
/// events, so the change takes a round trip less. Should it fail (a unique index a replay
/// runs into), the call ends as a failing work does: with the stored response of the call
/// that won, or the error.
pub struct LastWrite {
    steps: &'static str,
    bind: BindLastWrite,
}

impl LastWrite {
    /// `steps` (`name AS (...)`, comma-separated, parameters from `$13`) bound by `bind`.
    /// SQL written from `$1` for a statement of its own is numbered for this once, with
    /// `db::shift_parameters`, not on every call.
    pub fn new(
        steps: &'static str,
        bind: impl for<'q> FnOnce(
            sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        )
            -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>
        + Send
        + 'static,
    ) -> Self {
        Self {
            steps,
            bind: Box::new(bind),
        }
    }
}

impl LastWrite {
    /// The steps of `last_write` (none: empty) and what binds their parameters after the
    /// recording statement's own (none: nothing).
    fn split(last_write: Option<Self>) -> (&'static str, BindLastWrite) {
        fn nothing(
            query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        ) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
            query
        }
        match last_write {
            Some(Self { steps, bind }) => (steps, bind),
            None => ("", Box::new(nothing)),
        }
    }
}

impl std::fmt::Debug for LastWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LastWrite")
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

/// Runs `work` once per key, in one transaction that ends by recording the key with the
/// response `work` returns and appending its events, in one statement. A replay of an equal
/// request returns the first call's response; the same key with another request is
/// [`KeyError::Reused`]. When `work` fails and no call with the key succeeded, nothing is
/// recorded, so the caller may retry with the same key.
pub async fn run<E, F>(
    pool: &PgPool,
    key: &RequestKey,
    now: DateTime<Utc>,
    work: F,
) -> Result<Vec<u8>, E>
where
    E: From<KeyError> + From<sqlx::Error>,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Completed, E>>,
{
    let mut tx = pool.begin().await?;
    let completed = match work(&mut tx).await {
        Ok(completed) => completed,
        Err(error) => {
            // Rolled back on drop: a failed rollback (a broken connection) must not hide the
            // error of the work.
            drop(tx);
            return answer_failed(pool, key, error).await;
        }
    };
    let Completed {
        response,
        events,
        last_write,
    } = completed;
    let recorded = record_after(&mut tx, last_write, key, now, &response, &events).await;
    let recorded = match recorded {
        Ok(recorded) => recorded,
        Err(error) => {
            // The change's last write is made here, so this may be a replay running into
            // what its first call wrote: answered as a failed work is.
            drop(tx);
            return answer_failed(pool, key, E::from(error)).await;
        }
    };
    if recorded {
        tx.commit().await?;
        return Ok(response);
    }
    tx.rollback().await?;
    // The key was taken by a call that committed while this one worked.
    match stored(&mut *crate::db::read(pool).await?, key).await? {
        Some(response) => Ok(response),
        None => Err(KeyError::Database(sqlx::Error::RowNotFound).into()),
    }
}

/// [`run`] when the call carries a request id; without one (where the contract makes it
/// optional), `work` in a plain transaction whose events are appended before its commit:
/// nothing is recorded, so nothing can be replayed.
pub async fn run_optional<E, F>(
    pool: &PgPool,
    key: Option<&RequestKey>,
    now: DateTime<Utc>,
    work: F,
) -> Result<Vec<u8>, E>
where
    E: From<KeyError> + From<sqlx::Error>,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Completed, E>>,
{
    if let Some(key) = key {
        return run(pool, key, now, work).await;
    }
    let mut tx = pool.begin().await?;
    let completed = work(&mut tx).await?;
    outbox::append_all(&mut tx, &completed.events).await?;
    tx.commit().await?;
    Ok(completed.response)
}

/// Records `key` with `response` and appends `events`, in one statement, in the caller's
/// transaction. `false` when the key is taken: then nothing may be committed (the caller
/// rolls back and replays [`stored`]). A call holding the key uncommitted makes this wait for
/// its end, so of two calls with one key only one commits.
pub async fn record(
    conn: &mut PgConnection,
    key: &RequestKey,
    now: DateTime<Utc>,
    response: &[u8],
    events: &[OutboxEvent],
) -> Result<bool, sqlx::Error> {
    record_after(conn, None, key, now, response, events).await
}

/// [`record`] for the calls of a group made in one transaction (loyalty's grouped earns): each
/// key with its response, all their `events` and the group's `last_write`, in one statement.
/// Returns how many keys were recorded: fewer than given when a key is taken, and then
/// nothing may be committed (the caller rolls back and runs each call alone, with [`run`]).
pub async fn record_all(
    conn: &mut PgConnection,
    last_write: Option<LastWrite>,
    keys: &[(&RequestKey, &[u8])],
    now: DateTime<Utc>,
    events: &[OutboxEvent],
) -> Result<usize, sqlx::Error> {
    let (steps, bind_last) = LastWrite::split(last_write);
    let callers: Vec<&str> = keys.iter().map(|(k, _)| k.caller.as_str()).collect();
    let request_ids: Vec<&str> = keys.iter().map(|(k, _)| k.request_id.as_str()).collect();
    let methods: Vec<&str> = keys.iter().map(|(k, _)| k.method).collect();
    let fingerprints: Vec<&[u8]> = keys.iter().map(|(k, _)| k.fingerprint.as_slice()).collect();
    let responses: Vec<&[u8]> = keys.iter().map(|(_, r)| *r).collect();
    let written = outbox::append_all_with(
        conn,
        steps,
        events,
        "INSERT INTO idempotency_keys (caller, request_id, method, fingerprint, response, \
         create_time) \
         SELECT k.caller, k.request_id, k.method, k.fingerprint, k.response, $12 \
         FROM unnest($7::text[], $8::text[], $9::text[], $10::bytea[], $11::bytea[]) \
              AS k(caller, request_id, method, fingerprint, response) \
         ON CONFLICT (caller, request_id) DO NOTHING RETURNING 1",
        |query| {
            bind_last(
                query
                    .bind(callers)
                    .bind(request_ids)
                    .bind(methods)
                    .bind(fingerprints)
                    .bind(responses)
                    .bind(now),
            )
        },
    )
    .await?;
    Ok(usize::try_from(written).unwrap_or_default())
}

/// The answer to a call whose work (or last write) failed with `error`: the stored response
/// when a call with the key succeeded meanwhile (this one was its replay), else the error.
async fn answer_failed<E>(pool: &PgPool, key: &RequestKey, error: E) -> Result<Vec<u8>, E>
where
    E: From<KeyError> + From<sqlx::Error>,
{
    match stored(&mut *crate::db::read(pool).await?, key).await {
        Ok(Some(response)) => Ok(response),
        Err(reused @ KeyError::Reused { .. }) => Err(reused.into()),
        Ok(None) | Err(KeyError::Database(_)) => Err(error),
    }
}

/// [`record`] after the change's `last_write`, in the same statement.
async fn record_after(
    conn: &mut PgConnection,
    last_write: Option<LastWrite>,
    key: &RequestKey,
    now: DateTime<Utc>,
    response: &[u8],
    events: &[OutboxEvent],
) -> Result<bool, sqlx::Error> {
    let (steps, bind_last) = LastWrite::split(last_write);
    let written = outbox::append_all_with(
        conn,
        steps,
        events,
        "INSERT INTO idempotency_keys (caller, request_id, method, fingerprint, response, \
         create_time) VALUES ($7, $8, $9, $10, $11, $12) \
         ON CONFLICT (caller, request_id) DO NOTHING RETURNING 1",
        |query| {
            bind_last(
                query
                    .bind(&key.caller)
                    .bind(&key.request_id)
                    .bind(key.method)
                    .bind(&key.fingerprint)
                    .bind(response)
                    .bind(now),
            )
        },
    )
    .await?;
    Ok(written == 1)
}

/// The committed response to `key`, read without waiting: `None` when the key is unused or
/// its first call has not committed yet; [`KeyError::Reused`] when it was used with another
/// RPC or request.
pub async fn stored<'e>(
    executor: impl PgExecutor<'e>,
    key: &RequestKey,
) -> Result<Option<Vec<u8>>, KeyError> {
    let row = sqlx::query(
        "SELECT method, fingerprint, response FROM idempotency_keys \
         WHERE caller = $1 AND request_id = $2",
    )
    .bind(&key.caller)
    .bind(&key.request_id)
    .fetch_optional(executor)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let method: String = row.try_get("method")?;
    let fingerprint: Vec<u8> = row.try_get("fingerprint")?;
    if method != key.method || fingerprint != key.fingerprint {
        return Err(KeyError::Reused {
            request_id: key.request_id.clone(),
        });
    }
    Ok(Some(row.try_get("response")?))
}

/// Deletes the keys recorded before `now - retention`, a bounded batch per statement so a
/// large backlog never holds locks long. Returns how many were deleted.
pub async fn prune(
    pool: &PgPool,
    now: DateTime<Utc>,
    retention: Duration,
) -> Result<u64, sqlx::Error> {
    let cutoff =
        now - chrono::Duration::from_std(retention).unwrap_or_else(|_| chrono::Duration::days(35));
    let mut deleted = 0;
    loop {
        let mut tx = pool.begin().await?;
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY( \
               SELECT ctid FROM idempotency_keys WHERE create_time < $1 LIMIT 10000))",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        deleted += done;
        if done < 10_000 {
            return Ok(deleted);
        }
    }
}

/// Prunes the service's keys every `every` until `stop`: replicas may run it at once (a
/// delete of what another deleted deletes nothing). A failed pass is logged and tried again
/// next time.
pub fn spawn_pruner(
    pool: PgPool,
    clock: std::sync::Arc<dyn Clock>,
    retention: Duration,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match prune(&pool, clock.now(), retention).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "pruned expired idempotency keys"),
                Err(error) => tracing::warn!(%error, "pruning idempotency keys failed"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    })
}
