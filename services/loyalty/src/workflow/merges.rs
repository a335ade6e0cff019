//! Customer merges from the profiles feed: in every program where the merged-away customer is
//! a member, its points, lots, qualifying amounts and history join the surviving customer's
//! member (which keeps the higher tier), or, when the survivor is not enrolled, the membership
//! simply changes hands. Each merge id is applied once.
//!
//! A merge records what it did (`member_merges`, and the lots it moved in
//! `member_merge_lots`), so that a profiles `CustomerUnmerged` can undo exactly that: the
//! merged-away member is restored with its own lots that are still unspent, its qualifying
//! amounts and its tier; a re-linked membership goes back to the restored customer. Each
//! unmerge is applied once too.
//!
//! Both run in the profiles feed consumer's transaction, which also moves its cursor, and
//! append their events to the outbox in it.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::ledger::settle_due;
use crate::domain::event::{Event, MembersMerged, MembersUnmerged};
use crate::domain::ledger::{EntryDetails, EntryKind};
use crate::domain::member::{MemberRef, MemberStatus};
use crate::events;
use crate::store::ledger::{NewEntry, Origin, SYSTEM_CALLER, append};
use crate::store::members::{self, Locked};
use crate::store::{StoreResult, merges, points_sum};

/// A CustomerMerged event, as loyalty needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerMerge {
    /// Profiles merge id.
    pub merge_id: String,
    /// The customer merged away.
    pub source_customer_id: Uuid,
    /// The surviving customer.
    pub target_customer_id: Uuid,
}

/// CustomerMerged: applies `merge` in the consumer's transaction and appends its events.
pub async fn customer_merged(
    conn: &mut PgConnection,
    merge: &CustomerMerge,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let produced = apply(conn, merge, now).await?;
    events::append(conn, &produced).await?;
    Ok(())
}

/// CustomerUnmerged: undoes `unmerge` in the consumer's transaction and appends its events.
pub async fn customer_unmerged(
    conn: &mut PgConnection,
    unmerge: &CustomerUnmerge,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let produced = undo(conn, unmerge, now).await?;
    events::append(conn, &produced).await?;
    Ok(())
}

