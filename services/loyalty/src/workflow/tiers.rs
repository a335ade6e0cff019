//! Tiers: the upgrade a qualifying change earns at once, the review that schedules, applies
//! or cancels downgrades (run by the tier review job), when a member is next reviewed, and
//! the reads of tier history and entitlements (ListTierChanges, ListEntitlements,
//! CheckEntitlement).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Context;
use super::jobs::JobReport;
use crate::domain::Rejection;
use crate::domain::benefit::{self, Entitlement, NotEntitled};
use crate::domain::event::Event;
use crate::domain::member::{Member, MemberRef, MemberTier, PendingDowngrade, TierChange};
use crate::domain::program::{DowngradeMode, Program, ReviewSchedule, Threshold};
use crate::store::members::{self, Locked};
use crate::store::tiers::{self, TierChangeFilter, TierChangeRow};
use crate::store::{StoreError, StoreResult, programs};

/// ListTierChanges: a page of tier changes, newest first, after `after`.
pub async fn list(
    ctx: &Context,
    filter: &TierChangeFilter,
    after: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<TierChangeRow>> {
    tiers::list(
        &mut *custops_common::db::read(&ctx.pool).await?,
        filter,
        after,
        limit,
    )
    .await
}

/// A member's entitlements now (ListEntitlements).
#[derive(Debug, Clone)]
pub struct Entitlements {
    /// The member (the survivor, for a merged customer).
    pub member_id: Uuid,
    /// Its tier.
    pub tier_code: String,
    /// The benefits it holds through it.
    pub entitlements: Vec<Entitlement>,
}

/// ListEntitlements: the benefits `member` holds now through its tier.
pub async fn entitlements(ctx: &Context, member: &MemberRef) -> StoreResult<Entitlements> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let locked = members::load(&mut conn, member, false).await?;
    let held = benefit::entitlements(&locked.program.rules, &locked.member);
    Ok(Entitlements {
        member_id: locked.member.member_id,
        tier_code: locked.member.tier.code,
        entitlements: held,
    })
}

/// What CheckEntitlement answers.
#[derive(Debug, Clone)]
pub struct EntitlementCheck {
    /// The lowest tier whose benefits include the benefit.
    pub lowest_eligible_tier_code: String,
    /// The member's tier, and the entitlement it holds or why not; `None` when the customer
    /// is not enrolled.
    pub member: Option<(String, Result<Entitlement, NotEntitled>)>,
}

/// CheckEntitlement: whether `member` holds `benefit_code` now. A customer who is not enrolled
/// is an answer ("not entitled", `tier_code` `None`), not an error; an unknown member id or
/// benefit is NOT_FOUND.
pub async fn check_entitlement(
    ctx: &Context,
    member: MemberRef,
    benefit_code: &str,
) -> StoreResult<EntitlementCheck> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let loaded = match members::load(&mut conn, &member, false).await {
        Ok(locked) => Ok(locked),
        // A customer who is not enrolled is an answer ("not entitled"), not an error.
        Err(StoreError::Rejected(Rejection::NotFound { .. }))
            if matches!(member, MemberRef::Customer { .. }) =>
        {
            Err(member)
        }
        Err(other) => return Err(other),
    };
    let (rules, locked) = match loaded {
        Ok(locked) => (locked.program.rules.clone(), Some(locked)),
        Err(MemberRef::Customer { program_id, .. }) => {
            (programs::get(&mut conn, program_id).await?.rules, None)
        }
        Err(MemberRef::Id(id)) => {
            return Err(Rejection::not_found("member", id).into());
        }
    };
    let Some(lowest) = benefit::lowest_tier_with(&rules, benefit_code) else {
        return Err(Rejection::not_found("benefit", benefit_code).into());
    };
    let member = locked.map(|locked| {
        let held = benefit::check(&rules, &locked.member, benefit_code);
        (locked.member.tier.code, held)
    });
    Ok(EntitlementCheck {
        lowest_eligible_tier_code: lowest,
        member,
    })
}

