//! Following the profiles feed: a customer merge re-links invitations, responses, tickets and
//! reviews to the surviving customer; an erasure removes the customer id and every free text
//! (answers, ticket subjects, descriptions, notes, review texts) but keeps scores and ratings,
//! so metrics do not change. Effects are applied in the consumer's transaction, with its
//! cursor, so each event applies exactly once (`custops_common::consumer`).

use custops_common::client::{ClientBuilder, ServiceChannel};
use custops_common::config::ServiceSettings;
use custops_common::consumer::{Consumer, ConsumerOptions, EventHandler};
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::Event;
use custops_contracts::custops::profiles::v1::{CustomerErased, CustomerMerged};
use prost::{Message, Name};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// The handler of profiles events.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProfilesFeed;

#[tonic::async_trait]
impl EventHandler for ProfilesFeed {
    async fn handle(&self, tx: &mut PgConnection, event: &Event) -> anyhow::Result<()> {
        let payload = event
            .payload
            .as_ref()
            .map(|p| p.value.as_slice())
            .unwrap_or_default();
        if event.event_type == CustomerMerged::full_name() {
            let merged = CustomerMerged::decode(payload)?;
            merge(tx, &merged.source_customer_id, &merged.target_customer_id).await
        } else if event.event_type == CustomerErased::full_name() {
            let erased = CustomerErased::decode(payload)?;
            let at = event
                .occur_time
                .as_ref()
                .and_then(crate::api::convert::from_ts)
                .unwrap_or_else(chrono::Utc::now);
            for id in std::iter::once(&erased.customer_id).chain(&erased.merged_customer_ids) {
                erase(tx, id, at).await?;
            }
            Ok(())
        } else {
            Ok(())
        }
    }
}

/// Re-links everything of `source` to `target`. An invitation the target already has for the
/// same survey and touchpoint stays with the source id (one invitation per customer).
pub async fn merge(tx: &mut PgConnection, source: &str, target: &str) -> anyhow::Result<()> {
    if source.is_empty() || target.is_empty() || source == target {
        return Ok(());
    }
    sqlx::query(
        "UPDATE invitations i SET customer_id = $2 WHERE customer_id = $1 AND NOT EXISTS ( \
           SELECT 1 FROM invitations j WHERE j.survey_id = i.survey_id AND j.customer_id = $2 \
             AND j.touchpoint_kind = i.touchpoint_kind AND j.touchpoint_id = i.touchpoint_id)",
    )
    .bind(source)
    .bind(target)
    .execute(&mut *tx)
    .await?;
    for sql in [
        "UPDATE responses SET customer_id = $2 WHERE customer_id = $1",
        "UPDATE tickets SET customer_id = $2 WHERE customer_id = $1",
        "UPDATE reviews SET customer_id = $2 WHERE customer_id = $1",
    ] {
        sqlx::query(sql)
            .bind(source)
            .bind(target)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Removes the customer id and free text of `customer_id`, keeping scores and ratings.
pub async fn erase(
    tx: &mut PgConnection,
    customer_id: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    if customer_id.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE ticket_history SET note = '' WHERE ticket_id IN \
           (SELECT ticket_id FROM tickets WHERE customer_id = $1)",
    )
    .bind(customer_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE tickets SET customer_id = '', subject = '', description = '', \
           resolution_note = '', erase_time = $2 WHERE customer_id = $1",
    )
    .bind(customer_id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    // Free-text answers keep their question, lose their text.
    sqlx::query(
        "UPDATE responses SET customer_id = '', erase_time = $2, answers = COALESCE(( \
           SELECT jsonb_agg(CASE WHEN a->'value' ? 'text' \
                                 THEN jsonb_set(a, '{value,text}', '\"\"') ELSE a END) \
           FROM jsonb_array_elements(answers) a), '[]'::jsonb) \
         WHERE customer_id = $1",
    )
    .bind(customer_id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE reviews SET customer_id = '', title = '', body = '', erase_time = $2 \
         WHERE customer_id = $1",
    )
    .bind(customer_id)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE invitations SET customer_id = '' WHERE customer_id = $1")
        .bind(customer_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Starts following profiles over `channel`.
pub fn follow(pool: PgPool, channel: ServiceChannel, shutdown: CancellationToken) {
    let mut options = ConsumerOptions::new("profiles");
    options.event_types = vec![CustomerMerged::full_name(), CustomerErased::full_name()];
    // Marked as feedback's work, so its spans carry feedback's service.name in `custops dev`.
    let consumer = Consumer::new(pool, channel, ProfilesFeed, options);
    tokio::spawn(custops_common::telemetry::in_service(
        ServiceKind::Feedback,
        consumer.run(shutdown),
    ));
}

/// Follows profiles when its URL is configured (`CUSTOPS_PROFILES_URL`).
pub fn start(settings: &ServiceSettings, pool: PgPool, shutdown: CancellationToken) {
    if !settings.clients.peers.contains_key(&ServiceKind::Profiles) {
        tracing::info!("CUSTOPS_PROFILES_URL not set: not following the profiles feed");
        return;
    }
    match ClientBuilder::for_peer(
        &settings.clients,
        ServiceKind::Profiles,
        &["profiles.events.read"],
    )
    .and_then(ClientBuilder::build)
    {
        Ok(channel) => follow(pool, channel, shutdown),
        Err(error) => tracing::warn!(%error, "cannot follow the profiles feed"),
    }
}
