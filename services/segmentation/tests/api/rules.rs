//! Rule validation: every malformed, too deep, too large, unknown or wrongly typed part of a
//! rule is refused with a violation naming its exact place in the tree.

use custops_common::error::{FieldViolation, ServiceError};
use custops_contracts::custops::common::v1 as common_pb;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::domain::catalog::Catalog;
use custops_segmentation::wire::rules::parse_rule;
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

// ---------------------------------------------------------------------------------------------
// ListFields through the gRPC API.

mod list_fields {
    use custops_common::config::ServiceSettings;
    use custops_common::service::ServiceKind;
    use custops_contracts::custops::segmentation::v1 as pb;
    use custops_contracts::custops::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
    use custops_testkit::TestDatabase;
    use sqlx::{Connection, PgConnection};
    use tokio_util::sync::CancellationToken;
    use tonic::transport::Channel;

    struct App {
        client: SegmentationServiceClient<Channel>,
        stop: CancellationToken,
        _db: TestDatabase,
    }

    async fn spawn_app() -> anyhow::Result<App> {
        let db = TestDatabase::create().await?;
        let mut settings = ServiceSettings::for_local(ServiceKind::Segmentation, db.url());
        settings.server.listen_addr.set_port(0);
        let app = custops_segmentation::build(settings).await?;
        let port = app.port();
        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                let _ = app.run_until_stopped(stop.cancelled_owned()).await;
            }
        });
        // What the feeds would have taught: one attribute and a program's tiers.
        let mut conn = PgConnection::connect(db.url()).await?;
        sqlx::query(
            "INSERT INTO segmentation.attribute_definitions (name, value_type) \
             VALUES ('vip_level', 'integer')",
        )
        .execute(&mut conn)
        .await?;
        sqlx::query(
            "INSERT INTO segmentation.loyalty_tiers (loyalty_program_id, tier) \
             VALUES ('p1', 'gold'), ('p1', 'silver'), ('p2', 'gold')",
        )
        .execute(&mut conn)
        .await?;
        let client = SegmentationServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
        Ok(App {
            client,
            stop,
            _db: db,
        })
    }

    fn field_names(violations: &tonic::Status) -> Vec<String> {
        use tonic_types::StatusExt;
        violations
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn list_fields_pages_filters_and_describes_every_field() -> anyhow::Result<()> {
        let mut app = spawn_app().await?;

        // Pages of 20 over every field, in name order, without gaps or repeats.
        let mut names = Vec::new();
        let mut token = String::new();
        loop {
            let page = app
                .client
                .list_fields(pb::ListFieldsRequest {
                    page_size: 20,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            assert!(page.fields.len() <= 20);
            names.extend(page.fields.into_iter().map(|f| f.field));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert_eq!(
            names.len(),
            52,
            "51 built-in fields and attributes.vip_level"
        );

        // Prefix and source filters; the tiers the feed taught.
        let loyalty = app
            .client
            .list_fields(pb::ListFieldsRequest {
                source: pb::FieldSource::Loyalty as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        let tier = loyalty
            .fields
            .iter()
            .find(|f| f.field == "loyalty.tier")
            .cloned()
            .unwrap_or_default();
        assert_eq!(tier.allowed_values, ["gold", "silver"]);
        assert_eq!(tier.value_type, pb::ValueType::Enum as i32);
        assert_eq!(
            tier.filter_dimensions,
            [pb::FilterDimension::LoyaltyProgram as i32]
        );
        assert_eq!(loyalty.fields.len(), 4);
        let attributes = app
            .client
            .list_fields(pb::ListFieldsRequest {
                field_prefix: "attributes.".to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(attributes.fields.len(), 1);
        assert_eq!(
            attributes.fields[0].value_type,
            pb::ValueType::Integer as i32
        );
        let purchase = app
            .client
            .list_fields(pb::ListFieldsRequest {
                field_prefix: "purchase.count".to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert!(purchase.fields[0].windowed);
        assert!(
            !purchase.fields[0]
                .operators
                .contains(&(pb::Operator::IsNotSet as i32))
        );

        // Bad arguments name their fields; a token only works with its own filters.
        let status = app
            .client
            .list_fields(pb::ListFieldsRequest {
                page_size: 1001,
                field_prefix: "x".repeat(129),
                ..Default::default()
            })
            .await
            .err()
            .unwrap_or_else(|| tonic::Status::ok(""));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(field_names(&status), ["page_size", "field_prefix"]);
        let first = app
            .client
            .list_fields(pb::ListFieldsRequest {
                page_size: 1,
                ..Default::default()
            })
            .await?
            .into_inner();
        let status = app
            .client
            .list_fields(pb::ListFieldsRequest {
                page_size: 1,
                page_token: first.next_page_token,
                field_prefix: "geo.".to_owned(),
                ..Default::default()
            })
            .await
            .err()
            .unwrap_or_else(|| tonic::Status::ok(""));
        assert_eq!(field_names(&status), ["page_token"]);
        app.stop.cancel();
        Ok(())
    }
    /// Issue 21: ENDS_WITH and MATCHES_PATTERN are offered where STARTS_WITH is, and a pattern
    /// Postgres would refuse (a trailing lone `\`) is INVALID_ARGUMENT on its value.
    #[tokio::test]
    async fn suffixes_and_patterns_are_offered_for_strings_and_bad_patterns_named()
    -> anyhow::Result<()> {
        use super::{all, pred};
        use pb::Operator as O;
        use pb::value::Kind as V;
        let mut app = spawn_app().await?;
        let fields = app
            .client
            .list_fields(pb::ListFieldsRequest {
                field_prefix: "geo.".to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .fields;
        for field in &fields {
            let offers = |o: O| field.operators.contains(&(o as i32));
            assert_eq!(
                offers(O::EndsWith),
                offers(O::StartsWith),
                "{}",
                field.field
            );
            assert_eq!(
                offers(O::MatchesPattern),
                offers(O::StartsWith),
                "{}",
                field.field
            );
        }
        assert!(
            fields
                .iter()
                .any(|f| f.operators.contains(&(O::MatchesPattern as i32))),
            "some geo field takes patterns"
        );
        let text = |v: &str| V::StringValue(v.to_owned());
        let status = app
            .client
            .preview_segment(pb::PreviewSegmentRequest {
                rule: Some(all(vec![
                    pred("geo.city", O::MatchesPattern, vec![text("Shang%\\")]),
                    pred("geo.city", O::MatchesPattern, vec![text(&"%".repeat(257))]),
                    pred("geo.city", O::EndsWith, vec![text("")]),
                    pred("geo.city", O::EndsWith, vec![text("a"), text("b")]),
                    // Accepted: an escaped backslash, an escaped wildcard.
                    pred("geo.city", O::MatchesPattern, vec![text("%\\\\%\\_")]),
                ])),
                ..Default::default()
            })
            .await
            .err()
            .unwrap_or_else(|| tonic::Status::ok(""));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            field_names(&status),
            [
                "rule.all.conditions[0].predicate.values[0]",
                "rule.all.conditions[1].predicate.values[0]",
                "rule.all.conditions[2].predicate.values[0]",
                "rule.all.conditions[3].predicate.values",
            ]
        );
        let fine = app
            .client
            .preview_segment(pb::PreviewSegmentRequest {
                rule: Some(pred("geo.city", O::MatchesPattern, vec![text("%\\\\%\\_")])),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(fine.member_count, 0);
        app.stop.cancel();
        Ok(())
    }
}
