//! Custom event types: the catalog entries custom events are checked against, and the rules
//! of that check (declared type, declared properties of the declared types, required ones
//! present) and of the catalog's growth (properties only added, never changed).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// Most event types in the catalog.
pub const MAX_EVENT_TYPES: i64 = 500;

/// Most properties of one event type (and so of one event).
pub const MAX_PROPERTIES: usize = 50;

/// Longest string property value, in characters.
pub const MAX_STRING_CHARS: usize = 1024;

/// Longest event type description, in characters.
pub const MAX_TYPE_DESCRIPTION: usize = 1000;

/// Longest property description, in characters.
pub const MAX_PROPERTY_DESCRIPTION: usize = 500;

/// Largest magnitude of a money property, in minor units (as activity amounts).
pub const MAX_MONEY_MINOR: i64 = super::activity::MAX_AMOUNT_MINOR;

/// A catalog name (event type or property): `^[a-z][a-z0-9_]{0,63}$`.
pub fn is_name(value: &str) -> bool {
    value.len() <= 64
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The type of a property's values (`EventPropertyType` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PropertyType {
    /// 1.
    String,
    /// 2.
    Number,
    /// 3.
    Bool,
    /// 4.
    Time,
    /// 5.
    Money,
}

impl PropertyType {
    /// The type of `EventPropertyType` number `n`; `None` for UNSPECIFIED and unknown numbers.
    pub fn from_number(n: i32) -> Option<Self> {
        Some(match n {
            1 => Self::String,
            2 => Self::Number,
            3 => Self::Bool,
            4 => Self::Time,
            5 => Self::Money,
            _ => return None,
        })
    }

    /// The `EventPropertyType` number.
    pub fn number(self) -> i32 {
        match self {
            Self::String => 1,
            Self::Number => 2,
            Self::Bool => 3,
            Self::Time => 4,
            Self::Money => 5,
        }
    }

    /// Lower-case name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "STRING",
            Self::Number => "NUMBER",
            Self::Bool => "BOOL",
            Self::Time => "TIME",
            Self::Money => "MONEY",
        }
    }
}

/// One declared property.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PropertyDefinition {
    /// Name, unique in its type.
    pub name: String,
    /// Value type.
    pub property_type: PropertyType,
    /// What it means.
    pub description: String,
    /// Values are personal data: never on the feed.
    pub contains_pii: bool,
    /// Every event of the type carries it.
    pub required: bool,
}

/// A declared event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType {
    /// Name.
    pub name: String,
    /// What it means.
    pub description: String,
    /// Properties in declaration order.
    pub properties: Vec<PropertyDefinition>,
    /// When declared.
    pub create_time: DateTime<Utc>,
    /// When properties were last added.
    pub update_time: DateTime<Utc>,
}

impl EventType {
    /// The property named `name`.
    pub fn property(&self, name: &str) -> Option<&PropertyDefinition> {
        self.properties.iter().find(|p| p.name == name)
    }

    /// Whether `other` declares the same type (description and properties, in any order).
    pub fn same_definition(&self, other: &EventType) -> bool {
        let sorted = |t: &EventType| {
            let mut p = t.properties.clone();
            p.sort_by(|a, b| a.name.cmp(&b.name));
            p
        };
        self.description == other.description && sorted(self) == sorted(other)
    }

    /// Whether a property's value is personal data; undeclared properties count as such, so
    /// whatever the catalog does not vouch for never leaves profiles.
    pub fn is_pii(&self, property: &str) -> bool {
        self.property(property).is_none_or(|p| p.contains_pii)
    }
}

/// What adding `added` to `current` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addition {
    /// The properties to append (those not already declared identically); may be empty.
    Append(Vec<PropertyDefinition>),
    /// `added[index]` exists with another definition.
    Conflict(usize),
    /// The type would have more than [`MAX_PROPERTIES`].
    TooMany,
}

/// Adding properties: new names are appended, identical re-declarations are left as they are,
/// a different definition of an existing name is a conflict (types are immutable).
pub fn add_properties(current: &EventType, added: &[PropertyDefinition]) -> Addition {
    let mut append = Vec::new();
    for (i, p) in added.iter().enumerate() {
        match current.property(&p.name) {
            Some(existing) if existing == p => {}
            Some(_) => return Addition::Conflict(i),
            None => append.push(p.clone()),
        }
    }
    if current.properties.len() + append.len() > MAX_PROPERTIES {
        return Addition::TooMany;
    }
    Addition::Append(append)
}

/// A custom event's property value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum PropertyValue {
    /// STRING.
    String(String),
    /// NUMBER (finite).
    Number(f64),
    /// BOOL.
    Bool(bool),
    /// TIME, as microseconds since the epoch.
    Time(i64),
    /// MONEY: minor units and ISO-4217 code.
    Money {
        /// Minor units, |amount| ≤ 10^15.
        amount_minor: i64,
        /// ISO-4217 code.
        currency: String,
    },
}

