//! Grouped earns: EarnPoints calls that wait together are made in one transaction of two
//! statements, however many there are. Postgres' work per earn is mostly per statement
//! (executor start, relation and index opens, the commit), not per row, so earns made
//! set-based cost it a fraction each (`scripts/earn-sql-ceiling.py`, ARCHITECTURE "Grouped
//! earns").
//!
//! A runner ([`RUNNERS`]) takes the first waiting call and every other one already waiting,
//! up to [`MAX_GROUP`]; nothing waits on purpose, so an idle service makes each earn at once,
//! in a group of one, and a busy one makes bigger groups. A group:
//!
//! 1. locks every member in one statement, skipping any another change holds (a group never
//!    waits for a member), with each member's due probe, window sums, whether the call's
//!    request key has a record and, for a purchase, the entry of its order and the
//!    customer's birth month (`store::members::lock_group`);
//! 2. decides each earn from its row as an earn alone does (`ledger::earn_in_group`);
//! 3. writes every balances row, entry, lot, key with its reply, and event in one statement
//!    (`store::ledger::EntryWrites`, `idempotency::record_all`), and commits.
//!
//! An earn that needs more than that runs alone, on the path every other change takes
//! (`ledger::earn_alone`), once the group's transaction has ended: a member named by
//! customer, a replay or reused key, a member that is missing, MERGED or locked by another
//! change, due lots to settle, a member changed since the statement's snapshot, a purchase
//! that may earn a birthday bonus, a refusal, a tier that may move; and a second call for a
//! member, key or order already in the group. Should the group's statement or commit fail,
//! every call in it runs alone (one whose key did commit then answers its stored reply). So
//! each call is answered exactly as it would be alone: the replies, entries, events and
//! replays are the same.

use std::collections::HashSet;
use std::sync::Arc;

use custops_common::idempotency::{self, RequestKey};
use opentelemetry::context::FutureExt as _;
use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, Postgres};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use super::Context;
use super::ledger::{self, Applied};
use crate::domain::ledger::{EarnCommand, EarnSource};
use crate::domain::member::MemberRef;
use crate::events;
use crate::store::StoreResult;
use crate::store::ledger::{EntryWrites, Origin};
use crate::store::members::{self, GroupCall};

/// How many groups a replica makes at once, each on a connection of its own. One: a group
/// takes everything that queued while the one before it ran, so its size follows the load,
/// and a second runner only halves the groups (doubling Postgres' work per earn) where the
/// cores are what limits. `custops bench --only loyalty.earn`, 2026-12-06 20:04–20:07 UTC,
/// alternated: one runner 0.83× and 0.82× pgbench, two 0.73× and 0.75×.
const RUNNERS: usize = 1;

/// The most earns one group makes: past it the statements' savings flatten
/// (`scripts/earn-sql-ceiling.py`: 1.19×, 1.76×, 2.49× pgbench for 2, 4, 8 per statement)
/// while every earn in a group waits for all of it. At 16 callers 8, 16 and 32 measured the
/// same (0.81–0.82×).
pub(crate) const MAX_GROUP: usize = 16;

/// A group's `BEGIN`, in the same round trip as the setting that keeps its statements on
/// their generic plans. Bound with the arrays' values, Postgres would plan them afresh on
/// every run (a custom plan costs less for a group of four than the generic plan's guess of
/// ten rows, so it never switches), and the write of 36 arrays takes longer to plan than to
/// run; the generic plans are the ones wanted (every join by primary key).
const BEGIN_GROUP: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan";

/// The encoding of a call's reply to its outcome; called again when the call leaves its
/// group after its reply was made.
pub(crate) type EncodeReply = Arc<dyn Fn(Applied) -> Vec<u8> + Send + Sync>;

/// One EarnPoints call for a group.
pub(crate) struct EarnCall {
    /// Its request key.
    pub(crate) key: RequestKey,
    /// The member it names by id ([`grouped_member`]).
    pub(crate) member_id: Uuid,
    /// Who made it, for its entry.
    pub(crate) origin: Origin,
    /// The earn.
    pub(crate) cmd: EarnCommand,
    /// Its reply's encoding.
    pub(crate) encode: EncodeReply,
}

/// The member of `cmd` when a group can make it: one named by id (one named by customer is
/// resolved first, merges followed: it runs alone).
pub(crate) fn grouped_member(cmd: &EarnCommand) -> Option<Uuid> {
    match cmd.member {
        MemberRef::Id(id) => Some(id),
        MemberRef::Customer { .. } => None,
    }
}

/// The order a purchase earns for.
fn order_id(cmd: &EarnCommand) -> Option<&str> {
    match &cmd.source {
        EarnSource::Purchase(purchase) => Some(purchase.order_id.as_str()),
        EarnSource::Grant { .. } => None,
    }
}

/// A call waiting for its group, with where its answer goes and the caller's span and trace.
struct Waiting {
    call: EarnCall,
    answer: oneshot::Sender<StoreResult<Vec<u8>>>,
    span: tracing::Span,
    context: opentelemetry::Context,
    traceparent: String,
}

/// The queue of earns waiting for a group; cheap to clone, every clone feeding the same
/// runners, which stop once every clone is dropped.
#[derive(Clone)]
pub struct EarnGroups {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl std::fmt::Debug for EarnGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarnGroups").finish_non_exhaustive()
    }
}

