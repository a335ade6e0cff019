//! Event conditions in SQL (rule.proto `EventCondition`), with exactly the semantics of
//! `domain::eval::events`: a subquery over `customer_events e` correlated on the customer, in
//! both shapes of the compiler (event conditions are rarer than activity aggregates and read
//! a table of their own, so they gain nothing from the grouped pass). Numbers are added with
//! `sum(… ORDER BY e.occur_time, e.activity_id COLLATE "C")`, the order the Rust evaluator adds
//! them in, each first bounded (see `domain::eval::events`); the most frequent value breaks
//! ties by `COLLATE "C"` (byte order, as Rust compares strings).

use crate::domain::catalog::{FieldKey, Operator, PropertyType, ValueType};
use crate::domain::rule::{
    Aggregate, EventCondition, EventMeasure, Filter, Predicate, PropertyFilter, Value, Window,
};

use super::{Compiler, SqlValue};

/// Bounds a float8 expression as `domain::eval::events` bounds a summand (NULL stays NULL:
/// GREATEST and LEAST would skip it and return the bound).
fn bounded(x: &str) -> String {
    format!(
        "(CASE WHEN {x} IS NULL THEN NULL::float8 \
         WHEN abs({x}) < '1e-250'::float8 THEN 0::float8 \
         ELSE LEAST(GREATEST({x}, '-1e250'::float8), '1e250'::float8) END)"
    )
}

/// The currency of the first money operand, if any (validation gives every money operand of
/// one comparison the same currency).
fn operand_currency(values: &[Value]) -> Option<&str> {
    values.iter().find_map(|v| match v {
        Value::Money(money) => Some(money.currency.as_str()),
        _ => None,
    })
}

/// A stand-in predicate carrying what `Compiler::scalar_test` reads: the operator, the
/// operands and their value type.
fn comparison(value_type: ValueType, operator: Operator, values: &[Value]) -> Predicate {
    Predicate {
        field: String::new(),
        key: FieldKey::PurchaseCount,
        value_type,
        operator,
        values: values.to_vec(),
        window: None,
        filter: Filter::default(),
        field_time_dependent: false,
    }
}

impl Compiler {
    /// A two-valued test of `condition` for the customer of `f`.
    pub(super) fn event(&mut self, condition: &EventCondition) -> String {
        let currency = operand_currency(&condition.values);
        // MOST_FREQUENT stays correlated in both shapes, like category lists.
        let expr = if self.grouped && condition.measure.aggregate != Aggregate::MostFrequent {
            self.grouped_measure(&condition.measure, currency)
        } else {
            self.measure(&condition.measure, currency)
        };
        let test = comparison(
            condition.measure.value_type(),
            condition.operator,
            &condition.values,
        );
        self.scalar_test(&expr, &test)
    }

