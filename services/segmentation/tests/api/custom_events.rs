//! Custom events (issue 21) in segmentation: end to end from the real profiles service (an
//! event recorded there is stored here without its personal property, the catalog is learnt,
//! a merge moves the event and an erasure removes it), and through the feed handler with real
//! envelopes (redelivery, unmerge, retention, catalog events out of order).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use custops_common::clock::Clock;
use custops_common::consumer::EventHandler;
use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::common::v1::Event;
use custops_contracts::custops::profiles::v1 as profiles;
use custops_segmentation::feeds::profiles::ProfilesFeed;
use custops_segmentation::wire::timestamp;
use prost::{Message, Name};
use sqlx::PgPool;

use crate::helpers::{
    TestApp, as_of, eventually, profiles_customers, spawn_app_at, spawn_with_profiles,
};

/// How long a change may take to travel profiles → feed → segmentation on a loaded test
/// machine: a bound on waiting, not a claim about speed.
const PATIENCE: Duration = Duration::from_secs(10);

/// The personal value sent in the `code` property (declared `contains_pii`).
const SECRET: &str = "coupon-code-of-wei-li-7731";

fn property(
    name: &str,
    property_type: profiles::EventPropertyType,
    contains_pii: bool,
    required: bool,
) -> profiles::EventPropertyDefinition {
    profiles::EventPropertyDefinition {
        property_name: name.to_owned(),
        property_type: property_type as i32,
        description: String::new(),
        contains_pii,
        required,
    }
}

fn coupon_type() -> profiles::EventType {
    profiles::EventType {
        event_type_name: "coupon_redeemed".to_owned(),
        description: "A coupon was redeemed".to_owned(),
        properties: vec![
            property("value", profiles::EventPropertyType::Money, false, true),
            property("code", profiles::EventPropertyType::String, true, false),
        ],
        ..Default::default()
    }
}

