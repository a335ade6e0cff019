//! ReversePoints (once per request id): an earn taken back under the program's clawback
//! policy, or a redemption's points given back to the lots they were spent from; the points
//! of a reward redemption go back the same way (`workflow::rewards`). Under the member's lock,
//! like every change of a member (`workflow::ledger`).

use chrono::{DateTime, Utc};
use custops_common::idempotency::RequestKey;
use prost::Message;
use sqlx::PgConnection;

use super::Context;
use super::ledger::{Applied, lock_member};
use crate::domain::event::Event;
use crate::domain::ledger::{
    EntryDetails, EntryKind, LedgerEntry, Reversal, ReverseAmount, ReverseCommand, clawback_split,
    pro_rata, refund_points,
};
use crate::domain::member::{MemberRef, MemberStatus};
use crate::domain::{Keyed, Rejection};
use crate::events;
use crate::store::StoreResult;
use crate::store::ledger::{NewEntry, Origin, append, spend, take};
use crate::store::members::Locked;
use crate::store::reversals::{self, LotReturn, Reversed};

/// ReversePoints, once per request id: the reversal at the service clock's now, its events
/// appended and `reply` of its outcome recorded with the key (`Context::once`); a
/// replay answers the first call's reply.
pub async fn reverse_points<R, F>(
    ctx: &Context,
    key: &RequestKey,
    cmd: Keyed<ReverseCommand>,
    reply: F,
) -> StoreResult<R>
where
    R: Message + Default,
    F: FnOnce(Applied) -> R + Send + 'static,
{
    let origin = Origin {
        caller: key.caller.clone(),
        request_id: cmd.request_id,
    };
    ctx.once(
        key,
        move |conn, now| {
            Box::pin(async move {
                let out = reverse(conn, origin, cmd.command, now).await?;
                let events = events::outbox_events(&out.events);
                Ok((out, events).into())
            })
        },
        reply,
    )
    .await
}

/// ReversePoints in the call's transaction.
#[tracing::instrument(skip_all)]
async fn reverse(
    conn: &mut PgConnection,
    origin: Origin,
    cmd: ReverseCommand,
    now: DateTime<Utc>,
) -> StoreResult<Applied> {
    let member_id = reversals::resolve_target(conn, &origin.caller, &cmd.target).await?;
    let mut events = Vec::new();
    // The member's lock comes first, so the "reversed so far" read below is current.
    let mut locked = lock_member(conn, &MemberRef::Id(member_id), now, &mut events).await?;
    if matches!(locked.member.status, MemberStatus::Closed) {
        return Err(Rejection::MemberNotActive { status: "CLOSED" }.into());
    }
    let target = reversals::target_entry(conn, &origin.caller, &cmd.target).await?;
    let prior = reversals::reversed_so_far(conn, target.ledger_entry_id).await?;
    let entry = match (target.kind, &target.details) {
        (EntryKind::Earn, _) => {
            reverse_earn(conn, &mut locked, origin, &cmd, &target, prior, now).await?
        }
        (EntryKind::Redeem, None) => {
            reverse_redeem(conn, &mut locked, origin, &cmd, &target, prior, now).await?
        }
        (kind, _) => {
            return Err(Rejection::NotReversible { kind: kind.name() }.into());
        }
    };
    events.push(Event::PointsReversed(locked.member.clone(), entry.clone()));
    Ok(Applied {
        entry,
        member: locked.member,
        tier_change: None,
        events,
    })
}

