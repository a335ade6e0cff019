//! Requests → domain commands. Each request becomes a validated command through `TryFrom`,
//! which collects every bad field into one INVALID_ARGUMENT; the answers go back through
//! `crate::wire`. Prost types never travel further than `api`.

use chrono::{DateTime, Utc};
use custops_common::error::{ServiceError, Violations};
use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::loyalty::v1 as pb;
use uuid::Uuid;

use crate::domain::Keyed;
use crate::domain::earning::{Purchase, PurchaseLine};
use crate::domain::ledger::{
    AdjustCommand, EarnCommand, EarnSource, EntryContext, EntryKind, RedeemCommand, ReverseAmount,
    ReverseCommand, ReverseTarget, parse_request_id,
};
use crate::domain::limits::{
    MAX_AMOUNT_MINOR, MAX_BALANCE_POINTS, MAX_ENTRY_POINTS, MAX_REQUEST_POINTS, MAX_STOCK,
};
use crate::domain::member::{EnrolCommand, MemberRef};
use crate::domain::money::Currency;
use crate::domain::program::{
    Benefit, BenefitKind, Campaign, ClawbackPolicy, DowngradeMode, EarningRules, NewProgram,
    ProgramRules, ProgramState, ReviewSchedule, Rounding, Stacking, Threshold, Tier, TierPolicy,
};
use crate::domain::reward::{
    AdjustStockCommand, RedeemRewardCommand, ReverseRedemptionCommand, Reward, RewardState,
};
pub(crate) use crate::wire::{from_timestamp, parse_uuid};

// ---- scalar helpers ----

fn check_len(v: &mut Violations, field: &str, value: &str, min: usize, max: usize) {
    let n = value.chars().count();
    if n < min || n > max {
        if min > 0 && n == 0 {
            v.add(field, "required");
        } else {
            v.add(field, format!("must be {min}-{max} characters"));
        }
    }
}

/// `n` with thousands separators, as the contract writes ranges (1,000,000,000).
fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Refuses `value` outside `min..=max`, naming `field` and the range.
fn check_range(v: &mut Violations, field: &str, value: i64, min: i64, max: i64) {
    if !(min..=max).contains(&value) {
        let range = if min < 0 {
            format!("between {} and {}", grouped(min), grouped(max))
        } else {
            format!("{}-{}", grouped(min), grouped(max))
        };
        v.add(field, format!("must be {range}"));
    }
}

