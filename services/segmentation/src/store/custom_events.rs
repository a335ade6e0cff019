//! Custom events from the profiles feed (`customer_events`) and the event type catalog learnt
//! from it (`event_types`). Events are kept as `customer_activities` are: keyed by the profiles
//! activity id, moved by merges remembering the merge (`facts::merge` / `facts::unmerge`),
//! deleted by erasure (`facts::erase`). No rule reads them yet.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

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

/// Stores an event; a redelivered one (same activity id) changes nothing, and one about a
/// customer erased meanwhile is not kept.
pub async fn insert(conn: &mut PgConnection, event: &NewCustomEvent) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO customer_events \
           (activity_id, customer_id, event_type, occur_time, properties, channel) \
         SELECT $1, $2, $3, $4, $5::jsonb, $6 WHERE NOT EXISTS \
           (SELECT 1 FROM customer_tombstones WHERE customer_id = $2 AND reason = 'erased') \
         ON CONFLICT (activity_id) DO NOTHING",
    )
    .bind(&event.activity_id)
    .bind(&event.customer_id)
    .bind(&event.event_type)
    .bind(event.occur_time)
    .bind(event.properties.to_string())
    .bind(&event.channel)
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
