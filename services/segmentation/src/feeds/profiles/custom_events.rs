//! The profiles feed's custom events: an ActivityRecorded whose activity is a custom event
//! goes into `customer_events` (with the properties the feed carries: never personal ones),
//! and EventTypeDefined into the event type catalog (`event_types`).

use chrono::{DateTime, Duration, SubsecRound, Utc};
use custops_contracts::custops::profiles::v1 as pb;
use serde_json::{Value, json};
use sqlx::PgConnection;

use custops_contracts::custops::common::v1::Event;

use crate::feeds::Pending;
use crate::store::custom_events::{self, EventTypeDefinition, NewCustomEvent};
use crate::store::facts::Position;
use crate::wire::from_timestamp;

/// The custom event an activity is, `None` for other activities and malformed ones.
pub(super) fn to_event(a: &pb::Activity) -> Option<NewCustomEvent> {
    let Some(pb::activity::Details::CustomEvent(event)) = &a.details else {
        return None;
    };
    let occur_time = from_timestamp(a.occur_time.as_ref())?;
    if a.customer_id.is_empty() || a.activity_id.is_empty() || event.event_type.is_empty() {
        return None;
    }
    let properties: serde_json::Map<String, Value> = event
        .properties
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), property_json(value)?)))
        .collect();
    Some(NewCustomEvent {
        activity_id: a.activity_id.clone(),
        customer_id: a.customer_id.clone(),
        event_type: event.event_type.clone(),
        occur_time,
        properties: Value::Object(properties),
        channel: a.channel.clone(),
    })
}

/// A property value as stored: `{"<type>": value}`.
fn property_json(value: &pb::EventPropertyValue) -> Option<Value> {
    use pb::event_property_value::Value as V;
    Some(match value.value.as_ref()? {
        V::StringValue(s) => json!({ "string": s }),
        V::NumberValue(n) => json!({ "number": n }),
        V::BoolValue(b) => json!({ "bool": b }),
        // Whole microseconds, as Postgres reads them back: both evaluators see one instant.
        V::TimeValue(t) => {
            json!({ "time": from_timestamp(Some(t))?.trunc_subsecs(6).to_rfc3339() })
        }
        V::MoneyValue(m) => {
            json!({ "money": { "amount_minor": m.amount_minor, "currency": m.currency } })
        }
    })
}

/// Notes `event` to be stored with its run (`Pending::store_activities`) unless it is older
/// than the retained history (`EvaluationSettings.activity_retention_days`, as activities), and
/// marks its customer for re-evaluation of the segments whose rules aggregate events
/// (`Changed::EVENTS`).
pub(super) async fn store(
    tx: &mut PgConnection,
    event: NewCustomEvent,
    pending: &mut Pending,
    at: Position,
    feed_event: &Event,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let retention = pending.settings(&mut *tx).await?.activity_retention_days;
    if event.occur_time < now - Duration::days(i64::from(retention)) {
        return Ok(());
    }
    pending.add_custom_event(event, at, feed_event, now);
    Ok(())
}

/// Records the event type EventTypeDefined carries (at feed position `sequence`).
pub(super) async fn define(
    tx: &mut PgConnection,
    defined: pb::EventTypeDefined,
    sequence: i64,
) -> anyhow::Result<()> {
    let Some(t) = defined.event_type else {
        return Ok(());
    };
    if t.event_type_name.is_empty() {
        return Ok(());
    }
    let properties: Vec<Value> = t
        .properties
        .iter()
        .filter_map(|p| {
            let kind = match p.property_type() {
                pb::EventPropertyType::String => "string",
                pb::EventPropertyType::Number => "number",
                pb::EventPropertyType::Bool => "bool",
                pb::EventPropertyType::Time => "time",
                pb::EventPropertyType::Money => "money",
                pb::EventPropertyType::Unspecified => return None,
            };
            Some(json!({
                "name": p.property_name,
                "type": kind,
                "contains_pii": p.contains_pii,
                "required": p.required,
                "description": p.description,
            }))
        })
        .collect();
    let definition = EventTypeDefinition {
        name: t.event_type_name,
        description: t.description,
        properties: Value::Array(properties),
    };
    custom_events::define_event_type(tx, &definition, sequence).await?;
    Ok(())
}
