//! Rule conditions over custom events (issue 21 item 2) through the API: a custom event
//! recorded in the real profiles service moves its customer into a segment on its property
//! (profiles → feed → segmentation → CheckMembership), and bad event conditions are refused
//! with every problem named by its path.

use std::time::{Duration, Instant};

use custops_contracts::custops::profiles::v1 as profiles;
use custops_contracts::custops::segmentation::v1 as pb;
use pb::condition::Kind;
use pb::value::Kind as V;

use crate::helpers::{
    custom_activity, event_type, eventually, profiles_customers, spawn_app, spawn_with_profiles,
};

/// How long a change may take to travel profiles → feed → segmentation on a loaded test
/// machine: a bound on waiting, not a claim about speed.
const PATIENCE: Duration = Duration::from_secs(10);

fn value(kind: V) -> pb::Value {
    pb::Value { kind: Some(kind) }
}

fn event(condition: pb::EventCondition) -> pb::Condition {
    pb::Condition {
        kind: Some(Kind::Event(condition)),
    }
}

fn order_type() -> profiles::EventType {
    event_type(
        "order_placed",
        "An order was placed",
        &[
            ("amount", profiles::EventPropertyType::Number),
            ("tier", profiles::EventPropertyType::String),
        ],
    )
}

/// An order an hour before now (inside a window ending at the segmentation clock's instant).
fn order(customer_id: &str, event_id: &str, amount: f64, tier: &str) -> profiles::Activity {
    use profiles::event_property_value::Value as P;
    custom_activity(
        customer_id,
        event_id,
        "order_placed",
        3600,
        vec![
            ("amount", P::NumberValue(amount)),
            ("tier", P::StringValue(tier.to_owned())),
        ],
    )
}

/// "Spent at least 100 on gold orders in the last 30 days".
fn gold_spenders() -> pb::Condition {
    event(pb::EventCondition {
        event_type: "order_placed".to_owned(),
        aggregate: pb::EventAggregate::Sum.into(),
        property: "amount".to_owned(),
        window: Some(pb::ActivityWindow {
            span: Some(pb::activity_window::Span::LastDays(30)),
        }),
        r#where: vec![pb::EventPropertyFilter {
            property: "tier".to_owned(),
            operator: pb::Operator::Equals.into(),
            values: vec![value(V::StringValue("gold".to_owned()))],
        }],
        operator: pb::Operator::GreaterOrEqual.into(),
        values: vec![value(V::IntegerValue(100))],
    })
}

#[tokio::test]
async fn a_custom_event_recorded_in_profiles_moves_its_customer_into_a_segment_within_a_second()
-> anyhow::Result<()> {
    // Arrange: profiles in-process, segmentation following its feed, over one database.
    let (app, mut profiles, _stop_profiles) = spawn_with_profiles(None).await?;
    profiles
        .create_event_type(profiles::CreateEventTypeRequest {
            event_type: Some(order_type()),
        })
        .await?;
    let id = profiles_customers(&mut profiles, &["gold.orders@example.com"])
        .await?
        .remove(0);
    let learnt = eventually(PATIENCE, || {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM event_types WHERE name = 'order_placed'",
            )
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n == 1)
        }
    })
    .await;
    assert!(learnt, "segmentation never learnt the event type");
    let segment = app.rule_segment("gold spenders", gold_spenders()).await?;
    // A rolling window: the scheduled rollover re-applies it as time passes.
    assert!(
        segment.time_dependent,
        "a last_days window is time-dependent"
    );
    let segment_id = segment.segment_id;

    // Act 1: a big order of the wrong tier, then a small gold one.
    for (event_id, amount, tier) in [("o-1", 500.0, "silver"), ("o-2", 60.0, "gold")] {
        profiles
            .record_activity(profiles::RecordActivityRequest {
                activity: Some(order(&id, event_id, amount, tier)),
                customer_identity: None,
            })
            .await?;
    }
    let stored = app.stores_events(&id, 2, PATIENCE).await;
    assert!(stored, "the orders never reached segmentation");

    // Assert 1: 60 of gold is not enough (the silver order does not count).
    assert!(!app.is_member(&segment_id, &id).await?);

    // Act 2: another gold order brings the sum to 100.
    let recorded = Instant::now();
    profiles
        .record_activity(profiles::RecordActivityRequest {
            activity: Some(order(&id, "o-3", 40.0, "gold")),
            customer_identity: None,
        })
        .await?;

    // Assert 2: the customer is a member within a second of RecordActivity.
    let entered = eventually(PATIENCE, || {
        let app = &app;
        let (segment_id, id) = (segment_id.clone(), id.clone());
        async move { app.is_member(&segment_id, &id).await.unwrap_or(false) }
    })
    .await;
    let took = recorded.elapsed();
    assert!(entered, "the customer never entered the segment");
    assert!(
        took <= Duration::from_secs(1),
        "entering took {took:?}, more than a second"
    );

    // Assert 3: ExplainMembership shows the sum the in-process evaluator computed.
    let explained = app
        .client
        .clone()
        .explain_membership(pb::ExplainMembershipRequest {
            segment_id: segment_id.clone(),
            customer_id: id.clone(),
        })
        .await?
        .into_inner();
    let explanation = explained.explanation.unwrap_or_default();
    assert!(explained.member && explained.rule_result && explanation.result);
    assert_eq!(explanation.path, "rule");
    assert_eq!(explanation.actual_values, [value(V::DoubleValue(100.0))]);
    Ok(())
}

