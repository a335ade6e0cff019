//! Members: a customer's enrolment in a program, its status, balances and tier.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::program::Threshold;
use super::rejection::Rejection;

/// Status of a membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    /// Normal.
    Active,
    /// On hold: earns apply, redemptions do not.
    Suspended,
    /// Left the program.
    Closed,
    /// Merged into another member.
    Merged,
}

impl MemberStatus {
    /// The contract's name of the status (ErrorInfo metadata).
    pub fn name(self) -> &'static str {
        match self {
            MemberStatus::Active => "ACTIVE",
            MemberStatus::Suspended => "SUSPENDED",
            MemberStatus::Closed => "CLOSED",
            MemberStatus::Merged => "MERGED",
        }
    }

    /// Whether points may be earned, adjusted or reversed.
    pub fn check_can_earn(self) -> Result<(), Rejection> {
        match self {
            MemberStatus::Active | MemberStatus::Suspended => Ok(()),
            MemberStatus::Closed | MemberStatus::Merged => Err(Rejection::MemberNotActive {
                status: self.name(),
            }),
        }
    }

    /// Whether points may be spent.
    pub fn check_can_spend(self) -> Result<(), Rejection> {
        match self {
            MemberStatus::Active => Ok(()),
            MemberStatus::Suspended | MemberStatus::Closed | MemberStatus::Merged => {
                Err(Rejection::MemberNotActive {
                    status: self.name(),
                })
            }
        }
    }
}

/// How a call names a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberRef {
    /// By id.
    Id(Uuid),
    /// By program and customer.
    Customer {
        /// Program.
        program_id: Uuid,
        /// Profiles customer id.
        customer_id: Uuid,
    },
}

/// A member's balances: the projection of its ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Balances {
    /// Spendable points.
    pub available: i64,
    /// Points in the return window.
    pub pending: i64,
    /// Qualifying points.
    pub qualifying: i64,
    /// Qualifying spend, minor units.
    pub spend_minor: i64,
    /// Points ever earned, net of reversed earns.
    pub lifetime_earned: i64,
    /// Points ever redeemed, net of reversed redemptions.
    pub lifetime_redeemed: i64,
    /// Points ever expired.
    pub lifetime_expired: i64,
}

/// Points expiring soon (FULL view).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expiring {
    /// Within 30 days.
    pub within_30: i64,
    /// Within 60 days.
    pub within_60: i64,
    /// Within 90 days.
    pub within_90: i64,
    /// Earliest expiry and the points then.
    pub next: Option<(DateTime<Utc>, i64)>,
}

/// A member's place on the ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberTier {
    /// Tier code.
    pub code: String,
    /// Display name.
    pub display_name: String,
    /// Rank.
    pub rank: i32,
    /// When reached.
    pub achieve_time: DateTime<Utc>,
    /// When next reviewed; none on the base tier.
    pub next_review_time: Option<DateTime<Utc>>,
    /// A downgrade decided by a review, waiting for its grace period.
    pub pending_downgrade: Option<PendingDowngrade>,
    /// Progress to the next tier up (FULL view; none on the top tier).
    pub next_tier_progress: Option<TierProgress>,
    /// What keeping the current tier needs at the next review (FULL view; none on the base).
    pub retention_progress: Option<TierProgress>,
}

/// How far a member is from a tier's threshold, in the program's qualifying metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierProgress {
    /// The tier.
    pub code: String,
    /// Its name.
    pub display_name: String,
    /// Its rank.
    pub rank: i32,
    /// Its threshold.
    pub threshold: Threshold,
    /// The member's amount inside the window (same metric).
    pub current: i64,
    /// What is missing (0 when met).
    pub remaining: i64,
}

impl TierProgress {
    /// Progress towards `tier` (rank `rank`) from the window amounts.
    pub fn towards(
        tier: &super::program::Tier,
        rank: i32,
        points: i64,
        spend_minor: i64,
    ) -> Option<Self> {
        let threshold = tier.threshold?;
        let (target, current) = match threshold {
            Threshold::Points(p) => (p, points),
            Threshold::SpendMinor(s) => (s, spend_minor),
        };
        Some(Self {
            code: tier.code.clone(),
            display_name: tier.display_name.clone(),
            rank,
            threshold,
            current,
            remaining: target.saturating_sub(current).max(0),
        })
    }
}

/// A downgrade waiting for its grace period to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDowngrade {
    /// Tier the member will drop to.
    pub code: String,
    /// Its display name.
    pub display_name: String,
    /// Its rank.
    pub rank: i32,
    /// When the review decided it.
    pub decide_time: DateTime<Utc>,
    /// When it takes effect.
    pub downgrade_time: DateTime<Utc>,
}