fn is_slug(value: &str, max: usize) -> bool {
    let mut chars = value.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn check_optional_slug(v: &mut Violations, field: &str, value: &str, max: usize) {
    if !value.is_empty() && !is_slug(value, max) {
        v.add(
            field,
            format!("must be a lower-case slug of at most {max} characters"),
        );
    }
}

fn request_id(v: &mut Violations, id: &str) -> String {
    v.take("request_id", parse_request_id(id))
        .unwrap_or_default()
}

fn member_ref(v: &mut Violations, field: &str, member: Option<pb::MemberRef>) -> MemberRef {
    use pb::member_ref::Key;
    let placeholder = MemberRef::Id(Uuid::nil());
    match member.and_then(|m| m.key) {
        None => {
            v.add(field, "required: a member_id or a program_customer");
            placeholder
        }
        Some(Key::MemberId(id)) => v
            .take(&format!("{field}.member_id"), parse_uuid(&id))
            .map(MemberRef::Id)
            .unwrap_or(placeholder),
        Some(Key::ProgramCustomer(pc)) => {
            let program_id = v.take(
                &format!("{field}.program_customer.program_id"),
                parse_uuid(&pc.program_id),
            );
            let customer_id = v.take(
                &format!("{field}.program_customer.customer_id"),
                parse_uuid(&pc.customer_id),
            );
            match (program_id, customer_id) {
                (Some(program_id), Some(customer_id)) => MemberRef::Customer {
                    program_id,
                    customer_id,
                },
                _ => placeholder,
            }
        }
    }
}

fn entry_context(
    v: &mut Violations,
    reason: String,
    reason_code: String,
    operator_id: String,
) -> EntryContext {
    check_len(v, "reason", &reason, 0, 500);
    check_optional_slug(v, "reason_code", &reason_code, 64);
    check_len(v, "operator_id", &operator_id, 0, 128);
    EntryContext {
        reason,
        reason_code,
        operator_id,
    }
}

// ---- programs ----

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

fn earning_rules(
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

fn tiers(v: &mut Violations, field: &str, tiers: Vec<pb::Tier>) -> Vec<Tier> {
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

fn tier_policy(
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

fn clawback(v: &mut Violations, field: &str, value: i32) -> ClawbackPolicy {
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

fn program_state(v: &mut Violations, field: &str, value: i32) -> ProgramState {
    match pb::ProgramState::try_from(value) {
        Ok(pb::ProgramState::Archived) => ProgramState::Archived,
        Ok(pb::ProgramState::Active | pb::ProgramState::Unspecified) => ProgramState::Active,
        Err(_) => {
            v.add(field, "unknown value");
            ProgramState::Active
        }
    }
}

fn return_window(v: &mut Violations, field: &str, days: i32) -> u32 {
    if !(0..=365).contains(&days) {
        v.add(field, "must be 0-365");
    }
    u32::try_from(days).unwrap_or(0)
}

fn expiry_days(v: &mut Violations, field: &str, policy: Option<pb::ExpiryPolicy>) -> u32 {
    let days = policy.map(|p| p.expire_after_days).unwrap_or(0);
    if !(0..=3660).contains(&days) {
        v.add(field, "must be 0-3,660");
    }
    u32::try_from(days).unwrap_or(0)
}

/// CreateProgram: the idempotency key and the program.
#[derive(Debug)]
pub struct CreateProgram {
    /// Request id.
    pub request_id: String,
    /// The program.
    pub program: NewProgram,
}

impl TryFrom<pb::CreateProgramRequest> for CreateProgram {
    type Error = ServiceError;

    fn try_from(req: pb::CreateProgramRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let p = req.program.unwrap_or_else(|| {
            v.add("program", "required");
            pb::Program::default()
        });
        check_len(&mut v, "program.display_name", &p.display_name, 1, 100);
        check_len(&mut v, "program.description", &p.description, 0, 2000);
        let currency = v.take("program.currency", Currency::parse(&p.currency));
        let state = program_state(&mut v, "program.state", p.state);
        let time_zone = if p.time_zone.is_empty() {
            "UTC".to_owned()
        } else {
            p.time_zone
        };
        let tiers = tiers(&mut v, "program.tiers", p.tiers);
        let earning = earning_rules(&mut v, "program.earning_rules", p.earning_rules, &tiers);
        let rules = ProgramRules {
            earning,
            expire_after_days: expiry_days(
                &mut v,
                "program.expiry_policy.expire_after_days",
                p.expiry_policy,
            ),
            return_window_days: return_window(
                &mut v,
                "program.return_window_days",
                p.return_window_days,
            ),
            clawback: clawback(&mut v, "program.clawback_policy", p.clawback_policy),
            tier_policy: tier_policy(&mut v, "program.tier_policy", p.tier_policy, tiers.len()),
            tiers,
        };
        v.into_result()?;
        Ok(Self {
            request_id,
            program: NewProgram {
                display_name: p.display_name,
                description: p.description,
                state,
                currency: currency.ok_or_else(|| {
                    ServiceError::invalid_argument("program.currency", "required")
                })?,
                time_zone,
                rules,
            },
        })
    }
}

/// UpdateProgram: which program and what changes.
#[derive(Debug)]
pub struct UpdateProgram {
    /// The program.
    pub program_id: Uuid,
    /// The changes.
    pub patch: crate::domain::program::ProgramPatch,
}

impl TryFrom<pb::UpdateProgramRequest> for UpdateProgram {
    type Error = ServiceError;

    fn try_from(req: pb::UpdateProgramRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let p = req.program.unwrap_or_default();
        let program_id = v.take("program.program_id", parse_uuid(&p.program_id));
        let etag = v.take(
            "program.etag",
            p.etag
                .parse::<i64>()
                .map_err(|_| "the current etag is required".to_owned()),
        );
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "required and non-empty");
        }
        let mut patch = crate::domain::program::ProgramPatch::default();
        let tiers_given = paths.iter().any(|path| path == "tiers");
        let ladder = tiers(&mut Violations::new(), "program.tiers", p.tiers.clone());
        for path in &paths {
            match path.as_str() {
                "display_name" => {
                    check_len(&mut v, "program.display_name", &p.display_name, 1, 100);
                    patch.display_name = Some(p.display_name.clone());
                }
                "description" => {
                    check_len(&mut v, "program.description", &p.description, 0, 2000);
                    patch.description = Some(p.description.clone());
                }
                "state" => patch.state = Some(program_state(&mut v, "program.state", p.state)),
                "time_zone" => {
                    patch.time_zone = Some(if p.time_zone.is_empty() {
                        "UTC".into()
                    } else {
                        p.time_zone.clone()
                    })
                }
                "earning_rules" => {
                    patch.earning = Some(earning_rules(
                        &mut v,
                        "program.earning_rules",
                        p.earning_rules.clone(),
                        &ladder,
                    ));
                }
                "expiry_policy" => {
                    patch.expire_after_days = Some(expiry_days(
                        &mut v,
                        "program.expiry_policy.expire_after_days",
                        p.expiry_policy,
                    ));
                }
                "return_window_days" => {
                    patch.return_window_days = Some(return_window(
                        &mut v,
                        "program.return_window_days",
                        p.return_window_days,
                    ));
                }
                "clawback_policy" => {
                    patch.clawback = Some(clawback(
                        &mut v,
                        "program.clawback_policy",
                        p.clawback_policy,
                    ));
                }
                "tiers" => patch.tiers = Some(tiers(&mut v, "program.tiers", p.tiers.clone())),
                "tier_policy" => {
                    let count = if tiers_given { ladder.len() } else { 2 };
                    patch.tier_policy = Some(tier_policy(
                        &mut v,
                        "program.tier_policy",
                        p.tier_policy,
                        count,
                    ));
                }
                other => v.add("update_mask", format!("`{other}` is not an updatable path")),
            }
        }
        v.into_result()?;
        patch.etag = etag.unwrap_or_default();
        Ok(Self {
            program_id: program_id.unwrap_or_default(),
            patch,
        })
    }
}

/// Program states of a ListPrograms filter.
pub fn program_states(states: &[i32]) -> Result<Vec<ProgramState>, ServiceError> {
    states
        .iter()
        .map(|s| match pb::ProgramState::try_from(*s) {
            Ok(pb::ProgramState::Active) => Ok(ProgramState::Active),
            Ok(pb::ProgramState::Archived) => Ok(ProgramState::Archived),
            _ => Err(ServiceError::invalid_argument(
                "states",
                "ACTIVE or ARCHIVED",
            )),
        })
        .collect()
}

// ---- members ----

/// EnrolMember: key and command.
#[derive(Debug)]
pub struct Enrol {
    /// Request id.
    pub request_id: String,
    /// Command.
    pub command: EnrolCommand,
}

impl TryFrom<pb::EnrolMemberRequest> for Enrol {
    type Error = ServiceError;

    fn try_from(req: pb::EnrolMemberRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let program_id = v.take("program_id", parse_uuid(&req.program_id));
        let customer_id = v.take("customer_id", parse_uuid(&req.customer_id));
        check_optional_slug(&mut v, "enrol_channel", &req.enrol_channel, 64);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: EnrolCommand {
                program_id: program_id.unwrap_or_default(),
                customer_id: customer_id.unwrap_or_default(),
                enrol_channel: req.enrol_channel,
            },
        })
    }
}

/// Whether a read asks for the FULL view (`default_full` when unspecified).
pub fn full_view(view: i32, default_full: bool) -> Result<bool, ServiceError> {
    match pb::MemberView::try_from(view) {
        Ok(pb::MemberView::Unspecified) => Ok(default_full),
        Ok(pb::MemberView::Basic) => Ok(false),
        Ok(pb::MemberView::Full) => Ok(true),
        Err(_) => Err(ServiceError::invalid_argument("view", "BASIC or FULL")),
    }
}

// ---- ledger ----

fn purchase(v: &mut Violations, p: pb::Purchase, order_required: bool) -> Purchase {
    if order_required || !p.order_id.is_empty() {
        if p.order_id.is_empty() {
            v.add("purchase.order_id", "required");
        } else if p.order_id.len() > 128 || !p.order_id.bytes().all(|b| (0x20..=0x7e).contains(&b))
        {
            v.add(
                "purchase.order_id",
                "must be 1-128 printable ASCII characters",
            );
        }
    }
    let amount = p.amount.unwrap_or_else(|| {
        v.add("purchase.amount", "required");
        common::Money::default()
    });
    check_range(
        v,
        "purchase.amount.amount_minor",
        amount.amount_minor,
        1,
        MAX_AMOUNT_MINOR,
    );
    let _ = v.take(
        "purchase.amount.currency",
        Currency::parse(&amount.currency),
    );
    if p.categories.len() > 50 {
        v.add("purchase.categories", "at most 50");
    }
    if p.lines.len() > 500 {
        v.add("purchase.lines", "at most 500");
    }
    let mut lines = Vec::new();
    for (i, line) in p.lines.into_iter().enumerate() {
        let a = line.amount.unwrap_or_default();
        check_range(
            v,
            &format!("purchase.lines[{i}].amount.amount_minor"),
            a.amount_minor,
            0,
            MAX_AMOUNT_MINOR,
        );
        if a.currency != amount.currency {
            v.add(
                format!("purchase.lines[{i}].amount.currency"),
                "must be the purchase currency",
            );
        }
        lines.push(PurchaseLine {
            amount_minor: a.amount_minor,
            category: line.category,
        });
    }
    // Summed in i128: the lines are checked above, but all of them are summed either way.
    let lines_total: i128 = lines.iter().map(|l| i128::from(l.amount_minor)).sum();
    if !lines.is_empty() && lines_total != i128::from(amount.amount_minor) {
        v.add("purchase.amount", "must equal the sum of the lines");
    }
    let purchase_time = p
        .purchase_time
        .as_ref()
        .and_then(|t| v.take("purchase.purchase_time", from_timestamp(t)));
    Purchase {
        order_id: p.order_id,
        amount_minor: amount.amount_minor,
        currency: amount.currency,
        categories: p.categories,
        channel: p.channel,
        lines,
        purchase_time,
    }
}

impl TryFrom<pb::EarnPointsRequest> for Keyed<EarnCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::EarnPointsRequest) -> Result<Self, ServiceError> {
        use pb::earn_points_request::Source;
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let member = member_ref(&mut v, "member", req.member);
        let source = match req.source {
            None => {
                v.add("source", "required: a purchase or a grant");
                EarnSource::Grant {
                    points: 0,
                    qualifying: false,
                    expire_time: None,
                }
            }
            Some(Source::Purchase(p)) => EarnSource::Purchase(purchase(&mut v, p, true)),
            Some(Source::Grant(g)) => {
                check_range(&mut v, "grant.points", g.points, 1, MAX_REQUEST_POINTS);
                if req.reason.is_empty() {
                    v.add("reason", "required for a grant");
                }
                let expire_time = g
                    .expire_time
                    .as_ref()
                    .and_then(|t| v.take("grant.expire_time", from_timestamp(t)));
                EarnSource::Grant {
                    points: g.points,
                    qualifying: g.qualifying,
                    expire_time,
                }
            }
        };
        let context = entry_context(&mut v, req.reason, req.reason_code, req.operator_id);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: EarnCommand {
                member,
                source,
                context,
            },
        })
    }
}

