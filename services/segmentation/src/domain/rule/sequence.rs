//! A validated sequence condition (rule.proto `SequenceCondition`): "did A then B within N
//! days", optionally "and not C in between", over the customer's custom events ordered by
//! (occur time, activity id by bytes). Built by `wire::rules::parse_rule` against the event
//! types of the catalog.

use crate::domain::catalog::Operator;

use super::{PropertyFilter, Window};

/// Range of `within_days`: the retained activity history.
pub const MAX_SEQUENCE_DAYS: i32 = super::MAX_WINDOW_DAYS;

/// The events of one type that pass every filter.
#[derive(Debug, Clone, PartialEq)]
pub struct EventStep {
    pub event_type: String,
    pub filters: Vec<PropertyFilter>,
}

/// A validated sequence condition.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceCondition {
    /// A.
    pub first: EventStep,
    /// B: strictly after A in event order, at most `within_days` × 24 h after A.
    pub then: EventStep,
    pub within_days: i32,
    /// C: none strictly between A and B.
    pub not_between: Option<EventStep>,
    /// Bounds A's occur time; `None`: the whole retained history.
    pub window: Option<Window>,
}

impl SequenceCondition {
    /// The steps, in the order A, B, C.
    pub fn steps(&self) -> impl Iterator<Item = &EventStep> {
        [
            Some(&self.first),
            Some(&self.then),
            self.not_between.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

    /// True when the result can change with the passage of time alone: a rolling window, or
    /// WITHIN_LAST / NOT_WITHIN_LAST on a filter.
    pub fn time_dependent(&self) -> bool {
        matches!(self.window, Some(Window::LastDays(_)))
            || self.steps().any(|s| {
                s.filters
                    .iter()
                    .any(|f| matches!(f.operator, Operator::WithinLast | Operator::NotWithinLast))
            })
    }

    /// The names a segment's `fields` list records: "event.<type>" of every step, so the feed
    /// re-evaluates the condition when such an event arrives.
    pub fn field_names(&self) -> impl Iterator<Item = String> + '_ {
        self.steps().map(|s| format!("event.{}", s.event_type))
    }
}
