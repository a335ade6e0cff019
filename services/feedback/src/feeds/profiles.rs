//! Following the profiles feed: a customer merge re-links invitations, responses, tickets and
//! reviews to the surviving customer, remembering each row it moved under the merge id; an
//! unmerge moves exactly those back; an erasure removes the customer id and every free text
//! (answers, ticket subjects, descriptions, notes, review texts) but keeps scores and ratings,
//! so metrics do not change. Effects are applied in the consumer's transaction, with its
//! cursor, and each is idempotent on its own ids (`store::customers`), so a redelivered event
//! applies once.

use std::sync::Arc;

use custops_common::client::ServiceChannel;
use custops_common::consumer::{Consumer, ConsumerOptions, EventHandler};
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::Event;
use custops_contracts::custops::profiles::v1::{CustomerErased, CustomerMerged, CustomerUnmerged};
use prost::{Message, Name};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::domain::Clock;
use crate::store::customers::{self, Merge};

/// The handler of profiles events.
#[derive(Debug, Clone)]
pub struct ProfilesFeed {
    /// The service clock: the time of an event that carries none.
    pub clock: Arc<dyn Clock>,
}

#[tonic::async_trait]
impl EventHandler for ProfilesFeed {
    async fn handle(&self, tx: &mut PgConnection, event: &Event) -> anyhow::Result<()> {
        let payload = event
            .payload
            .as_ref()
            .map(|p| p.value.as_slice())
            .unwrap_or_default();
        let at = event
            .occur_time
            .as_ref()
            .and_then(crate::wire::from_ts)
            .unwrap_or_else(|| self.clock.now());
        if event.event_type == CustomerMerged::full_name() {
            let m = CustomerMerged::decode(payload)?;
            let merge = Merge {
                merge_id: m.merge_id,
                source: m.source_customer_id,
                target: m.target_customer_id,
            };
            if merge.merge_id.is_empty()
                || merge.source.is_empty()
                || merge.target.is_empty()
                || merge.source == merge.target
            {
                tracing::warn!(merge_id = %merge.merge_id, "a CustomerMerged without its ids: ignored");
                return Ok(());
            }
            if !customers::merge(tx, &merge, at).await? {
                tracing::debug!(merge_id = %merge.merge_id, "merge applied before");
            }
            Ok(())
        } else if event.event_type == CustomerUnmerged::full_name() {
            let u = CustomerUnmerged::decode(payload)?;
            let unmerge = Merge {
                merge_id: u.merge_id,
                source: u.source_customer_id,
                target: u.target_customer_id,
            };
            if unmerge.merge_id.is_empty() {
                tracing::warn!("a CustomerUnmerged without its merge id: ignored");
                return Ok(());
            }
            if !customers::unmerge(tx, &unmerge, at).await? {
                tracing::debug!(merge_id = %unmerge.merge_id, "unmerge applied before");
            }
            Ok(())
        } else if event.event_type == CustomerErased::full_name() {
            let erased = CustomerErased::decode(payload)?;
            for id in std::iter::once(&erased.customer_id).chain(&erased.merged_customer_ids) {
                customers::erase(tx, id, at).await?;
            }
            Ok(())
        } else {
            Ok(())
        }
    }

    /// Profiles pruned events feedback had not applied. Merges and erasures are not derivable
    /// from the events still retained: it follows on from the oldest one and says, at error
    /// level, what may be wrong (ARCHITECTURE.md, "Feed retention").
    async fn resync(&self, _tx: &mut PgConnection, oldest_retained: i64) -> anyhow::Result<()> {
        tracing::error!(
            feed = "profiles",
            oldest_retained,
            "profiles events were pruned before feedback applied them: merges and unmerges \
             among them were not applied (invitations, responses, tickets and reviews not \
             re-linked) nor erasures (customer ids and free texts kept); reconcile with \
             profiles (ListMerges, erasures) by hand",
        );
        Ok(())
    }
}

/// Starts following profiles over `channel`.
pub fn follow(
    pool: PgPool,
    channel: ServiceChannel,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let mut options = ConsumerOptions::new("profiles");
    options.consumer = ServiceKind::Feedback.name().to_owned();
    options.event_types = vec![
        CustomerMerged::full_name(),
        CustomerUnmerged::full_name(),
        CustomerErased::full_name(),
    ];
    // Marked as feedback's work, so its spans carry feedback's service.name in `custops dev`.
    let consumer = Consumer::new(pool, channel, ProfilesFeed { clock }, options);
    tokio::spawn(custops_common::telemetry::in_service(
        ServiceKind::Feedback,
        consumer.run(shutdown),
    ));
}
