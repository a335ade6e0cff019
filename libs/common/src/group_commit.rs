//! Group commit: idempotent calls of one kind that arrive together share one transaction, so
//! a busy service pays one `BEGIN` and one `COMMIT` (and one WAL flush) per group instead of
//! per call. The result of every call is what [`idempotency::run`] would have answered alone.
//!
//! A call waits in a queue; each of a fixed number of runners takes the first waiting call and
//! every other one already waiting (up to a maximum), runs their work one after another in one
//! transaction, each followed by the record of its key with its response and events
//! ([`idempotency::record`]), and commits. Nothing waits on purpose: a group is whatever
//! queued while the runners were busy, so an idle service runs each call alone, at once.
//!
//! - **Order.** Each call names what its work locks first (a loyalty member). A group runs
//!   its calls in that order, so two groups never take two such locks in opposite orders, and
//!   two calls naming the same lock (or the same key) never share a group: the later one runs
//!   alone beside it.
//! - **Failure.** When a call's work fails, or its key turns out taken, the group rolls back;
//!   that call runs alone (as [`idempotency::run`], so its error or stored response is
//!   answered), and the others run again as a group without it: each round drops one call.
//!   When the commit fails, every call runs alone (one that did commit then finds its key).
//!   So work may run more than once before it commits once: it is [`SharedWork`], callable
//!   again, and must not act outside the transaction.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use opentelemetry::context::FutureExt as _;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;

use crate::idempotency::{self, Completed, KeyError, RequestKey};
use crate::telemetry;

/// A call's work: what [`idempotency::run`] runs, callable again when a group it was in
/// rolls back.
pub type SharedWork<E> =
    Arc<dyn for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, Result<Completed, E>> + Send + Sync>;

/// `work` as [`SharedWork`] (so a closure's signature is inferred as the type needs).
pub fn shared_work<E, F>(work: F) -> SharedWork<E>
where
    F: for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, Result<Completed, E>>
        + Send
        + Sync
        + 'static,
{
    Arc::new(work)
}

/// One idempotent call.
pub struct Call<E> {
    /// Its request key.
    pub key: RequestKey,
    /// The time its key is recorded at.
    pub now: DateTime<Utc>,
    /// What its work locks first: a group runs its calls in this order, and calls naming the
    /// same lock never share one.
    pub lock: String,
    /// Its work.
    pub work: SharedWork<E>,
}

/// The group commit of one kind of call: cheap to clone, all clones feeding the same
/// runners. The runners stop once every clone is dropped and the queue is empty.
pub struct GroupCommit<E> {
    queue: mpsc::Sender<Queued<E>>,
    runners: usize,
    max_group: usize,
}

impl<E> std::fmt::Debug for Call<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("key", &self.key)
            .field("now", &self.now)
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl<E> Clone for GroupCommit<E> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            runners: self.runners,
            max_group: self.max_group,
        }
    }
}

impl<E> std::fmt::Debug for GroupCommit<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("runners", &self.runners)
            .field("max_group", &self.max_group)
            .finish()
    }
}

/// A call waiting for its group, with where its answer goes and the caller's span and trace
/// context.
struct Queued<E> {
    call: Call<E>,
    answer: oneshot::Sender<Result<Vec<u8>, E>>,
    span: tracing::Span,
    context: opentelemetry::Context,
}

impl<E> Queued<E> {
    /// `future` run as the caller's: its logs in the caller's span, its outbox events
    /// carrying the caller's `traceparent`.
    fn as_caller<F: Future>(&self, future: F) -> impl Future<Output = F::Output> {
        future
            .instrument(self.span.clone())
            .with_context(self.context.clone())
    }
}

