//! Members on the wire: balances, tier and progress, the expiring-points summary; a member's
//! lots and expiring days; the data-subject export.

use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::loyalty::v1 as pb;

use super::tiers::tier_change_row_pb;
use super::{customer, money, opt_timestamp, threshold_pb, timestamp};
use crate::domain::member::{Balances, Member, MemberStatus, PendingDowngrade};
use crate::domain::program::Threshold;

pub(crate) fn balances_pb(b: Balances, currency: &str) -> pb::PointBalances {
    pb::PointBalances {
        available_points: b.available,
        pending_points: b.pending,
        qualifying_points: b.qualifying,
        qualifying_spend: Some(money(b.spend_minor, currency)),
        lifetime_earned_points: b.lifetime_earned,
        lifetime_redeemed_points: b.lifetime_redeemed,
        lifetime_expired_points: b.lifetime_expired,
    }
}

pub(crate) fn status_pb(s: MemberStatus) -> pb::MemberStatus {
    match s {
        MemberStatus::Active => pb::MemberStatus::Active,
        MemberStatus::Suspended => pb::MemberStatus::Suspended,
        MemberStatus::Closed => pb::MemberStatus::Closed,
        MemberStatus::Merged => pb::MemberStatus::Merged,
    }
}

fn progress_pb(p: crate::domain::member::TierProgress, currency: &str) -> pb::TierProgress {
    let amount = |v: i64| match p.threshold {
        Threshold::Points(_) => threshold_pb(Threshold::Points(v), currency),
        Threshold::SpendMinor(_) => threshold_pb(Threshold::SpendMinor(v), currency),
    };
    pb::TierProgress {
        tier_code: p.code,
        display_name: p.display_name,
        rank: p.rank,
        threshold: Some(threshold_pb(p.threshold, currency)),
        current: Some(amount(p.current)),
        remaining: Some(amount(p.remaining)),
    }
}

impl From<Member> for pb::Member {
    fn from(m: Member) -> Self {
        pb::Member {
            member_id: m.member_id.to_string(),
            program_id: m.program_id.to_string(),
            customer_id: customer(m.customer_id),
            status: status_pb(m.status) as i32,
            status_reason: m.status_reason,
            merged_into_member_id: m.merged_into.map(|id| id.to_string()).unwrap_or_default(),
            anonymized: m.anonymized,
            balances: Some(balances_pb(m.balances, &m.currency)),
            tier: Some(pb::MemberTier {
                tier_code: m.tier.code,
                display_name: m.tier.display_name,
                rank: m.tier.rank,
                achieve_time: Some(timestamp(m.tier.achieve_time)),
                next_review_time: opt_timestamp(m.tier.next_review_time),
                pending_downgrade: m.tier.pending_downgrade.map(pending_downgrade_pb),
                next_tier_progress: m
                    .tier
                    .next_tier_progress
                    .map(|p| progress_pb(p, &m.currency)),
                retention_progress: m
                    .tier
                    .retention_progress
                    .map(|p| progress_pb(p, &m.currency)),
            }),
            expiring: m.expiring.map(|e| pb::ExpiringPointsSummary {
                within_30_days_points: e.within_30,
                within_60_days_points: e.within_60,
                within_90_days_points: e.within_90,
                next_expire_time: e.next.map(|(t, _)| timestamp(t)),
                next_expire_points: e.next.map(|(_, p)| p).unwrap_or(0),
            }),
            enrol_channel: m.enrol_channel,
            enrol_time: Some(timestamp(m.enrol_time)),
            update_time: Some(timestamp(m.update_time)),
        }
    }
}

/// A lot on the wire.
pub(crate) fn lot_pb(l: crate::store::lots::Lot) -> pb::PointLot {
    use crate::store::lots::LotState;
    pb::PointLot {
        point_lot_id: l.point_lot_id.to_string(),
        member_id: l.member_id.to_string(),
        ledger_entry_id: l.ledger_entry_id.to_string(),
        state: match l.state {
            LotState::Pending => pb::PointLotState::Pending,
            LotState::Available => pb::PointLotState::Available,
            LotState::Exhausted => pb::PointLotState::Exhausted,
            LotState::Expired => pb::PointLotState::Expired,
        } as i32,
        original_points: l.original_points,
        remaining_points: l.remaining_points,
        expired_points: l.expired_points,
        earn_time: Some(timestamp(l.earn_time)),
        release_time: opt_timestamp(l.release_time),
        expire_time: opt_timestamp(l.expire_time),
    }
}

/// One day of expiring points on the wire.
pub(crate) fn expiring_day_pb(day: chrono::NaiveDate, points: i64) -> pb::ExpiringPointsDay {
    use chrono::Datelike;
    pb::ExpiringPointsDay {
        date: Some(common::Date {
            year: day.year(),
            month: i32::try_from(day.month()).unwrap_or(0),
            day: i32::try_from(day.day()).unwrap_or(0),
        }),
        points,
    }
}

/// A data-subject export on the wire.
impl From<crate::workflow::export::CustomerData> for pb::CustomerDataExport {
    fn from(data: crate::workflow::export::CustomerData) -> Self {
        pb::CustomerDataExport {
            customer_id: data.customer_id.to_string(),
            members: data
                .members
                .into_iter()
                .map(|m| pb::MemberDataExport {
                    member: Some(m.member.into()),
                    ledger_entries: m.ledger_entries.into_iter().map(Into::into).collect(),
                    point_lots: m.lots.into_iter().map(lot_pb).collect(),
                    tier_changes: m.tier_changes.into_iter().map(tier_change_row_pb).collect(),
                    reward_redemptions: m.redemptions.into_iter().map(Into::into).collect(),
                })
                .collect(),
            export_time: Some(timestamp(data.export_time)),
        }
    }
}

/// A scheduled downgrade on the wire (a member's `tier.pending_downgrade`, and the one a
/// `TierDowngradeCancelled` event names).
pub fn pending_downgrade_pb(p: PendingDowngrade) -> pb::PendingDowngrade {
    pb::PendingDowngrade {
        tier_code: p.code,
        display_name: p.display_name,
        rank: p.rank,
        decide_time: Some(timestamp(p.decide_time)),
        downgrade_time: Some(timestamp(p.downgrade_time)),
    }
}
