//! A loyalty program: its currency and the rules points and tiers follow.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::money::Currency;

/// Lifecycle state of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramState {
    /// Open for everything.
    Active,
    /// Closed to new activity; reversals, adjustments, reads and jobs still work.
    Archived,
}

/// How a fractional point count becomes whole points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rounding {
    /// Towards zero.
    Down,
    /// Nearest, halves away from zero.
    HalfUp,
    /// Nearest, halves to even.
    HalfEven,
    /// Away from zero.
    Up,
}

/// How bonus multipliers combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stacking {
    /// Multiply them.
    Multiply,
    /// Add their bonus parts.
    Add,
    /// Only the largest applies.
    Highest,
}

/// What a refund may take back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClawbackPolicy {
    /// Only pending points of the earn.
    PendingOnly,
    /// From the earn's lot, then other available points, never below zero.
    WithinBalance,
    /// Everything, even into a negative balance.
    AllowNegativeBalance,
}

/// A bonus campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    /// Slug identity.
    pub code: String,
    /// Member-readable name.
    pub display_name: String,
    /// Multiplier in percent.
    pub multiplier_percent: u32,
    /// Start of the active period (inclusive).
    pub start: DateTime<Utc>,
    /// End of the active period (exclusive).
    pub end: DateTime<Utc>,
    /// Only lines in these categories; empty = all.
    pub categories: Vec<String>,
    /// Only purchases through these channels; empty = all.
    pub channels: Vec<String>,
    /// Only members in these tiers; empty = all.
    pub tier_codes: Vec<String>,
}

/// How purchases earn points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarningRules {
    /// Points per `rate_per_amount_minor`.
    pub rate_points: i64,
    /// Minor units that earn `rate_points`.
    pub rate_per_amount_minor: i64,
    /// Final rounding.
    pub rounding: Rounding,
    /// Category → multiplier percent.
    pub category_multipliers: Vec<(String, u32)>,
    /// Tier code → multiplier percent.
    pub tier_multipliers: Vec<(String, u32)>,
    /// Campaigns.
    pub campaigns: Vec<Campaign>,
    /// Birthday-month multiplier percent; 0 = none.
    pub birthday_multiplier_percent: u32,
    /// How bonuses combine.
    pub stacking: Stacking,
    /// Whether bonus points qualify for tiers.
    pub bonus_points_qualify: bool,
}

/// A tier threshold: the program's qualifying metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Threshold {
    /// Qualifying points.
    Points(i64),
    /// Qualifying spend in minor units.
    SpendMinor(i64),
}

/// Kind of benefit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BenefitKind {
    /// Free shipping.
    FreeShipping,
    /// Priority service.
    PriorityService,
    /// Birthday gift.
    BirthdayGift,
    /// Discount.
    Discount,
    /// Anything else.
    Custom,
}

/// A tier benefit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Benefit {
    /// Stable code, e.g. `free_shipping`.
    pub code: String,
    /// Kind.
    pub kind: BenefitKind,
    /// Member-readable name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// Free-form parameters.
    pub parameters: Vec<(String, String)>,
}

/// One rung of the ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// Slug identity.
    pub code: String,
    /// Member-readable name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// None for the base tier.
    pub threshold: Option<Threshold>,
    /// Benefits.
    pub benefits: Vec<Benefit>,
}

/// Review schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReviewSchedule {
    /// Calendar periods.
    Calendar,
    /// From each member's tier achievement.
    Anniversary,
}

/// How far a downgrade goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DowngradeMode {
    /// To the tier the member qualifies for.
    ToQualifiedTier,
    /// One tier down.
    OneTier,
}

/// How tiers are qualified for and reviewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierPolicy {
    /// Rolling window in days (0 = 365).
    pub qualifying_window_days: u32,
    /// Review schedule, when there is more than one tier.
    pub review_schedule: Option<ReviewSchedule>,
    /// Months between reviews.
    pub review_period_months: u32,
    /// Grace before a downgrade.
    pub grace_period_days: u32,
    /// Downgrade mode.
    pub downgrade_mode: DowngradeMode,
}

impl TierPolicy {
    /// The first CALENDAR review boundary after the program-local time `local`: midnight on
    /// the 1st of the month that starts the next period of `review_period_months`, periods
    /// counted from 1 January (3 months: 1 January, 1 April, 1 July, 1 October). A review at
    /// a boundary schedules the next one. `None` past the end of the calendar.
    pub fn next_calendar_review(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        // The contract requires a divisor of 12; anything else (never accepted) still moves
        // forward, one period at a time from 1 January.
        let period = self.review_period_months.max(1);
        let elapsed = local.month0() / period * period + period;
        NaiveDate::from_ymd_opt(local.year(), 1, 1)?
            .checked_add_months(Months::new(elapsed))
            .map(|day| day.and_time(NaiveTime::MIN))
    }
}

/// Everything configurable about a program except its identity, stored as one document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramRules {
    /// Earning rules.
    pub earning: EarningRules,
    /// Days until a lot expires; 0 = never.
    pub expire_after_days: u32,
    /// Return window in days.
    pub return_window_days: u32,
    /// Clawback policy.
    pub clawback: ClawbackPolicy,
    /// Tier ladder, base first.
    pub tiers: Vec<Tier>,
    /// Tier policy.
    pub tier_policy: TierPolicy,
}

impl ProgramRules {
    /// The base tier (validation guarantees there is one).
    pub fn base_tier_code(&self) -> &str {
        self.tiers.first().map(|t| t.code.as_str()).unwrap_or("")
    }

