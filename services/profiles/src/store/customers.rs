//! The `customers` table: inserting a customer, its state changes, the list and batch reads,
//! merge families and duplicate candidates.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{CustomerRow, complete, customer_columns, json};
use crate::domain::{Customer, CustomerFilter, IdentityType, Traits};
use crate::error::Result;

/// Inserts a new ACTIVE customer (version 1) with `traits`, created at `now`.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    traits: &Traits,
    now: DateTime<Utc>,
) -> Result<()> {
    let t = traits;
    sqlx::query(
        "INSERT INTO customers (customer_id, version, state, create_time, update_time, \
         display_name, given_name, family_name, birth_date, gender, income_band, occupation, \
         education_level, country_code, region, city, postal_code, interests, lifestyle_tags, \
         tags, custom_attributes, channel_preferences) VALUES ($1, 1, 1, $2, $2, $3, $4, $5, \
         $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18::text::jsonb, $19::text::jsonb)",
    )
    .bind(id)
    .bind(now)
    .bind(&t.display_name)
    .bind(&t.given_name)
    .bind(&t.family_name)
    .bind(t.birth_date)
    .bind(t.gender)
    .bind(t.income_band)
    .bind(&t.occupation)
    .bind(t.education_level)
    .bind(&t.country_code)
    .bind(&t.region)
    .bind(&t.city)
    .bind(&t.postal_code)
    .bind(&t.interests)
    .bind(&t.lifestyle_tags)
    .bind(&t.tags)
    .bind(json(&t.custom_attributes)?)
    .bind(json(&t.channel_preferences)?)
    .execute(conn)
    .await?;
    Ok(())
}

