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
