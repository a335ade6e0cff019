//! Custom events (issue 21): the event type catalog (create, get, list, add properties),
//! custom events recorded and imported against it (bad types and properties refused naming the
//! field, nothing written), replays, the timeline and export, the feed without personal
//! property values, merges, and erasure leaving no personal value behind.

use std::collections::BTreeMap;

use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::profiles::v1 as pb;
use prost::Message;
use tonic::Code;

use crate::support::{
    TestApp, bad_fields, create, customer, expect_code, reason, spawn_app, time, unique_email,
};

/// The personal value every test sends in the `code` property (declared `contains_pii`).
const SECRET: &str = "coupon-code-of-wei-li-7731";

fn property(
    name: &str,
    property_type: pb::EventPropertyType,
    contains_pii: bool,
    required: bool,
) -> pb::EventPropertyDefinition {
    pb::EventPropertyDefinition {
        property_name: name.to_owned(),
        property_type: property_type as i32,
        description: format!("the {name}"),
        contains_pii,
        required,
    }
}

/// `coupon_redeemed`: `value` (MONEY, required), `code` (STRING, personal), `first` (BOOL).
fn coupon_type() -> pb::EventType {
    pb::EventType {
        event_type_name: "coupon_redeemed".to_owned(),
        description: "A coupon was redeemed at checkout".to_owned(),
        properties: vec![
            property("value", pb::EventPropertyType::Money, false, true),
            property("code", pb::EventPropertyType::String, true, false),
            property("first", pb::EventPropertyType::Bool, false, false),
        ],
        ..Default::default()
    }
}

async fn declare(app: &TestApp, event_type: pb::EventType) -> anyhow::Result<pb::EventType> {
    Ok(app
        .client
        .clone()
        .create_event_type(pb::CreateEventTypeRequest {
            event_type: Some(event_type),
        })
        .await?
        .into_inner()
        .event_type
        .unwrap_or_default())
}

fn money(amount_minor: i64) -> pb::EventPropertyValue {
    value(pb::event_property_value::Value::MoneyValue(common::Money {
        amount_minor,
        currency: "CNY".to_owned(),
    }))
}

fn value(v: pb::event_property_value::Value) -> pb::EventPropertyValue {
    pb::EventPropertyValue { value: Some(v) }
}

fn text(s: &str) -> pb::EventPropertyValue {
    value(pb::event_property_value::Value::StringValue(s.to_owned()))
}

/// A custom event of `customer_id` with `properties`.
fn custom(
    customer_id: &str,
    event_id: &str,
    event_type: &str,
    properties: Vec<(&str, pb::EventPropertyValue)>,
) -> pb::Activity {
    pb::Activity {
        customer_id: customer_id.to_owned(),
        source: "checkout".to_owned(),
        event_id: event_id.to_owned(),
        occur_time: Some(time(-600)),
        channel: "app".to_owned(),
        details: Some(pb::activity::Details::CustomEvent(pb::CustomEvent {
            event_type: event_type.to_owned(),
            properties: properties
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<BTreeMap<_, _>>(),
        })),
        ..Default::default()
    }
}

/// A valid coupon redemption carrying the personal `code`.
fn redemption(customer_id: &str, event_id: &str) -> pb::Activity {
    custom(
        customer_id,
        event_id,
        "coupon_redeemed",
        vec![("value", money(500)), ("code", text(SECRET))],
    )
}