    /// Rank and tier of `code`.
    pub fn tier(&self, code: &str) -> Option<(i32, &Tier)> {
        self.tiers
            .iter()
            .enumerate()
            .find(|(_, t)| t.code == code)
            .map(|(rank, t)| (i32::try_from(rank).unwrap_or(i32::MAX), t))
    }

    /// A member's qualifying amount on the program's metric (spend when its thresholds are on
    /// spend, else points), as a tier change records it.
    pub fn qualifying_amount(&self, qualifying_points: i64, spend_minor: i64) -> Threshold {
        let on_spend = self
            .tiers
            .iter()
            .any(|t| matches!(t.threshold, Some(Threshold::SpendMinor(_))));
        if on_spend {
            Threshold::SpendMinor(spend_minor)
        } else {
            Threshold::Points(qualifying_points)
        }
    }

    /// The highest tier whose threshold `qualifying_points` / `spend_minor` meet.
    pub fn qualified_tier(&self, qualifying_points: i64, spend_minor: i64) -> (i32, &Tier) {
        let mut best = 0;
        for (rank, tier) in self.tiers.iter().enumerate() {
            let met = match tier.threshold {
                None => true,
                Some(Threshold::Points(p)) => qualifying_points >= p,
                Some(Threshold::SpendMinor(s)) => spend_minor >= s,
            };
            if met {
                best = rank;
            }
        }
        let tier = &self.tiers[best.min(self.tiers.len().saturating_sub(1))];
        (i32::try_from(best).unwrap_or(i32::MAX), tier)
    }
}

/// A new program, as validated at the API boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProgram {
    /// Display name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// State.
    pub state: ProgramState,
    /// Currency.
    pub currency: Currency,
    /// IANA time zone.
    pub time_zone: String,
    /// Rules.
    pub rules: ProgramRules,
}

/// A stored program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Id.
    pub program_id: Uuid,
    /// Display name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// State.
    pub state: ProgramState,
    /// Currency code.
    pub currency: String,
    /// Time zone.
    pub time_zone: String,
    /// Rules.
    pub rules: ProgramRules,
    /// Version, bumped by every update.
    pub etag: i64,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last updated.
    pub update_time: DateTime<Utc>,
}

/// A partial update of a program: `None` leaves the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgramPatch {
    /// Etag the caller read.
    pub etag: i64,
    /// New display name.
    pub display_name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New state.
    pub state: Option<ProgramState>,
    /// New time zone.
    pub time_zone: Option<String>,
    /// New earning rules.
    pub earning: Option<EarningRules>,
    /// New expiry.
    pub expire_after_days: Option<u32>,
    /// New return window.
    pub return_window_days: Option<u32>,
    /// New clawback policy.
    pub clawback: Option<ClawbackPolicy>,
    /// New ladder.
    pub tiers: Option<Vec<Tier>>,
    /// New tier policy.
    pub tier_policy: Option<TierPolicy>,
}

impl ProgramPatch {
    /// Applies the patch to `program`.
    pub fn apply(self, program: &mut Program) {
        if let Some(v) = self.display_name {
            program.display_name = v;
        }
        if let Some(v) = self.description {
            program.description = v;
        }
        if let Some(v) = self.state {
            program.state = v;
        }
        if let Some(v) = self.time_zone {
            program.time_zone = v;
        }
        if let Some(v) = self.earning {
            program.rules.earning = v;
        }
        if let Some(v) = self.expire_after_days {
            program.rules.expire_after_days = v;
        }
        if let Some(v) = self.return_window_days {
            program.rules.return_window_days = v;
        }
        if let Some(v) = self.clawback {
            program.rules.clawback = v;
        }
        if let Some(v) = self.tiers {
            program.rules.tiers = v;
        }
        if let Some(v) = self.tier_policy {
            program.rules.tier_policy = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDateTime;

    use super::{DowngradeMode, ReviewSchedule, TierPolicy};

    fn check(period_months: u32, local: &str, expected: &str) {
        let policy = TierPolicy {
            qualifying_window_days: 365,
            review_schedule: Some(ReviewSchedule::Calendar),
            review_period_months: period_months,
            grace_period_days: 0,
            downgrade_mode: DowngradeMode::ToQualifiedTier,
        };
        let parse = |text| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok();
        assert_eq!(
            policy.next_calendar_review(parse(local).unwrap_or_default()),
            parse(expected),
            "{period_months} months after {local}"
        );
    }

    #[test]
    fn calendar_reviews_fall_on_the_next_period_start() {
        check(12, "2026-07-15 10:00:00", "2027-01-01 00:00:00");
        check(12, "2026-01-01 00:00:00", "2027-01-01 00:00:00");
        check(12, "2026-12-31 23:59:59", "2027-01-01 00:00:00");
        check(3, "2026-01-01 00:00:00", "2026-04-01 00:00:00");
        check(3, "2026-03-31 23:59:59", "2026-04-01 00:00:00");
        check(3, "2026-05-20 08:00:00", "2026-07-01 00:00:00");
        check(3, "2026-11-02 00:00:00", "2027-01-01 00:00:00");
        check(6, "2026-06-30 12:00:00", "2026-07-01 00:00:00");
        check(6, "2026-07-01 00:00:00", "2027-01-01 00:00:00");
        check(1, "2026-02-14 09:30:00", "2026-03-01 00:00:00");
        check(1, "2026-12-05 00:00:00", "2027-01-01 00:00:00");
        check(4, "2026-08-31 00:00:00", "2026-09-01 00:00:00");
        check(2, "2026-10-01 00:00:00", "2026-11-01 00:00:00");
    }
}