impl TryFrom<pb::RedeemPointsRequest> for Keyed<RedeemCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::RedeemPointsRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let member = member_ref(&mut v, "member", req.member);
        check_range(&mut v, "points", req.points, 1, MAX_REQUEST_POINTS);
        check_len(
            &mut v,
            "external_reference",
            &req.external_reference,
            0,
            128,
        );
        let context = entry_context(&mut v, req.reason, req.reason_code, req.operator_id);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: RedeemCommand {
                member,
                points: req.points,
                context,
                external_reference: req.external_reference,
            },
        })
    }
}

impl TryFrom<pb::AdjustPointsRequest> for Keyed<AdjustCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::AdjustPointsRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let member = member_ref(&mut v, "member", req.member);
        let max = MAX_REQUEST_POINTS;
        check_range(&mut v, "points", req.points, -max, max);
        check_range(
            &mut v,
            "qualifying_points",
            req.qualifying_points,
            -max,
            max,
        );
        if req.points == 0 && req.qualifying_points == 0 {
            v.add("points", "points and qualifying_points cannot both be 0");
        }
        check_len(&mut v, "reason", &req.reason, 1, 500);
        let context = entry_context(&mut v, req.reason, req.reason_code, req.operator_id);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: AdjustCommand {
                member,
                points: req.points,
                qualifying_points: req.qualifying_points,
                context,
            },
        })
    }
}