/// What [`upgrade_if_qualified`] did to the member's tier.
#[derive(Debug)]
pub(crate) enum TierMove {
    /// Nothing.
    Kept,
    /// Upgraded.
    Upgraded(TierChange),
    /// Re-qualified for its tier before a scheduled downgrade took effect: the downgrade
    /// that no longer happens.
    DowngradeCancelled(PendingDowngrade),
}

impl TierMove {
    /// The event the move is told by, for the member after it; `None` when nothing moved.
    pub(crate) fn event(&self, member: &Member) -> Option<Event> {
        match self {
            Self::Kept => None,
            Self::Upgraded(change) => Some(Event::TierChanged(member.clone(), change.clone())),
            Self::DowngradeCancelled(pending) => Some(Event::TierDowngradeCancelled(
                member.clone(),
                pending.clone(),
            )),
        }
    }
}

/// Whether [`upgrade_if_qualified`] could move the locked member's tier, so must read its
/// entries. The balances hold the rolling window as of the member's last entry (the caller's
/// own entry, or a refresh by `as_of`): when even they are short of a higher tier and no
/// downgrade waits to be cancelled, the window sum need not be asked again and nothing moves.
pub(crate) fn may_move(locked: &Locked) -> bool {
    let b = locked.member.balances;
    let (reachable, _) = locked
        .program
        .rules
        .qualified_tier(b.qualifying, b.spend_minor);
    reachable > locked.member.tier.rank || locked.member.tier.pending_downgrade.is_some()
}

/// Upgrades the locked member at once if its balances now meet a higher tier's threshold, or
/// cancels its scheduled downgrade if they meet its own tier's again. `entry` is the ledger
/// entry whose qualifying amount is being applied (the change then has cause
/// QUALIFYING_ACTIVITY and names it); `None` when a review asks (cause REVIEW).
pub(crate) async fn upgrade_if_qualified(
    conn: &mut PgConnection,
    locked: &mut Locked,
    now: DateTime<Utc>,
    entry: Option<Uuid>,
) -> StoreResult<TierMove> {
    if !may_move(locked) {
        return Ok(TierMove::Kept);
    }
    let (points, spend) = members::window_qualifying(conn, locked, now).await?;
    let (rank, tier) = locked.program.rules.qualified_tier(points, spend);
    if rank <= locked.member.tier.rank {
        if rank == locked.member.tier.rank
            && let Some(pending) = locked.member.tier.pending_downgrade.take()
        {
            // Re-qualified before the grace period ended: the downgrade is off.
            let next = next_review(conn, &locked.program, now).await?;
            members::cancel_downgrade(conn, locked.member.member_id, next).await?;
            locked.member.tier.next_review_time = next;
            return Ok(TierMove::DowngradeCancelled(pending));
        }
        return Ok(TierMove::Kept);
    }
    let qualifying = match tier.threshold {
        Some(Threshold::SpendMinor(_)) => Threshold::SpendMinor(spend),
        _ => Threshold::Points(points),
    };
    let change = TierChange {
        tier_change_id: Uuid::now_v7(),
        from_code: locked.member.tier.code.clone(),
        from_rank: locked.member.tier.rank,
        to_code: tier.code.clone(),
        to_rank: rank,
        qualifying,
        by_review: entry.is_none(),
        ledger_entry_id: entry,
        change_time: now,
    };
    let next_review = next_review(conn, &locked.program, now).await?;
    members::set_tier(
        conn,
        locked.member.member_id,
        &change.to_code,
        now,
        next_review,
    )
    .await?;
    let amount = match qualifying {
        Threshold::Points(p) | Threshold::SpendMinor(p) => p,
    };
    tiers::insert_upgrade(conn, &locked.member, &change, amount).await?;
    locked.member.tier = MemberTier {
        code: tier.code.clone(),
        display_name: tier.display_name.clone(),
        rank,
        achieve_time: now,
        next_review_time: next_review,
        pending_downgrade: None,
        next_tier_progress: None,
        retention_progress: None,
    };
    Ok(TierMove::Upgraded(change))
}

