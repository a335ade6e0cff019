//! Starting a feed server over a fresh database, and small helpers the outbox tests share.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use custops_common::auth::AuthSettings;
use custops_common::client::{self, ServiceChannel};
use custops_common::config::ServerSettings;
use custops_common::feed::{EventFeedApi, FeedOptions};
use custops_common::outbox::{self, OutboxEvent};
use custops_common::server::Application;
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use custops_contracts::custops::common::v1::{SubscribeRequest, SubscribeResponse};
use custops_contracts::custops::profiles::v1::{ConsentChanged, CustomerDeleted};
use custops_testkit::TestDatabase;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use uuid::Uuid;

/// The producing service in these tests.
pub(crate) const PRODUCER: ServiceKind = ServiceKind::Profiles;

/// How long a test waits for something that should happen at once.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// A profiles feed served on a free port over a database of its own.
pub(crate) struct FeedServer {
    /// Pool in the producer's schema.
    pub(crate) pool: PgPool,
    /// The feed API (the same one the server serves).
    pub(crate) api: EventFeedApi,
    /// Cancelling it stops the server and ends the feed's streams, as a SIGTERM would.
    pub(crate) stop: CancellationToken,
    /// The server task.
    pub(crate) server: tokio::task::JoinHandle<anyhow::Result<()>>,
    addr: std::net::SocketAddr,
    // Last, so the database is dropped after the pool.
    pub(crate) db: TestDatabase,
}

impl FeedServer {
    /// Creates a database, migrates the producer's schema and serves its feed with `options`
    /// (whose `shutdown` is replaced by the server's stop token).
    pub(crate) async fn start(options: FeedOptions) -> anyhow::Result<Self> {
        init_logging();
        let db = TestDatabase::create().await?;
        let pool = schema_pool(&db, PRODUCER.schema()).await?;
        let stop = CancellationToken::new();
        let api = EventFeedApi::start(
            pool.clone(),
            PRODUCER,
            FeedOptions {
                shutdown: stop.clone(),
                ..options
            },
        );
        let mut server = ServerSettings::local(PRODUCER, AuthSettings::Disabled);
        server.shutdown_grace = Duration::from_secs(30);
        let app = Application::bind(&server)
            .await?
            .add_api(api.clone().into_server());
        let addr = app.local_addr();
        let server = tokio::spawn({
            let stop = stop.clone();
            async move {
                app.run_until_stopped(stop.cancelled_owned()).await?;
                Ok(())
            }
        });
        Ok(Self {
            pool,
            api,
            stop,
            server,
            addr,
            db,
        })
    }

    /// A channel to the server, as a consumer gets it.
    pub(crate) async fn channel(&self) -> anyhow::Result<ServiceChannel> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await
            .context("Failed to connect to the feed server")?;
        Ok(client::plain(channel))
    }

    /// A feed client.
    pub(crate) async fn client(&self) -> anyhow::Result<EventFeedServiceClient<ServiceChannel>> {
        Ok(EventFeedServiceClient::new(self.channel().await?))
    }

    /// Opens a Subscribe stream.
    pub(crate) async fn subscribe(
        &self,
        after_sequence: i64,
        event_types: &[&str],
        max_batch_size: i32,
    ) -> anyhow::Result<Streaming<SubscribeResponse>> {
        let request = SubscribeRequest {
            after_sequence,
            event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
            max_batch_size,
            consumer: String::new(),
        };
        Ok(self.client().await?.subscribe(request).await?.into_inner())
    }

    /// Waits until the feed's listener holds its LISTEN connection.
    pub(crate) async fn until_listening(&self) -> anyhow::Result<()> {
        let api = self.api.clone();
        anyhow::ensure!(
            custops_testkit::eventually(PATIENCE, || {
                let listening = api.is_listening();
                async move { listening }
            })
            .await,
            "the feed never started listening"
        );
        Ok(())
    }
}

/// A pool whose connections live in `schema`, migrated with the shared migrations only.
pub(crate) async fn schema_pool(db: &TestDatabase, schema: &'static str) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(db.url())?.options([("search_path", schema)]);
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect_with(options)
        .await?;
    custops_common::db::migrate(&pool, schema, &Migrator::with_migrations(Vec::new())).await?;
    Ok(pool)
}

/// A `CustomerDeleted` event about a new customer.
pub(crate) fn deleted() -> OutboxEvent {
    let id = Uuid::now_v7();
    OutboxEvent::new(
        "customer",
        id,
        &CustomerDeleted {
            customer_id: id.to_string(),
            delete_time: None,
        },
    )
}

/// A `ConsentChanged` event about a new customer.
pub(crate) fn consent_changed() -> OutboxEvent {
    OutboxEvent::new("customer", Uuid::now_v7(), &ConsentChanged::default())
}

/// Appends `event` in a transaction of its own and commits it; returns the event id.
pub(crate) async fn commit(pool: &PgPool, event: OutboxEvent) -> anyhow::Result<Uuid> {
    let mut tx = pool.begin().await?;
    let id = outbox::append(&mut tx, event).await?;
    tx.commit().await?;
    Ok(id)
}

/// The next message of a stream, failing the test if none comes within [`PATIENCE`].
pub(crate) async fn next(
    stream: &mut Streaming<SubscribeResponse>,
) -> anyhow::Result<SubscribeResponse> {
    next_within(stream, PATIENCE).await
}

/// The next message of a stream, failing if none comes within `patience`.
pub(crate) async fn next_within(
    stream: &mut Streaming<SubscribeResponse>,
    patience: Duration,
) -> anyhow::Result<SubscribeResponse> {
    tokio::time::timeout(patience, stream.message())
        .await
        .with_context(|| format!("no message within {patience:?}"))??
        .context("the stream ended")
}

/// Reads responses until the stream's position reaches `position`; returns every event id in
/// delivery order, checking that sequences strictly increase.
pub(crate) async fn read_until(
    stream: &mut Streaming<SubscribeResponse>,
    position: i64,
) -> anyhow::Result<Vec<(i64, Uuid)>> {
    let mut seen: Vec<(i64, Uuid)> = Vec::new();
    let mut last = 0;
    while last < position {
        let response = next(stream).await?;
        for event in response.events {
            if let Some((previous, _)) = seen.last() {
                anyhow::ensure!(event.sequence > *previous, "sequence went backwards");
            }
            seen.push((event.sequence, event.event_id.parse()?));
        }
        last = response.last_sequence;
    }
    Ok(seen)
}

fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Asserts `status` is the feed's "position expired" refusal: FAILED_PRECONDITION with reason
/// `FEED_POSITION_EXPIRED` and the oldest retained sequence in its metadata.
pub(crate) fn assert_position_expired(status: &tonic::Status, oldest: &str) {
    use tonic_types::StatusExt as _;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    let info = status.get_details_error_info();
    assert_eq!(
        info.as_ref().map(|info| info.reason.as_str()),
        Some("FEED_POSITION_EXPIRED")
    );
    assert_eq!(
        info.as_ref()
            .and_then(|info| info.metadata.get("oldest_sequence"))
            .map(String::as_str),
        Some(oldest)
    );
}