impl TryFrom<pb::ReversePointsRequest> for Keyed<ReverseCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::ReversePointsRequest) -> Result<Self, ServiceError> {
        use pb::reverse_points_request::{Amount, Target};
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let target = match req.target {
            None => {
                v.add(
                    "target",
                    "required: ledger_entry_id, original_request_id or order",
                );
                ReverseTarget::Entry(Uuid::nil())
            }
            Some(Target::LedgerEntryId(id)) => ReverseTarget::Entry(
                v.take("ledger_entry_id", parse_uuid(&id))
                    .unwrap_or_default(),
            ),
            Some(Target::OriginalRequestId(id)) => ReverseTarget::OriginalRequest(
                v.take("original_request_id", parse_request_id(&id))
                    .unwrap_or_default(),
            ),
            Some(Target::Order(o)) => {
                let program_id = v.take("order.program_id", parse_uuid(&o.program_id));
                if o.order_id.is_empty() {
                    v.add("order.order_id", "required");
                }
                ReverseTarget::Order {
                    program_id: program_id.unwrap_or_default(),
                    order_id: o.order_id,
                }
            }
        };
        let amount = match req.amount {
            None => {
                v.add("amount", "required: all_remaining, points or refund_amount");
                ReverseAmount::AllRemaining
            }
            Some(Amount::AllRemaining(all)) => {
                v.check(all, "all_remaining", "must be true when set");
                ReverseAmount::AllRemaining
            }
            Some(Amount::Points(points)) => {
                // No entry holds more points than an earn may credit.
                check_range(&mut v, "points", points, 1, MAX_ENTRY_POINTS);
                ReverseAmount::Points(points)
            }
            Some(Amount::RefundAmount(m)) => {
                check_range(
                    &mut v,
                    "refund_amount.amount_minor",
                    m.amount_minor,
                    1,
                    MAX_AMOUNT_MINOR,
                );
                let _ = v.take("refund_amount.currency", Currency::parse(&m.currency));
                ReverseAmount::Refund {
                    amount_minor: m.amount_minor,
                    currency: m.currency,
                }
            }
        };
        let context = entry_context(&mut v, req.reason, req.reason_code, req.operator_id);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: ReverseCommand {
                target,
                amount,
                context,
            },
        })
    }
}

