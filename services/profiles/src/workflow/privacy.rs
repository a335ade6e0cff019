//! Privacy and identity-resolution use cases: erase a customer (and everything merged into
//! it), export everything held about one, find its likely duplicates.

use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Changed, Context, RequestKey, ensure_editable, idempotent};
use crate::domain::duplicates::{self, Duplicate};
use crate::domain::{
    Activity, AttributeDefinition, ConsentChange, Customer, CustomerState, EventType, MergeRecord,
};
use crate::error::Result;
use crate::events;
use crate::store::customers::merged_family;
use crate::store::{
    activities, attributes, consents, customers, erasure, load, load_for_update, merges, resolve,
};

/// Everything held about one customer.
#[derive(Debug, Clone)]
pub struct Export {
    /// The record.
    pub customer: Customer,
    /// The requested id when it was merged.
    pub merged_from: Option<Uuid>,
    /// Definitions of its attributes.
    pub definitions: Vec<AttributeDefinition>,
    /// Consent audit trail, oldest first.
    pub consent_changes: Vec<ConsentChange>,
    /// Activities, oldest first.
    pub activities: Vec<Activity>,
    /// Definitions of the event types of its custom events, by name.
    pub event_types: Vec<EventType>,
    /// Merges, oldest first.
    pub merges: Vec<MergeRecord>,
    /// Snapshot time.
    pub export_time: DateTime<Utc>,
}

/// A validated EraseCustomer.
#[derive(Debug, Clone)]
pub struct EraseCommand {
    /// Which customer (not a merged tombstone).
    pub customer_id: Uuid,
    /// Idempotency key.
    pub request: Option<RequestKey>,
}

/// The tombstone after an erasure and the ids of the tombstones erased with it.
pub type Erased = (Customer, Vec<Uuid>);

/// Erases a customer and every tombstone merged into it: personal data cleared,
/// identities, consents and the consent trail deleted, activities folded into anonymous
/// daily aggregates; emits CustomerErased. Idempotent: erasing an erased customer answers
/// its tombstone and emits nothing. Answers `respond(tombstone, merged ids)`, once per
/// request key: a replay answers the first call's bytes.
#[tracing::instrument(skip_all, fields(customer_id = %cmd.customer_id))]
pub async fn erase<R: Message + Default>(
    ctx: &Context,
    cmd: EraseCommand,
    respond: impl FnOnce(&Erased) -> R + Send + 'static,
) -> Result<R> {
    let now = ctx.now();
    let id = cmd.customer_id;
    idempotent(
        ctx,
        cmd.request.as_ref(),
        now,
        move |conn| Box::pin(erase_in(conn, id, now)),
        respond,
    )
    .await
}

async fn erase_in(tx: &mut PgConnection, id: Uuid, now: DateTime<Utc>) -> Result<Changed<Erased>> {
    let customer = load_for_update(&mut *tx, id).await?;
    match customer.state {
        CustomerState::Merged => ensure_editable(&customer, false)?,
        CustomerState::Erased => {
            let merged: Vec<Uuid> = merged_family(&mut *tx, id)
                .await?
                .into_iter()
                .filter(|m| *m != id)
                .collect();
            return Ok(((customer, merged), Vec::new()));
        }
        CustomerState::Active | CustomerState::Deleted => {}
    }
    let family = merged_family(&mut *tx, id).await?;
    let merged: Vec<Uuid> = family.iter().copied().filter(|m| *m != id).collect();
    erasure::erase_family(&mut *tx, &family, now).await?;
    let erased = load_for_update(&mut *tx, id).await?;
    let events = vec![events::customer_erased(&erased, &merged)];
    tracing::info!(merged = merged.len(), "customer erased");
    Ok(((erased, merged), events))
}

/// Everything held about the customer `id` resolves to, in one snapshot.
#[tracing::instrument(skip_all, fields(customer_id = %id))]
pub async fn export(ctx: &Context, id: Uuid) -> Result<Export> {
    let mut tx = custops_common::db::begin_snapshot(&ctx.pool).await?;
    // The snapshot is taken by the first statement, just after this reading.
    let export_time = ctx.now();
    let (customer, merged_from) = resolve(&mut tx, id, false).await?;
    let family = merged_family(&mut tx, customer.id).await?;
    let names: Vec<String> = customer.traits.custom_attributes.keys().cloned().collect();
    let definitions = attributes::named(&mut tx, &names).await?;
    let consent_changes = consents::changes_of(&mut tx, &family).await?;
    let activities = activities::of_customer(&mut tx, customer.id).await?;
    let mut event_types: Vec<EventType> =
        super::event_types::declared(&mut tx, activities.iter().map(|a| &a.details))
            .await?
            .into_values()
            .collect();
    event_types.sort_by(|a, b| a.name.cmp(&b.name));
    let merges = merges::of_customers(&mut tx, &family).await?;
    tx.commit().await?;
    Ok(Export {
        customer,
        merged_from,
        definitions,
        consent_changes,
        activities,
        event_types,
        merges,
        export_time,
    })
}

/// The customer `id` resolves to, and the ACTIVE customers likely the same person, best
/// first: at most `max`, none scoring under `min_score`.
#[tracing::instrument(skip_all, fields(customer_id = %id))]
pub async fn find_duplicates(
    ctx: &Context,
    id: Uuid,
    max: usize,
    min_score: f64,
) -> Result<(Customer, Vec<Duplicate>)> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let (customer, _) = resolve(&mut conn, id, false).await?;
    let candidate_ids = customers::duplicate_candidates(&mut conn, &customer).await?;
    let mut out = Vec::new();
    for candidate_id in candidate_ids {
        let Some(candidate) = load(&mut conn, candidate_id, false).await? else {
            continue;
        };
        let evidence = duplicates::evidence(&customer, &candidate);
        if evidence.is_empty() {
            continue;
        }
        let score = duplicates::score(&evidence);
        if score >= min_score {
            out.push(Duplicate {
                customer: candidate,
                score,
                matches: evidence,
            });
        }
    }
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.customer.id.cmp(&b.customer.id))
    });
    out.truncate(max);
    Ok((customer, out))
}