    /// The value of `measure` for the customer of `f`: a scalar subquery, NULL when unset. A
    /// money measure is of the events whose property is in `currency` (the operands'), in
    /// whole minor units as `numeric`.
    pub(super) fn measure(&mut self, condition: &EventMeasure, currency: Option<&str>) -> String {
        let covered = self.covered_events(condition);
        let from =
            format!("FROM customer_events e WHERE e.customer_id = f.customer_id AND {covered}");
        if condition.is_money() {
            let (amount, in_currency) =
                self.money_expr("e", &condition.property, currency.unwrap_or_default());
            let from = format!("{from} AND {in_currency}");
            return match condition.aggregate {
                Aggregate::Sum => format!("(SELECT COALESCE(sum({amount}), 0) {from})"),
                Aggregate::Min => format!("(SELECT min({amount}) {from})"),
                Aggregate::Max => format!("(SELECT max({amount}) {from})"),
                // Truncated toward zero to whole minor units, as i128 division in Rust.
                _ => format!("(SELECT div(sum({amount}), count({amount})) {from})"),
            };
        }
        let order = "ORDER BY e.occur_time, e.activity_id COLLATE \"C\"";
        match condition.aggregate {
            Aggregate::Count => format!("(SELECT count(*) {from})"),
            Aggregate::FirstTime => format!("(SELECT min(e.occur_time) {from})"),
            Aggregate::LastTime => format!("(SELECT max(e.occur_time) {from})"),
            Aggregate::Sum => {
                let x = self.property_expr("e", &condition.property, PropertyType::Number);
                format!(
                    "(SELECT COALESCE(sum({} {order}), 0::float8) {from})",
                    bounded(&x)
                )
            }
            Aggregate::Min => {
                let x = self.property_expr("e", &condition.property, PropertyType::Number);
                format!("(SELECT min({x}) {from})")
            }
            Aggregate::Max => {
                let x = self.property_expr("e", &condition.property, PropertyType::Number);
                format!("(SELECT max({x}) {from})")
            }
            Aggregate::Average => {
                let x = self.property_expr("e", &condition.property, PropertyType::Number);
                format!(
                    "(SELECT sum({} {order}) / count({x})::float8 {from})",
                    bounded(&x)
                )
            }
            Aggregate::MostFrequent => {
                let x = self.property_expr("e", &condition.property, PropertyType::String);
                format!(
                    "(SELECT x.v FROM (SELECT {x} AS v {from}) x WHERE x.v IS NOT NULL \
                     GROUP BY x.v ORDER BY count(*) DESC, x.v COLLATE \"C\" LIMIT 1)"
                )
            }
        }
    }

    /// The value of `measure` as a column of the grouped pass over the events (`ge`, see
    /// `CompiledRule::from_clause`): the aggregates of [`Compiler::measure`], each with the
    /// measure's covered events as its FILTER; COUNT and SUM read 0 for a customer the pass
    /// has no row for.
    fn grouped_measure(&mut self, measure: &EventMeasure, currency: Option<&str>) -> String {
        let mut covered = self.covered_events(measure);
        let (aggregate, zero) = if measure.is_money() {
            let (amount, in_currency) =
                self.money_expr("e", &measure.property, currency.unwrap_or_default());
            covered = format!("{covered} AND {in_currency}");
            let of = |call: &str| format!("{call} FILTER (WHERE {covered})");
            match measure.aggregate {
                Aggregate::Sum => (of(&format!("sum({amount})")), Some("0")),
                Aggregate::Min => (of(&format!("min({amount})")), None),
                Aggregate::Max => (of(&format!("max({amount})")), None),
                _ => (
                    format!(
                        "div({}, {})",
                        of(&format!("sum({amount})")),
                        of(&format!("count({amount})"))
                    ),
                    None,
                ),
            }
        } else {
            let order = "ORDER BY e.occur_time, e.activity_id COLLATE \"C\"";
            let number =
                |c: &mut Self| c.property_expr("e", &measure.property, PropertyType::Number);
            let of = |call: &str| format!("{call} FILTER (WHERE {covered})");
            match measure.aggregate {
                Aggregate::Count => (of("count(*)"), Some("0")),
                Aggregate::FirstTime => (of("min(e.occur_time)"), None),
                Aggregate::LastTime => (of("max(e.occur_time)"), None),
                Aggregate::Sum => {
                    let x = number(self);
                    (
                        of(&format!("sum({} {order})", bounded(&x))),
                        Some("0::float8"),
                    )
                }
                Aggregate::Min => (of(&format!("min({})", number(self))), None),
                Aggregate::Max => (of(&format!("max({})", number(self))), None),
                // MOST_FREQUENT is read correlated (see `event`).
                Aggregate::Average | Aggregate::MostFrequent => {
                    let x = number(self);
                    (
                        format!(
                            "{} / ({})::float8",
                            of(&format!("sum({} {order})", bounded(&x))),
                            of(&format!("count({x})"))
                        ),
                        None,
                    )
                }
            }
        };
        let column = format!("e{}", self.event_aggregates.len() + 1);
        self.event_aggregates
            .push((format!("{aggregate} AS {column}"), covered));
        match zero {
            Some(zero) => format!("COALESCE(ge.{column}, {zero})"),
            None => format!("ge.{column}"),
        }
    }

