//! Following the profiles, loyalty and feedback feeds into the facts projection. Each feed has
//! its handler (`profiles`, `loyalty`, `feedback`), applied in the consumer's transaction
//! together with its cursor (`custops_common::consumer`), so an event's facts, the derived
//! values and the memberships they imply commit together or not at all.
//!
//! A busy feed arrives in batches of up to 1,000 events, one transaction each. The events'
//! facts are applied in feed order: activities, most of a busy feed, a run at a time in a few
//! statements ([`Pending::add_activity`]), any other event on its own after the activities
//! before it are stored. The customers they touched are *settled* once
//! at the end of the batch ([`Pending`]): position, RFM and lifecycle, and the rule segments
//! their changed facts can affect, each step one statement (or a few) for all of them. So a
//! burst of one customer's events costs one settle, and the cost of a batch does not grow with
//! the customer base. Events that move or end customers settle what is pending first.

// Above the modules, which use it (a `macro_rules!` is visible only below it).
/// Implements `EventHandler` for a [`FactsFeed`]: an event alone is settled at once
/// ([`handle_one`]), a batch is folded ([`handle_batch`]).
macro_rules! facts_feed_handler {
    ($feed:ty) => {
        #[tonic::async_trait]
        impl custops_common::consumer::EventHandler for $feed {
            async fn handle(
                &self,
                tx: &mut sqlx::PgConnection,
                event: &custops_contracts::custops::common::v1::Event,
            ) -> anyhow::Result<()> {
                $crate::feeds::handle_one(self, tx, event).await
            }

            async fn handle_batch(
                &self,
                tx: &mut sqlx::PgConnection,
                events: &[custops_contracts::custops::common::v1::Event],
            ) -> Result<(), custops_common::consumer::BatchError> {
                $crate::feeds::handle_batch(self, tx, events).await
            }

            async fn resync(
                &self,
                tx: &mut sqlx::PgConnection,
                oldest_retained: i64,
            ) -> anyhow::Result<()> {
                $crate::feeds::resync(self, tx, oldest_retained).await
            }
        }
    };
}

pub mod feedback;
pub mod loyalty;
pub mod profiles;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use custops_common::client::{ClientBuilder, ServiceChannel};
use custops_common::clock::Clock;
use custops_common::config::ServiceSettings;
use custops_common::consumer::{BatchError, Consumer, ConsumerOptions, event_span};
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::Event;
use custops_contracts::custops::segmentation::v1::ChangeReason;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::store;
use crate::store::custom_events::{self, NewCustomEvent};
use crate::store::facts::{self, Feed, NewActivity, NewRefund, Position};
use crate::store::settings::EvaluationSettings;
use crate::workflow::membership::{self, Cause, Causes, Changed};
use crate::workflow::{computed, derived};

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
    Consumer::new(pool, channel, handler, consumer_options("profiles")).spawn(shutdown);
}

/// Follows the loyalty feed over `channel`.
pub fn follow_loyalty(
    pool: PgPool,
    channel: ServiceChannel,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let handler = loyalty::LoyaltyFeed::new(clock);
    Consumer::new(pool, channel, handler, consumer_options("loyalty")).spawn(shutdown);
}

/// Follows the feedback feed over `channel`.
pub fn follow_feedback(
    pool: PgPool,
    channel: ServiceChannel,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let handler = feedback::FeedbackFeed::new(clock);
    Consumer::new(pool, channel, handler, consumer_options("feedback")).spawn(shutdown);
}

/// How segmentation follows `feed`: registered with the producer as "segmentation", so its
/// retention keeps what segmentation has not applied.
fn consumer_options(feed: &str) -> ConsumerOptions {
    let mut options = ConsumerOptions::new(feed);
    options.consumer = ServiceKind::Segmentation.name().to_owned();
    options
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
        occur_time: crate::wire::from_timestamp(event.occur_time.as_ref()),
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

/// Settles one customer at once (position, derived values, memberships) with `cause`: for
/// merges and unmerges, which settle as they go. A customer without a facts row only loses
/// its computed trait values.
async fn settle_now(
    tx: &mut PgConnection,
    customer_id: &str,
    position: Position,
    cause: &Cause,
) -> anyhow::Result<()> {
    computed::refresh_customers(&mut *tx, &[customer_id.to_owned()], cause.now).await?;
    if !facts::exists(&mut *tx, customer_id).await? {
        return Ok(());
    }
    facts::record_position(&mut *tx, customer_id, position, cause.now).await?;
    derived::refresh_customer(&mut *tx, customer_id, cause).await?;
    membership::reevaluate_customer(tx, customer_id, cause).await
}

/// A feed whose events change the facts of customers, who are then settled (position,
/// derived values, memberships) once per batch rather than once per event.
#[tonic::async_trait]
pub trait FactsFeed: Send + Sync {
    /// The feed's name, as the consumer's cursor row names it.
    const FEED: &'static str;
    /// What the facts may miss when events of this feed were pruned before they were
    /// applied: said at error level by [`resync`].
    const LOST_ON_RESYNC: &'static str;

    /// Applies `event` to the facts, naming the customers it touched in `pending`. An event
    /// that moves facts between customers or ends them (merge, unmerge, deletion, erasure)
    /// settles `pending` first ([`Pending::settle`]), so it sees every earlier event settled.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &Event,
        pending: &mut Pending,
    ) -> anyhow::Result<()>;
}