/// Entry kinds of a statement filter.
pub fn entry_kinds(kinds: &[i32]) -> Result<Vec<EntryKind>, ServiceError> {
    kinds
        .iter()
        .map(|k| {
            i16::try_from(*k)
                .ok()
                .and_then(EntryKind::from_code)
                .ok_or_else(|| {
                    ServiceError::invalid_argument(
                        "filter.kinds",
                        format!("{k} is not a supported entry kind"),
                    )
                })
        })
        .collect()
}

// ---- rewards ----

impl TryFrom<pb::CreateRewardRequest> for Keyed<Reward> {
    type Error = ServiceError;

    fn try_from(req: pb::CreateRewardRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let r = req.reward.unwrap_or_else(|| {
            v.add("reward", "required");
            pb::Reward::default()
        });
        let program_id = v.take("reward.program_id", parse_uuid(&r.program_id));
        check_len(&mut v, "reward.display_name", &r.display_name, 1, 100);
        check_len(&mut v, "reward.description", &r.description, 0, 2000);
        check_range(
            &mut v,
            "reward.points_cost",
            r.points_cost,
            1,
            MAX_REQUEST_POINTS,
        );
        check_range(
            &mut v,
            "reward.available_stock",
            r.available_stock,
            0,
            MAX_STOCK,
        );
        if !(0..=1_000_000).contains(&r.max_quantity_per_member) {
            v.add("reward.max_quantity_per_member", "must be 0-1,000,000");
        }
        let state = match pb::RewardState::try_from(r.state) {
            Ok(pb::RewardState::Inactive) => RewardState::Inactive,
            Ok(pb::RewardState::Active | pb::RewardState::Unspecified) => RewardState::Active,
            Err(_) => {
                v.add("reward.state", "unknown value");
                RewardState::Active
            }
        };
        let period = r.availability_period.unwrap_or_default();
        let from = period
            .start_time
            .as_ref()
            .and_then(|t| v.take("reward.availability_period.start_time", from_timestamp(t)));
        let until = period
            .end_time
            .as_ref()
            .and_then(|t| v.take("reward.availability_period.end_time", from_timestamp(t)));
        if let (Some(f), Some(u)) = (from, until) {
            v.check(
                f < u,
                "reward.availability_period",
                "start must be before end",
            );
        }
        v.into_result()?;
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        Ok(Self {
            request_id,
            command: Reward {
                reward_id: Uuid::nil(),
                program_id: program_id.unwrap_or_default(),
                display_name: r.display_name,
                description: r.description,
                state,
                points_cost: r.points_cost,
                unlimited_stock: r.unlimited_stock,
                available_stock: r.available_stock,
                redeemed_quantity: 0,
                available_from: from,
                available_until: until,
                min_tier_code: r.min_tier_code,
                max_quantity_per_member: r.max_quantity_per_member,
                etag: 0,
                create_time: epoch,
                update_time: epoch,
            },
        })
    }
}

