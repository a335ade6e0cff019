//! Consent use cases: decisions and channel preferences (the newest decision wins, whatever
//! order they arrive in; every decision audited), and the audit trail.

use chrono::{DateTime, Utc};
use custops_common::outbox;
use uuid::Uuid;

use super::{Context, ensure_editable};
use crate::domain::{
    ChannelPreferences, ConsentChange, ConsentDecision, ConsentOutcome, Customer, consent_outcome,
    consent_status,
};
use crate::error::{ProfilesError, Result};
use crate::events;
use crate::store::consents::{self, ConsentCursor};
use crate::store::{
    Page, RequestKey, claim_request, load_for_update, pii_attributes, resolve, write_traits,
};

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

/// Applies consent decisions and preferences to the customer `cmd.customer_id` resolves to.
/// Answers the customer and the audit entries recorded.
#[tracing::instrument(skip_all, fields(customer_id = %cmd.customer_id))]
pub async fn update(ctx: &Context, cmd: ConsentUpdate) -> Result<(Customer, Vec<ConsentChange>)> {
    let mut tx = ctx.pool.begin().await?;
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
    let now = ctx.now();
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
                    consents::record_change(
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
                let change = consents::apply(
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
    customer.touch(now);
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

/// A page of the consent audit trail, newest first: of one customer (the one `customer_id`
/// resolves to, with the customers merged into it) or of all.
#[tracing::instrument(skip_all)]
pub async fn list_changes(
    ctx: &Context,
    customer_id: Option<Uuid>,
    channels: &[i16],
    range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    after: Option<ConsentCursor>,
    limit: usize,
) -> Result<Page<ConsentChange, ConsentCursor>> {
    let mut conn = ctx.pool.acquire().await?;
    let customers: Option<Vec<Uuid>> = match customer_id {
        Some(id) => {
            let (customer, _) = resolve(&mut conn, id, false).await?;
            Some(crate::store::customers::merged_family(&mut conn, customer.id).await?)
        }
        None => None,
    };
    consents::list(&mut conn, customers, channels, range, after, limit).await
}
