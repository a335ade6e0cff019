//! The scheduled jobs (point release, point expiry, tier review) as the service runs them: on
//! request (`RunPointRelease`, `RunPointExpiry`, `RunTierReview`, for operators) and by the
//! in-process scheduler every replica runs. Both go through the functions here, so a job does
//! the same whoever starts it.
//!
//! The scheduler wakes every [`JobSchedule::tick`]; for each job whose
//! [`JobSchedule::interval`] has passed on the service clock it claims the run in
//! `schedule_runs` (`store::schedule`: one replica wins per interval) and runs it in chunks,
//! stopping between chunks when the service shuts down. Overlapping runs would be safe anyway:
//! the jobs lock each member with `SKIP LOCKED` and each member's step is idempotent
//! (`store::jobs`); the claim only saves the other replicas the work of finding nothing due.

use std::time::Duration;

use chrono::{DateTime, Utc};
use custops_common::idempotency;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::events;
use crate::store::jobs::{self as job_store, JobReport};
use crate::store::{PgStore, StoreResult, schedule};

/// Members per chunk of a scheduled run; the scheduler checks for shutdown between chunks.
const CHUNK_MEMBERS: i64 = 1_000;

/// Releases the pending points of `program` (all programs: `None`) whose return window has
/// ended at `now`, at most `max_members` members (0 = all).
pub(crate) async fn point_release(
    store: &PgStore,
    program: Option<Uuid>,
    max_members: i64,
    now: DateTime<Utc>,
) -> StoreResult<JobReport> {
    job_store::run_release(store.pool(), program, max_members, now, events::sink).await
}

/// Expires the lots of `program` (all programs: `None`) whose expiry time has passed at
/// `now`, at most `max_members` members (0 = all); then drops idempotency records past their
/// retention (a daily-or-more-often job is where that cleanup belongs).
pub(crate) async fn point_expiry(
    store: &PgStore,
    program: Option<Uuid>,
    max_members: i64,
    now: DateTime<Utc>,
) -> StoreResult<JobReport> {
    let report =
        job_store::run_expiry(store.pool(), program, max_members, now, events::sink).await?;
    idempotency::prune(store.pool(), now, idempotency::RETENTION).await?;
    Ok(report)
}

/// Reviews the members of `program` (all programs: `None`) whose review or pending downgrade
/// is due at `now`, at most `max_members` members (0 = all).
pub(crate) async fn tier_review(
    store: &PgStore,
    program: Option<Uuid>,
    max_members: i64,
    now: DateTime<Utc>,
) -> StoreResult<JobReport> {
    job_store::run_tier_review(store.pool(), program, max_members, now, events::sink).await
}

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

/// The scheduled jobs, in the order a run takes them: releases before expiries, as a
/// member's own change applies them (a released lot may be expired in the same pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    PointRelease,
    PointExpiry,
    TierReview,
}

impl Job {
    const ALL: [Job; 3] = [Job::PointRelease, Job::PointExpiry, Job::TierReview];

    /// The job's row in `schedule_runs`.
    fn name(self) -> &'static str {
        match self {
            Job::PointRelease => "point_release",
            Job::PointExpiry => "point_expiry",
            Job::TierReview => "tier_review",
        }
    }

    async fn run(
        self,
        store: &PgStore,
        max_members: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<JobReport> {
        match self {
            Job::PointRelease => point_release(store, None, max_members, now).await,
            Job::PointExpiry => point_expiry(store, None, max_members, now).await,
            Job::TierReview => tier_review(store, None, max_members, now).await,
        }
    }
}

/// Starts the scheduler; it stops with `shutdown` (at the latest between two chunks of a
/// run: what a chunk did is committed, what is left runs next interval or on the member's
/// next change).
pub fn spawn_scheduler(store: PgStore, schedule: JobSchedule, shutdown: CancellationToken) {
    custops_common::telemetry::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(schedule.tick) => {}
            }
            for job in Job::ALL {
                if let Err(error) = run_if_due(&store, job, schedule.interval, &shutdown).await {
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
    store: &PgStore,
    job: Job,
    interval: Duration,
    shutdown: &CancellationToken,
) -> StoreResult<()> {
    let now = store.clock().now();
    if shutdown.is_cancelled() || !schedule::claim(store.pool(), job.name(), now, interval).await? {
        return Ok(());
    }
    let mut members = 0;
    loop {
        let report = job.run(store, CHUNK_MEMBERS, now).await?;
        members += report.members;
        if !report.more_due || shutdown.is_cancelled() {
            break;
        }
    }
    tracing::info!(job = job.name(), members, as_of = %now, "scheduled job ran");
    Ok(())
}
