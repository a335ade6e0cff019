//! The `custops.common.v1.EventFeedService` every service serves over its own outbox: the
//! backlog first, then new events as the [`sequencer`](crate::sequencer) gives them a position.
//!
//! The outbox table is the only source of truth. The sequencer polls it for committed rows
//! (writers do not notify: see [`crate::sequencer`]); after numbering a batch it notifies the
//! feed channel. LISTEN/NOTIFY is a wake-up call and nothing more: one listener connection
//! per feed (per process) receives the feed channel and wakes every `Subscribe` stream through
//! a [`watch`](tokio::sync::watch) (streams of the sequencer's own process are woken directly),
//! and streams also re-check on a timer while the listener is down, so a lost notification
//! costs latency, never an event.
//!
//! Consumers register by name (`SubscribeRequest.consumer`, `AcknowledgeEvents`) in
//! `feed_consumers`; [`crate::retention`] prunes what all of them have acknowledged once the
//! retention period has passed, and a stream whose next event has been pruned ends with
//! FAILED_PRECONDITION `FEED_POSITION_EXPIRED` ([`position_expired`]).
//!
//! Lifetimes: [`EventFeedApi::start`] spawns the sequencer, the listener and the pruner; they stop when
//! the last clone of the API (the server's, and any open stream's) is dropped. Cancelling
//! [`FeedOptions::shutdown`] ends every open stream at once with `UNAVAILABLE` and refuses new
//! subscriptions, so a draining server does not wait for long-lived streams.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::client::RetryPolicy;
use crate::clock::{Clock, SystemClock};
use crate::error::{ERROR_DOMAIN, ServiceError, Violations, status_with_reason};
use crate::paging::PageTokens;
use custops_contracts::custops::common::v1::event_feed_service_server::{
    EventFeedService, EventFeedServiceServer,
};
use custops_contracts::custops::common::v1::{
    AcknowledgeEventsRequest, AcknowledgeEventsResponse, Event, FeedConsumer,
    GetFeedPositionRequest, GetFeedPositionResponse, ListFeedConsumersRequest,
    ListFeedConsumersResponse, SubscribeRequest, SubscribeResponse,
};
use futures_util::Stream;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{Request, Response, Status};

use crate::outbox::feed_channel;
use crate::retention;
use crate::sequencer;
use crate::server::MAX_MESSAGE_BYTES;
use crate::service::ServiceKind;

/// The sequencer's longest pause while idle ([`FeedOptions::sequencer_idle_poll`]): a
/// fortieth of a second of delay at worst on an idle feed, for 40 index probes a second.
pub const DEFAULT_SEQUENCER_IDLE_POLL: Duration = Duration::from_millis(25);
/// Events per response when the subscriber asks for 0.
const DEFAULT_MAX_BATCH_SIZE: i32 = 100;
/// Largest `max_batch_size` a subscriber may ask for.
const MAX_MAX_BATCH_SIZE: i32 = 1000;
/// Type URL prefix of every payload (`google.protobuf.Any`).
const TYPE_URL_PREFIX: &str = "type.googleapis.com/";
/// The ErrorInfo reason of a position whose next event has been pruned: the consumer must
/// resync (see [`crate::consumer::EventHandler::resync`]).
pub const FEED_POSITION_EXPIRED: &str = "FEED_POSITION_EXPIRED";
/// The ErrorInfo metadata key of the oldest retained sequence, in a [`FEED_POSITION_EXPIRED`].
pub const OLDEST_SEQUENCE: &str = "oldest_sequence";
/// Longest consumer name.
const MAX_CONSUMER_LEN: usize = 63;

