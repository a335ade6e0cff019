//! `EventCondition` → [`EventCondition`](crate::domain::rule::EventCondition): the event type,
//! property and filter properties checked against the event types segmentation learnt from
//! profiles, the aggregate's operator and operands as a field of the aggregate's value type.

use custops_contracts::custops::segmentation::v1 as pb;

use crate::domain::catalog::{
    EventTypeDef, FieldDef, FieldKey, FieldSource, Operator, PropertyType, ValueType, operators_for,
};
use crate::domain::rule::event::MAX_EVENT_FILTERS;
use crate::domain::rule::sequence::MAX_SEQUENCE_DAYS;
use crate::domain::rule::{
    Aggregate, EventCondition, EventMeasure, EventStep, Node, PropertyFilter, SequenceCondition,
    Value,
};

use super::{Count, MAX_PREDICATE_VALUES, MAX_RULE_VALUES, Parser, truncate, value_count};
use crate::wire::rules::operator_to_proto;

/// The fields of a measure as the wire carries them, in an `EventCondition` or a
/// `ComputedTrait`.
#[derive(Debug, Clone, Copy)]
pub struct WireMeasure<'a> {
    pub event_type: &'a str,
    pub aggregate: i32,
    pub property: &'a str,
    pub window: Option<&'a pb::ActivityWindow>,
    pub filters: &'a [pb::EventPropertyFilter],
}

impl<'a> WireMeasure<'a> {
    fn of_condition(event: &'a pb::EventCondition) -> Self {
        Self {
            event_type: &event.event_type,
            aggregate: event.aggregate,
            property: &event.property,
            window: event.window.as_ref(),
            filters: &event.r#where,
        }
    }
}

fn aggregate_from_proto(aggregate: pb::EventAggregate) -> Option<Aggregate> {
    use pb::EventAggregate as A;
    Some(match aggregate {
        A::Unspecified => return None,
        A::Count => Aggregate::Count,
        A::Sum => Aggregate::Sum,
        A::Min => Aggregate::Min,
        A::Max => Aggregate::Max,
        A::Average => Aggregate::Average,
        A::FirstTime => Aggregate::FirstTime,
        A::LastTime => Aggregate::LastTime,
        A::MostFrequent => Aggregate::MostFrequent,
    })
}

/// The catalog entry an operand is checked against (`Parser::value` reads its name, value
/// type and allowed values).
fn operand_def(name: String, value_type: ValueType, always_set: bool) -> FieldDef {
    FieldDef {
        name,
        display_name: String::new(),
        description: String::new(),
        value_type,
        operators: operators_for(value_type, always_set),
        allowed_values: Vec::new(),
        windowed: false,
        filter_dimensions: Vec::new(),
        source: FieldSource::Profiles,
        time_dependent: false,
        key: FieldKey::PurchaseCount,
        always_set,
    }
}

