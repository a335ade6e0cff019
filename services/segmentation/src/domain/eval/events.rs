//! Event conditions in-process (rule.proto `EventCondition`), with exactly the semantics of
//! `store::compile::events`: the covered events are those of the type, inside the window, that
//! pass every filter; numbers are added in event order (occur time, then activity id by
//! bytes), each first bounded to ±10^250, so the float sum is the one Postgres computes with
//! `sum(… ORDER BY …)`; the most frequent value breaks ties towards the smallest string by
//! bytes (`COLLATE "C"`).

use std::collections::BTreeMap;

use crate::domain::catalog::{Operator, PropertyType};
use crate::domain::facts::{CustomEvent, EvalContext, Facts, PropertyValue};
use crate::domain::rule::{Aggregate, EventCondition, PropertyFilter, Value};

use super::{Scalar, compare, in_window, pg_float_cmp};

/// Each number is bounded to this magnitude before it is added, so no sum overflows (Postgres
/// would refuse it): far beyond any real property.
const MAX_SUMMAND: f64 = 1e250;
/// Numbers smaller than this in magnitude are added as 0, so no average underflows to 0
/// (Postgres refuses that too).
const MIN_SUMMAND: f64 = 1e-250;

/// Whether `facts` satisfy `condition` at `ctx`.
pub(super) fn evaluate(condition: &EventCondition, facts: &Facts, ctx: &EvalContext) -> bool {
    test(condition, aggregate(condition, facts, ctx).as_ref(), ctx)
}

/// The condition's result on the aggregate `actual` (`None`: unset).
pub(super) fn test(condition: &EventCondition, actual: Option<&Scalar>, ctx: &EvalContext) -> bool {
    test_scalar(condition.operator, &condition.values, actual, ctx)
}

fn test_scalar(op: Operator, values: &[Value], actual: Option<&Scalar>, ctx: &EvalContext) -> bool {
    match (op, actual) {
        (Operator::IsSet, v) => v.is_some(),
        (Operator::IsNotSet, v) => v.is_none(),
        (_, None) => false,
        (_, Some(v)) => compare(v, op, values, ctx),
    }
}

/// The aggregate of the covered events; `None` when unset.
pub(super) fn aggregate(
    condition: &EventCondition,
    facts: &Facts,
    ctx: &EvalContext,
) -> Option<Scalar> {
    let currency = condition.values.iter().find_map(|v| match v {
        Value::Money(money) => Some(money.currency.as_str()),
        _ => None,
    });
    let condition = &condition.measure;
    let mut covered: Vec<&CustomEvent> = facts
        .events
        .iter()
        .filter(|e| {
            e.event_type == condition.event_type
                && in_window(e.occur_time, condition.window, ctx)
                && condition.filters.iter().all(|f| passes(e, f, ctx))
        })
        .collect();
    covered.sort_by(|a, b| {
        a.occur_time
            .cmp(&b.occur_time)
            .then_with(|| a.activity_id.as_bytes().cmp(b.activity_id.as_bytes()))
    });
    if condition.is_money() {
        return money_aggregate(
            condition.aggregate,
            &covered,
            &condition.property,
            currency.unwrap_or_default(),
        );
    }
    let (events, property) = (&covered, condition.property.as_str());
    let numbers = move || {
        events
            .iter()
            .filter_map(move |e| match e.properties.get(property) {
                Some(PropertyValue::Number(n)) => Some(*n),
                _ => None,
            })
    };
    match condition.aggregate {
        Aggregate::Count => Some(Scalar::Int(covered.len() as i64)),
        Aggregate::Sum => Some(Scalar::Double(sum(numbers()).unwrap_or(0.0))),
        Aggregate::Min => numbers()
            .min_by(|a, b| pg_float_cmp(*a, *b))
            .map(Scalar::Double),
        Aggregate::Max => numbers()
            .max_by(|a, b| pg_float_cmp(*a, *b))
            .map(Scalar::Double),
        Aggregate::Average => {
            let count = numbers().count();
            sum(numbers()).map(|total| Scalar::Double(total / count as f64))
        }
        Aggregate::FirstTime => covered.first().map(|e| Scalar::Time(e.occur_time)),
        Aggregate::LastTime => covered.iter().map(|e| e.occur_time).max().map(Scalar::Time),
        Aggregate::MostFrequent => {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for e in &covered {
                if let Some(PropertyValue::String(s)) = e.properties.get(&condition.property)
                    && !s.is_empty()
                {
                    *counts.entry(s.as_str()).or_default() += 1;
                }
            }
            // The first (smallest by bytes) of the most frequent values.
            let mut best: Option<(&str, usize)> = None;
            for (value, count) in counts {
                if best.is_none_or(|(_, most)| count > most) {
                    best = Some((value, count));
                }
            }
            best.map(|(value, _)| Scalar::Text(value.to_owned()))
        }
    }
}

