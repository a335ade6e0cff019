//! Rule validation: every malformed, too deep, too large, unknown or wrongly typed part of a
//! rule is refused with a violation naming its exact place in the tree.

use custops_common::error::{FieldViolation, ServiceError};
use custops_contracts::custops::common::v1 as common_pb;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::domain::catalog::Catalog;
use custops_segmentation::domain::rule::parse_rule;
use pb::condition::Kind;
use pb::value::Kind as V;
use uuid::Uuid;

fn pred(field: &str, operator: pb::Operator, values: Vec<V>) -> pb::Condition {
    pb::Condition {
        kind: Some(Kind::Predicate(pb::Predicate {
            field: field.to_owned(),
            operator: operator as i32,
            values: values
                .into_iter()
                .map(|k| pb::Value { kind: Some(k) })
                .collect(),
            window: None,
            filter: None,
        })),
    }
}

fn all(conditions: Vec<pb::Condition>) -> pb::Condition {
    pb::Condition {
        kind: Some(Kind::All(pb::ConditionGroup { conditions })),
    }
}

fn not(condition: pb::Condition) -> pb::Condition {
    pb::Condition {
        kind: Some(Kind::Not(Box::new(pb::NotCondition {
            condition: Some(Box::new(condition)),
        }))),
    }
}

fn ok() -> pb::Condition {
    pred(
        "geo.country",
        pb::Operator::Equals,
        vec![V::StringValue("CN".to_owned())],
    )
}

/// The violated paths of `condition` under the root "segment.rule".
fn violations(condition: &pb::Condition) -> Vec<String> {
    match parse_rule(condition, "segment.rule", &Catalog::builtin()) {
        Ok(_) => Vec::new(),
        Err(v) => match v.into_result() {
            Err(ServiceError::InvalidArgument(list)) => list
                .into_iter()
                .map(|FieldViolation { field, .. }| field)
                .collect(),
            _ => vec!["<no violations recorded>".to_owned()],
        },
    }
}

#[test]
fn a_valid_rule_parses_and_round_trips() {
    let condition = all(vec![
        ok(),
        not(pred(
            "purchase.last_time",
            pb::Operator::WithinLast,
            vec![V::DaysValue(90)],
        )),
        pb::Condition {
            kind: Some(Kind::Segment(pb::SegmentReference {
                segment_id: Uuid::from_u128(7).to_string(),
            })),
        },
    ]);
    let Ok(rule) = parse_rule(&condition, "segment.rule", &Catalog::builtin()) else {
        panic!("a valid rule was refused");
    };
    assert_eq!(rule.to_proto(), condition);
    assert_eq!(
        rule.referenced_segments(),
        vec![(
            "segment.rule.all.conditions[2].segment.segment_id".to_owned(),
            Uuid::from_u128(7)
        )]
    );
    assert!(rule.time_dependent());
    assert_eq!(
        rule.fields().into_iter().collect::<Vec<_>>(),
        ["geo.country", "purchase.last_time"]
    );
}

#[test]
fn empty_nodes_and_groups_are_named() {
    assert_eq!(violations(&pb::Condition::default()), ["segment.rule"]);
    assert_eq!(
        violations(&all(vec![ok(), pb::Condition::default()])),
        ["segment.rule.all.conditions[1]"]
    );
    assert_eq!(violations(&all(vec![])), ["segment.rule.all.conditions"]);
    let empty_not = pb::Condition {
        kind: Some(Kind::Not(Box::new(pb::NotCondition { condition: None }))),
    };
    assert_eq!(violations(&empty_not), ["segment.rule.not.condition"]);
}

#[test]
fn nine_levels_are_too_deep_and_the_ninth_is_named() {
    let mut condition = ok();
    for _ in 0..7 {
        condition = not(condition);
    }
    assert!(violations(&condition).is_empty(), "8 levels are allowed");
    let too_deep = not(condition);
    let path = format!("segment.rule{}", ".not.condition".repeat(8));
    assert_eq!(violations(&too_deep), [path]);
}

#[test]
fn the_101st_node_is_named() {
    let at_limit = all((0..99).map(|_| ok()).collect());
    assert!(violations(&at_limit).is_empty(), "100 nodes are allowed");
    let over = all((0..100).map(|_| ok()).collect());
    assert_eq!(violations(&over), ["segment.rule.all.conditions[99]"]);
}

