//! The scale fixture (`custops_segmentation::fixture`) writes segmentation's tables directly;
//! these tests hold it to the feed: the customers, activities, event types and custom events it
//! loaded, sent as AttributeDefinitionCreated, CustomerCreated, EventTypeDefined and
//! ActivityRecorded events through the profiles feed handler into a second database, write the
//! same rows (the custom events' properties to the byte). A value the feed could not have
//! written (a slug that is no profiles enum value, an interaction with two categories, an
//! activity beyond the retained history) fails the conversion or the comparison. Also: the same
//! seed loads the same rows, and a larger load has the shape the fixture promises.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use custops_common::clock::Clock;
use custops_common::consumer::EventHandler;
use custops_contracts::custops::common::v1::{ContactChannel, Date, Event, Money};
use custops_contracts::custops::profiles::v1 as pr;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::domain::facts::{AttributeValue, Facts};
use custops_segmentation::feeds::profiles::ProfilesFeed;
use custops_segmentation::fixture::{self, Fixture};
use custops_segmentation::store::facts::load_facts;
use custops_segmentation::wire::timestamp;
use prost::{Message, Name};
use sqlx::PgPool;

use crate::helpers::{as_of, spawn_app_at};

/// A raw `customer_activities` row, every column.
type ActivityRow = (
    String,
    String,
    String,
    DateTime<Utc>,
    Option<i64>,
    Option<String>,
    Vec<String>,
    String,
    Option<String>,
    Option<String>,
);

const ACTIVITY_COLUMNS: &str = "SELECT activity_id, customer_id, kind, occur_time, amount_minor, \
    currency, categories, channel, merged_from, merge_id FROM customer_activities \
    ORDER BY activity_id";

/// A raw `customer_events` row: every column, the properties as stored text.
type CustomEventRow = (
    String,
    String,
    String,
    DateTime<Utc>,
    String,
    String,
    Option<String>,
    Option<String>,
);

const CUSTOM_EVENT_COLUMNS: &str = "SELECT activity_id, customer_id, event_type, occur_time, \
    properties::text, channel, merged_from, merge_id FROM customer_events ORDER BY activity_id";

/// Customers known to profiles, given to the fixture for its first customers.
const KNOWN: [&str; 2] = [
    "0190f6f5-0000-7000-8000-0000000000c1",
    "0190f6f5-0000-7000-8000-0000000000c2",
];

