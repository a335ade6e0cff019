//! Outbox retention: sequenced events are deleted once every registered consumer has
//! acknowledged them and the retention period has passed, oldest first.
//!
//! # What is kept
//!
//! An event is pruned only when all of these hold:
//! - every consumer in `feed_consumers` has acknowledged it (`sequence <= acked_sequence`); with
//!   no consumer registered, retention alone decides;
//! - it, and every event before it, occurred longer than the retention period ago (by the
//!   service's [`Clock`]). Pruning takes a *prefix* of the feed: `occurred_at` is a
//!   transaction's start time, which does not grow with the sequence, and a hole in the middle
//!   of the retained range would let a consumer below it skip events without noticing. So the
//!   retained range is always `oldest_sequence..=latest_sequence`, gap-free, and a position
//!   `p` can follow on exactly when `p + 1 >= oldest_sequence`;
//! - it is not the newest event: the sequencer numbers new rows after `max(sequence)`, so the
//!   newest row must stay for the feed's positions to keep growing (and `GetFeedPosition` to
//!   keep answering the head).
//!
//! Deletes run in bounded batches ([`PRUNE_BATCH`]), each its own statement, so a backlog of
//! millions never holds one long transaction. Several replicas may prune at once: they delete
//! the same prefix, and a row deleted twice is deleted once.
//!
//! A consumer that finds its position pruned (an ad-hoc reader, a consumer registered late, a
//! cursor restored from an old backup) gets FAILED_PRECONDITION `FEED_POSITION_EXPIRED` from
//! `Subscribe` and resyncs (see [`crate::consumer::EventHandler::resync`]).

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;

/// How long events are kept at least, by default: seven days
/// (`CUSTOPS_FEED_RETENTION_HOURS`).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often a feed prunes by default. Retention is measured in hours; a minute's delay is
/// nothing, and the pass is one index probe when there is nothing to delete.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Largest number of rows one delete statement removes.
pub const PRUNE_BATCH: i64 = 5_000;

/// Deletes up to `limit` of the oldest outbox rows that may go (see the module docs), as of
/// `clock`'s now; returns how many it deleted.
pub async fn prune_batch(
    pool: &PgPool,
    clock: &dyn Clock,
    retention: Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let cutoff = clock
        .now()
        .checked_sub_signed(retention)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let mut tx = pool.begin().await?;
    // `head`: the oldest sequenced rows, in feed order (the partial index `outbox_sequence`).
    // The first of them that is still young ends the prefix that may go, as do the newest row
    // and the slowest registered consumer's acknowledgement.
    let deleted = sqlx::query(
        "WITH head AS ( \
             SELECT sequence, occurred_at FROM outbox \
             WHERE sequence IS NOT NULL ORDER BY sequence LIMIT $2 \
         ), bound AS ( \
             SELECT LEAST( \
                 (SELECT MAX(sequence) FROM outbox) - 1, \
                 (SELECT MIN(acked_sequence) FROM feed_consumers), \
                 (SELECT MIN(sequence) - 1 FROM head WHERE occurred_at >= $1) \
             ) AS upto \
         ) \
         DELETE FROM outbox o USING head, bound \
         WHERE o.sequence = head.sequence AND head.sequence <= bound.upto",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(deleted)
}

/// Prunes batch after batch until a batch comes back short; returns the total deleted.
pub async fn prune(
    pool: &PgPool,
    clock: &dyn Clock,
    retention: Duration,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = prune_batch(pool, clock, retention, PRUNE_BATCH).await?;
        total += deleted;
        if deleted < u64::try_from(PRUNE_BATCH).unwrap_or(0) {
            return Ok(total);
        }
    }
}

/// Prunes every `interval` until `stop` is cancelled; failures are logged and retried at the
/// next pass (a late prune only keeps events longer).
pub(crate) async fn run(
    pool: PgPool,
    clock: Arc<dyn Clock>,
    retention: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match prune(&pool, clock.as_ref(), retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "pruned outbox events past retention"),
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => tracing::warn!(%error, "pruning the outbox failed; will retry"),
        }
    }
}