/// How a feed behaves; [`FeedOptions::default`] is what services use.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// A stream that has sent nothing for this long sends a heartbeat (no events, the current
    /// position), so a consumer can tell an idle feed from a dead connection. Default 15 s.
    pub heartbeat_interval: Duration,
    /// How often every open stream reads the table while the feed's listener is down. Bounds
    /// the delay when notifications are lost. Default 1 s.
    pub poll_interval: Duration,
    /// The longest pause between the sequencer's looks for new rows while none come (after a
    /// pass that found some it looks again within 10 ms, then doubles the pause). Bounds the
    /// delay from commit to feed position on an idle feed; each look is one index probe.
    /// Default 25 ms.
    pub sequencer_idle_poll: Duration,
    /// Largest number of rows the sequencer gives a position in one transaction. Default 1000.
    pub sequencer_batch_size: i64,
    /// Events are kept at least this long, and until every registered consumer has
    /// acknowledged them ([`crate::retention`]). Default 7 days
    /// (`CUSTOPS_FEED_RETENTION_HOURS`).
    pub retention: Duration,
    /// How often the feed prunes what retention lets go. Default 1 minute.
    pub prune_interval: Duration,
    /// The service's clock: retention and the consumers' lag are measured on it.
    pub clock: Arc<dyn Clock>,
    /// Signs and checks `ListFeedConsumers` page tokens (the service's, so that every replica
    /// honours the others' tokens). Default: a random key.
    pub page_tokens: PageTokens,
    /// Cancelled when the server begins to shut down: open streams end with `UNAVAILABLE`
    /// (the consumer resubscribes to another replica) and new ones are refused. The sequencer
    /// keeps running until the API is dropped, so events committed by calls still draining
    /// get their position.
    pub shutdown: CancellationToken,
    /// The service's database settings, when the feed's listener must connect with them
    /// rather than with the pool's options: straight to Postgres behind a transaction pooler
    /// ([`crate::db::direct_options`]), since a LISTEN needs a session of its own. `None`: the
    /// pool's options.
    pub database: Option<crate::config::DatabaseSettings>,
}

impl Default for FeedOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            sequencer_idle_poll: DEFAULT_SEQUENCER_IDLE_POLL,
            sequencer_batch_size: sequencer::DEFAULT_BATCH_SIZE,
            retention: retention::DEFAULT_RETENTION,
            prune_interval: retention::DEFAULT_PRUNE_INTERVAL,
            clock: Arc::new(SystemClock),
            page_tokens: PageTokens::random(),
            shutdown: CancellationToken::new(),
            database: None,
        }
    }
}

impl FeedOptions {
    /// What a service's feed uses: its retention setting, its clock (retention is measured on
    /// it) and its page-token key (consumer lists are paged), and `shutdown`, the server's
    /// drain token, so streams end as soon as draining starts, not at the end of the grace.
    pub fn for_service(
        settings: &crate::config::ServiceSettings,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            retention: settings.feed_retention,
            clock,
            page_tokens: settings.page_tokens.clone(),
            shutdown,
            database: Some(settings.database.clone()),
            ..Self::default()
        }
    }
}

/// The feed API of one service. Cheap to clone; every clone serves the same feed.
#[derive(Debug, Clone)]
pub struct EventFeedApi {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    pool: PgPool,
    service: ServiceKind,
    heartbeat_interval: Duration,
    poll_interval: Duration,
    shutdown: CancellationToken,
    /// Bumped whenever new events may have been sequenced.
    feed_tick: watch::Receiver<u64>,
    /// True while the listener connection is LISTENing.
    listening: watch::Receiver<bool>,
    /// The service's event types (messages of its `events.proto`), for the subscribe filter.
    event_types: EventTypes,
    clock: Arc<dyn Clock>,
    page_tokens: PageTokens,
    /// Stops the sequencer and the listener when the last clone of the API goes.
    _tasks: DropGuard,
}

impl EventFeedApi {
    /// Starts the feed of `service` over `pool` (whose `search_path` is the service's schema):
    /// spawns its sequencer and its listener on the current Tokio runtime (so it must be
    /// called from within one). They run until the last clone of the API is dropped.
    pub fn start(pool: PgPool, service: ServiceKind, options: FeedOptions) -> Self {
        let tasks = CancellationToken::new();
        let (tick_tx, feed_tick) = watch::channel(0_u64);
        let (listening_tx, listening) = watch::channel(false);
        let tick_tx = Arc::new(tick_tx);

        crate::telemetry::spawn(listen(
            listener_options(&pool, options.database.as_ref()),
            service.schema(),
            Arc::clone(&tick_tx),
            listening_tx,
            tasks.clone(),
        ));
        let local_tick = Arc::clone(&tick_tx);
        crate::telemetry::spawn(sequencer::run(
            pool.clone(),
            // Wake this process's streams at once; other replicas hear the NOTIFY.
            move || local_tick.send_modify(|tick| *tick = tick.wrapping_add(1)),
            options.sequencer_idle_poll,
            options.sequencer_batch_size,
            tasks.clone(),
        ));
        crate::telemetry::spawn(retention::run(
            pool.clone(),
            Arc::clone(&options.clock),
            options.retention,
            options.prune_interval,
            tasks.clone(),
        ));

        Self {
            shared: Arc::new(Shared {
                pool,
                service,
                heartbeat_interval: options.heartbeat_interval,
                poll_interval: options.poll_interval,
                shutdown: options.shutdown,
                feed_tick,
                listening,
                event_types: EventTypes::of(service),
                clock: options.clock,
                page_tokens: options.page_tokens,
                _tasks: tasks.drop_guard(),
            }),
        }
    }

