//! The scheduled jobs: point expiry, point release and tier review. Safe on several replicas
//! at once: each batch locks the members it works on with `FOR UPDATE SKIP LOCKED`, so two
//! runs never process the same member, and each member's work is idempotent (a lot expires
//! once; a lot is released once; a review moves the member's next review time on).

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::StoreResult;
use super::ledger::{expire_due, release_due};
use super::members::{self, Locked, next_review, window_qualifying};
use crate::domain::event::Event;
use crate::domain::member::{MemberRef, PendingDowngrade, TierChange};
use crate::domain::program::{DowngradeMode, Threshold};

/// Appends events inside the job's transaction (`events::sink`, the outbox writer).
pub type EventSink =
    for<'c> fn(&'c mut PgConnection, &'c [Event]) -> BoxFuture<'c, Result<(), sqlx::Error>>;

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
pub async fn run_expiry(
    pool: &PgPool,
    program_id: Option<Uuid>,
    max_members: i64,
    now: DateTime<Utc>,
    sink: EventSink,
) -> StoreResult<JobReport> {
    let mut report = JobReport::default();
    loop {
        let limit = remaining(max_members, report.members);
        if limit <= 0 {
            report.more_due = due_expiry(pool, program_id, now).await?;
            return Ok(report);
        }
        let mut tx = pool.begin().await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT b.member_id FROM balances b JOIN members m USING (member_id) \
             WHERE ($1::uuid IS NULL OR m.program_id = $1) AND EXISTS ( \
               SELECT 1 FROM point_lots l WHERE l.member_id = b.member_id \
                 AND l.remaining_points > 0 AND l.expire_time <= $2) \
             ORDER BY b.member_id LIMIT $3 FOR UPDATE OF b SKIP LOCKED",
        )
        .bind(program_id)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
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
                sink(
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

async fn due_expiry(
    pool: &PgPool,
    program_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM point_lots l JOIN members m USING (member_id) \
         WHERE ($1::uuid IS NULL OR m.program_id = $1) AND l.remaining_points > 0 \
           AND l.expire_time <= $2)",
    )
    .bind(program_id)
    .bind(now)
    .fetch_one(pool)
    .await?)
}