impl PropertyValue {
    /// The type this value has.
    pub fn property_type(&self) -> PropertyType {
        match self {
            PropertyValue::String(_) => PropertyType::String,
            PropertyValue::Number(_) => PropertyType::Number,
            PropertyValue::Bool(_) => PropertyType::Bool,
            PropertyValue::Time(_) => PropertyType::Time,
            PropertyValue::Money { .. } => PropertyType::Money,
        }
    }
}

/// A custom event: its type's name and its property values by name.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CustomEvent {
    /// Event type name.
    pub event_type: String,
    /// Property values by name (sorted, so the content hash is stable).
    pub properties: BTreeMap<String, PropertyValue>,
}

/// One problem of a custom event against the catalog: the field under
/// `activity.custom_event` and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventViolation {
    /// Path below `activity.custom_event.`, e.g. `properties[screen]`.
    pub field: String,
    /// What is wrong.
    pub description: String,
}

/// Every problem of `event` against its declared type (`None`: not declared).
pub fn check_event(event_type: Option<&EventType>, event: &CustomEvent) -> Vec<EventViolation> {
    let Some(declared) = event_type else {
        return vec![EventViolation {
            field: "event_type".to_owned(),
            description: "is not a declared event type (see CreateEventType)".to_owned(),
        }];
    };
    let mut violations = Vec::new();
    for (name, value) in &event.properties {
        let description = match declared.property(name) {
            None => format!("is not a property of event type {}", declared.name),
            Some(p) if p.property_type != value.property_type() => format!(
                "must be a {} value, as declared (got {})",
                p.property_type.name(),
                value.property_type().name()
            ),
            Some(_) => continue,
        };
        violations.push(EventViolation {
            field: format!("properties[{name}]"),
            description,
        });
    }
    for p in declared.properties.iter().filter(|p| p.required) {
        if !event.properties.contains_key(&p.name) {
            violations.push(EventViolation {
                field: format!("properties[{}]", p.name),
                description: format!("is required by event type {}", declared.name),
            });
        }
    }
    violations
}

/// `event` without the values of properties `declared` does not vouch for as not personal
/// (what the feed may carry).
pub fn without_pii(declared: Option<&EventType>, event: &CustomEvent) -> CustomEvent {
    let properties = event
        .properties
        .iter()
        .filter(|(name, _)| declared.is_some_and(|t| !t.is_pii(name)))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    CustomEvent {
        event_type: event.event_type.clone(),
        properties,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn property(
        name: &str,
        property_type: PropertyType,
        pii: bool,
        required: bool,
    ) -> PropertyDefinition {
        PropertyDefinition {
            name: name.to_owned(),
            property_type,
            description: String::new(),
            contains_pii: pii,
            required,
        }
    }

    fn coupon() -> EventType {
        EventType {
            name: "coupon_redeemed".to_owned(),
            description: String::new(),
            properties: vec![
                property("value", PropertyType::Money, false, true),
                property("code", PropertyType::String, true, false),
            ],
            create_time: DateTime::<Utc>::UNIX_EPOCH,
            update_time: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    fn event(properties: &[(&str, PropertyValue)]) -> CustomEvent {
        CustomEvent {
            event_type: "coupon_redeemed".to_owned(),
            properties: properties
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.clone()))
                .collect(),
        }
    }

    fn fields(v: Vec<EventViolation>) -> Vec<String> {
        v.into_iter().map(|v| v.field).collect::<Vec<_>>()
    }

    #[test]
    fn events_are_checked_against_their_type() {
        let t = coupon();
        let money = PropertyValue::Money {
            amount_minor: 500,
            currency: "CNY".to_owned(),
        };
        assert!(check_event(Some(&t), &event(&[("value", money.clone())])).is_empty());
        assert_eq!(fields(check_event(None, &event(&[]))), ["event_type"]);
        assert_eq!(
            fields(check_event(
                Some(&t),
                &event(&[
                    ("value", PropertyValue::Number(5.0)),
                    ("screen", PropertyValue::Bool(true))
                ])
            )),
            ["properties[screen]", "properties[value]"]
        );
        assert_eq!(
            fields(check_event(
                Some(&t),
                &event(&[("code", PropertyValue::String("X".into()))])
            )),
            ["properties[value]"]
        );
    }

    #[test]
    fn pii_and_undeclared_values_stay_out_of_the_feed() {
        let t = coupon();
        let e = event(&[
            ("value", PropertyValue::Bool(true)),
            ("code", PropertyValue::String("X".into())),
            ("other", PropertyValue::Bool(true)),
        ]);
        let kept: Vec<String> = without_pii(Some(&t), &e).properties.into_keys().collect();
        assert_eq!(kept, ["value"]);
        assert!(without_pii(None, &e).properties.is_empty());
    }

    #[test]
    fn properties_are_only_added() {
        let t = coupon();
        let same = property("code", PropertyType::String, true, false);
        let retyped = property("code", PropertyType::Number, true, false);
        let new = property("screen", PropertyType::String, false, false);
        assert_eq!(
            add_properties(&t, &[same.clone(), new.clone()]),
            Addition::Append(vec![new])
        );
        assert_eq!(add_properties(&t, &[same, retyped]), Addition::Conflict(1));
        assert!(is_name("coupon_redeemed"));
        assert!(!is_name("Coupon") && !is_name("1x") && !is_name(""));
    }
}
