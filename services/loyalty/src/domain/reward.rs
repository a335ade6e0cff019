//! The rewards catalog: rewards with a points cost and stock, and their redemptions.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::member::MemberRef;

/// A reward's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewardState {
    /// Redeemable.
    Active,
    /// Withdrawn.
    Inactive,
}

/// A catalog reward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reward {
    /// Id (nil until stored).
    pub reward_id: Uuid,
    /// Program.
    pub program_id: Uuid,
    /// Name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// State.
    pub state: RewardState,
    /// Price per unit.
    pub points_cost: i64,
    /// No stock limit.
    pub unlimited_stock: bool,
    /// Units left.
    pub available_stock: i64,
    /// Units redeemed, net.
    pub redeemed_quantity: i64,
    /// Availability start.
    pub available_from: Option<DateTime<Utc>>,
    /// Availability end.
    pub available_until: Option<DateTime<Utc>>,
    /// Lowest tier allowed.
    pub min_tier_code: String,
    /// Per-member limit, 0 = none.
    pub max_quantity_per_member: i32,
    /// Version.
    pub etag: i64,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Updated.
    pub update_time: DateTime<Utc>,
}

impl Reward {
    /// Whether the reward can be redeemed at `now` (state and period; not stock).
    pub fn is_available(&self, now: DateTime<Utc>) -> bool {
        self.state == RewardState::Active
            && self.available_from.is_none_or(|from| from <= now)
            && self.available_until.is_none_or(|until| now < until)
    }
}

/// A validated RedeemReward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemRewardCommand {
    /// Member.
    pub member: MemberRef,
    /// Reward.
    pub reward_id: Uuid,
    /// Units, 1–100.
    pub quantity: i32,
    /// Reason (empty = default).
    pub reason: String,
    /// Caller's reference.
    pub external_reference: String,
    /// Operator.
    pub operator_id: String,
}

/// A redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardRedemption {
    /// Id.
    pub reward_redemption_id: Uuid,
    /// Reward.
    pub reward_id: Uuid,
    /// Reward name then.
    pub reward_display_name: String,
    /// Member.
    pub member_id: Uuid,
    /// Member's customer.
    pub customer_id: Uuid,
    /// Program.
    pub program_id: Uuid,
    /// Units.
    pub quantity: i32,
    /// Points spent.
    pub points_spent: i64,
    /// Reversed?
    pub reversed: bool,
    /// The REVERSE entry, once reversed.
    pub reversal_ledger_entry_id: Option<Uuid>,
    /// Whether the reversal restocked the units.
    pub restocked: bool,
    /// Reason given at reversal.
    pub reversal_reason: String,
    /// When reversed.
    pub reverse_time: Option<DateTime<Utc>>,
    /// REDEEM entry.
    pub ledger_entry_id: Uuid,
    /// Reason.
    pub reason: String,
    /// Caller's reference.
    pub external_reference: String,
    /// When.
    pub redeem_time: DateTime<Utc>,
}

/// A validated ReverseRewardRedemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReverseRedemptionCommand {
    /// The redemption.
    pub reward_redemption_id: Uuid,
    /// Reason (empty = default).
    pub reason: String,
    /// Leave the stock as it is.
    pub skip_restock: bool,
    /// Operator.
    pub operator_id: String,
}

/// A validated AdjustRewardStock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustStockCommand {
    /// The reward.
    pub reward_id: Uuid,
    /// Signed change.
    pub delta: i64,
}

/// An availability period: optional start (inclusive) and end (exclusive).
pub type Period = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A partial update of a reward: `None` leaves the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewardPatch {
    /// Etag the caller read.
    pub etag: i64,
    /// New name.
    pub display_name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New state.
    pub state: Option<RewardState>,
    /// New price.
    pub points_cost: Option<i64>,
    /// New stock mode.
    pub unlimited_stock: Option<bool>,
    /// New availability period (each bound optional).
    pub availability: Option<Period>,
    /// New minimum tier.
    pub min_tier_code: Option<String>,
    /// New per-member limit.
    pub max_quantity_per_member: Option<i32>,
}

impl RewardPatch {
    /// Applies the patch.
    pub fn apply(self, r: &mut Reward) {
        if let Some(v) = self.display_name {
            r.display_name = v;
        }
        if let Some(v) = self.description {
            r.description = v;
        }
        if let Some(v) = self.state {
            r.state = v;
        }
        if let Some(v) = self.points_cost {
            r.points_cost = v;
        }
        if let Some(v) = self.unlimited_stock {
            r.unlimited_stock = v;
        }
        if let Some((from, until)) = self.availability {
            r.available_from = from;
            r.available_until = until;
        }
        if let Some(v) = self.min_tier_code {
            r.min_tier_code = v;
        }
        if let Some(v) = self.max_quantity_per_member {
            r.max_quantity_per_member = v;
        }
    }
}
