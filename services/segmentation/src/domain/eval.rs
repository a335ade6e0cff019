//! The in-process evaluator: one rule, one customer's facts, at one evaluation time.
//!
//! It implements rule.proto's two-valued semantics exactly, and `store::compile` implements
//! the same in SQL (tests/evaluators.rs holds the two equal on random rules and facts):
//! - a predicate on an unset field is false, except IS_NOT_SET; NOT_EQUALS, NOT_IN,
//!   NOT_CONTAINS and NOT_WITHIN_LAST are false on an unset field too;
//! - counts and sums are never unset (0); money compares with the sum in the value's currency;
//! - purchases are net of refunds: amounts are `Activity::net_amount`, and a purchase refunded
//!   in full counts for no purchase field (`Activity::counts_as_purchase`);
//! - ENDS_WITH compares characters at the end, MATCHES_PATTERN is SQL `LIKE` with `\` as its
//!   escape (`domain::pattern`), both case-sensitive;
//! - windows: `last_days` N covers T − N × 24 h < t ≤ T, `time_range` [start, end);
//! - filter lists are ANDed, entries inside a list ORed;
//! - loyalty fields hold when at least one (matching) program membership satisfies the test;
//! - age and days until birthday count a 29 February birthday on 28 February in other years.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};

use super::catalog::{FieldKey, Operator, ValueType};
use super::computed::{ComputedValue, value_over_nothing};
use super::facts::{Activity, ActivityKind, AttributeValue, EvalContext, Facts, Money};
use super::pattern::Pattern;
use super::rule::{EventCondition, Filter, Node, Predicate, Rule, Value, Window};

mod events;
mod sequences;

/// Whether `facts` satisfy `rule` at `ctx`.
pub fn evaluate(rule: &Rule, facts: &Facts, ctx: &EvalContext) -> bool {
    eval_node(rule.root(), facts, ctx)
}

/// One node of an explained evaluation (`wire::rules` turns it into `ConditionExplanation`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Explanation {
    /// The node's path under the rule's root path.
    pub path: String,
    pub result: bool,
    /// Groups and NOT: one entry per child, in rule order.
    pub children: Vec<Explanation>,
    /// Predicates: the values the field had (after window and filter); empty when unset.
    pub actual_values: Vec<Value>,
    /// Segment references: whether the customer is in the referenced segment.
    pub referenced_member: bool,
}

/// Whether `condition` holds for a customer without any event it covers (its aggregate over
/// nothing: COUNT and SUM 0, the others unset). The answer does not depend on the evaluation
/// time: with no event, windows and time filters cover nothing either way, and an unset time
/// fails WITHIN_LAST like every operator.
pub fn event_holds_without_events(condition: &EventCondition) -> bool {
    let ctx = EvalContext {
        now: DateTime::<Utc>::UNIX_EPOCH,
        today: DateTime::<Utc>::UNIX_EPOCH.date_naive(),
    };
    events::evaluate(condition, &Facts::default(), &ctx)
}

/// Node-by-node evaluation of `rule` for `facts` at `ctx`; every child is evaluated (no
/// short-circuit) so the explanation is complete.
pub fn explain(rule: &Rule, facts: &Facts, ctx: &EvalContext) -> Explanation {
    explain_node(rule.root(), rule.root_path(), facts, ctx)
}

fn eval_node(node: &Node, facts: &Facts, ctx: &EvalContext) -> bool {
    match node {
        Node::All(children) => children.iter().all(|c| eval_node(c, facts, ctx)),
        Node::Any(children) => children.iter().any(|c| eval_node(c, facts, ctx)),
        Node::Not(child) => !eval_node(child, facts, ctx),
        Node::Predicate(predicate) => test(predicate, &actual(predicate, facts, ctx), ctx),
        Node::Segment(id) => facts.segments.contains(id),
        Node::Event(condition) => events::evaluate(condition, facts, ctx),
        Node::Sequence(condition) => sequences::evaluate(condition, facts, ctx),
    }
}

