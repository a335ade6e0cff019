//! The profiles side of the segmentation feed benchmarks: customers created and activities
//! recorded through profiles' API by the load generator (timed: profiles' own ingest rate, the
//! baseline of `segmentation.apply`), the fixture's twenty custom event types declared and
//! custom events of them recorded the same way (the baseline of `segmentation.apply_events`),
//! and what profiles' feed holds once every event has its sequence.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use custops_common::client::{RetryPolicy, retry_idempotent};
use custops_common::time::to_timestamp;
use custops_contracts::custops::common::v1::{ContactChannel, Date, Money};
use custops_contracts::custops::profiles::v1 as pr;
use custops_contracts::custops::profiles::v1::profiles_service_client::ProfilesServiceClient;
use custops_segmentation::fixture::{
    CATEGORIES, CHANNELS, EVENT_TYPES, FixtureEventType, INTERESTS, PLACES, PropertyValues,
};
use prost::{Message, Name};
use sqlx::Connection;
use tonic::transport::Channel;

use super::super::load::{CallFuture, Connections, MakeCall, Rng};

/// How a load call answered UNAVAILABLE is retried: six more times, backing off from 100 ms
/// to 3.2 s (the calls carry request or event ids, so a replay is harmless).
const CALL_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 7,
    initial_backoff: Duration::from_millis(100),
    max_backoff: Duration::from_millis(3200),
};

/// Makes call number `i` over the channel.
type IndexedCall = Arc<dyn Fn(Channel, usize) -> CallFuture + Send + Sync>;

/// Calls `0..count`, `concurrency` at a time (each worker sends its next call when the
/// previous returns); retries a call answered UNAVAILABLE up to six times, fails on any
/// other failed call. Returns how long they took.
async fn run_calls(
    conns: &Arc<Connections>,
    concurrency: usize,
    count: usize,
    call: IndexedCall,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (conns, next, call) = (conns.clone(), next.clone(), call.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                // UNAVAILABLE (say, a pool exhausted while Postgres vacuums after a
                // recompute) is retried after a backoff, as a client would; the time counts.
                retry_idempotent(CALL_RETRY, || call(conns.pick(), i))
                    .await
                    .map_err(|status| anyhow::anyhow!("call {i} failed: {status}"))?;
            }
        });
    }
    while let Some(worker) = workers.join_next().await {
        worker.context("a load worker panicked")??;
    }
    Ok(started.elapsed())
}