impl EarnGroups {
    /// Starts the [`RUNNERS`]; `alone` is the context they run in, without groups of its own.
    pub(crate) fn spawn(alone: Context) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..RUNNERS {
            custops_common::telemetry::spawn(run(alone.clone(), waiting.clone()));
        }
        Self { queue }
    }

    /// Makes `call` in the next group a runner takes, and answers its reply's encoding.
    pub(crate) async fn earn(&self, call: EarnCall) -> StoreResult<Vec<u8>> {
        let (answer, answered) = oneshot::channel();
        let waiting = Waiting {
            call,
            answer,
            span: tracing::Span::current(),
            context: opentelemetry::Context::current(),
            traceparent: custops_common::trace_context::current_traceparent(),
        };
        self.queue.send(waiting).map_err(|_| runners_gone())?;
        answered.await.map_err(|_| runners_gone())?
    }
}

/// The runners stopped (the service is shutting down, its pool closing) with calls left.
fn runners_gone() -> crate::store::StoreError {
    sqlx::Error::PoolClosed.into()
}

/// A runner: takes what waits, makes it a group, answers it; until the queue closes. It keeps
/// its connection from group to group (given back to the pool, a connection costs a ping
/// each time), and takes another from the pool after one fails.
async fn run(ctx: Context, waiting: Arc<Mutex<mpsc::UnboundedReceiver<Waiting>>>) {
    let mut conn = None;
    loop {
        let taken = {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            let mut taken = vec![first];
            while taken.len() < MAX_GROUP {
                match waiting.try_recv() {
                    Ok(next) => taken.push(next),
                    Err(_) => break,
                }
            }
            taken
        };
        run_group(&ctx, &mut conn, taken).await;
    }
}

/// Makes `taken` as a group on the runner's `conn`, answers the calls made, and runs the rest
/// alone.
async fn run_group(
    ctx: &Context,
    conn: &mut Option<PoolConnection<Postgres>>,
    taken: Vec<Waiting>,
) {
    // A member, key or order already in the group: the call runs alone, after it.
    let mut members = HashSet::new();
    let mut keys = HashSet::new();
    let mut orders = HashSet::new();
    let (group, mut alone): (Vec<Waiting>, Vec<Waiting>) = taken.into_iter().partition(|w| {
        let key = (w.call.key.caller.clone(), w.call.key.request_id.clone());
        let order = order_id(&w.call.cmd).map(str::to_owned);
        // Each set takes the call's value whatever the others say.
        let new_member = members.insert(w.call.member_id);
        let new_key = keys.insert(key);
        let new_order = order.is_none() || orders.insert(order);
        new_member && new_key && new_order
    });
    match make_group(ctx, conn, &group).await {
        Ok(replies) => {
            for (waiting, reply) in group.into_iter().zip(replies) {
                match reply {
                    Some(reply) => {
                        let _ = waiting.answer.send(Ok(reply));
                    }
                    None => alone.push(waiting),
                }
            }
        }
        Err(error) => {
            // The connection may be what failed: the next group takes another.
            *conn = None;
            tracing::debug!(%error, calls = group.len(), "an earn group failed: each runs alone");
            alone.extend(group);
        }
    }
    for waiting in alone {
        tokio::spawn(run_alone(ctx.clone(), waiting));
    }
}

/// Runs a call alone, in its caller's span and trace, and answers it.
async fn run_alone(ctx: Context, waiting: Waiting) {
    let Waiting {
        call,
        answer,
        span,
        context,
        ..
    } = waiting;
    let EarnCall {
        key,
        origin,
        cmd,
        encode,
        ..
    } = call;
    let reply = ledger::earn_alone(&ctx, &key, origin, cmd, move |applied| encode(applied))
        .instrument(span)
        .with_context(context)
        .await;
    let _ = answer.send(reply);
}

/// The group's transaction on `conn` (taken from the pool when there is none): the reply of
/// each call it made, `None` for a call to run alone.
async fn make_group(
    ctx: &Context,
    conn: &mut Option<PoolConnection<Postgres>>,
    group: &[Waiting],
) -> StoreResult<Vec<Option<Vec<u8>>>> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(ctx.pool.acquire().await?),
    };
    let now = ctx.now();
    let mut tx = conn.begin_with(BEGIN_GROUP).await?;
    let calls: Vec<GroupCall<'_>> = group
        .iter()
        .map(|w| GroupCall {
            member_id: w.call.member_id,
            caller: w.call.key.caller.as_str(),
            request_id: w.call.key.request_id.as_str(),
            order_id: order_id(&w.call.cmd),
        })
        .collect();
    let locked = members::lock_group(&mut tx, &calls, now).await?;
    let mut replies: Vec<Option<Vec<u8>>> = vec![None; group.len()];
    let mut writes = EntryWrites::default();
    let mut events = Vec::new();
    for member in locked {
        let call = member.call;
        let Some(waiting) = group.get(call).filter(|_| !member.key_used) else {
            continue;
        };
        let earn = &waiting.call;
        let decided =
            ledger::earn_in_group(&mut tx, member, earn.origin.clone(), earn.cmd.clone(), now)
                .instrument(waiting.span.clone())
                .await;
        let Some((applied, write)) = decided else {
            continue;
        };
        events.extend(
            events::outbox_events(&applied.events)
                .into_iter()
                .map(|event| event.traced(waiting.traceparent.clone())),
        );
        replies[call] = Some((earn.encode)(applied));
        writes.push(write);
    }
    let made: Vec<(&RequestKey, &[u8])> = replies
        .iter()
        .zip(group)
        .filter_map(|(reply, waiting)| Some((&waiting.call.key, reply.as_deref()?)))
        .collect();
    if made.is_empty() {
        tx.rollback().await?;
        return Ok(replies);
    }
    let recorded =
        idempotency::record_all(&mut tx, Some(writes.into_last_write()), &made, now, &events)
            .await?;
    if recorded != made.len() {
        // A key taken by a call that committed since the lock read: every call runs alone.
        tx.rollback().await?;
        return Ok(vec![None; group.len()]);
    }
    tx.commit().await?;
    Ok(replies)
}
