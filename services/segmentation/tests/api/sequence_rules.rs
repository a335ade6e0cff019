//! Sequence conditions (issue 21 item 3) through the API: custom events recorded in the real
//! profiles service move their customers in or out of a "home screen, then an order within 2
//! days, without opening help in between" segment on the per-event path (the in-process
//! evaluator), PreviewSegment (the SQL compiled for everyone) agrees, ExplainMembership says
//! whether the sequence held, and bad sequence conditions are refused naming each problem.

use std::time::Duration;

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

fn sequence(condition: pb::SequenceCondition) -> pb::Condition {
    pb::Condition {
        kind: Some(Kind::Sequence(condition)),
    }
}

fn opened(screen: &str) -> pb::EventStep {
    pb::EventStep {
        event_type: "app_opened".to_owned(),
        r#where: vec![pb::EventPropertyFilter {
            property: "screen".to_owned(),
            operator: pb::Operator::Equals.into(),
            values: vec![value(V::StringValue(screen.to_owned()))],
        }],
    }
}

fn ordered() -> pb::EventStep {
    pb::EventStep {
        event_type: "order_placed".to_owned(),
        r#where: Vec::new(),
    }
}

/// "Opened the home screen in the last 7 days, then ordered within 2 days, without opening
/// help in between".
fn home_then_order() -> pb::Condition {
    sequence(pb::SequenceCondition {
        first: Some(opened("home")),
        then: Some(ordered()),
        within_days: 2,
        not_between: Some(opened("help")),
        window: Some(pb::ActivityWindow {
            span: Some(pb::activity_window::Span::LastDays(7)),
        }),
    })
}

/// A custom event `hours_ago` hours before now; `screen` for app_opened, `None` for an order.
fn activity(
    customer_id: &str,
    event_id: &str,
    hours_ago: i64,
    screen: Option<&str>,
) -> profiles::Activity {
    use profiles::event_property_value::Value as P;
    let (event_type, properties) = match screen {
        Some(screen) => (
            "app_opened",
            vec![("screen", P::StringValue(screen.to_owned()))],
        ),
        None => ("order_placed", Vec::new()),
    };
    custom_activity(
        customer_id,
        event_id,
        event_type,
        hours_ago * 3600,
        properties,
    )
}

