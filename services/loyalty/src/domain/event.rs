//! Domain events a mutation produces. The use case (`workflow`) collects them in the
//! transaction that made the change; `events` turns them into `events.proto` messages and
//! appends them to the outbox in that same transaction.

use super::ledger::LedgerEntry;
use super::member::{Member, PendingDowngrade, TierChange};
use super::reward::RewardRedemption;

/// Something that happened to a member, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A customer enrolled.
    MemberEnrolled(Member),
    /// Points earned.
    PointsEarned(Member, LedgerEntry),
    /// Points spent.
    PointsRedeemed(Member, LedgerEntry),
    /// Points corrected.
    PointsAdjusted(Member, LedgerEntry),
    /// An earn or redeem reversed.
    PointsReversed(Member, LedgerEntry),
    /// Lots expired.
    PointsExpired(Member, LedgerEntry),
    /// Pending lots released to the available balance.
    PointsReleased(Member, LedgerEntry),
    /// The tier changed.
    TierChanged(Member, TierChange),
    /// A review scheduled a downgrade (the member carries it as `tier.pending_downgrade`).
    TierDowngradeScheduled(Member),
    /// The member re-qualified before a scheduled downgrade took effect: the member after,
    /// and the downgrade that no longer happens.
    TierDowngradeCancelled(Member, PendingDowngrade),
    /// A member merged into another after a profiles customer merge.
    MembersMerged(Box<MembersMerged>),
    /// A merge undone after a profiles customer unmerge.
    MembersUnmerged(Box<MembersUnmerged>),
    /// The member's status changed (suspended, reactivated, closed).
    MemberStatusChanged {
        /// The member after the change.
        member: Member,
        /// The status before.
        previous: super::member::MemberStatus,
        /// The FORFEIT entry of a closure with points left.
        forfeit: Option<LedgerEntry>,
    },
    /// A reward redeemed.
    RewardRedeemed(Member, RewardRedemption, LedgerEntry),
    /// A reward redemption reversed.
    RewardRedemptionReversed(Member, RewardRedemption, LedgerEntry),
}

/// A member merged into another after a profiles customer merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersMerged {
    /// The survivor, after the merge.
    pub surviving: Member,
    /// The merged-away member, now MERGED.
    pub merged: Member,
    /// The survivor's MERGE_IN entry.
    pub merge_in: LedgerEntry,
    /// The profiles merge id.
    pub merge_id: String,
}

/// A merge undone after a profiles customer unmerge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersUnmerged {
    /// The restored member, ACTIVE again.
    pub restored: Member,
    /// The former survivor, after giving back; `None` when the merge only re-linked.
    pub surviving: Option<Member>,
    /// The restored customer.
    pub restored_customer_id: uuid::Uuid,
    /// The customer that had survived the merge.
    pub surviving_customer_id: uuid::Uuid,
    /// The restored member's UNMERGE_IN entry; `None` when the merge only re-linked.
    pub unmerge_in: Option<LedgerEntry>,
    /// The profiles merge id.
    pub merge_id: String,
}
