//! `custops.segmentation.v1.Condition` → [`Rule`]: validation against the catalog.
//!
//! [`parse_rule`] is the only way to build a [`Rule`], so both evaluators only ever see trees
//! that fit the catalog: known fields, operators the field offers, the right number and kinds
//! of values, windows and filters only where the field accepts them, and the size limits of
//! rule.proto. Every problem is collected (not just the first) and named by its path in the
//! request, e.g. `segment.rule.all.conditions[2].predicate.values[0]`.
//!
//! Timestamps are truncated to whole microseconds when parsed: Postgres stores microseconds,
//! and the SQL evaluator must compare exactly what the Rust one compares.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use custops_common::error::Violations;
use custops_contracts::custops::common::v1 as common_pb;
use custops_contracts::custops::segmentation::v1 as pb;
use pb::activity_window::Span;
use pb::condition::Kind;
use pb::value::Kind as ValueKind;
use uuid::Uuid;

use crate::domain::catalog::{
    Catalog, FieldDef, FilterDimension, INTERACTION_KINDS, Operator, ValueType,
};
use crate::domain::facts::Money;
use crate::domain::pattern::Pattern;
use crate::domain::rule::EventMeasure;
use crate::domain::rule::{
    Filter, MAX_DAYS, MAX_DEPTH, MAX_FILTER_ENTRIES, MAX_FILTER_ENTRY_CHARS, MAX_INTEGER,
    MAX_NODES, MAX_PREDICATE_VALUES, MAX_RULE_VALUES, MAX_SEGMENT_REFERENCES, MAX_STRING_CHARS,
    MAX_WINDOW_DAYS, Node, Predicate, Rule, Value, Window,
};

use super::operator_to_proto;

mod events;

pub use events::WireMeasure;

/// Parses and validates `condition` against `catalog`; every violation names its place under
/// `path` (e.g. "segment.rule.all.conditions[2].predicate.values[0]").
pub fn parse_rule(
    condition: &pb::Condition,
    path: &str,
    catalog: &Catalog,
) -> Result<Rule, Violations> {
    let mut parser = Parser::new(catalog);
    let root = parser.node(condition, path, 1);
    match root {
        Some(root) if !parser.failed => Ok(Rule::new(path.to_owned(), root)),
        _ => Err(parser.violations),
    }
}

/// Parses and validates the measure of a computed trait against `catalog`'s event types;
/// every violation names its place under `path` (e.g. "computed_trait.where[0].property").
pub fn parse_measure(
    wire: &WireMeasure<'_>,
    path: &str,
    catalog: &Catalog,
) -> Result<EventMeasure, Violations> {
    let mut parser = Parser::new(catalog);
    match parser.measure(wire, path) {
        Some(measure) if !parser.failed => Ok(measure),
        _ => Err(parser.violations),
    }
}

struct Parser<'c> {
    catalog: &'c Catalog,
    violations: Violations,
    /// Whether any violation was recorded (`Violations` does not expose its length).
    failed: bool,
    nodes: usize,
    values: usize,
    segments: BTreeSet<Uuid>,
}

impl<'c> Parser<'c> {
    fn new(catalog: &'c Catalog) -> Self {
        Parser {
            catalog,
            violations: Violations::new(),
            failed: false,
            nodes: 0,
            values: 0,
            segments: BTreeSet::new(),
        }
    }
}