/// Applies `merge` in the caller's transaction and returns the events to publish. A merge id
/// seen before changes nothing.
async fn apply(
    conn: &mut PgConnection,
    merge: &CustomerMerge,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Event>> {
    let first = merges::record_customer_merge(
        conn,
        &merge.merge_id,
        merge.source_customer_id,
        merge.target_customer_id,
        now,
    )
    .await?;
    if !first {
        return Ok(Vec::new());
    }
    let memberships = merges::live_memberships(conn, merge.source_customer_id).await?;
    let mut events = Vec::new();
    for (source_id, program_id) in memberships {
        let target_id =
            members::find_by_customer(conn, program_id, merge.target_customer_id).await?;
        match target_id {
            None => {
                // The survivor is not enrolled: the membership changes hands, history and all.
                merges::relink(conn, source_id, merge.target_customer_id).await?;
                merges::record(conn, &merge.merge_id, source_id, None).await?;
            }
            Some(target_id) => {
                merges::record(conn, &merge.merge_id, source_id, Some(target_id)).await?;
                events.extend(merge_members(conn, source_id, target_id, merge, now).await?);
            }
        }
    }
    Ok(events)
}

async fn merge_members(
    conn: &mut PgConnection,
    source_id: Uuid,
    target_id: Uuid,
    merge: &CustomerMerge,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Event>> {
    // Lock both in id order, as every two-member operation must, so no two wait on each other.
    let (first, second) = if source_id < target_id {
        (source_id, target_id)
    } else {
        (target_id, source_id)
    };
    let a = members::load(conn, &MemberRef::Id(first), true).await?;
    let b = members::load(conn, &MemberRef::Id(second), true).await?;
    let (mut source, mut target): (Locked, Locked) = if a.member.member_id == source_id {
        (a, b)
    } else {
        (b, a)
    };
    let origin = Origin {
        caller: SYSTEM_CALLER.to_owned(),
        request_id: String::new(),
    };
    // The source's qualifying amounts as of now (its window may have moved on since its last
    // entry): what the merge moves and an unmerge gives back.
    members::as_of(conn, &mut source, now).await?;
    let moved = source.member.balances;
    let detail = |other: &Locked| EntryDetails::Merge {
        other_member_id: other.member.member_id,
        other_customer_id: other.member.customer_id,
        merge_id: merge.merge_id.clone(),
    };
    let mut out = NewEntry::new(
        EntryKind::MergeOut,
        origin.clone(),
        "Merged into another membership".to_owned(),
    );
    out.available_delta = moved.available.saturating_neg();
    out.pending_delta = moved.pending.saturating_neg();
    out.qualifying_delta = moved.qualifying.saturating_neg();
    out.spend_delta_minor = moved.spend_minor.saturating_neg();
    out.details = Some(detail(&target));
    let mut into = NewEntry::new(
        EntryKind::MergeIn,
        origin,
        "Points from a merged membership".to_owned(),
    );
    into.available_delta = moved.available;
    into.pending_delta = moved.pending;
    into.qualifying_delta = moved.qualifying;
    into.spend_delta_minor = moved.spend_minor;
    into.lifetime_earned_delta = moved.lifetime_earned;
    into.lifetime_redeemed_delta = moved.lifetime_redeemed;
    into.lifetime_expired_delta = moved.lifetime_expired;
    into.details = Some(detail(&source));
    append(conn, &mut source, out, now).await?;
    let merge_in = append(conn, &mut target, into, now).await?;
    // Lots keep their earn, release and expiry times, so the survivor spends them in the same
    // order; the merge remembers which it moved, for an unmerge.
    merges::move_lots(conn, source_id, target_id, &merge.merge_id).await?;
    // The survivor keeps the higher tier.
    if source.member.tier.rank > target.member.tier.rank {
        merges::take_tier(
            conn,
            target_id,
            &source.member.tier.code,
            now,
            source.member.tier.next_review_time,
        )
        .await?;
        target.member.tier = source.member.tier.clone();
        target.member.tier.achieve_time = now;
    }
    merges::mark_merged(conn, source_id, target_id).await?;
    source.member.status = MemberStatus::Merged;
    source.member.merged_into = Some(target_id);
    Ok(vec![Event::MembersMerged(Box::new(MembersMerged {
        surviving: target.member,
        merged: source.member,
        merge_in,
        merge_id: merge.merge_id.clone(),
    }))])
}

/// A CustomerUnmerged event, as loyalty needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerUnmerge {
    /// The profiles merge id being undone.
    pub merge_id: String,
    /// The restored customer (the merge's source).
    pub source_customer_id: Uuid,
    /// The customer that had survived the merge.
    pub target_customer_id: Uuid,
}

/// Undoes what the merge `unmerge.merge_id` did, in the caller's transaction, and returns the
/// events to publish. An unmerge seen before changes nothing; so does one of a merge loyalty
/// never applied.
async fn undo(
    conn: &mut PgConnection,
    unmerge: &CustomerUnmerge,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Event>> {
    let first = merges::record_customer_unmerge(conn, &unmerge.merge_id, now).await?;
    if !first {
        return Ok(Vec::new());
    }
    let touched = merges::members_of(conn, &unmerge.merge_id).await?;
    let mut events = Vec::new();
    for (source_id, target_id) in touched {
        let undone = match target_id {
            None => relink_back(conn, source_id, unmerge).await?,
            Some(target_id) => unmerge_members(conn, source_id, target_id, unmerge, now).await?,
        };
        events.extend(undone);
    }
    Ok(events)
}

/// A membership the merge only re-linked goes back to the restored customer.
async fn relink_back(
    conn: &mut PgConnection,
    member_id: Uuid,
    unmerge: &CustomerUnmerge,
) -> StoreResult<Vec<Event>> {
    let changed = merges::relink_back(
        conn,
        member_id,
        unmerge.source_customer_id,
        unmerge.target_customer_id,
    )
    .await?;
    if !changed {
        // Erased or re-linked since: nothing of the merge is left to undo.
        return Ok(Vec::new());
    }
    let restored = members::lock_exact(conn, member_id).await?.member;
    Ok(vec![Event::MembersUnmerged(Box::new(MembersUnmerged {
        restored,
        surviving: None,
        restored_customer_id: unmerge.source_customer_id,
        surviving_customer_id: unmerge.target_customer_id,
        unmerge_in: None,
        merge_id: unmerge.merge_id.clone(),
    }))])
}

async fn unmerge_members(
    conn: &mut PgConnection,
    source_id: Uuid,
    target_id: Uuid,
    unmerge: &CustomerUnmerge,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Event>> {
    // Both in id order, as every two-member operation locks them.
    let (first, second) = if source_id < target_id {
        (source_id, target_id)
    } else {
        (target_id, source_id)
    };
    let a = members::lock_exact(conn, first).await?;
    let b = members::lock_exact(conn, second).await?;
    let (mut source, mut target): (Locked, Locked) = if a.member.member_id == source_id {
        (a, b)
    } else {
        (b, a)
    };
    if source.member.status != MemberStatus::Merged || source.member.merged_into != Some(target_id)
    {
        tracing::warn!(%source_id, %target_id, "unmerge: the member is no longer merged; nothing undone");
        return Ok(Vec::new());
    }
    // The survivor's due releases and expiries first: what goes back is what is left now.
    let mut events = settle_due(conn, &mut target, now).await?;
    members::as_of(conn, &mut target, now).await?;
    // The moved lots the survivor still holds points of.
    let lots = merges::moved_lots_held(conn, &unmerge.merge_id, target_id).await?;
    let available = points_sum(lots.iter().filter(|l| !l.2).map(|l| l.1))?;
    let pending = points_sum(lots.iter().filter(|l| l.2).map(|l| l.1))?;
    // The qualifying amounts the merge moved (its MERGE_OUT entry), as far as the survivor
    // still has them.
    let (qualifying, spend) =
        merges::merged_out_qualifying(conn, source_id, &unmerge.merge_id).await?;
    let target_balances = target.member.balances;
    let qualifying = qualifying.clamp(0, target_balances.qualifying);
    let spend = spend.clamp(0, target_balances.spend_minor);
    // The merged member's lifetime counters were added to the survivor's and have not
    // changed since (a MERGED member is never mutated): the survivor gives them back.
    let lifetime = source.member.balances;
    let origin = Origin {
        caller: SYSTEM_CALLER.to_owned(),
        request_id: String::new(),
    };
    let detail = |other: &Locked, customer_id: Uuid| EntryDetails::Merge {
        other_member_id: other.member.member_id,
        other_customer_id: customer_id,
        merge_id: unmerge.merge_id.clone(),
    };
    let mut out = NewEntry::new(
        EntryKind::UnmergeOut,
        origin.clone(),
        "Points returned to an unmerged membership".to_owned(),
    );
    out.available_delta = available.saturating_neg();
    out.pending_delta = pending.saturating_neg();
    out.qualifying_delta = qualifying.saturating_neg();
    out.spend_delta_minor = spend.saturating_neg();
    out.lifetime_earned_delta = lifetime
        .lifetime_earned
        .clamp(0, target_balances.lifetime_earned)
        .saturating_neg();
    out.lifetime_redeemed_delta = lifetime
        .lifetime_redeemed
        .clamp(0, target_balances.lifetime_redeemed)
        .saturating_neg();
    out.lifetime_expired_delta = lifetime
        .lifetime_expired
        .clamp(0, target_balances.lifetime_expired)
        .saturating_neg();
    out.details = Some(detail(&source, unmerge.source_customer_id));
    let mut into = NewEntry::new(
        EntryKind::UnmergeIn,
        origin,
        "Points restored from an unmerged membership".to_owned(),
    );
    into.available_delta = available;
    into.pending_delta = pending;
    into.qualifying_delta = qualifying;
    into.spend_delta_minor = spend;
    into.details = Some(detail(&target, unmerge.target_customer_id));
    append(conn, &mut target, out, now).await?;
    let unmerge_in = append(conn, &mut source, into, now).await?;
    merges::move_lots_back(conn, target_id, source_id, &unmerge.merge_id).await?;
    // ACTIVE again, under its own customer, in the tier it had (a merge never changed it).
    merges::restore(conn, source_id, unmerge.source_customer_id).await?;
    source.member.status = MemberStatus::Active;
    source.member.status_reason = String::new();
    source.member.merged_into = None;
    source.member.customer_id = unmerge.source_customer_id;
    events.push(Event::MembersUnmerged(Box::new(MembersUnmerged {
        restored: source.member,
        surviving: Some(target.member),
        restored_customer_id: unmerge.source_customer_id,
        surviving_customer_id: unmerge.target_customer_id,
        unmerge_in: Some(unmerge_in),
        merge_id: unmerge.merge_id.clone(),
    })));
    Ok(events)
}
