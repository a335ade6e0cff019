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
//! Lifetimes: [`EventFeedApi::start`] spawns the sequencer and the listener; they stop when
//! the last clone of the API (the server's, and any open stream's) is dropped. Cancelling
//! [`FeedOptions::shutdown`] ends every open stream at once with `UNAVAILABLE` and refuses new
//! subscriptions, so a draining server does not wait for long-lived streams.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::client::RetryPolicy;
use crate::error::{ServiceError, Violations};
use custops_contracts::custops::common::v1::event_feed_service_server::{
    EventFeedService, EventFeedServiceServer,
};
use custops_contracts::custops::common::v1::{
    Event, GetFeedPositionRequest, GetFeedPositionResponse, SubscribeRequest, SubscribeResponse,
};
use futures_util::Stream;
use sqlx::postgres::{PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{Request, Response, Status};

use crate::outbox::feed_channel;
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
    /// Cancelled when the server begins to shut down: open streams end with `UNAVAILABLE`
    /// (the consumer resubscribes to another replica) and new ones are refused. The sequencer
    /// keeps running until the API is dropped, so events committed by calls still draining
    /// get their position.
    pub shutdown: CancellationToken,
}

impl Default for FeedOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            sequencer_idle_poll: DEFAULT_SEQUENCER_IDLE_POLL,
            sequencer_batch_size: sequencer::DEFAULT_BATCH_SIZE,
            shutdown: CancellationToken::new(),
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
            pool.clone(),
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
        let (oldest, _) = feed_position(&self.shared.pool)
            .await
            .map_err(database_status)?;
        if query.after_sequence > 0 && oldest > query.after_sequence + 1 {
            return Err(Status::out_of_range(format!(
                "after_sequence {} lies before the oldest retained event ({oldest}); \
                 rebuild from a snapshot",
                query.after_sequence
            )));
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
}

/// A validated `SubscribeRequest`.
struct SubscribeQuery {
    after_sequence: i64,
    event_types: Vec<String>,
    max_batch_size: i64,
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
        violations.into_result()?;
        Ok(Self {
            after_sequence: request.after_sequence,
            event_types: request.event_types,
            max_batch_size: i64::from(max_batch_size),
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
        "WITH top AS (SELECT COALESCE(MAX(sequence), 0) AS top FROM outbox) \
         SELECT top.top, o.sequence, o.id, o.aggregatetype, o.aggregateid, o.type, o.payload, \
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
    .fetch_all(pool)
    .await?;

    let mut top = 0;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        top = row.try_get::<i64, _>("top")?;
        if let Some(event) = event_from_row(row)? {
            events.push(event);
        }
    }
    let full = i64::try_from(events.len()).is_ok_and(|len| len >= limit);
    let position = match events.last() {
        Some(last) if full => last.sequence,
        _ => top.max(after),
    };
    Ok(Page { events, position })
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

/// Oldest and newest sequence of the feed (0 and 0 when it is empty).
async fn feed_position(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as::<_, (i64, i64)>(
        "SELECT COALESCE(MIN(sequence), 0), COALESCE(MAX(sequence), 0) FROM outbox",
    )
    .fetch_one(pool)
    .await
}

/// The per-process listener: one connection LISTENing on the schema's feed channel (wakes the
/// streams). Reconnects with backoff; after every (re)connection it wakes them, since
/// notifications sent meanwhile are lost.
///
/// The connection is its own (same options as the service's pool, outside it): a listener
/// holds its connection for good, and must not take one from the requests, nor starve them
/// when the pool is small.
async fn listen(
    service_pool: PgPool,
    schema: &'static str,
    feed_tick: Arc<watch::Sender<u64>>,
    listening: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with((*service_pool.connect_options()).clone());
    drop(service_pool);
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
    fn a_feed_knows_exactly_its_service_events() {
        let profiles = EventTypes::of(ServiceKind::Profiles);
        assert!(profiles.contains("custops.profiles.v1.CustomerMerged"));
        assert!(!profiles.contains("custops.profiles.v1.Customer"));
        let loyalty = EventTypes::of(ServiceKind::Loyalty);
        assert!(loyalty.contains("custops.loyalty.v1.PointsEarned"));
        assert!(!loyalty.contains("custops.profiles.v1.CustomerMerged"));
    }
}