/// Releases every pending lot whose release time has passed (of `program_id`, or all
/// programs), at most `max_members` members (0 = all): one RELEASE entry and one
/// `PointsReleased` event per member. A member counts as processed only when something was
/// released, so overlapping runs add up to exactly the members that had points due.
pub async fn run_release(
    pool: &PgPool,
    program_id: Option<Uuid>,
    max_members: i64,
    now: DateTime<Utc>,
    sink: EventSink,
) -> StoreResult<JobReport> {
    let due_query = "SELECT b.member_id FROM balances b JOIN members m USING (member_id) \
         WHERE ($1::uuid IS NULL OR m.program_id = $1) AND EXISTS ( \
           SELECT 1 FROM point_lots l WHERE l.member_id = b.member_id \
             AND l.pending AND l.remaining_points > 0 AND l.release_time <= $2) \
         ORDER BY b.member_id LIMIT $3 FOR UPDATE OF b SKIP LOCKED";
    let mut report = JobReport::default();
    // Counts members locked, so `max_members` bounds the work even when another run released
    // some of them first.
    let mut attempted = 0_i64;
    loop {
        let limit = remaining(max_members, attempted);
        let mut tx = pool.begin().await?;
        if limit <= 0 {
            let left: Vec<Uuid> = sqlx::query_scalar(due_query)
                .bind(program_id)
                .bind(now)
                .bind(1_i64)
                .fetch_all(&mut *tx)
                .await?;
            report.more_due = !left.is_empty();
            return Ok(report);
        }
        let ids: Vec<Uuid> = sqlx::query_scalar(due_query)
            .bind(program_id)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
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
                sink(
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
pub async fn run_tier_review(
    pool: &PgPool,
    program_id: Option<Uuid>,
    max_members: i64,
    now: DateTime<Utc>,
    sink: EventSink,
) -> StoreResult<JobReport> {
    let mut report = JobReport::default();
    loop {
        let limit = remaining(max_members, report.members);
        let due_query = "SELECT b.member_id FROM balances b JOIN members m USING (member_id) \
             WHERE ($1::uuid IS NULL OR m.program_id = $1) AND m.status IN (1, 2) \
               AND (m.next_review_time <= $2 OR m.pending_downgrade_time <= $2) \
             ORDER BY b.member_id LIMIT $3 FOR UPDATE OF b SKIP LOCKED";
        if limit <= 0 {
            let mut tx = pool.begin().await?;
            let left: Vec<Uuid> = sqlx::query_scalar(due_query)
                .bind(program_id)
                .bind(now)
                .bind(1_i64)
                .fetch_all(&mut *tx)
                .await?;
            report.more_due = !left.is_empty();
            return Ok(report);
        }
        let mut tx = pool.begin().await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(due_query)
            .bind(program_id)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        if ids.is_empty() {
            return Ok(report);
        }
        for id in ids {
            let mut locked = members::load(&mut tx, &MemberRef::Id(id), true).await?;
            let events = review(&mut tx, &mut locked, now, &mut report).await?;
            sink(&mut tx, &events).await?;
            report.members += 1;
        }
        tx.commit().await?;
    }
}

async fn review(
    conn: &mut PgConnection,
    locked: &mut Locked,
    now: DateTime<Utc>,
    report: &mut JobReport,
) -> StoreResult<Vec<Event>> {
    let mut events = Vec::new();
    // The stored window is as of the member's last entry; entries have left it since.
    members::as_of(conn, locked, now).await?;
    if let Some(change) = members::upgrade_if_qualified(conn, locked, now, None).await? {
        report.upgrades += 1;
        events.push(Event::TierChanged(locked.member.clone(), change));
        return Ok(events);
    }
    let (points, spend) = window_qualifying(conn, locked, now).await?;
    let rules = &locked.program.rules;
    let (qualified_rank, _) = rules.qualified_tier(points, spend);
    let current = locked.member.tier.rank;
    let member_id = locked.member.member_id;
    if qualified_rank >= current {
        if locked.member.tier.pending_downgrade.is_some() {
            report.downgrades_cancelled += 1;
        }
        let next = if current > 0 {
            next_review(conn, &locked.program, now).await?
        } else {
            None
        };
        sqlx::query(
            "UPDATE members SET next_review_time = $2, pending_tier_code = NULL, \
             pending_decide_time = NULL, pending_downgrade_time = NULL WHERE member_id = $1",
        )
        .bind(member_id)
        .bind(next)
        .execute(&mut *conn)
        .await?;
        return Ok(events);
    }
    let pending = match locked.member.tier.pending_downgrade.clone() {
        Some(pending) => pending,
        None => {
            let target_rank = match rules.tier_policy.downgrade_mode {
                DowngradeMode::ToQualifiedTier => qualified_rank,
                DowngradeMode::OneTier => current - 1,
            };
            let target = &rules.tiers[usize::try_from(target_rank).unwrap_or(0)];
            let at = now + chrono::Duration::days(i64::from(rules.tier_policy.grace_period_days));
            sqlx::query(
                "UPDATE members SET pending_tier_code = $2, pending_decide_time = $3, \
                 pending_downgrade_time = $4, next_review_time = NULL WHERE member_id = $1",
            )
            .bind(member_id)
            .bind(&target.code)
            .bind(now)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            let pending = PendingDowngrade {
                code: target.code.clone(),
                display_name: target.display_name.clone(),
                rank: target_rank,
                decide_time: now,
                downgrade_time: at,
            };
            locked.member.tier.pending_downgrade = Some(pending.clone());
            report.downgrades_scheduled += 1;
            pending
        }
    };
    // A grace period of 0 downgrades at the review that decided it.
    if pending.downgrade_time <= now {
        let target_rank = match rules.tier_policy.downgrade_mode {
            DowngradeMode::ToQualifiedTier => qualified_rank,
            DowngradeMode::OneTier => current - 1,
        };
        let target = &rules.tiers[usize::try_from(target_rank).unwrap_or(0)];
        let change = TierChange {
            tier_change_id: Uuid::now_v7(),
            from_code: locked.member.tier.code.clone(),
            from_rank: current,
            to_code: target.code.clone(),
            to_rank: target_rank,
            // On the program's metric, also for a downgrade to the base tier (no threshold).
            qualifying: rules.qualifying_amount(points, spend),
            by_review: true,
            ledger_entry_id: None,
            change_time: now,
        };
        let next = if target_rank > 0 {
            next_review(conn, &locked.program, now).await?
        } else {
            None
        };
        sqlx::query(
            "UPDATE members SET tier_code = $2, tier_achieve_time = $3, next_review_time = $4, \
                 pending_tier_code = NULL, pending_decide_time = NULL, \
                 pending_downgrade_time = NULL WHERE member_id = $1",
        )
        .bind(member_id)
        .bind(&target.code)
        .bind(now)
        .bind(next)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
                "INSERT INTO tier_changes (tier_change_id, member_id, program_id, from_tier_code, \
                 from_rank, to_tier_code, to_rank, direction, cause, qualifying_points, change_time) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 3, 3, $8, $9)",
            )
            .bind(change.tier_change_id)
            .bind(member_id)
            .bind(locked.member.program_id)
            .bind(&change.from_code)
            .bind(change.from_rank)
            .bind(&change.to_code)
            .bind(change.to_rank)
            .bind(match change.qualifying {
                Threshold::Points(amount) | Threshold::SpendMinor(amount) => amount,
            })
            .bind(now)
            .execute(&mut *conn)
            .await?;
        locked.member.tier.code = target.code.clone();
        locked.member.tier.display_name = target.display_name.clone();
        locked.member.tier.rank = target_rank;
        locked.member.tier.achieve_time = now;
        locked.member.tier.next_review_time = next;
        locked.member.tier.pending_downgrade = None;
        report.downgrades_applied += 1;
        events.push(Event::TierChanged(locked.member.clone(), change));
    }
    Ok(events)
}