impl Parser<'_> {
    fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.failed = true;
        self.violations.add(field, description);
    }

    fn node(&mut self, condition: &pb::Condition, path: &str, level: usize) -> Option<Node> {
        self.nodes += 1;
        if self.nodes == MAX_NODES + 1 {
            self.add(
                path,
                format!(
                    "a rule holds at most {MAX_NODES} conditions; this one is the first beyond"
                ),
            );
        }
        if self.nodes > MAX_NODES {
            return None;
        }
        if level > MAX_DEPTH {
            self.add(
                path,
                format!("a rule is nested at most {MAX_DEPTH} levels deep; this condition is at level {level}"),
            );
            return None;
        }
        match &condition.kind {
            None => {
                self.add(
                    path,
                    "exactly one of all, any, not, predicate, segment, event or sequence must be set",
                );
                None
            }
            Some(Kind::All(group)) => self
                .group(group, &format!("{path}.all"), level)
                .map(Node::All),
            Some(Kind::Any(group)) => self
                .group(group, &format!("{path}.any"), level)
                .map(Node::Any),
            Some(Kind::Not(not)) => {
                let child_path = format!("{path}.not.condition");
                match &not.condition {
                    None => {
                        self.add(child_path, "the condition to negate is required");
                        None
                    }
                    Some(child) => self
                        .node(child, &child_path, level + 1)
                        .map(|child| Node::Not(Box::new(child))),
                }
            }
            Some(Kind::Predicate(predicate)) => {
                self.predicate(predicate, &format!("{path}.predicate"))
            }
            Some(Kind::Segment(reference)) => {
                self.segment(reference, &format!("{path}.segment.segment_id"))
            }
            Some(Kind::Event(event)) => self.event(event, &format!("{path}.event")),
            Some(Kind::Sequence(sequence)) => self.sequence(sequence, &format!("{path}.sequence")),
        }
    }

    fn group(&mut self, group: &pb::ConditionGroup, path: &str, level: usize) -> Option<Vec<Node>> {
        let conditions_path = format!("{path}.conditions");
        if group.conditions.is_empty() {
            self.add(
                &conditions_path,
                "a group holds 1–100 conditions; this one is empty",
            );
            return None;
        }
        if group.conditions.len() > MAX_NODES {
            self.add(
                &conditions_path,
                format!(
                    "a group holds at most {MAX_NODES} conditions, got {}",
                    group.conditions.len()
                ),
            );
        }
        let mut children = Vec::with_capacity(group.conditions.len());
        let mut complete = true;
        for (i, child) in group.conditions.iter().enumerate() {
            match self.node(child, &format!("{conditions_path}[{i}]"), level + 1) {
                Some(child) => children.push(child),
                None => complete = false,
            }
        }
        complete.then_some(children)
    }

    fn segment(&mut self, reference: &pb::SegmentReference, path: &str) -> Option<Node> {
        let Ok(id) = Uuid::parse_str(&reference.segment_id) else {
            self.add(path, "must be a segment id (a UUID)");
            return None;
        };
        if self.segments.insert(id) && self.segments.len() == MAX_SEGMENT_REFERENCES + 1 {
            self.add(
                path,
                format!("a rule references at most {MAX_SEGMENT_REFERENCES} segments"),
            );
        }
        Some(Node::Segment(id))
    }

    fn predicate(&mut self, predicate: &pb::Predicate, path: &str) -> Option<Node> {
        let catalog = self.catalog;
        let values_path = format!("{path}.values");
        // Size limits hold whatever else is wrong.
        if predicate.values.len() > MAX_PREDICATE_VALUES {
            self.add(
                &values_path,
                format!(
                    "a predicate holds at most {MAX_PREDICATE_VALUES} values, got {}",
                    predicate.values.len()
                ),
            );
        }
        let before = self.values;
        self.values += predicate.values.len();
        if before <= MAX_RULE_VALUES && self.values > MAX_RULE_VALUES {
            self.add(
                &values_path,
                format!("a rule holds at most {MAX_RULE_VALUES} values; this predicate crosses the limit"),
            );
        }

        let def = if predicate.field.is_empty() {
            self.add(format!("{path}.field"), "the field is required");
            None
        } else {
            let def = catalog.get(&predicate.field);
            if def.is_none() {
                self.add(
                    format!("{path}.field"),
                    format!(
                        "unknown field \"{}\"; ListFields lists the fields a rule may use",
                        truncate(&predicate.field)
                    ),
                );
            }
            def
        };
        let operator = match pb::Operator::try_from(predicate.operator) {
            Ok(pb::Operator::Unspecified) | Err(_) => {
                self.add(format!("{path}.operator"), "the operator is required");
                None
            }
            Ok(op) => Some(operator_from_proto(op)),
        };
        let (Some(def), Some(operator)) = (def, operator) else {
            return None;
        };
        if !def.operators.contains(&operator) {
            let allowed: Vec<&str> = def
                .operators
                .iter()
                .map(|op| operator_to_proto(*op).as_str_name())
                .collect();
            self.add(
                format!("{path}.operator"),
                format!(
                    "{} is not an operator of \"{}\"; use one of {}",
                    operator_to_proto(operator).as_str_name(),
                    def.name,
                    allowed.join(", ")
                ),
            );
            return None;
        }

        let count = predicate.values.len();
        let count_ok = match value_count(operator) {
            Count::Exactly(n) => count == n,
            Count::Many => (1..=MAX_PREDICATE_VALUES).contains(&count),
        };
        if !count_ok {
            let expected = match value_count(operator) {
                Count::Exactly(0) => "no values".to_owned(),
                Count::Exactly(1) => "exactly 1 value".to_owned(),
                Count::Exactly(n) => format!("exactly {n} values"),
                Count::Many => format!("1–{MAX_PREDICATE_VALUES} values"),
            };
            self.add(
                &values_path,
                format!(
                    "{} takes {expected}, got {count}",
                    operator_to_proto(operator).as_str_name()
                ),
            );
        }

        let mut values = Vec::with_capacity(count.min(MAX_PREDICATE_VALUES));
        let mut values_ok = count_ok;
        for (i, value) in predicate
            .values
            .iter()
            .enumerate()
            .take(MAX_PREDICATE_VALUES)
        {
            match self.value(value, def, operator, &format!("{values_path}[{i}]")) {
                Some(value) => values.push(value),
                None => values_ok = false,
            }
        }
        if values_ok && operator == Operator::Between {
            self.between(&values, &values_path);
        }

        let window = match &predicate.window {
            None => None,
            Some(_) if !def.windowed => {
                self.add(
                    format!("{path}.window"),
                    format!("\"{}\" does not accept a window", def.name),
                );
                None
            }
            Some(window) => self.window(window, &format!("{path}.window")),
        };
        let filter = match &predicate.filter {
            None => Filter::default(),
            Some(filter) => self.filter(filter, def, &format!("{path}.filter")),
        };
        Some(Node::Predicate(Predicate {
            field: def.name.clone(),
            key: def.key.clone(),
            value_type: def.value_type,
            operator,
            values,
            window,
            filter,
            field_time_dependent: def.time_dependent,
        }))
    }

    fn value(
        &mut self,
        value: &pb::Value,
        def: &FieldDef,
        operator: Operator,
        path: &str,
    ) -> Option<Value> {
        let Some(kind) = &value.kind else {
            self.add(path, "exactly one kind of value must be set");
            return None;
        };
        if matches!(operator, Operator::WithinLast | Operator::NotWithinLast) {
            return match kind {
                ValueKind::DaysValue(days) if (1..=MAX_DAYS).contains(days) => {
                    Some(Value::Days(*days))
                }
                ValueKind::DaysValue(_) => {
                    self.add(path, format!("days_value must be 1–{MAX_DAYS}"));
                    None
                }
                _ => {
                    self.add(
                        path,
                        format!(
                            "{} takes a days_value",
                            operator_to_proto(operator).as_str_name()
                        ),
                    );
                    None
                }
            };
        }
        let parsed = match (def.value_type, kind) {
            (
                ValueType::String | ValueType::Enum | ValueType::StringList,
                ValueKind::StringValue(text),
            ) => {
                let chars = text.chars().count();
                if chars == 0 || chars > MAX_STRING_CHARS {
                    Err(format!(
                        "string_value must be 1–{MAX_STRING_CHARS} characters"
                    ))
                } else if operator == Operator::MatchesPattern
                    && let Err(error) = Pattern::parse(text)
                {
                    Err(error.to_string())
                } else if def.value_type == ValueType::Enum && !def.allowed_values.contains(text) {
                    Err(format!(
                        "\"{}\" is not a value of \"{}\"; allowed: {}",
                        truncate(text),
                        def.name,
                        def.allowed_values.join(", ")
                    ))
                } else {
                    Ok(Value::String(text.clone()))
                }
            }
            (ValueType::Integer | ValueType::Double, ValueKind::IntegerValue(v)) => {
                if (-MAX_INTEGER..=MAX_INTEGER).contains(v) {
                    Ok(Value::Integer(*v))
                } else {
                    self.add(
                        format!("{path}.integer_value"),
                        "integer_value must be between -10^15 and 10^15",
                    );
                    return None;
                }
            }
            (ValueType::Double, ValueKind::DoubleValue(v)) if v.is_finite() => {
                Ok(Value::Double(*v))
            }
            (ValueType::Double, ValueKind::DoubleValue(_)) => {
                Err("double_value must be finite (no NaN or infinity)".to_owned())
            }
            (ValueType::Bool, ValueKind::BoolValue(v)) => Ok(Value::Bool(*v)),
            (ValueType::Timestamp, ValueKind::TimestampValue(ts)) => {
                timestamp_from_proto(ts).map(Value::Timestamp)
            }
            (ValueType::Date, ValueKind::DateValue(date)) => date_from_proto(date).map(Value::Date),
            (ValueType::Money, ValueKind::MoneyValue(money)) => {
                if !(-MAX_INTEGER..=MAX_INTEGER).contains(&money.amount_minor) {
                    self.add(
                        format!("{path}.money_value.amount_minor"),
                        "money_value.amount_minor must be between -10^15 and 10^15",
                    );
                    return None;
                }
                money_from_proto(money).map(Value::Money)
            }
            (value_type, _) => Err(format!(
                "\"{}\" holds {} values; use {}",
                def.name,
                value_type_name(value_type),
                accepted_kinds(value_type)
            )),
        };
        match parsed {
            Ok(value) => Some(value),
            Err(description) => {
                self.add(path, description);
                None
            }
        }
    }

    /// BETWEEN: both bounds of one kind (and currency), in order.
    fn between(&mut self, values: &[Value], path: &str) {
        let [low, high] = values else {
            return;
        };
        let ordered = match (low, high) {
            (Value::Integer(a), Value::Integer(b)) => a <= b,
            (Value::Double(a), Value::Double(b)) => a <= b,
            (Value::Timestamp(a), Value::Timestamp(b)) => a <= b,
            (Value::Date(a), Value::Date(b)) => a <= b,
            (Value::Money(a), Value::Money(b)) if a.currency == b.currency => {
                a.amount_minor <= b.amount_minor
            }
            (Value::Money(_), Value::Money(_)) => {
                self.add(
                    format!("{path}[1]"),
                    "both bounds must be in the same currency",
                );
                return;
            }
            _ => {
                self.add(
                    format!("{path}[1]"),
                    format!(
                        "both bounds must be of one kind; values[0] is a {}",
                        kind_name(low)
                    ),
                );
                return;
            }
        };
        if !ordered {
            self.add(path, "values[0] must not be greater than values[1]");
        }
    }

    fn window(&mut self, window: &pb::ActivityWindow, path: &str) -> Option<Window> {
        match &window.span {
            None => {
                self.add(path, "exactly one of last_days or time_range must be set");
                None
            }
            Some(Span::LastDays(days)) if (1..=MAX_WINDOW_DAYS).contains(days) => {
                Some(Window::LastDays(*days))
            }
            Some(Span::LastDays(_)) => {
                self.add(
                    format!("{path}.last_days"),
                    format!("last_days must be 1–{MAX_WINDOW_DAYS} (activity history is kept {MAX_WINDOW_DAYS} days)"),
                );
                None
            }
            Some(Span::TimeRange(range)) => {
                let range_path = format!("{path}.time_range");
                let start = self.range_bound(
                    range.start_time.as_ref(),
                    &format!("{range_path}.start_time"),
                );
                let end =
                    self.range_bound(range.end_time.as_ref(), &format!("{range_path}.end_time"));
                let (start, end) = (start?, end?);
                if start >= end {
                    self.add(range_path, "start_time must be before end_time");
                    return None;
                }
                Some(Window::Range { start, end })
            }
        }
    }

    fn range_bound(
        &mut self,
        ts: Option<&prost_types::Timestamp>,
        path: &str,
    ) -> Option<DateTime<Utc>> {
        let Some(ts) = ts else {
            self.add(path, "both bounds of a window's time_range are required");
            return None;
        };
        match timestamp_from_proto(ts) {
            Ok(ts) => Some(ts),
            Err(description) => {
                self.add(path, description);
                None
            }
        }
    }

    fn filter(&mut self, filter: &pb::PredicateFilter, def: &FieldDef, path: &str) -> Filter {
        let lists = [
            (FilterDimension::Category, "categories", &filter.categories),
            (FilterDimension::Channel, "channels", &filter.channels),
            (
                FilterDimension::InteractionKind,
                "interaction_kinds",
                &filter.interaction_kinds,
            ),
        ];
        for (dimension, name, entries) in lists {
            if entries.is_empty() {
                continue;
            }
            let list_path = format!("{path}.{name}");
            if !def.filter_dimensions.contains(&dimension) {
                self.add(
                    &list_path,
                    format!("\"{}\" does not accept a {name} filter", def.name),
                );
                continue;
            }
            if entries.len() > MAX_FILTER_ENTRIES {
                self.add(&list_path, format!("at most {MAX_FILTER_ENTRIES} entries"));
            }
            for (i, entry) in entries.iter().enumerate().take(MAX_FILTER_ENTRIES) {
                let chars = entry.chars().count();
                if chars == 0 || chars > MAX_FILTER_ENTRY_CHARS {
                    self.add(
                        format!("{list_path}[{i}]"),
                        format!("must be 1–{MAX_FILTER_ENTRY_CHARS} characters"),
                    );
                } else if dimension == FilterDimension::InteractionKind
                    && !INTERACTION_KINDS.contains(&entry.as_str())
                {
                    self.add(
                        format!("{list_path}[{i}]"),
                        format!(
                            "unknown interaction kind; use one of {}",
                            INTERACTION_KINDS.join(", ")
                        ),
                    );
                }
            }
        }
        if !filter.loyalty_program_id.is_empty() {
            let program_path = format!("{path}.loyalty_program_id");
            if !def
                .filter_dimensions
                .contains(&FilterDimension::LoyaltyProgram)
            {
                self.add(
                    &program_path,
                    format!("\"{}\" does not accept a loyalty program filter", def.name),
                );
            } else if filter.loyalty_program_id.chars().count() > MAX_FILTER_ENTRY_CHARS {
                self.add(
                    &program_path,
                    format!("must be 1–{MAX_FILTER_ENTRY_CHARS} characters"),
                );
            }
        }
        Filter {
            categories: filter.categories.clone(),
            channels: filter.channels.clone(),
            interaction_kinds: filter.interaction_kinds.clone(),
            loyalty_program_id: filter.loyalty_program_id.clone(),
        }
    }
}

