//! Customer use cases: create, read (one, a batch, a page, by identity, with its activity
//! summary), update under a mask, soft delete and restore, attach and detach identities.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use custops_common::error::FieldViolation;
use custops_common::outbox;
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Changed, Context, RequestKey, ensure_editable, idempotent};
use crate::domain::activity::ActivitySummary;
use crate::domain::customer::{MAX_IDENTITIES, apply_update};
use crate::domain::{ConsentDecision, Customer, CustomerFilter, CustomerState, Identity, Traits};
use crate::error::{ProfilesError, Result};
use crate::events;
use crate::store::{
    self, activities, attributes, consents, identities, load, load_for_update, pii_attributes,
    resolve, write_traits,
};

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

/// A customer and, when the requested id was merged into it, that id.
pub type Resolved = (Customer, Option<Uuid>);

/// INVALID_ARGUMENT for every custom attribute that is undeclared or of the wrong type.
pub(crate) async fn check_attributes(
    conn: &mut PgConnection,
    traits: &Traits,
    prefix: &str,
) -> Result<()> {
    if traits.custom_attributes.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = traits.custom_attributes.keys().cloned().collect();
    let declared = attributes::value_types(conn, &names).await?;
    let violations: Vec<FieldViolation> = traits
        .custom_attributes
        .iter()
        .filter_map(|(name, value)| {
            let description = match declared.get(name) {
                None => "is not a declared attribute (see CreateAttributeDefinition)",
                Some(t) if *t != value.value_type() => {
                    "has a value of another type than its declaration"
                }
                Some(_) => return None,
            };
            Some(FieldViolation {
                field: format!("{prefix}custom_attributes[{name}]"),
                description: description.to_owned(),
            })
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ProfilesError::Invalid(violations))
    }
}

/// Creates a customer with its identities and consents; CustomerCreated and one
/// ConsentChanged per consent go to the outbox in the same transaction. Answers
/// `respond(customer)`, once per request key: a replay answers the first call's bytes.
#[tracing::instrument(skip_all)]
pub async fn create<R: Message + Default>(
    ctx: &Context,
    cmd: NewCustomer,
    respond: impl FnOnce(&Customer) -> R + Send + 'static,
) -> Result<R> {
    let now = ctx.now();
    let key = cmd.request.clone();
    idempotent(
        ctx,
        key.as_ref(),
        now,
        move |conn| Box::pin(create_in(conn, cmd, now)),
        respond,
    )
    .await
}

async fn create_in(
    conn: &mut PgConnection,
    cmd: NewCustomer,
    now: DateTime<Utc>,
) -> Result<Changed<Customer>> {
    let id = Uuid::now_v7();
    check_attributes(conn, &cmd.traits, "customer.").await?;
    store::customers::insert(conn, id, &cmd.traits, now).await?;
    for (i, identity) in cmd.identities.iter().enumerate() {
        attach(conn, id, identity, now, || {
            format!("customer.identities[{i}]")
        })
        .await?;
    }
    let mut changes = Vec::new();
    for decision in &cmd.consents {
        let change_time = decision.change_time.unwrap_or(now);
        let change = consents::apply(conn, id, decision, None, change_time, now, None).await?;
        changes.push(change);
    }
    let customer = load_for_update(conn, id).await?;
    let pii = pii_attributes(conn).await?;
    let mut events = vec![events::customer_created(&customer, &pii)];
    events.extend(changes.iter().map(events::consent_changed));
    tracing::debug!(customer_id = %id, "customer created");
    Ok((customer, events))
}

/// Attaches `identity` to the customer `id`, or IDENTITY_TAKEN on the request path `field`
/// naming the holder.
async fn attach(
    conn: &mut PgConnection,
    id: Uuid,
    identity: &Identity,
    now: DateTime<Utc>,
    field: impl FnOnce() -> String,
) -> Result<()> {
    if identities::insert(conn, id, identity, now).await? {
        return Ok(());
    }
    Err(ProfilesError::IdentityTaken {
        field: field(),
        holder: identities::holder(conn, identity).await?,
    })
}

/// The customer `id` resolves to (merges followed) and the requested id if it was merged.
#[tracing::instrument(skip_all, fields(customer_id = %id))]
pub async fn get(ctx: &Context, id: Uuid) -> Result<Resolved> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    resolve(&mut conn, id, false).await
}

/// [`get`], with the activity aggregates of the customer found (Customer 360).
#[tracing::instrument(skip_all, fields(customer_id = %id))]
pub async fn get_with_summary(
    ctx: &Context,
    id: Uuid,
) -> Result<(Customer, Option<Uuid>, ActivitySummary)> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let (customer, merged_from) = resolve(&mut conn, id, false).await?;
    let summary = activities::summary(&mut conn, customer.id).await?;
    Ok((customer, merged_from, summary))
}

/// Customers by id, in request order: each found one with the id asked for, plus the ids
/// that exist nowhere.
#[tracing::instrument(skip_all, fields(count = ids.len()))]
pub async fn batch_get(ctx: &Context, ids: &[Uuid]) -> Result<(Vec<Resolved>, Vec<Uuid>)> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let found = store::customers::by_ids(&mut conn, ids).await?;
    let mut by_id: HashMap<Uuid, Customer> = found.into_iter().map(|c| (c.id, c)).collect();
    // Each requested id is answered once, however often it is repeated: the first
    // occurrence takes its row out of `by_id`, later ones are skipped here rather than
    // mistaken for missing ids.
    let mut seen = HashSet::new();
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
pub async fn update(ctx: &Context, cmd: CustomerUpdate) -> Result<Customer> {
    let mut tx = ctx.pool.begin().await?;
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
    customer.touch(ctx.now());
    write_traits(&mut tx, &customer).await?;
    let pii = pii_attributes(&mut tx).await?;
    outbox::append(&mut tx, events::customer_updated(&customer, &pii, changed)).await?;
    tx.commit().await?;
    Ok(customer)
}

/// Up to `limit` customers after the id `after`, in id (creation) order; ages are counted on
/// the service clock's day.
#[tracing::instrument(skip_all)]
pub async fn list(
    ctx: &Context,
    filter: &CustomerFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Customer>> {
    let today = ctx.now().date_naive();
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    store::customers::list(&mut conn, filter, today, after, limit).await
}

/// Soft-deletes (`delete` true) or restores a customer; idempotent.
#[tracing::instrument(skip_all, fields(customer_id = %id))]
pub async fn set_deleted(ctx: &Context, id: Uuid, etag: &str, delete: bool) -> Result<Customer> {
    let mut tx = ctx.pool.begin().await?;
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
    customer.touch(ctx.now());
    customer.state = target;
    customer.delete_time = delete.then_some(customer.update_time);
    store::customers::write_state(&mut tx, &customer).await?;
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
pub async fn lookup(ctx: &Context, identity: &Identity) -> Result<Customer> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let holder = identities::holder(&mut conn, identity)
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
    ctx: &Context,
    id: Uuid,
    identity: &Identity,
    etag: &str,
    add: bool,
    allow_missing: bool,
) -> Result<Customer> {
    let mut tx = ctx.pool.begin().await?;
    let mut customer = load_for_update(&mut tx, id).await?;
    ensure_editable(&customer, false)?;
    if !customer.etag_matches(etag) {
        return Err(ProfilesError::StaleEtag);
    }
    let now = ctx.now();
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
        attach(&mut tx, id, identity, now, || "identity".to_owned()).await?;
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
        identities::delete(&mut tx, identity).await?;
    }
    customer.touch(now);
    store::customers::write_version(&mut tx, &customer).await?;
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