fn redemption(customer_id: &str, event_id: &str, seconds_ago: i64) -> profiles::Activity {
    let properties = [
        (
            "value",
            profiles::event_property_value::Value::MoneyValue(common::Money {
                amount_minor: 500,
                currency: "CNY".to_owned(),
            }),
        ),
        (
            "code",
            profiles::event_property_value::Value::StringValue(SECRET.to_owned()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| {
        (
            k.to_owned(),
            profiles::EventPropertyValue { value: Some(v) },
        )
    })
    .collect();
    profiles::Activity {
        customer_id: customer_id.to_owned(),
        source: "checkout".to_owned(),
        event_id: event_id.to_owned(),
        occur_time: Some(prost_types::Timestamp {
            seconds: Utc::now().timestamp() - seconds_ago,
            nanos: 0,
        }),
        channel: "app".to_owned(),
        details: Some(profiles::activity::Details::CustomEvent(
            profiles::CustomEvent {
                event_type: "coupon_redeemed".to_owned(),
                properties,
            },
        )),
        ..Default::default()
    }
}

/// (customer id, merged from, properties as text) of the stored events of `activity_id`.
async fn stored(
    pool: &PgPool,
    activity_id: &str,
) -> anyhow::Result<Option<(String, Option<String>, String)>> {
    Ok(sqlx::query_as(
        "SELECT customer_id, merged_from, properties::text FROM customer_events \
         WHERE activity_id = $1",
    )
    .bind(activity_id)
    .fetch_optional(pool)
    .await?)
}

#[tokio::test]
async fn custom_events_arrive_without_personal_values_and_follow_merges_and_erasure()
-> anyhow::Result<()> {
    // Arrange: profiles in-process, segmentation following its feed, over one database.
    let (app, mut profiles, _stop_profiles) = spawn_with_profiles(None).await?;
    profiles
        .create_event_type(profiles::CreateEventTypeRequest {
            event_type: Some(coupon_type()),
        })
        .await?;
    let ids = profiles_customers(
        &mut profiles,
        &["src.events@example.com", "tgt.events@example.com"],
    )
    .await?;
    let (source, target) = (ids[0].clone(), ids[1].clone());

    // Act 1: a custom event with a personal property on the source.
    let recorded = profiles
        .record_activity(profiles::RecordActivityRequest {
            activity: Some(redemption(&source, "redeem-1", 60)),
            customer_identity: None,
        })
        .await?
        .into_inner()
        .activity
        .unwrap_or_default();
    let activity_id = recorded.activity_id.clone();

    // Assert 1: stored under the source, its money value kept, its code never seen.
    let arrived = eventually(PATIENCE, || {
        let pool = app.pool.clone();
        let id = activity_id.clone();
        async move { stored(&pool, &id).await.ok().flatten().is_some() }
    })
    .await;
    assert!(arrived, "the custom event never reached segmentation");
    let (customer, merged_from, properties) =
        stored(&app.pool, &activity_id).await?.unwrap_or_default();
    assert_eq!((customer.as_str(), merged_from), (source.as_str(), None));
    let properties: serde_json::Value = serde_json::from_str(&properties)?;
    assert_eq!(
        properties,
        serde_json::json!({"value": {"money": {"amount_minor": 500, "currency": "CNY"}}})
    );
    let leaked: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM customer_events e WHERE to_jsonb(e)::text LIKE '%' || $1 || '%') \
         + (SELECT count(*) FROM event_types t WHERE to_jsonb(t)::text LIKE '%' || $1 || '%')",
    )
    .bind(SECRET)
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(leaked, 0, "a personal value reached segmentation");
    let catalog: Option<String> =
        sqlx::query_scalar("SELECT properties::text FROM event_types WHERE name = $1")
            .bind("coupon_redeemed")
            .fetch_optional(&app.pool)
            .await?;
    let catalog: serde_json::Value = serde_json::from_str(&catalog.unwrap_or_default())?;
    assert_eq!(
        catalog,
        serde_json::json!([
            {"name": "value", "type": "money", "contains_pii": false, "required": true, "description": ""},
            {"name": "code", "type": "string", "contains_pii": true, "required": false, "description": ""},
        ])
    );

    // Act 2: the source is merged into the target.
    profiles
        .merge_customers(profiles::MergeCustomersRequest {
            source_customer_id: source.clone(),
            target_customer_id: target.clone(),
            ..Default::default()
        })
        .await?;

    // Assert 2: the event moved, remembering where from.
    let moved = eventually(PATIENCE, || {
        let pool = app.pool.clone();
        let id = activity_id.clone();
        let target = target.clone();
        async move {
            stored(&pool, &id)
                .await
                .ok()
                .flatten()
                .is_some_and(|(customer, _, _)| customer == target)
        }
    })
    .await;
    assert!(moved, "the merge did not move the custom event");
    let (_, merged_from, _) = stored(&app.pool, &activity_id).await?.unwrap_or_default();
    assert_eq!(merged_from.as_deref(), Some(source.as_str()));

    // Act 3: the target is erased.
    profiles
        .erase_customer(profiles::EraseCustomerRequest {
            customer_id: target.clone(),
            request_id: String::new(),
        })
        .await?;

    // Assert 3: nothing of either customer's events is left.
    let gone = eventually(PATIENCE, || {
        let pool = app.pool.clone();
        let id = activity_id.clone();
        async move { stored(&pool, &id).await.ok().flatten().is_none() }
    })
    .await;
    assert!(gone, "the erasure left the custom event");
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM customer_events WHERE customer_id = ANY($1) OR merged_from = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(left, 0);
    Ok(())
}

/// An envelope for `payload` at feed position `sequence`.
fn event<M: Message + Name>(sequence: i64, aggregate_id: &str, payload: &M) -> Event {
    Event {
        sequence,
        event_id: format!("ev-{}-{sequence}", M::NAME),
        aggregate_type: "customer".into(),
        aggregate_id: aggregate_id.into(),
        event_type: M::full_name(),
        occur_time: Some(timestamp(as_of())),
        payload: Some(prost_types::Any {
            type_url: M::type_url(),
            value: payload.encode_to_vec(),
        }),
        traceparent: String::new(),
    }
}

