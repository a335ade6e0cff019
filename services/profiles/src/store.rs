//! Postgres storage of the profiles schema (sqlx): SQL only, one module per table family,
//! functions over a connection (pass `&mut tx` to run them in the caller's transaction).
//! Transactions, the rules and the outbox events are `workflow`'s; times are bound from the
//! service clock, never the database's `now()`. Request ids are the shared
//! `custops_common::idempotency`'s (table `idempotency_keys`); keyset pages read
//! `limit` rows (the page and one more) after a cursor, cut by `custops_common::paging`.
//!
//! This file holds what every family shares: the customer row and its loading (identities
//! and consents filled in, merges followed), trait writes.

pub mod activities;
pub mod attributes;
pub mod consents;
pub mod customers;
pub mod erasure;
pub mod event_types;
pub mod identities;
pub mod merges;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{
    Actor, AttributeValue, ChannelPreferences, Consent, Customer, CustomerState, Identity,
    IdentityType, Traits,
};
use crate::error::{ProfilesError, Result};

macro_rules! customer_columns {
    () => {
        "customer_id, version, state, merged_into, create_time, update_time, delete_time, \
         erase_time, display_name, given_name, family_name, birth_date, gender, income_band, \
         occupation, education_level, country_code, region, city, postal_code, interests, \
         lifestyle_tags, tags, custom_attributes::text AS custom_attributes, \
         channel_preferences::text AS channel_preferences"
    };
}
pub(crate) use customer_columns;

/// One `customers` row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct CustomerRow {
    customer_id: Uuid,
    version: i64,
    state: i16,
    merged_into: Option<Uuid>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    delete_time: Option<DateTime<Utc>>,
    erase_time: Option<DateTime<Utc>>,
    display_name: String,
    given_name: String,
    family_name: String,
    birth_date: Option<NaiveDate>,
    gender: i16,
    income_band: i16,
    occupation: String,
    education_level: i16,
    country_code: String,
    region: String,
    city: String,
    postal_code: String,
    interests: Vec<String>,
    lifestyle_tags: Vec<String>,
    tags: Vec<String>,
    custom_attributes: String,
    channel_preferences: String,
}