impl Parser<'_> {
    /// A `SequenceCondition` at `path` ("….sequence"): its steps against the learnt event
    /// types, `within_days` in range, the window as an activity window.
    pub(super) fn sequence(
        &mut self,
        sequence: &pb::SequenceCondition,
        path: &str,
    ) -> Option<Node> {
        let step = |parser: &mut Self, step: Option<&pb::EventStep>, name: &str| {
            let step_path = format!("{path}.{name}");
            match step {
                None => {
                    parser.add(&step_path, format!("the {name} step is required"));
                    None
                }
                Some(step) => parser.event_step(step, &step_path),
            }
        };
        let first = step(self, sequence.first.as_ref(), "first");
        let then = step(self, sequence.then.as_ref(), "then");
        let not_between = match &sequence.not_between {
            None => Some(None),
            Some(c) => self.event_step(c, &format!("{path}.not_between")).map(Some),
        };
        let days_ok = (1..=MAX_SEQUENCE_DAYS).contains(&sequence.within_days);
        if !days_ok {
            self.add(
                format!("{path}.within_days"),
                format!(
                    "within_days must be 1–{MAX_SEQUENCE_DAYS}, got {}",
                    sequence.within_days
                ),
            );
        }
        let window = match &sequence.window {
            None => Some(None),
            Some(window) => self.window(window, &format!("{path}.window")).map(Some),
        };
        let (first, then, not_between, window) = (first?, then?, not_between?, window?);
        days_ok.then_some(Node::Sequence(SequenceCondition {
            first,
            then,
            within_days: sequence.within_days,
            not_between,
            window,
        }))
    }

    /// One step of a sequence at `path`: a learnt event type and its property filters.
    fn event_step(&mut self, step: &pb::EventStep, path: &str) -> Option<EventStep> {
        let def = if step.event_type.is_empty() {
            self.add(format!("{path}.event_type"), "the event type is required");
            None
        } else {
            let def = self.catalog.event_type(&step.event_type);
            if def.is_none() {
                self.add(
                    format!("{path}.event_type"),
                    format!(
                        "unknown event type \"{}\"; event types are defined in profiles",
                        truncate(&step.event_type)
                    ),
                );
            }
            def
        };
        if step.r#where.len() > MAX_EVENT_FILTERS {
            self.add(
                format!("{path}.where"),
                format!("at most {MAX_EVENT_FILTERS} property filters"),
            );
        }
        let mut filters = Vec::new();
        for (i, filter) in step.r#where.iter().enumerate().take(MAX_EVENT_FILTERS) {
            if let Some(filter) = self.property_filter(filter, def, &format!("{path}.where[{i}]")) {
                filters.push(filter);
            }
        }
        if def.is_none() || filters.len() != step.r#where.len() {
            return None;
        }
        Some(EventStep {
            event_type: step.event_type.clone(),
            filters,
        })
    }

    pub(super) fn event(&mut self, event: &pb::EventCondition, path: &str) -> Option<Node> {
        let measure = self.measure(&WireMeasure::of_condition(event), path);
        // A missing aggregate was reported by `measure`.
        let aggregate = pb::EventAggregate::try_from(event.aggregate)
            .ok()
            .and_then(aggregate_from_proto)?;
        let name = format!(
            "{} of \"{}\"",
            pb::EventAggregate::try_from(event.aggregate)
                .map(|a| a.as_str_name())
                .unwrap_or_default(),
            truncate(&event.event_type)
        );
        // A money property compares as MONEY (in the operands' currency) and is never unset.
        let money = aggregate.property_type() == Some(PropertyType::Number)
            && self
                .catalog
                .event_type(&event.event_type)
                .and_then(|def| def.properties.get(&event.property))
                == Some(&PropertyType::Money);
        let operand = if money {
            operand_def(name, ValueType::Money, true)
        } else {
            operand_def(name, aggregate.value_type(), aggregate.always_set())
        };
        let (operator, values) = self.comparison(event.operator, &event.values, &operand, path)?;
        Some(Node::Event(EventCondition {
            measure: measure?,
            operator,
            values,
        }))
    }

    /// The measure at `path` (an event condition, a computed trait): the event type against
    /// the learnt ones, the aggregate and its property, the window, the property filters.
    pub(super) fn measure(&mut self, wire: &WireMeasure<'_>, path: &str) -> Option<EventMeasure> {
        let catalog = self.catalog;
        let def = if wire.event_type.is_empty() {
            self.add(format!("{path}.event_type"), "the event type is required");
            None
        } else {
            let def = catalog.event_type(wire.event_type);
            if def.is_none() {
                self.add(
                    format!("{path}.event_type"),
                    format!(
                        "unknown event type \"{}\"; event types are defined in profiles",
                        truncate(wire.event_type)
                    ),
                );
            }
            def
        };
        let aggregate = pb::EventAggregate::try_from(wire.aggregate)
            .ok()
            .and_then(aggregate_from_proto);
        if aggregate.is_none() {
            self.add(format!("{path}.aggregate"), "the aggregate is required");
        }
        let property_type = match (def, aggregate) {
            (Some(def), Some(aggregate)) => {
                self.aggregated_property(wire.property, def, aggregate, path)
            }
            _ => None,
        };
        let window = match wire.window {
            None => Some(None),
            Some(window) => self.window(window, &format!("{path}.window")).map(Some),
        };
        if wire.filters.len() > MAX_EVENT_FILTERS {
            self.add(
                format!("{path}.where"),
                format!("at most {MAX_EVENT_FILTERS} property filters"),
            );
        }
        let mut filters = Vec::new();
        for (i, filter) in wire.filters.iter().enumerate().take(MAX_EVENT_FILTERS) {
            if let Some(filter) = self.property_filter(filter, def, &format!("{path}.where[{i}]")) {
                filters.push(filter);
            }
        }
        let (aggregate, window) = (aggregate?, window?);
        let property_type = property_type?;
        if def.is_none() || filters.len() != wire.filters.len() {
            return None;
        }
        Some(EventMeasure {
            event_type: wire.event_type.to_owned(),
            aggregate,
            property: wire.property.to_owned(),
            property_type,
            window,
            filters,
        })
    }

    /// Checks the aggregated property: none for COUNT / FIRST_TIME / LAST_TIME, else one of
    /// the type of the aggregate (a number aggregate takes a money property too). `Some` with
    /// the property's type (`None`: no property) when it is fine.
    fn aggregated_property(
        &mut self,
        property: &str,
        def: &EventTypeDef,
        aggregate: Aggregate,
        path: &str,
    ) -> Option<Option<PropertyType>> {
        let property_path = format!("{path}.property");
        let Some(expected) = aggregate.property_type() else {
            if !property.is_empty() {
                self.add(
                    property_path,
                    "COUNT, FIRST_TIME and LAST_TIME take no property",
                );
                return None;
            }
            return Some(None);
        };
        if property.is_empty() {
            self.add(
                property_path,
                format!("the aggregate needs a {} property", expected.as_str()),
            );
            return None;
        }
        match def.properties.get(property) {
            None => {
                self.add(
                    property_path,
                    format!(
                        "\"{}\" is not a property of event type \"{}\"",
                        truncate(property),
                        def.name
                    ),
                );
                None
            }
            Some(found)
                if *found != expected
                    && !(expected == PropertyType::Number && *found == PropertyType::Money) =>
            {
                self.add(
                    property_path,
                    format!(
                        "\"{}\" is a {} property; the aggregate needs a {} property",
                        truncate(property),
                        found.as_str(),
                        expected.as_str()
                    ),
                );
                None
            }
            Some(found) => Some(Some(*found)),
        }
    }

    fn property_filter(
        &mut self,
        filter: &pb::EventPropertyFilter,
        def: Option<&EventTypeDef>,
        path: &str,
    ) -> Option<PropertyFilter> {
        let property_path = format!("{path}.property");
        let property_type = if filter.property.is_empty() {
            self.add(&property_path, "the property is required");
            None
        } else if let Some(def) = def {
            match def.properties.get(&filter.property) {
                None => {
                    self.add(
                        &property_path,
                        format!(
                            "\"{}\" is not a property of event type \"{}\"",
                            truncate(&filter.property),
                            def.name
                        ),
                    );
                    None
                }
                Some(found) => Some(*found),
            }
        } else {
            // The event type is unknown (reported there).
            None
        };
        let property_type = property_type?;
        let value_type = property_type.value_type();
        // Money compares in the operand's currency, so it needs one: no IS_SET / IS_NOT_SET.
        let operand = operand_def(
            format!("property \"{}\"", truncate(&filter.property)),
            value_type,
            value_type == ValueType::Money,
        );
        let (operator, values) =
            self.comparison(filter.operator, &filter.values, &operand, path)?;
        Some(PropertyFilter {
            property: filter.property.clone(),
            property_type,
            operator,
            values,
        })
    }

    /// An operator of `def` with its operands, as a predicate on `def` checks them.
    fn comparison(
        &mut self,
        operator: i32,
        values: &[pb::Value],
        def: &FieldDef,
        path: &str,
    ) -> Option<(Operator, Vec<Value>)> {
        let values_path = format!("{path}.values");
        let before = self.values;
        self.values += values.len();
        if before <= MAX_RULE_VALUES && self.values > MAX_RULE_VALUES {
            self.add(
                &values_path,
                format!("a rule holds at most {MAX_RULE_VALUES} values; this condition crosses the limit"),
            );
        }
        let operator = match pb::Operator::try_from(operator) {
            Ok(pb::Operator::Unspecified) | Err(_) => {
                self.add(format!("{path}.operator"), "the operator is required");
                return None;
            }
            Ok(op) => super::operator_from_proto(op),
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
                    "{} is not an operator of {}; use one of {}",
                    operator_to_proto(operator).as_str_name(),
                    def.name,
                    allowed.join(", ")
                ),
            );
            return None;
        }
        let count = values.len();
        let count_ok = match value_count(operator) {
            Count::Exactly(n) => count == n,
            Count::Many => (1..=MAX_PREDICATE_VALUES).contains(&count),
        };
        if !count_ok {
            self.add(
                &values_path,
                format!(
                    "{} takes {}, got {count}",
                    operator_to_proto(operator).as_str_name(),
                    match value_count(operator) {
                        Count::Exactly(0) => "no values".to_owned(),
                        Count::Exactly(1) => "exactly 1 value".to_owned(),
                        Count::Exactly(n) => format!("exactly {n} values"),
                        Count::Many => format!("1–{MAX_PREDICATE_VALUES} values"),
                    }
                ),
            );
        }
        let mut parsed = Vec::with_capacity(count.min(MAX_PREDICATE_VALUES));
        let mut ok = count_ok;
        for (i, value) in values.iter().enumerate().take(MAX_PREDICATE_VALUES) {
            match self.value(value, def, operator, &format!("{values_path}[{i}]")) {
                Some(value) => parsed.push(value),
                None => ok = false,
            }
        }
        if ok && operator == Operator::Between {
            self.between(&parsed, &values_path);
        }
        ok.then_some((operator, parsed))
    }
}
