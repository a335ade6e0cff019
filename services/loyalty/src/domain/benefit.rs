//! Entitlements: the benefits a member holds now through its tier, and how long they are
//! guaranteed (a tier can only be lost at a review, after the grace period).

use chrono::{DateTime, Duration, Utc};

use super::member::{Member, MemberStatus};
use super::program::{Benefit, ProgramRules};

/// A benefit held now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlement {
    /// The benefit.
    pub benefit: Benefit,
    /// The tier granting it.
    pub tier_code: String,
    /// Guaranteed until; `None` = as long as the member stays in the program (base tier).
    pub valid_until: Option<DateTime<Utc>>,
}

/// Why a member does not hold a benefit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotEntitled {
    /// The member is not ACTIVE.
    MemberNotActive,
    /// The member's tier does not include it.
    TierNotEligible,
}

/// How long the member's current tier is guaranteed.
pub fn guaranteed_until(rules: &ProgramRules, member: &Member) -> Option<DateTime<Utc>> {
    if let Some(pending) = &member.tier.pending_downgrade {
        return Some(pending.downgrade_time);
    }
    member
        .tier
        .next_review_time
        .map(|review| review + Duration::days(i64::from(rules.tier_policy.grace_period_days)))
}

/// Everything the member is entitled to now.
pub fn entitlements(rules: &ProgramRules, member: &Member) -> Vec<Entitlement> {
    if member.status != MemberStatus::Active {
        return Vec::new();
    }
    let until = guaranteed_until(rules, member);
    rules
        .tier(&member.tier.code)
        .map(|(_, tier)| {
            tier.benefits
                .iter()
                .map(|b| Entitlement {
                    benefit: b.clone(),
                    tier_code: tier.code.clone(),
                    valid_until: until,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the member holds `benefit_code` now.
pub fn check(
    rules: &ProgramRules,
    member: &Member,
    benefit_code: &str,
) -> Result<Entitlement, NotEntitled> {
    if member.status != MemberStatus::Active {
        return Err(NotEntitled::MemberNotActive);
    }
    entitlements(rules, member)
        .into_iter()
        .find(|e| e.benefit.code == benefit_code)
        .ok_or(NotEntitled::TierNotEligible)
}

/// The lowest tier whose benefits include `benefit_code`.
pub fn lowest_tier_with(rules: &ProgramRules, benefit_code: &str) -> Option<String> {
    rules
        .tiers
        .iter()
        .find(|t| t.benefits.iter().any(|b| b.code == benefit_code))
        .map(|t| t.code.clone())
}