/// Reverses (part of) an earn: points taken back as the program's clawback policy says,
/// its own lot first, with the qualifying amounts and spend pro rata.
async fn reverse_earn(
    conn: &mut PgConnection,
    locked: &mut Locked,
    origin: Origin,
    cmd: &ReverseCommand,
    target: &LedgerEntry,
    prior: Reversed,
    now: DateTime<Utc>,
) -> StoreResult<LedgerEntry> {
    let reversible = target.points().saturating_sub(prior.requested);
    let purchase = match &target.details {
        Some(EntryDetails::PurchaseEarn { purchase, .. }) => Some(purchase),
        _ => None,
    };
    let exceeds = |field| Rejection::ReversalExceedsRemaining {
        field,
        reversible_points: reversible,
        refundable_amount_minor: purchase
            .map(|p| p.amount_minor.saturating_sub(prior.refund_minor)),
    };
    let (requested, refund) = match &cmd.amount {
        ReverseAmount::AllRemaining => (reversible, None),
        ReverseAmount::Points(points) => (*points, None),
        ReverseAmount::Refund {
            amount_minor,
            currency,
        } => {
            let Some(purchase) = purchase else {
                return Err(Rejection::InvalidField {
                    field: "refund_amount",
                    description: "refund_amount applies only to purchase earns".into(),
                }
                .into());
            };
            if *currency != locked.program.currency {
                return Err(Rejection::InvalidField {
                    field: "refund_amount.currency",
                    description: format!("the program currency is {}", locked.program.currency),
                }
                .into());
            }
            if *amount_minor > purchase.amount_minor.saturating_sub(prior.refund_minor) {
                return Err(exceeds("refund_amount").into());
            }
            let points = refund_points(
                target.points(),
                purchase.amount_minor,
                prior.refund_minor,
                prior.requested,
                *amount_minor,
            );
            (points, Some(*amount_minor))
        }
    };
    if requested > reversible || (requested <= 0 && refund.is_none()) {
        return Err(exceeds("points").into());
    }
    // The earn's own lot, if it is still the member's (a merge moves lots, an unmerge moves
    // them back).
    let own_lot = reversals::own_lot(conn, target.ledger_entry_id, locked.member.member_id).await?;
    let own_pending = own_lot.is_some_and(|(_, _, pending)| pending);
    let policy = locked.program.rules.clawback;
    let available = locked.member.balances.available;
    let (own, others, negative, waived) = clawback_split(
        policy,
        requested,
        own_lot.map(|(_, r, _)| r).unwrap_or(0),
        own_pending,
        available,
    );
    let last = requested == reversible;
    // Shares of the earn in i128 (`pro_rata`): points × points or minor units × points
    // overflow i64 for the largest earns.
    let qualifying = if last {
        target.qualifying_delta.saturating_sub(prior.qualifying)
    } else {
        pro_rata(target.qualifying_delta, requested, target.points())
    };
    let spend_back = match (refund, purchase) {
        (Some(amount), _) => amount,
        (None, Some(p)) if last => p.amount_minor.saturating_sub(prior.spend_minor),
        (None, Some(p)) => pro_rata(p.amount_minor, requested, target.points()),
        _ => 0,
    };
    // Each part is at most `requested`, itself at most what the earn credited.
    let taken = own.saturating_add(others).saturating_add(negative);
    let reason = if cmd.context.reason.is_empty() {
        match purchase {
            Some(p) => format!("Refund, order {}", p.order_id),
            None => "Points reversed".to_owned(),
        }
    } else {
        cmd.context.reason.clone()
    };
    let mut new = NewEntry::new(EntryKind::Reverse, origin, reason);
    new.reason_code = cmd.context.reason_code.clone();
    new.operator_id = cmd.context.operator_id.clone();
    new.order_id = purchase.map(|p| p.order_id.clone());
    if own_pending {
        new.pending_delta = -own;
        new.available_delta = -(others + negative);
    } else {
        new.available_delta = -taken;
    }
    new.lifetime_earned_delta = -taken;
    new.qualifying_delta = -qualifying.clamp(0, locked.member.balances.qualifying);
    new.spend_delta_minor = -spend_back.clamp(0, locked.member.balances.spend_minor);
    new.reversal = Some(Reversal {
        reversed_entry_id: target.ledger_entry_id,
        reversed_kind: EntryKind::Earn,
        requested_points: requested,
        waived_points: waived,
        expired_points: 0,
        refund_amount_minor: refund,
        clawback: Some(policy),
    });
    let entry = append(conn, locked, new, now).await?;
    if let (Some((lot, _, _)), true) = (own_lot, own > 0) {
        take(conn, entry.ledger_entry_id, &[(lot, own)]).await?;
    }
    if others > 0 {
        spend(
            conn,
            entry.member_id,
            entry.ledger_entry_id,
            others,
            own_lot.map(|(lot, _, _)| lot),
        )
        .await?;
    }
    Ok(entry)
}

/// Reverses (part of) a redemption: points go back to the lots they were spent from.
pub(crate) async fn reverse_redeem(
    conn: &mut PgConnection,
    locked: &mut Locked,
    origin: Origin,
    cmd: &ReverseCommand,
    target: &LedgerEntry,
    prior: Reversed,
    now: DateTime<Utc>,
) -> StoreResult<LedgerEntry> {
    let reversible = target
        .points()
        .saturating_neg()
        .saturating_sub(prior.requested);
    let exceeds = |field| Rejection::ReversalExceedsRemaining {
        field,
        reversible_points: reversible,
        refundable_amount_minor: None,
    };
    let requested = match &cmd.amount {
        ReverseAmount::AllRemaining => reversible,
        ReverseAmount::Points(points) => *points,
        ReverseAmount::Refund { .. } => {
            return Err(Rejection::InvalidField {
                field: "refund_amount",
                description: "refund_amount applies only to purchase earns".into(),
            }
            .into());
        }
    };
    if requested > reversible || requested <= 0 {
        return Err(exceeds("points").into());
    }
    // Points go back to the lots they were spent from, latest-expiring first, less what
    // earlier reversals gave back; points of lots that expired meanwhile count as expired.
    let spent = reversals::spent_lots(conn, target.ledger_entry_id, now).await?;
    let mut left = requested;
    let mut returns = Vec::new();
    let mut expired = 0_i64;
    for lot in &spent {
        let give = lot.returnable.min(left);
        if give <= 0 {
            continue;
        }
        left -= give;
        returns.push(LotReturn {
            spent_lot: lot.point_lot_id,
            holder: lot.holder,
            points: give,
            expired: lot.expired,
        });
        if lot.expired {
            expired += give;
        }
    }
    let returned = requested - left - expired;
    let reason = if cmd.context.reason.is_empty() {
        "Points returned".to_owned()
    } else {
        cmd.context.reason.clone()
    };
    let mut new = NewEntry::new(EntryKind::Reverse, origin, reason);
    new.reason_code = cmd.context.reason_code.clone();
    new.operator_id = cmd.context.operator_id.clone();
    new.available_delta = returned;
    new.lifetime_redeemed_delta = -(requested - left);
    new.lifetime_expired_delta = expired;
    new.reversal = Some(Reversal {
        reversed_entry_id: target.ledger_entry_id,
        reversed_kind: EntryKind::Redeem,
        requested_points: requested,
        waived_points: 0,
        expired_points: expired,
        refund_amount_minor: None,
        clawback: None,
    });
    let entry = append(conn, locked, new, now).await?;
    for back in returns {
        // The balance the entry moved is this member's, so the points must land in one of
        // its lots: a lot spent before a merge (or moved away by an unmerge since) belongs to
        // another member, and points returned there would leave this balance without a lot.
        let restored = if back.holder == locked.member.member_id {
            None
        } else {
            Some(reversals::restored_lot(conn, locked.member.member_id, &back).await?)
        };
        reversals::return_points(conn, entry.ledger_entry_id, &back, restored).await?;
    }
    Ok(entry)
}
