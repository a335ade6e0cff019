//! Each event aggregate against a hand-built fixture, through both evaluators: windows,
//! property filters, "has not done X in N days", sums in event order, unset aggregates, and
//! the most frequent value's tie going to the smallest string; money aggregates and filters
//! in the operands' currency.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use custops_contracts::custops::common::v1 as common_pb;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::domain::facts::{CustomEvent, Facts, Money, PropertyValue};
use pb::condition::Kind;
use pb::value::Kind as V;

use super::{check, ctx_at, person, ts};

fn order(id: &str, at: DateTime<Utc>, amount: f64, sku: &str) -> CustomEvent {
    CustomEvent {
        activity_id: id.to_owned(),
        event_type: "order_placed".to_owned(),
        occur_time: at,
        properties: BTreeMap::from([
            ("amount".to_owned(), PropertyValue::Number(amount)),
            ("sku".to_owned(), PropertyValue::String(sku.to_owned())),
        ]),
    }
}

struct Condition {
    aggregate: pb::EventAggregate,
    property: &'static str,
    last_days: Option<i32>,
    filters: Vec<pb::EventPropertyFilter>,
}

fn on(aggregate: pb::EventAggregate, property: &'static str) -> Condition {
    Condition {
        aggregate,
        property,
        last_days: None,
        filters: Vec::new(),
    }
}

impl Condition {
    fn within(mut self, days: i32) -> Self {
        self.last_days = Some(days);
        self
    }

    fn sku_is(mut self, sku: &str) -> Self {
        self.filters.push(pb::EventPropertyFilter {
            property: "sku".to_owned(),
            operator: pb::Operator::Equals.into(),
            values: vec![pb::Value {
                kind: Some(V::StringValue(sku.to_owned())),
            }],
        });
        self
    }

    fn test(self, operator: pb::Operator, values: Vec<V>) -> pb::Condition {
        pb::Condition {
            kind: Some(Kind::Event(pb::EventCondition {
                event_type: "order_placed".to_owned(),
                aggregate: self.aggregate.into(),
                property: self.property.to_owned(),
                window: self.last_days.map(|days| pb::ActivityWindow {
                    span: Some(pb::activity_window::Span::LastDays(days)),
                }),
                r#where: self.filters,
                operator: operator.into(),
                values: values
                    .into_iter()
                    .map(|k| pb::Value { kind: Some(k) })
                    .collect(),
            })),
        }
    }
}

