//! The in-process evaluator: one rule, one customer's facts, at one evaluation time.
//! TODO(segmentation/rules).

use super::facts::{EvalContext, Facts};
use super::rule::Rule;

/// Whether `facts` satisfy `rule` at `ctx`.
pub fn evaluate(_rule: &Rule, _facts: &Facts, _ctx: &EvalContext) -> bool {
    false
}