fn envelope<M: Message + Name>(sequence: i64, aggregate_id: &str, payload: &M) -> Event {
    Event {
        sequence,
        event_id: format!("ev-{sequence}"),
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

/// The profiles enum number of a stored slug ("" → UNSPECIFIED); fails for a slug no value
/// of the enum has, which the feed could never have written.
fn enum_value(slug: &str, prefix: &str, of: fn(&str) -> Option<i32>) -> anyhow::Result<i32> {
    if slug.is_empty() {
        return Ok(0);
    }
    of(&format!("{prefix}{}", slug.to_ascii_uppercase()))
        .ok_or_else(|| anyhow::anyhow!("{slug} is no {prefix}* value"))
}

/// The CustomerTraits profiles would have sent for the stored facts.
fn traits_of(f: &Facts) -> anyhow::Result<pr::CustomerTraits> {
    let consents = [
        (f.consents.sms, ContactChannel::Sms),
        (f.consents.email, ContactChannel::Email),
        (f.consents.app_push, ContactChannel::AppPush),
        (f.consents.wechat, ContactChannel::Wechat),
    ]
    .into_iter()
    .filter(|(granted, _)| *granted)
    .map(|(_, channel)| pr::Consent {
        channel: channel as i32,
        status: pr::ConsentStatus::Granted as i32,
        source: "fixture".into(),
        ..Default::default()
    })
    .collect();
    let mut custom_attributes = BTreeMap::new();
    for (name, value) in &f.attributes {
        use pr::custom_attribute_value::Value;
        let value = match value {
            AttributeValue::String(s) => Value::StringValue(s.clone()),
            AttributeValue::Double(d) => Value::NumberValue(*d),
            AttributeValue::Bool(b) => Value::BoolValue(*b),
            AttributeValue::Timestamp(t) => Value::TimeValue(timestamp(*t)),
            other => anyhow::bail!("profiles has no attribute value like {other:?}"),
        };
        custom_attributes.insert(
            name.clone(),
            pr::CustomAttributeValue { value: Some(value) },
        );
    }
    Ok(pr::CustomerTraits {
        customer_id: f.customer_id.clone(),
        state: pr::CustomerState::Active as i32,
        create_time: f.customer_create_time.map(timestamp),
        demographics: Some(pr::Demographics {
            birth_date: f.birth_date.map(|d| {
                use chrono::Datelike;
                Date {
                    year: d.year(),
                    month: i32::try_from(d.month()).unwrap_or_default(),
                    day: i32::try_from(d.day()).unwrap_or_default(),
                }
            }),
            gender: enum_value(&f.gender, "GENDER_", |n| {
                pr::Gender::from_str_name(n).map(|v| v as i32)
            })?,
            income_band: enum_value(&f.income_band, "INCOME_BAND_", |n| {
                pr::IncomeBand::from_str_name(n).map(|v| v as i32)
            })?,
            occupation: f.occupation.clone(),
            education_level: enum_value(&f.education, "EDUCATION_LEVEL_", |n| {
                pr::EducationLevel::from_str_name(n).map(|v| v as i32)
            })?,
        }),
        geography: Some(pr::Geography {
            country_code: f.country.clone(),
            region: f.region.clone(),
            city: f.city.clone(),
            postal_code: String::new(),
        }),
        psychographics: Some(pr::Psychographics {
            interests: f.interests.clone(),
            lifestyle_tags: f.lifestyle_tags.clone(),
        }),
        tags: f.tags.clone(),
        custom_attributes: custom_attributes.into_iter().collect(),
        consents,
        ..Default::default()
    })
}

/// The ActivityRecorded profiles would have sent for a stored activity row.
fn activity_of(row: &ActivityRow) -> anyhow::Result<pr::ActivityRecorded> {
    let (id, customer, kind, occur_time, amount, currency, categories, channel, merged, merge) =
        row;
    anyhow::ensure!(
        merged.is_none() && merge.is_none(),
        "{id}: merge columns set"
    );
    let details = if kind == "purchase" {
        pr::activity::Details::Purchase(pr::Purchase {
            order_id: id.clone(),
            amount: Some(Money {
                amount_minor: amount.ok_or_else(|| anyhow::anyhow!("{id}: no amount"))?,
                currency: currency
                    .clone()
                    .ok_or_else(|| anyhow::anyhow!("{id}: no currency"))?,
            }),
            categories: categories.clone(),
            item_count: 1,
        })
    } else {
        anyhow::ensure!(
            amount.is_none() && currency.is_none() && categories.len() <= 1,
            "{id}: an interaction with an amount, a currency or several categories"
        );
        let interaction_kind = enum_value(kind, "INTERACTION_KIND_", |n| {
            pr::InteractionKind::from_str_name(n).map(|v| v as i32)
        })?;
        pr::activity::Details::Interaction(pr::Interaction {
            interaction_kind,
            category: categories.first().cloned().unwrap_or_default(),
            ..Default::default()
        })
    };
    Ok(pr::ActivityRecorded {
        activity: Some(pr::Activity {
            activity_id: id.clone(),
            customer_id: customer.clone(),
            source: "fixture".into(),
            event_id: id.clone(),
            occur_time: Some(timestamp(*occur_time)),
            channel: channel.clone(),
            details: Some(details),
            ..Default::default()
        }),
    })
}

/// The EventTypeDefined profiles would have sent for a stored event type row (name,
/// description, properties as text).
fn event_type_of(row: &(String, String, String)) -> anyhow::Result<pr::EventTypeDefined> {
    let (name, description, properties) = row;
    let listed: Vec<serde_json::Value> = serde_json::from_str(properties)?;
    let properties = listed
        .iter()
        .map(|p| {
            let text = |key: &str| p[key].as_str().map(str::to_owned);
            let flag = |key: &str| p[key].as_bool();
            let property_type = match text("type").as_deref() {
                Some("string") => pr::EventPropertyType::String,
                Some("number") => pr::EventPropertyType::Number,
                Some("bool") => pr::EventPropertyType::Bool,
                Some("time") => pr::EventPropertyType::Time,
                other => anyhow::bail!("{name}: profiles has no property type {other:?}"),
            };
            Ok(pr::EventPropertyDefinition {
                property_name: text("name")
                    .ok_or_else(|| anyhow::anyhow!("{name}: a property without a name"))?,
                property_type: property_type as i32,
                description: text("description").unwrap_or_default(),
                contains_pii: flag("contains_pii").unwrap_or_default(),
                required: flag("required").unwrap_or_default(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(pr::EventTypeDefined {
        event_type: Some(pr::EventType {
            event_type_name: name.clone(),
            description: description.clone(),
            properties,
            ..Default::default()
        }),
    })
}

/// The ActivityRecorded profiles would have sent for a stored custom event row.
fn custom_event_of(row: &CustomEventRow) -> anyhow::Result<pr::ActivityRecorded> {
    use pr::event_property_value::Value;
    let (id, customer, event_type, occur_time, properties, channel, merged, merge) = row;
    anyhow::ensure!(
        merged.is_none() && merge.is_none(),
        "{id}: merge columns set"
    );
    let stored: BTreeMap<String, serde_json::Value> = serde_json::from_str(properties)?;
    let mut values = BTreeMap::new();
    for (name, typed) in stored {
        let value = match (
            typed.get("string"),
            typed.get("number"),
            typed.get("bool"),
            typed.get("time"),
        ) {
            (Some(serde_json::Value::String(s)), None, None, None) => Value::StringValue(s.clone()),
            (None, Some(n), None, None) => Value::NumberValue(
                n.as_f64()
                    .ok_or_else(|| anyhow::anyhow!("{id}.{name}: not a number"))?,
            ),
            (None, None, Some(serde_json::Value::Bool(b)), None) => Value::BoolValue(*b),
            (None, None, None, Some(serde_json::Value::String(t))) => Value::TimeValue(timestamp(
                DateTime::parse_from_rfc3339(t)?.with_timezone(&Utc),
            )),
            _ => anyhow::bail!("{id}.{name}: a value profiles could not have sent: {typed}"),
        };
        values.insert(name, pr::EventPropertyValue { value: Some(value) });
    }
    Ok(pr::ActivityRecorded {
        activity: Some(pr::Activity {
            activity_id: id.clone(),
            customer_id: customer.clone(),
            source: "fixture".into(),
            event_id: id.clone(),
            occur_time: Some(timestamp(*occur_time)),
            channel: channel.clone(),
            details: Some(pr::activity::Details::CustomEvent(pr::CustomEvent {
                event_type: event_type.clone(),
                properties: values,
            })),
            ..Default::default()
        }),
    })
}

async fn event_types(pool: &PgPool) -> anyhow::Result<Vec<(String, String, String)>> {
    Ok(
        sqlx::query_as("SELECT name, description, properties::text FROM event_types ORDER BY name")
            .fetch_all(pool)
            .await?,
    )
}

async fn custom_event_rows(pool: &PgPool) -> anyhow::Result<Vec<CustomEventRow>> {
    Ok(sqlx::query_as(CUSTOM_EVENT_COLUMNS).fetch_all(pool).await?)
}

async fn activity_rows(pool: &PgPool) -> anyhow::Result<Vec<ActivityRow>> {
    Ok(sqlx::query_as(ACTIVITY_COLUMNS).fetch_all(pool).await?)
}

async fn definitions(pool: &PgPool) -> anyhow::Result<Vec<(String, String, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT name, value_type, display_name, description FROM attribute_definitions \
         ORDER BY name",
    )
    .fetch_all(pool)
    .await?)
}

async fn customer_ids(pool: &PgPool) -> anyhow::Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT customer_id FROM customer_facts ORDER BY customer_id")
            .fetch_all(pool)
            .await?,
    )
}

/// The facts of `id` as the feed writes them: the derived and feed-position parts, which the
/// fixture leaves to the service, cleared.
async fn written_facts(pool: &PgPool, id: &str) -> anyhow::Result<Facts> {
    let mut facts = load_facts(&mut *pool.acquire().await?, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no facts row for {id}"))?;
    facts.rfm = Default::default();
    facts.feedback = Default::default();
    facts.segments = Default::default();
    facts.lifecycle.stage.clear();
    facts.lifecycle.previous_stage.clear();
    facts.lifecycle.stage_start_time = as_of();
    facts.lifecycle.churn_risk = false;
    facts.lifecycle.churn_risk_score = 0.0;
    Ok(facts)
}

async fn digest(pool: &PgPool) -> anyhow::Result<(String, String)> {
    Ok(sqlx::query_as(
        "SELECT (SELECT md5(string_agg(f::text, '|' ORDER BY f.customer_id)) FROM customer_facts f), \
                (SELECT md5(string_agg(a::text, '|' ORDER BY a.activity_id)) FROM customer_activities a) \
                || (SELECT COALESCE(md5(string_agg(e::text, '|' ORDER BY e.activity_id)), '') FROM customer_events e)",
    )
    .fetch_one(pool)
    .await?)
}

#[tokio::test]
async fn the_fixture_writes_what_the_profiles_feed_writes() -> anyhow::Result<()> {
    let loaded_app = spawn_app_at(as_of()).await?;
    let mut fixture = Fixture::new(40, 240, 7, as_of());
    fixture.known_ids = KNOWN.map(str::to_owned).to_vec();
    let loaded = fixture.load(&mut *loaded_app.pool.acquire().await?).await?;
    assert_eq!(loaded.customers, 40);
    assert!(loaded.activities > 100, "{loaded:?}");
    assert!(loaded.purchases > 0 && loaded.purchases < loaded.activities);

    // The same customers, activities and definitions as the events profiles would have sent.
    let ids = customer_ids(&loaded_app.pool).await?;
    assert_eq!(ids.len(), 40);
    for known in KNOWN {
        assert!(ids.iter().any(|id| id == known), "{known} not loaded");
    }
    assert!(ids.contains(&fixture.customer_id(39)));
    let mut events = Vec::new();
    let mut sequence = 0;
    let mut next = || {
        sequence += 1;
        sequence
    };
    for (name, value_type, _, description) in definitions(&loaded_app.pool).await? {
        let value_type = match value_type.as_str() {
            "double" => pr::AttributeValueType::Number,
            "bool" => pr::AttributeValueType::Bool,
            "string" => pr::AttributeValueType::String,
            "timestamp" => pr::AttributeValueType::Time,
            other => anyhow::bail!("profiles has no attribute type {other}"),
        };
        let created = pr::AttributeDefinitionCreated {
            attribute_definition: Some(pr::AttributeDefinition {
                attribute_name: name.clone(),
                value_type: value_type as i32,
                description,
                ..Default::default()
            }),
        };
        events.push(envelope(next(), &name, &created));
    }
    let mut loaded_facts = Vec::new();
    for id in &ids {
        let facts = written_facts(&loaded_app.pool, id).await?;
        let created = pr::CustomerCreated {
            traits: Some(traits_of(&facts)?),
        };
        events.push(envelope(next(), id, &created));
        loaded_facts.push(facts);
    }
    let rows = activity_rows(&loaded_app.pool).await?;
    assert_eq!(rows.len() as u64, loaded.activities);
    for row in &rows {
        events.push(envelope(next(), &row.1, &activity_of(row)?));
    }
    let types = event_types(&loaded_app.pool).await?;
    assert_eq!(types.len(), fixture::EVENT_TYPES.len());
    for row in &types {
        events.push(envelope(next(), &row.0, &event_type_of(row)?));
    }
    let custom_events = custom_event_rows(&loaded_app.pool).await?;
    assert_eq!(custom_events.len() as u64, loaded.custom_events);
    assert!(loaded.custom_events > 10, "{loaded:?}");
    for row in &custom_events {
        events.push(envelope(next(), &row.1, &custom_event_of(row)?));
    }

    let fed_app = spawn_app_at(as_of()).await?;
    let clock: Arc<dyn Clock> = Arc::new(fed_app.clock.clone());
    let feed = ProfilesFeed::new(clock);
    let mut tx = fed_app.pool.begin().await?;
    for event in &events {
        feed.handle(&mut tx, event).await?;
    }
    tx.commit().await?;

    assert_eq!(
        definitions(&fed_app.pool).await?,
        definitions(&loaded_app.pool).await?
    );
    assert_eq!(customer_ids(&fed_app.pool).await?, ids);
    for (id, loaded) in ids.iter().zip(&loaded_facts) {
        assert_eq!(&written_facts(&fed_app.pool, id).await?, loaded, "{id}");
    }
    assert_eq!(activity_rows(&fed_app.pool).await?, rows);
    assert_eq!(event_types(&fed_app.pool).await?, types);
    assert_eq!(custom_event_rows(&fed_app.pool).await?, custom_events);

    // The service reads a loaded customer like any other.
    let answered = loaded_app
        .client
        .clone()
        .get_customer_facts(pb::GetCustomerFactsRequest {
            customer_id: KNOWN[0].to_owned(),
        })
        .await?
        .into_inner()
        .facts
        .ok_or_else(|| anyhow::anyhow!("no facts answered"))?;
    assert_eq!(answered.customer_id, KNOWN[0]);
    Ok(())
}

#[tokio::test]
async fn the_same_seed_loads_the_same_rows_in_the_promised_shape() -> anyhow::Result<()> {
    let first = spawn_app_at(as_of()).await?;
    let second = spawn_app_at(as_of()).await?;
    let fixture = Fixture::new(3_000, 15_000, 11, as_of());
    let loaded = fixture.load(&mut *first.pool.acquire().await?).await?;
    assert_eq!(
        fixture.load(&mut *second.pool.acquire().await?).await?,
        loaded
    );
    assert_eq!(digest(&first.pool).await?, digest(&second.pool).await?);

    // About the activities asked for, 70 % purchases.
    let wanted = fixture.activities as f64;
    assert!(
        (loaded.activities as f64 - wanted).abs() < 0.1 * wanted,
        "{loaded:?}"
    );
    let purchase_share = loaded.purchases as f64 / loaded.activities as f64;
    assert!((0.65..0.75).contains(&purchase_share), "{purchase_share}");

    // Skewed: about 15 % never active, the busiest tenth holding a large share.
    let (inactive, top_share): (i64, f64) = sqlx::query_as(
        "WITH n AS (SELECT f.customer_id, count(a.activity_id) AS n FROM customer_facts f \
           LEFT JOIN customer_activities a USING (customer_id) GROUP BY f.customer_id), \
         r AS (SELECT n, ntile(10) OVER (ORDER BY n DESC) AS decile FROM n) \
         SELECT count(*) FILTER (WHERE n = 0), \
                (sum(n) FILTER (WHERE decile = 1))::float8 / sum(n)::float8 FROM r",
    )
    .fetch_one(&first.pool)
    .await?;
    assert!((300..600).contains(&inactive), "{inactive} inactive");
    assert!(top_share > 0.25, "the busiest tenth holds {top_share}");

    // Up to two years back, never within two hours of a whole-day boundary before the anchor.
    let (oldest, newest, off_boundary): (DateTime<Utc>, DateTime<Utc>, bool) = sqlx::query_as(
        "SELECT min(occur_time), max(occur_time), \
           bool_and(mod(extract(epoch FROM ($1 - occur_time))::numeric, 86400) \
                    BETWEEN 7200 AND 79200) \
         FROM customer_activities",
    )
    .bind(as_of())
    .fetch_one(&first.pool)
    .await?;
    assert!(oldest > as_of() - Duration::days(731), "{oldest}");
    assert!(newest <= as_of() - Duration::hours(2), "{newest}");
    assert!(off_boundary);

    // Several currencies and places, consents and attributes on some customers.
    let (currencies, countries, with_email, with_vip_level): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(DISTINCT currency) FROM customer_activities), \
                    (SELECT count(DISTINCT country) FROM customer_facts), \
                    (SELECT count(*) FROM customer_facts WHERE consent_email), \
                    (SELECT count(*) FROM customer_facts WHERE attributes ? 'vip_level')",
    )
    .fetch_one(&first.pool)
    .await?;
    assert!(currencies >= 4, "{currencies} currencies");
    assert_eq!(countries, 5);
    assert!((1_100..1_800).contains(&with_email), "{with_email}");
    assert!((600..1_200).contains(&with_vip_level), "{with_vip_level}");
    assert_eq!(fixture::ATTRIBUTES.len(), 3);

    // About one custom event per customer, of all twenty types, the first the most frequent,
    // on fewer than half of the customers, with every property type.
    let (events, types, first_share, eventful, kinds): (i64, i64, f64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT event_type), \
               (count(*) FILTER (WHERE event_type = $1))::float8 / count(*)::float8, \
               count(DISTINCT customer_id), \
               (SELECT count(DISTINCT k) FROM customer_events, \
                  jsonb_each(properties) AS p (name, v), jsonb_object_keys(v) AS k) \
             FROM customer_events",
    )
    .bind(fixture::EVENT_TYPES[0].name)
    .fetch_one(&first.pool)
    .await?;
    assert_eq!(loaded.custom_events as i64, events);
    assert!((2_400..3_600).contains(&events), "{events} custom events");
    assert_eq!(types, 20);
    assert!((0.15..0.30).contains(&first_share), "{first_share}");
    assert!(
        (1_200..1_800).contains(&eventful),
        "{eventful} customers with events"
    );
    assert_eq!(kinds, 4);
    Ok(())
}
