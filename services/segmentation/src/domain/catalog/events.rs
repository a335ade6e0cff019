//! The custom event types a rule may aggregate (rule.proto `EventCondition`), learnt from
//! profiles' EventTypeDefined (`store::custom_events::event_types`).

use std::collections::BTreeMap;

use super::{Catalog, ValueType};

/// The type of an event property (profiles' `EventPropertyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyType {
    String,
    Number,
    Bool,
    Time,
    Money,
}

impl PropertyType {
    /// The type as stored in `event_types.properties` ("string", "number", …).
    pub fn from_column(value: &str) -> Option<Self> {
        Some(match value {
            "string" => Self::String,
            "number" => Self::Number,
            "bool" => Self::Bool,
            "time" => Self::Time,
            "money" => Self::Money,
            _ => return None,
        })
    }

    /// The name used in messages and in the stored JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Bool => "bool",
            Self::Time => "time",
            Self::Money => "money",
        }
    }

    /// The value type filters on the property compare as (money: an amount in the operand's
    /// currency, see rule.proto `EventPropertyFilter`).
    pub fn value_type(self) -> ValueType {
        match self {
            Self::String => ValueType::String,
            Self::Number => ValueType::Double,
            Self::Bool => ValueType::Bool,
            Self::Time => ValueType::Timestamp,
            Self::Money => ValueType::Money,
        }
    }
}

/// One event type: its properties by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventTypeDef {
    pub name: String,
    pub properties: BTreeMap<String, PropertyType>,
}

impl Catalog {
    /// Adds the event types rules may aggregate (a later definition of a name wins).
    pub fn with_event_types(mut self, types: impl IntoIterator<Item = EventTypeDef>) -> Self {
        for def in types {
            self.event_types.insert(def.name.clone(), def);
        }
        self
    }

    /// The event type named `name`.
    pub fn event_type(&self, name: &str) -> Option<&EventTypeDef> {
        self.event_types.get(name)
    }

    /// Every event type, ordered by name.
    pub fn event_types(&self) -> impl Iterator<Item = &EventTypeDef> {
        self.event_types.values()
    }
}
