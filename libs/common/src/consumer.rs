//! Following another service's event feed with exactly-once effects.
//!
//! Delivery over the feed is at least once: after a reconnect the consumer resubscribes after
//! its stored cursor and may see events again. The effect is exactly once because the cursor
//! lives in the consumer's own schema (`feed_cursors`, one row per feed) and moves in the same
//! transaction as the handler's writes: an event is either applied *and* passed, or neither.
//! The cursor row is locked (`FOR UPDATE`) for the batch and events at or below it are
//! skipped, so even two replicas following the same feed apply each event once.
//!
//! Failures of any kind (connection, server, database, handler) roll the current batch back
//! and reconnect after an exponential backoff with jitter. A handler that keeps failing on one
//! event (a *poison* event) therefore stalls this feed, on purpose: skipping would break the
//! order of an aggregate's events and the exactly-once promise. Each retry is logged; after
//! [`ConsumerOptions::stuck_after_attempts`] the log says the feed is stuck, naming the event.
//! The way out is a fixed handler, or an operator moving the cursor past the event
//! (`UPDATE feed_cursors SET last_sequence = <sequence> WHERE feed = '<feed>'`).
//!
//! The consumer registers with the producer under [`ConsumerOptions::consumer`] and
//! acknowledges its cursor every [`ConsumerOptions::ack_interval`] (best effort), so the
//! producer's retention keeps what it has not applied. When the feed answers that its position
//! has been pruned (FAILED_PRECONDITION `FEED_POSITION_EXPIRED`: a consumer registered late,
//! a cursor restored from an old backup), the consumer calls [`EventHandler::resync`] and
//! moves its cursor to just before the oldest retained event in the same transaction; a
//! handler that cannot resync keeps the feed stalled, loudly.
//!
//! Responses that are already waiting when a batch has been applied are taken together (up to
//! [`ConsumerOptions::max_events_per_transaction`]), so a busy feed is applied in large
//! transactions and an idle one event at a time, without waiting for more. A handler may fold a
//! batch ([`EventHandler::handle_batch`]: say, settle each touched customer once).
//!
//! Each event is handled in a span whose parent is the event's `traceparent`, so the
//! consumer's work appears in the trace of the request that caused the event.

use std::time::Duration;

use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use custops_contracts::custops::common::v1::{
    AcknowledgeEventsRequest, Event, GetFeedPositionRequest, SubscribeRequest, SubscribeResponse,
};
use sqlx::{PgConnection, PgPool};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic_types::StatusExt as _;

use futures_util::FutureExt as _;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use opentelemetry::KeyValue;

use crate::client::{RetryPolicy, ServiceChannel};
use crate::error::DisplayChain;
use crate::feed::{FEED_POSITION_EXPIRED, OLDEST_SEQUENCE};
use crate::metrics;
use crate::server::MAX_MESSAGE_BYTES;
use crate::service::ServiceKind;
use crate::trace_context;

/// What a consumer does with each event of a feed.
#[tonic::async_trait]
pub trait EventHandler: Send + Sync {
    /// Applies `event` inside `tx`, the transaction that also advances the cursor. Write only
    /// through `tx`: anything done elsewhere is not undone when the batch rolls back. An error
    /// rolls the whole batch back; it is retried after a backoff.
    async fn handle(&self, tx: &mut PgConnection, event: &Event) -> anyhow::Result<()>;

    /// Applies the events of one batch, in feed order, inside `tx` (the transaction that then
    /// advances the cursor past all of them). The default handles each on its own, in its
    /// [`event_span`]. A handler overrides it to fold work over the batch; it must leave the
    /// same state as handling the events one by one would, and name the event an error is
    /// about ([`BatchError`]).
    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        events: &[Event],
    ) -> Result<(), BatchError> {
        for (index, event) in events.iter().enumerate() {
            self.handle(tx, event)
                .instrument(event_span(event))
                .await
                .map_err(|source| BatchError { index, source })?;
        }
        Ok(())
    }

    /// Called when the events after this consumer's cursor have been pruned from the feed
    /// (retention), so they can never be applied: make the state kept from the feed right
    /// without them, inside `tx`, the transaction that then moves the cursor to just before
    /// `oldest_retained`, the oldest event the feed still has (applied next). Say in the log
    /// what could not be recovered. An error rolls back and is retried after a backoff.
    ///
    /// The default refuses: a consumer that has not decided how to resync stalls (and says so
    /// at error level) rather than skip events silently.
    async fn resync(&self, tx: &mut PgConnection, oldest_retained: i64) -> anyhow::Result<()> {
        let _ = (tx, oldest_retained);
        anyhow::bail!("this consumer does not know how to resync after events were pruned")
    }
}