impl<E> GroupCommit<E>
where
    E: From<KeyError> + From<sqlx::Error> + Send + 'static,
{
    /// Starts `runners` runners over `pool` (each holds one of its connections while it runs
    /// a group), each group at most `max_group` calls. Needs a Tokio runtime.
    pub fn start(pool: PgPool, runners: usize, max_group: usize) -> Self {
        let runners = runners.max(1);
        let max_group = max_group.max(1);
        let (queue, waiting) = mpsc::channel(1024);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..runners {
            telemetry::spawn(run_groups(pool.clone(), waiting.clone(), max_group));
        }
        Self {
            queue,
            runners,
            max_group,
        }
    }

    /// How many calls wait for a runner.
    pub fn waiting(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Runs `call` in the next group: its response, or the stored response of its key's
    /// first call, or its error, as [`idempotency::run`] answers.
    pub async fn run(&self, call: Call<E>) -> Result<Vec<u8>, E> {
        let (answer, answered) = oneshot::channel();
        let queued = Queued {
            call,
            answer,
            span: tracing::Span::current(),
            context: opentelemetry::Context::current(),
        };
        self.queue
            .send(queued)
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answered.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

/// A runner: takes the first waiting call and every other one waiting, up to `max_group`,
/// and runs them as a group; until the queue closes.
async fn run_groups<E>(
    pool: PgPool,
    waiting: Arc<Mutex<mpsc::Receiver<Queued<E>>>>,
    max_group: usize,
) where
    E: From<KeyError> + From<sqlx::Error> + Send + 'static,
{
    loop {
        let group = {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            let mut group = vec![first];
            while group.len() < max_group
                && let Ok(next) = waiting.try_recv()
            {
                group.push(next);
            }
            group
        };
        run_group(&pool, group).await;
    }
}

/// Runs `group` (see the module's doc) and answers every call in it.
async fn run_group<E>(pool: &PgPool, group: Vec<Queued<E>>)
where
    E: From<KeyError> + From<sqlx::Error> + Send + 'static,
{
    let mut locks = HashSet::new();
    let mut keys = HashSet::new();
    let mut together = Vec::with_capacity(group.len());
    for queued in group {
        let key = (
            queued.call.key.caller.clone(),
            queued.call.key.request_id.clone(),
        );
        if locks.contains(&queued.call.lock) || keys.contains(&key) {
            telemetry::spawn(run_alone(pool.clone(), queued));
        } else {
            locks.insert(queued.call.lock.clone());
            keys.insert(key);
            together.push(queued);
        }
    }
    together.sort_by(|a, b| a.call.lock.cmp(&b.call.lock));
    while together.len() > 1 {
        match try_together(pool, &together).await {
            Ok(responses) => {
                for (queued, response) in together.into_iter().zip(responses) {
                    // A caller that stopped waiting has its response stored for its retry.
                    let _ = queued.answer.send(Ok(response));
                }
                return;
            }
            Err(Failed::Call(i)) => {
                let failed = together.remove(i);
                telemetry::spawn(run_alone(pool.clone(), failed));
            }
            Err(Failed::Group) => break,
        }
    }
    for queued in together {
        run_alone(pool.clone(), queued).await;
    }
}

/// Why a group did not commit.
enum Failed {
    /// The call at this index failed, or found its key taken.
    Call(usize),
    /// The transaction could not begin or commit.
    Group,
}

/// Runs `calls` in one transaction and commits: their responses, in order.
async fn try_together<E>(pool: &PgPool, calls: &[Queued<E>]) -> Result<Vec<Vec<u8>>, Failed> {
    let mut tx = pool.begin().await.map_err(|_| Failed::Group)?;
    let mut responses = Vec::with_capacity(calls.len());
    for (i, queued) in calls.iter().enumerate() {
        let call = &queued.call;
        // The error itself is answered by the call's run alone, which meets it again.
        let Ok(completed) = queued.as_caller((call.work)(&mut tx)).await else {
            return Err(Failed::Call(i));
        };
        let recorded = queued
            .as_caller(idempotency::record(
                &mut tx,
                &call.key,
                call.now,
                &completed.response,
                &completed.events,
            ))
            .await;
        if !matches!(recorded, Ok(true)) {
            return Err(Failed::Call(i));
        }
        responses.push(completed.response);
    }
    tx.commit().await.map_err(|_| Failed::Group)?;
    Ok(responses)
}

/// Runs one call in a transaction of its own and answers it.
async fn run_alone<E>(pool: PgPool, queued: Queued<E>)
where
    E: From<KeyError> + From<sqlx::Error>,
{
    let work = queued.call.work.clone();
    let call = &queued.call;
    let run = idempotency::run(&pool, &call.key, call.now, move |conn| work(conn));
    let result = queued.as_caller(run).await;
    let _ = queued.answer.send(result);
}