#[tokio::test]
async fn every_event_aggregate_agrees_with_the_hand_computed_answer() -> anyhow::Result<()> {
    use pb::EventAggregate as A;
    use pb::Operator as O;
    // Arrange: "a" ordered three times lately and opened the app; "b" ordered long ago, once
    // of each of two skus (a tie); "c" never did anything; "d" ordered thrice at one instant.
    let now = ts(2026, 11, 24, 12, 34, 56, 789_012);
    let ctx = ctx_at(now);
    let day = |n: i64| now - Duration::days(n);
    let a = Facts {
        events: vec![
            // Added in event order: 0.3 + 0.2 + 0.1 = 0.6 exactly in floating point
            // (0.1 + 0.2 + 0.3 would be 0.6000000000000001).
            order("a-3", day(1), 0.1, "x"),
            order("a-2", day(2), 0.2, "y"),
            order("a-1", day(40), 0.3, "y"),
            CustomEvent {
                activity_id: "a-4".to_owned(),
                event_type: "app_opened".to_owned(),
                occur_time: now - Duration::hours(1),
                properties: BTreeMap::new(),
            },
        ],
        ..person("a")
    };
    let b = Facts {
        events: vec![
            order("b-1", day(100), 5.0, "x"),
            order("b-2", day(200), 1.0, "w"),
        ],
        ..person("b")
    };
    let c = person("c");
    // Three orders at one instant, stored in the other order than their ids: added by id,
    // 0.3 + 0.2 + 0.1 = 0.6 (in storage order it would be 0.6000000000000001).
    let d = Facts {
        events: vec![
            order("d-3", day(3), 0.1, "z"),
            order("d-2", day(3), 0.2, "z"),
            order("d-1", day(3), 0.3, "z"),
        ],
        ..person("d")
    };
    let customers = [a, b, c, d];
    let time = |t: DateTime<Utc>| {
        V::TimestampValue(prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        })
    };

    check(
        &customers,
        &ctx,
        vec![
            // COUNT, windows and filters; "has not ordered in 30 days".
            (
                on(A::Count, "").test(O::GreaterOrEqual, vec![V::IntegerValue(1)]),
                &["a", "b", "d"],
            ),
            (
                on(A::Count, "")
                    .within(30)
                    .test(O::Equals, vec![V::IntegerValue(0)]),
                &["b", "c"],
            ),
            (
                on(A::Count, "")
                    .sku_is("y")
                    .test(O::Equals, vec![V::IntegerValue(2)]),
                &["a"],
            ),
            (
                on(A::Count, "")
                    .within(30)
                    .sku_is("y")
                    .test(O::Equals, vec![V::IntegerValue(1)]),
                &["a"],
            ),
            // SUM: never unset, added in event order.
            (
                on(A::Sum, "amount").test(O::Equals, vec![V::DoubleValue(0.6)]),
                &["a", "d"],
            ),
            (
                on(A::Sum, "amount").test(O::Equals, vec![V::IntegerValue(0)]),
                &["c"],
            ),
            (
                on(A::Sum, "amount")
                    .within(30)
                    .test(O::LessThan, vec![V::DoubleValue(0.5)]),
                &["a", "b", "c"],
            ),
            // MIN / MAX / AVERAGE: unset without values.
            (
                on(A::Min, "amount").test(O::LessThan, vec![V::DoubleValue(0.15)]),
                &["a", "d"],
            ),
            (
                on(A::Max, "amount").test(O::GreaterThan, vec![V::IntegerValue(1)]),
                &["b"],
            ),
            (
                on(A::Average, "amount").test(O::Equals, vec![V::IntegerValue(3)]),
                &["b"],
            ),
            (
                on(A::Average, "amount")
                    .test(O::Between, vec![V::DoubleValue(0.19), V::DoubleValue(0.21)]),
                &["a", "d"],
            ),
            (on(A::Average, "amount").test(O::IsNotSet, vec![]), &["c"]),
            (
                on(A::Max, "amount").test(O::NotEquals, vec![V::IntegerValue(5)]),
                &["a", "d"],
            ),
            // FIRST_TIME / LAST_TIME.
            (
                on(A::FirstTime, "").test(O::Before, vec![time(day(150))]),
                &["b"],
            ),
            (
                on(A::LastTime, "").test(O::WithinLast, vec![V::DaysValue(7)]),
                &["a", "d"],
            ),
            (
                on(A::LastTime, "").test(O::NotWithinLast, vec![V::DaysValue(7)]),
                &["b"],
            ),
            (on(A::FirstTime, "").test(O::IsNotSet, vec![]), &["c"]),
            // MOST_FREQUENT: "y" twice for a; a tie of "w" and "x" for b goes to "w".
            (
                on(A::MostFrequent, "sku").test(O::Equals, vec![V::StringValue("y".to_owned())]),
                &["a"],
            ),
            (
                on(A::MostFrequent, "sku").test(O::Equals, vec![V::StringValue("w".to_owned())]),
                &["b"],
            ),
            (
                on(A::MostFrequent, "sku").within(30).test(
                    O::In,
                    vec![
                        V::StringValue("x".to_owned()),
                        V::StringValue("y".to_owned()),
                    ],
                ),
                &["a"],
            ),
            (
                on(A::MostFrequent, "sku").test(O::IsSet, vec![]),
                &["a", "b", "d"],
            ),
        ],
    )
    .await
}