enum Count {
    Exactly(usize),
    Many,
}

fn value_count(operator: Operator) -> Count {
    use Operator as O;
    match operator {
        O::IsSet | O::IsNotSet => Count::Exactly(0),
        O::Between => Count::Exactly(2),
        O::In | O::NotIn | O::ContainsAny | O::ContainsAll => Count::Many,
        O::Equals
        | O::NotEquals
        | O::LessThan
        | O::LessOrEqual
        | O::GreaterThan
        | O::GreaterOrEqual
        | O::StartsWith
        | O::EndsWith
        | O::MatchesPattern
        | O::Contains
        | O::NotContains
        | O::WithinLast
        | O::NotWithinLast
        | O::Before
        | O::After => Count::Exactly(1),
    }
}

fn value_type_name(value_type: ValueType) -> &'static str {
    match value_type {
        ValueType::String => "string",
        ValueType::Integer => "integer",
        ValueType::Double => "double",
        ValueType::Bool => "bool",
        ValueType::Timestamp => "timestamp",
        ValueType::Date => "date",
        ValueType::Money => "money",
        ValueType::Enum => "enum",
        ValueType::StringList => "string list",
    }
}

fn accepted_kinds(value_type: ValueType) -> &'static str {
    match value_type {
        ValueType::String | ValueType::Enum | ValueType::StringList => "string_value",
        ValueType::Integer => "integer_value",
        ValueType::Double => "double_value or integer_value",
        ValueType::Bool => "bool_value",
        ValueType::Timestamp => "timestamp_value",
        ValueType::Date => "date_value",
        ValueType::Money => "money_value",
    }
}