#[tokio::test]
async fn bad_event_conditions_are_refused_naming_each_problem() -> anyhow::Result<()> {
    // Arrange: an event type as the profiles feed records it.
    let app = spawn_app().await?;
    sqlx::query(
        "INSERT INTO event_types (name, properties, profiles_sequence) VALUES ('order_placed', \
         '[{\"name\": \"amount\", \"type\": \"number\"}, {\"name\": \"tier\", \"type\": \"string\"}, \
           {\"name\": \"total\", \"type\": \"money\"}]'::jsonb, 1)",
    )
    .execute(&app.pool)
    .await?;
    let base = pb::EventCondition {
        event_type: "order_placed".to_owned(),
        aggregate: pb::EventAggregate::Count.into(),
        operator: pb::Operator::GreaterOrEqual.into(),
        values: vec![value(V::IntegerValue(1))],
        ..Default::default()
    };
    let cases: Vec<(pb::EventCondition, &[&str])> = vec![
        (
            pb::EventCondition {
                event_type: "order_cancelled".to_owned(),
                ..base.clone()
            },
            &["segment.rule.event.event_type"],
        ),
        (
            pb::EventCondition {
                aggregate: pb::EventAggregate::Sum.into(),
                property: "colour".to_owned(),
                ..base.clone()
            },
            &["segment.rule.event.property"],
        ),
        (
            pb::EventCondition {
                aggregate: pb::EventAggregate::Sum.into(),
                property: "tier".to_owned(),
                ..base.clone()
            },
            &["segment.rule.event.property"],
        ),
        (
            pb::EventCondition {
                aggregate: pb::EventAggregate::MostFrequent.into(),
                property: "tier".to_owned(),
                operator: pb::Operator::Equals.into(),
                values: vec![value(V::IntegerValue(3))],
                ..base.clone()
            },
            &["segment.rule.event.values[0]"],
        ),
        (
            pb::EventCondition {
                property: "amount".to_owned(),
                ..base.clone()
            },
            &["segment.rule.event.property"],
        ),
        (
            pb::EventCondition {
                aggregate: pb::EventAggregate::Unspecified.into(),
                ..base.clone()
            },
            &["segment.rule.event.aggregate"],
        ),
        (
            pb::EventCondition {
                r#where: vec![
                    pb::EventPropertyFilter {
                        property: "tier".to_owned(),
                        operator: pb::Operator::Equals.into(),
                        values: vec![value(V::StringValue("gold".to_owned()))],
                    },
                    pb::EventPropertyFilter {
                        property: "colour".to_owned(),
                        operator: pb::Operator::Equals.into(),
                        values: vec![value(V::StringValue("red".to_owned()))],
                    },
                    pb::EventPropertyFilter {
                        property: "total".to_owned(),
                        operator: pb::Operator::IsSet.into(),
                        values: Vec::new(),
                    },
                    pb::EventPropertyFilter {
                        property: "amount".to_owned(),
                        operator: pb::Operator::StartsWith.into(),
                        values: vec![value(V::StringValue("1".to_owned()))],
                    },
                ],
                ..base.clone()
            },
            &[
                "segment.rule.event.where[1].property",
                // IS_SET on money: it compares in an operand's currency.
                "segment.rule.event.where[2].operator",
                "segment.rule.event.where[3].operator",
            ],
        ),
        (
            pb::EventCondition {
                operator: pb::Operator::IsNotSet.into(),
                values: Vec::new(),
                ..base.clone()
            },
            &["segment.rule.event.operator"],
        ),
        (
            pb::EventCondition {
                window: Some(pb::ActivityWindow {
                    span: Some(pb::activity_window::Span::LastDays(0)),
                }),
                ..base.clone()
            },
            &["segment.rule.event.window.last_days"],
        ),
    ];
    app.assert_refusals(cases, event).await
}

#[tokio::test]
async fn has_not_ordered_in_30_days_follows_the_clock_through_the_rollover_pass()
-> anyhow::Result<()> {
    // Arrange: one customer who ordered 25 days ago, one who never did.
    let app = spawn_app().await?;
    sqlx::query(
        "INSERT INTO event_types (name, properties, profiles_sequence) VALUES ('order_placed', \
         '[{\"name\": \"amount\", \"type\": \"number\"}]'::jsonb, 1)",
    )
    .execute(&app.pool)
    .await?;
    app.put_customer("recent", "CN", &[]).await?;
    app.put_customer("never", "CN", &[]).await?;
    sqlx::query(
        "INSERT INTO customer_events (activity_id, customer_id, event_type, occur_time) \
         VALUES ('o-1', 'recent', 'order_placed', $1)",
    )
    .bind(app.clock_now() - chrono::Duration::days(25))
    .execute(&app.pool)
    .await?;
    let lapsed = app
        .rule_segment(
            "No order in 30 days",
            event(pb::EventCondition {
                event_type: "order_placed".to_owned(),
                aggregate: pb::EventAggregate::Count.into(),
                window: Some(pb::ActivityWindow {
                    span: Some(pb::activity_window::Span::LastDays(30)),
                }),
                operator: pb::Operator::Equals.into(),
                values: vec![value(V::IntegerValue(0))],
                ..Default::default()
            }),
        )
        .await?;
    assert!(lapsed.time_dependent);
    assert_eq!(app.stored_members(&lapsed.segment_id).await?, ["never"]);

    // Act: six days pass (the order is now 31 days old) and the scheduler ticks.
    let state = app.state();
    // The first tick only starts the schedules.
    custops_segmentation::jobs::scheduler::schedule_once(&state).await?;
    app.clock.advance(chrono::Duration::days(6));
    custops_segmentation::jobs::scheduler::schedule_once(&state).await?;

    // Assert: the rollover pass moved the customer in.
    assert_eq!(
        app.stored_members(&lapsed.segment_id).await?,
        ["never", "recent"]
    );
    Ok(())
}
