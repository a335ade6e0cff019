//! Tier changes on the wire: one an earn or a review just made, and one read from the
//! history.

use custops_contracts::custops::loyalty::v1 as pb;

use super::{customer, threshold_pb, timestamp};
use crate::domain::member::{Member, TierChange};
use crate::domain::program::Threshold;

pub(crate) fn tier_change_pb(member: &Member, c: TierChange, currency: &str) -> pb::TierChange {
    pb::TierChange {
        tier_change_id: c.tier_change_id.to_string(),
        member_id: member.member_id.to_string(),
        customer_id: customer(member.customer_id),
        program_id: member.program_id.to_string(),
        from_tier_code: c.from_code,
        from_rank: c.from_rank,
        to_tier_code: c.to_code,
        to_rank: c.to_rank,
        direction: if c.to_rank > c.from_rank {
            pb::TierChangeDirection::Upgrade
        } else {
            pb::TierChangeDirection::Downgrade
        } as i32,
        cause: if c.by_review {
            pb::TierChangeCause::Review
        } else {
            pb::TierChangeCause::QualifyingActivity
        } as i32,
        qualifying_amount: Some(threshold_pb(c.qualifying, currency)),
        ledger_entry_id: c
            .ledger_entry_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        change_time: Some(timestamp(c.change_time)),
        ..Default::default()
    }
}

/// A stored tier change on the wire.
pub(crate) fn tier_change_row_pb(c: crate::store::tiers::TierChangeRow) -> pb::TierChange {
    pb::TierChange {
        tier_change_id: c.tier_change_id.to_string(),
        member_id: c.member_id.to_string(),
        customer_id: customer(c.customer_id),
        program_id: c.program_id.to_string(),
        from_tier_code: c.from_code,
        from_rank: c.from_rank,
        to_tier_code: c.to_code,
        to_rank: c.to_rank,
        direction: i32::from(c.direction),
        cause: i32::from(c.cause),
        qualifying_amount: Some(threshold_pb(
            if c.spend_metric {
                Threshold::SpendMinor(c.qualifying)
            } else {
                Threshold::Points(c.qualifying)
            },
            &c.currency,
        )),
        ledger_entry_id: c
            .ledger_entry_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        change_time: Some(timestamp(c.change_time)),
        ..Default::default()
    }
}
