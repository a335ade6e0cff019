//! Computed traits in Postgres: the definitions (`computed_traits`, one row per trait, and
//! `computed_trait_versions`) and each customer's stored values (`customer_computed_traits`).
//!
//! A value is written by one statement per trait for a set of customers ([`store_values`]):
//! the trait's measure compiled by `store::compile::compile_measure` (the SQL event conditions
//! use, so a stored value is what an event condition would compute at that time), evaluated for
//! each candidate customer with facts. A customer with an event of the trait's type gets a row
//! (its value, NULL when the aggregate is unset); one without loses its row and reads the value
//! over nothing. A row whose value and version are unchanged is not rewritten.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use crate::domain::computed::{ComputedValue, TraitField, value_column};
use crate::domain::facts::{EvalContext, Facts};
use crate::domain::rule::{Aggregate, EventMeasure};
use crate::store::Who;
use crate::store::compile::{SqlValue, compile_measure};

/// One computed trait's row.
#[derive(Debug, Clone, PartialEq)]
pub struct TraitRecord {
    pub name: String,
    pub description: String,
    pub version: i64,
    /// The encoded `ComputedTrait` holding the definition fields of `version`.
    pub definition: Vec<u8>,
    pub aggregate: Aggregate,
    pub time_dependent: bool,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub etag: String,
    pub latest_recompute_job_id: Option<Uuid>,
}

impl TraitRecord {
    /// The trait as the catalog needs it.
    pub fn field(&self) -> TraitField {
        TraitField {
            name: self.name.clone(),
            description: self.description.clone(),
            version: self.version,
            aggregate: self.aggregate,
        }
    }
}

const COLUMNS: &str = "name, description, version, definition, aggregate, time_dependent, \
    create_time, update_time, etag, latest_recompute_job_id";

fn from_row(row: &PgRow) -> Result<TraitRecord, sqlx::Error> {
    let slug: String = row.try_get("aggregate")?;
    let aggregate = Aggregate::from_slug(&slug).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "aggregate".to_owned(),
        source: format!("unknown aggregate {slug:?}").into(),
    })?;
    Ok(TraitRecord {
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        version: row.try_get("version")?,
        definition: row.try_get("definition")?,
        aggregate,
        time_dependent: row.try_get("time_dependent")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        etag: row.try_get("etag")?,
        latest_recompute_job_id: row.try_get("latest_recompute_job_id")?,
    })
}

/// Inserts a new trait and its version row; false when the name is taken.
pub async fn insert(
    conn: &mut PgConnection,
    record: &TraitRecord,
    requester: &str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO computed_traits (name, description, version, definition, aggregate, \
           time_dependent, create_time, update_time, etag, latest_recompute_job_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&record.name)
    .bind(&record.description)
    .bind(record.version)
    .bind(&record.definition)
    .bind(record.aggregate.slug())
    .bind(record.time_dependent)
    .bind(record.create_time)
    .bind(record.update_time)
    .bind(&record.etag)
    .bind(record.latest_recompute_job_id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        insert_version(conn, record, requester).await?;
    }
    Ok(inserted)
}

/// Records `record`'s definition as its version.
async fn insert_version(
    conn: &mut PgConnection,
    record: &TraitRecord,
    requester: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO computed_trait_versions (name, version, definition, create_time, requester) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&record.name)
    .bind(record.version)
    .bind(&record.definition)
    .bind(record.update_time)
    .bind(requester)
    .execute(conn)
    .await?;
    Ok(())
}