/// `EventHandler::resync` of a facts feed: the producer pruned events segmentation had not
/// applied. The facts cannot be rebuilt from the events still retained, so the feed follows on
/// from the oldest one and says, at error level, which facts may be stale (the consumer counts
/// the resync in `custops.feed.consumer.resyncs`). What a full resync would still need is in
/// ARCHITECTURE.md, "Feed retention".
pub(crate) async fn resync<F: FactsFeed + ?Sized>(
    _feed: &F,
    _tx: &mut PgConnection,
    oldest_retained: i64,
) -> anyhow::Result<()> {
    tracing::error!(
        feed = F::FEED,
        oldest_retained,
        lost = F::LOST_ON_RESYNC,
        "events were pruned before segmentation applied them; facts may be stale until the \
         customers they are about change again",
    );
    Ok(())
}

/// `EventHandler::handle` of a facts feed: one event, settled at once.
pub(crate) async fn handle_one<F: FactsFeed + ?Sized>(
    feed: &F,
    tx: &mut PgConnection,
    event: &Event,
) -> anyhow::Result<()> {
    facts::lock_feeds(&mut *tx).await?;
    let mut pending = Pending::default();
    feed.apply(&mut *tx, event, &mut pending).await?;
    pending.settle(tx).await
}

/// `EventHandler::handle_batch` of a facts feed: each event applied to the facts in feed order
/// (so each customer's events keep their order), then every customer touched settled once.
pub(crate) async fn handle_batch<F: FactsFeed + ?Sized>(
    feed: &F,
    tx: &mut PgConnection,
    events: &[Event],
) -> Result<(), BatchError> {
    let last = events.len().saturating_sub(1);
    facts::lock_feeds(&mut *tx)
        .await
        .map_err(|source| BatchError {
            index: 0,
            source: source.into(),
        })?;
    let mut pending = Pending::default();
    for (index, event) in events.iter().enumerate() {
        feed.apply(&mut *tx, event, &mut pending)
            .instrument(event_span(event))
            .await
            .map_err(|source| BatchError { index, source })?;
    }
    pending.settle(tx).await.map_err(|source| BatchError {
        index: last,
        source: source.context("settling the customers of the batch"),
    })
}

/// The customers whose facts changed in the events applied so far and are not settled yet:
/// for each, the position and cause of its latest event and what kinds of facts changed.
#[derive(Debug, Default)]
pub struct Pending {
    customers: BTreeMap<String, Touch>,
    /// Activities noted and not stored yet: a run of them is stored in a few statements
    /// ([`Pending::store_activities`]) before anything else applies or settles.
    activities: Vec<NewActivity>,
    /// Refunds noted and not stored yet, stored with the activities of their run.
    refunds: Vec<NewRefund>,
    /// When the first of `activities` was noted: where new facts rows start.
    activities_since: Option<DateTime<Utc>>,
    /// Custom events noted and not stored yet, stored with the activities of their run.
    custom_events: Vec<NewCustomEvent>,
    /// The evaluation settings, read once per batch when an event needs them.
    settings: Option<EvaluationSettings>,
}

#[derive(Debug)]
struct Touch {
    position: Position,
    event_id: String,
    now: DateTime<Utc>,
    changed: Changed,
}