async fn record(
    app: &TestApp,
    activity: pb::Activity,
) -> Result<pb::RecordActivityResponse, tonic::Status> {
    app.client
        .clone()
        .record_activity(pb::RecordActivityRequest {
            activity: Some(activity),
            customer_identity: None,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The custom event of an activity, if it is one.
fn custom_event(a: &pb::Activity) -> Option<&pb::CustomEvent> {
    match &a.details {
        Some(pb::activity::Details::CustomEvent(e)) => Some(e),
        _ => None,
    }
}

/// Payloads of the outbox events of type `type_name` (full name), in append order.
async fn payloads(app: &TestApp, type_name: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT payload FROM outbox WHERE type = $1 ORDER BY appended_at, id")
            .bind(type_name)
            .fetch_all(&app.pool)
            .await?,
    )
}

/// How many stored rows of `table` hold `needle` anywhere in their JSON form.
async fn rows_holding(app: &TestApp, table: &str, needle: &str) -> anyhow::Result<i64> {
    let sql =
        format!("SELECT count(*) FROM {table} t WHERE to_jsonb(t)::text LIKE '%' || $1 || '%'");
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(needle)
        .fetch_one(&app.pool)
        .await?)
}

/// How many outbox payloads hold the bytes of `needle`.
async fn outbox_holding(app: &TestApp, needle: &str) -> anyhow::Result<usize> {
    let all: Vec<Vec<u8>> = sqlx::query_scalar("SELECT payload FROM outbox")
        .fetch_all(&app.pool)
        .await?;
    Ok(all
        .iter()
        .filter(|p| p.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .count())
}

#[tokio::test]
async fn an_event_type_is_declared_read_listed_and_only_grows() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();

    let created = declare(&app, coupon_type()).await?;
    let again = declare(&app, coupon_type()).await?;
    let mut changed = coupon_type();
    changed.properties[0].property_type = pb::EventPropertyType::Number as i32;
    let conflict = client
        .create_event_type(pb::CreateEventTypeRequest {
            event_type: Some(changed),
        })
        .await;
    declare(
        &app,
        pb::EventType {
            event_type_name: "app_crash".to_owned(),
            properties: vec![property(
                "screen",
                pb::EventPropertyType::String,
                false,
                true,
            )],
            ..Default::default()
        },
    )
    .await?;

    assert_eq!(created.event_type_name, "coupon_redeemed");
    assert!(created.create_time.is_some());
    assert_eq!(
        again, created,
        "an identical re-declaration answers the first"
    );
    expect_code(conflict, Code::AlreadyExists)?;
    let got = client
        .get_event_type(pb::GetEventTypeRequest {
            event_type_name: "coupon_redeemed".to_owned(),
        })
        .await?
        .into_inner()
        .event_type;
    assert_eq!(got, Some(created.clone()));
    expect_code(
        client
            .get_event_type(pb::GetEventTypeRequest {
                event_type_name: "trial_started".to_owned(),
            })
            .await,
        Code::NotFound,
    )?;
    let first = client
        .list_event_types(pb::ListEventTypesRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    let second = client
        .list_event_types(pb::ListEventTypesRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
        })
        .await?
        .into_inner();
    let names: Vec<String> = first
        .event_types
        .iter()
        .chain(&second.event_types)
        .map(|t| t.event_type_name.clone())
        .collect();
    assert_eq!(names, ["app_crash", "coupon_redeemed"]);
    assert!(second.next_page_token.is_empty());

    // Adding: a new optional property; the same again is a no-op; a retyped one or a
    // required one is refused.
    let added = client
        .add_event_type_properties(pb::AddEventTypePropertiesRequest {
            event_type_name: "coupon_redeemed".to_owned(),
            properties: vec![property(
                "campaign",
                pb::EventPropertyType::String,
                false,
                false,
            )],
        })
        .await?
        .into_inner()
        .event_type
        .unwrap_or_default();
    let repeated = client
        .add_event_type_properties(pb::AddEventTypePropertiesRequest {
            event_type_name: "coupon_redeemed".to_owned(),
            properties: vec![property(
                "campaign",
                pb::EventPropertyType::String,
                false,
                false,
            )],
        })
        .await?
        .into_inner()
        .event_type
        .unwrap_or_default();
    let retyped = client
        .add_event_type_properties(pb::AddEventTypePropertiesRequest {
            event_type_name: "coupon_redeemed".to_owned(),
            properties: vec![
                property("channel_hint", pb::EventPropertyType::String, false, false),
                property("value", pb::EventPropertyType::Number, false, false),
            ],
        })
        .await;
    let required = client
        .add_event_type_properties(pb::AddEventTypePropertiesRequest {
            event_type_name: "coupon_redeemed".to_owned(),
            properties: vec![property(
                "store",
                pb::EventPropertyType::String,
                false,
                true,
            )],
        })
        .await;
    let unknown = client
        .add_event_type_properties(pb::AddEventTypePropertiesRequest {
            event_type_name: "trial_started".to_owned(),
            properties: vec![property(
                "plan",
                pb::EventPropertyType::String,
                false,
                false,
            )],
        })
        .await;

    let names: Vec<&str> = added
        .properties
        .iter()
        .map(|p| p.property_name.as_str())
        .collect();
    assert_eq!(names, ["value", "code", "first", "campaign"]);
    assert_eq!(repeated, added);
    let status = expect_code(retyped, Code::AlreadyExists)?;
    assert_eq!(reason(&status).as_deref(), Some("EVENT_PROPERTY_EXISTS"));
    let status = expect_code(required, Code::InvalidArgument)?;
    assert_eq!(bad_fields(&status), ["properties[0].required"]);
    expect_code(unknown, Code::NotFound)?;
    // One EventTypeDefined per change: two creations and one addition.
    assert_eq!(
        payloads(&app, "custops.profiles.v1.EventTypeDefined")
            .await?
            .len(),
        3
    );
    let stored = get_type(&app, "coupon_redeemed").await?;
    assert_eq!(
        stored.properties.len(),
        4,
        "the refused additions wrote nothing"
    );
    Ok(())
}

async fn get_type(app: &TestApp, name: &str) -> anyhow::Result<pb::EventType> {
    Ok(app
        .client
        .clone()
        .get_event_type(pb::GetEventTypeRequest {
            event_type_name: name.to_owned(),
        })
        .await?
        .into_inner()
        .event_type
        .unwrap_or_default())
}

#[tokio::test]
async fn bad_event_type_declarations_name_the_field() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let mut bad = coupon_type();
    bad.event_type_name = "Coupon Redeemed".to_owned();
    bad.properties[1].property_name = "value".to_owned();
    bad.properties[2].property_type = pb::EventPropertyType::Unspecified as i32;

    let status = expect_code(
        client
            .create_event_type(pb::CreateEventTypeRequest {
                event_type: Some(bad),
            })
            .await,
        Code::InvalidArgument,
    )?;

    assert_eq!(
        bad_fields(&status),
        [
            "event_type.event_type_name",
            "event_type.properties[1].property_name",
            "event_type.properties[2].property_type",
        ]
    );
    let listed = client
        .list_event_types(pb::ListEventTypesRequest::default())
        .await?
        .into_inner();
    assert!(listed.event_types.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_custom_event_is_recorded_once_and_shown_in_the_timeline_and_export() -> anyhow::Result<()>
{
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    declare(&app, coupon_type()).await?;
    let c = create(&app, customer(&unique_email("coupon"))).await?;

    // One value replayed: built twice, its occur time could fall either side of a second.
    let redeemed = redemption(&c.customer_id, "redeem-1");
    let first = record(&app, redeemed.clone()).await?;
    let replay = record(&app, redeemed).await?;
    let reused = record(
        &app,
        custom(
            &c.customer_id,
            "redeem-1",
            "coupon_redeemed",
            vec![("value", money(900))],
        ),
    )
    .await;

    assert!(!first.duplicate);
    assert!(replay.duplicate);
    assert_eq!(first.activity, replay.activity);
    let status = expect_code(reused, Code::AlreadyExists)?;
    assert_eq!(reason(&status).as_deref(), Some("EVENT_ID_REUSED"));
    assert_eq!(
        payloads(&app, "custops.profiles.v1.ActivityRecorded")
            .await?
            .len(),
        1,
        "a replay emits nothing"
    );
    // The timeline (filtered to custom events) shows it whole: profiles keeps personal values.
    let timeline = client
        .list_activities(pb::ListActivitiesRequest {
            customer_id: c.customer_id.clone(),
            filter: Some(pb::ActivityFilter {
                activity_kinds: vec![pb::ActivityKind::CustomEvent as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .activities;
    assert_eq!(timeline.len(), 1);
    let shown = timeline.first().and_then(custom_event);
    assert_eq!(
        shown.map(|e| e.event_type.as_str()),
        Some("coupon_redeemed")
    );
    assert_eq!(
        shown.and_then(|e| e.properties.get("code")),
        Some(&text(SECRET))
    );
    assert_eq!(
        shown.and_then(|e| e.properties.get("value")),
        Some(&money(500))
    );
    // The export holds the event and its type's definition.
    let export = client
        .export_customer(pb::ExportCustomerRequest {
            customer_id: c.customer_id.clone(),
            section_timeout: None,
        })
        .await?
        .into_inner()
        .customer_export
        .unwrap_or_default();
    let exported: Vec<&pb::CustomEvent> =
        export.activities.iter().filter_map(custom_event).collect();
    assert_eq!(exported.len(), 1);
    assert_eq!(
        exported.first().and_then(|e| e.properties.get("code")),
        Some(&text(SECRET))
    );
    let types: Vec<&str> = export
        .event_types
        .iter()
        .map(|t| t.event_type_name.as_str())
        .collect();
    assert_eq!(types, ["coupon_redeemed"]);
    Ok(())
}

#[tokio::test]
async fn bad_custom_events_are_refused_naming_the_field_and_nothing_is_written()
-> anyhow::Result<()> {
    let app = spawn_app().await?;
    declare(&app, coupon_type()).await?;
    let c = create(&app, customer(&unique_email("badevent"))).await?;
    let id = c.customer_id.as_str();
    let cases: Vec<(pb::Activity, Vec<&str>)> = vec![
        (
            custom(id, "b-1", "coupon_redemed", vec![("value", money(1))]),
            vec!["activity.custom_event.event_type"],
        ),
        (
            custom(id, "b-2", "Coupon", vec![]),
            vec!["activity.custom_event.event_type"],
        ),
        (
            custom(
                id,
                "b-3",
                "coupon_redeemed",
                vec![("value", money(1)), ("screen", text("checkout"))],
            ),
            vec!["activity.custom_event.properties[screen]"],
        ),
        (
            custom(
                id,
                "b-4",
                "coupon_redeemed",
                vec![("value", text("5 yuan"))],
            ),
            vec!["activity.custom_event.properties[value]"],
        ),
        (
            custom(id, "b-5", "coupon_redeemed", vec![("code", text("X"))]),
            vec!["activity.custom_event.properties[value]"],
        ),
        (
            custom(
                id,
                "b-6",
                "coupon_redeemed",
                vec![(
                    "value",
                    value(pb::event_property_value::Value::MoneyValue(common::Money {
                        amount_minor: 5,
                        currency: "yuan".to_owned(),
                    })),
                )],
            ),
            vec!["activity.custom_event.properties[value].money_value.currency"],
        ),
        (
            custom(
                id,
                "b-7",
                "coupon_redeemed",
                vec![
                    ("value", money(1)),
                    (
                        "first",
                        value(pb::event_property_value::Value::NumberValue(f64::NAN)),
                    ),
                ],
            ),
            vec!["activity.custom_event.properties[first]"],
        ),
    ];

    for (activity, expected) in cases {
        let event_id = activity.event_id.clone();
        let status = expect_code(record(&app, activity).await, Code::InvalidArgument)?;
        assert_eq!(bad_fields(&status), expected, "{event_id}");
    }

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM activities")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(stored, 0, "nothing half-written");
    assert!(
        payloads(&app, "custops.profiles.v1.ActivityRecorded")
            .await?
            .is_empty()
    );
    // Positive control: the same customer takes a valid event.
    record(&app, redemption(id, "b-ok")).await?;
    Ok(())
}

#[tokio::test]
async fn imported_custom_events_are_checked_against_the_catalog() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    declare(&app, coupon_type()).await?;
    let c = create(&app, customer(&unique_email("import"))).await?;
    let id = c.customer_id.as_str();
    // Index 3 repeats index 0 as one value (built twice, its occur time could differ).
    let redeemed = redemption(id, "imp-0");
    let items: Vec<pb::ImportActivitiesRequest> = vec![
        redeemed.clone(),
        custom(id, "imp-1", "trial_started", vec![]),
        custom(id, "imp-2", "coupon_redeemed", vec![("value", text("5"))]),
        redeemed,
        custom(id, "imp-4", "coupon_redeemed", vec![]),
    ]
    .into_iter()
    .map(|a| pb::ImportActivitiesRequest {
        activity: Some(a),
        customer_identity: None,
    })
    .collect();

    let first = client
        .import_activities(tokio_stream::iter(items.clone()))
        .await?
        .into_inner();
    let again = client
        .import_activities(tokio_stream::iter(items))
        .await?
        .into_inner();

    assert_eq!(
        (
            first.accepted_count,
            first.duplicate_count,
            first.rejected_count
        ),
        (1, 1, 3)
    );
    let errors: Vec<(i64, i32, Vec<String>)> = first
        .errors
        .iter()
        .map(|e| {
            (
                e.index,
                e.reason,
                e.field_violations.iter().map(|v| v.field.clone()).collect(),
            )
        })
        .collect();
    let invalid = pb::ActivityRejectReason::InvalidArgument as i32;
    assert_eq!(
        errors,
        [
            (
                1,
                invalid,
                vec!["activity.custom_event.event_type".to_owned()]
            ),
            (
                2,
                invalid,
                vec!["activity.custom_event.properties[value]".to_owned()]
            ),
            (
                4,
                invalid,
                vec!["activity.custom_event.properties[value]".to_owned()]
            ),
        ]
    );
    assert_eq!(
        (
            again.accepted_count,
            again.duplicate_count,
            again.rejected_count
        ),
        (0, 2, 3),
        "a re-sent stream stores nothing"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM activities")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(stored, 1);
    Ok(())
}

#[tokio::test]
async fn the_feed_carries_custom_events_without_personal_property_values() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    declare(&app, coupon_type()).await?;
    let c = create(&app, customer(&unique_email("feed"))).await?;
    let mut with_flag = redemption(&c.customer_id, "feed-1");
    if let Some(pb::activity::Details::CustomEvent(e)) = with_flag.details.as_mut() {
        e.properties.insert(
            "first".to_owned(),
            value(pb::event_property_value::Value::BoolValue(true)),
        );
    }

    record(&app, with_flag).await?;
    app.client
        .clone()
        .import_activities(tokio_stream::iter(vec![pb::ImportActivitiesRequest {
            activity: Some(redemption(&c.customer_id, "feed-2")),
            customer_identity: None,
        }]))
        .await?;

    let recorded = payloads(&app, "custops.profiles.v1.ActivityRecorded").await?;
    assert_eq!(recorded.len(), 2);
    for payload in &recorded {
        let activity = pb::ActivityRecorded::decode(payload.as_slice())?
            .activity
            .unwrap_or_default();
        let event = custom_event(&activity).cloned().unwrap_or_default();
        assert_eq!(event.event_type, "coupon_redeemed");
        assert_eq!(event.properties.get("value"), Some(&money(500)));
        assert!(
            !event.properties.contains_key("code"),
            "a contains_pii property reached the feed"
        );
    }
    let first = pb::ActivityRecorded::decode(recorded[0].as_slice())?
        .activity
        .unwrap_or_default();
    let kept: Vec<String> = custom_event(&first)
        .map(|e| {
            let mut keys: Vec<String> = e.properties.keys().cloned().collect();
            keys.sort();
            keys
        })
        .unwrap_or_default();
    assert_eq!(kept, ["first", "value"]);
    assert_eq!(outbox_holding(&app, SECRET).await?, 0);
    // Positive control: the value is stored in profiles (so the search above could find it).
    assert_eq!(rows_holding(&app, "activities", SECRET).await?, 2);
    // The catalog event lists the personal property with its type, never a value.
    let defined = payloads(&app, "custops.profiles.v1.EventTypeDefined").await?;
    let event_type = pb::EventTypeDefined::decode(defined[0].as_slice())?
        .event_type
        .unwrap_or_default();
    let code = event_type
        .properties
        .iter()
        .find(|p| p.property_name == "code")
        .cloned()
        .unwrap_or_default();
    assert!(code.contains_pii);
    assert_eq!(code.property_type, pb::EventPropertyType::String as i32);
    Ok(())
}

#[tokio::test]
async fn merges_move_custom_events_and_erasure_leaves_no_personal_value() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    declare(&app, coupon_type()).await?;
    let source = create(&app, customer(&unique_email("src"))).await?;
    let target = create(&app, customer(&unique_email("tgt"))).await?;
    record(&app, redemption(&source.customer_id, "m-1")).await?;

    client
        .merge_customers(pb::MergeCustomersRequest {
            source_customer_id: source.customer_id.clone(),
            target_customer_id: target.customer_id.clone(),
            ..Default::default()
        })
        .await?;
    let timeline = client
        .list_activities(pb::ListActivitiesRequest {
            customer_id: target.customer_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .activities;
    assert_eq!(
        timeline
            .iter()
            .filter_map(custom_event)
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["coupon_redeemed"]
    );
    assert_eq!(rows_holding(&app, "activities", SECRET).await?, 1);

    client
        .erase_customer(pb::EraseCustomerRequest {
            customer_id: target.customer_id.clone(),
            request_id: String::new(),
        })
        .await?;

    for table in [
        "activities",
        "customers",
        "merges",
        "erased_activity_aggregates",
        "idempotency_keys",
    ] {
        assert_eq!(rows_holding(&app, table, SECRET).await?, 0, "{table}");
    }
    assert_eq!(outbox_holding(&app, SECRET).await?, 0);
    Ok(())
}
