//! Customer merges from the profiles feed: in every program where the merged-away customer is
//! a member, its points, lots, qualifying amounts and history join the surviving customer's
//! member (which keeps the higher tier), or, when the survivor is not enrolled, the membership
//! simply changes hands. Each merge id is applied once.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreResult;
use super::ledger::{NewEntry, Origin, SYSTEM_CALLER, append};
use super::members::{self, Locked};
use crate::domain::event::{Event, MembersMerged};
use crate::domain::ledger::{EntryDetails, EntryKind};
use crate::domain::member::{MemberRef, MemberStatus};

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

/// Applies `merge` in the caller's transaction (the consumer's, which also moves its cursor)
/// and returns the events to publish. A merge id seen before changes nothing.
pub async fn apply(
    conn: &mut PgConnection,
    merge: &CustomerMerge,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Event>> {
    let first = sqlx::query(
        "INSERT INTO customer_merges (merge_id, source_customer_id, target_customer_id, apply_time) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (merge_id) DO NOTHING",
    )
    .bind(&merge.merge_id)
    .bind(merge.source_customer_id)
    .bind(merge.target_customer_id)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if first == 0 {
        return Ok(Vec::new());
    }
    let memberships: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT member_id, program_id FROM members WHERE customer_id = $1 AND status <> 4 \
         ORDER BY program_id",
    )
    .bind(merge.source_customer_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut events = Vec::new();
    for (source_id, program_id) in memberships {
        let target_id: Option<Uuid> = sqlx::query_scalar(
            "SELECT member_id FROM members WHERE program_id = $1 AND customer_id = $2",
        )
        .bind(program_id)
        .bind(merge.target_customer_id)
        .fetch_optional(&mut *conn)
        .await?;
        match target_id {
            None => {
                // The survivor is not enrolled: the membership changes hands, history and all.
                sqlx::query("UPDATE members SET customer_id = $2 WHERE member_id = $1")
                    .bind(source_id)
                    .bind(merge.target_customer_id)
                    .execute(&mut *conn)
                    .await?;
            }
            Some(target_id) => {
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
    out.available_delta = -moved.available;
    out.pending_delta = -moved.pending;
    out.qualifying_delta = -moved.qualifying;
    out.spend_delta_minor = -moved.spend_minor;
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
    // Lots keep their earn and expiry times, so the survivor spends them in the same order.
    sqlx::query(
        "UPDATE point_lots SET member_id = $2 WHERE member_id = $1 AND remaining_points > 0",
    )
    .bind(source_id)
    .bind(target_id)
    .execute(&mut *conn)
    .await?;
    // The survivor keeps the higher tier.
    if source.member.tier.rank > target.member.tier.rank {
        sqlx::query(
            "UPDATE members SET tier_code = $2, tier_achieve_time = $3, next_review_time = $4 \
             WHERE member_id = $1",
        )
        .bind(target_id)
        .bind(&source.member.tier.code)
        .bind(now)
        .bind(source.member.tier.next_review_time)
        .execute(&mut *conn)
        .await?;
        target.member.tier = source.member.tier.clone();
        target.member.tier.achieve_time = now;
    }
    sqlx::query("UPDATE members SET status = 4, merged_into_member_id = $2 WHERE member_id = $1")
        .bind(source_id)
        .bind(target_id)
        .execute(&mut *conn)
        .await?;
    source.member.status = MemberStatus::Merged;
    source.member.merged_into = Some(target_id);
    Ok(vec![Event::MembersMerged(Box::new(MembersMerged {
        surviving: target.member,
        merged: source.member,
        merge_in,
        merge_id: merge.merge_id.clone(),
    }))])
}
