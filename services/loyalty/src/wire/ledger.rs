//! Ledger entries on the wire, with their details (purchase earn and its calculation, reward
//! redemption, merge, reversal).

use custops_contracts::custops::loyalty::v1 as pb;

use super::members::balances_pb;
use super::programs::rounding_pb;
use super::{customer, money, opt_timestamp, timestamp};
use crate::domain::earning::{self, MultiplierSource};
use crate::domain::ledger::{EntryDetails, EntryKind, LedgerEntry};
use crate::domain::program::ClawbackPolicy;

fn kind_pb(k: EntryKind) -> pb::LedgerEntryKind {
    match k {
        EntryKind::Earn => pb::LedgerEntryKind::Earn,
        EntryKind::Redeem => pb::LedgerEntryKind::Redeem,
        EntryKind::Adjust => pb::LedgerEntryKind::Adjust,
        EntryKind::Reverse => pb::LedgerEntryKind::Reverse,
        EntryKind::Expire => pb::LedgerEntryKind::Expire,
        EntryKind::Release => pb::LedgerEntryKind::Release,
        EntryKind::MergeIn => pb::LedgerEntryKind::MergeIn,
        EntryKind::MergeOut => pb::LedgerEntryKind::MergeOut,
        EntryKind::Forfeit => pb::LedgerEntryKind::Forfeit,
        EntryKind::UnmergeIn => pb::LedgerEntryKind::UnmergeIn,
        EntryKind::UnmergeOut => pb::LedgerEntryKind::UnmergeOut,
    }
}

pub(crate) fn calculation_pb(c: earning::Calculation, currency: &str) -> pb::EarnCalculation {
    pb::EarnCalculation {
        base_points: c.base_points,
        multipliers: c
            .multipliers
            .into_iter()
            .map(|m| pb::AppliedMultiplier {
                source: match m.source {
                    MultiplierSource::Category => pb::MultiplierSource::Category,
                    MultiplierSource::Tier => pb::MultiplierSource::Tier,
                    MultiplierSource::Campaign => pb::MultiplierSource::Campaign,
                    MultiplierSource::Birthday => pb::MultiplierSource::Birthday,
                } as i32,
                code: m.code,
                display_name: m.display_name,
                multiplier_percent: i32::try_from(m.multiplier_percent).unwrap_or(i32::MAX),
                applied_amount: Some(money(m.applied_amount_minor, currency)),
            })
            .collect(),
        bonus_multiplier_percent: i32::try_from(c.bonus_multiplier_percent).unwrap_or(i32::MAX),
        total_points: c.total_points,
        qualifying_points: c.qualifying_points,
        rounding_mode: rounding_pb(c.rounding) as i32,
    }
}

impl From<LedgerEntry> for pb::LedgerEntry {
    fn from(e: LedgerEntry) -> Self {
        use pb::ledger_entry::Details;
        let points = e.points();
        let currency = e.currency.clone();
        let details = match (e.details, e.reversal) {
            (_, Some(r)) => Some(Details::Reversal(pb::ReversalDetails {
                reversed_ledger_entry_id: r.reversed_entry_id.to_string(),
                reversed_kind: kind_pb(r.reversed_kind) as i32,
                requested_points: r.requested_points,
                waived_points: r.waived_points,
                expired_points: r.expired_points,
                refund_amount: r.refund_amount_minor.map(|a| money(a, &currency)),
                clawback_policy: match r.clawback {
                    Some(ClawbackPolicy::PendingOnly) => pb::ClawbackPolicy::PendingOnly,
                    Some(ClawbackPolicy::WithinBalance) => pb::ClawbackPolicy::WithinBalance,
                    Some(ClawbackPolicy::AllowNegativeBalance) => {
                        pb::ClawbackPolicy::AllowNegativeBalance
                    }
                    None => pb::ClawbackPolicy::Unspecified,
                } as i32,
            })),
            (
                Some(EntryDetails::PurchaseEarn {
                    purchase,
                    calculation,
                }),
                None,
            ) => Some(Details::PurchaseEarn(pb::PurchaseEarnDetails {
                purchase: Some(pb::Purchase {
                    order_id: purchase.order_id,
                    amount: Some(money(purchase.amount_minor, &purchase.currency)),
                    categories: purchase.categories,
                    channel: purchase.channel,
                    lines: purchase
                        .lines
                        .into_iter()
                        .map(|l| pb::PurchaseLine {
                            amount: Some(money(l.amount_minor, &purchase.currency)),
                            category: l.category,
                        })
                        .collect(),
                    purchase_time: purchase.purchase_time.map(timestamp),
                }),
                calculation: Some(calculation_pb(calculation, &currency)),
            })),
            (
                Some(EntryDetails::RewardRedemption {
                    reward_redemption_id,
                    reward_id,
                    reward_display_name,
                    quantity,
                }),
                None,
            ) => Some(Details::RewardRedemption(pb::RewardRedemptionDetails {
                reward_redemption_id: reward_redemption_id.to_string(),
                reward_id: reward_id.to_string(),
                reward_display_name,
                quantity,
            })),
            (
                Some(EntryDetails::Merge {
                    other_member_id,
                    other_customer_id,
                    merge_id,
                }),
                None,
            ) => Some(Details::Merge(pb::MergeDetails {
                other_member_id: other_member_id.to_string(),
                other_customer_id: customer(other_customer_id),
                merge_id,
            })),
            (None, None) => None,
        };
        pb::LedgerEntry {
            ledger_entry_id: e.ledger_entry_id.to_string(),
            member_id: e.member_id.to_string(),
            customer_id: customer(e.customer_id),
            program_id: e.program_id.to_string(),
            kind: kind_pb(e.kind) as i32,
            points,
            available_points_delta: e.available_delta,
            pending_points_delta: e.pending_delta,
            qualifying_points_delta: e.qualifying_delta,
            qualifying_spend_delta: Some(money(e.spend_delta_minor, &currency)),
            reason: e.reason,
            reason_code: e.reason_code,
            caller: e.caller,
            request_id: e.request_id,
            operator_id: e.operator_id,
            external_reference: e.external_reference,
            create_time: Some(timestamp(e.create_time)),
            release_time: opt_timestamp(e.release_time),
            expire_time: opt_timestamp(e.expire_time),
            balances_after: Some(balances_pb(e.balances_after, &currency)),
            reversible_points: e.reversible_points,
            details,
        }
    }
}