/// SUM, MIN, MAX or AVERAGE of money property `property` over the `covered` events whose value
/// is in `currency`, in i128 minor units (exact, as `numeric` in SQL); SUM is 0 over nothing,
/// the others unset; AVERAGE truncates toward zero to whole minor units, as SQL's `div`.
fn money_aggregate(
    aggregate: Aggregate,
    covered: &[&CustomEvent],
    property: &str,
    currency: &str,
) -> Option<Scalar> {
    let amounts: Vec<i128> = covered
        .iter()
        .filter_map(|e| match e.properties.get(property) {
            Some(PropertyValue::Money(m)) if m.currency == currency => {
                Some(i128::from(m.amount_minor))
            }
            _ => None,
        })
        .collect();
    let amount_minor = match aggregate {
        Aggregate::Sum => Some(amounts.iter().sum()),
        Aggregate::Min => amounts.iter().min().copied(),
        Aggregate::Max => amounts.iter().max().copied(),
        _ => (!amounts.is_empty()).then(|| amounts.iter().sum::<i128>() / amounts.len() as i128),
    };
    amount_minor.map(|amount_minor| Scalar::Money {
        amount_minor,
        currency: currency.to_owned(),
    })
}

/// The float sum in the given order, each value bounded; `None` over nothing.
fn sum(numbers: impl Iterator<Item = f64>) -> Option<f64> {
    numbers
        .map(|n| {
            if n.abs() < MIN_SUMMAND {
                0.0
            } else {
                n.clamp(-MAX_SUMMAND, MAX_SUMMAND)
            }
        })
        .reduce(|total, n| total + n)
}

/// Whether `event` passes `filter`.
pub(super) fn passes(event: &CustomEvent, filter: &PropertyFilter, ctx: &EvalContext) -> bool {
    let value = match event.properties.get(&filter.property) {
        Some(PropertyValue::String(s)) if !s.is_empty() => Some(Scalar::Text(s.clone())),
        Some(PropertyValue::Number(n)) => Some(Scalar::Double(*n)),
        Some(PropertyValue::Bool(b)) => Some(Scalar::Bool(*b)),
        Some(PropertyValue::Time(t)) => Some(Scalar::Time(*t)),
        // Compared in the operands' currency: another one never orders (reads as unset).
        Some(PropertyValue::Money(m)) => Some(Scalar::Money {
            amount_minor: i128::from(m.amount_minor),
            currency: m.currency.clone(),
        }),
        // Empty strings are unset.
        Some(PropertyValue::String(_)) | None => None,
    };
    // A value of another type than the definition's reads as unset.
    let value = value.filter(|v| {
        matches!(
            (filter.property_type, v),
            (PropertyType::String, Scalar::Text(_))
                | (PropertyType::Number, Scalar::Double(_))
                | (PropertyType::Bool, Scalar::Bool(_))
                | (PropertyType::Time, Scalar::Time(_))
                | (PropertyType::Money, Scalar::Money { .. })
        )
    });
    test_scalar(filter.operator, &filter.values, value.as_ref(), ctx)
}
