//! Member status changes: suspend, reactivate, close (forfeiting what is left). Each is
//! idempotent by nature: asking for the status a member already has changes nothing.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::StoreResult;
use super::ledger::{
    NewEntry, Origin, SYSTEM_CALLER, append, expire_due, release_due, spend_for, take_pending_all,
};
use super::members::{self, Locked};
use crate::domain::Rejection;
use crate::domain::event::Event;
use crate::domain::ledger::{EntryKind, LedgerEntry};
use crate::domain::member::{Member, MemberRef, MemberStatus};

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

fn code(status: MemberStatus) -> i16 {
    match status {
        MemberStatus::Active => 1,
        MemberStatus::Suspended => 2,
        MemberStatus::Closed => 3,
        MemberStatus::Merged => 4,
    }
}

/// Applies `change` to `member` with the member-readable `reason`.
pub async fn change(
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
        sqlx::query(
            "UPDATE members SET tier_code = $2, tier_achieve_time = $3, next_review_time = NULL, \
             pending_tier_code = NULL, pending_decide_time = NULL, pending_downgrade_time = NULL \
             WHERE member_id = $1",
        )
        .bind(locked.member.member_id)
        .bind(&base)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        locked = members::load(conn, &MemberRef::Id(locked.member.member_id), true).await?;
    }
    let status_reason = if target == MemberStatus::Active {
        ""
    } else {
        reason
    };
    sqlx::query("UPDATE members SET status = $2, status_reason = $3 WHERE member_id = $1")
        .bind(locked.member.member_id)
        .bind(code(target))
        .bind(status_reason)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE balances SET update_time = $2 WHERE member_id = $1")
        .bind(locked.member.member_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
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
