//! Rewards and reward redemptions on the wire.

use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::loyalty::v1 as pb;

use super::{customer, opt_timestamp, timestamp};
use crate::domain::reward::{Reward, RewardRedemption, RewardState};

impl From<Reward> for pb::Reward {
    fn from(r: Reward) -> Self {
        let period = (r.available_from.is_some() || r.available_until.is_some()).then(|| {
            common::TimeRange {
                start_time: opt_timestamp(r.available_from),
                end_time: opt_timestamp(r.available_until),
            }
        });
        pb::Reward {
            reward_id: r.reward_id.to_string(),
            program_id: r.program_id.to_string(),
            display_name: r.display_name,
            description: r.description,
            state: match r.state {
                RewardState::Active => pb::RewardState::Active,
                RewardState::Inactive => pb::RewardState::Inactive,
            } as i32,
            points_cost: r.points_cost,
            unlimited_stock: r.unlimited_stock,
            available_stock: r.available_stock,
            redeemed_quantity: r.redeemed_quantity,
            availability_period: period,
            min_tier_code: r.min_tier_code,
            max_quantity_per_member: r.max_quantity_per_member,
            etag: r.etag.to_string(),
            create_time: Some(timestamp(r.create_time)),
            update_time: Some(timestamp(r.update_time)),
        }
    }
}

impl From<RewardRedemption> for pb::RewardRedemption {
    fn from(r: RewardRedemption) -> Self {
        pb::RewardRedemption {
            reward_redemption_id: r.reward_redemption_id.to_string(),
            reward_id: r.reward_id.to_string(),
            reward_display_name: r.reward_display_name,
            member_id: r.member_id.to_string(),
            customer_id: customer(r.customer_id),
            program_id: r.program_id.to_string(),
            quantity: r.quantity,
            points_spent: r.points_spent,
            state: if r.reversed {
                pb::RewardRedemptionState::Reversed
            } else {
                pb::RewardRedemptionState::Completed
            } as i32,
            ledger_entry_id: r.ledger_entry_id.to_string(),
            reversal_ledger_entry_id: r
                .reversal_ledger_entry_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            restocked: r.restocked,
            reason: r.reason,
            reversal_reason: r.reversal_reason,
            external_reference: r.external_reference,
            redeem_time: Some(timestamp(r.redeem_time)),
            reverse_time: opt_timestamp(r.reverse_time),
        }
    }
}