/// An order with a money `total`.
fn priced(id: &str, at: DateTime<Utc>, amount_minor: i64, currency: &str) -> CustomEvent {
    CustomEvent {
        activity_id: id.to_owned(),
        event_type: "order_placed".to_owned(),
        occur_time: at,
        properties: BTreeMap::from([(
            "total".to_owned(),
            PropertyValue::Money(Money {
                amount_minor,
                currency: currency.to_owned(),
            }),
        )]),
    }
}

fn money(amount_minor: i64, currency: &str) -> V {
    V::MoneyValue(common_pb::Money {
        amount_minor,
        currency: currency.to_owned(),
    })
}

#[tokio::test]
async fn money_aggregates_and_filters_count_only_the_operands_currency() -> anyhow::Result<()> {
    use pb::EventAggregate as A;
    use pb::Operator as O;
    // Arrange: "a" paid 100 and 251 CNY and 50 USD; "b" paid -1 and 0 CNY (an average of
    // -0.5, truncated toward zero); "c" paid only in USD; "d" nothing.
    let now = ts(2026, 11, 24, 12, 34, 56, 789_012);
    let ctx = ctx_at(now);
    let day = |n: i64| now - Duration::days(n);
    let customers = [
        Facts {
            events: vec![
                priced("a-1", day(1), 100, "CNY"),
                priced("a-2", day(2), 251, "CNY"),
                priced("a-3", day(3), 50, "USD"),
            ],
            ..person("a")
        },
        Facts {
            events: vec![
                priced("b-1", day(1), -1, "CNY"),
                priced("b-2", day(2), 0, "CNY"),
            ],
            ..person("b")
        },
        Facts {
            events: vec![priced("c-1", day(1), 999, "USD")],
            ..person("c")
        },
        person("d"),
    ];
    let total_over = |amount: i64, currency: &str| pb::EventPropertyFilter {
        property: "total".to_owned(),
        operator: pb::Operator::GreaterOrEqual.into(),
        values: vec![pb::Value {
            kind: Some(money(amount, currency)),
        }],
    };
    let mut big_cny = on(A::Count, "");
    big_cny.filters.push(total_over(200, "CNY"));
    let mut any_usd = on(A::Count, "");
    any_usd.filters.push(total_over(-1_000, "USD"));

    check(
        &customers,
        &ctx,
        vec![
            // SUM in the operand's currency: 0 without any (never unset).
            (
                on(A::Sum, "total").test(O::Equals, vec![money(351, "CNY")]),
                &["a"],
            ),
            (
                on(A::Sum, "total").test(O::Equals, vec![money(0, "CNY")]),
                &["c", "d"],
            ),
            (
                on(A::Sum, "total").test(O::GreaterThan, vec![money(100, "USD")]),
                &["c"],
            ),
            // MIN / MAX: unset in a currency without values, so false.
            (
                on(A::Min, "total").test(O::LessOrEqual, vec![money(100, "CNY")]),
                &["a", "b"],
            ),
            (
                on(A::Max, "total").test(O::NotEquals, vec![money(7, "JPY")]),
                &[],
            ),
            // AVERAGE truncated toward zero: 351 / 2 = 175, -1 / 2 = 0.
            (
                on(A::Average, "total").test(O::Equals, vec![money(175, "CNY")]),
                &["a"],
            ),
            (
                on(A::Average, "total").test(O::Equals, vec![money(0, "CNY")]),
                &["b"],
            ),
            (
                on(A::Average, "total").test(O::Between, vec![money(40, "USD"), money(60, "USD")]),
                &["a"],
            ),
            // Filters: the amount in the operand's currency, unset in another.
            (big_cny.test(O::Equals, vec![V::IntegerValue(1)]), &["a"]),
            (
                any_usd.test(O::GreaterOrEqual, vec![V::IntegerValue(1)]),
                &["a", "c"],
            ),
        ],
    )
    .await
}