/// ActivityRecorded of a custom event `id` of `customer`, `days_ago` before [`as_of`].
fn recorded(id: &str, customer: &str, days_ago: i64) -> profiles::ActivityRecorded {
    let mut activity = redemption(customer, id, 0);
    activity.activity_id = id.to_owned();
    activity.occur_time = Some(timestamp(as_of() - chrono::Duration::days(days_ago)));
    if let Some(profiles::activity::Details::CustomEvent(e)) = activity.details.as_mut() {
        e.properties.remove("code");
    }
    profiles::ActivityRecorded {
        activity: Some(activity),
    }
}

async fn apply(app: &TestApp, feed: &ProfilesFeed, events: &[Event]) -> anyhow::Result<()> {
    for e in events {
        let mut tx = app.pool.begin().await?;
        feed.handle(&mut tx, e).await?;
        tx.commit().await?;
    }
    Ok(())
}

async fn count(pool: &PgPool, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(pool).await?)
}

#[tokio::test]
async fn redelivery_changes_nothing_unmerge_moves_back_and_old_events_are_not_kept()
-> anyhow::Result<()> {
    let app = spawn_app_at(as_of()).await?;
    let clock: Arc<dyn Clock> = Arc::new(app.clock.clone());
    let feed = ProfilesFeed::new(clock);
    let history = vec![
        event(1, "src", &recorded("e-1", "src", 1)),
        event(2, "src", &recorded("e-2", "src", 2)),
        event(3, "tgt", &recorded("e-3", "tgt", 3)),
        // Older than the default retention (1,095 days): not kept.
        event(4, "src", &recorded("e-old", "src", 2000)),
    ];

    apply(&app, &feed, &history).await?;
    apply(&app, &feed, &history).await?;

    assert_eq!(
        count(&app.pool, "SELECT count(*) FROM customer_events").await?,
        3
    );
    apply(
        &app,
        &feed,
        &[event(
            10,
            "tgt",
            &profiles::CustomerMerged {
                merge_id: "merge-1".into(),
                source_customer_id: "src".into(),
                target_customer_id: "tgt".into(),
                ..Default::default()
            },
        )],
    )
    .await?;
    assert_eq!(
        count(
            &app.pool,
            "SELECT count(*) FROM customer_events WHERE customer_id = 'tgt'"
        )
        .await?,
        3
    );
    // A later event of the target stays with it through the unmerge.
    apply(
        &app,
        &feed,
        &[event(11, "tgt", &recorded("e-late", "tgt", 0))],
    )
    .await?;
    apply(
        &app,
        &feed,
        &[event(
            12,
            "tgt",
            &profiles::CustomerUnmerged {
                merge_id: "merge-1".into(),
                source_customer_id: "src".into(),
                target_customer_id: "tgt".into(),
                ..Default::default()
            },
        )],
    )
    .await?;
    let owners: Vec<(String, String)> = sqlx::query_as(
        "SELECT activity_id, customer_id FROM customer_events WHERE merge_id IS NULL \
         AND merged_from IS NULL ORDER BY activity_id",
    )
    .fetch_all(&app.pool)
    .await?;
    let owners: Vec<(&str, &str)> = owners
        .iter()
        .map(|(a, c)| (a.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        owners,
        [
            ("e-1", "src"),
            ("e-2", "src"),
            ("e-3", "tgt"),
            ("e-late", "tgt")
        ]
    );

    // The catalog keeps the newest definition whatever order its events arrive in.
    let mut newer = coupon_type();
    newer.properties.push(property(
        "campaign",
        profiles::EventPropertyType::String,
        false,
        false,
    ));
    apply(
        &app,
        &feed,
        &[
            event(
                21,
                "coupon_redeemed",
                &profiles::EventTypeDefined {
                    event_type: Some(newer),
                },
            ),
            event(
                20,
                "coupon_redeemed",
                &profiles::EventTypeDefined {
                    event_type: Some(coupon_type()),
                },
            ),
        ],
    )
    .await?;
    assert_eq!(
        count(
            &app.pool,
            "SELECT jsonb_array_length(properties)::bigint FROM event_types \
             WHERE name = 'coupon_redeemed'"
        )
        .await?,
        3
    );
    Ok(())
}