/// Customer `i`: an e-mail identity, demographics, a place, interests and one consent, as a
/// shop's sign-up form would send (CustomerCreated and one ConsentChanged on the feed).
fn customer(tag: &str, i: usize) -> pr::Customer {
    let mut rng = Rng::new(0xC057 ^ (i as u64));
    let (country, region, city, _) = PLACES[rng.below(PLACES.len())];
    let granted = rng.below(10) < 6;
    pr::Customer {
        given_name: "Bench".to_owned(),
        family_name: format!("Customer {i}"),
        identities: vec![pr::Identity {
            identity_type: pr::IdentityType::Email as i32,
            value: format!("bench.{tag}.{i}@example.com"),
            ..Default::default()
        }],
        demographics: Some(pr::Demographics {
            birth_date: Some(Date {
                year: 1950 + i32::try_from(rng.below(55)).unwrap_or(0),
                month: 1 + i32::try_from(rng.below(12)).unwrap_or(0),
                day: 1 + i32::try_from(rng.below(28)).unwrap_or(0),
            }),
            gender: 1 + i32::try_from(rng.below(4)).unwrap_or(0),
            income_band: 1 + i32::try_from(rng.below(6)).unwrap_or(0),
            education_level: 1 + i32::try_from(rng.below(8)).unwrap_or(0),
            occupation: String::new(),
        }),
        geography: Some(pr::Geography {
            country_code: country.to_owned(),
            region: region.to_owned(),
            city: city.to_owned(),
            postal_code: String::new(),
        }),
        psychographics: Some(pr::Psychographics {
            interests: vec![INTERESTS[rng.below(INTERESTS.len())].to_owned()],
            lifestyle_tags: Vec::new(),
        }),
        consents: vec![pr::Consent {
            channel: ContactChannel::Email as i32,
            status: if granted {
                pr::ConsentStatus::Granted
            } else {
                pr::ConsentStatus::Withdrawn
            } as i32,
            source: "signup_form".to_owned(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Creates `count` customers through profiles, `concurrency` at a time; returns their ids (in
/// creation order) and how long it took.
pub async fn create_customers(
    conns: &Arc<Connections>,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<String>, Duration)> {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let ids = Arc::new(Mutex::new(vec![String::new(); count]));
    let call: IndexedCall = {
        let ids = ids.clone();
        Arc::new(move |channel: Channel, i| {
            let (ids, request) = (
                ids.clone(),
                pr::CreateCustomerRequest {
                    customer: Some(customer(&tag, i)),
                    request_id: uuid::Uuid::now_v7().to_string(),
                },
            );
            Box::pin(async move {
                let created = ProfilesServiceClient::new(channel)
                    .create_customer(request)
                    .await?
                    .into_inner()
                    .customer
                    .ok_or_else(|| {
                        tonic::Status::internal("CreateCustomer answered no customer")
                    })?;
                if let Ok(mut ids) = ids.lock() {
                    ids[i] = created.customer_id;
                }
                Ok(())
            })
        })
    };
    let took = run_calls(conns, concurrency, count, call).await?;
    let ids = std::mem::take(
        &mut *ids
            .lock()
            .map_err(|_| anyhow::anyhow!("a creating call panicked"))?,
    );
    Ok((ids, took))
}

/// A purchase (seven in ten: 5–605 CNY, one category, a sales channel) or an interaction of
/// `customer`, happening now.
pub fn activity(customer: &str, pick: u64) -> pr::Activity {
    let mut rng = Rng::new(pick);
    let (details, channel) = if rng.below(10) < 7 {
        let purchase = pr::Purchase {
            order_id: uuid::Uuid::now_v7().to_string(),
            amount: Some(Money {
                amount_minor: 500 + i64::try_from(rng.below(60_000)).unwrap_or(0),
                currency: "CNY".to_owned(),
            }),
            categories: vec![CATEGORIES[rng.below(CATEGORIES.len())].to_owned()],
            item_count: 1,
        };
        (
            pr::activity::Details::Purchase(purchase),
            CHANNELS[rng.below(CHANNELS.len())],
        )
    } else {
        let interaction = pr::Interaction {
            interaction_kind: 1 + i32::try_from(rng.below(8)).unwrap_or(0),
            category: CATEGORIES[rng.below(CATEGORIES.len())].to_owned(),
            ..Default::default()
        };
        (pr::activity::Details::Interaction(interaction), "web")
    };
    pr::Activity {
        customer_id: customer.to_owned(),
        source: "bench".to_owned(),
        event_id: uuid::Uuid::now_v7().to_string(),
        occur_time: Some(to_timestamp(chrono::Utc::now())),
        channel: channel.to_owned(),
        details: Some(details),
        ..Default::default()
    }
}

/// The customer of `customers` that `draw` picks.
fn drawn(customers: &[String], draw: u64) -> &str {
    &customers[(draw % customers.len().max(1) as u64) as usize]
}

/// RecordActivity of an activity of a customer drawn from `customers`.
fn record_call(customers: Arc<Vec<String>>) -> MakeCall {
    Arc::new(move |channel: Channel, pick| {
        let customer = drawn(&customers, pick);
        let request = pr::RecordActivityRequest {
            activity: Some(activity(customer, pick >> 8)),
            customer_identity: None,
        };
        Box::pin(async move {
            ProfilesServiceClient::new(channel)
                .record_activity(request)
                .await
                .map(drop)
        })
    })
}

/// ImportActivities of `per_call` activities of customers drawn from `customers`, in one
/// stream: events on profiles' feed at a fraction of RecordActivity's cost to profiles (one
/// transaction per stream, not one per activity), for a background that must leave the shared
/// cores to the feed. A rejected item fails the call.
pub fn import_call(customers: Arc<Vec<String>>, per_call: usize) -> MakeCall {
    Arc::new(move |channel: Channel, pick| {
        let mut rng = Rng::new(pick);
        let items: Vec<pr::ImportActivitiesRequest> = (0..per_call)
            .map(|_| {
                let draw = rng.next_u64();
                let customer = drawn(&customers, draw);
                pr::ImportActivitiesRequest {
                    activity: Some(activity(customer, draw >> 8)),
                    customer_identity: None,
                }
            })
            .collect();
        Box::pin(async move {
            let imported = ProfilesServiceClient::new(channel)
                .import_activities(futures_util::stream::iter(items))
                .await?
                .into_inner();
            match imported.errors.first() {
                Some(error) => Err(tonic::Status::internal(format!(
                    "ImportActivities rejected {} items, the first ({}): {:?}",
                    imported.rejected_count, error.index, error.field_violations
                ))),
                None => Ok(()),
            }
        })
    })
}

/// Records `count` activities spread over `customers`, `concurrency` at a time; returns how
/// long it took.
pub async fn record_activities(
    conns: &Arc<Connections>,
    customers: &Arc<Vec<String>>,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let record = record_call(customers.clone());
    let call: IndexedCall = Arc::new(move |channel: Channel, i| {
        let mut rng = Rng::new(0xFEED ^ ((i as u64) << 20));
        record(channel, rng.next_u64())
    });
    run_calls(conns, concurrency, count, call).await
}

/// Declares the fixture's event types (`fixture::EVENT_TYPES`) in profiles, one
/// CreateEventType after the other, as the segmentation fixture defines them; returns how long
/// it took.
pub async fn create_event_types(conns: &Arc<Connections>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for event_type in EVENT_TYPES {
        let properties = event_type
            .properties
            .iter()
            .map(|p| pr::EventPropertyDefinition {
                property_name: p.name.to_owned(),
                property_type: match p.values {
                    PropertyValues::Strings(_) => pr::EventPropertyType::String,
                    PropertyValues::Quarters { .. } => pr::EventPropertyType::Number,
                    PropertyValues::Bool => pr::EventPropertyType::Bool,
                    PropertyValues::DaysAfter { .. } => pr::EventPropertyType::Time,
                } as i32,
                description: String::new(),
                contains_pii: false,
                required: p.required,
            })
            .collect();
        let request = pr::CreateEventTypeRequest {
            event_type: Some(pr::EventType {
                event_type_name: event_type.name.to_owned(),
                description: event_type.description.to_owned(),
                properties,
                ..Default::default()
            }),
        };
        retry_idempotent(CALL_RETRY, || {
            let (channel, request) = (conns.pick(), request.clone());
            async move {
                ProfilesServiceClient::new(channel)
                    .create_event_type(request)
                    .await
            }
        })
        .await
        .with_context(|| format!("CreateEventType {} failed", event_type.name))?;
    }
    Ok(started.elapsed())
}

/// A custom event of `customer`, happening now: its type drawn with the fixture's falling
/// shares (the square of a uniform draw), its properties as the fixture draws them (an
/// optional one left out one time in five).
pub fn custom_event(customer: &str, pick: u64) -> pr::Activity {
    let mut rng = Rng::new(pick);
    let uniform = |rng: &mut Rng| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let draw = uniform(&mut rng);
    let index = ((draw * draw * EVENT_TYPES.len() as f64) as usize).min(EVENT_TYPES.len() - 1);
    let event_type: &FixtureEventType = &EVENT_TYPES[index];
    let now = chrono::Utc::now();
    let properties = event_type
        .properties
        .iter()
        .filter_map(|p| {
            let value = match p.values {
                PropertyValues::Strings(values) => pr::event_property_value::Value::StringValue(
                    values[rng.below(values.len())].to_owned(),
                ),
                PropertyValues::Quarters { max } => pr::event_property_value::Value::NumberValue(
                    rng.below(max as usize * 4) as f64 / 4.0,
                ),
                PropertyValues::Bool => {
                    pr::event_property_value::Value::BoolValue(rng.below(2) == 0)
                }
                PropertyValues::DaysAfter { days } => {
                    let later = now + chrono::Duration::days(rng.below(days as usize) as i64);
                    pr::event_property_value::Value::TimeValue(to_timestamp(later))
                }
            };
            let present = p.required || rng.below(5) < 4;
            present.then(|| {
                (
                    p.name.to_owned(),
                    pr::EventPropertyValue { value: Some(value) },
                )
            })
        })
        .collect();
    pr::Activity {
        customer_id: customer.to_owned(),
        source: "bench".to_owned(),
        event_id: uuid::Uuid::now_v7().to_string(),
        occur_time: Some(to_timestamp(now)),
        channel: if rng.below(10) < 7 { "app" } else { "web" }.to_owned(),
        details: Some(pr::activity::Details::CustomEvent(pr::CustomEvent {
            event_type: event_type.name.to_owned(),
            properties,
        })),
        ..Default::default()
    }
}

/// Records `count` custom events (RecordActivity with a `custom_event`, of the fixture's
/// types) spread over `customers`, `concurrency` at a time; returns how long it took.
pub async fn record_custom_events(
    conns: &Arc<Connections>,
    customers: &Arc<Vec<String>>,
    count: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let customers = customers.clone();
    let call: IndexedCall = Arc::new(move |channel: Channel, i| {
        let mut rng = Rng::new(0xE7E7 ^ ((i as u64) << 20));
        let draw = rng.next_u64();
        let request = pr::RecordActivityRequest {
            activity: Some(custom_event(drawn(&customers, draw), draw >> 8)),
            customer_identity: None,
        };
        Box::pin(async move {
            ProfilesServiceClient::new(channel)
                .record_activity(request)
                .await
                .map(drop)
        })
    });
    run_calls(conns, concurrency, count, call).await
}

/// Records a purchase in `category` for `customer`, now.
pub async fn purchase(
    channel: Channel,
    customer: &str,
    category: &str,
) -> Result<(), tonic::Status> {
    let activity = pr::Activity {
        customer_id: customer.to_owned(),
        source: "bench".to_owned(),
        event_id: uuid::Uuid::now_v7().to_string(),
        occur_time: Some(to_timestamp(chrono::Utc::now())),
        channel: "app".to_owned(),
        details: Some(pr::activity::Details::Purchase(pr::Purchase {
            order_id: uuid::Uuid::now_v7().to_string(),
            amount: Some(Money {
                amount_minor: 9_900,
                currency: "CNY".to_owned(),
            }),
            categories: vec![category.to_owned()],
            item_count: 1,
        })),
        ..Default::default()
    };
    ProfilesServiceClient::new(channel)
        .record_activity(pr::RecordActivityRequest {
            activity: Some(activity),
            customer_identity: None,
        })
        .await
        .map(drop)
}

/// The last sequence of profiles' feed once every event written has one (the sequencer
/// numbers committed events shortly after their commit), read from profiles' database.
pub async fn settled_position(database_url: &str) -> anyhow::Result<i64> {
    let mut connection = super::open(database_url, None).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (unsequenced, last): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE sequence IS NULL), max(sequence) FROM profiles.outbox",
        )
        .fetch_one(&mut connection)
        .await
        .context("Failed to read profiles' outbox")?;
        if unsequenced == 0 {
            connection.close().await.ok();
            return Ok(last.unwrap_or(0));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{unsequenced} events of profiles still have no sequence after a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids of the activities recorded on profiles' feed at or below `up_to`, from the
/// ActivityRecorded events themselves.
pub async fn recorded_activities(database_url: &str, up_to: i64) -> anyhow::Result<Vec<String>> {
    Ok(recorded(database_url, 0, up_to)
        .await?
        .into_iter()
        .map(|a| a.activity_id)
        .collect())
}

/// The ids of the custom events recorded on profiles' feed after `after` and at or below
/// `up_to`, with their customers.
pub async fn recorded_custom_events(
    database_url: &str,
    after: i64,
    up_to: i64,
) -> anyhow::Result<Vec<(String, String)>> {
    Ok(recorded(database_url, after, up_to)
        .await?
        .into_iter()
        .filter(|a| matches!(a.details, Some(pr::activity::Details::CustomEvent(_))))
        .map(|a| (a.activity_id, a.customer_id))
        .collect())
}

/// The activities of the ActivityRecorded events on profiles' feed after `after` and at or
/// below `up_to`.
async fn recorded(database_url: &str, after: i64, up_to: i64) -> anyhow::Result<Vec<pr::Activity>> {
    let mut connection = super::open(database_url, None).await?;
    let payloads: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT payload FROM profiles.outbox WHERE type = $1 AND sequence > $2 AND sequence <= $3",
    )
    .bind(pr::ActivityRecorded::full_name())
    .bind(after)
    .bind(up_to)
    .fetch_all(&mut connection)
    .await
    .context("Failed to read profiles' ActivityRecorded events")?;
    connection.close().await.ok();
    payloads
        .iter()
        .map(|payload| {
            let recorded = pr::ActivityRecorded::decode(payload.as_slice())
                .context("an ActivityRecorded payload does not decode")?;
            recorded
                .activity
                .context("an ActivityRecorded event without its activity")
        })
        .collect()
}