    /// The token that ends every stream of this feed (see [`FeedOptions::shutdown`]); the
    /// server cancels it when shutdown begins.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// Whether the feed's listener currently holds its LISTEN connection. When false, new
    /// events still arrive, within the poll interval instead of at once.
    pub fn is_listening(&self) -> bool {
        *self.shared.listening.borrow()
    }

    /// This API wrapped for serving, with the message limits every server uses.
    pub fn into_server(self) -> EventFeedServiceServer<EventFeedApi> {
        EventFeedServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// Starts the feed of `service` (see [`EventFeedApi::start`]) and wraps it for serving.
pub fn event_feed_server(
    pool: PgPool,
    service: ServiceKind,
    options: FeedOptions,
) -> EventFeedServiceServer<EventFeedApi> {
    EventFeedApi::start(pool, service, options).into_server()
}

/// The stream `Subscribe` answers with.
pub type SubscribeStream = Pin<Box<dyn Stream<Item = Result<SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventFeedService for EventFeedApi {
    #[tracing::instrument(skip_all, fields(service = %self.shared.service, after_sequence))]
    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<SubscribeStream>, Status> {
        let request = request.into_inner();
        tracing::Span::current().record("after_sequence", request.after_sequence);
        let query = SubscribeQuery::parse(request, &self.shared.event_types)?;
        if self.shared.shutdown.is_cancelled() {
            return Err(shutting_down());
        }
        // Registered first, then checked: a prune that read the consumers before this
        // registration may still delete past `after_sequence`, and the stream's every read
        // checks the oldest retained event again (`Subscription::next`).
        if let Some(consumer) = &query.consumer {
            acknowledge(
                &self.shared.pool,
                self.shared.clock.as_ref(),
                consumer,
                query.after_sequence,
            )
            .await
            .map_err(database_status)?;
        }
        let (oldest, _) = feed_position(&self.shared.pool)
            .await
            .map_err(database_status)?;
        if is_expired(query.after_sequence, oldest) {
            return Err(position_expired(query.after_sequence, oldest));
        }
        let subscription = Subscription {
            feed_tick: self.shared.feed_tick.clone(),
            shared: Arc::clone(&self.shared),
            position: query.after_sequence,
            event_types: query.event_types,
            max_batch_size: query.max_batch_size,
            last_sent: Instant::now(),
            ended: false,
        };
        let stream = futures_util::stream::unfold(subscription, |mut subscription| async move {
            let item = subscription.next().await?;
            Some((item, subscription))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(service = %self.shared.service))]
    async fn get_feed_position(
        &self,
        _request: Request<GetFeedPositionRequest>,
    ) -> Result<Response<GetFeedPositionResponse>, Status> {
        let (oldest_sequence, latest_sequence) = feed_position(&self.shared.pool)
            .await
            .map_err(database_status)?;
        Ok(Response::new(GetFeedPositionResponse {
            oldest_sequence,
            latest_sequence,
        }))
    }

    #[tracing::instrument(skip_all, fields(service = %self.shared.service))]
    async fn acknowledge_events(
        &self,
        request: Request<AcknowledgeEventsRequest>,
    ) -> Result<Response<AcknowledgeEventsResponse>, Status> {
        let request = request.into_inner();
        let mut violations = Violations::new();
        let consumer = match parse_consumer(&request.consumer) {
            Ok(Some(consumer)) => consumer,
            Ok(None) => {
                violations.add("consumer", "is required");
                String::new()
            }
            Err(description) => {
                violations.add("consumer", description);
                String::new()
            }
        };
        violations.check(request.sequence >= 0, "sequence", "must not be negative");
        violations.into_result()?;
        let (_, latest) = feed_position(&self.shared.pool)
            .await
            .map_err(database_status)?;
        if request.sequence > latest {
            return Err(Status::from(ServiceError::FailedPrecondition(format!(
                "sequence {} lies beyond the feed's newest event ({latest})",
                request.sequence
            ))));
        }
        acknowledge(
            &self.shared.pool,
            self.shared.clock.as_ref(),
            &consumer,
            request.sequence,
        )
        .await
        .map_err(database_status)?;
        let (consumers, latest_sequence) = list_consumers(
            &self.shared.pool,
            self.shared.clock.as_ref(),
            ConsumerFilter::Named(&consumer),
            1,
        )
        .await
        .map_err(database_status)?;
        // Registered just above; an operator deleting it meanwhile reads as caught up.
        let lag = consumers.into_iter().next().unwrap_or_default();
        Ok(Response::new(AcknowledgeEventsResponse {
            acked_sequence: lag.acked_sequence,
            latest_sequence,
            events_behind: lag.events_behind,
            seconds_behind: lag.seconds_behind,
        }))
    }

    #[tracing::instrument(skip_all, fields(service = %self.shared.service))]
    async fn list_feed_consumers(
        &self,
        request: Request<ListFeedConsumersRequest>,
    ) -> Result<Response<ListFeedConsumersResponse>, Status> {
        let request = request.into_inner();
        let page = self
            .shared
            .page_tokens
            .page::<_, String>(&request)
            .map_err(Status::from)?;
        let (mut consumers, latest_sequence) = list_consumers(
            &self.shared.pool,
            self.shared.clock.as_ref(),
            ConsumerFilter::After(page.after.as_deref()),
            page.limit(),
        )
        .await
        .map_err(database_status)?;
        let next_page_token = page
            .finish(&mut consumers, |last| last.consumer.clone())
            .map_err(Status::from)?;
        Ok(Response::new(ListFeedConsumersResponse {
            consumers,
            next_page_token,
            latest_sequence,
        }))
    }
}

/// Whether a consumer at `position` has lost events to retention: the event after it is
/// older than the oldest retained one. (Retention keeps a gap-free range ending at the newest
/// event, so this is exact; an empty feed, oldest 0, has lost nothing.)
fn is_expired(position: i64, oldest: i64) -> bool {
    oldest > position.saturating_add(1)
}

/// The FAILED_PRECONDITION a consumer at `position` gets once events after it were pruned.
pub fn position_expired(position: i64, oldest: i64) -> Status {
    status_with_reason(
        tonic::Code::FailedPrecondition,
        format!(
            "events after sequence {position} have been pruned (the oldest retained is \
             {oldest}); resync: rebuild what you keep from this feed by other means, then \
             subscribe after {}",
            oldest - 1
        ),
        ERROR_DOMAIN,
        FEED_POSITION_EXPIRED,
        [(OLDEST_SEQUENCE, oldest.to_string())],
    )
}

/// A consumer name: `None` when empty (an ad-hoc reader), else a short slug.
fn parse_consumer(name: &str) -> Result<Option<String>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if starts_with_letter && rest_ok && name.len() <= MAX_CONSUMER_LEN {
        Ok(Some(name.to_owned()))
    } else {
        Err(format!(
            "must be a short slug: a lowercase letter, then lowercase letters, digits, `-` or \
             `_`, at most {MAX_CONSUMER_LEN} characters"
        ))
    }
}

/// Records that `consumer` has applied every event up to `sequence` (capped at the feed's
/// newest), registering it if new; acknowledgements never move back. Returns the consumer's
/// acknowledged position.
async fn acknowledge(
    pool: &PgPool,
    clock: &dyn Clock,
    consumer: &str,
    sequence: i64,
) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let acked = sqlx::query_scalar(
        "INSERT INTO feed_consumers (consumer, acked_sequence, acked_at, registered_at) \
         SELECT $1, LEAST($2, COALESCE(MAX(sequence), 0)), $3, $3 FROM outbox \
         ON CONFLICT (consumer) DO UPDATE \
         SET acked_sequence = GREATEST(feed_consumers.acked_sequence, EXCLUDED.acked_sequence), \
             acked_at = EXCLUDED.acked_at \
         RETURNING acked_sequence",
    )
    .bind(consumer)
    .bind(sequence)
    .bind(clock.now())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(acked)
}

/// Which registered consumers [`list_consumers`] reads.
enum ConsumerFilter<'a> {
    /// Those named after this (all with `None`), by name: a page of `ListFeedConsumers`.
    After(Option<&'a str>),
    /// The one of this name.
    Named(&'a str),
}

/// Up to `limit` registered consumers (by name) with their lag, and the feed's newest
/// sequence it is measured against.
async fn list_consumers(
    pool: &PgPool,
    clock: &dyn Clock,
    filter: ConsumerFilter<'_>,
    limit: i64,
) -> Result<(Vec<FeedConsumer>, i64), sqlx::Error> {
    let now = clock.now();
    let (after, named) = match filter {
        ConsumerFilter::After(after) => (after, None),
        ConsumerFilter::Named(name) => (None, Some(name)),
    };
    let rows = sqlx::query(
        "WITH top AS (SELECT COALESCE(MAX(sequence), 0) AS top FROM outbox) \
         SELECT top.top, c.consumer, c.acked_sequence, c.acked_at, c.registered_at, \
                GREATEST(top.top - c.acked_sequence, 0) AS events_behind, \
                COALESCE(( \
                    SELECT GREATEST(EXTRACT(EPOCH FROM ($3 - o.occurred_at)), 0)::float8 \
                    FROM outbox o WHERE o.sequence > c.acked_sequence \
                    ORDER BY o.sequence LIMIT 1 \
                ), 0) AS seconds_behind \
         FROM top LEFT JOIN LATERAL ( \
             SELECT * FROM feed_consumers \
             WHERE ($1::text IS NULL OR consumer > $1) AND ($4::text IS NULL OR consumer = $4) \
             ORDER BY consumer LIMIT $2 \
         ) c ON true \
         ORDER BY c.consumer",
    )
    .bind(after)
    .bind(limit)
    .bind(now)
    .bind(named)
    .fetch_all(&mut *crate::db::read(pool).await?)
    .await?;
    let mut top = 0;
    let mut consumers = Vec::with_capacity(rows.len());
    for row in &rows {
        top = row.try_get::<i64, _>("top")?;
        let Some(consumer) = row.try_get::<Option<String>, _>("consumer")? else {
            continue;
        };
        let acked_at: chrono::DateTime<chrono::Utc> = row.try_get("acked_at")?;
        let registered_at: chrono::DateTime<chrono::Utc> = row.try_get("registered_at")?;
        consumers.push(FeedConsumer {
            consumer,
            acked_sequence: row.try_get("acked_sequence")?,
            ack_time: Some(crate::time::to_timestamp(acked_at)),
            register_time: Some(crate::time::to_timestamp(registered_at)),
            events_behind: row.try_get("events_behind")?,
            seconds_behind: row.try_get("seconds_behind")?,
        });
    }
    Ok((consumers, top))
}

/// A validated `SubscribeRequest`.
struct SubscribeQuery {
    after_sequence: i64,
    event_types: Vec<String>,
    max_batch_size: i64,
    /// The registering consumer; `None` for an ad-hoc reader.
    consumer: Option<String>,
}

impl SubscribeQuery {
    /// Checks every field, reporting all bad ones in one `INVALID_ARGUMENT`.
    fn parse(request: SubscribeRequest, known: &EventTypes) -> Result<Self, Status> {
        let mut violations = Violations::new();
        if request.after_sequence < 0 {
            violations.add("after_sequence", "must not be negative");
        }
        let max_batch_size = match request.max_batch_size {
            0 => DEFAULT_MAX_BATCH_SIZE,
            size @ 1..=MAX_MAX_BATCH_SIZE => size,
            _ => {
                violations.add(
                    "max_batch_size",
                    format!("must be between 1 and {MAX_MAX_BATCH_SIZE}, or 0 for the default"),
                );
                DEFAULT_MAX_BATCH_SIZE
            }
        };
        for (index, name) in request.event_types.iter().enumerate() {
            if !known.contains(name) {
                violations.add(
                    format!("event_types[{index}]"),
                    format!("`{name}` is not an event type of this feed"),
                );
            }
        }
        let consumer = violations.take("consumer", parse_consumer(&request.consumer));
        violations.into_result()?;
        Ok(Self {
            after_sequence: request.after_sequence,
            event_types: request.event_types,
            max_batch_size: i64::from(max_batch_size),
            consumer: consumer.flatten(),
        })
    }
}

/// One open `Subscribe` stream: where it is and when it last sent something.
struct Subscription {
    shared: Arc<Shared>,
    feed_tick: watch::Receiver<u64>,
    position: i64,
    event_types: Vec<String>,
    max_batch_size: i64,
    last_sent: Instant,
    ended: bool,
}

impl Subscription {
    /// The next response: a batch, a cursor advance past filtered-out events, or a heartbeat;
    /// an error ends the stream. `None` once it has ended.
    async fn next(&mut self) -> Option<Result<SubscribeResponse, Status>> {
        if self.ended {
            return None;
        }
        loop {
            if self.shared.shutdown.is_cancelled() {
                self.ended = true;
                return Some(Err(shutting_down()));
            }
            // Marked seen before reading, so a batch sequenced during the read wakes us again.
            self.feed_tick.borrow_and_update();
            let page = match read_page(
                &self.shared.pool,
                self.position,
                &self.event_types,
                self.max_batch_size,
            )
            .await
            {
                Ok(page) => page,
                Err(error) => {
                    self.ended = true;
                    return Some(Err(database_status(error)));
                }
            };
            // Retention pruned past this stream (an ad-hoc reader, or a prune racing the
            // registration): delivering on would skip events silently.
            if is_expired(self.position, page.oldest) {
                self.ended = true;
                return Some(Err(position_expired(self.position, page.oldest)));
            }
            if !page.events.is_empty() || page.position > self.position {
                self.position = page.position;
                return Some(Ok(self.sent(page.events)));
            }

            let heartbeat_at = self.last_sent + self.shared.heartbeat_interval;
            // While the listener hears the feed channel, an idle stream waits for its wake-up
            // (and the heartbeat, which re-reads too) rather than reading the table every poll
            // interval: hundreds of idle subscribers must not cost hundreds of reads a second.
            // Without the listener, it polls.
            let poll = if *self.shared.listening.borrow() {
                self.shared.heartbeat_interval
            } else {
                self.shared.poll_interval
            };
            let tick = &mut self.feed_tick;
            tokio::select! {
                () = self.shared.shutdown.cancelled() => {}
                () = async {
                    // A closed channel means the listener is gone: rely on the poll below.
                    if tick.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                } => {}
                () = tokio::time::sleep(poll) => {}
                () = tokio::time::sleep_until(heartbeat_at) => {
                    return Some(Ok(self.sent(Vec::new())));
                }
            }
        }
    }

    fn sent(&mut self, events: Vec<Event>) -> SubscribeResponse {
        self.last_sent = Instant::now();
        SubscribeResponse {
            events,
            last_sequence: self.position,
        }
    }
}

/// What one read of the outbox found after a position.
struct Page {
    events: Vec<Event>,
    /// The oldest retained sequence, in the snapshot the events were read in.
    oldest: i64,
    /// The position a consumer may store after `events`.
    position: i64,
}

/// Reads up to `limit` sequenced events after `after` (only `event_types`, when not empty).
///
/// The newest sequence is read in the same statement, hence the same snapshot: when fewer than
/// `limit` events match, every event up to it has been looked at and the position moves to it,
/// past filtered-out events.
async fn read_page(
    pool: &PgPool,
    after: i64,
    event_types: &[String],
    limit: i64,
) -> Result<Page, sqlx::Error> {
    let rows = sqlx::query(
        "WITH top AS ( \
             SELECT COALESCE(MAX(sequence), 0) AS top, COALESCE(MIN(sequence), 0) AS oldest \
             FROM outbox \
         ) \
         SELECT top.top, top.oldest, o.sequence, o.id, o.aggregatetype, o.aggregateid, o.type, o.payload, \
                o.traceparent, o.occurred_at \
         FROM top LEFT JOIN LATERAL ( \
             SELECT * FROM outbox \
             WHERE sequence > $1 AND (cardinality($2::text[]) = 0 OR type = ANY($2)) \
             ORDER BY sequence \
             LIMIT $3 \
         ) o ON true \
         ORDER BY o.sequence",
    )
    .bind(after)
    .bind(event_types)
    .bind(limit)
    .fetch_all(&mut *crate::db::read(pool).await?)
    .await?;

    let mut top = 0;
    let mut oldest = 0;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        top = row.try_get::<i64, _>("top")?;
        oldest = row.try_get::<i64, _>("oldest")?;
        if let Some(event) = event_from_row(row)? {
            events.push(event);
        }
    }
    let full = i64::try_from(events.len()).is_ok_and(|len| len >= limit);
    let position = match events.last() {
        Some(last) if full => last.sequence,
        _ => top.max(after),
    };
    Ok(Page {
        events,
        oldest,
        position,
    })
}

/// The event in a row of [`read_page`], or `None` for the row that only carries `top`.
fn event_from_row(row: &PgRow) -> Result<Option<Event>, sqlx::Error> {
    let Some(sequence) = row.try_get::<Option<i64>, _>("sequence")? else {
        return Ok(None);
    };
    let id: uuid::Uuid = row.try_get("id")?;
    let event_type: String = row.try_get("type")?;
    let occurred_at: chrono::DateTime<chrono::Utc> = row.try_get("occurred_at")?;
    Ok(Some(Event {
        sequence,
        event_id: id.to_string(),
        aggregate_type: row.try_get("aggregatetype")?,
        aggregate_id: row.try_get("aggregateid")?,
        occur_time: Some(prost_types::Timestamp {
            seconds: occurred_at.timestamp(),
            nanos: i32::try_from(occurred_at.timestamp_subsec_nanos()).unwrap_or(0),
        }),
        payload: Some(prost_types::Any {
            type_url: format!("{TYPE_URL_PREFIX}{event_type}"),
            value: row.try_get("payload")?,
        }),
        event_type,
        traceparent: row.try_get("traceparent")?,
    }))
}

/// What the feed's listener connects with: straight to Postgres with the service's session
/// settings when `database` is given (behind a pooler, its direct URL), else the pool's
/// options.
fn listener_options(
    pool: &PgPool,
    database: Option<&crate::config::DatabaseSettings>,
) -> PgConnectOptions {
    match database.map(crate::db::direct_options) {
        Some(Ok(options)) => options,
        Some(Err(error)) => {
            // The URL was checked when the settings were read; should it still fail, the
            // streams fall back to polling every `poll_interval`.
            tracing::error!(%error, "feed listener: no direct database URL; using the pool's");
            (*pool.connect_options()).clone()
        }
        None => (*pool.connect_options()).clone(),
    }
}

/// Oldest and newest sequence of the feed (0 and 0 when it is empty).
async fn feed_position(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as::<_, (i64, i64)>(
        "SELECT COALESCE(MIN(sequence), 0), COALESCE(MAX(sequence), 0) FROM outbox",
    )
    .fetch_one(&mut *crate::db::read(pool).await?)
    .await
}

/// The per-process listener: one connection LISTENing on the schema's feed channel (wakes the
/// streams). Reconnects with backoff; after every (re)connection it wakes them, since
/// notifications sent meanwhile are lost.
///
/// The connection is its own (with `options`, outside the service's pool): a listener holds
/// its connection for good, and must not take one from the requests, nor starve them when the
/// pool is small.
async fn listen(
    options: PgConnectOptions,
    schema: &'static str,
    feed_tick: Arc<watch::Sender<u64>>,
    listening: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options);
    let feed = feed_channel(schema);
    let wake_streams = || feed_tick.send_modify(|tick| *tick = tick.wrapping_add(1));
    let reconnecting = RetryPolicy::forever(Duration::from_millis(100), Duration::from_secs(5));
    let mut delays = reconnecting.delays();
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(&feed).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            () = stop.cancelled() => return,
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, schema, "feed listener could not LISTEN; retrying");
                    let delay = delays.next().unwrap_or(reconnecting.max_backoff);
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            },
        };
        delays = reconnecting.delays();
        listening.send_replace(true);
        wake_streams();
        loop {
            let received = tokio::select! {
                () = stop.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                // A notification, or the connection was lost and has been re-established
                // (LISTEN included).
                Ok(Some(_) | None) => wake_streams(),
                Err(error) => {
                    tracing::warn!(%error, schema, "feed listener lost its connection");
                    listening.send_replace(false);
                    break;
                }
            }
        }
    }
}

