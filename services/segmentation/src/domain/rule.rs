//! A validated rule: the typed condition tree parsed from `custops.segmentation.v1.Condition`.
//! TODO(segmentation/rules).

use std::collections::BTreeSet;

use uuid::Uuid;

/// A rule that passed validation against the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {}

impl Rule {
    /// The segments the rule references, each with the path of its reference node
    /// (e.g. "segment.rule.any.conditions[1].segment.segment_id").
    pub fn referenced_segments(&self) -> Vec<(String, Uuid)> {
        Vec::new()
    }

    /// The catalog fields the rule tests.
    pub fn fields(&self) -> BTreeSet<String> {
        BTreeSet::new()
    }

    /// True when the result can change with the passage of time alone.
    pub fn time_dependent(&self) -> bool {
        false
    }
}