fn explain_node(node: &Node, path: &str, facts: &Facts, ctx: &EvalContext) -> Explanation {
    let mut out = Explanation {
        path: path.to_owned(),
        ..Default::default()
    };
    match node {
        Node::All(children) | Node::Any(children) => {
            let kind = if matches!(node, Node::All(_)) {
                "all"
            } else {
                "any"
            };
            out.children = children
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    explain_node(c, &format!("{path}.{kind}.conditions[{i}]"), facts, ctx)
                })
                .collect();
            out.result = if matches!(node, Node::All(_)) {
                out.children.iter().all(|c| c.result)
            } else {
                out.children.iter().any(|c| c.result)
            };
        }
        Node::Not(child) => {
            let child = explain_node(child, &format!("{path}.not.condition"), facts, ctx);
            out.result = !child.result;
            out.children = vec![child];
        }
        Node::Predicate(predicate) => {
            let actual = actual(predicate, facts, ctx);
            out.result = test(predicate, &actual, ctx);
            out.actual_values = actual.values();
        }
        Node::Segment(id) => {
            out.referenced_member = facts.segments.contains(id);
            out.result = out.referenced_member;
        }
        Node::Event(condition) => {
            let actual = events::aggregate(condition, facts, ctx);
            out.result = events::test(condition, actual.as_ref(), ctx);
            out.actual_values = actual.iter().map(Scalar::to_value).collect();
        }
        Node::Sequence(condition) => {
            // Whether the sequence held; no actual values.
            out.result = sequences::evaluate(condition, facts, ctx);
        }
    }
    out
}

/// One value of a field.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Text(String),
    Int(i64),
    Double(f64),
    Bool(bool),
    Time(DateTime<Utc>),
    Date(NaiveDate),
    /// A sum of minor units in `currency` (wide: a sum of i64 can exceed i64).
    Money {
        amount_minor: i128,
        currency: String,
    },
}

/// A field's value for one customer, after window and filter.
#[derive(Debug, Clone, PartialEq)]
enum Actual {
    /// `None` when unset.
    Scalar(Option<Scalar>),
    /// A list field; empty is unset.
    List(Vec<String>),
    /// Loyalty fields: one entry per matching program membership.
    PerMembership(Vec<Option<Scalar>>),
}

impl Actual {
    /// The values an explanation shows.
    fn values(&self) -> Vec<Value> {
        match self {
            Actual::Scalar(value) => value.iter().map(Scalar::to_value).collect(),
            Actual::List(items) => items.iter().map(|s| Value::String(s.clone())).collect(),
            Actual::PerMembership(values) => {
                values.iter().flatten().map(Scalar::to_value).collect()
            }
        }
    }
}

impl Scalar {
    fn to_value(&self) -> Value {
        match self {
            Scalar::Text(v) => Value::String(v.clone()),
            Scalar::Int(v) => Value::Integer(*v),
            Scalar::Double(v) => Value::Double(*v),
            Scalar::Bool(v) => Value::Bool(*v),
            Scalar::Time(v) => Value::Timestamp(*v),
            Scalar::Date(v) => Value::Date(*v),
            // A sum can exceed i64: shown clamped.
            Scalar::Money {
                amount_minor,
                currency,
            } => Value::Money(Money {
                amount_minor: i64::try_from(*amount_minor).unwrap_or(if *amount_minor < 0 {
                    i64::MIN
                } else {
                    i64::MAX
                }),
                currency: currency.clone(),
            }),
        }
    }
}

fn text(value: &str) -> Option<Scalar> {
    (!value.is_empty()).then(|| Scalar::Text(value.to_owned()))
}

