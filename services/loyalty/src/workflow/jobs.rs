//! The scheduled jobs: point release, point expiry and tier review, as the RPCs
//! (`RunPointRelease`, `RunPointExpiry`, `RunTierReview`) and the in-process scheduler
//! (`crate::jobs`) run them: both go through [`Job::run`], so a job does the same whoever
//! starts it.
//!
//! Safe on several replicas at once: each batch locks the members it works on with
//! `FOR UPDATE SKIP LOCKED` (`store::jobs`), so two runs never process the same member, and
//! each member's work is idempotent (a lot expires once; a lot is released once; a review
//! moves the member's next review time on).

use std::time::Duration;

use chrono::{DateTime, Utc};
use custops_common::idempotency;
use sqlx::PgPool;
use uuid::Uuid;

use super::Context;
use super::ledger::{expire_due, release_due};
use super::tiers::review;
use crate::domain::event::Event;
use crate::domain::member::MemberRef;
use crate::events;
use crate::store::{StoreResult, jobs, members, programs, schedule};

/// The scheduled jobs, in the order a scheduled run takes them: releases before expiries, as
/// a member's own change applies them (a released lot may be expired in the same pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Pending points whose return window has ended become available.
    PointRelease,
    /// Points past their expiry time expire (and idempotency records past their retention go).
    PointExpiry,
    /// Members whose review or pending downgrade is due are reviewed.
    TierReview,
}

impl Job {
    /// Every job, in the order a scheduled run takes them.
    pub const ALL: [Job; 3] = [Job::PointRelease, Job::PointExpiry, Job::TierReview];

    /// The job's row in `schedule_runs`.
    pub fn name(self) -> &'static str {
        match self {
            Job::PointRelease => "point_release",
            Job::PointExpiry => "point_expiry",
            Job::TierReview => "tier_review",
        }
    }

    /// Runs the job for `program` (all programs: `None`) at `now`, at most `max_members`
    /// members (0 = all).
    pub async fn run(
        self,
        ctx: &Context,
        program: Option<Uuid>,
        max_members: i64,
        now: DateTime<Utc>,
    ) -> StoreResult<JobReport> {
        match self {
            Job::PointRelease => point_release(ctx, program, max_members, now).await,
            Job::PointExpiry => point_expiry(ctx, program, max_members, now).await,
            Job::TierReview => tier_review(ctx, program, max_members, now).await,
        }
    }
}

/// A job run on request (`RunPointRelease`, `RunPointExpiry`, `RunTierReview`) at the service
/// clock's now, which it answers with the report: the program, when one is named, must exist.
pub async fn run_now(
    ctx: &Context,
    job: Job,
    program: Option<Uuid>,
    max_members: i64,
) -> StoreResult<(DateTime<Utc>, JobReport)> {
    let now = ctx.now();
    if let Some(id) = program {
        let mut conn = custops_common::db::read(&ctx.pool).await?;
        programs::get(&mut conn, id).await?;
    }
    let report = job.run(ctx, program, max_members, now).await?;
    Ok((now, report))
}

/// Claims the run of `job` at `now` for this replica when it last started at least
/// `interval` ago (`store::schedule`: one replica wins per interval).
pub async fn claim(
    ctx: &Context,
    job: Job,
    now: DateTime<Utc>,
    interval: Duration,
) -> StoreResult<bool> {
    let mut tx = ctx.pool.begin().await?;
    let claimed = schedule::claim(&mut tx, job.name(), now, interval).await?;
    tx.commit().await?;
    Ok(claimed)
}

/// Releases the pending points of `program` (all programs: `None`) whose return window has
/// ended at `now`, at most `max_members` members (0 = all).
async fn point_release(
    ctx: &Context,
    program: Option<Uuid>,
    max_members: i64,
    now: DateTime<Utc>,
) -> StoreResult<JobReport> {
    run_release(&ctx.pool, program, max_members, now).await
}

/// Expires the lots of `program` (all programs: `None`) whose expiry time has passed at
/// `now`, at most `max_members` members (0 = all); then drops idempotency records past their
/// retention (a daily-or-more-often job is where that cleanup belongs).
async fn point_expiry(
    ctx: &Context,
    program: Option<Uuid>,
    max_members: i64,
    now: DateTime<Utc>,
) -> StoreResult<JobReport> {
    let report = run_expiry(&ctx.pool, program, max_members, now).await?;
    idempotency::prune(&ctx.pool, now, idempotency::RETENTION).await?;
    Ok(report)
}

/// Reviews the members of `program` (all programs: `None`) whose review or pending downgrade
/// is due at `now`, at most `max_members` members (0 = all).
async fn tier_review(
    ctx: &Context,
    program: Option<Uuid>,
    max_members: i64,
    now: DateTime<Utc>,
) -> StoreResult<JobReport> {
    run_tier_review(&ctx.pool, program, max_members, now).await
}

