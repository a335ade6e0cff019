//! The in-process scheduler every replica runs: the scheduled jobs (point release, point
//! expiry, tier review; `workflow::jobs`, which the `Run*` RPCs run too) at their interval.
//!
//! The scheduler wakes every [`JobSchedule::tick`]; for each job whose
//! [`JobSchedule::interval`] has passed on the service clock it claims the run in
//! `schedule_runs` (`store::schedule`: one replica wins per interval) and runs it in chunks,
//! stopping between chunks when the service shuts down. Overlapping runs would be safe anyway:
//! the jobs lock each member with `SKIP LOCKED` and each member's step is idempotent
//! (`workflow::jobs`); the claim only saves the other replicas the work of finding nothing due.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::StoreResult;
use crate::workflow::Context;
use crate::workflow::jobs::{self, Job};

/// Members per chunk of a scheduled run; the scheduler checks for shutdown between chunks.
const CHUNK_MEMBERS: i64 = 1_000;

/// How the in-process scheduler paces the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSchedule {
    /// How often each replica checks whether a job is due (real time).
    pub tick: Duration,
    /// How often each job runs, across all replicas (service clock).
    pub interval: Duration,
}

impl Default for JobSchedule {
    /// Every 15 minutes: reads already show due expiries and releases as applied, so the jobs
    /// only bring the stored ledger, the events (and so segmentation's view of points) and
    /// tier downgrades up to date; a quarter of an hour keeps that lag small while a run with
    /// nothing due costs three indexed queries.
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(30),
            interval: Duration::from_secs(15 * 60),
        }
    }
}

/// Starts the scheduler; it stops with `shutdown` (at the latest between two chunks of a
/// run: what a chunk did is committed, what is left runs next interval or on the member's
/// next change).
pub fn spawn_scheduler(ctx: Context, schedule: JobSchedule, shutdown: CancellationToken) {
    custops_common::telemetry::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(schedule.tick) => {}
            }
            for job in Job::ALL {
                if let Err(error) = run_if_due(&ctx, job, schedule.interval, &shutdown).await {
                    tracing::warn!(
                        job = job.name(),
                        error = ?error,
                        "scheduled job failed; it runs again next interval"
                    );
                }
            }
        }
    });
}

/// Runs `job` when this replica claims its run for the current interval.
async fn run_if_due(
    ctx: &Context,
    job: Job,
    interval: Duration,
    shutdown: &CancellationToken,
) -> StoreResult<()> {
    let now = ctx.now();
    if shutdown.is_cancelled() || !jobs::claim(ctx, job, now, interval).await? {
        return Ok(());
    }
    let mut members = 0;
    loop {
        let report = job.run(ctx, None, CHUNK_MEMBERS, now).await?;
        members += report.members;
        if !report.more_due || shutdown.is_cancelled() {
            break;
        }
    }
    tracing::info!(job = job.name(), members, as_of = %now, "scheduled job ran");
    Ok(())
}