/// The value `predicate` tests.
fn actual(predicate: &Predicate, facts: &Facts, ctx: &EvalContext) -> Actual {
    use FieldKey as K;
    let scalar = |value: Option<Scalar>| Actual::Scalar(value);
    match &predicate.key {
        K::CustomerCreateTime => scalar(facts.customer_create_time.map(Scalar::Time)),
        K::Country => scalar(text(&facts.country)),
        K::Region => scalar(text(&facts.region)),
        K::City => scalar(text(&facts.city)),
        K::BirthDate => scalar(facts.birth_date.map(Scalar::Date)),
        K::Age => scalar(
            facts
                .birth_date
                .map(|birth| Scalar::Int(i64::from(age(birth, ctx.today)))),
        ),
        K::DaysUntilBirthday => scalar(
            facts
                .birth_date
                .map(|birth| Scalar::Int(days_until_birthday(birth, ctx.today))),
        ),
        K::Gender => scalar(text(&facts.gender)),
        K::IncomeBand => scalar(text(&facts.income_band)),
        K::Occupation => scalar(text(&facts.occupation)),
        K::Education => scalar(text(&facts.education)),
        K::Interests => Actual::List(facts.interests.clone()),
        K::LifestyleTags => Actual::List(facts.lifestyle_tags.clone()),
        K::Tags => Actual::List(facts.tags.clone()),
        K::Attribute(name) => scalar(attribute(facts, name, predicate.value_type)),
        K::ConsentSms => scalar(Some(Scalar::Bool(facts.consents.sms))),
        K::ConsentEmail => scalar(Some(Scalar::Bool(facts.consents.email))),
        K::ConsentAppPush => scalar(Some(Scalar::Bool(facts.consents.app_push))),
        K::ConsentWechat => scalar(Some(Scalar::Bool(facts.consents.wechat))),
        K::PurchaseCount | K::InteractionCount => {
            let count = matching(predicate, facts, ctx).count();
            scalar(Some(Scalar::Int(count as i64)))
        }
        K::PurchaseAmount => {
            // The comparison is in the value's currency; validation gives every value one.
            let currency = match predicate.values.first() {
                Some(Value::Money(money)) => money.currency.clone(),
                _ => String::new(),
            };
            let amount_minor: i128 = matching(predicate, facts, ctx)
                .filter_map(Activity::net_amount)
                .filter(|money| money.currency == currency)
                .map(|money| i128::from(money.amount_minor))
                .sum();
            scalar(Some(Scalar::Money {
                amount_minor,
                currency,
            }))
        }
        K::PurchaseFirstTime => scalar(
            matching(predicate, facts, ctx)
                .map(|a| a.occur_time)
                .min()
                .map(Scalar::Time),
        ),
        K::PurchaseLastTime | K::InteractionLastTime => scalar(
            matching(predicate, facts, ctx)
                .map(|a| a.occur_time)
                .max()
                .map(Scalar::Time),
        ),
        K::PurchaseCategories => {
            let set: BTreeSet<&String> = matching(predicate, facts, ctx)
                .flat_map(|a| a.categories.iter())
                .collect();
            Actual::List(set.into_iter().cloned().collect())
        }
        K::PurchaseChannels => {
            // An activity without a channel adds none.
            let set: BTreeSet<&String> = matching(predicate, facts, ctx)
                .map(|a| &a.channel)
                .filter(|c| !c.is_empty())
                .collect();
            Actual::List(set.into_iter().cloned().collect())
        }
        K::RfmGroup => scalar(text(&facts.rfm.group)),
        K::RfmRecencyScore => scalar(score(facts.rfm.recency_score)),
        K::RfmFrequencyScore => scalar(score(facts.rfm.frequency_score)),
        K::RfmMonetaryScore => scalar(score(facts.rfm.monetary_score)),
        K::RfmRecencyDays => scalar(facts.rfm.recency_days.map(|d| Scalar::Int(i64::from(d)))),
        K::RfmFrequency => scalar(Some(Scalar::Int(facts.rfm.frequency))),
        K::RfmMonetary => scalar(Some(Scalar::Int(facts.rfm.monetary_minor))),
        K::LifecycleStage => scalar(text(&facts.lifecycle.stage)),
        K::LifecycleStageStartTime => scalar(Some(Scalar::Time(facts.lifecycle.stage_start_time))),
        K::LifecycleChurnRisk => scalar(Some(Scalar::Bool(facts.lifecycle.churn_risk))),
        K::LifecycleChurnRiskScore => {
            scalar(Some(Scalar::Double(facts.lifecycle.churn_risk_score)))
        }
        K::PredictedProbabilityAlive => scalar(
            facts
                .prediction
                .map(|p| Scalar::Double(p.probability_alive)),
        ),
        K::PredictedPurchases90d => scalar(
            facts
                .prediction
                .map(|p| Scalar::Double(p.expected_purchases_90d)),
        ),
        K::PredictedTransactionValue => scalar(
            facts
                .prediction
                .map(|p| Scalar::Int(p.expected_value_minor)),
        ),
        K::PredictedClv => scalar(facts.prediction.map(|p| Scalar::Int(p.clv_minor))),
        K::PredictedChurnRisk => scalar(facts.prediction.map(|p| Scalar::Bool(p.churn_risk))),
        K::Computed { name, aggregate } => scalar(
            facts
                .computed
                .get(name)
                .cloned()
                .or_else(|| value_over_nothing(*aggregate))
                .map(|value| match value {
                    ComputedValue::Integer(v) => Scalar::Int(v),
                    ComputedValue::Double(v) => Scalar::Double(v),
                    ComputedValue::Time(v) => Scalar::Time(v),
                    ComputedValue::Text(v) => Scalar::Text(v),
                })
                .filter(|v| !matches!(v, Scalar::Text(t) if t.is_empty())),
        ),
        K::LoyaltyTier | K::LoyaltyPoints | K::LoyaltyQualifyingPoints | K::LoyaltyEnrollTime => {
            let program = &predicate.filter.loyalty_program_id;
            Actual::PerMembership(
                facts
                    .loyalty
                    .iter()
                    .filter(|m| program.is_empty() || m.loyalty_program_id == *program)
                    .map(|m| match predicate.key {
                        K::LoyaltyTier => text(&m.tier),
                        K::LoyaltyPoints => Some(Scalar::Int(m.points)),
                        K::LoyaltyQualifyingPoints => Some(Scalar::Int(m.qualifying_points)),
                        _ => m.enroll_time.map(Scalar::Time),
                    })
                    .collect(),
            )
        }
        K::FeedbackLastNpsScore => scalar(
            facts
                .feedback
                .last_nps_score
                .map(|s| Scalar::Int(i64::from(s))),
        ),
        K::FeedbackLastNpsCategory => scalar(text(facts.feedback.last_nps_category())),
        K::FeedbackLastNpsTime => scalar(facts.feedback.last_nps_time.map(Scalar::Time)),
        K::FeedbackLastCsatScore => scalar(
            facts
                .feedback
                .last_csat_score
                .map(|s| Scalar::Int(i64::from(s))),
        ),
        K::FeedbackOpenTicketCount => scalar(Some(Scalar::Int(i64::from(
            facts.feedback.open_ticket_count,
        )))),
    }
}

