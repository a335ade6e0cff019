//! A validated condition over a customer's custom events (rule.proto `EventCondition`): an
//! aggregate of the events of one type, inside a window, that pass property filters, compared
//! with operands. Built by `wire::rules::parse_rule` against the event types of the catalog.

use crate::domain::catalog::{Operator, PropertyType, ValueType};

use super::{Value, Window};

/// Most property filters in one event condition.
pub const MAX_EVENT_FILTERS: usize = 20;

/// What is computed over the covered events (rule.proto `EventAggregate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggregate {
    Count,
    Sum,
    Min,
    Max,
    Average,
    FirstTime,
    LastTime,
    MostFrequent,
}

impl Aggregate {
    /// The kind of value the aggregate is, which decides its operators and operands.
    pub fn value_type(self) -> ValueType {
        match self {
            Aggregate::Count => ValueType::Integer,
            Aggregate::Sum | Aggregate::Min | Aggregate::Max | Aggregate::Average => {
                ValueType::Double
            }
            Aggregate::FirstTime | Aggregate::LastTime => ValueType::Timestamp,
            Aggregate::MostFrequent => ValueType::String,
        }
    }

    /// The aggregate's slug (as in `computed_traits.aggregate`).
    pub fn slug(self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Sum => "sum",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Average => "average",
            Aggregate::FirstTime => "first_time",
            Aggregate::LastTime => "last_time",
            Aggregate::MostFrequent => "most_frequent",
        }
    }

    /// The aggregate of a slug of [`Aggregate::slug`].
    pub fn from_slug(slug: &str) -> Option<Self> {
        [
            Aggregate::Count,
            Aggregate::Sum,
            Aggregate::Min,
            Aggregate::Max,
            Aggregate::Average,
            Aggregate::FirstTime,
            Aggregate::LastTime,
            Aggregate::MostFrequent,
        ]
        .into_iter()
        .find(|a| a.slug() == slug)
    }

    /// COUNT and SUM are 0 over nothing, never unset.
    pub fn always_set(self) -> bool {
        matches!(self, Aggregate::Count | Aggregate::Sum)
    }

    /// The type of property the aggregate reads; `None` when it reads none.
    pub fn property_type(self) -> Option<PropertyType> {
        match self {
            Aggregate::Count | Aggregate::FirstTime | Aggregate::LastTime => None,
            Aggregate::Sum | Aggregate::Min | Aggregate::Max | Aggregate::Average => {
                Some(PropertyType::Number)
            }
            Aggregate::MostFrequent => Some(PropertyType::String),
        }
    }
}

/// What is measured over a customer's custom events: an aggregate of the events of one type,
/// inside a window, that pass property filters. The left-hand side of an [`EventCondition`],
/// and the whole definition of a computed trait (`domain::computed`), so both compute it one
/// way.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMeasure {
    pub event_type: String,
    pub aggregate: Aggregate,
    /// Empty for COUNT, FIRST_TIME and LAST_TIME.
    pub property: String,
    /// The type of `property`: NUMBER or MONEY for SUM, MIN, MAX and AVERAGE, STRING for
    /// MOST_FREQUENT; `None` when the aggregate reads no property.
    pub property_type: Option<PropertyType>,
    /// `None`: the whole retained history.
    pub window: Option<Window>,
    /// Every filter must pass.
    pub filters: Vec<PropertyFilter>,
}

impl EventMeasure {
    /// Whether the aggregate is of a money property: an amount in the currency of the
    /// condition's operands, of the events whose property is in that currency.
    pub fn is_money(&self) -> bool {
        self.property_type == Some(PropertyType::Money)
    }

    /// The kind of value the measure is: the aggregate's, or MONEY for a money property.
    pub fn value_type(&self) -> ValueType {
        if self.is_money() {
            ValueType::Money
        } else {
            self.aggregate.value_type()
        }
    }

    /// Whether the measure is never unset: COUNT and SUM (0 over nothing), never a money one
    /// (its comparisons need the operand's currency, so IS_SET / IS_NOT_SET are not offered).
    pub fn always_set(&self) -> bool {
        self.aggregate.always_set() || self.is_money()
    }

    /// True when the measure can change with the passage of time alone: a rolling window, or
    /// WITHIN_LAST / NOT_WITHIN_LAST on a filter.
    pub fn time_dependent(&self) -> bool {
        matches!(self.window, Some(Window::LastDays(_)))
            || self.filters.iter().any(|f| rolling(f.operator))
    }
}

/// Whether `op` compares with the evaluation time.
fn rolling(op: Operator) -> bool {
    matches!(op, Operator::WithinLast | Operator::NotWithinLast)
}

/// A validated event condition: a measure compared with operands.
#[derive(Debug, Clone, PartialEq)]
pub struct EventCondition {
    pub measure: EventMeasure,
    pub operator: Operator,
    /// Operands of kinds that fit `measure.aggregate.value_type()` and `operator`.
    pub values: Vec<Value>,
}

/// A test of one property of an event.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyFilter {
    pub property: String,
    pub property_type: PropertyType,
    pub operator: Operator,
    pub values: Vec<Value>,
}

impl EventCondition {
    /// True when the result can change with the passage of time alone: a time-dependent
    /// measure, or WITHIN_LAST / NOT_WITHIN_LAST on the aggregate.
    pub fn time_dependent(&self) -> bool {
        self.measure.time_dependent() || rolling(self.operator)
    }

    /// The name a segment's `fields` list records for the condition: "event.<type>", so the
    /// feed re-evaluates it when such an event arrives.
    pub fn field_name(&self) -> String {
        format!("event.{}", self.measure.event_type)
    }
}
