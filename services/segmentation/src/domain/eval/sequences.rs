//! Sequence conditions in-process (rule.proto `SequenceCondition`), with exactly the semantics
//! of `store::compile::sequences`: one pass over the customer's events in event order
//! (occur time, then activity id by bytes), keeping the latest A not followed by a C; each B
//! is then checked against that A only, as an earlier A is no closer and has no fewer C after
//! it. Linear in the customer's events after the sort.

use chrono::{DateTime, Utc};

use crate::domain::facts::{CustomEvent, EvalContext, Facts};
use crate::domain::rule::{EventStep, SequenceCondition};

use super::{days_span, events, in_window};

/// Whether `facts` satisfy `condition` at `ctx`.
pub(super) fn evaluate(condition: &SequenceCondition, facts: &Facts, ctx: &EvalContext) -> bool {
    let matches = |step: &EventStep, e: &CustomEvent| {
        e.event_type == step.event_type && step.filters.iter().all(|f| events::passes(e, f, ctx))
    };
    let mut relevant: Vec<&CustomEvent> = facts
        .events
        .iter()
        .filter(|e| condition.steps().any(|s| s.event_type == e.event_type))
        .collect();
    relevant.sort_by(|a, b| {
        a.occur_time
            .cmp(&b.occur_time)
            .then_with(|| a.activity_id.as_bytes().cmp(b.activity_id.as_bytes()))
    });
    let span = days_span(condition.within_days);
    // The occur time of the latest A with no C after it so far.
    let mut latest_a: Option<DateTime<Utc>> = None;
    for e in relevant {
        // As B, against the As strictly before it.
        if matches(&condition.then, e)
            && let Some(a) = latest_a
            && e.occur_time - a <= span
        {
            return true;
        }
        // As C, between every earlier A and every later B.
        if let Some(c) = &condition.not_between
            && matches(c, e)
        {
            latest_a = None;
        }
        // As A, for the Bs after it.
        if matches(&condition.first, e) && in_window(e.occur_time, condition.window, ctx) {
            latest_a = Some(e.occur_time);
        }
    }
    false
}