#[test]
fn unknown_fields_wrong_operators_and_wrong_values_are_named() {
    use pb::Operator as O;
    let condition = all(vec![
        pred(
            "geo.planet",
            O::Equals,
            vec![V::StringValue("Mars".to_owned())],
        ),
        pred("purchase.count", O::Contains, vec![V::IntegerValue(1)]),
        pred(
            "purchase.count",
            O::GreaterThan,
            vec![V::StringValue("1".to_owned())],
        ),
        pred(
            "rfm.group",
            O::In,
            vec![
                V::StringValue("champions".to_owned()),
                V::StringValue("heroes".to_owned()),
            ],
        ),
        pred("geo.country", O::Unspecified, vec![]),
        pred(
            "lifecycle.churn_risk_score",
            O::LessThan,
            vec![V::DoubleValue(f64::NAN)],
        ),
        pred("geo.city", O::Equals, vec![V::StringValue(String::new())]),
        pred("customer.create_time", O::WithinLast, vec![V::DaysValue(0)]),
        pred(
            "purchase.amount",
            O::Between,
            vec![
                V::MoneyValue(common_pb::Money {
                    amount_minor: 5,
                    currency: "CNY".to_owned(),
                }),
                V::MoneyValue(common_pb::Money {
                    amount_minor: 1,
                    currency: "CNY".to_owned(),
                }),
            ],
        ),
        pred(
            "purchase.amount",
            O::Equals,
            vec![V::MoneyValue(common_pb::Money {
                amount_minor: 5,
                currency: "cny".to_owned(),
            })],
        ),
        pred(
            "demographics.birth_date",
            O::Before,
            vec![V::DateValue(common_pb::Date {
                year: 2001,
                month: 2,
                day: 29,
            })],
        ),
    ]);
    assert_eq!(
        violations(&condition),
        [
            "segment.rule.all.conditions[0].predicate.field",
            "segment.rule.all.conditions[1].predicate.operator",
            "segment.rule.all.conditions[2].predicate.values[0]",
            "segment.rule.all.conditions[3].predicate.values[1]",
            "segment.rule.all.conditions[4].predicate.operator",
            "segment.rule.all.conditions[5].predicate.values[0]",
            "segment.rule.all.conditions[6].predicate.values[0]",
            "segment.rule.all.conditions[7].predicate.values[0]",
            "segment.rule.all.conditions[8].predicate.values",
            "segment.rule.all.conditions[9].predicate.values[0]",
            "segment.rule.all.conditions[10].predicate.values[0]",
        ]
    );
}

#[test]
fn value_counts_and_limits_are_named() {
    use pb::Operator as O;
    let many = |n: usize| {
        (0..n)
            .map(|i| V::StringValue(format!("v{i}")))
            .collect::<Vec<_>>()
    };
    let condition = all(vec![
        pred("geo.country", O::Equals, vec![]),
        pred("geo.country", O::IsSet, many(1)),
        pred("geo.country", O::In, many(1001)),
        pred("purchase.count", O::Between, vec![V::IntegerValue(1)]),
    ]);
    assert_eq!(
        violations(&condition),
        [
            "segment.rule.all.conditions[0].predicate.values",
            "segment.rule.all.conditions[1].predicate.values",
            "segment.rule.all.conditions[2].predicate.values",
            "segment.rule.all.conditions[2].predicate.values",
            "segment.rule.all.conditions[3].predicate.values",
        ]
    );
    // 11 predicates of 1,000 values cross the rule's 10,000 in the eleventh.
    let rule = all((0..11)
        .map(|_| pred("tags", O::ContainsAny, many(1000)))
        .collect());
    assert_eq!(
        violations(&rule),
        ["segment.rule.all.conditions[10].predicate.values"]
    );
}

#[test]
fn windows_filters_and_references_are_checked_where_they_are() {
    use pb::Operator as O;
    let mut window_on_scalar = ok();
    let mut bad_window = pred("purchase.count", O::GreaterThan, vec![V::IntegerValue(1)]);
    let mut bad_range = pred("purchase.count", O::GreaterThan, vec![V::IntegerValue(1)]);
    let mut bad_filter = pred("purchase.count", O::GreaterThan, vec![V::IntegerValue(1)]);
    let set = |c: &mut pb::Condition, f: &dyn Fn(&mut pb::Predicate)| {
        if let Some(Kind::Predicate(p)) = &mut c.kind {
            f(p)
        }
    };
    set(&mut window_on_scalar, &|p| {
        p.window = Some(pb::ActivityWindow {
            span: Some(pb::activity_window::Span::LastDays(7)),
        })
    });
    set(&mut bad_window, &|p| {
        p.window = Some(pb::ActivityWindow {
            span: Some(pb::activity_window::Span::LastDays(1096)),
        })
    });
    set(&mut bad_range, &|p| {
        let t = prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        };
        p.window = Some(pb::ActivityWindow {
            span: Some(pb::activity_window::Span::TimeRange(common_pb::TimeRange {
                start_time: Some(t),
                end_time: Some(t),
            })),
        })
    });
    set(&mut bad_filter, &|p| {
        p.filter = Some(pb::PredicateFilter {
            categories: vec![String::new()],
            interaction_kinds: vec!["visit".to_owned()],
            loyalty_program_id: "p1".to_owned(),
            ..Default::default()
        })
    });
    let references: Vec<pb::Condition> = (0..21)
        .map(|i| pb::Condition {
            kind: Some(Kind::Segment(pb::SegmentReference {
                segment_id: Uuid::from_u128(i + 1).to_string(),
            })),
        })
        .collect();
    let bad_id = pb::Condition {
        kind: Some(Kind::Segment(pb::SegmentReference {
            segment_id: "nope".to_owned(),
        })),
    };
    let mut nodes = vec![window_on_scalar, bad_window, bad_range, bad_filter, bad_id];
    nodes.extend(references);
    assert_eq!(
        violations(&all(nodes)),
        [
            "segment.rule.all.conditions[0].predicate.window",
            "segment.rule.all.conditions[1].predicate.window.last_days",
            "segment.rule.all.conditions[2].predicate.window.time_range",
            "segment.rule.all.conditions[3].predicate.filter.categories[0]",
            "segment.rule.all.conditions[3].predicate.filter.interaction_kinds",
            "segment.rule.all.conditions[3].predicate.filter.loyalty_program_id",
            "segment.rule.all.conditions[4].segment.segment_id",
            "segment.rule.all.conditions[25].segment.segment_id",
        ]
    );
}