impl Pending {
    /// The evaluation settings, read the first time a batch asks (one read per batch, in its
    /// transaction).
    pub async fn settings(&mut self, tx: &mut PgConnection) -> anyhow::Result<&EvaluationSettings> {
        if self.settings.is_none() {
            self.settings = Some(store::settings::get(&mut *tx).await?);
        }
        self.settings
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("settings just read are missing"))
    }

    /// Notes that `event` (at `position`, applied at `now`) changed `changed` facts of
    /// `customer_id`.
    pub fn touch(
        &mut self,
        customer_id: &str,
        position: Position,
        event: &Event,
        now: DateTime<Utc>,
        changed: Changed,
    ) {
        let touch = Touch {
            position,
            event_id: event.event_id.clone(),
            now,
            changed,
        };
        match self.customers.get_mut(customer_id) {
            Some(earlier) => {
                let changed = earlier.changed.and(changed);
                *earlier = Touch { changed, ..touch };
            }
            None => {
                self.customers.insert(customer_id.to_owned(), touch);
            }
        }
    }

    /// Notes `activity` (of `event`, at `position`, applied at `now`), to be stored with the
    /// rest of its run, and touches its customer.
    pub fn add_activity(
        &mut self,
        activity: NewActivity,
        position: Position,
        event: &Event,
        now: DateTime<Utc>,
    ) {
        self.touch(
            &activity.customer_id,
            position,
            event,
            now,
            Changed::ACTIVITIES,
        );
        self.activities_since.get_or_insert(now);
        self.activities.push(activity);
    }

    /// Notes custom event `custom` (of `event`, at `position`, applied at `now`), to be stored
    /// with the activities of its run, and touches its customer (`Changed::EVENTS`).
    pub fn add_custom_event(
        &mut self,
        custom: NewCustomEvent,
        position: Position,
        event: &Event,
        now: DateTime<Utc>,
    ) {
        self.touch(&custom.customer_id, position, event, now, Changed::EVENTS);
        self.custom_events.push(custom);
    }

    /// Notes `refund` (of `event`, at `position`, applied at `now`), to be stored with the
    /// activities of its run, and touches its customer (its purchase aggregates change).
    pub fn add_refund(
        &mut self,
        refund: NewRefund,
        position: Position,
        event: &Event,
        now: DateTime<Utc>,
    ) {
        self.touch(
            &refund.customer_id,
            position,
            event,
            now,
            Changed::ACTIVITIES,
        );
        self.activities_since.get_or_insert(now);
        self.refunds.push(refund);
    }

    /// Stores the activities, refunds and custom events noted so far
    /// ([`facts::insert_activities`], [`custom_events::insert_many`]; the refunded amounts do
    /// not depend on the order of a run): an event of another kind calls
    /// this before it applies, so it sees every earlier event's effect, as if each had been
    /// applied alone.
    pub async fn store_activities(&mut self, tx: &mut PgConnection) -> anyhow::Result<()> {
        let activities = std::mem::take(&mut self.activities);
        let refunds = std::mem::take(&mut self.refunds);
        if let Some(since) = self.activities_since.take() {
            facts::insert_activities(&mut *tx, &activities, &refunds, since).await?;
        }
        let custom = std::mem::take(&mut self.custom_events);
        custom_events::insert_many(tx, &custom).await?;
        Ok(())
    }

    /// Settles every customer noted, in id order, and forgets them: the activities noted
    /// stored, the position of its latest event recorded, RFM and lifecycle refreshed, the
    /// affected rule segments re-evaluated, each in statements covering all of them. Customers
    /// without a facts row (erased, deleted, merged away since) are skipped.
    pub async fn settle(&mut self, tx: &mut PgConnection) -> anyhow::Result<()> {
        self.store_activities(&mut *tx).await?;
        let touched = std::mem::take(&mut self.customers);
        let Some(now) = touched.values().map(|t| t.now).max() else {
            return Ok(());
        };
        let ids: Vec<String> = touched.keys().cloned().collect();
        let known = facts::existing(&mut *tx, &ids).await?;
        if known.is_empty() {
            return Ok(());
        }
        let mut causes = Causes::new(ChangeReason::Event, now);
        let mut positions = Vec::with_capacity(known.len());
        let mut changed = Vec::with_capacity(known.len());
        for id in &known {
            let touch = &touched[id];
            causes.set_event(id, &touch.event_id);
            positions.push((id.clone(), touch.position));
            changed.push((id.clone(), touch.changed));
        }
        facts::record_positions(&mut *tx, &positions, now).await?;
        derived::refresh_customers(&mut *tx, &known, &causes).await?;
        // Computed traits of every customer whose custom events moved (merged-away ones
        // included: their values go with their facts).
        let with_events: Vec<String> = touched
            .iter()
            .filter(|(_, t)| t.changed.meets(Changed::EVENTS))
            .map(|(id, _)| id.clone())
            .collect();
        computed::refresh_customers(&mut *tx, &with_events, now).await?;
        membership::reevaluate_customers(tx, &changed, &causes).await
    }
}
