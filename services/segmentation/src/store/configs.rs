//! The versioned config rows of `configs` ("rfm", "lifecycle", "prediction"): a JSON value
//! with the etag and update time of its last change. One reader and one writer for all of
//! them; each config's module maps its own JSON shape.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, Row};

/// Etag of a config never written.
pub const INITIAL_ETAG: &str = "initial";

/// A config row as stored.
#[derive(Debug)]
pub struct ConfigRow<T> {
    pub value: T,
    pub update_time: DateTime<Utc>,
    pub etag: String,
}

/// The row `name`, or `None` when it was never written.
pub async fn load<T: DeserializeOwned>(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<ConfigRow<T>>, sqlx::Error> {
    let row =
        sqlx::query("SELECT value::text AS value, etag, update_time FROM configs WHERE name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let text: String = row.try_get("value")?;
    Ok(Some(ConfigRow {
        value: serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        update_time: row.try_get("update_time")?,
        etag: row.try_get("etag")?,
    }))
}

/// Writes the row `name` with `etag` at `update_time`.
pub async fn save<T: Serialize>(
    conn: &mut PgConnection,
    name: &str,
    value: &T,
    etag: &str,
    update_time: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let text = serde_json::to_string(value).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(
        "INSERT INTO configs (name, value, etag, update_time) VALUES ($1, $2::jsonb, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, etag = EXCLUDED.etag, \
           update_time = EXCLUDED.update_time",
    )
    .bind(name)
    .bind(text)
    .bind(etag)
    .bind(update_time)
    .execute(conn)
    .await?;
    Ok(())
}