#[tokio::test]
async fn a_sequence_rule_follows_custom_events_recorded_in_profiles_in_both_evaluators()
-> anyhow::Result<()> {
    // Arrange: profiles in-process, segmentation following its feed, over one database.
    let (app, mut profiles, _stop_profiles) = spawn_with_profiles(None).await?;
    let screen = [("screen", profiles::EventPropertyType::String)];
    for (name, properties) in [("app_opened", &screen[..]), ("order_placed", &[][..])] {
        profiles
            .create_event_type(profiles::CreateEventTypeRequest {
                event_type: Some(event_type(name, &format!("{name} happened"), properties)),
            })
            .await?;
    }
    let ids = profiles_customers(
        &mut profiles,
        &["then@example.com", "help@example.com", "before@example.com"],
    )
    .await?;
    let learnt = eventually(PATIENCE, || {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM event_types")
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n == 2)
        }
    })
    .await;
    assert!(learnt, "segmentation never learnt the event types");
    let segment = app
        .rule_segment("home then order", home_then_order())
        .await?;
    assert!(segment.time_dependent, "a window on A is time-dependent");
    let segment_id = segment.segment_id;

    // Act: "then" opens home, then orders a day later; "help" opens help in between; "before"
    // orders first and opens home after.
    let (then, help, before) = (&ids[0], &ids[1], &ids[2]);
    let events = [
        activity(then, "t-1", 30, Some("home")),
        activity(then, "t-2", 6, None),
        activity(help, "h-1", 30, Some("home")),
        activity(help, "h-2", 20, Some("help")),
        activity(help, "h-3", 6, None),
        activity(before, "b-1", 30, None),
        activity(before, "b-2", 6, Some("home")),
    ];
    for event in events {
        profiles
            .record_activity(profiles::RecordActivityRequest {
                activity: Some(event),
                customer_identity: None,
            })
            .await?;
    }
    let entered = eventually(PATIENCE, || {
        let app = &app;
        let (segment_id, id) = (segment_id.clone(), then.clone());
        async move { app.is_member(&segment_id, &id).await.unwrap_or(false) }
    })
    .await;
    let stored = eventually(PATIENCE, || {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM customer_events")
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n == 7)
        }
    })
    .await;

    // Assert 1: the per-event path (in-process evaluator) put only "then" in.
    assert!(entered, "A then B never moved the customer in");
    assert!(stored, "the events never reached segmentation");
    assert!(!app.is_member(&segment_id, help).await?, "C was between");
    assert!(!app.is_member(&segment_id, before).await?, "B came first");

    // Assert 2: PreviewSegment (the compiled SQL over everyone) agrees.
    let preview = app
        .client
        .clone()
        .preview_segment(pb::PreviewSegmentRequest {
            rule: Some(home_then_order()),
            sample_size: 10,
            compare_segment_id: segment_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(preview.member_count, 1);
    assert_eq!(preview.sample_customer_ids, std::slice::from_ref(then));
    let comparison = preview.comparison.unwrap_or_default();
    assert_eq!(
        (comparison.entering_count, comparison.exiting_count),
        (0, 0)
    );

    // Assert 3: ExplainMembership says whether the sequence held.
    for (id, held) in [(then, true), (help, false)] {
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
        assert_eq!((explained.rule_result, explanation.result), (held, held));
        assert_eq!(explanation.path, "rule");
    }
    Ok(())
}

#[tokio::test]
async fn bad_sequence_conditions_are_refused_naming_each_problem() -> anyhow::Result<()> {
    // Arrange: event types as the profiles feed records them.
    let app = spawn_app().await?;
    sqlx::query(
        "INSERT INTO event_types (name, properties, profiles_sequence) VALUES \
         ('app_opened', '[{\"name\": \"screen\", \"type\": \"string\"}]'::jsonb, 1), \
         ('order_placed', '[{\"name\": \"total\", \"type\": \"money\"}]'::jsonb, 2)",
    )
    .execute(&app.pool)
    .await?;
    let base = pb::SequenceCondition {
        first: Some(opened("home")),
        then: Some(ordered()),
        within_days: 2,
        not_between: None,
        window: None,
    };
    let step = |event_type: &str, property: &str| pb::EventStep {
        event_type: event_type.to_owned(),
        r#where: vec![pb::EventPropertyFilter {
            property: property.to_owned(),
            operator: pb::Operator::IsSet.into(),
            values: Vec::new(),
        }],
    };
    let cases: Vec<(pb::SequenceCondition, &[&str])> = vec![
        (
            pb::SequenceCondition {
                first: Some(step("app_closed", "screen")),
                ..base.clone()
            },
            &["segment.rule.sequence.first.event_type"],
        ),
        (
            pb::SequenceCondition {
                then: None,
                ..base.clone()
            },
            &["segment.rule.sequence.then"],
        ),
        (
            pb::SequenceCondition {
                then: Some(step("order_placed", "colour")),
                not_between: Some(step("order_placed", "total")),
                ..base.clone()
            },
            &[
                "segment.rule.sequence.then.where[0].property",
                // IS_SET on money: it compares in an operand's currency.
                "segment.rule.sequence.not_between.where[0].operator",
            ],
        ),
        (
            pb::SequenceCondition {
                not_between: Some(step("", "screen")),
                ..base.clone()
            },
            &["segment.rule.sequence.not_between.event_type"],
        ),
        (
            pb::SequenceCondition {
                within_days: 0,
                ..base.clone()
            },
            &["segment.rule.sequence.within_days"],
        ),
        (
            pb::SequenceCondition {
                within_days: 1096,
                window: Some(pb::ActivityWindow {
                    span: Some(pb::activity_window::Span::LastDays(0)),
                }),
                ..base.clone()
            },
            &[
                "segment.rule.sequence.within_days",
                "segment.rule.sequence.window.last_days",
            ],
        ),
    ];
    app.assert_refusals(cases, sequence).await
}

#[tokio::test]
async fn a_window_on_a_makes_a_sequence_follow_the_clock_through_the_rollover_pass()
-> anyhow::Result<()> {
    // Arrange: "signed up in the last 5 days, then ordered within 2": one customer signed up
    // 4 days ago and ordered a day later.
    let app = spawn_app().await?;
    sqlx::query(
        "INSERT INTO event_types (name, properties, profiles_sequence) VALUES \
         ('signed_up', '[]'::jsonb, 1), ('order_placed', '[]'::jsonb, 2)",
    )
    .execute(&app.pool)
    .await?;
    app.put_customer("new", "CN", &[]).await?;
    let now = app.clock_now();
    for (id, event_type, days) in [("s-1", "signed_up", 4), ("o-1", "order_placed", 3)] {
        sqlx::query(
            "INSERT INTO customer_events (activity_id, customer_id, event_type, occur_time) \
             VALUES ($1, 'new', $2, $3)",
        )
        .bind(id)
        .bind(event_type)
        .bind(now - chrono::Duration::days(days))
        .execute(&app.pool)
        .await?;
    }
    let step = |event_type: &str| pb::EventStep {
        event_type: event_type.to_owned(),
        r#where: Vec::new(),
    };
    let converted = app
        .rule_segment(
            "Converted newcomers",
            sequence(pb::SequenceCondition {
                first: Some(step("signed_up")),
                then: Some(step("order_placed")),
                within_days: 2,
                not_between: None,
                window: Some(pb::ActivityWindow {
                    span: Some(pb::activity_window::Span::LastDays(5)),
                }),
            }),
        )
        .await?;
    assert!(converted.time_dependent);
    assert_eq!(app.stored_members(&converted.segment_id).await?, ["new"]);

    // Act: two days pass (the sign-up is now 6 days old) and the scheduler ticks.
    let state = app.state();
    // The first tick only starts the schedules.
    custops_segmentation::jobs::scheduler::schedule_once(&state).await?;
    app.clock.advance(chrono::Duration::days(2));
    custops_segmentation::jobs::scheduler::schedule_once(&state).await?;

    // Assert: the rollover pass moved the customer out.
    assert!(app.stored_members(&converted.segment_id).await?.is_empty());
    Ok(())
}