/// The set of event types a feed carries: the messages of its service's `events.proto`, read
/// from the compiled descriptor set.
#[derive(Debug)]
struct EventTypes {
    names: HashSet<String>,
    /// Package prefix (`custops.profiles.v1.`) accepted when the descriptor set could not be
    /// read, a build defect that should not take the feed down.
    fallback_prefix: String,
}

impl EventTypes {
    fn of(service: ServiceKind) -> Self {
        use prost::Message;

        let package = format!("custops.{}.v1", service.schema());
        let file_name = format!("custops/{}/v1/events.proto", service.schema());
        let names =
            match prost_types::FileDescriptorSet::decode(custops_contracts::FILE_DESCRIPTOR_SET) {
                Ok(set) => set
                    .file
                    .iter()
                    .filter(|file| file.name() == file_name)
                    .flat_map(|file| &file.message_type)
                    .map(|message| format!("{package}.{}", message.name()))
                    .collect(),
                Err(error) => {
                    tracing::error!(%error, "the compiled descriptor set does not decode");
                    HashSet::new()
                }
            };
        Self {
            names,
            fallback_prefix: format!("{package}."),
        }
    }

    fn contains(&self, name: &str) -> bool {
        if self.names.is_empty() {
            name.strip_prefix(&self.fallback_prefix)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('.'))
        } else {
            self.names.contains(name)
        }
    }
}

fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down; resubscribe to another replica")
}

/// A database failure as a status, through the suite's one mapping (connection trouble is
/// UNAVAILABLE, anything unexpected INTERNAL with the detail logged, never sent).
fn database_status(error: sqlx::Error) -> Status {
    Status::from(ServiceError::from(error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    fn check(request: SubscribeRequest, bad_fields: &[&str]) {
        let known = EventTypes::of(ServiceKind::Profiles);
        match SubscribeQuery::parse(request, &known) {
            Ok(_) => assert!(
                bad_fields.is_empty(),
                "expected {bad_fields:?} to be rejected"
            ),
            Err(status) => {
                assert_eq!(status.code(), Code::InvalidArgument);
                let fields: Vec<String> = status
                    .get_details_bad_request()
                    .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                    .unwrap_or_default();
                assert_eq!(fields, bad_fields);
            }
        }
    }

    fn request(after: i64, types: &[&str], batch: i32) -> SubscribeRequest {
        SubscribeRequest {
            after_sequence: after,
            event_types: types.iter().map(|t| (*t).to_owned()).collect(),
            max_batch_size: batch,
            consumer: String::new(),
        }
    }

    #[test]
    fn subscribe_requests_are_validated_field_by_field() {
        check(request(0, &[], 0), &[]);
        check(
            request(5, &["custops.profiles.v1.CustomerCreated"], 1000),
            &[],
        );
        check(request(-1, &[], 1), &["after_sequence"]);
        check(request(0, &[], 1001), &["max_batch_size"]);
        check(request(0, &[], -3), &["max_batch_size"]);
        check(
            request(
                -2,
                &[
                    "custops.profiles.v1.CustomerDeleted",
                    "custops.loyalty.v1.PointsEarned",
                    "CustomerCreated",
                ],
                2000,
            ),
            &[
                "after_sequence",
                "max_batch_size",
                "event_types[1]",
                "event_types[2]",
            ],
        );
    }

    #[test]
    fn consumer_names_are_short_slugs() {
        let named = |consumer: &str| SubscribeRequest {
            consumer: consumer.to_owned(),
            ..request(0, &[], 0)
        };
        check(named(""), &[]);
        check(named("segmentation"), &[]);
        check(named("loyalty-2_b"), &[]);
        check(named("Segmentation"), &["consumer"]);
        check(named("2loyalty"), &["consumer"]);
        check(named("seg mentation"), &["consumer"]);
        check(named(&"a".repeat(64)), &["consumer"]);
        check(
            SubscribeRequest {
                consumer: "-".to_owned(),
                ..request(-1, &[], 0)
            },
            &["after_sequence", "consumer"],
        );
    }

    #[test]
    fn a_position_expires_when_the_event_after_it_is_pruned() {
        assert!(!is_expired(0, 0), "an empty feed");
        assert!(!is_expired(0, 1));
        assert!(is_expired(0, 2), "a new consumer on a pruned feed");
        assert!(!is_expired(4, 5));
        assert!(!is_expired(9, 5));
        assert!(is_expired(4, 6));
    }

    #[test]
    fn a_feed_knows_exactly_its_service_events() {
        let profiles = EventTypes::of(ServiceKind::Profiles);
        assert!(profiles.contains("custops.profiles.v1.CustomerMerged"));
        assert!(!profiles.contains("custops.profiles.v1.Customer"));
        let loyalty = EventTypes::of(ServiceKind::Loyalty);
        assert!(loyalty.contains("custops.loyalty.v1.PointsEarned"));
        assert!(!loyalty.contains("custops.profiles.v1.CustomerMerged"));
    }
}