/// Saves `record` over its row; `new_version` also records its definition as a version.
pub async fn save(
    conn: &mut PgConnection,
    record: &TraitRecord,
    new_version: bool,
    requester: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE computed_traits SET description = $2, version = $3, definition = $4, \
           aggregate = $5, time_dependent = $6, update_time = $7, etag = $8, \
           latest_recompute_job_id = $9 \
         WHERE name = $1",
    )
    .bind(&record.name)
    .bind(&record.description)
    .bind(record.version)
    .bind(&record.definition)
    .bind(record.aggregate.slug())
    .bind(record.time_dependent)
    .bind(record.update_time)
    .bind(&record.etag)
    .bind(record.latest_recompute_job_id)
    .execute(&mut *conn)
    .await?;
    if new_version {
        insert_version(conn, record, requester).await?;
    }
    Ok(())
}

/// The trait named `name`, its row locked for update when `for_update`.
pub async fn get(
    conn: &mut PgConnection,
    name: &str,
    for_update: bool,
) -> Result<Option<TraitRecord>, sqlx::Error> {
    let lock = if for_update { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {COLUMNS} FROM computed_traits WHERE name = $1{lock}");
    sqlx::query(AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The definition of version `version` of `name`.
pub async fn version_definition(
    conn: &mut PgConnection,
    name: &str,
    version: i64,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT definition FROM computed_trait_versions WHERE name = $1 AND version = $2",
    )
    .bind(name)
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// Traits ordered by name, after `after` when given, at most `limit`.
pub async fn list(
    conn: &mut PgConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<TraitRecord>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM computed_traits WHERE ($1::text IS NULL OR name > $1) \
         ORDER BY name LIMIT $2"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// Every trait, ordered by name.
pub async fn all(conn: &mut PgConnection) -> Result<Vec<TraitRecord>, sqlx::Error> {
    list(conn, None, i64::MAX).await
}

/// How many traits exist.
pub async fn count(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM computed_traits")
        .fetch_one(conn)
        .await
}

/// Deletes the trait, its versions and every stored value (foreign keys cascade).
pub async fn delete(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM computed_traits WHERE name = $1")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

/// Computes trait `name` (version `version`, measure `measure`) at `ctx` for the customers
/// `who` covers and stores the values that changed (see the module docs); `Who::Everyone`
/// covers the customers with an event of the type and those holding a value. Returns the
/// number of rows written or removed.
pub async fn store_values(
    conn: &mut PgConnection,
    name: &str,
    version: i64,
    measure: &EventMeasure,
    who: Who<'_>,
    ctx: &EvalContext,
) -> Result<u64, sqlx::Error> {
    let mut compiled = compile_measure(measure);
    let event_type = compiled.push(SqlValue::Text(measure.event_type.clone()), "text");
    let name = compiled.push(SqlValue::Text(name.to_owned()), "text");
    let version = compiled.push(SqlValue::BigInt(version), "bigint");
    let candidates = match who {
        Who::Everyone => format!(
            "SELECT DISTINCT e.customer_id FROM customer_events e \
             WHERE e.event_type = {event_type} \
             UNION SELECT c.customer_id FROM customer_computed_traits c WHERE c.name = {name}"
        ),
        Who::Customers(ids) => {
            let ids = compiled.push(SqlValue::TextArray(ids.to_vec()), "text[]");
            format!("SELECT unnest({ids}) AS customer_id")
        }
    };
    let column = value_column(measure.aggregate.value_type());
    let values = [
        "integer_value",
        "double_value",
        "time_value",
        "string_value",
    ];
    let selected: Vec<String> = values
        .iter()
        .map(|v| {
            if *v == column {
                "x.value".to_owned()
            } else {
                "NULL".to_owned()
            }
        })
        .collect();
    let sql = format!(
        "WITH candidates AS ({candidates}), \
         computed AS ( \
           SELECT f.customer_id, \
             EXISTS (SELECT 1 FROM customer_events e WHERE e.customer_id = f.customer_id \
               AND e.event_type = {event_type}) AS has_events, \
             {measure} AS value \
           FROM customer_facts f JOIN candidates k ON k.customer_id = f.customer_id), \
         removed AS ( \
           DELETE FROM customer_computed_traits c \
           WHERE c.name = {name} AND c.customer_id IN (SELECT customer_id FROM candidates) \
             AND NOT EXISTS (SELECT 1 FROM computed x \
               WHERE x.customer_id = c.customer_id AND x.has_events) \
           RETURNING 1), \
         stored AS ( \
           INSERT INTO customer_computed_traits AS c (customer_id, name, version, {columns}, \
             compute_time) \
           SELECT x.customer_id, {name}, {version}, {selected}, $1 \
           FROM computed x WHERE x.has_events \
           ON CONFLICT (customer_id, name) DO UPDATE SET version = excluded.version, \
             {updates}, compute_time = excluded.compute_time \
           WHERE (c.version, {old}) IS DISTINCT FROM (excluded.version, {new}) \
           RETURNING 1) \
         SELECT (SELECT count(*) FROM removed) + (SELECT count(*) FROM stored)",
        measure = compiled.sql,
        columns = values.join(", "),
        selected = selected.join(", "),
        updates = values
            .iter()
            .map(|v| format!("{v} = excluded.{v}"))
            .collect::<Vec<_>>()
            .join(", "),
        old = values
            .iter()
            .map(|v| format!("c.{v}"))
            .collect::<Vec<_>>()
            .join(", "),
        new = values
            .iter()
            .map(|v| format!("excluded.{v}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    // The text holds only fixed fragments and placeholders; every value is bound.
    let query = sqlx::query(AssertSqlSafe(sql))
        .bind(ctx.now)
        .bind(ctx.today);
    let row = compiled.bind(query).fetch_one(&mut *conn).await?;
    let changed: i64 = row.try_get(0)?;
    Ok(u64::try_from(changed).unwrap_or(0))
}

/// One stored value with its version and compute time.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredValue {
    pub version: i64,
    /// `None`: the aggregate was unset.
    pub value: Option<ComputedValue>,
    pub compute_time: DateTime<Utc>,
}

/// The stored values of `customer_id`, by trait name.
pub async fn customer_values(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<Vec<(String, StoredValue)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT customer_id, name, version, integer_value, double_value, time_value, \
           string_value, compute_time \
         FROM customer_computed_traits WHERE customer_id = $1 ORDER BY name",
    )
    .bind(customer_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("name")?, stored_from_row(row)?)))
        .collect()
}

fn stored_from_row(row: &PgRow) -> Result<StoredValue, sqlx::Error> {
    let value = if let Some(v) = row.try_get::<Option<i64>, _>("integer_value")? {
        Some(ComputedValue::Integer(v))
    } else if let Some(v) = row.try_get::<Option<f64>, _>("double_value")? {
        Some(ComputedValue::Double(v))
    } else if let Some(v) = row.try_get::<Option<DateTime<Utc>>, _>("time_value")? {
        Some(ComputedValue::Time(v))
    } else {
        row.try_get::<Option<String>, _>("string_value")?
            .map(ComputedValue::Text)
    };
    Ok(StoredValue {
        version: row.try_get("version")?,
        value,
        compute_time: row.try_get("compute_time")?,
    })
}

/// Adds the stored values of the customers of `facts` to their `computed` maps (one
/// statement).
pub async fn load_into(
    conn: &mut PgConnection,
    facts: &mut std::collections::HashMap<String, Facts>,
) -> Result<(), sqlx::Error> {
    if facts.is_empty() {
        return Ok(());
    }
    let ids: Vec<&String> = facts.keys().collect();
    let rows = sqlx::query(
        "SELECT customer_id, name, version, integer_value, double_value, time_value, \
           string_value, compute_time \
         FROM customer_computed_traits WHERE customer_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let customer_id: String = row.try_get("customer_id")?;
        let name: String = row.try_get("name")?;
        if let (Some(facts), Some(value)) =
            (facts.get_mut(&customer_id), stored_from_row(&row)?.value)
        {
            facts.computed.insert(name, value);
        }
    }
    Ok(())
}
