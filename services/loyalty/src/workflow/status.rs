//! Member status changes: SuspendMember, ReactivateMember, CloseMember (forfeiting what is
//! left). Each is idempotent by nature: asking for the status a member already has changes
//! nothing.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::Context;
use super::ledger::{expire_due, release_due};
use crate::domain::Rejection;
use crate::domain::event::Event;
use crate::domain::ledger::{EntryKind, LedgerEntry};
use crate::domain::member::{Member, MemberRef, MemberStatus};
use crate::events;
use crate::store::StoreResult;
use crate::store::ledger::{NewEntry, Origin, SYSTEM_CALLER, append, spend_for, take_pending_all};
use crate::store::members::{self, Locked};

/// A status change to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// ACTIVE → SUSPENDED.
    Suspend,
    /// SUSPENDED or CLOSED → ACTIVE.
    Reactivate,
    /// → CLOSED, forfeiting the points.
    Close,
}

/// What a status change did.
#[derive(Debug, Clone)]
pub struct Changed {
    /// The member after it.
    pub member: Member,
    /// The FORFEIT entry of a closure.
    pub forfeit: Option<LedgerEntry>,
    /// Events.
    pub events: Vec<Event>,
}

/// Applies `change` to `member` with the member-readable `reason` (SuspendMember,
/// ReactivateMember, CloseMember), appending its events in the same transaction.
pub async fn change_status(
    ctx: &Context,
    member: &MemberRef,
    change: Change,
    reason: &str,
    operator_id: &str,
) -> StoreResult<Changed> {
    let now = ctx.now();
    let mut tx = ctx.pool.begin().await?;
    let changed = self::change(&mut tx, member, change, reason, operator_id, now).await?;
    events::append(&mut tx, &changed.events).await?;
    tx.commit().await?;
    Ok(changed)
}

/// Applies `change` to `member` with the member-readable `reason`, in the caller's
/// transaction; returns the events to publish.
pub(crate) async fn change(
    conn: &mut PgConnection,
    member: &MemberRef,
    change: Change,
    reason: &str,
    operator_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<Changed> {
    let mut locked = members::load(conn, member, true).await?;
    let previous = locked.member.status;
    if locked.member.anonymized && change == Change::Reactivate {
        return Err(Rejection::MemberNotActive { status: "CLOSED" }.into());
    }
    let target = match (change, previous) {
        (_, MemberStatus::Merged) => {
            return Err(Rejection::MemberNotActive {
                status: previous.name(),
            }
            .into());
        }
        (Change::Suspend, MemberStatus::Closed) => {
            return Err(Rejection::MemberNotActive {
                status: previous.name(),
            }
            .into());
        }
        (Change::Suspend, MemberStatus::Active | MemberStatus::Suspended) => {
            MemberStatus::Suspended
        }
        (Change::Reactivate, _) => MemberStatus::Active,
        (Change::Close, _) => MemberStatus::Closed,
    };
    if target == previous {
        return Ok(Changed {
            member: locked.member,
            forfeit: None,
            events: Vec::new(),
        });
    }
    let mut forfeit = None;
    if change == Change::Close {
        forfeit = forfeit_all(conn, &mut locked, reason, operator_id, now).await?;
    }
    if change == Change::Reactivate && previous == MemberStatus::Closed {
        // A closed member restarts from zero points (forfeited at closure) in the base tier.
        let base = locked.program.rules.base_tier_code().to_owned();
        members::restart_in_tier(conn, locked.member.member_id, &base, now).await?;
        locked = members::load(conn, &MemberRef::Id(locked.member.member_id), true).await?;
    }
    let status_reason = if target == MemberStatus::Active {
        ""
    } else {
        reason
    };
    members::set_status(conn, locked.member.member_id, target, status_reason, now).await?;
    locked.member.status = target;
    locked.member.status_reason = status_reason.to_owned();
    locked.member.update_time = now;
    let events = vec![Event::MemberStatusChanged {
        member: locked.member.clone(),
        previous,
        forfeit: forfeit.clone(),
    }];
    Ok(Changed {
        member: locked.member,
        forfeit,
        events,
    })
}

/// Forfeits what the member has left (a closure): one FORFEIT entry, after its due releases
/// and expiries.
async fn forfeit_all(
    conn: &mut PgConnection,
    locked: &mut Locked,
    reason: &str,
    operator_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<LedgerEntry>> {
    // Due releases and expiries first, so the forfeit says what was really left. (Their
    // entries are in the ledger; the closure's event carries the FORFEIT entry.)
    release_due(conn, locked, now).await?;
    expire_due(conn, locked, now).await?;
    let available = locked.member.balances.available.max(0);
    let pending = locked.member.balances.pending;
    if available == 0 && pending == 0 {
        return Ok(None);
    }
    let origin = Origin {
        caller: SYSTEM_CALLER.to_owned(),
        request_id: String::new(),
    };
    let mut new = NewEntry::new(EntryKind::Forfeit, origin, reason.to_owned());
    new.operator_id = operator_id.to_owned();
    new.available_delta = -available;
    new.pending_delta = -pending;
    let entry = append(conn, locked, new, now).await?;
    if available > 0 {
        spend_for(conn, entry.member_id, entry.ledger_entry_id, available).await?;
    }
    if pending > 0 {
        take_pending_all(conn, entry.member_id, entry.ledger_entry_id).await?;
    }
    Ok(Some(entry))
}
