//! Sequence conditions ("opened the app on the home screen, then ordered within N days,
//! without opening help in between") against a hand-built fixture, through both evaluators:
//! order, the N-day bound (inclusive), C between or outside, events at one instant ordered by
//! activity id, a window on A (exclusive at its start), and A and B of one type.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::domain::facts::{CustomEvent, Facts, PropertyValue};
use pb::condition::Kind;
use pb::value::Kind as V;

use super::{check, ctx_at, person, ts};

fn open(id: &str, at: DateTime<Utc>, screen: &str) -> CustomEvent {
    CustomEvent {
        activity_id: id.to_owned(),
        event_type: "app_opened".to_owned(),
        occur_time: at,
        properties: BTreeMap::from([(
            "screen".to_owned(),
            PropertyValue::String(screen.to_owned()),
        )]),
    }
}

fn order(id: &str, at: DateTime<Utc>) -> CustomEvent {
    CustomEvent {
        activity_id: id.to_owned(),
        event_type: "order_placed".to_owned(),
        occur_time: at,
        properties: BTreeMap::new(),
    }
}

fn opened(screen: &str) -> pb::EventStep {
    pb::EventStep {
        event_type: "app_opened".to_owned(),
        r#where: vec![pb::EventPropertyFilter {
            property: "screen".to_owned(),
            operator: pb::Operator::Equals.into(),
            values: vec![pb::Value {
                kind: Some(V::StringValue(screen.to_owned())),
            }],
        }],
    }
}

fn ordered() -> pb::EventStep {
    pb::EventStep {
        event_type: "order_placed".to_owned(),
        r#where: Vec::new(),
    }
}

fn sequence(
    first: pb::EventStep,
    then: pb::EventStep,
    within_days: i32,
    not_between: Option<pb::EventStep>,
    last_days: Option<i32>,
) -> pb::Condition {
    pb::Condition {
        kind: Some(Kind::Sequence(pb::SequenceCondition {
            first: Some(first),
            then: Some(then),
            within_days,
            not_between,
            window: last_days.map(|days| pb::ActivityWindow {
                span: Some(pb::activity_window::Span::LastDays(days)),
            }),
        })),
    }
}

#[tokio::test]
async fn sequences_agree_with_the_hand_computed_answer_in_both_evaluators() -> anyhow::Result<()> {
    // Arrange: A = app_opened on "home", B = order_placed, C = app_opened on "help".
    let now = ts(2026, 11, 24, 12, 34, 56, 789_012);
    let ctx = ctx_at(now);
    let day = |n: i64| now - Duration::days(n);
    let hours = |n: i64| now - Duration::hours(n);
    let with = |id: &str, events: Vec<CustomEvent>| Facts {
        events,
        ..person(id)
    };
    let customers = [
        // A, then B a day later.
        with(
            "ok",
            vec![order("ok-2", day(4)), open("ok-1", day(5), "home")],
        ),
        // B before A.
        with(
            "reversed",
            vec![order("re-1", day(5)), open("re-2", day(4), "home")],
        ),
        // B three days after A.
        with(
            "late",
            vec![open("la-1", day(10), "home"), order("la-2", day(7))],
        ),
        // B exactly two days after A: inside (at most N × 24 h).
        with(
            "edge",
            vec![open("ed-1", day(10), "home"), order("ed-2", day(8))],
        ),
        // C between A and B.
        with(
            "blocked",
            vec![
                open("bl-1", day(5), "home"),
                open("bl-2", hours(108), "help"),
                order("bl-3", day(4)),
            ],
        ),
        // C before A and after B only.
        with(
            "outside",
            vec![
                open("ou-1", day(6), "help"),
                open("ou-2", day(5), "home"),
                order("ou-3", day(4)),
                open("ou-4", day(3), "help"),
            ],
        ),
        // C between the first A and B, but a second A after C.
        with(
            "reset",
            vec![
                open("rs-1", day(5), "home"),
                open("rs-2", hours(108), "help"),
                open("rs-3", hours(102), "home"),
                order("rs-4", day(4)),
            ],
        ),
        // A and B at one instant: ordered by activity id, A's first here...
        with(
            "tie_ok",
            vec![order("t-2", day(1)), open("t-1", day(1), "home")],
        ),
        // ...and B's first here.
        with(
            "tie_rev",
            vec![open("u-2", day(1), "home"), order("u-1", day(1))],
        ),
        // A, C and B at one instant, in that order by id: C is between.
        with(
            "tie_c",
            vec![
                order("v-3", day(1)),
                open("v-2", day(1), "help"),
                open("v-1", day(1), "home"),
            ],
        ),
        // An app_opened failing A's filter.
        with(
            "other_screen",
            vec![open("os-1", day(5), "other"), order("os-2", day(4))],
        ),
        // Two orders twelve hours apart.
        with(
            "twice",
            vec![order("tw-1", day(2)), order("tw-2", hours(36))],
        ),
        person("nothing"),
    ];

    check(
        &customers,
        &ctx,
        vec![
            (
                sequence(opened("home"), ordered(), 2, Some(opened("help")), None),
                &["edge", "ok", "outside", "reset", "tie_ok"],
            ),
            (
                sequence(opened("home"), ordered(), 2, None, None),
                &[
                    "blocked", "edge", "ok", "outside", "reset", "tie_c", "tie_ok",
                ],
            ),
            (
                sequence(opened("home"), ordered(), 3, Some(opened("help")), None),
                &["edge", "late", "ok", "outside", "reset", "tie_ok"],
            ),
            // A in the last 6 days.
            (
                sequence(opened("home"), ordered(), 2, Some(opened("help")), Some(6)),
                &["ok", "outside", "reset", "tie_ok"],
            ),
            // A in the last 5 days: T − 5 days itself is outside.
            (
                sequence(opened("home"), ordered(), 2, Some(opened("help")), Some(5)),
                &["reset", "tie_ok"],
            ),
            // A and B of one type: one order is never both.
            (sequence(ordered(), ordered(), 1, None, None), &["twice"]),
            (
                pb::Condition {
                    kind: Some(Kind::Not(Box::new(pb::NotCondition {
                        condition: Some(Box::new(sequence(
                            opened("home"),
                            ordered(),
                            2,
                            Some(opened("help")),
                            None,
                        ))),
                    }))),
                },
                &[
                    "blocked",
                    "late",
                    "nothing",
                    "other_screen",
                    "reversed",
                    "tie_c",
                    "tie_rev",
                    "twice",
                ],
            ),
        ],
    )
    .await
}
