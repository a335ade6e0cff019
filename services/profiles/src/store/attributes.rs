//! The `attribute_definitions` table: the catalog of custom attributes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::AttributeDefinition;
use crate::error::Result;

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AttributeRow {
    attribute_name: String,
    value_type: i16,
    description: String,
    contains_pii: bool,
    create_time: DateTime<Utc>,
}

impl AttributeRow {
    pub(crate) fn into_definition(self) -> AttributeDefinition {
        AttributeDefinition {
            name: self.attribute_name,
            value_type: self.value_type,
            description: self.description,
            contains_pii: self.contains_pii,
            create_time: self.create_time,
        }
    }
}

/// Takes the catalog for the rest of the transaction: one declaration at a time, so the
/// catalog limit holds under concurrency.
pub(crate) async fn lock(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("LOCK TABLE attribute_definitions IN SHARE ROW EXCLUSIVE MODE")
        .execute(conn)
        .await?;
    Ok(())
}

/// One definition by name.
pub(crate) async fn get(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<AttributeDefinition>> {
    let row: Option<AttributeRow> = sqlx::query_as(
        "SELECT attribute_name, value_type, description, contains_pii, create_time FROM attribute_definitions WHERE attribute_name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(AttributeRow::into_definition))
}

/// How many attributes are declared.
pub(crate) async fn count(conn: &mut PgConnection) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM attribute_definitions")
            .fetch_one(conn)
            .await?,
    )
}

/// Stores a new definition.
pub(crate) async fn insert(conn: &mut PgConnection, def: &AttributeDefinition) -> Result<()> {
    sqlx::query(
        "INSERT INTO attribute_definitions (attribute_name, value_type, description, contains_pii, create_time) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&def.name)
    .bind(def.value_type)
    .bind(&def.description)
    .bind(def.contains_pii)
    .bind(def.create_time)
    .execute(conn)
    .await?;
    Ok(())
}

/// Up to `limit` definitions named after `after`, by name.
pub(crate) async fn list(
    conn: &mut PgConnection,
    after: Option<String>,
    limit: i64,
) -> Result<Vec<AttributeDefinition>> {
    let rows: Vec<AttributeRow> = sqlx::query_as(
        "SELECT attribute_name, value_type, description, contains_pii, create_time FROM attribute_definitions \
         WHERE ($1::text IS NULL OR attribute_name > $1) ORDER BY attribute_name LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(AttributeRow::into_definition)
        .collect())
}

/// The declared value type of each of `names` that is declared.
pub(crate) async fn value_types(
    conn: &mut PgConnection,
    names: &[String],
) -> Result<HashMap<String, i16>> {
    let declared: Vec<(String, i16)> = sqlx::query_as(
        "SELECT attribute_name, value_type FROM attribute_definitions WHERE attribute_name = ANY($1)",
    )
    .bind(names)
    .fetch_all(conn)
    .await?;
    Ok(declared.into_iter().collect())
}

/// The definitions of `names`, by name (the data-subject export).
pub(crate) async fn named(
    conn: &mut PgConnection,
    names: &[String],
) -> Result<Vec<AttributeDefinition>> {
    let definitions: Vec<AttributeRow> = sqlx::query_as(
        "SELECT attribute_name, value_type, description, contains_pii, create_time FROM attribute_definitions \
         WHERE attribute_name = ANY($1) ORDER BY attribute_name",
    )
    .bind(names)
    .fetch_all(conn)
    .await?;
    Ok(definitions
        .into_iter()
        .map(AttributeRow::into_definition)
        .collect())
}
