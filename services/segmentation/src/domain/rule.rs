//! A validated rule: the typed condition tree segments are defined by, with its limits.
//!
//! `wire::rules::parse_rule` builds a [`Rule`] from the wire `Condition`, so both evaluators only
//! ever see trees that fit the catalog. This module is plain Rust: the wire translation lives
//! in `wire::rules` because both the API and the decoding of stored rules need it.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::catalog::{FieldKey, Operator, ValueType};
use super::facts::Money;

pub mod event;
pub mod sequence;

pub use event::{Aggregate, EventCondition, EventMeasure, PropertyFilter};
pub use sequence::{EventStep, SequenceCondition};

/// Deepest nesting: the root is level 1.
pub const MAX_DEPTH: usize = 8;
/// Most `Condition` nodes in one rule, the root included.
pub const MAX_NODES: usize = 100;
/// Most values in one predicate.
pub const MAX_PREDICATE_VALUES: usize = 1000;
/// Most values in one rule.
pub const MAX_RULE_VALUES: usize = 10_000;
/// Most distinct segments one rule may reference.
pub const MAX_SEGMENT_REFERENCES: usize = 20;
/// Longest string value, in characters.
pub const MAX_STRING_CHARS: usize = 256;
/// Most entries in one filter list, and their longest length in characters.
pub const MAX_FILTER_ENTRIES: usize = 100;
pub const MAX_FILTER_ENTRY_CHARS: usize = 64;
/// Range of `days_value` (WITHIN_LAST, NOT_WITHIN_LAST).
pub const MAX_DAYS: i32 = 36_500;
/// Range of `ActivityWindow.last_days`: the retained activity history.
pub const MAX_WINDOW_DAYS: i32 = 1095;
/// Largest magnitude of an `integer_value` and of a `money_value`'s `amount_minor`: 10^15,
/// the bound every custops service puts on money and counts a request carries. Far past any
/// count, points balance or spend a rule compares, and the evaluators compare in i128 and
/// Postgres numeric anyway.
pub const MAX_INTEGER: i64 = 1_000_000_000_000_000;

/// A rule that passed validation against the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The request-relative path of the root (e.g. "segment.rule"), for reference paths.
    root_path: String,
    root: Node,
}

/// One node of a validated rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Predicate(Predicate),
    Segment(Uuid),
    /// An aggregate of the customer's custom events (`rule/event.rs`).
    Event(EventCondition),
    /// "A then B within N days" over custom events (`rule/sequence.rs`).
    Sequence(SequenceCondition),
}

/// A validated test of one catalog field.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    /// The catalog name, e.g. "purchase.count".
    pub field: String,
    /// What the field reads.
    pub key: FieldKey,
    pub value_type: ValueType,
    pub operator: Operator,
    /// Operands, of kinds that fit `value_type` and `operator`.
    pub values: Vec<Value>,
    /// Windowed fields only; `None` means the whole retained history.
    pub window: Option<Window>,
    pub filter: Filter,
    /// The catalog's `time_dependent` of the field.
    pub field_time_dependent: bool,
}

/// One typed operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Integer(i64),
    Double(f64),
    Bool(bool),
    Timestamp(DateTime<Utc>),
    Date(NaiveDate),
    Money(Money),
    /// A number of days for WITHIN_LAST / NOT_WITHIN_LAST.
    Days(i32),
}

impl Value {
    /// The operand as a number, for DOUBLE fields (integers are accepted there).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Integer(v) => Some(*v as f64),
            Value::Double(v) => Some(*v),
            _ => None,
        }
    }
}

/// The activities an aggregate covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// T − N × 24 h < t ≤ T.
    LastDays(i32),
    /// start ≤ t < end.
    Range {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
}

/// Narrows the activities or memberships a field looks at; empty lists do not narrow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub categories: Vec<String>,
    pub channels: Vec<String>,
    pub interaction_kinds: Vec<String>,
    /// Empty: any program.
    pub loyalty_program_id: String,
}

impl Filter {
    /// Whether the filter narrows nothing (every list empty, any program).
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

impl Rule {
    /// A rule over an already validated tree rooted at `root_path`; only
    /// `wire::rules::parse_rule` calls it, after checking the tree against the catalog.
    pub(crate) fn new(root_path: String, root: Node) -> Self {
        Self { root_path, root }
    }

    /// The request-relative path of the root, as given to `parse_rule`.
    pub fn root_path(&self) -> &str {
        &self.root_path
    }

    /// The root node.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The segments the rule references, each with the path of its reference node
    /// (e.g. "segment.rule.any.conditions[1].segment.segment_id").
    pub fn referenced_segments(&self) -> Vec<(String, Uuid)> {
        let mut out = Vec::new();
        self.root.walk(&self.root_path, &mut |path, node| {
            if let Node::Segment(id) = node {
                out.push((format!("{path}.segment.segment_id"), *id));
            }
        });
        out
    }

    /// The catalog fields the rule tests.
    pub fn fields(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.root.walk(&self.root_path, &mut |_, node| match node {
            Node::Predicate(p) => {
                out.insert(p.field.clone());
            }
            Node::Event(e) => {
                out.insert(e.field_name());
            }
            Node::Sequence(s) => out.extend(s.field_names()),
            _ => {}
        });
        out
    }

    /// True when the result can change with the passage of time alone: a time-dependent
    /// field, WITHIN_LAST / NOT_WITHIN_LAST, or a rolling `last_days` window.
    pub fn time_dependent(&self) -> bool {
        let mut dependent = false;
        self.root.walk(&self.root_path, &mut |_, node| {
            if let Node::Predicate(p) = node {
                dependent |= p.field_time_dependent
                    || matches!(p.operator, Operator::WithinLast | Operator::NotWithinLast)
                    || matches!(p.window, Some(Window::LastDays(_)));
            }
            if let Node::Event(e) = node {
                dependent |= e.time_dependent();
            }
            if let Node::Sequence(s) = node {
                dependent |= s.time_dependent();
            }
        });
        dependent
    }

    /// The custom event types the rule reads (aggregates and sequence steps): the events of
    /// its customers that must be loaded with their facts. Empty for most rules.
    pub fn event_types(&self) -> BTreeSet<String> {
        let mut types = BTreeSet::new();
        self.root.walk(&self.root_path, &mut |_, node| match node {
            Node::Event(e) => {
                types.insert(e.measure.event_type.clone());
            }
            Node::Sequence(s) => types.extend(s.steps().map(|step| step.event_type.clone())),
            _ => {}
        });
        types
    }
}

impl Node {
    /// Calls `visit` on every node in rule order with the node's path.
    pub fn walk(&self, path: &str, visit: &mut impl FnMut(&str, &Node)) {
        visit(path, self);
        match self {
            Node::All(children) | Node::Any(children) => {
                let kind = if matches!(self, Node::All(_)) {
                    "all"
                } else {
                    "any"
                };
                for (i, child) in children.iter().enumerate() {
                    child.walk(&format!("{path}.{kind}.conditions[{i}]"), visit);
                }
            }
            Node::Not(child) => child.walk(&format!("{path}.not.condition"), visit),
            Node::Predicate(_) | Node::Segment(_) | Node::Event(_) | Node::Sequence(_) => {}
        }
    }
}
