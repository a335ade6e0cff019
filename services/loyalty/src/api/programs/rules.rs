//! The rules document of a program on the wire (earning rules, the tier ladder with its
//! benefits, the tier policy, expiry, return window, clawback), parsed into
//! `domain::program::ProgramRules`' parts for CreateProgram and UpdateProgram, every bad field
//! collected under the path it was given.

use chrono::{DateTime, Utc};
use custops_common::error::Violations;
use custops_contracts::custops::loyalty::v1 as pb;

use crate::api::parse::{check_len, from_timestamp, grouped, is_slug};
use crate::domain::limits::{MAX_AMOUNT_MINOR, MAX_BALANCE_POINTS};
use crate::domain::program::{
    Benefit, BenefitKind, Campaign, ClawbackPolicy, DowngradeMode, EarningRules, ProgramState,
    ReviewSchedule, Rounding, Stacking, Threshold, Tier, TierPolicy,
};

fn rounding(v: &mut Violations, field: &str, value: i32) -> Rounding {
    match pb::RoundingMode::try_from(value) {
        Ok(pb::RoundingMode::Down) => Rounding::Down,
        Ok(pb::RoundingMode::HalfUp) => Rounding::HalfUp,
        Ok(pb::RoundingMode::HalfEven) => Rounding::HalfEven,
        Ok(pb::RoundingMode::Up) => Rounding::Up,
        Ok(pb::RoundingMode::Unspecified) | Err(_) => {
            v.add(field, "required: DOWN, HALF_UP, HALF_EVEN or UP");
            Rounding::Down
        }
    }
}

pub(super) fn earning_rules(
    v: &mut Violations,
    field: &str,
    rules: Option<pb::EarningRules>,
    tiers: &[Tier],
) -> EarningRules {
    let rules = rules.unwrap_or_else(|| {
        v.add(field, "required");
        pb::EarningRules::default()
    });
    let rate = rules.base_rate.unwrap_or_default();
    if !(1..=1_000_000).contains(&rate.points) {
        v.add(format!("{field}.base_rate.points"), "must be 1-1,000,000");
    }
    if !(1..=1_000_000_000).contains(&rate.per_amount_minor) {
        v.add(
            format!("{field}.base_rate.per_amount_minor"),
            "must be 1-1,000,000,000",
        );
    }
    let rounding = rounding(v, &format!("{field}.rounding_mode"), rules.rounding_mode);
    let mut categories = Vec::new();
    if rules.category_multipliers.len() > 500 {
        v.add(format!("{field}.category_multipliers"), "at most 500");
    }
    for (i, c) in rules.category_multipliers.into_iter().enumerate() {
        let f = format!("{field}.category_multipliers[{i}]");
        check_len(v, &format!("{f}.category"), &c.category, 1, 64);
        if !(0..=10_000).contains(&c.multiplier_percent) {
            v.add(format!("{f}.multiplier_percent"), "must be 0-10,000");
        }
        if categories.iter().any(|(k, _)| *k == c.category) {
            v.add(format!("{f}.category"), "duplicate category");
        }
        categories.push((c.category, u32::try_from(c.multiplier_percent).unwrap_or(0)));
    }
    let mut tier_multipliers = Vec::new();
    for (i, t) in rules.tier_multipliers.into_iter().enumerate() {
        let f = format!("{field}.tier_multipliers[{i}]");
        if !tiers.iter().any(|tier| tier.code == t.tier_code) {
            v.add(format!("{f}.tier_code"), "not a tier of the program");
        }
        if !(100..=10_000).contains(&t.multiplier_percent) {
            v.add(format!("{f}.multiplier_percent"), "must be 100-10,000");
        }
        tier_multipliers.push((
            t.tier_code,
            u32::try_from(t.multiplier_percent).unwrap_or(100),
        ));
    }
    if rules.campaigns.len() > 200 {
        v.add(format!("{field}.campaigns"), "at most 200");
    }
    let mut campaigns = Vec::new();
    for (i, c) in rules.campaigns.into_iter().enumerate() {
        let f = format!("{field}.campaigns[{i}]");
        if !is_slug(&c.campaign_code, 63) {
            v.add(
                format!("{f}.campaign_code"),
                "must match ^[a-z][a-z0-9_]{0,62}$",
            );
        }
        check_len(v, &format!("{f}.display_name"), &c.display_name, 1, 100);
        if !(100..=10_000).contains(&c.multiplier_percent) {
            v.add(format!("{f}.multiplier_percent"), "must be 100-10,000");
        }
        let period = c.active_period.unwrap_or_default();
        let start = period.start_time.as_ref().map(from_timestamp);
        let end = period.end_time.as_ref().map(from_timestamp);
        let (start, end) = match (start, end) {
            (Some(Ok(s)), Some(Ok(e))) if s < e => (s, e),
            _ => {
                v.add(
                    format!("{f}.active_period"),
                    "both bounds are required, start before end",
                );
                (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MIN_UTC)
            }
        };
        campaigns.push(Campaign {
            code: c.campaign_code,
            display_name: c.display_name,
            multiplier_percent: u32::try_from(c.multiplier_percent).unwrap_or(100),
            start,
            end,
            categories: c.categories,
            channels: c.channels,
            tier_codes: c.tier_codes,
        });
    }
    let birthday = rules.birthday_multiplier_percent;
    if birthday != 0 && !(100..=10_000).contains(&birthday) {
        v.add(
            format!("{field}.birthday_multiplier_percent"),
            "must be 0 or 100-10,000",
        );
    }
    let stacking = match pb::MultiplierStacking::try_from(rules.bonus_stacking) {
        Ok(pb::MultiplierStacking::Add) => Stacking::Add,
        Ok(pb::MultiplierStacking::Highest) => Stacking::Highest,
        Ok(pb::MultiplierStacking::Multiply | pb::MultiplierStacking::Unspecified) => {
            Stacking::Multiply
        }
        Err(_) => {
            v.add(format!("{field}.bonus_stacking"), "unknown value");
            Stacking::Multiply
        }
    };
    EarningRules {
        rate_points: rate.points,
        rate_per_amount_minor: rate.per_amount_minor,
        rounding,
        category_multipliers: categories,
        tier_multipliers,
        campaigns,
        birthday_multiplier_percent: u32::try_from(birthday).unwrap_or(0),
        stacking,
        bonus_points_qualify: rules.bonus_points_qualify,
    }
}

