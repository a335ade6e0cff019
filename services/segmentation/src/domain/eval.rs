//! The in-process evaluator: one rule, one customer's facts, at one evaluation time.

use custops_contracts::custops::segmentation::v1 as pb;

use super::facts::{EvalContext, Facts};
use super::rule::Rule;

/// Whether `facts` satisfy `rule` at `ctx`.
pub fn evaluate(_rule: &Rule, _facts: &Facts, _ctx: &EvalContext) -> bool {
    false
}

/// Node-by-node evaluation of `rule` for `facts` at `ctx`.
pub fn explain(_rule: &Rule, _facts: &Facts, _ctx: &EvalContext) -> pb::ConditionExplanation {
    pb::ConditionExplanation::default()
}