/// RFM scores are 0 when not scored.
fn score(value: i32) -> Option<Scalar> {
    (value != 0).then(|| Scalar::Int(i64::from(value)))
}

/// A custom attribute of the definition's type; a value of another type counts as unset.
fn attribute(facts: &Facts, name: &str, value_type: ValueType) -> Option<Scalar> {
    match (value_type, facts.attributes.get(name)?) {
        (ValueType::String, AttributeValue::String(v)) => text(v),
        (ValueType::Integer, AttributeValue::Integer(v)) => Some(Scalar::Int(*v)),
        (ValueType::Double, AttributeValue::Double(v)) => Some(Scalar::Double(*v)),
        (ValueType::Bool, AttributeValue::Bool(v)) => Some(Scalar::Bool(*v)),
        (ValueType::Timestamp, AttributeValue::Timestamp(v)) => Some(Scalar::Time(*v)),
        (ValueType::Date, AttributeValue::Date(v)) => Some(Scalar::Date(*v)),
        _ => None,
    }
}

/// The activities a purchase.* or interaction.* predicate covers.
fn matching<'f>(
    predicate: &'f Predicate,
    facts: &'f Facts,
    ctx: &'f EvalContext,
) -> impl Iterator<Item = &'f Activity> + 'f {
    let purchases = matches!(
        predicate.key,
        FieldKey::PurchaseCount
            | FieldKey::PurchaseAmount
            | FieldKey::PurchaseFirstTime
            | FieldKey::PurchaseLastTime
            | FieldKey::PurchaseCategories
            | FieldKey::PurchaseChannels
    );
    facts.activities.iter().filter(move |a| {
        let kind_ok = match &a.kind {
            // A purchase refunded in full is no purchase (`Activity::counts_as_purchase`).
            ActivityKind::Purchase => purchases && a.counts_as_purchase(),
            ActivityKind::Interaction(kind) => {
                !purchases
                    && (predicate.filter.interaction_kinds.is_empty()
                        || predicate.filter.interaction_kinds.contains(kind))
            }
        };
        kind_ok && in_window(a.occur_time, predicate.window, ctx) && passes(a, &predicate.filter)
    })
}