/// When a member who reaches (or keeps) a tier at `now` is next reviewed. ANNIVERSARY:
/// `review_period_months` later. CALENDAR: at the next period boundary in the program's time
/// zone (`TierPolicy::next_calendar_review`), whatever the member's own dates; Postgres turns
/// `now` into local time and the boundary back, as for every program-local date, so the
/// service carries no zone database and a boundary across a DST change is still midnight.
pub(crate) async fn next_review(
    conn: &mut PgConnection,
    program: &Program,
    now: DateTime<Utc>,
) -> StoreResult<Option<DateTime<Utc>>> {
    let policy = &program.rules.tier_policy;
    match policy.review_schedule {
        Some(ReviewSchedule::Calendar) => {
            let local = programs::local_time(conn, now, &program.time_zone).await?;
            let Some(boundary) = policy.next_calendar_review(local) else {
                return Ok(None);
            };
            let at = programs::instant_of_local(conn, boundary, &program.time_zone).await?;
            Ok(Some(at))
        }
        Some(ReviewSchedule::Anniversary) | None => {
            Ok(now.checked_add_months(chrono::Months::new(policy.review_period_months.max(1))))
        }
    }
}

/// Reviews the locked member at `now`: an upgrade its window earns, a downgrade scheduled
/// (after the grace period) or applied when its window falls short, a scheduled downgrade
/// cancelled when it qualifies again; counts what it did in `report`.
pub(crate) async fn review(
    conn: &mut PgConnection,
    locked: &mut Locked,
    now: DateTime<Utc>,
    report: &mut JobReport,
) -> StoreResult<Vec<Event>> {
    let mut events = Vec::new();
    // The stored window is as of the member's last entry; entries have left it since.
    members::as_of(conn, locked, now).await?;
    match upgrade_if_qualified(conn, locked, now, None).await? {
        TierMove::Kept => {}
        TierMove::Upgraded(change) => {
            report.upgrades += 1;
            events.push(Event::TierChanged(locked.member.clone(), change));
            return Ok(events);
        }
        moved @ TierMove::DowngradeCancelled(_) => {
            report.downgrades_cancelled += 1;
            events.extend(moved.event(&locked.member));
            return Ok(events);
        }
    }
    let (points, spend) = members::window_qualifying(conn, locked, now).await?;
    let rules = &locked.program.rules;
    let (qualified_rank, _) = rules.qualified_tier(points, spend);
    let current = locked.member.tier.rank;
    let member_id = locked.member.member_id;
    if qualified_rank >= current {
        let next = if current > 0 {
            next_review(conn, &locked.program, now).await?
        } else {
            None
        };
        members::cancel_downgrade(conn, member_id, next).await?;
        locked.member.tier.next_review_time = next;
        if let Some(cancelled) = locked.member.tier.pending_downgrade.take() {
            report.downgrades_cancelled += 1;
            events.push(Event::TierDowngradeCancelled(
                locked.member.clone(),
                cancelled,
            ));
        }
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
            members::schedule_downgrade(conn, member_id, &target.code, now, at).await?;
            let pending = PendingDowngrade {
                code: target.code.clone(),
                display_name: target.display_name.clone(),
                rank: target_rank,
                decide_time: now,
                downgrade_time: at,
            };
            locked.member.tier.pending_downgrade = Some(pending.clone());
            locked.member.tier.next_review_time = None;
            report.downgrades_scheduled += 1;
            events.push(Event::TierDowngradeScheduled(locked.member.clone()));
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
        members::set_tier(conn, member_id, &target.code, now, next).await?;
        tiers::insert_downgrade(conn, &locked.member, &change).await?;
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