/// A member as read, with balances and tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Id.
    pub member_id: Uuid,
    /// Program.
    pub program_id: Uuid,
    /// Customer.
    pub customer_id: Uuid,
    /// Status.
    pub status: MemberStatus,
    /// Reason for the status.
    pub status_reason: String,
    /// When MERGED: the member it was merged into.
    pub merged_into: Option<Uuid>,
    /// The customer was erased: no customer link (the nil id), CLOSED for good.
    pub anonymized: bool,
    /// Enrolment channel.
    pub enrol_channel: String,
    /// Enrolment time.
    pub enrol_time: DateTime<Utc>,
    /// Last change.
    pub update_time: DateTime<Utc>,
    /// Balances.
    pub balances: Balances,
    /// Program currency (for money balances).
    pub currency: String,
    /// Tier.
    pub tier: MemberTier,
    /// FULL view only.
    pub expiring: Option<Expiring>,
}

/// What applying a member's due releases and due expiries changes, read before either is
/// applied: a release or expiry takes effect at its time, but is written (a RELEASE or EXPIRE
/// entry) only by the member's next change or a scheduled job. Reads add it to the stored
/// balances so that they never show expired points as available or released points as
/// pending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DueSettlement {
    /// Pending points whose release time has passed (they become available).
    pub released: i64,
    /// Available points (released ones included) whose lots' expiry time has passed.
    pub expired_available: i64,
    /// Points of still-pending lots whose expiry time has passed.
    pub expired_pending: i64,
    /// The latest release or expiry time among them; `None` when nothing is due.
    pub latest: Option<DateTime<Utc>>,
}

impl Member {
    /// The member as it stands once `due` is applied: the balances the next RELEASE and EXPIRE
    /// entries will leave, and `update_time` moved to when the last of them took effect.
    pub fn with_due_applied(mut self, due: DueSettlement) -> Self {
        // Reads must always answer: the stored balances and the due lots are bounded
        // (`limits`), so these sums never saturate, and if they ever did a read would still
        // show a number rather than fail.
        let b = &mut self.balances;
        b.available = b
            .available
            .saturating_add(due.released)
            .saturating_sub(due.expired_available);
        b.pending = b
            .pending
            .saturating_sub(due.released)
            .saturating_sub(due.expired_pending);
        b.lifetime_expired = b
            .lifetime_expired
            .saturating_add(due.expired_available)
            .saturating_add(due.expired_pending);
        if let Some(at) = due.latest {
            self.update_time = self.update_time.max(at);
        }
        self
    }
}

/// What profiles says about a customer id an enrolment names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerStanding {
    /// A live customer under this id.
    Live,
    /// The id was merged away; this live customer survived it (the end of the chain).
    MergedInto(Uuid),
    /// Soft-deleted in profiles (restorable there).
    Deleted,
    /// Erased in profiles (final), itself or the customer it was merged into.
    Erased,
    /// Profiles never had the id.
    Unknown,
}

impl CustomerStanding {
    /// The customer an enrolment naming `requested` enrols: the customer itself, or the
    /// survivor of a merge (a merged-away id resolves to its survivor everywhere in loyalty,
    /// so a membership under it would be unreachable); refused when profiles does not know
    /// the id or the customer is deleted or erased.
    pub fn enrols(self, requested: Uuid) -> Result<Uuid, Rejection> {
        match self {
            CustomerStanding::Live => Ok(requested),
            CustomerStanding::MergedInto(survivor) => Ok(survivor),
            CustomerStanding::Deleted => Err(Rejection::CustomerDeleted {
                customer_id: requested,
            }),
            CustomerStanding::Erased => Err(Rejection::CustomerErased),
            CustomerStanding::Unknown => Err(Rejection::CustomerNotFound {
                customer_id: requested,
            }),
        }
    }
}

/// A validated enrolment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolCommand {
    /// Program.
    pub program_id: Uuid,
    /// Customer.
    pub customer_id: Uuid,
    /// Channel slug.
    pub enrol_channel: String,
}

/// A member's move on the tier ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierChange {
    /// Id.
    pub tier_change_id: Uuid,
    /// From.
    pub from_code: String,
    /// From rank.
    pub from_rank: i32,
    /// To.
    pub to_code: String,
    /// To rank.
    pub to_rank: i32,
    /// Qualifying amount that caused it.
    pub qualifying: Threshold,
    /// Whether a review (rather than qualifying activity) caused it.
    pub by_review: bool,
    /// The ledger entry whose qualifying amount caused an upgrade (qualifying activity);
    /// `None` for changes a review made.
    pub ledger_entry_id: Option<Uuid>,
    /// When.
    pub change_time: DateTime<Utc>,
}
