//! Following the profiles, loyalty and feedback feeds into the facts projection. Each feed has
//! its handler (`profiles`, `loyalty`, `feedback`), applied in the consumer's transaction
//! together with its cursor (`custops_common::consumer`), so an event's facts, the derived
//! values and the memberships they imply commit together or not at all.

pub mod feedback;
pub mod loyalty;
pub mod profiles;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use custops_common::client::{ClientBuilder, ServiceChannel};
use custops_common::clock::Clock;
use custops_common::config::ServiceSettings;
use custops_common::consumer::{Consumer, ConsumerOptions};
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::Event;
use custops_contracts::custops::segmentation::v1::ChangeReason;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::derived;
use crate::membership::{self, Cause};
use crate::store::facts::{self, Feed, Position};

/// Follows every peer feed whose URL is configured until `shutdown`.
pub fn start(
    settings: &ServiceSettings,
    pool: PgPool,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let feeds: [(ServiceKind, &str); 3] = [
        (ServiceKind::Profiles, "profiles.events.read"),
        (ServiceKind::Loyalty, "loyalty.events.read"),
        (ServiceKind::Feedback, "feedback.events.read"),
    ];
    for (kind, scope) in feeds {
        if !settings.clients.peers.contains_key(&kind) {
            tracing::info!(
                feed = kind.name(),
                "peer URL not set: not following its feed"
            );
            continue;
        }
        let channel = ClientBuilder::for_peer(&settings.clients, kind, &[scope])
            .and_then(ClientBuilder::build);
        match channel {
            Ok(channel) => {
                let (pool, clock, shutdown) = (pool.clone(), clock.clone(), shutdown.clone());
                match kind {
                    ServiceKind::Profiles => follow_profiles(pool, channel, clock, shutdown),
                    ServiceKind::Loyalty => follow_loyalty(pool, channel, clock, shutdown),
                    _ => follow_feedback(pool, channel, clock, shutdown),
                }
            }
            Err(error) => tracing::warn!(%error, feed = kind.name(), "cannot follow the feed"),
        }
    }
}

/// Follows the profiles feed over `channel`.
pub fn follow_profiles(
    pool: PgPool,
    channel: ServiceChannel,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let handler = profiles::ProfilesFeed::new(clock);
    Consumer::new(pool, channel, handler, ConsumerOptions::new("profiles")).spawn(shutdown);
}

/// Follows the loyalty feed over `channel`.
pub fn follow_loyalty(
    pool: PgPool,
    channel: ServiceChannel,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let handler = loyalty::LoyaltyFeed::new(clock);
    Consumer::new(pool, channel, handler, ConsumerOptions::new("loyalty")).spawn(shutdown);
}

/// Follows the feedback feed over `channel`.
pub fn follow_feedback(
    pool: PgPool,
    channel: ServiceChannel,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let handler = feedback::FeedbackFeed::new(clock);
    Consumer::new(pool, channel, handler, ConsumerOptions::new("feedback")).spawn(shutdown);
}

/// The payload bytes of `event`.
fn payload(event: &Event) -> anyhow::Result<&[u8]> {
    event
        .payload
        .as_ref()
        .map(|p| p.value.as_slice())
        .ok_or_else(|| anyhow::anyhow!("event {} has no payload", event.event_id))
}

/// The position of `event` on `feed`.
fn position(feed: Feed, event: &Event) -> Position {
    Position {
        feed,
        sequence: event.sequence,
        occur_time: derived::from_timestamp(event.occur_time.as_ref()),
    }
}

/// Why memberships change after `event`.
fn cause(event: &Event, reason: ChangeReason, now: DateTime<Utc>) -> Cause {
    Cause {
        reason,
        event_id: event.event_id.clone(),
        now,
    }
}

/// After facts of `customer_id` changed: record the event's position, refresh RFM and
/// lifecycle, re-evaluate memberships. Nothing for a customer without a facts row.
async fn settle(
    tx: &mut PgConnection,
    customer_id: &str,
    position: Position,
    cause: &Cause,
) -> anyhow::Result<()> {
    if !facts::exists(&mut *tx, customer_id).await? {
        return Ok(());
    }
    facts::record_position(&mut *tx, customer_id, position, cause.now).await?;
    derived::refresh_customer(&mut *tx, customer_id, cause).await?;
    membership::reevaluate_customer(tx, customer_id, cause).await
}