/// Why a batch failed: the error and the index (in the batch) of the event it is about; for
/// work done for the whole batch at its end, the last event.
#[derive(Debug)]
pub struct BatchError {
    pub index: usize,
    pub source: anyhow::Error,
}

/// The span one event is handled in: its parent is the event's `traceparent`, so the handler's
/// work joins the trace of the request that caused the event. (Without an OpenTelemetry layer,
/// telemetry off, there is no parent to set: ignored.)
pub fn event_span(event: &Event) -> tracing::Span {
    let span = tracing::info_span!(
        "feed_event",
        sequence = event.sequence,
        event_type = %event.event_type,
    );
    let _ = span.set_parent(trace_context::context_from_traceparent(&event.traceparent));
    span
}

/// How a consumer follows its feed.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Name of the feed, the key of the cursor row, e.g. `"profiles"`.
    pub feed: String,
    /// The name this consumer registers under with the producer, shared by its replicas: the
    /// consuming service, e.g. `"segmentation"`. Registered consumers hold back retention
    /// until they have acknowledged an event. Empty: an unregistered reader.
    pub consumer: String,
    /// How often, at most, the cursor is acknowledged to the producer (after a response has
    /// been applied, best effort).
    pub ack_interval: Duration,
    /// Only these event types (fully qualified names); empty for all. The cursor still moves
    /// past the others.
    pub event_types: Vec<String>,
    /// Events per response asked of the server, 1–1000; 0 for the server's default.
    pub max_batch_size: i32,
    /// After a batch, responses already waiting are applied together in one transaction, up
    /// to about this many events (a response is never split); 1 applies each response alone.
    pub max_events_per_transaction: usize,
    /// First delay before reconnecting after a failure; doubled on each consecutive failure.
    pub initial_backoff: Duration,
    /// Largest delay between reconnection attempts.
    pub max_backoff: Duration,
    /// With no message at all (not even a heartbeat) for this long, the connection is taken
    /// for dead and replaced. Keep it well above the server's heartbeat interval.
    pub idle_timeout: Duration,
    /// After this many consecutive failures on the same batch the feed is reported stuck.
    pub stuck_after_attempts: u32,
}

impl ConsumerOptions {
    /// Defaults for following the feed named `feed`: every event type, the server's batch
    /// size, waiting responses joined up to 1,000 events, backoff from 100 ms to 30 s, a dead connection noticed after 60 s.
    pub fn new(feed: impl Into<String>) -> Self {
        Self {
            feed: feed.into(),
            consumer: String::new(),
            ack_interval: DEFAULT_ACK_INTERVAL,
            event_types: Vec::new(),
            max_batch_size: 0,
            max_events_per_transaction: 1000,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            stuck_after_attempts: 10,
        }
    }
}

/// How often a consumer acknowledges its cursor by default: retention is measured in hours,
/// and an acknowledgement is one small write at the producer.
pub const DEFAULT_ACK_INTERVAL: Duration = Duration::from_secs(5);

/// Failed sessions before the feed first answers that are taken for its producer starting
/// (about 3 s of backoff) before each is warned of.
const STARTUP_PATIENCE: u32 = 5;