/// The customers with these ids (exactly these: no merge following), in no particular order.
pub(crate) async fn by_ids(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Customer>> {
    let rows: Vec<CustomerRow> = sqlx::query_as(concat!(
        "SELECT ",
        customer_columns!(),
        " FROM customers WHERE customer_id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    complete(conn, rows).await
}

/// Up to `limit` customers after the id `after`, in id (creation) order; ages are counted on
/// `today`.
pub(crate) async fn list(
    conn: &mut PgConnection,
    filter: &CustomerFilter,
    today: NaiveDate,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Customer>> {
    // Age in whole years ≥ min ⇔ born on or before today − min years; ≤ max ⇔ born after
    // today − (max + 1) years.
    let born_by = filter
        .min_age
        .and_then(|a| today.checked_sub_months(chrono::Months::new(12 * a.unsigned_abs())));
    let born_after = filter
        .max_age
        .and_then(|a| today.checked_sub_months(chrono::Months::new(12 * (a.unsigned_abs() + 1))));
    let rows: Vec<CustomerRow> = sqlx::query_as(concat!(
        "SELECT ", customer_columns!(), " FROM customers c WHERE c.state = ANY($1) \
         AND ($2::text IS NULL OR c.country_code = $2) \
         AND ($3::text IS NULL OR lower(c.region) = lower($3)) \
         AND ($4::text IS NULL OR lower(c.city) = lower($4)) \
         AND c.tags @> $5::text[] \
         AND (cardinality($6::smallint[]) = 0 OR c.gender = ANY($6)) \
         AND ($7::date IS NULL OR c.birth_date <= $7) \
         AND ($8::date IS NULL OR c.birth_date > $8) \
         AND ($9::timestamptz IS NULL OR c.create_time >= $9) \
         AND ($10::timestamptz IS NULL OR c.create_time < $10) \
         AND ($11::timestamptz IS NULL OR c.update_time >= $11) \
         AND ($12::timestamptz IS NULL OR c.update_time < $12) \
         AND NOT EXISTS (SELECT 1 FROM unnest($13::smallint[]) AS ch(channel) WHERE NOT EXISTS \
             (SELECT 1 FROM consents k WHERE k.customer_id = c.customer_id AND k.channel = ch.channel AND k.status = 1)) \
         AND NOT EXISTS (SELECT 1 FROM consents k WHERE k.customer_id = c.customer_id \
             AND k.channel = ANY($14::smallint[]) AND k.status = 1) \
         AND ($15::uuid IS NULL OR c.customer_id > $15) \
         ORDER BY c.customer_id LIMIT $16"
    ))
    .bind(&filter.states)
    .bind(&filter.country_code)
    .bind(&filter.region)
    .bind(&filter.city)
    .bind(&filter.tags)
    .bind(&filter.genders)
    .bind(born_by)
    .bind(born_after)
    .bind(filter.create_range.0)
    .bind(filter.create_range.1)
    .bind(filter.update_range.0)
    .bind(filter.update_range.1)
    .bind(&filter.granted)
    .bind(&filter.not_granted)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    complete(conn, rows).await
}

/// Writes a customer's state, delete time, version and update time (delete and undelete).
pub(crate) async fn write_state(conn: &mut PgConnection, customer: &Customer) -> Result<()> {
    sqlx::query("UPDATE customers SET state = $2, delete_time = $3, version = $4, update_time = $5 WHERE customer_id = $1")
        .bind(customer.id)
        .bind(customer.state.number())
        .bind(customer.delete_time)
        .bind(customer.version)
        .bind(customer.update_time)
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes a customer's version and update time only (its identities changed).
pub(crate) async fn write_version(conn: &mut PgConnection, customer: &Customer) -> Result<()> {
    sqlx::query("UPDATE customers SET version = $2, update_time = $3 WHERE customer_id = $1")
        .bind(customer.id)
        .bind(customer.version)
        .bind(customer.update_time)
        .execute(conn)
        .await?;
    Ok(())
}

/// Turns `source` into a MERGED tombstone pointing at `target`.
pub(crate) async fn mark_merged(
    conn: &mut PgConnection,
    source: Uuid,
    target: Uuid,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("UPDATE customers SET state = 3, merged_into = $2, version = version + 1, update_time = $3 WHERE customer_id = $1")
        .bind(source)
        .bind(target)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Makes a merged-away customer ACTIVE and on its own again (an unmerge).
pub(crate) async fn reactivate(conn: &mut PgConnection, id: Uuid) -> Result<()> {
    sqlx::query("UPDATE customers SET state = 1, merged_into = NULL WHERE customer_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// `id` and every customer merged into it, directly or through a chain.
pub(crate) async fn merged_family(conn: &mut PgConnection, id: Uuid) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "WITH RECURSIVE family(id) AS (SELECT $1::uuid UNION \
         SELECT c.customer_id FROM customers c JOIN family f ON c.merged_into = f.id) \
         SELECT id FROM family",
    )
    .bind(id)
    .fetch_all(conn)
    .await?)
}

/// ACTIVE customers other than `customer` that may be the same person: the same value under
/// any identity type, an e-mail at a domain of one of its e-mails, or the same names. At most
/// 1,000; the rules decide which really match.
pub(crate) async fn duplicate_candidates(
    conn: &mut PgConnection,
    customer: &Customer,
) -> Result<Vec<Uuid>> {
    let values: Vec<String> = customer
        .identities
        .iter()
        .map(|i| i.value.clone())
        .collect();
    let domains: Vec<String> = customer
        .identities
        .iter()
        .filter(|i| i.kind == IdentityType::Email)
        .filter_map(|i| i.value.split_once('@').map(|(_, d)| d.to_owned()))
        .collect();
    let t = &customer.traits;
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT c.customer_id FROM customers c WHERE c.state = 1 AND c.customer_id <> $1 AND ( \
         EXISTS (SELECT 1 FROM identities i WHERE i.customer_id = c.customer_id AND i.value = ANY($2)) \
         OR EXISTS (SELECT 1 FROM identities i WHERE i.customer_id = c.customer_id AND i.identity_type = 1 \
             AND split_part(i.value, '@', 2) = ANY($3)) \
         OR ($4 <> '' AND $5 <> '' AND lower(c.given_name) = lower($4) AND lower(c.family_name) = lower($5))) \
         LIMIT 1000",
    )
    .bind(customer.id)
    .bind(&values)
    .bind(&domains)
    .bind(&t.given_name)
    .bind(&t.family_name)
    .fetch_all(conn)
    .await?)
}