/// Members per transaction.
const BATCH: i64 = 100;

/// What a job run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobReport {
    /// Members processed.
    pub members: i64,
    /// Lots expired (expiry) or released (release).
    pub lots: i64,
    /// Points expired (expiry) or released (release).
    pub points: i64,
    /// Downgrades scheduled (review).
    pub downgrades_scheduled: i64,
    /// Downgrades applied (review).
    pub downgrades_applied: i64,
    /// Downgrades cancelled (review).
    pub downgrades_cancelled: i64,
    /// Upgrades (review).
    pub upgrades: i64,
    /// Stopped by `max_members` with work left.
    pub more_due: bool,
}

fn remaining(max: i64, done: i64) -> i64 {
    if max == 0 {
        BATCH
    } else {
        (max - done).min(BATCH)
    }
}

/// Expires every due lot (of `program_id`, or all programs), at most `max_members` members
/// (0 = all).
async fn run_expiry(
    pool: &PgPool,
    program_id: Option<Uuid>,
    max_members: i64,
    now: DateTime<Utc>,
) -> StoreResult<JobReport> {
    let mut report = JobReport::default();
    loop {
        let limit = remaining(max_members, report.members);
        if limit <= 0 {
            report.more_due = jobs::expiry_due(pool, program_id, now).await?;
            return Ok(report);
        }
        let mut tx = pool.begin().await?;
        let ids = jobs::lock_due_for_expiry(&mut tx, program_id, now, limit).await?;
        if ids.is_empty() {
            return Ok(report);
        }
        for id in ids {
            let mut locked = members::load(&mut tx, &MemberRef::Id(id), true).await?;
            if let Some((entry, lots)) = expire_due(&mut tx, &mut locked, now).await? {
                // Totals over many members: saturating, as a report must never fail the run
                // whose work is already done.
                report.lots = report.lots.saturating_add(lots);
                report.points = report.points.saturating_sub(entry.points());
                events::append(
                    &mut tx,
                    &[Event::PointsExpired(locked.member.clone(), entry)],
                )
                .await?;
            }
            report.members += 1;
        }
        tx.commit().await?;
    }
}

/// Releases every pending lot whose release time has passed (of `program_id`, or all
/// programs), at most `max_members` members (0 = all): one RELEASE entry and one
/// `PointsReleased` event per member. A member counts as processed only when something was
/// released, so overlapping runs add up to exactly the members that had points due.
async fn run_release(
    pool: &PgPool,
    program_id: Option<Uuid>,
    max_members: i64,
    now: DateTime<Utc>,
) -> StoreResult<JobReport> {
    let mut report = JobReport::default();
    // Counts members locked, so `max_members` bounds the work even when another run released
    // some of them first.
    let mut attempted = 0_i64;
    loop {
        let limit = remaining(max_members, attempted);
        let mut tx = pool.begin().await?;
        if limit <= 0 {
            let left = jobs::lock_due_for_release(&mut tx, program_id, now, 1).await?;
            report.more_due = !left.is_empty();
            return Ok(report);
        }
        let ids = jobs::lock_due_for_release(&mut tx, program_id, now, limit).await?;
        if ids.is_empty() {
            return Ok(report);
        }
        for id in ids {
            attempted += 1;
            let mut locked = members::load(&mut tx, &MemberRef::Id(id), true).await?;
            if let Some((entry, lots)) = release_due(&mut tx, &mut locked, now).await? {
                report.members += 1;
                report.lots = report.lots.saturating_add(lots);
                report.points = report.points.saturating_add(entry.available_delta);
                events::append(
                    &mut tx,
                    &[Event::PointsReleased(locked.member.clone(), entry)],
                )
                .await?;
            }
        }
        tx.commit().await?;
    }
}

/// Reviews every member whose review or pending downgrade is due.
async fn run_tier_review(
    pool: &PgPool,
    program_id: Option<Uuid>,
    max_members: i64,
    now: DateTime<Utc>,
) -> StoreResult<JobReport> {
    let mut report = JobReport::default();
    loop {
        let limit = remaining(max_members, report.members);
        if limit <= 0 {
            let mut tx = pool.begin().await?;
            let left = jobs::lock_due_for_review(&mut tx, program_id, now, 1).await?;
            report.more_due = !left.is_empty();
            return Ok(report);
        }
        let mut tx = pool.begin().await?;
        let ids = jobs::lock_due_for_review(&mut tx, program_id, now, limit).await?;
        if ids.is_empty() {
            return Ok(report);
        }
        for id in ids {
            let mut locked = members::load(&mut tx, &MemberRef::Id(id), true).await?;
            let events = review(&mut tx, &mut locked, now, &mut report).await?;
            events::append(&mut tx, &events).await?;
            report.members += 1;
        }
        tx.commit().await?;
    }
}
