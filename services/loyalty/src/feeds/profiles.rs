//! Following the profiles change feed, in the consumer's transaction (which also moves its
//! cursor): `CustomerMerged` merges the two customers' memberships (once per merge id);
//! `CustomerUnmerged` undoes exactly what that merge did (once per merge id);
//! `CustomerCreated` / `CustomerUpdated` keep the birth month for the birthday bonus;
//! `CustomerErased` closes and anonymises the customer's memberships.

use std::sync::Arc;

use custops_common::client::ClientBuilder;
use custops_common::config::ServiceSettings;
use custops_common::consumer::{Consumer, ConsumerOptions, EventHandler};
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::Event;
use custops_contracts::custops::profiles::v1::{
    CustomerCreated, CustomerErased, CustomerMerged, CustomerTraits, CustomerUnmerged,
    CustomerUpdated,
};
use prost::{Message, Name};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::domain::Clock;
use crate::wire::parse_uuid;
use crate::workflow::customers;
use crate::workflow::merges::{self, CustomerMerge, CustomerUnmerge};

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
        let payload = || {
            event
                .payload
                .as_ref()
                .map(|p| p.value.as_slice())
                .ok_or_else(|| anyhow::anyhow!("event {} has no payload", event.event_id))
        };
        if event.event_type == CustomerCreated::full_name() {
            let created = CustomerCreated::decode(payload()?)?;
            return remember_birth_month(tx, created.traits).await;
        }
        if event.event_type == CustomerUpdated::full_name() {
            let updated = CustomerUpdated::decode(payload()?)?;
            return remember_birth_month(tx, updated.traits).await;
        }
        if event.event_type == CustomerErased::full_name() {
            let erased = CustomerErased::decode(payload()?)?;
            let mut ids = vec![erased.customer_id];
            ids.extend(erased.merged_customer_ids);
            let ids = ids
                .iter()
                .map(|id| parse_uuid(id).map_err(|e| anyhow::anyhow!("customer id: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            customers::customer_erased(tx, &ids, self.clock.now()).await?;
            return Ok(());
        }
        if event.event_type == CustomerUnmerged::full_name() {
            let unmerged = CustomerUnmerged::decode(payload()?)?;
            let unmerge = CustomerUnmerge {
                merge_id: unmerged.merge_id,
                source_customer_id: parse_uuid(&unmerged.source_customer_id)
                    .map_err(|e| anyhow::anyhow!("source_customer_id: {e}"))?,
                target_customer_id: parse_uuid(&unmerged.target_customer_id)
                    .map_err(|e| anyhow::anyhow!("target_customer_id: {e}"))?,
            };
            // The restored customer exists again: its birth month counts again.
            remember_birth_month(tx, unmerged.source_traits).await?;
            merges::customer_unmerged(tx, &unmerge, self.clock.now()).await?;
            return Ok(());
        }
        if event.event_type != CustomerMerged::full_name() {
            return Ok(());
        }
        let merged = CustomerMerged::decode(payload()?)?;
        let merge = CustomerMerge {
            merge_id: merged.merge_id,
            source_customer_id: parse_uuid(&merged.source_customer_id)
                .map_err(|e| anyhow::anyhow!("source_customer_id: {e}"))?,
            target_customer_id: parse_uuid(&merged.target_customer_id)
                .map_err(|e| anyhow::anyhow!("target_customer_id: {e}"))?,
        };
        merges::customer_merged(tx, &merge, self.clock.now()).await?;
        Ok(())
    }

    /// Profiles pruned events loyalty had not applied. What loyalty keeps from the feed is
    /// not derivable from the events still retained: it follows on from the oldest one and
    /// says, at error level, what may be wrong (ARCHITECTURE.md, "Feed retention").
    async fn resync(&self, _tx: &mut PgConnection, oldest_retained: i64) -> anyhow::Result<()> {
        tracing::error!(
            feed = "profiles",
            oldest_retained,
            "profiles events were pruned before loyalty applied them: merges, unmerges and \
             erasures among them were not applied (memberships of merged customers not \
             combined, erased customers' memberships not closed and anonymised) and birth \
             months may be stale; reconcile with profiles (ListMerges, erasures) by hand",
        );
        Ok(())
    }
}

async fn remember_birth_month(
    tx: &mut PgConnection,
    traits: Option<CustomerTraits>,
) -> anyhow::Result<()> {
    let Some(traits) = traits else {
        return Ok(());
    };
    let customer_id =
        parse_uuid(&traits.customer_id).map_err(|e| anyhow::anyhow!("customer_id: {e}"))?;
    let month = traits
        .demographics
        .and_then(|d| d.birth_date)
        .and_then(|d| u32::try_from(d.month).ok());
    customers::birth_month(tx, customer_id, month).await?;
    Ok(())
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
    options.consumer = ServiceKind::Loyalty.name().to_owned();
    options.event_types = vec![
        CustomerCreated::full_name(),
        CustomerUpdated::full_name(),
        CustomerMerged::full_name(),
        CustomerUnmerged::full_name(),
        CustomerErased::full_name(),
    ];
    Consumer::new(pool, channel, ProfilesFeed::new(clock), options).spawn(shutdown);
    Ok(())
}
