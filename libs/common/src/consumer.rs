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
    Event, GetFeedPositionRequest, SubscribeRequest, SubscribeResponse,
};
use sqlx::{PgConnection, PgPool};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use futures_util::FutureExt as _;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use opentelemetry::KeyValue;

use crate::client::{RetryPolicy, ServiceChannel};
use crate::error::DisplayChain;
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
        }))
        .await
        .map_err(SessionError::Feed)?
        .into_inner();

        let idle_timeout = self.options.idle_timeout;
        let mut last_report = Instant::now();
        loop {
            let first = tokio::time::timeout(idle_timeout, sendable(stream.message()))
                .await
                .map_err(|_| SessionError::Idle(idle_timeout))?
                .map_err(SessionError::Feed)?
                .ok_or(SessionError::Ended)?;
            let batch = self.join_waiting(&mut stream, first)?;
            let applied = self.apply(&batch).await?;
            *progressed = true;
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
            let Some(next) = next.map_err(SessionError::Feed)? else {
                // The stream ended: apply what came, the next read reports the end.
                break;
            };
            batch.events.extend(next.events);
            batch.last_sequence = batch.last_sequence.max(next.last_sequence);
        }
        Ok(batch)
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
        metrics::spawn_sampler(
            shutdown,
            FeedGauges {
                pool: self.pool.clone(),
                channel: self.channel.clone(),
                feed: self.options.feed.clone(),
                attributes: [
                    KeyValue::new(metrics::FEED, self.options.feed.clone()),
                    KeyValue::new(metrics::CONSUMER_GROUP, group),
                ],
                position: metrics::FEED_CONSUMER_POSITION.gauge(),
                lag: metrics::FEED_CONSUMER_LAG.gauge(),
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
    position: metrics::Gauge<f64>,
    lag: metrics::Gauge<f64>,
}

impl metrics::Sampler for FeedGauges {
    async fn sample(&self) -> anyhow::Result<()> {
        let position = load_cursor(&self.pool, &self.feed).await?;
        let mut client = EventFeedServiceClient::new(self.channel.clone());
        let head = sendable(client.get_feed_position(GetFeedPositionRequest {}))
            .await?
            .into_inner()
            .latest_sequence;
        self.position.record(position as f64, &self.attributes);
        self.lag
            .record((head - position).max(0) as f64, &self.attributes);
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

/// The stored cursor of `feed`, creating the row (at 0) the first time.
pub async fn load_cursor(pool: &PgPool, feed: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("INSERT INTO feed_cursors (feed) VALUES ($1) ON CONFLICT (feed) DO NOTHING")
        .bind(feed)
        .execute(pool)
        .await?;
    sqlx::query_scalar("SELECT last_sequence FROM feed_cursors WHERE feed = $1")
        .bind(feed)
        .fetch_one(pool)
        .await
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