impl CustomerRow {
    fn into_customer(self) -> Result<Customer> {
        let state = CustomerState::from_number(i32::from(self.state))
            .ok_or_else(|| anyhow::anyhow!("unknown customer state {}", self.state))?;
        let custom_attributes: BTreeMap<String, AttributeValue> =
            serde_json::from_str(&self.custom_attributes).map_err(anyhow::Error::from)?;
        let channel_preferences: ChannelPreferences =
            serde_json::from_str(&self.channel_preferences).map_err(anyhow::Error::from)?;
        Ok(Customer {
            id: self.customer_id,
            version: self.version,
            state,
            merged_into: self.merged_into,
            create_time: self.create_time,
            update_time: self.update_time,
            delete_time: self.delete_time,
            erase_time: self.erase_time,
            traits: Traits {
                display_name: self.display_name,
                given_name: self.given_name,
                family_name: self.family_name,
                birth_date: self.birth_date,
                gender: self.gender,
                income_band: self.income_band,
                occupation: self.occupation,
                education_level: self.education_level,
                country_code: self.country_code,
                region: self.region,
                city: self.city,
                postal_code: self.postal_code,
                interests: self.interests,
                lifestyle_tags: self.lifestyle_tags,
                tags: self.tags,
                custom_attributes,
                channel_preferences,
            },
            identities: Vec::new(),
            consents: Vec::new(),
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
struct IdentityRow {
    customer_id: Uuid,
    identity_type: i16,
    namespace: String,
    value: String,
    create_time: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
struct ConsentRow {
    customer_id: Uuid,
    channel: i16,
    status: i16,
    source: String,
    actor_kind: i16,
    actor_id: String,
    actor_service: String,
    change_time: DateTime<Utc>,
    record_time: DateTime<Utc>,
}

/// Fills in identities and consents of `rows`, keeping their order.
pub(crate) async fn complete(
    conn: &mut PgConnection,
    rows: Vec<CustomerRow>,
) -> Result<Vec<Customer>> {
    let mut customers = rows
        .into_iter()
        .map(CustomerRow::into_customer)
        .collect::<Result<Vec<_>>>()?;
    let ids: Vec<Uuid> = customers.iter().map(|c| c.id).collect();
    let identities: Vec<IdentityRow> = sqlx::query_as(
        "SELECT customer_id, identity_type, namespace, value, create_time FROM identities \
         WHERE customer_id = ANY($1) ORDER BY identity_type, namespace, value",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let consents: Vec<ConsentRow> = sqlx::query_as(
        "SELECT customer_id, channel, status, source, actor_kind, actor_id, actor_service, \
         change_time, record_time FROM consents WHERE customer_id = ANY($1) ORDER BY channel",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let index: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    for row in identities {
        let Some(kind) = IdentityType::from_number(i32::from(row.identity_type)) else {
            continue;
        };
        if let Some(&i) = index.get(&row.customer_id) {
            customers[i].identities.push(Identity {
                kind,
                namespace: row.namespace,
                value: row.value,
                create_time: Some(row.create_time),
            });
        }
    }
    for row in consents {
        if let Some(&i) = index.get(&row.customer_id) {
            customers[i].consents.push(consent_from_row(row));
        }
    }
    Ok(customers)
}

fn consent_from_row(row: ConsentRow) -> Consent {
    Consent {
        channel: row.channel,
        status: row.status,
        source: row.source,
        actor: Actor {
            kind: row.actor_kind,
            id: row.actor_id,
            service: row.actor_service,
        },
        change_time: row.change_time,
        record_time: row.record_time,
    }
}

/// The customer with `id`, optionally locked for the rest of the transaction.
pub(crate) async fn load(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<Customer>> {
    let row: Option<CustomerRow> = if lock {
        sqlx::query_as(concat!(
            "SELECT ",
            customer_columns!(),
            " FROM customers WHERE customer_id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    } else {
        sqlx::query_as(concat!(
            "SELECT ",
            customer_columns!(),
            " FROM customers WHERE customer_id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    };
    match row {
        Some(row) => Ok(complete(conn, vec![row]).await?.pop()),
        None => Ok(None),
    }
}

/// The customer with `id`, locked, or NOT_FOUND.
pub(crate) async fn load_for_update(conn: &mut PgConnection, id: Uuid) -> Result<Customer> {
    load(conn, id, true)
        .await?
        .ok_or_else(|| ProfilesError::customer_not_found(id))
}

/// How many merges a read follows before giving up (a chain that long is a defect).
const MAX_MERGE_HOPS: usize = 32;

/// The customer `id` resolves to, following merge tombstones; with the requested id when it
/// was a merged one.
pub(crate) async fn resolve(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<(Customer, Option<Uuid>)> {
    let mut current = id;
    for _ in 0..MAX_MERGE_HOPS {
        let customer = load(conn, current, lock)
            .await?
            .ok_or_else(|| ProfilesError::customer_not_found(id))?;
        match (customer.state, customer.merged_into) {
            (CustomerState::Merged, Some(next)) => current = next,
            _ => {
                let merged_from = (customer.id != id).then_some(id);
                return Ok((customer, merged_from));
            }
        }
    }
    Err(anyhow::anyhow!("merge chain of {id} is longer than {MAX_MERGE_HOPS}").into())
}

/// Names of the attributes declared `contains_pii` (kept out of traits and events).
pub(crate) async fn pii_attributes(conn: &mut PgConnection) -> Result<HashSet<String>> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT attribute_name FROM attribute_definitions WHERE contains_pii")
            .fetch_all(conn)
            .await?;
    Ok(names.into_iter().collect())
}

/// Writes the traits, version and update time of a customer row.
pub(crate) async fn write_traits(conn: &mut PgConnection, customer: &Customer) -> Result<()> {
    let t = &customer.traits;
    sqlx::query(
        "UPDATE customers SET version = $2, update_time = $3, display_name = $4, given_name = $5, \
         family_name = $6, birth_date = $7, gender = $8, income_band = $9, occupation = $10, \
         education_level = $11, country_code = $12, region = $13, city = $14, postal_code = $15, \
         interests = $16, lifestyle_tags = $17, tags = $18, custom_attributes = $19::text::jsonb, \
         channel_preferences = $20::text::jsonb WHERE customer_id = $1",
    )
    .bind(customer.id)
    .bind(customer.version)
    .bind(customer.update_time)
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

pub(crate) fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| ProfilesError::Internal(e.into()))
}
