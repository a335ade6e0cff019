//! Turning a purchase into points: base rate × category multiplier per line, then the bonus
//! multipliers (tier, campaigns) combined per the program's stacking, rounded once at the end
//! from the exact rational result.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::limits::{MAX_COMBINED_PERCENT, MAX_ENTRY_POINTS};
use super::program::{EarningRules, Rounding, Stacking};
use super::rejection::Rejection;

/// One category's share of a purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseLine {
    /// Amount in minor units.
    pub amount_minor: i64,
    /// Category; empty = uncategorised.
    pub category: String,
}

/// A purchase, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    /// Caller's order id.
    pub order_id: String,
    /// Amount in minor units of the program currency.
    pub amount_minor: i64,
    /// Currency code as sent (checked against the program's).
    pub currency: String,
    /// Categories (used when there are no lines).
    pub categories: Vec<String>,
    /// Sales channel.
    pub channel: String,
    /// Lines.
    pub lines: Vec<PurchaseLine>,
    /// When it happened; `None` = at processing.
    pub purchase_time: Option<DateTime<Utc>>,
}

/// Where a multiplier came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MultiplierSource {
    /// Category.
    Category,
    /// Tier.
    Tier,
    /// Campaign.
    Campaign,
    /// Birthday month.
    Birthday,
}

/// A multiplier that applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedMultiplier {
    /// Source.
    pub source: MultiplierSource,
    /// Category, tier code or campaign code.
    pub code: String,
    /// Member-readable name.
    pub display_name: String,
    /// Percent.
    pub multiplier_percent: u32,
    /// Part of the amount it applied to.
    pub applied_amount_minor: i64,
}

/// How a purchase's points were calculated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calculation {
    /// Base points (rounded for display).
    pub base_points: i64,
    /// Multipliers, categories first.
    pub multipliers: Vec<AppliedMultiplier>,
    /// Combined bonus percent over the whole purchase (100 when none).
    pub bonus_multiplier_percent: u32,
    /// Points earned.
    pub total_points: i64,
    /// Qualifying points earned.
    pub qualifying_points: i64,
    /// Rounding used.
    pub rounding: Rounding,
}

/// Rounds `num / den` (both non-negative, `den > 0`) with `mode`.
pub fn round(num: i128, den: i128, mode: Rounding) -> i64 {
    let q = num / den;
    let r = num % den;
    let up = match mode {
        Rounding::Down => false,
        Rounding::Up => r > 0,
        Rounding::HalfUp => 2 * r >= den,
        Rounding::HalfEven => 2 * r > den || (2 * r == den && q % 2 == 1),
    };
    i64::try_from(if up { q + 1 } else { q }).unwrap_or(i64::MAX)
}

/// The combined bonus percent, at most [`MAX_COMBINED_PERCENT`]: each multiplier is at most
/// 10,000%, but MULTIPLY stacking of many overlapping campaigns would grow without bound.
fn combine(percents: &[u32], stacking: Stacking) -> u32 {
    if percents.is_empty() {
        return 100;
    }
    let combined: u64 = match stacking {
        Stacking::Multiply => {
            let mut acc: u64 = 100;
            for p in percents {
                // acc ≤ MAX_COMBINED_PERCENT and p < 2^32, so the product fits in u64.
                acc = (acc.saturating_mul(u64::from(*p)) / 100).min(MAX_COMBINED_PERCENT);
            }
            acc
        }
        Stacking::Add => percents.iter().fold(100_u64, |acc, p| {
            acc.saturating_add(u64::from(p.saturating_sub(100)))
        }),
        Stacking::Highest => percents.iter().copied().max().map_or(100, u64::from),
    };
    u32::try_from(combined.min(MAX_COMBINED_PERCENT)).unwrap_or(u32::MAX)
}

/// Refuses a purchase that earns more than one ledger entry may credit
/// ([`MAX_ENTRY_POINTS`]): the amount is within its bounds, but the program's rate and
/// multipliers make it worth too many points. INVALID_ARGUMENT on the amount, which is what
/// the caller can change.
pub fn check_entry_limit(calculation: &Calculation) -> Result<(), Rejection> {
    if calculation.total_points > MAX_ENTRY_POINTS
        || calculation.qualifying_points > MAX_ENTRY_POINTS
    {
        return Err(Rejection::InvalidField {
            field: "purchase.amount.amount_minor",
            description: format!(
                "the purchase earns more than the {MAX_ENTRY_POINTS} points one earn may credit \
                 under the program's rules"
            ),
        });
    }
    Ok(())
}

/// When a purchase counts as made: its `purchase_time`, else `at` (the time of the earn).
pub fn purchase_instant(purchase: &Purchase, at: DateTime<Utc>) -> DateTime<Utc> {
    purchase.purchase_time.unwrap_or(at)
}