fn in_window(time: DateTime<Utc>, window: Option<Window>, ctx: &EvalContext) -> bool {
    match window {
        None => true,
        Some(Window::LastDays(days)) => ctx.now - days_span(days) < time && time <= ctx.now,
        Some(Window::Range { start, end }) => start <= time && time < end,
    }
}

fn passes(activity: &Activity, filter: &Filter) -> bool {
    (filter.categories.is_empty()
        || activity
            .categories
            .iter()
            .any(|c| filter.categories.contains(c)))
        && (filter.channels.is_empty() || filter.channels.contains(&activity.channel))
}

/// N × 24 h (not calendar days: a DST change does not stretch a window).
fn days_span(days: i32) -> Duration {
    Duration::hours(24 * i64::from(days))
}

/// The birthday of someone born on `birth` in `year`: 29 February falls on 28 February in
/// years without one.
pub fn birthday_in(birth: NaiveDate, year: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(year, birth.month(), birth.day())
        .or_else(|| NaiveDate::from_ymd_opt(year, 2, 28))
}

/// Whole years from `birth` to `today`.
pub fn age(birth: NaiveDate, today: NaiveDate) -> i32 {
    let years = today.year() - birth.year();
    match birthday_in(birth, today.year()) {
        Some(birthday) if today < birthday => years - 1,
        _ => years,
    }
}

/// Days from `today` to the next birthday, 0 on the day.
pub fn days_until_birthday(birth: NaiveDate, today: NaiveDate) -> i64 {
    let this_year = birthday_in(birth, today.year());
    let next = match this_year {
        Some(day) if day >= today => Some(day),
        _ => birthday_in(birth, today.year() + 1),
    };
    next.map_or(0, |day| (day - today).num_days())
}

/// The predicate's result on `actual`.
fn test(predicate: &Predicate, actual: &Actual, ctx: &EvalContext) -> bool {
    let op = predicate.operator;
    let values = &predicate.values;
    match actual {
        Actual::Scalar(value) => match (op, value) {
            (Operator::IsSet, v) => v.is_some(),
            (Operator::IsNotSet, v) => v.is_none(),
            (_, None) => false,
            (_, Some(v)) => compare(v, op, values, ctx),
        },
        Actual::PerMembership(entries) => match op {
            Operator::IsSet => entries.iter().any(Option::is_some),
            Operator::IsNotSet => entries.iter().all(Option::is_none),
            _ => entries
                .iter()
                .flatten()
                .any(|v| compare(v, op, values, ctx)),
        },
        Actual::List(items) => {
            let has = |v: &Value| matches!(v, Value::String(s) if items.contains(s));
            match op {
                Operator::IsSet => !items.is_empty(),
                Operator::IsNotSet => items.is_empty(),
                Operator::Contains => values.first().is_some_and(has),
                Operator::NotContains => {
                    !items.is_empty() && values.first().is_some_and(|v| !has(v))
                }
                Operator::ContainsAny => values.iter().any(has),
                Operator::ContainsAll => !values.is_empty() && values.iter().all(has),
                _ => false,
            }
        }
    }
}

