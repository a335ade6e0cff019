//! Consent use cases: decisions and channel preferences (the newest decision wins, whatever
//! order they arrive in; every decision audited), and the audit trail.

use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Changed, Context, RequestKey, ensure_editable, idempotent};
use crate::domain::{
    ChannelPreferences, ConsentChange, ConsentDecision, ConsentOutcome, Customer, consent_outcome,
    consent_status,
};
use crate::error::{ProfilesError, Result};
use crate::events;
use crate::store::consents;
pub use crate::store::consents::{ConsentCursor, change_cursor};
use crate::store::{load_for_update, pii_attributes, resolve, write_traits};

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

/// The customer after an UpdateConsent and the audit entries it recorded.
pub type ConsentUpdated = (Customer, Vec<ConsentChange>);

/// Applies consent decisions and preferences to the customer `cmd.customer_id` resolves to.
/// Answers `respond(customer, audit entries recorded)`, once per request key: a replay
/// answers the first call's bytes.
#[tracing::instrument(skip_all, fields(customer_id = %cmd.customer_id))]
pub async fn update<R: Message + Default>(
    ctx: &Context,
    cmd: ConsentUpdate,
    respond: impl FnOnce(&ConsentUpdated) -> R + Send + 'static,
) -> Result<R> {
    let now = ctx.now();
    let key = cmd.request.clone();
    idempotent(
        ctx,
        key.as_ref(),
        now,
        move |conn| Box::pin(update_in(conn, cmd, now)),
        respond,
    )
    .await
}

async fn update_in(
    tx: &mut PgConnection,
    cmd: ConsentUpdate,
    now: DateTime<Utc>,
) -> Result<Changed<ConsentUpdated>> {
    let (mut customer, _) = resolve(tx, cmd.customer_id, true).await?;
    ensure_editable(&customer, true)?;
    if !customer.etag_matches(&cmd.etag) {
        return Err(ProfilesError::StaleEtag);
    }
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
                        &mut *tx,
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
                    &mut *tx,
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
        return Ok(((customer, changes), Vec::new()));
    }
    customer.touch(now);
    write_traits(&mut *tx, &customer).await?;
    let customer = load_for_update(tx, customer.id).await?;
    let mut events: Vec<_> = changes
        .iter()
        .filter(|c| !c.superseded)
        .map(events::consent_changed)
        .collect();
    if preferences_changed {
        let pii = pii_attributes(tx).await?;
        events.push(events::customer_updated(
            &customer,
            &pii,
            vec!["channel_preferences".to_owned()],
        ));
    }
    Ok(((customer, changes), events))
}

/// Up to `limit` entries of the consent audit trail after the cursor `after`, newest first:
/// of one customer (the one `customer_id` resolves to, with the customers merged into it) or
/// of all.
#[tracing::instrument(skip_all)]
pub async fn list_changes(
    ctx: &Context,
    customer_id: Option<Uuid>,
    channels: &[i16],
    range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    after: Option<ConsentCursor>,
    limit: i64,
) -> Result<Vec<ConsentChange>> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let customers: Option<Vec<Uuid>> = match customer_id {
        Some(id) => {
            let (customer, _) = resolve(&mut conn, id, false).await?;
            Some(crate::store::customers::merged_family(&mut conn, customer.id).await?)
        }
        None => None,
    };
    consents::list(&mut conn, customers, channels, range, after, limit).await
}