/// Calculates the points `purchase` earns under `rules` for a member in `tier_code`, at `at`,
/// born in `birth_month` (1–12) when known. `purchase_month` (1–12) is the month of
/// [`purchase_instant`] in the program's time zone, which the birthday bonus is judged in
/// (the caller converts: zone rules live in the database, not in this crate).
pub fn calculate(
    rules: &EarningRules,
    purchase: &Purchase,
    tier_code: &str,
    birth_month: Option<u32>,
    purchase_month: u32,
    at: DateTime<Utc>,
) -> Calculation {
    let category_percent = |category: &str| {
        rules
            .category_multipliers
            .iter()
            .find(|(c, _)| c == category)
            .map(|(_, p)| *p)
    };
    // Without lines, the whole amount is one line in the purchase's best-earning category.
    let lines: Vec<PurchaseLine> = if purchase.lines.is_empty() {
        let category = purchase
            .categories
            .iter()
            .filter_map(|c| category_percent(c).map(|p| (p, c)))
            .max_by_key(|(p, _)| *p)
            .map(|(_, c)| c.clone())
            .unwrap_or_default();
        vec![PurchaseLine {
            amount_minor: purchase.amount_minor,
            category,
        }]
    } else {
        purchase.lines.clone()
    };
    let when = purchase_instant(purchase, at);
    let tier_bonus = rules
        .tier_multipliers
        .iter()
        .find(|(t, _)| t == tier_code)
        .map(|(_, p)| *p);
    let birthday = (rules.birthday_multiplier_percent > 0
        && birth_month.is_some_and(|m| m == purchase_month))
    .then_some(rules.birthday_multiplier_percent);
    let campaigns: Vec<_> = rules
        .campaigns
        .iter()
        .filter(|c| c.start <= when && when < c.end)
        .filter(|c| c.channels.is_empty() || c.channels.contains(&purchase.channel))
        .filter(|c| c.tier_codes.is_empty() || c.tier_codes.iter().any(|t| t == tier_code))
        .collect();

    let mut multipliers = Vec::new();
    let mut base_num: i128 = 0;
    let mut total_num: i128 = 0;
    let mut campaign_amounts = vec![0_i64; campaigns.len()];
    for line in &lines {
        let cat = category_percent(&line.category);
        if let Some(p) = cat {
            match multipliers.iter_mut().find(|m: &&mut AppliedMultiplier| {
                m.source == MultiplierSource::Category && m.code == line.category
            }) {
                // Line amounts add up to the purchase amount, which is bounded.
                Some(m) => {
                    m.applied_amount_minor =
                        m.applied_amount_minor.saturating_add(line.amount_minor)
                }
                None => multipliers.push(AppliedMultiplier {
                    source: MultiplierSource::Category,
                    code: line.category.clone(),
                    display_name: line.category.clone(),
                    multiplier_percent: p,
                    applied_amount_minor: line.amount_minor,
                }),
            }
        }
        let line_base = i128::from(line.amount_minor) * i128::from(cat.unwrap_or(100));
        let mut bonuses: Vec<u32> = tier_bonus.into_iter().chain(birthday).collect();
        for (i, c) in campaigns.iter().enumerate() {
            if c.categories.is_empty() || c.categories.contains(&line.category) {
                bonuses.push(c.multiplier_percent);
                campaign_amounts[i] = campaign_amounts[i].saturating_add(line.amount_minor);
            }
        }
        base_num += line_base * 100;
        total_num += line_base * i128::from(combine(&bonuses, rules.stacking));
    }
    if let Some(p) = tier_bonus {
        multipliers.push(AppliedMultiplier {
            source: MultiplierSource::Tier,
            code: tier_code.to_owned(),
            display_name: tier_code.to_owned(),
            multiplier_percent: p,
            applied_amount_minor: purchase.amount_minor,
        });
    }
    if let Some(p) = birthday {
        multipliers.push(AppliedMultiplier {
            source: MultiplierSource::Birthday,
            code: "birthday".to_owned(),
            display_name: "Birthday month".to_owned(),
            multiplier_percent: p,
            applied_amount_minor: purchase.amount_minor,
        });
    }
    for (c, amount) in campaigns.iter().zip(campaign_amounts) {
        if amount > 0 {
            multipliers.push(AppliedMultiplier {
                source: MultiplierSource::Campaign,
                code: c.code.clone(),
                display_name: c.display_name.clone(),
                multiplier_percent: c.multiplier_percent,
                applied_amount_minor: amount,
            });
        }
    }
    // amount × cat% × bonus% × rate.points / (per_amount × 100 × 100), rounded once.
    let den = i128::from(rules.rate_per_amount_minor) * 10_000;
    let rate = i128::from(rules.rate_points);
    let base_points = round(base_num * rate, den, rules.rounding);
    let total_points = round(total_num * rate, den, rules.rounding);
    let bonus_multiplier_percent = if base_num == 0 {
        100
    } else {
        u32::try_from(total_num * 100 / base_num).unwrap_or(u32::MAX)
    };
    Calculation {
        base_points,
        multipliers,
        bonus_multiplier_percent,
        total_points,
        qualifying_points: if rules.bonus_points_qualify {
            total_points
        } else {
            base_points
        },
        rounding: rules.rounding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(points: i64, per: i64, rounding: Rounding) -> EarningRules {
        EarningRules {
            rate_points: points,
            rate_per_amount_minor: per,
            rounding,
            category_multipliers: vec![("electronics".into(), 200), ("gift_cards".into(), 0)],
            tier_multipliers: vec![("gold".into(), 150)],
            campaigns: vec![],
            birthday_multiplier_percent: 0,
            stacking: Stacking::Multiply,
            bonus_points_qualify: false,
        }
    }

    fn purchase(amount: i64, categories: &[&str]) -> Purchase {
        Purchase {
            order_id: "o".into(),
            amount_minor: amount,
            currency: "CNY".into(),
            categories: categories.iter().map(|c| c.to_string()).collect(),
            channel: String::new(),
            lines: vec![],
            purchase_time: None,
        }
    }

    fn check(rules: &EarningRules, p: &Purchase, tier: &str, expected: (i64, i64)) {
        let c = calculate(rules, p, tier, None, 1, Utc::now());
        assert_eq!((c.total_points, c.qualifying_points), expected, "{c:?}");
    }

    #[test]
    fn rates_categories_tiers_and_rounding() {
        let down = rules(1, 100, Rounding::Down);
        check(&down, &purchase(12_990, &[]), "silver", (129, 129));
        check(
            &down,
            &purchase(12_990, &["electronics"]),
            "silver",
            (259, 259),
        );
        check(&down, &purchase(12_990, &["gift_cards"]), "silver", (0, 0));
        check(&down, &purchase(10_000, &[]), "gold", (150, 100));
        let half_up = rules(1, 100, Rounding::HalfUp);
        check(&half_up, &purchase(1_250, &[]), "silver", (13, 13));
        let half_even = rules(1, 100, Rounding::HalfEven);
        check(&half_even, &purchase(1_250, &[]), "silver", (12, 12));
        check(&half_even, &purchase(1_350, &[]), "silver", (14, 14));
        let up = rules(1, 100, Rounding::Up);
        check(&up, &purchase(1_210, &[]), "silver", (13, 13));
        let two_per_yuan = rules(10, 500, Rounding::Down);
        check(&two_per_yuan, &purchase(1_000, &[]), "silver", (20, 20));
    }

    #[test]
    fn birthday_month_doubles_and_stacks_with_the_tier() {
        let mut r = rules(1, 100, Rounding::Down);
        r.birthday_multiplier_percent = 200;
        let now = Utc::now();
        let this_month = chrono::Datelike::month(&now);
        let other_month = this_month % 12 + 1;
        let p = purchase(10_000, &[]);
        assert_eq!(
            calculate(&r, &p, "silver", Some(this_month), this_month, now).total_points,
            200
        );
        assert_eq!(
            calculate(&r, &p, "silver", Some(other_month), this_month, now).total_points,
            100
        );
        assert_eq!(
            calculate(&r, &p, "gold", Some(this_month), this_month, now).total_points,
            300
        );
        assert_eq!(
            calculate(&r, &p, "silver", Some(this_month), this_month, now).qualifying_points,
            100
        );
    }

    #[test]
    fn stacking_modes() {
        assert_eq!(combine(&[150, 200], Stacking::Multiply), 300);
        assert_eq!(combine(&[150, 200], Stacking::Add), 250);
        assert_eq!(combine(&[150, 200], Stacking::Highest), 200);
        assert_eq!(combine(&[], Stacking::Add), 100);
    }

    #[test]
    fn many_stacked_multipliers_stop_at_the_combined_limit() {
        let many = vec![10_000; 202];
        let limit = u32::try_from(MAX_COMBINED_PERCENT).unwrap_or(u32::MAX);
        assert_eq!(combine(&many, Stacking::Multiply), limit);
        assert_eq!(combine(&many, Stacking::Add), limit);
        assert_eq!(combine(&many, Stacking::Highest), 10_000);
    }

    #[test]
    fn a_purchase_worth_more_than_one_entry_may_credit_is_refused() {
        let mut generous = rules(1_000_000, 1, Rounding::Down);
        generous.tier_multipliers = vec![("gold".into(), 10_000)];
        let c = calculate(
            &generous,
            &purchase(crate::domain::limits::MAX_AMOUNT_MINOR, &["electronics"]),
            "gold",
            None,
            1,
            Utc::now(),
        );
        assert_eq!(c.total_points, i64::MAX, "{c:?}");
        assert!(matches!(
            check_entry_limit(&c),
            Err(Rejection::InvalidField {
                field: "purchase.amount.amount_minor",
                ..
            })
        ));
        let modest = calculate(
            &rules(1, 1_000, Rounding::Down),
            &purchase(crate::domain::limits::MAX_AMOUNT_MINOR, &[]),
            "silver",
            None,
            1,
            Utc::now(),
        );
        assert_eq!(modest.total_points, MAX_ENTRY_POINTS);
        assert_eq!(check_entry_limit(&modest), Ok(()));
    }
}
