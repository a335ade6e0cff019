//! Customers, identities, the attribute catalog and consents.

use chrono::{DateTime, Utc};
use custops_common::outbox;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    CustomerRow, Page, PgStore, RequestKey, check_attributes, claim_request, complete,
    customer_columns, ensure_editable, fetch_limit, identity_holder, is_unique_violation, json,
    load, load_for_update, page, pii_attributes, resolve, write_traits,
};
use crate::domain::customer::apply_update;
use crate::domain::{
    Actor, AttributeDefinition, ChannelPreferences, Consent, ConsentChange, ConsentDecision,
    ConsentOutcome, Customer, CustomerFilter, CustomerState, Identity, Traits, consent_outcome,
    consent_status,
};
use crate::error::{ProfilesError, Result};
use crate::events;

/// Most identities one customer holds.
pub(crate) const MAX_IDENTITIES: usize = 20;
/// Most declared attributes.
const MAX_ATTRIBUTES: i64 = 500;

/// A validated CreateCustomer.
#[derive(Debug, Clone)]
pub struct NewCustomer {
    /// Initial traits.
    pub traits: Traits,
    /// Normalised identities, distinct.
    pub identities: Vec<Identity>,
    /// Initial consents, one per channel.
    pub consents: Vec<ConsentDecision>,
    /// Idempotency key.
    pub request: Option<RequestKey>,
}

/// A validated UpdateCustomer.
#[derive(Debug, Clone)]
pub struct CustomerUpdate {
    /// Which customer.
    pub customer_id: Uuid,
    /// Expected etag; empty for none.
    pub etag: String,
    /// The new values of the masked paths.
    pub patch: Traits,
    /// The mask.
    pub paths: Vec<String>,
}

/// A validated UpdateConsent.
#[derive(Debug, Clone)]
pub struct ConsentUpdate {
    /// Which customer (merged ids followed).
    pub customer_id: Uuid,
    /// Decisions, one per channel.
    pub decisions: Vec<ConsentDecision>,
    /// Replacement preferences.
    pub preferences: Option<ChannelPreferences>,
    /// Expected etag.
    pub etag: String,
    /// Idempotency key.
    pub request: Option<RequestKey>,
}

/// A customer and, when the requested id was merged into it, that id.
pub type Resolved = (Customer, Option<Uuid>);

/// Cursor of ListConsentChanges: (record time µs, id) of the last entry.
pub type ConsentCursor = (i64, Uuid);

impl PgStore {
    /// Creates a customer with its identities and consents; CustomerCreated and one
    /// ConsentChanged per consent go to the outbox in the same transaction.
    #[tracing::instrument(skip_all)]
    pub async fn create_customer(&self, cmd: NewCustomer) -> Result<Customer> {
        let id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        if let Some(key) = &cmd.request
            && let Some(first) = claim_request(&mut tx, key, "CreateCustomer", id).await?
        {
            drop(tx);
            return self.get_exact(first).await;
        }
        check_attributes(&mut tx, &cmd.traits, "customer.").await?;
        let now = self.now();
        let t = &cmd.traits;
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
        .execute(&mut *tx)
        .await?;
        for (i, identity) in cmd.identities.iter().enumerate() {
            if let Err(error) = insert_identity(&mut tx, id, identity, now).await {
                // Roll back first: the lookup of the holder must not wait for this transaction.
                drop(tx);
                return Err(self
                    .identity_error(error, format!("customer.identities[{i}]"), identity)
                    .await);
            }
        }
        let mut changes = Vec::new();
        for decision in &cmd.consents {
            let change_time = decision.change_time.unwrap_or(now);
            let change = apply_consent(&mut tx, id, decision, None, change_time, now, None).await?;
            changes.push(change);
        }
        let customer = load_for_update(&mut tx, id).await?;
        let pii = pii_attributes(&mut tx).await?;
        outbox::append(&mut tx, events::customer_created(&customer, &pii)).await?;
        for change in &changes {
            outbox::append(&mut tx, events::consent_changed(change)).await?;
        }
        tx.commit().await?;
        tracing::info!(customer_id = %id, "customer created");
        Ok(customer)
    }