/// Follows one feed, applying its events with a handler, until cancelled.
pub struct Consumer<H> {
    pool: PgPool,
    channel: ServiceChannel,
    handler: H,
    options: ConsumerOptions,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Why one session with the feed ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("the cursor could not be read or written")]
    Cursor(#[source] sqlx::Error),
    #[error("the feed call failed")]
    Feed(#[source] tonic::Status),
    #[error("the feed ended the stream")]
    Ended,
    #[error("the events after the cursor were pruned (the oldest retained is {oldest})")]
    Expired { oldest: i64 },
    #[error("no message, not even a heartbeat, for {0:?}")]
    Idle(Duration),
    #[error("the feed sent events out of order (sequence {sequence} after cursor {cursor})")]
    OutOfOrder { sequence: i64, cursor: i64 },
    #[error("the handler failed on event {event_id} (sequence {sequence})")]
    Handler {
        sequence: i64,
        event_id: String,
        #[source]
        source: anyhow::Error,
    },
}

impl<H: EventHandler> Consumer<H> {
    /// A consumer writing its cursor and effects through `pool` (the consumer's own schema)
    /// and reading the feed over `channel` (a channel to the producing service).
    pub fn new(
        pool: PgPool,
        channel: ServiceChannel,
        handler: H,
        options: ConsumerOptions,
    ) -> Self {
        Self {
            pool,
            channel,
            handler,
            options,
        }
    }

    /// Follows the feed until `shutdown` is cancelled, reconnecting after every failure.
    /// Cancelling mid-batch rolls that batch back; it is applied again by the next run.
    pub async fn run(self, shutdown: CancellationToken) {
        let feed = self.options.feed.as_str();
        let reconnecting =
            RetryPolicy::forever(self.options.initial_backoff, self.options.max_backoff);
        let mut delays = reconnecting.delays();
        // The batch that failed last and how many times in a row, to report a stuck feed.
        let mut failing: Option<(i64, u32)> = None;
        // Until the feed first answers, a refused session is the producer still starting (a
        // suite starting together, pods in any order): said once, then quietly retried, and
        // warned of only if it goes on.
        let mut ever_progressed = false;
        let mut waiting_sessions = 0_u32;
        loop {
            let mut progressed = false;
            let ended = tokio::select! {
                () = shutdown.cancelled() => return,
                ended = self.session(&mut progressed) => ended,
            };
            if shutdown.is_cancelled() {
                // The producer stopping with this process ended the session: nothing to say.
                return;
            }
            if progressed {
                delays = reconnecting.delays();
                ever_progressed = true;
            }
            if let SessionError::Expired { oldest } = ended {
                match self.resync(oldest).await {
                    Ok(()) => {
                        // Follow on at once from the oldest retained event.
                        delays = reconnecting.delays();
                        failing = None;
                        continue;
                    }
                    Err(error) => {
                        let delay = delays.next().unwrap_or(self.options.max_backoff);
                        tracing::error!(
                            feed,
                            oldest_retained = oldest,
                            error = %DisplayChain(&*error),
                            ?delay,
                            "feed position expired and the resync failed; the feed is stalled \
                             until it succeeds",
                        );
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(delay) => {}
                        }
                        continue;
                    }
                }
            }
            let delay = delays.next().unwrap_or(self.options.max_backoff);
            match &ended {
                SessionError::Handler {
                    sequence, event_id, ..
                } => {
                    let attempts = match failing {
                        Some((at, attempts)) if at == *sequence => attempts + 1,
                        _ => 1,
                    };
                    failing = Some((*sequence, attempts));
                    if attempts >= self.options.stuck_after_attempts {
                        tracing::error!(
                            feed,
                            sequence,
                            event_id,
                            attempts,
                            error = %DisplayChain(&ended),
                            "feed is stuck: the handler keeps failing on this event",
                        );
                    } else {
                        tracing::warn!(
                            feed,
                            sequence,
                            event_id,
                            attempts,
                            error = %DisplayChain(&ended),
                            "handler failed; the batch was rolled back and will be retried",
                        );
                    }
                }
                _ if !ever_progressed && waiting_sessions < STARTUP_PATIENCE => {
                    failing = None;
                    if waiting_sessions == 0 {
                        tracing::info!(feed, "waiting for the feed's producer to answer");
                    }
                    waiting_sessions += 1;
                    tracing::debug!(
                        feed,
                        error = %DisplayChain(&ended),
                        ?delay,
                        "feed not reachable yet; retrying"
                    );
                }
                _ => {
                    failing = None;
                    tracing::warn!(
                        feed,
                        error = %DisplayChain(&ended),
                        ?delay,
                        "feed session ended; reconnecting"
                    );
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One connection: read the cursor, subscribe after it, apply responses until something
    /// fails. Sets `progressed` once a response has been applied.
    async fn session(&self, progressed: &mut bool) -> SessionError {
        match self.follow(progressed).await {
            Ok(never) => match never {},
            Err(error) => error,
        }
    }

    async fn follow(
        &self,
        progressed: &mut bool,
    ) -> Result<std::convert::Infallible, SessionError> {
        let feed = self.options.feed.as_str();
        let cursor = load_cursor(&self.pool, feed)
            .await
            .map_err(SessionError::Cursor)?;
        let mut client = EventFeedServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let latest = sendable(client.get_feed_position(GetFeedPositionRequest {}))
            .await
            .map_err(SessionError::Feed)?
            .into_inner()
            .latest_sequence;
        tracing::info!(
            feed,
            cursor,
            latest,
            behind = (latest - cursor).max(0),
            "following feed"
        );
        let mut stream = sendable(client.subscribe(SubscribeRequest {
            after_sequence: cursor,
            event_types: self.options.event_types.clone(),
            max_batch_size: self.options.max_batch_size,
            consumer: self.options.consumer.clone(),
        }))
        .await
        .map_err(feed_error)?
        .into_inner();

        let idle_timeout = self.options.idle_timeout;
        let mut last_report = Instant::now();
        // Subscribing acknowledged the cursor. A position applied within the ack interval of
        // the last acknowledgement waits (`unacked`) until the interval has passed, also on an
        // idle feed, whose next response may be a heartbeat away.
        let mut last_ack = Instant::now();
        let mut unacked: Option<i64> = None;
        loop {
            let next = sendable(stream.message());
            let received = match unacked {
                Some(sequence) => {
                    tokio::select! {
                        received = tokio::time::timeout(idle_timeout, next) => Some(received),
                        () = tokio::time::sleep_until(last_ack + self.options.ack_interval) => {
                            last_ack = Instant::now();
                            unacked = None;
                            self.acknowledge(&mut client, sequence).await;
                            None
                        }
                    }
                }
                None => Some(tokio::time::timeout(idle_timeout, next).await),
            };
            // The acknowledgement was due first; the message future dropped lost nothing.
            let Some(received) = received else {
                continue;
            };
            let first = received
                .map_err(|_| SessionError::Idle(idle_timeout))?
                .map_err(feed_error)?
                .ok_or(SessionError::Ended)?;
            let batch = self.join_waiting(&mut stream, first)?;
            let applied = self.apply(&batch).await?;
            *progressed = true;
            if !self.options.consumer.is_empty() {
                if last_ack.elapsed() >= self.options.ack_interval {
                    last_ack = Instant::now();
                    unacked = None;
                    self.acknowledge(&mut client, batch.last_sequence).await;
                } else {
                    unacked = Some(batch.last_sequence);
                }
            }
            if let Some(last) = batch.events.last() {
                let lag = event_age(last);
                tracing::debug!(
                    feed,
                    applied,
                    cursor = batch.last_sequence,
                    lag_ms = lag.as_millis(),
                    "batch applied"
                );
                if last_report.elapsed() >= Duration::from_secs(30) {
                    last_report = Instant::now();
                    tracing::info!(
                        feed,
                        cursor = batch.last_sequence,
                        lag_ms = lag.as_millis(),
                        "feed progress"
                    );
                }
            }
        }
    }

    /// `first` followed by the responses that already wait on `stream`, as one batch of at
    /// most about `max_events_per_transaction` events. Never waits: an idle feed's event is
    /// applied at once. (A message future dropped before it is ready loses nothing: the
    /// stream keeps what it has read.)
    fn join_waiting(
        &self,
        stream: &mut tonic::Streaming<SubscribeResponse>,
        first: SubscribeResponse,
    ) -> Result<SubscribeResponse, SessionError> {
        let mut batch = first;
        while batch.events.len() < self.options.max_events_per_transaction {
            let Some(next) = stream.message().now_or_never() else {
                break;
            };
            let Some(next) = next.map_err(feed_error)? else {
                // The stream ended: apply what came, the next read reports the end.
                break;
            };
            batch.events.extend(next.events);
            batch.last_sequence = batch.last_sequence.max(next.last_sequence);
        }
        Ok(batch)
    }

    /// Tells the producer the cursor is at `sequence` (committed), so retention may let go of
    /// what is behind it. Best effort: a failure is logged, and the next acknowledgement (or
    /// subscription) catches up.
    async fn acknowledge(
        &self,
        client: &mut EventFeedServiceClient<ServiceChannel>,
        sequence: i64,
    ) {
        let request = AcknowledgeEventsRequest {
            consumer: self.options.consumer.clone(),
            sequence,
        };
        if let Err(status) = sendable(client.acknowledge_events(request)).await {
            tracing::warn!(
                feed = self.options.feed.as_str(),
                sequence,
                error = %DisplayChain(&status),
                "could not acknowledge the cursor to the producer; retention keeps its events \
                 until a later acknowledgement",
            );
        }
    }

    /// After the feed answered that the events after the cursor were pruned: lets the handler
    /// resync and moves the cursor to just before `oldest`, in one transaction. A cursor
    /// already at or past that point (another replica resynced) is left alone.
    async fn resync(&self, oldest: i64) -> anyhow::Result<()> {
        let feed = self.options.feed.as_str();
        let mut tx = self.pool.begin().await?;
        let stored: i64 =
            sqlx::query_scalar("SELECT last_sequence FROM feed_cursors WHERE feed = $1 FOR UPDATE")
                .bind(feed)
                .fetch_one(&mut *tx)
                .await?;
        let target = oldest - 1;
        if stored >= target {
            return Ok(());
        }
        self.handler
            .resync(&mut tx, oldest)
            .instrument(tracing::info_span!("feed_resync", feed, oldest))
            .await?;
        sqlx::query(
            "UPDATE feed_cursors SET last_sequence = $2, update_time = now() WHERE feed = $1",
        )
        .bind(feed)
        .bind(target)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let group = metrics::current_service().map_or("unknown", ServiceKind::name);
        metrics::FEED_CONSUMER_RESYNCS.counter().add(
            1,
            &[
                KeyValue::new(metrics::FEED, self.options.feed.clone()),
                KeyValue::new(metrics::CONSUMER_GROUP, group),
            ],
        );
        tracing::error!(
            feed,
            from = stored,
            to = target,
            lost = target - stored,
            "feed position expired: events were pruned before this consumer applied them; \
             resynced and following on from the oldest retained event",
        );
        Ok(())
    }

    /// Applies one response in one transaction: the events past the stored cursor, then the
    /// cursor itself. Returns how many events were applied.
    async fn apply(&self, response: &SubscribeResponse) -> Result<usize, SessionError> {
        let feed = self.options.feed.as_str();
        let mut tx = self.pool.begin().await.map_err(SessionError::Cursor)?;
        // Locked for the batch: a second replica of this consumer waits here, then skips what
        // this one applied.
        let stored: i64 =
            sqlx::query_scalar("SELECT last_sequence FROM feed_cursors WHERE feed = $1 FOR UPDATE")
                .bind(feed)
                .fetch_one(&mut *tx)
                .await
                .map_err(SessionError::Cursor)?;
        if response.last_sequence <= stored {
            return Ok(0);
        }
        let mut cursor = stored;
        let mut first_new = response.events.len();
        for (index, event) in response.events.iter().enumerate() {
            if event.sequence <= cursor {
                if cursor > stored {
                    return Err(SessionError::OutOfOrder {
                        sequence: event.sequence,
                        cursor,
                    });
                }
                continue;
            }
            first_new = first_new.min(index);
            cursor = event.sequence;
        }
        let events = &response.events[first_new..];
        if !events.is_empty() {
            let span = tracing::info_span!("feed_batch", feed, events = events.len());
            self.handler
                .handle_batch(&mut tx, events)
                .instrument(span)
                .await
                .map_err(|BatchError { index, source }| {
                    let event = &events[index.min(events.len() - 1)];
                    SessionError::Handler {
                        sequence: event.sequence,
                        event_id: event.event_id.clone(),
                        source,
                    }
                })?;
        }
        let applied = events.len();
        if response.last_sequence < cursor {
            return Err(SessionError::OutOfOrder {
                sequence: cursor,
                cursor: response.last_sequence,
            });
        }
        sqlx::query(
            "UPDATE feed_cursors SET last_sequence = $2, update_time = now() WHERE feed = $1",
        )
        .bind(feed)
        .bind(response.last_sequence)
        .execute(&mut *tx)
        .await
        .map_err(SessionError::Cursor)?;
        tx.commit().await.map_err(SessionError::Cursor)?;
        Ok(applied)
    }
}

impl<H: EventHandler + 'static> Consumer<H> {
    /// Runs the consumer on a task of its own (see [`Consumer::run`]), and samples its
    /// position and lag while metrics are exported.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        self.sample_position(shutdown.clone());
        crate::telemetry::spawn(self.run(shutdown))
    }

    /// Samples the stored cursor and the producer's head (the one definition of feed lag:
    /// head minus cursor, both committed facts), named by feed and consumer group (the
    /// consuming service, shared by its replicas).
    fn sample_position(&self, shutdown: CancellationToken) {
        let group = metrics::current_service().map_or("unknown", ServiceKind::name);
        let attributes = [
            KeyValue::new(metrics::FEED, self.options.feed.clone()),
            KeyValue::new(metrics::CONSUMER_GROUP, group),
        ];
        // Exported from the start at 0, so an alert on its increase sees the first resync.
        metrics::FEED_CONSUMER_RESYNCS.counter().add(0, &attributes);
        metrics::spawn_sampler(
            shutdown,
            FeedGauges {
                pool: self.pool.clone(),
                channel: self.channel.clone(),
                feed: self.options.feed.clone(),
                attributes,
                consumer: self.options.consumer.clone(),
                position: metrics::FEED_CONSUMER_POSITION.gauge(),
                lag: metrics::FEED_CONSUMER_LAG.gauge(),
                lag_seconds: metrics::FEED_CONSUMER_LAG_SECONDS.gauge(),
            },
        );
    }
}

/// A consumer's position and lag gauges (see [`Consumer::spawn`]).
struct FeedGauges {
    pool: PgPool,
    channel: ServiceChannel,
    feed: String,
    attributes: [KeyValue; 2],
    /// The registered name; empty for an unregistered reader, whose lag in seconds the
    /// producer cannot measure.
    consumer: String,
    position: metrics::Gauge<f64>,
    lag: metrics::Gauge<f64>,
    lag_seconds: metrics::Gauge<f64>,
}

impl metrics::Sampler for FeedGauges {
    async fn sample(&self) -> anyhow::Result<()> {
        let position = load_cursor(&self.pool, &self.feed).await?;
        let mut client = EventFeedServiceClient::new(self.channel.clone());
        if self.consumer.is_empty() {
            let head = sendable(client.get_feed_position(GetFeedPositionRequest {}))
                .await?
                .into_inner()
                .latest_sequence;
            self.position.record(position as f64, &self.attributes);
            self.lag
                .record((head - position).max(0) as f64, &self.attributes);
            return Ok(());
        }
        // Acknowledging the stored cursor answers the lag measured at the producer: events
        // behind its head, and the age of the oldest event not yet applied.
        let lag = sendable(client.acknowledge_events(AcknowledgeEventsRequest {
            consumer: self.consumer.clone(),
            sequence: position,
        }))
        .await?
        .into_inner();
        self.position.record(position as f64, &self.attributes);
        self.lag.record(
            (lag.latest_sequence - position).max(0) as f64,
            &self.attributes,
        );
        self.lag_seconds
            .record(lag.seconds_behind, &self.attributes);
        Ok(())
    }
}

/// Boxes a future of the generated client as `Send` where its type is fully known. Awaited
/// directly inside an `async` body, rustc fails to prove it `Send` for every lifetime of the
/// boxed error type (rust-lang/rust#102211) and the consumer could not be spawned.
fn sendable<'a, F>(
    future: F,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = F::Output> + Send + 'a>>
where
    F: std::future::Future + Send + 'a,
{
    Box::pin(future)
}

/// The feed's answer as a session error: FAILED_PRECONDITION `FEED_POSITION_EXPIRED` is the
/// cue to resync, anything else a failure to reconnect after.
fn feed_error(status: tonic::Status) -> SessionError {
    if status.code() == tonic::Code::FailedPrecondition
        && let Some(info) = status.get_details_error_info()
        && info.reason == FEED_POSITION_EXPIRED
        && let Some(oldest) = info
            .metadata
            .get(OLDEST_SEQUENCE)
            .and_then(|oldest| oldest.parse().ok())
    {
        return SessionError::Expired { oldest };
    }
    SessionError::Feed(status)
}

/// The stored cursor of `feed`, creating the row (at 0) the first time.
pub async fn load_cursor(pool: &PgPool, feed: &str) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO feed_cursors (feed) VALUES ($1) ON CONFLICT (feed) DO NOTHING")
        .bind(feed)
        .execute(&mut *tx)
        .await?;
    let cursor = sqlx::query_scalar("SELECT last_sequence FROM feed_cursors WHERE feed = $1")
        .bind(feed)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(cursor)
}

/// How long ago the event happened, by the producer's clock (0 when it is in the future).
fn event_age(event: &Event) -> Duration {
    let Some(time) = &event.occur_time else {
        return Duration::ZERO;
    };
    let occurred =
        chrono::DateTime::from_timestamp(time.seconds, u32::try_from(time.nanos).unwrap_or(0));
    occurred
        .and_then(|occurred| (chrono::Utc::now() - occurred).to_std().ok())
        .unwrap_or(Duration::ZERO)
}
