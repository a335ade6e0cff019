//! Gives committed outbox rows their feed position, after commit and one batch at a time, so
//! that the feed's order is the order in which events became visible.
//!
//! # The guarantee
//!
//! Producers insert outbox rows with `sequence` NULL. The sequencer, under a transaction-level
//! advisory lock (one sequencer per schema at a time, however many replicas run one), assigns
//! `max(sequence) + row_number()` over the committed unsequenced rows, ordered by
//! `(appended_at, id)`, in a single UPDATE that it commits before the next batch begins. Rows
//! of an open transaction are invisible to it and stay NULL; rows of a rolled-back transaction
//! never become visible at all. Hence:
//!
//! - every sequence handed out is larger than every sequence committed before it, and one
//!   batch becomes visible atomically, so the set of sequenced rows a reader can see is always
//!   a gap-free prefix `1..=M` of the feed;
//! - a consumer that has seen sequence N can never later find a committed event with a
//!   sequence at or below N: a transaction that commits late simply gets a later sequence;
//! - sequences have no gaps, and retention deletes only a prefix of the feed (never its
//!   newest row, which the next number is counted from: [`crate::retention`]), so whether a
//!   position's next event was pruned (`FEED_POSITION_EXPIRED`) is decided exactly;
//! - the events of one aggregate keep the order of their changes, provided the transactions
//!   that change an aggregate conflict on its row (as they must anyway) and append their event
//!   after that write: the later one appends after the earlier one committed, so it is either
//!   in a later batch or later in the same batch (`appended_at` is the insertion clock; the
//!   transaction start time, `occurred_at`, would not do, see migration 0002).
//!
//! An insert-time sequence (a `bigserial`) would not have this property: a transaction that
//! took sequence 7 and commits after 8 is visible lets a consumer store cursor 8 and skip 7
//! forever.
//!
//! # How it learns of new rows
//!
//! It polls: one index probe of the unsequenced rows (`outbox_unsequenced`, empty when idle),
//! [`BUSY_POLL`] after a pass that found work, doubling up to the feed's
//! `sequencer_idle_poll` (25 ms by default) while nothing comes. Writers do not notify it:
//! Postgres serialises the commits of all transactions that `NOTIFY`, instance-wide, behind
//! one lock held across their commit record's flush, so a `pg_notify` in every writing
//! transaction capped the whole suite's write rate (ARCHITECTURE.md, "Outbox wake-ups").
//! The sequencer alone notifies, once per batch, the feed channel, so `Subscribe` streams in
//! every replica wake up.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Default largest number of rows given a position in one transaction.
pub const DEFAULT_BATCH_SIZE: i64 = 1000;

/// Gives up to `batch_size` committed, unsequenced outbox rows of the pool's schema their feed
/// position, in one transaction, and returns how many it sequenced. Safe to call from several
/// tasks and replicas at once: they take turns on an advisory lock.
pub async fn sequence_batch(pool: &PgPool, batch_size: i64) -> Result<u64, sqlx::Error> {
    // Each statement must take a fresh snapshot *after* the lock is held, so that it sees the
    // previous batch's assignments: READ COMMITTED, whatever the database default is.
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
        .await?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(\
             hashtextextended('custops.outbox.sequencer.' || current_schema(), 0))",
    )
    .execute(&mut *tx)
    .await?;
    // The feed channel is notified in the same statement when anything was numbered:
    // delivered on commit, to every replica's feed listener.
    let sequenced: Option<i64> = sqlx::query_scalar(
        "WITH pending AS ( \
             SELECT id, row_number() OVER (ORDER BY appended_at, id) AS n \
             FROM outbox \
             WHERE sequence IS NULL \
             ORDER BY appended_at, id \
             LIMIT $1 \
         ), top AS ( \
             SELECT COALESCE(MAX(sequence), 0) AS top FROM outbox \
         ), numbered AS ( \
             UPDATE outbox \
             SET sequence = top.top + pending.n \
             FROM pending, top \
             WHERE outbox.id = pending.id \
             RETURNING 1 \
         ) \
         SELECT count(*), pg_notify('custops_feed_' || current_schema(), '') \
         FROM numbered HAVING count(*) > 0",
    )
    .bind(batch_size)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(sequenced.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

/// Whether any committed row of the pool's schema waits for a position: one probe of the
/// partial index `outbox_unsequenced`, which holds only such rows (and, until vacuum, entries
/// of rows already numbered).
pub async fn has_pending(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox WHERE sequence IS NULL)")
        .fetch_one(&mut *crate::db::read(pool).await?)
        .await
}

/// Largest batch [`sequence_pending`] grows to behind a backlog.
const MAX_BATCH_SIZE: i64 = 50_000;

/// Sequences batches until no committed row is left without a position; returns the total.
/// The first batch is `batch_size`; behind a backlog (a full batch) each next one is four
/// times larger, up to 50,000 rows, so a recompute's hundreds of thousands of events are
/// numbered in a few statements, not hundreds.
pub async fn sequence_pending(pool: &PgPool, batch_size: i64) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    let mut size = batch_size;
    loop {
        let sequenced = sequence_batch(pool, size).await?;
        total += sequenced;
        if sequenced < u64::try_from(size).unwrap_or(0) || sequenced == 0 {
            return Ok(total);
        }
        size = (size * 4).min(MAX_BATCH_SIZE.max(batch_size));
    }
}

/// How soon the sequencer looks again after a pass that numbered something: under load
/// commits keep coming, and a pause lets them gather into one batch. Each pass is a
/// transaction with a commit of its own (and the feed's NOTIFY), so a short pause costs the
/// writers it serves: 2 ms gave ~200 passes a second beside 1,500 earns a second, and 10 ms
/// measured about a tenth more earns for ~7 ms more p99 feed delay (ARCHITECTURE.md,
/// "Outbox wake-ups").
pub const BUSY_POLL: Duration = Duration::from_millis(10);

/// The sequencer's loop: look for unsequenced rows, sequence them all, call `on_sequenced`
/// after a pass that numbered something, and number again after [`BUSY_POLL`] (without the
/// probe: under load it would only say yes); each pass that finds nothing doubles the pause, up to `idle_poll`. Ends when `stop` is cancelled. Database
/// errors are logged and retried after `idle_poll`.
pub(crate) async fn run(
    pool: PgPool,
    on_sequenced: impl Fn() + Send,
    idle_poll: Duration,
    batch_size: i64,
    stop: CancellationToken,
) {
    let mut pause = BUSY_POLL.min(idle_poll);
    // After a pass that numbered rows more are likely: skip the probe and number at once.
    let mut busy = false;
    loop {
        let pass = if busy {
            sequence_pending(&pool, batch_size).await
        } else {
            match has_pending(&pool).await {
                Ok(true) => sequence_pending(&pool, batch_size).await,
                other => other.map(|_| 0),
            }
        };
        busy = matches!(pass, Ok(n) if n > 0);
        pause = match pass {
            Ok(0) => (pause * 2).min(idle_poll),
            Ok(sequenced) => {
                tracing::debug!(sequenced, "outbox events sequenced");
                on_sequenced();
                BUSY_POLL.min(idle_poll)
            }
            // The service is closing its pool: nothing left to sequence with.
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                tracing::warn!(%error, "sequencing the outbox failed; will retry");
                idle_poll
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