/// At most 64 characters of user text in a message.
fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

/// The wire field that carries `value`.
fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "string_value",
        Value::Integer(_) => "integer_value",
        Value::Double(_) => "double_value",
        Value::Bool(_) => "bool_value",
        Value::Timestamp(_) => "timestamp_value",
        Value::Date(_) => "date_value",
        Value::Money(_) => "money_value",
        Value::Days(_) => "days_value",
    }
}

/// An instant between years 1 and 9999, truncated to whole microseconds.
fn timestamp_from_proto(ts: &prost_types::Timestamp) -> Result<DateTime<Utc>, String> {
    let invalid = || "must be a valid timestamp between years 1 and 9999".to_owned();
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(invalid());
    }
    let micros_as_nanos = ts.nanos / 1000 * 1000;
    let time = DateTime::from_timestamp(ts.seconds, micros_as_nanos as u32).ok_or_else(invalid)?;
    if !(1..=9999).contains(&time.year()) {
        return Err(invalid());
    }
    Ok(time)
}

fn date_from_proto(date: &common_pb::Date) -> Result<NaiveDate, String> {
    let invalid = || "must be a valid date with year 1900–9999".to_owned();
    if !(1900..=9999).contains(&date.year) {
        return Err(invalid());
    }
    let month = u32::try_from(date.month).map_err(|_| invalid())?;
    let day = u32::try_from(date.day).map_err(|_| invalid())?;
    NaiveDate::from_ymd_opt(date.year, month, day).ok_or_else(invalid)
}

