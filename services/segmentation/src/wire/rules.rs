//! The wire form of rules: `custops.segmentation.v1.Condition` ↔ [`Rule`], evaluation
//! explanations → `ConditionExplanation`, and the value, time and money conversions they share.
//!
//! Neither domain nor store: the API parses requests with it and the store and jobs decode
//! stored rules (kept as encoded `Condition` bytes) with it, so `domain` stays plain Rust.

mod events;
mod parse;

use chrono::{Datelike, NaiveDate};
use custops_contracts::custops::common::v1 as common_pb;
use custops_contracts::custops::segmentation::v1 as pb;
use pb::activity_window::Span;
use pb::condition::Kind;
use pb::value::Kind as ValueKind;

use crate::domain::catalog::Operator;
use crate::domain::eval::{self, Explanation};
use crate::domain::facts::{EvalContext, Facts};
use crate::domain::rule::{Node, Predicate, Rule, Value, Window};

pub use parse::{WireMeasure, operator_from_proto, parse_measure, parse_rule};

use custops_common::time::to_timestamp as timestamp_to_proto;

fn date_to_proto(date: NaiveDate) -> common_pb::Date {
    common_pb::Date {
        year: date.year(),
        month: date.month() as i32,
        day: date.day() as i32,
    }
}

/// The wire operator of a domain operator.
pub fn operator_to_proto(operator: Operator) -> pb::Operator {
    use Operator as O;
    match operator {
        O::Equals => pb::Operator::Equals,
        O::NotEquals => pb::Operator::NotEquals,
        O::LessThan => pb::Operator::LessThan,
        O::LessOrEqual => pb::Operator::LessOrEqual,
        O::GreaterThan => pb::Operator::GreaterThan,
        O::GreaterOrEqual => pb::Operator::GreaterOrEqual,
        O::In => pb::Operator::In,
        O::NotIn => pb::Operator::NotIn,
        O::Between => pb::Operator::Between,
        O::StartsWith => pb::Operator::StartsWith,
        O::EndsWith => pb::Operator::EndsWith,
        O::MatchesPattern => pb::Operator::MatchesPattern,
        O::Contains => pb::Operator::Contains,
        O::NotContains => pb::Operator::NotContains,
        O::ContainsAny => pb::Operator::ContainsAny,
        O::ContainsAll => pb::Operator::ContainsAll,
        O::IsSet => pb::Operator::IsSet,
        O::IsNotSet => pb::Operator::IsNotSet,
        O::WithinLast => pb::Operator::WithinLast,
        O::NotWithinLast => pb::Operator::NotWithinLast,
        O::Before => pb::Operator::Before,
        O::After => pb::Operator::After,
    }
}

/// A domain value as its wire message.
pub fn value_to_proto(value: &Value) -> pb::Value {
    let kind = match value {
        Value::String(v) => ValueKind::StringValue(v.clone()),
        Value::Integer(v) => ValueKind::IntegerValue(*v),
        Value::Double(v) => ValueKind::DoubleValue(*v),
        Value::Bool(v) => ValueKind::BoolValue(*v),
        Value::Timestamp(v) => ValueKind::TimestampValue(timestamp_to_proto(*v)),
        Value::Date(v) => ValueKind::DateValue(date_to_proto(*v)),
        Value::Money(v) => ValueKind::MoneyValue(common_pb::Money {
            amount_minor: v.amount_minor,
            currency: v.currency.clone(),
        }),
        Value::Days(v) => ValueKind::DaysValue(*v),
    };
    pb::Value { kind: Some(kind) }
}

// An inherent method rather than a free function so callers write `rule.to_proto()` as they
// do for every other wire conversion; it lives here to keep prost out of `domain`.
impl Rule {
    /// The rule as its wire message.
    pub fn to_proto(&self) -> pb::Condition {
        node_to_proto(self.root())
    }
}

fn node_to_proto(node: &Node) -> pb::Condition {
    let group = |children: &[Node]| pb::ConditionGroup {
        conditions: children.iter().map(node_to_proto).collect(),
    };
    let kind = match node {
        Node::All(children) => Kind::All(group(children)),
        Node::Any(children) => Kind::Any(group(children)),
        Node::Not(child) => Kind::Not(Box::new(pb::NotCondition {
            condition: Some(Box::new(node_to_proto(child))),
        })),
        Node::Predicate(p) => Kind::Predicate(predicate_to_proto(p)),
        Node::Segment(id) => Kind::Segment(pb::SegmentReference {
            segment_id: id.to_string(),
        }),
        Node::Event(event) => Kind::Event(events::event_to_proto(event)),
        Node::Sequence(sequence) => Kind::Sequence(events::sequence_to_proto(sequence)),
    };
    pb::Condition { kind: Some(kind) }
}

fn predicate_to_proto(predicate: &Predicate) -> pb::Predicate {
    pb::Predicate {
        field: predicate.field.clone(),
        operator: operator_to_proto(predicate.operator) as i32,
        values: predicate.values.iter().map(value_to_proto).collect(),
        window: predicate.window.map(|window| pb::ActivityWindow {
            span: Some(match window {
                Window::LastDays(days) => Span::LastDays(days),
                Window::Range { start, end } => Span::TimeRange(common_pb::TimeRange {
                    start_time: Some(timestamp_to_proto(start)),
                    end_time: Some(timestamp_to_proto(end)),
                }),
            }),
        }),
        filter: (!predicate.filter.is_empty()).then(|| pb::PredicateFilter {
            categories: predicate.filter.categories.clone(),
            channels: predicate.filter.channels.clone(),
            interaction_kinds: predicate.filter.interaction_kinds.clone(),
            loyalty_program_id: predicate.filter.loyalty_program_id.clone(),
        }),
    }
}

/// Node-by-node evaluation of `rule` for `facts` at `ctx`, as its wire message.
pub fn explain(rule: &Rule, facts: &Facts, ctx: &EvalContext) -> pb::ConditionExplanation {
    explanation_to_proto(eval::explain(rule, facts, ctx))
}

/// An explanation tree as its wire message.
pub fn explanation_to_proto(explanation: Explanation) -> pb::ConditionExplanation {
    pb::ConditionExplanation {
        path: explanation.path,
        result: explanation.result,
        children: explanation
            .children
            .into_iter()
            .map(explanation_to_proto)
            .collect(),
        actual_values: explanation
            .actual_values
            .iter()
            .map(value_to_proto)
            .collect(),
        referenced_member: explanation.referenced_member,
    }
}