pub(super) fn tiers(v: &mut Violations, field: &str, tiers: Vec<pb::Tier>) -> Vec<Tier> {
    use pb::qualifying_amount::Amount;
    if tiers.is_empty() || tiers.len() > 20 {
        v.add(field, "1-20 tiers are required; the first is the base tier");
    }
    let mut out: Vec<Tier> = Vec::new();
    let mut metric: Option<bool> = None;
    let mut last = -1_i64;
    for (i, t) in tiers.into_iter().enumerate() {
        let f = format!("{field}[{i}]");
        if !is_slug(&t.tier_code, 63) {
            v.add(
                format!("{f}.tier_code"),
                "must match ^[a-z][a-z0-9_]{0,62}$",
            );
        }
        if out.iter().any(|o| o.code == t.tier_code) {
            v.add(format!("{f}.tier_code"), "duplicate tier code");
        }
        check_len(v, &format!("{f}.display_name"), &t.display_name, 1, 100);
        check_len(v, &format!("{f}.description"), &t.description, 0, 2000);
        let threshold = match (i, t.threshold.and_then(|q| q.amount)) {
            (0, None) => None,
            (0, Some(_)) => {
                v.add(format!("{f}.threshold"), "the base tier has no threshold");
                None
            }
            (_, None) => {
                v.add(format!("{f}.threshold"), "required above the base tier");
                None
            }
            (_, Some(amount)) => {
                let (is_points, value) = match amount {
                    Amount::QualifyingPoints(p) => (true, p),
                    Amount::QualifyingSpend(m) => (false, m.amount_minor),
                };
                if metric.is_some_and(|m| m != is_points) {
                    v.add(
                        format!("{f}.threshold"),
                        "every tier must use the same metric",
                    );
                }
                metric = Some(is_points);
                // Bounded so that a member's qualifying amount (bounded the same way) can
                // always be compared and subtracted.
                let max = if is_points {
                    MAX_BALANCE_POINTS
                } else {
                    MAX_AMOUNT_MINOR
                };
                if value > max {
                    v.add(
                        format!("{f}.threshold"),
                        format!("must be at most {}", grouped(max)),
                    );
                } else if value <= last || value <= 0 {
                    v.add(
                        format!("{f}.threshold"),
                        "thresholds must be positive and strictly increase",
                    );
                }
                last = value;
                Some(if is_points {
                    Threshold::Points(value)
                } else {
                    Threshold::SpendMinor(value)
                })
            }
        };
        let mut benefits: Vec<Benefit> = Vec::new();
        for (j, b) in t.benefits.into_iter().enumerate() {
            let bf = format!("{f}.benefits[{j}]");
            if !is_slug(&b.benefit_code, 63) {
                v.add(format!("{bf}.benefit_code"), "must be a lower-case slug");
            }
            if benefits.iter().any(|o| o.code == b.benefit_code) {
                v.add(format!("{bf}.benefit_code"), "duplicate benefit code");
            }
            let kind = match pb::BenefitKind::try_from(b.kind) {
                Ok(pb::BenefitKind::FreeShipping) => BenefitKind::FreeShipping,
                Ok(pb::BenefitKind::PriorityService) => BenefitKind::PriorityService,
                Ok(pb::BenefitKind::BirthdayGift) => BenefitKind::BirthdayGift,
                Ok(pb::BenefitKind::Discount) => BenefitKind::Discount,
                Ok(pb::BenefitKind::Custom) => BenefitKind::Custom,
                Ok(pb::BenefitKind::Unspecified) | Err(_) => {
                    v.add(format!("{bf}.kind"), "required");
                    BenefitKind::Custom
                }
            };
            let mut parameters: Vec<(String, String)> = b.parameters.into_iter().collect();
            parameters.sort();
            benefits.push(Benefit {
                code: b.benefit_code,
                kind,
                display_name: b.display_name,
                description: b.description,
                parameters,
            });
        }
        out.push(Tier {
            code: t.tier_code,
            display_name: t.display_name,
            description: t.description,
            threshold,
            benefits,
        });
    }
    out
}

