//! Computed traits (computed_trait.proto): a named, versioned `EventMeasure` whose value is
//! stored per customer and read by rules as the catalog field "computed.<name>".
//!
//! The value is computed in one place, the SQL of the measure (`store::computed`, built by the
//! same compiler as event conditions), and stored; both evaluators read the stored value (a
//! customer without a row reads the measure over nothing: 0 for COUNT and SUM, unset
//! otherwise), so they cannot disagree on it.

use chrono::{DateTime, Utc};

use super::catalog::ValueType;
use super::rule::Aggregate;

/// The rule field prefix: "computed.<name>".
pub const FIELD_PREFIX: &str = "computed.";
/// Most computed traits a deployment holds: each is refreshed for every feed batch with
/// custom events, one statement per trait.
pub const MAX_TRAITS: i64 = 100;
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// What is wrong with `name` as a trait name (a lower-case ASCII letter, then lower-case
/// letters, digits or `_`, 1–64 characters); `None` when it is fine.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the name is required".to_owned());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Some(format!("the name has at most {MAX_NAME_CHARS} characters"));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    (!first_ok || !rest_ok).then(|| {
        "the name must be a lower-case letter followed by lower-case letters, digits or '_' \
         (e.g. \"coupon_value_90d\")"
            .to_owned()
    })
}

/// A trait as the catalog needs it: the rule field "computed.<name>".
#[derive(Debug, Clone, PartialEq)]
pub struct TraitField {
    pub name: String,
    pub description: String,
    pub version: i64,
    pub aggregate: Aggregate,
}

impl TraitField {
    /// The field's name in rules.
    pub fn field_name(&self) -> String {
        format!("{FIELD_PREFIX}{}", self.name)
    }
}

/// A stored value (one of `customer_computed_traits`' value columns).
#[derive(Debug, Clone, PartialEq)]
pub enum ComputedValue {
    Integer(i64),
    Double(f64),
    Time(DateTime<Utc>),
    Text(String),
}

/// The value of a measure over no event: 0 for COUNT and SUM, unset for the others.
pub fn value_over_nothing(aggregate: Aggregate) -> Option<ComputedValue> {
    match aggregate {
        Aggregate::Count => Some(ComputedValue::Integer(0)),
        Aggregate::Sum => Some(ComputedValue::Double(0.0)),
        _ => None,
    }
}

/// The stored column a value of `value_type` goes in (the measure's value type).
pub fn value_column(value_type: ValueType) -> &'static str {
    match value_type {
        ValueType::Integer => "integer_value",
        ValueType::Double => "double_value",
        ValueType::Timestamp => "time_value",
        _ => "string_value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_slugs_of_at_most_64_characters() {
        assert_eq!(name_problem("coupon_value_90d"), None);
        assert_eq!(name_problem(&"a".repeat(64)), None);
        for bad in [
            "",
            "9lives",
            "_x",
            "Coupon",
            "coupon-value",
            "coupon value",
            "café",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?} accepted");
        }
        assert!(name_problem(&"a".repeat(65)).is_some());
    }

    #[test]
    fn only_count_and_sum_have_a_value_over_nothing() {
        assert_eq!(
            value_over_nothing(Aggregate::Count),
            Some(ComputedValue::Integer(0))
        );
        assert_eq!(
            value_over_nothing(Aggregate::Sum),
            Some(ComputedValue::Double(0.0))
        );
        for aggregate in [
            Aggregate::Min,
            Aggregate::Max,
            Aggregate::Average,
            Aggregate::FirstTime,
            Aggregate::LastTime,
            Aggregate::MostFrequent,
        ] {
            assert_eq!(value_over_nothing(aggregate), None);
        }
    }
}