impl TryFrom<pb::RedeemRewardRequest> for Keyed<RedeemRewardCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::RedeemRewardRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let member = member_ref(&mut v, "member", req.member);
        let reward_id = v.take("reward_id", parse_uuid(&req.reward_id));
        if !(0..=100).contains(&req.quantity) {
            v.add("quantity", "must be 1-100 (0 means 1)");
        }
        check_len(&mut v, "reason", &req.reason, 0, 500);
        check_len(
            &mut v,
            "external_reference",
            &req.external_reference,
            0,
            128,
        );
        check_len(&mut v, "operator_id", &req.operator_id, 0, 128);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: RedeemRewardCommand {
                member,
                reward_id: reward_id.unwrap_or_default(),
                quantity: req.quantity.max(1),
                reason: req.reason,
                external_reference: req.external_reference,
                operator_id: req.operator_id,
            },
        })
    }
}

impl TryFrom<pb::ReverseRewardRedemptionRequest> for Keyed<ReverseRedemptionCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::ReverseRewardRedemptionRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let id = v.take(
            "reward_redemption_id",
            parse_uuid(&req.reward_redemption_id),
        );
        check_len(&mut v, "reason", &req.reason, 0, 500);
        check_len(&mut v, "operator_id", &req.operator_id, 0, 128);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: ReverseRedemptionCommand {
                reward_redemption_id: id.unwrap_or_default(),
                reason: req.reason,
                skip_restock: req.skip_restock,
                operator_id: req.operator_id,
            },
        })
    }
}

