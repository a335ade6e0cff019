//! Custom events from the profiles feed (`customer_events`) and the event type catalog learnt
//! from it (`event_types`). Events are kept as `customer_activities` are: keyed by the profiles
//! activity id, moved by merges remembering the merge (`facts::merge` / `facts::unmerge`),
//! deleted by erasure (`facts::erase`). Rules read them through event conditions: the
//! in-process evaluator from [`load_into`], the compiled SQL from the table itself.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::{PgConnection, Row};

use crate::domain::catalog::{EventTypeDef, PropertyType};
use crate::domain::facts::{CustomEvent, Facts, Money, PropertyValue};

/// One custom event of a customer, as the feed carries it (no personal property values).
#[derive(Debug, Clone, PartialEq)]
pub struct NewCustomEvent {
    pub activity_id: String,
    pub customer_id: String,
    pub event_type: String,
    pub occur_time: DateTime<Utc>,
    /// JSON object of property name → typed value (see the migration).
    pub properties: serde_json::Value,
    pub channel: String,
}

/// Stores a run of events in one statement; a redelivered one (same activity id, also twice
/// in one run) changes nothing, and one about a customer erased meanwhile is not kept.
pub async fn insert_many(
    conn: &mut PgConnection,
    events: &[NewCustomEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&NewCustomEvent) -> String| events.iter().map(f).collect::<Vec<_>>();
    let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.occur_time).collect();
    sqlx::query(
        "INSERT INTO customer_events \
           (activity_id, customer_id, event_type, occur_time, properties, channel) \
         SELECT u.activity_id, u.customer_id, u.event_type, u.occur_time, \
           u.properties::jsonb, u.channel \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], \
           $6::text[]) AS u (activity_id, customer_id, event_type, occur_time, properties, channel) \
         WHERE NOT EXISTS (SELECT 1 FROM customer_tombstones t \
           WHERE t.customer_id = u.customer_id AND t.reason = 'erased') \
         ON CONFLICT (activity_id) DO NOTHING",
    )
    .bind(column(|e| e.activity_id.clone()))
    .bind(column(|e| e.customer_id.clone()))
    .bind(column(|e| e.event_type.clone()))
    .bind(times)
    .bind(column(|e| e.properties.to_string()))
    .bind(column(|e| e.channel.clone()))
    .execute(conn)
    .await?;
    Ok(())
}

/// An event type as EventTypeDefined carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTypeDefinition {
    pub name: String,
    pub description: String,
    /// JSON list of {"name", "type", "contains_pii", "required", "description"}.
    pub properties: serde_json::Value,
}

/// Replaces the stored definition of an event type with the one at feed position `sequence`,
/// unless a later one was applied (a redelivery or an older event changes nothing).
pub async fn define_event_type(
    conn: &mut PgConnection,
    definition: &EventTypeDefinition,
    sequence: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO event_types (name, description, properties, profiles_sequence) \
         VALUES ($1, $2, $3::jsonb, $4) \
         ON CONFLICT (name) DO UPDATE SET description = excluded.description, \
           properties = excluded.properties, profiles_sequence = excluded.profiles_sequence \
         WHERE event_types.profiles_sequence < excluded.profiles_sequence",
    )
    .bind(&definition.name)
    .bind(&definition.description)
    .bind(definition.properties.to_string())
    .bind(sequence)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the source's events to the target remembering the merge (called by `facts::merge`
/// under both customers' locks).
pub(crate) async fn merge(
    conn: &mut PgConnection,
    merge_id: &str,
    source: &str,
    target: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE customer_events SET customer_id = $3, merged_from = $2, merge_id = $1 \
         WHERE customer_id = $2",
    )
    .bind(merge_id)
    .bind(source)
    .bind(target)
    .execute(conn)
    .await?;
    Ok(())
}

/// The event types learnt from profiles, for the catalog; properties of a type this build
/// does not know are left out.
pub async fn event_types(conn: &mut PgConnection) -> Result<Vec<EventTypeDef>, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, properties::text FROM event_types ORDER BY name")
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(name, properties)| {
            let listed: Vec<serde_json::Value> =
                serde_json::from_str(&properties).unwrap_or_default();
            let properties = listed
                .iter()
                .filter_map(|p| {
                    let name = p.get("name")?.as_str()?;
                    let kind = PropertyType::from_column(p.get("type")?.as_str()?)?;
                    Some((name.to_owned(), kind))
                })
                .collect();
            EventTypeDef { name, properties }
        })
        .collect())
}

/// Adds to each of `facts` its custom events (of `event_types` only, when given), in event
/// order (occur time, then activity id by bytes), in one statement.
pub async fn load_into(
    conn: &mut PgConnection,
    facts: &mut HashMap<String, Facts>,
    event_types: Option<&[String]>,
) -> Result<(), sqlx::Error> {
    let ids: Vec<String> = facts.keys().cloned().collect();
    if ids.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(
        "SELECT customer_id, activity_id, event_type, occur_time, properties::text AS props \
         FROM customer_events WHERE customer_id = ANY($1) \
           AND ($2::text[] IS NULL OR event_type = ANY($2)) \
         ORDER BY customer_id, occur_time, activity_id COLLATE \"C\"",
    )
    .bind(&ids)
    .bind(event_types)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let Some(f) = facts.get_mut(row.try_get::<&str, _>("customer_id")?) else {
            continue;
        };
        f.events.push(CustomEvent {
            activity_id: row.try_get("activity_id")?,
            event_type: row.try_get("event_type")?,
            occur_time: row.try_get("occur_time")?,
            properties: decode_properties(row.try_get::<&str, _>("props")?),
        });
    }
    Ok(())
}

/// Adds its custom events to one customer's `facts` (see [`load_into`]).
pub async fn load_one(conn: &mut PgConnection, facts: &mut Facts) -> Result<(), sqlx::Error> {
    let id = facts.customer_id.clone();
    let mut one = HashMap::from([(id.clone(), std::mem::take(facts))]);
    load_into(conn, &mut one, None).await?;
    if let Some(loaded) = one.remove(&id) {
        *facts = loaded;
    }
    Ok(())
}

/// Property values from their JSON column (see the migration); unknown shapes are skipped.
pub fn decode_properties(text: &str) -> BTreeMap<String, PropertyValue> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) else {
        return BTreeMap::new();
    };
    map.into_iter()
        .filter_map(|(name, typed)| {
            let (kind, value) = typed.as_object()?.iter().next()?;
            let value = match kind.as_str() {
                "string" => PropertyValue::String(value.as_str()?.to_owned()),
                "number" => PropertyValue::Number(value.as_f64()?),
                "bool" => PropertyValue::Bool(value.as_bool()?),
                "time" => PropertyValue::Time(
                    DateTime::parse_from_rfc3339(value.as_str()?)
                        .ok()?
                        .with_timezone(&Utc)
                        .trunc_subsecs(6),
                ),
                "money" => PropertyValue::Money(Money {
                    amount_minor: value.get("amount_minor")?.as_i64()?,
                    currency: value.get("currency")?.as_str()?.to_owned(),
                }),
                _ => return None,
            };
            Some((name, value))
        })
        .collect()
}