    /// The condition on `e` selecting the events `condition` covers (of any customer).
    fn covered_events(&mut self, condition: &EventMeasure) -> String {
        let event_type = self.bind(SqlValue::Text(condition.event_type.clone()), "text");
        let mut sql = format!("e.event_type = {event_type}");
        sql.push_str(&self.window_test("e", condition.window));
        for filter in &condition.filters {
            let test = self.property_test("e", filter);
            sql.push_str(&format!(" AND {test}"));
        }
        sql
    }

    /// " AND …" bounding the occur time of the event aliased `alias` to `window` (empty when
    /// `None`).
    pub(super) fn window_test(&mut self, alias: &str, window: Option<Window>) -> String {
        let mut sql = String::new();
        match window {
            None => {}
            Some(Window::LastDays(days)) => {
                let hours = self.bind(SqlValue::Int(days * 24), "integer");
                sql.push_str(&format!(
                    " AND {alias}.occur_time > $1::timestamptz - make_interval(hours => {hours}) \
                     AND {alias}.occur_time <= $1::timestamptz"
                ));
            }
            Some(Window::Range { start, end }) => {
                let start = self.bind(SqlValue::Timestamp(start), "timestamptz");
                let end = self.bind(SqlValue::Timestamp(end), "timestamptz");
                sql.push_str(&format!(
                    " AND {alias}.occur_time >= {start} AND {alias}.occur_time < {end}"
                ));
            }
        }
        sql
    }

    /// The test of `filter` on the event aliased `alias`. A money property is its amount when
    /// in the operands' currency, else unset.
    pub(super) fn property_test(&mut self, alias: &str, filter: &PropertyFilter) -> String {
        let x = if filter.property_type == PropertyType::Money {
            let currency = operand_currency(&filter.values).unwrap_or_default();
            let (amount, in_currency) = self.money_expr(alias, &filter.property, currency);
            format!("(CASE WHEN {in_currency} THEN {amount} END)")
        } else {
            self.property_expr(alias, &filter.property, filter.property_type)
        };
        let test = comparison(
            filter.property_type.value_type(),
            filter.operator,
            &filter.values,
        );
        self.scalar_test(&x, &test)
    }

    /// The amount (minor units, `numeric`) of money property `name` of the event aliased
    /// `alias`, and the condition that it is in `currency`.
    fn money_expr(&mut self, alias: &str, name: &str, currency: &str) -> (String, String) {
        let name = self.bind(SqlValue::Text(name.to_owned()), "text");
        let currency = self.bind(SqlValue::Text(currency.to_owned()), "text");
        (
            format!("(({alias}.properties -> {name} -> 'money' ->> 'amount_minor')::numeric)"),
            format!("({alias}.properties -> {name} -> 'money' ->> 'currency') = {currency}"),
        )
    }

    /// The value of property `name` of the event aliased `alias` read as `property_type`:
    /// NULL when absent, of another type, or an empty string.
    fn property_expr(&mut self, alias: &str, name: &str, property_type: PropertyType) -> String {
        let name = self.bind(SqlValue::Text(name.to_owned()), "text");
        let raw = |key: &str| format!("({alias}.properties -> {name} ->> '{key}')");
        match property_type {
            PropertyType::String => format!("NULLIF({}, '')", raw("string")),
            PropertyType::Number => format!("{}::float8", raw("number")),
            PropertyType::Bool => format!("{}::boolean", raw("bool")),
            PropertyType::Time => format!("{}::timestamptz", raw("time")),
            // Read through `money_expr`, which needs the operands' currency.
            PropertyType::Money => "NULL::numeric".to_owned(),
        }
    }
}
