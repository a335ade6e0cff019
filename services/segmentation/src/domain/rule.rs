//! A validated rule: the typed condition tree parsed from `custops.segmentation.v1.Condition`.

use std::collections::BTreeSet;

use custops_common::error::Violations;
use custops_contracts::custops::segmentation::v1 as pb;
use uuid::Uuid;

use super::catalog::Catalog;

/// A rule that passed validation against the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The request-relative path of the root (e.g. "segment.rule"), for reference paths.
    root_path: String,
}

/// Parses and validates `condition` against `catalog`; every violation names its place under
/// `path` (e.g. "segment.rule.all.conditions[2].predicate.values[0]").
pub fn parse_rule(
    _condition: &pb::Condition,
    path: &str,
    _catalog: &Catalog,
) -> Result<Rule, Violations> {
    Ok(Rule {
        root_path: path.to_owned(),
    })
}

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

    /// The rule as its wire message.
    pub fn to_proto(&self) -> pb::Condition {
        pb::Condition::default()
    }
}