fn money_from_proto(money: &common_pb::Money) -> Result<Money, String> {
    let code = &money.currency;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(
            "money_value.currency must be an upper-case ISO-4217 code, e.g. \"CNY\"".to_owned(),
        );
    }
    Ok(Money {
        amount_minor: money.amount_minor,
        currency: code.clone(),
    })
}

/// The domain operator of a (specified) wire operator.
pub fn operator_from_proto(operator: pb::Operator) -> Operator {
    use Operator as O;
    match operator {
        // Callers reject UNSPECIFIED first; EQUALS keeps the function total.
        pb::Operator::Unspecified | pb::Operator::Equals => O::Equals,
        pb::Operator::NotEquals => O::NotEquals,
        pb::Operator::LessThan => O::LessThan,
        pb::Operator::LessOrEqual => O::LessOrEqual,
        pb::Operator::GreaterThan => O::GreaterThan,
        pb::Operator::GreaterOrEqual => O::GreaterOrEqual,
        pb::Operator::In => O::In,
        pb::Operator::NotIn => O::NotIn,
        pb::Operator::Between => O::Between,
        pb::Operator::StartsWith => O::StartsWith,
        pb::Operator::EndsWith => O::EndsWith,
        pb::Operator::MatchesPattern => O::MatchesPattern,
        pb::Operator::Contains => O::Contains,
        pb::Operator::NotContains => O::NotContains,
        pb::Operator::ContainsAny => O::ContainsAny,
        pb::Operator::ContainsAll => O::ContainsAll,
        pb::Operator::IsSet => O::IsSet,
        pb::Operator::IsNotSet => O::IsNotSet,
        pb::Operator::WithinLast => O::WithinLast,
        pb::Operator::NotWithinLast => O::NotWithinLast,
        pb::Operator::Before => O::Before,
        pb::Operator::After => O::After,
    }
}