fn compare(actual: &Scalar, op: Operator, values: &[Value], ctx: &EvalContext) -> bool {
    use Operator as O;
    let first = values.first();
    let order = |value: Option<&Value>| value.and_then(|v| order(actual, v));
    match op {
        O::Equals => order(first) == Some(Ordering::Equal),
        O::NotEquals => matches!(order(first), Some(o) if o != Ordering::Equal),
        O::In => values
            .iter()
            .any(|v| order(Some(v)) == Some(Ordering::Equal)),
        O::NotIn => values
            .iter()
            .all(|v| matches!(order(Some(v)), Some(o) if o != Ordering::Equal)),
        O::LessThan | O::Before => order(first) == Some(Ordering::Less),
        O::LessOrEqual => matches!(order(first), Some(Ordering::Less | Ordering::Equal)),
        O::GreaterThan | O::After => order(first) == Some(Ordering::Greater),
        O::GreaterOrEqual => matches!(order(first), Some(Ordering::Greater | Ordering::Equal)),
        O::Between => {
            matches!(
                order(values.first()),
                Some(Ordering::Greater | Ordering::Equal)
            ) && matches!(order(values.get(1)), Some(Ordering::Less | Ordering::Equal))
        }
        O::StartsWith => match (actual, first) {
            (Scalar::Text(a), Some(Value::String(prefix))) => a.starts_with(prefix.as_str()),
            _ => false,
        },
        O::EndsWith => match (actual, first) {
            (Scalar::Text(a), Some(Value::String(suffix))) => a.ends_with(suffix.as_str()),
            _ => false,
        },
        // Validation parsed the pattern once already; a stored rule was valid when saved.
        O::MatchesPattern => match (actual, first) {
            (Scalar::Text(a), Some(Value::String(pattern))) => {
                Pattern::parse(pattern).is_ok_and(|p| p.matches(a))
            }
            _ => false,
        },
        O::WithinLast | O::NotWithinLast => match (actual, first) {
            (Scalar::Time(t), Some(Value::Days(days))) => {
                let cutoff = ctx.now - days_span(*days);
                if op == O::WithinLast {
                    cutoff < *t && *t <= ctx.now
                } else {
                    *t <= cutoff
                }
            }
            _ => false,
        },
        // List operators and IS_SET / IS_NOT_SET are handled by the caller.
        O::Contains | O::NotContains | O::ContainsAny | O::ContainsAll | O::IsSet | O::IsNotSet => {
            false
        }
    }
}

/// How `actual` orders against `value`; `None` when they cannot be compared.
fn order(actual: &Scalar, value: &Value) -> Option<Ordering> {
    match (actual, value) {
        (Scalar::Text(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Scalar::Int(a), Value::Integer(b)) => Some(a.cmp(b)),
        (Scalar::Double(a), value) => value.as_f64().map(|b| pg_float_cmp(*a, b)),
        (Scalar::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        (Scalar::Time(a), Value::Timestamp(b)) => Some(a.cmp(b)),
        (Scalar::Date(a), Value::Date(b)) => Some(a.cmp(b)),
        (
            Scalar::Money {
                amount_minor,
                currency,
            },
            Value::Money(b),
        ) if *currency == b.currency => Some(amount_minor.cmp(&i128::from(b.amount_minor))),
        _ => None,
    }
}

/// Postgres orders NaN above every number and equal to itself.
fn pg_float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
    }

    #[test]
    fn leap_day_birthdays_fall_on_28_february_in_other_years() {
        let birth = date(2000, 2, 29);
        assert_eq!(age(birth, date(2027, 2, 27)), 26);
        assert_eq!(age(birth, date(2027, 2, 28)), 27);
        assert_eq!(age(birth, date(2028, 2, 28)), 27);
        assert_eq!(age(birth, date(2028, 2, 29)), 28);
        assert_eq!(days_until_birthday(birth, date(2027, 2, 28)), 0);
        assert_eq!(days_until_birthday(birth, date(2027, 2, 27)), 1);
        assert_eq!(days_until_birthday(birth, date(2027, 3, 1)), 365);
        assert_eq!(days_until_birthday(birth, date(2028, 2, 28)), 1);
        assert_eq!(
            days_until_birthday(date(1990, 12, 31), date(2026, 1, 1)),
            364
        );
        assert_eq!(age(date(1990, 3, 1), date(2026, 2, 28)), 35);
    }
}