pub(super) fn tier_policy(
    v: &mut Violations,
    field: &str,
    policy: Option<pb::TierPolicy>,
    tier_count: usize,
) -> TierPolicy {
    let p = policy.unwrap_or_default();
    if !(0..=1096).contains(&p.qualifying_window_days) {
        v.add(format!("{field}.qualifying_window_days"), "must be 0-1,096");
    }
    let review_schedule = match pb::TierReviewSchedule::try_from(p.review_schedule) {
        Ok(pb::TierReviewSchedule::Calendar) => Some(ReviewSchedule::Calendar),
        Ok(pb::TierReviewSchedule::Anniversary) => Some(ReviewSchedule::Anniversary),
        _ => None,
    };
    if tier_count > 1 && review_schedule.is_none() {
        v.add(
            format!("{field}.review_schedule"),
            "required when the program has more than one tier",
        );
    }
    if tier_count > 1 && !(1..=36).contains(&p.review_period_months) {
        v.add(format!("{field}.review_period_months"), "must be 1-36");
    } else if tier_count > 1
        && review_schedule == Some(ReviewSchedule::Calendar)
        && 12 % p.review_period_months != 0
    {
        v.add(
            format!("{field}.review_period_months"),
            "must divide 12 (1, 2, 3, 4, 6 or 12) for CALENDAR reviews",
        );
    }
    if !(0..=366).contains(&p.grace_period_days) {
        v.add(format!("{field}.grace_period_days"), "must be 0-366");
    }
    TierPolicy {
        qualifying_window_days: u32::try_from(p.qualifying_window_days).unwrap_or(0),
        review_schedule,
        review_period_months: u32::try_from(p.review_period_months).unwrap_or(0),
        grace_period_days: u32::try_from(p.grace_period_days).unwrap_or(0),
        downgrade_mode: match pb::TierDowngradeMode::try_from(p.downgrade_mode) {
            Ok(pb::TierDowngradeMode::OneTier) => DowngradeMode::OneTier,
            _ => DowngradeMode::ToQualifiedTier,
        },
    }
}

pub(super) fn clawback(v: &mut Violations, field: &str, value: i32) -> ClawbackPolicy {
    match pb::ClawbackPolicy::try_from(value) {
        Ok(pb::ClawbackPolicy::PendingOnly) => ClawbackPolicy::PendingOnly,
        Ok(pb::ClawbackPolicy::WithinBalance) => ClawbackPolicy::WithinBalance,
        Ok(pb::ClawbackPolicy::AllowNegativeBalance) => ClawbackPolicy::AllowNegativeBalance,
        Ok(pb::ClawbackPolicy::Unspecified) | Err(_) => {
            v.add(
                field,
                "required: PENDING_ONLY, WITHIN_BALANCE or ALLOW_NEGATIVE_BALANCE",
            );
            ClawbackPolicy::WithinBalance
        }
    }
}

pub(super) fn program_state(v: &mut Violations, field: &str, value: i32) -> ProgramState {
    match pb::ProgramState::try_from(value) {
        Ok(pb::ProgramState::Archived) => ProgramState::Archived,
        Ok(pb::ProgramState::Active | pb::ProgramState::Unspecified) => ProgramState::Active,
        Err(_) => {
            v.add(field, "unknown value");
            ProgramState::Active
        }
    }
}

pub(super) fn return_window(v: &mut Violations, field: &str, days: i32) -> u32 {
    if !(0..=365).contains(&days) {
        v.add(field, "must be 0-365");
    }
    u32::try_from(days).unwrap_or(0)
}

pub(super) fn expiry_days(
    v: &mut Violations,
    field: &str,
    policy: Option<pb::ExpiryPolicy>,
) -> u32 {
    let days = policy.map(|p| p.expire_after_days).unwrap_or(0);
    if !(0..=3660).contains(&days) {
        v.add(field, "must be 0-3,660");
    }
    u32::try_from(days).unwrap_or(0)
}
