//! Programs on the wire: identity, earning rules, expiry, clawback, the tier ladder with its
//! benefits, and a member's entitlements to them.

use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::loyalty::v1 as pb;

use super::{opt_timestamp, threshold_pb, timestamp};
use crate::domain::benefit::Entitlement;
use crate::domain::program::{
    Benefit, BenefitKind, ClawbackPolicy, DowngradeMode, Program, ProgramState, ReviewSchedule,
    Rounding, Stacking,
};

pub(crate) fn rounding_pb(r: Rounding) -> pb::RoundingMode {
    match r {
        Rounding::Down => pb::RoundingMode::Down,
        Rounding::HalfUp => pb::RoundingMode::HalfUp,
        Rounding::HalfEven => pb::RoundingMode::HalfEven,
        Rounding::Up => pb::RoundingMode::Up,
    }
}

pub(crate) fn benefit_pb(b: Benefit) -> pb::Benefit {
    pb::Benefit {
        benefit_code: b.code,
        kind: match b.kind {
            BenefitKind::FreeShipping => pb::BenefitKind::FreeShipping,
            BenefitKind::PriorityService => pb::BenefitKind::PriorityService,
            BenefitKind::BirthdayGift => pb::BenefitKind::BirthdayGift,
            BenefitKind::Discount => pb::BenefitKind::Discount,
            BenefitKind::Custom => pb::BenefitKind::Custom,
        } as i32,
        display_name: b.display_name,
        description: b.description,
        parameters: b.parameters.into_iter().collect(),
    }
}

/// An entitlement on the wire.
pub(crate) fn entitlement_pb(e: Entitlement) -> pb::Entitlement {
    pb::Entitlement {
        benefit: Some(benefit_pb(e.benefit)),
        tier_code: e.tier_code,
        valid_until_time: opt_timestamp(e.valid_until),
    }
}

impl From<Program> for pb::Program {
    fn from(p: Program) -> Self {
        let r = p.rules;
        let e = r.earning;
        let currency = p.currency.clone();
        pb::Program {
            program_id: p.program_id.to_string(),
            display_name: p.display_name,
            description: p.description,
            state: match p.state {
                ProgramState::Active => pb::ProgramState::Active,
                ProgramState::Archived => pb::ProgramState::Archived,
            } as i32,
            currency: p.currency,
            time_zone: p.time_zone,
            earning_rules: Some(pb::EarningRules {
                base_rate: Some(pb::EarnRate {
                    points: e.rate_points,
                    per_amount_minor: e.rate_per_amount_minor,
                }),
                rounding_mode: rounding_pb(e.rounding) as i32,
                category_multipliers: e
                    .category_multipliers
                    .into_iter()
                    .map(|(category, p)| pb::CategoryMultiplier {
                        category,
                        multiplier_percent: i32::try_from(p).unwrap_or(i32::MAX),
                    })
                    .collect(),
                tier_multipliers: e
                    .tier_multipliers
                    .into_iter()
                    .map(|(tier_code, p)| pb::TierMultiplier {
                        tier_code,
                        multiplier_percent: i32::try_from(p).unwrap_or(i32::MAX),
                    })
                    .collect(),
                campaigns: e
                    .campaigns
                    .into_iter()
                    .map(|c| pb::BonusCampaign {
                        campaign_code: c.code,
                        display_name: c.display_name,
                        multiplier_percent: i32::try_from(c.multiplier_percent).unwrap_or(i32::MAX),
                        active_period: Some(common::TimeRange {
                            start_time: Some(timestamp(c.start)),
                            end_time: Some(timestamp(c.end)),
                        }),
                        categories: c.categories,
                        channels: c.channels,
                        tier_codes: c.tier_codes,
                    })
                    .collect(),
                birthday_multiplier_percent: i32::try_from(e.birthday_multiplier_percent)
                    .unwrap_or(0),
                bonus_stacking: match e.stacking {
                    Stacking::Multiply => pb::MultiplierStacking::Multiply,
                    Stacking::Add => pb::MultiplierStacking::Add,
                    Stacking::Highest => pb::MultiplierStacking::Highest,
                } as i32,
                bonus_points_qualify: e.bonus_points_qualify,
            }),
            expiry_policy: Some(pb::ExpiryPolicy {
                expire_after_days: i32::try_from(r.expire_after_days).unwrap_or(0),
            }),
            return_window_days: i32::try_from(r.return_window_days).unwrap_or(0),
            clawback_policy: match r.clawback {
                ClawbackPolicy::PendingOnly => pb::ClawbackPolicy::PendingOnly,
                ClawbackPolicy::WithinBalance => pb::ClawbackPolicy::WithinBalance,
                ClawbackPolicy::AllowNegativeBalance => pb::ClawbackPolicy::AllowNegativeBalance,
            } as i32,
            tiers: r
                .tiers
                .into_iter()
                .enumerate()
                .map(|(rank, t)| pb::Tier {
                    tier_code: t.code,
                    display_name: t.display_name,
                    description: t.description,
                    rank: i32::try_from(rank).unwrap_or(0),
                    threshold: t.threshold.map(|th| threshold_pb(th, &currency)),
                    benefits: t.benefits.into_iter().map(benefit_pb).collect(),
                })
                .collect(),
            tier_policy: Some(pb::TierPolicy {
                qualifying_window_days: i32::try_from(r.tier_policy.qualifying_window_days)
                    .unwrap_or(0),
                review_schedule: match r.tier_policy.review_schedule {
                    Some(ReviewSchedule::Calendar) => pb::TierReviewSchedule::Calendar,
                    Some(ReviewSchedule::Anniversary) => pb::TierReviewSchedule::Anniversary,
                    None => pb::TierReviewSchedule::Unspecified,
                } as i32,
                review_period_months: i32::try_from(r.tier_policy.review_period_months)
                    .unwrap_or(0),
                grace_period_days: i32::try_from(r.tier_policy.grace_period_days).unwrap_or(0),
                downgrade_mode: match r.tier_policy.downgrade_mode {
                    DowngradeMode::ToQualifiedTier => pb::TierDowngradeMode::ToQualifiedTier,
                    DowngradeMode::OneTier => pb::TierDowngradeMode::OneTier,
                } as i32,
            }),
            etag: p.etag.to_string(),
            create_time: Some(timestamp(p.create_time)),
            update_time: Some(timestamp(p.update_time)),
        }
    }
}
