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
//! - sequences have no gaps unless rows are deleted (retention), so `OUT_OF_RANGE` can be
//!   decided exactly;
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
//! The sequencer wakes on `NOTIFY` from [`crate::outbox::append`] and also polls, because a
//! notification is only a hint (it is lost while the listening connection is down). After a
//! batch it notifies the feed channel so `Subscribe` streams in every replica wake up.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Default largest number of rows given a position in one transaction.
pub const DEFAULT_BATCH_SIZE: i64 = 1000;

/// Gives up to `batch_size` committed, unsequenced outbox rows of the pool's schema their feed
/// position, in one transaction, and returns how many it sequenced. Safe to call from several
/// tasks and replicas at once: they take turns on an advisory lock.
pub async fn sequence_batch(pool: &PgPool, batch_size: i64) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Each statement must take a fresh snapshot *after* the lock is held, so that it sees the
    // previous batch's assignments: READ COMMITTED, whatever the database default is.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(\
             hashtextextended('custops.outbox.sequencer.' || current_schema(), 0))",
    )
    .execute(&mut *tx)
    .await?;
    let sequenced = sqlx::query(
        "WITH pending AS ( \
             SELECT id, row_number() OVER (ORDER BY appended_at, id) AS n \
             FROM outbox \
             WHERE sequence IS NULL \
             ORDER BY appended_at, id \
             LIMIT $1 \
         ), top AS ( \
             SELECT COALESCE(MAX(sequence), 0) AS top FROM outbox \
         ) \
         UPDATE outbox \
         SET sequence = top.top + pending.n \
         FROM pending, top \
         WHERE outbox.id = pending.id",
    )
    .bind(batch_size)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if sequenced > 0 {
        // Delivered on commit, to every replica's feed listener.
        sqlx::query("SELECT pg_notify('custops_feed_' || current_schema(), '')")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(sequenced)
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

/// The sequencer's loop: sequence everything pending whenever `wake` is notified or
/// `poll_interval` passes, and call `on_sequenced` after each run that sequenced something.
/// Ends when `stop` is cancelled. Database errors are logged and retried at the next wake-up.
pub(crate) async fn run(
    pool: PgPool,
    wake: Arc<Notify>,
    on_sequenced: impl Fn() + Send,
    poll_interval: Duration,
    batch_size: i64,
    stop: CancellationToken,
) {
    loop {
        match sequence_pending(&pool, batch_size).await {
            Ok(0) => {}
            Ok(sequenced) => {
                tracing::debug!(sequenced, "outbox events sequenced");
                on_sequenced();
            }
            // The service is closing its pool: nothing left to sequence with.
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => tracing::warn!(%error, "sequencing the outbox failed; will retry"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(poll_interval) => {}
        }
    }
}
