//! The `event_types` table: the catalog of custom event types, each row one type with its
//! property definitions (a JSON list in declaration order, read and written whole).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::json;
use crate::domain::{EventType, PropertyDefinition};
use crate::error::Result;

#[derive(Debug, sqlx::FromRow)]
struct EventTypeRow {
    event_type_name: String,
    description: String,
    properties: String,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
}

impl EventTypeRow {
    fn into_event_type(self) -> Result<EventType> {
        let properties: Vec<PropertyDefinition> =
            serde_json::from_str(&self.properties).map_err(anyhow::Error::from)?;
        Ok(EventType {
            name: self.event_type_name,
            description: self.description,
            properties,
            create_time: self.create_time,
            update_time: self.update_time,
        })
    }
}

const COLUMNS: &str =
    "event_type_name, description, properties::text AS properties, create_time, update_time";

/// Takes the catalog for the rest of the transaction: one declaration at a time, so the
/// catalog limit holds under concurrency (additions lock only their row).
pub(crate) async fn lock(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("LOCK TABLE event_types IN SHARE ROW EXCLUSIVE MODE")
        .execute(conn)
        .await?;
    Ok(())
}

/// One event type by name; with `for_update`, its row locked until the transaction ends.
pub(crate) async fn get(
    conn: &mut PgConnection,
    name: &str,
    for_update: bool,
) -> Result<Option<EventType>> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {COLUMNS} FROM event_types WHERE event_type_name = $1{lock}");
    let row: Option<EventTypeRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(conn)
        .await?;
    row.map(EventTypeRow::into_event_type).transpose()
}

/// How many event types are declared.
pub(crate) async fn count(conn: &mut PgConnection) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM event_types")
        .fetch_one(conn)
        .await?)
}

/// Stores a new event type.
pub(crate) async fn insert(conn: &mut PgConnection, t: &EventType) -> Result<()> {
    sqlx::query(
        "INSERT INTO event_types (event_type_name, description, properties, create_time, update_time) \
         VALUES ($1, $2, $3::jsonb, $4, $5)",
    )
    .bind(&t.name)
    .bind(&t.description)
    .bind(json(&t.properties)?)
    .bind(t.create_time)
    .bind(t.update_time)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces the properties and update time of a stored event type.
pub(crate) async fn update_properties(conn: &mut PgConnection, t: &EventType) -> Result<()> {
    sqlx::query(
        "UPDATE event_types SET properties = $2::jsonb, update_time = $3 WHERE event_type_name = $1",
    )
    .bind(&t.name)
    .bind(json(&t.properties)?)
    .bind(t.update_time)
    .execute(conn)
    .await?;
    Ok(())
}

/// Up to `limit` event types named after `after`, by name.
pub(crate) async fn list(
    conn: &mut PgConnection,
    after: Option<String>,
    limit: i64,
) -> Result<Vec<EventType>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM event_types WHERE ($1::text IS NULL OR event_type_name > $1) \
         ORDER BY event_type_name LIMIT $2"
    );
    let rows: Vec<EventTypeRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    rows.into_iter()
        .map(EventTypeRow::into_event_type)
        .collect()
}

/// The event types named in `names` that are declared, by name (a batch's custom events, the
/// export's types). No lock: the catalog only grows by optional properties, so an event
/// valid against what this read stays valid against what commits meanwhile.
pub(crate) async fn named(
    conn: &mut PgConnection,
    names: &[String],
) -> Result<HashMap<String, EventType>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM event_types WHERE event_type_name = ANY($1) \
         ORDER BY event_type_name"
    );
    let rows: Vec<EventTypeRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(names)
        .fetch_all(conn)
        .await?;
    rows.into_iter()
        .map(|row| row.into_event_type().map(|t| (t.name.clone(), t)))
        .collect()
}
