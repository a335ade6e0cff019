//! The background work of every replica: the recompute worker, the scheduler and the lookup
//! caches' listener, each stopped through the shutdown token.
//!
//! - The **worker** claims queued jobs with `FOR UPDATE SKIP LOCKED` (a running job whose
//!   heartbeat went stale is claimed again: its replica stopped). A segment is recomputed in
//!   one transaction: the rule compiled to SQL selects the new members at T into a temporary
//!   table, set-based `DELETE … RETURNING` / `INSERT … SELECT … RETURNING` apply the
//!   difference, the SegmentExited / SegmentEntered events are written from it by one
//!   `INSERT … SELECT` each, payloads encoded in SQL (`events::append_entered_from`), and the
//!   job's progress is saved in the same transaction (`workflow::recompute`). The segment row
//!   is locked for the transaction, so a concurrent incremental change of the same segment's
//!   count waits for it.
//! - The **scheduler** queues the full recompute (an ALL job) every
//!   `full_recompute_interval` and runs the rollover pass every `rollover_interval`; the
//!   `schedule_runs` row of each, locked with `SKIP LOCKED`, makes one replica do it.
//! - The **rollover pass** re-applies the time-dependent rule segments (reason SCHEDULE),
//!   after re-staging lifecycles (the segments on `lifecycle.*` too when stages moved).
//! - The **listener** follows the membership notifications into the lookup caches
//!   (`listener`, see `lookups`).

pub mod listener;
pub mod scheduler;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How the background tasks pace themselves.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// How often an idle worker looks for a queued job.
    pub poll: Duration,
    /// How often a running job's heartbeat is written.
    pub heartbeat: Duration,
    /// A running job whose heartbeat is older than this is resumed by another replica.
    pub stale_after: Duration,
    /// How often the scheduler checks whether a scheduled run is due.
    pub scheduler_tick: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            heartbeat: Duration::from_secs(5),
            stale_after: Duration::from_secs(60),
            scheduler_tick: Duration::from_secs(10),
        }
    }
}

/// Starts the worker and the scheduler; both stop with `shutdown`.
pub fn start(state: Arc<AppState>, options: WorkerOptions, shutdown: CancellationToken) {
    custops_common::telemetry::spawn(worker::run(
        state.clone(),
        options.clone(),
        shutdown.clone(),
    ));
    custops_common::telemetry::spawn(scheduler::run(state, options, shutdown));
}