    /// Maps a failed identity insert: a unique violation is IDENTITY_TAKEN naming the holder.
    async fn identity_error(
        &self,
        error: sqlx::Error,
        field: String,
        identity: &Identity,
    ) -> ProfilesError {
        if !is_unique_violation(&error, "identities_pkey") {
            return error.into();
        }
        let holder = match self.pool.acquire().await {
            Ok(mut conn) => identity_holder(&mut conn, identity).await.ok().flatten(),
            Err(_) => None,
        };
        ProfilesError::IdentityTaken { field, holder }
    }

    /// The customer with exactly this id (no merge following).
    async fn get_exact(&self, id: Uuid) -> Result<Customer> {
        let mut conn = self.pool.acquire().await?;
        load(&mut conn, id, false)
            .await?
            .ok_or_else(|| ProfilesError::customer_not_found(id))
    }

    /// The customer `id` resolves to (merges followed) and the requested id if it was merged.
    #[tracing::instrument(skip_all, fields(customer_id = %id))]
    pub async fn get_customer(&self, id: Uuid) -> Result<(Customer, Option<Uuid>)> {
        let mut conn = self.pool.acquire().await?;
        resolve(&mut conn, id, false).await
    }

    /// Customers by id, in request order: each found one with the id asked for, plus the ids
    /// that exist nowhere.
    #[tracing::instrument(skip_all, fields(count = ids.len()))]
    pub async fn batch_get(&self, ids: &[Uuid]) -> Result<(Vec<Resolved>, Vec<Uuid>)> {
        let mut conn = self.pool.acquire().await?;
        let rows: Vec<CustomerRow> = sqlx::query_as(concat!(
            "SELECT ",
            customer_columns!(),
            " FROM customers WHERE customer_id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?;
        let found = complete(&mut conn, rows).await?;
        let mut by_id: std::collections::HashMap<Uuid, Customer> =
            found.into_iter().map(|c| (c.id, c)).collect();
        // Each requested id is answered once, however often it is repeated: the first
        // occurrence takes its row out of `by_id`, later ones are skipped here rather than
        // mistaken for missing ids.
        let mut seen = std::collections::HashSet::new();
        let mut customers = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            if !seen.insert(*id) {
                continue;
            }
            match by_id.remove(id) {
                Some(c) if c.state == CustomerState::Merged => {
                    customers.push(resolve(&mut conn, *id, false).await?);
                }
                Some(c) => customers.push((c, None)),
                None => missing.push(*id),
            }
        }
        Ok((customers, missing))
    }

    /// Applies an update mask under an optional etag; emits CustomerUpdated when something
    /// changed.
    #[tracing::instrument(skip_all, fields(customer_id = %cmd.customer_id))]
    pub async fn update_customer(&self, cmd: CustomerUpdate) -> Result<Customer> {
        let mut tx = self.pool.begin().await?;
        let mut customer = load_for_update(&mut tx, cmd.customer_id).await?;
        ensure_editable(&customer, false)?;
        if !customer.etag_matches(&cmd.etag) {
            return Err(ProfilesError::StaleEtag);
        }
        check_attributes(&mut tx, &cmd.patch, "customer.").await?;
        let changed = apply_update(&mut customer.traits, &cmd.patch, &cmd.paths);
        if changed.is_empty() {
            return Ok(customer);
        }
        touch(&mut customer, self.now());
        write_traits(&mut tx, &customer).await?;
        let pii = pii_attributes(&mut tx).await?;
        outbox::append(&mut tx, events::customer_updated(&customer, &pii, changed)).await?;
        tx.commit().await?;
        Ok(customer)
    }

    /// One keyset page of customers in id (creation) order.
    #[tracing::instrument(skip_all)]
    pub async fn list_customers(
        &self,
        filter: &CustomerFilter,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Page<Customer, Uuid>> {
        let today = self.now().date_naive();
        // Age in whole years ≥ min ⇔ born on or before today − min years; ≤ max ⇔ born after
        // today − (max + 1) years.
        let born_by = filter
            .min_age
            .and_then(|a| today.checked_sub_months(chrono::Months::new(12 * a.unsigned_abs())));
        let born_after = filter.max_age.and_then(|a| {
            today.checked_sub_months(chrono::Months::new(12 * (a.unsigned_abs() + 1)))
        });
        let mut conn = self.pool.acquire().await?;
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
        .bind(fetch_limit(limit))
        .fetch_all(&mut *conn)
        .await?;
        let customers = complete(&mut conn, rows).await?;
        Ok(page(customers, limit, |c| c.id))
    }

    /// Soft-deletes (`delete` true) or restores a customer; idempotent.
    #[tracing::instrument(skip_all, fields(customer_id = %id))]
    pub async fn set_deleted(&self, id: Uuid, etag: &str, delete: bool) -> Result<Customer> {
        let mut tx = self.pool.begin().await?;
        let mut customer = load_for_update(&mut tx, id).await?;
        ensure_editable(&customer, true)?;
        if !customer.etag_matches(etag) {
            return Err(ProfilesError::StaleEtag);
        }
        let target = if delete {
            CustomerState::Deleted
        } else {
            CustomerState::Active
        };
        if customer.state == target {
            return Ok(customer);
        }
        touch(&mut customer, self.now());
        customer.state = target;
        customer.delete_time = delete.then_some(customer.update_time);
        sqlx::query("UPDATE customers SET state = $2, delete_time = $3, version = $4, update_time = $5 WHERE customer_id = $1")
            .bind(id)
            .bind(target.number())
            .bind(customer.delete_time)
            .bind(customer.version)
            .bind(customer.update_time)
            .execute(&mut *tx)
            .await?;
        let event = if delete {
            events::customer_deleted(&customer)
        } else {
            let pii = pii_attributes(&mut tx).await?;
            events::customer_undeleted(&customer, &pii)
        };
        outbox::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(customer)
    }

    /// The customer holding `identity`.
    #[tracing::instrument(skip_all)]
    pub async fn lookup(&self, identity: &Identity) -> Result<Customer> {
        let mut conn = self.pool.acquire().await?;
        let holder =
            identity_holder(&mut conn, identity)
                .await?
                .ok_or(ProfilesError::NotFound {
                    resource: "identity",
                    id: "(the given identity)".to_owned(),
                })?;
        load(&mut conn, holder, false)
            .await?
            .ok_or_else(|| ProfilesError::customer_not_found(holder))
    }

    /// Attaches or detaches an identity; CustomerUpdated ("identities") when it changed.
    #[tracing::instrument(skip_all, fields(customer_id = %id))]
    pub async fn change_identity(
        &self,
        id: Uuid,
        identity: &Identity,
        etag: &str,
        add: bool,
        allow_missing: bool,
    ) -> Result<Customer> {
        let mut tx = self.pool.begin().await?;
        let mut customer = load_for_update(&mut tx, id).await?;
        ensure_editable(&customer, false)?;
        if !customer.etag_matches(etag) {
            return Err(ProfilesError::StaleEtag);
        }
        let now = self.now();
        let held = customer
            .identities
            .iter()
            .any(|i| i.key() == identity.key());
        if add {
            if held {
                return Ok(customer);
            }
            if customer.identities.len() >= MAX_IDENTITIES {
                return Err(ProfilesError::IdentityLimit);
            }
            if let Err(error) = insert_identity(&mut tx, id, identity, now).await {
                drop(tx);
                return Err(self
                    .identity_error(error, "identity".to_owned(), identity)
                    .await);
            }
        } else {
            if !held {
                return if allow_missing {
                    Ok(customer)
                } else {
                    Err(ProfilesError::NotFound {
                        resource: "identity",
                        id: "(the given identity)".to_owned(),
                    })
                };
            }
            sqlx::query(
                "DELETE FROM identities WHERE identity_type = $1 AND namespace = $2 AND value = $3",
            )
            .bind(identity.kind.number())
            .bind(&identity.namespace)
            .bind(&identity.value)
            .execute(&mut *tx)
            .await?;
        }
        touch(&mut customer, now);
        sqlx::query("UPDATE customers SET version = $2, update_time = $3 WHERE customer_id = $1")
            .bind(id)
            .bind(customer.version)
            .bind(customer.update_time)
            .execute(&mut *tx)
            .await?;
        let customer = load_for_update(&mut tx, id).await?;
        let pii = pii_attributes(&mut tx).await?;
        outbox::append(
            &mut tx,
            events::customer_updated(&customer, &pii, vec!["identities".to_owned()]),
        )
        .await?;
        tx.commit().await?;
        Ok(customer)
    }

    /// Declares an attribute; an identical re-declaration returns the existing one.
    #[tracing::instrument(skip_all)]
    pub async fn create_attribute(&self, def: AttributeDefinition) -> Result<AttributeDefinition> {
        let mut tx = self.pool.begin().await?;
        // One declaration at a time, so the catalog limit holds under concurrency.
        sqlx::query("LOCK TABLE attribute_definitions IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        if let Some(existing) = attribute(&mut tx, &def.name).await? {
            let same = existing.value_type == def.value_type
                && existing.description == def.description
                && existing.contains_pii == def.contains_pii;
            return if same {
                Ok(existing)
            } else {
                Err(ProfilesError::AttributeExists)
            };
        }
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM attribute_definitions")
            .fetch_one(&mut *tx)
            .await?;
        if count >= MAX_ATTRIBUTES {
            return Err(ProfilesError::AttributeCatalogFull);
        }
        let def = AttributeDefinition {
            create_time: self.now(),
            ..def
        };
        sqlx::query(
            "INSERT INTO attribute_definitions (attribute_name, value_type, description, contains_pii, create_time) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&def.name)
        .bind(def.value_type)
        .bind(&def.description)
        .bind(def.contains_pii)
        .bind(def.create_time)
        .execute(&mut *tx)
        .await?;
        outbox::append(&mut tx, events::attribute_created(&def)).await?;
        tx.commit().await?;
        Ok(def)
    }

    /// One attribute definition.
    pub async fn get_attribute(&self, name: &str) -> Result<AttributeDefinition> {
        let mut conn = self.pool.acquire().await?;
        attribute(&mut conn, name)
            .await?
            .ok_or(ProfilesError::NotFound {
                resource: "attribute definition",
                id: name.to_owned(),
            })
    }

    /// A page of the catalog by name.
    pub async fn list_attributes(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Page<AttributeDefinition, String>> {
        let rows: Vec<AttributeRow> = sqlx::query_as(
            "SELECT attribute_name, value_type, description, contains_pii, create_time FROM attribute_definitions \
             WHERE ($1::text IS NULL OR attribute_name > $1) ORDER BY attribute_name LIMIT $2",
        )
        .bind(after)
        .bind(fetch_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        let defs = rows
            .into_iter()
            .map(AttributeRow::into_definition)
            .collect();
        Ok(page(defs, limit, |d: &AttributeDefinition| d.name.clone()))
    }

    /// Applies consent decisions and preferences to the customer `cmd.customer_id` resolves to.
    /// Answers the customer and the audit entries recorded.
    #[tracing::instrument(skip_all, fields(customer_id = %cmd.customer_id))]
    pub async fn update_consent(
        &self,
        cmd: ConsentUpdate,
    ) -> Result<(Customer, Vec<ConsentChange>)> {
        let mut tx = self.pool.begin().await?;
        let (mut customer, _) = resolve(&mut tx, cmd.customer_id, true).await?;
        if let Some(key) = &cmd.request
            && claim_request(&mut tx, key, "UpdateConsent", customer.id)
                .await?
                .is_some()
        {
            // A replay: the decisions were applied by the first call.
            return Ok((customer, Vec::new()));
        }
        ensure_editable(&customer, true)?;
        if !customer.etag_matches(&cmd.etag) {
            return Err(ProfilesError::StaleEtag);
        }
        let now = self.now();
        let mut changes = Vec::new();
        for decision in &cmd.decisions {
            let current = customer
                .consents
                .iter()
                .find(|c| c.channel == decision.channel);
            let change_time = decision.change_time.unwrap_or(now);
            match consent_outcome(current, decision.status, change_time) {
                ConsentOutcome::Unchanged => {}
                ConsentOutcome::Superseded => {
                    let old = current.map_or(consent_status::NONE, |c| c.status);
                    changes.push(
                        record_change(
                            &mut tx,
                            customer.id,
                            decision,
                            old,
                            change_time,
                            now,
                            None,
                            true,
                        )
                        .await?,
                    );
                }
                ConsentOutcome::Applied => {
                    let change = apply_consent(
                        &mut tx,
                        customer.id,
                        decision,
                        current,
                        change_time,
                        now,
                        None,
                    )
                    .await?;
                    changes.push(change);
                }
            }
        }
        let mut preferences_changed = false;
        if let Some(preferences) = &cmd.preferences
            && *preferences != customer.traits.channel_preferences
        {
            customer.traits.channel_preferences = preferences.clone();
            preferences_changed = true;
        }
        if changes.is_empty() && !preferences_changed {
            return Ok((customer, changes));
        }
        touch(&mut customer, now);
        write_traits(&mut tx, &customer).await?;
        let customer = load_for_update(&mut tx, customer.id).await?;
        for change in changes.iter().filter(|c| !c.superseded) {
            outbox::append(&mut tx, events::consent_changed(change)).await?;
        }
        if preferences_changed {
            let pii = pii_attributes(&mut tx).await?;
            outbox::append(
                &mut tx,
                events::customer_updated(&customer, &pii, vec!["channel_preferences".to_owned()]),
            )
            .await?;
        }
        tx.commit().await?;
        Ok((customer, changes))
    }

    /// A page of the consent audit trail, newest first.
    #[tracing::instrument(skip_all)]
    pub async fn list_consent_changes(
        &self,
        customer_id: Option<Uuid>,
        channels: &[i16],
        range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
        after: Option<ConsentCursor>,
        limit: usize,
    ) -> Result<Page<ConsentChange, ConsentCursor>> {
        let mut conn = self.pool.acquire().await?;
        let customers: Option<Vec<Uuid>> = match customer_id {
            Some(id) => {
                let (customer, _) = resolve(&mut conn, id, false).await?;
                Some(merged_family(&mut conn, customer.id).await?)
            }
            None => None,
        };
        let (after_time, after_id) = match after {
            Some((micros, id)) => (DateTime::from_timestamp_micros(micros), Some(id)),
            None => (None, None),
        };
        let rows: Vec<ConsentChangeRow> = sqlx::query_as(
            "SELECT consent_change_id, customer_id, channel, old_status, new_status, source, actor_kind, \
             actor_id, actor_service, change_time, record_time, merge_id, superseded FROM consent_changes \
             WHERE ($1::uuid[] IS NULL OR customer_id = ANY($1)) \
             AND (cardinality($2::smallint[]) = 0 OR channel = ANY($2)) \
             AND ($3::timestamptz IS NULL OR record_time >= $3) \
             AND ($4::timestamptz IS NULL OR record_time < $4) \
             AND ($5::timestamptz IS NULL OR (record_time, consent_change_id) < ($5, $6)) \
             ORDER BY record_time DESC, consent_change_id DESC LIMIT $7",
        )
        .bind(customers)
        .bind(channels)
        .bind(range.0)
        .bind(range.1)
        .bind(after_time)
        .bind(after_id)
        .bind(fetch_limit(limit))
        .fetch_all(&mut *conn)
        .await?;
        let changes = rows
            .into_iter()
            .map(ConsentChangeRow::into_change)
            .collect();
        Ok(page(changes, limit, |c: &ConsentChange| {
            (c.record_time.timestamp_micros(), c.id)
        }))
    }
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

/// Bumps version and update time (to `now`) in memory (the caller writes them).
pub(crate) fn touch(customer: &mut Customer, now: DateTime<Utc>) {
    customer.version += 1;
    customer.update_time = now;
}

pub(crate) async fn insert_identity(
    conn: &mut PgConnection,
    customer_id: Uuid,
    identity: &Identity,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO identities (identity_type, namespace, value, customer_id, create_time) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(identity.kind.number())
    .bind(&identity.namespace)
    .bind(&identity.value)
    .bind(customer_id)
    .bind(now)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Puts a decision in force and records it in the audit trail.
pub(crate) async fn apply_consent(
    conn: &mut PgConnection,
    customer_id: Uuid,
    decision: &ConsentDecision,
    current: Option<&Consent>,
    change_time: DateTime<Utc>,
    now: DateTime<Utc>,
    merge_id: Option<Uuid>,
) -> Result<ConsentChange> {
    sqlx::query(
        "INSERT INTO consents (customer_id, channel, status, source, actor_kind, actor_id, actor_service, change_time, record_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (customer_id, channel) DO UPDATE SET \
         status = excluded.status, source = excluded.source, actor_kind = excluded.actor_kind, \
         actor_id = excluded.actor_id, actor_service = excluded.actor_service, \
         change_time = excluded.change_time, record_time = excluded.record_time",
    )
    .bind(customer_id)
    .bind(decision.channel)
    .bind(decision.status)
    .bind(&decision.source)
    .bind(decision.actor.kind)
    .bind(&decision.actor.id)
    .bind(&decision.actor.service)
    .bind(change_time)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let old = current.map_or(consent_status::NONE, |c| c.status);
    record_change(
        conn,
        customer_id,
        decision,
        old,
        change_time,
        now,
        merge_id,
        false,
    )
    .await
}

#[allow(
    clippy::too_many_arguments,
    reason = "one column each; a struct would only rename them"
)]
async fn record_change(
    conn: &mut PgConnection,
    customer_id: Uuid,
    decision: &ConsentDecision,
    old_status: i16,
    change_time: DateTime<Utc>,
    now: DateTime<Utc>,
    merge_id: Option<Uuid>,
    superseded: bool,
) -> Result<ConsentChange> {
    let change = ConsentChange {
        id: Uuid::now_v7(),
        customer_id,
        channel: decision.channel,
        old_status,
        new_status: decision.status,
        source: decision.source.clone(),
        actor: decision.actor.clone(),
        change_time,
        record_time: now,
        merge_id,
        superseded,
    };
    sqlx::query(
        "INSERT INTO consent_changes (consent_change_id, customer_id, channel, old_status, new_status, source, \
         actor_kind, actor_id, actor_service, change_time, record_time, merge_id, superseded) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(change.id)
    .bind(customer_id)
    .bind(change.channel)
    .bind(change.old_status)
    .bind(change.new_status)
    .bind(&change.source)
    .bind(change.actor.kind)
    .bind(&change.actor.id)
    .bind(&change.actor.service)
    .bind(change.change_time)
    .bind(change.record_time)
    .bind(change.merge_id)
    .bind(change.superseded)
    .execute(conn)
    .await?;
    Ok(change)
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ConsentChangeRow {
    consent_change_id: Uuid,
    customer_id: Uuid,
    channel: i16,
    old_status: i16,
    new_status: i16,
    source: String,
    actor_kind: i16,
    actor_id: String,
    actor_service: String,
    change_time: DateTime<Utc>,
    record_time: DateTime<Utc>,
    merge_id: Option<Uuid>,
    superseded: bool,
}

impl ConsentChangeRow {
    pub(crate) fn into_change(self) -> ConsentChange {
        ConsentChange {
            id: self.consent_change_id,
            customer_id: self.customer_id,
            channel: self.channel,
            old_status: self.old_status,
            new_status: self.new_status,
            source: self.source,
            actor: Actor {
                kind: self.actor_kind,
                id: self.actor_id,
                service: self.actor_service,
            },
            change_time: self.change_time,
            record_time: self.record_time,
            merge_id: self.merge_id,
            superseded: self.superseded,
        }
    }
}

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

async fn attribute(conn: &mut PgConnection, name: &str) -> Result<Option<AttributeDefinition>> {
    let row: Option<AttributeRow> = sqlx::query_as(
        "SELECT attribute_name, value_type, description, contains_pii, create_time FROM attribute_definitions WHERE attribute_name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(AttributeRow::into_definition))
}