impl TryFrom<pb::AdjustRewardStockRequest> for Keyed<AdjustStockCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::AdjustRewardStockRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let reward_id = v.take("reward_id", parse_uuid(&req.reward_id));
        // A range test, not `abs()`: i64::MIN has no absolute value.
        if req.delta == 0 || !(-MAX_STOCK..=MAX_STOCK).contains(&req.delta) {
            v.add(
                "delta",
                format!(
                    "must be non-zero, between {} and {}",
                    grouped(-MAX_STOCK),
                    grouped(MAX_STOCK)
                ),
            );
        }
        check_len(&mut v, "reason", &req.reason, 1, 500);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: AdjustStockCommand {
                reward_id: reward_id.unwrap_or_default(),
                delta: req.delta,
            },
        })
    }
}

/// UpdateReward: which reward and what changes.
#[derive(Debug)]
pub struct UpdateReward {
    /// The reward.
    pub reward_id: Uuid,
    /// The changes.
    pub patch: crate::domain::reward::RewardPatch,
}

impl TryFrom<pb::UpdateRewardRequest> for UpdateReward {
    type Error = ServiceError;

    fn try_from(req: pb::UpdateRewardRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let r = req.reward.unwrap_or_default();
        let reward_id = v.take("reward.reward_id", parse_uuid(&r.reward_id));
        let etag = v.take(
            "reward.etag",
            r.etag
                .parse::<i64>()
                .map_err(|_| "the current etag is required".to_owned()),
        );
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "required and non-empty");
        }
        let mut patch = crate::domain::reward::RewardPatch::default();
        for path in &paths {
            match path.as_str() {
                "display_name" => {
                    check_len(&mut v, "reward.display_name", &r.display_name, 1, 100);
                    patch.display_name = Some(r.display_name.clone());
                }
                "description" => {
                    check_len(&mut v, "reward.description", &r.description, 0, 2000);
                    patch.description = Some(r.description.clone());
                }
                "state" => {
                    patch.state = Some(match pb::RewardState::try_from(r.state) {
                        Ok(pb::RewardState::Inactive) => RewardState::Inactive,
                        Ok(pb::RewardState::Active) => RewardState::Active,
                        _ => {
                            v.add("reward.state", "ACTIVE or INACTIVE");
                            RewardState::Active
                        }
                    })
                }
                "points_cost" => {
                    check_range(
                        &mut v,
                        "reward.points_cost",
                        r.points_cost,
                        1,
                        MAX_REQUEST_POINTS,
                    );
                    patch.points_cost = Some(r.points_cost);
                }
                "unlimited_stock" => patch.unlimited_stock = Some(r.unlimited_stock),
                "availability_period" => {
                    let period = r.availability_period.unwrap_or_default();
                    let from = period.start_time.as_ref().and_then(|t| {
                        v.take("reward.availability_period.start_time", from_timestamp(t))
                    });
                    let until = period.end_time.as_ref().and_then(|t| {
                        v.take("reward.availability_period.end_time", from_timestamp(t))
                    });
                    patch.availability = Some((from, until));
                }
                "min_tier_code" => patch.min_tier_code = Some(r.min_tier_code.clone()),
                "max_quantity_per_member" => {
                    if !(0..=1_000_000).contains(&r.max_quantity_per_member) {
                        v.add("reward.max_quantity_per_member", "must be 0-1,000,000");
                    }
                    patch.max_quantity_per_member = Some(r.max_quantity_per_member);
                }
                other => v.add("update_mask", format!("`{other}` is not an updatable path")),
            }
        }
        v.into_result()?;
        patch.etag = etag.unwrap_or_default();
        Ok(Self {
            reward_id: reward_id.unwrap_or_default(),
            patch,
        })
    }
}
