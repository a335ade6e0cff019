//! Following the profiles change feed: `CustomerMerged` merges the two customers' memberships
//! (once per merge id, in the consumer's transaction, which also moves its cursor).
//! `CustomerErased` and `CustomerUpdated` (birth dates for the birthday rule) are not applied
//! yet; the consumer still moves past them.

use std::sync::Arc;

use custops_common::client::ClientBuilder;
use custops_common::config::ServiceSettings;
use custops_common::consumer::{Consumer, ConsumerOptions, EventHandler};
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::Event;
use custops_contracts::custops::profiles::v1::CustomerMerged;
use prost::{Message, Name};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::convert::parse_uuid;
use super::events;
use crate::domain::Clock;
use crate::store::merges::{self, CustomerMerge};

/// Applies profiles events to loyalty.
#[derive(Debug, Clone)]
pub struct ProfilesFeed {
    clock: Arc<dyn Clock>,
}

impl ProfilesFeed {
    /// A handler using `clock` for the time of its entries.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock }
    }
}

#[tonic::async_trait]
impl EventHandler for ProfilesFeed {
    async fn handle(&self, tx: &mut PgConnection, event: &Event) -> anyhow::Result<()> {
        if event.event_type != CustomerMerged::full_name() {
            return Ok(());
        }
        let payload = event
            .payload
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("CustomerMerged {} has no payload", event.event_id))?;
        let merged = CustomerMerged::decode(payload.value.as_slice())?;
        let merge = CustomerMerge {
            merge_id: merged.merge_id,
            source_customer_id: parse_uuid(&merged.source_customer_id)
                .map_err(|e| anyhow::anyhow!("source_customer_id: {e}"))?,
            target_customer_id: parse_uuid(&merged.target_customer_id)
                .map_err(|e| anyhow::anyhow!("target_customer_id: {e}"))?,
        };
        let produced = merges::apply(tx, &merge, self.clock.now()).await?;
        events::append(tx, &produced).await?;
        Ok(())
    }
}

/// Starts following profiles when its URL is configured (`CUSTOPS_PROFILES_URL`).
pub fn spawn(
    settings: &ServiceSettings,
    pool: PgPool,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if !settings.clients.peers.contains_key(&ServiceKind::Profiles) {
        tracing::info!("CUSTOPS_PROFILES_URL not set: not following the profiles feed");
        return Ok(());
    }
    let channel = ClientBuilder::for_peer(
        &settings.clients,
        ServiceKind::Profiles,
        &["profiles.events.read"],
    )?
    .build()?;
    let mut options = ConsumerOptions::new("profiles");
    options.event_types = vec![CustomerMerged::full_name()];
    Consumer::new(pool, channel, ProfilesFeed::new(clock), options).spawn(shutdown);
    Ok(())
}
