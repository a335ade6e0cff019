//! `spawn_app`: the real service (`custops_profiles::build_with`) on a free port over a fresh
//! database, with a manual clock and a typed client; plus helpers the tests share. Logs of every test go into
//! one in-memory capture (printed too with `TEST_LOG`), so the PII test can read them.

use std::io::Write;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use custops_common::client::{self, ServiceChannel};
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::profiles::v1 as pb;
use custops_contracts::custops::profiles::v1::profiles_service_client::ProfilesServiceClient;
use custops_profiles::domain::{Clock, ManualClock, SystemClock};
use custops_testkit::TestDatabase;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// A running profiles service.
pub(crate) struct TestApp {
    /// Client of the ProfilesService.
    pub(crate) client: ProfilesServiceClient<ServiceChannel>,
    /// A channel to the server (for feed consumers).
    pub(crate) channel: ServiceChannel,
    /// Pool in the profiles schema, for arranging faults and checking rows.
    pub(crate) pool: PgPool,
    /// The service clock: it stands still until a test moves it. (Except for
    /// [`spawn_app_on_the_wall_clock`], whose service reads the system clock, not this one.)
    pub(crate) clock: Arc<ManualClock>,
    stop: CancellationToken,
    // Last, so the database is dropped after the pool and the server.
    pub(crate) db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts the service as the binary does, on port 0, over a new database.
pub(crate) async fn spawn_app() -> anyhow::Result<TestApp> {
    spawn_app_with(|_| ()).await
}

/// [`spawn_app`] with settings adjusted by `adjust` (e.g. peer URLs).
pub(crate) async fn spawn_app_with(
    adjust: impl FnOnce(&mut ServiceSettings),
) -> anyhow::Result<TestApp> {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let db = TestDatabase::create().await?;
    launch(
        db,
        adjust,
        clock.clone(),
        clock,
        custops_profiles::PRUNE_EVERY,
    )
    .await
}

/// [`spawn_app`] pruning expired request ids every `every` instead of hourly.
pub(crate) async fn spawn_app_pruning_every(every: Duration) -> anyhow::Result<TestApp> {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let db = TestDatabase::create().await?;
    launch(db, |_| (), clock.clone(), clock, every).await
}

/// [`spawn_app`] over `db` as a test prepared it (e.g. migrated to an older version, with
/// rows of that version); the service applies the remaining migrations as it starts.
pub(crate) async fn spawn_app_on(db: TestDatabase) -> anyhow::Result<TestApp> {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    launch(
        db,
        |_| (),
        clock.clone(),
        clock,
        custops_profiles::PRUNE_EVERY,
    )
    .await
}

/// [`spawn_app`] with the production clock (`SystemClock`, the wall clock to the
/// microsecond), for checking that times answered equal times stored.
pub(crate) async fn spawn_app_on_the_wall_clock() -> anyhow::Result<TestApp> {
    let unused = Arc::new(ManualClock::new(chrono::Utc::now()));
    let db = TestDatabase::create().await?;
    launch(
        db,
        |_| (),
        Arc::new(SystemClock),
        unused,
        custops_profiles::PRUNE_EVERY,
    )
    .await
}

async fn launch(
    db: TestDatabase,
    adjust: impl FnOnce(&mut ServiceSettings),
    service_clock: Arc<dyn Clock>,
    clock: Arc<ManualClock>,
    prune_every: Duration,
) -> anyhow::Result<TestApp> {
    init_logging();
    let mut settings = ServiceSettings::for_local(ServiceKind::Profiles, db.url());
    adjust(&mut settings);
    let options = custops_profiles::Options {
        clock: service_clock,
        prune_every,
    };
    let app = custops_profiles::build_with(settings, options).await?;
    let addr = app.local_addr();
    let stop = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .context("Failed to connect to the profiles service")?;
    let channel = client::plain(channel);
    let pool = schema_pool(&db, "profiles").await?;
    Ok(TestApp {
        client: ProfilesServiceClient::new(channel.clone()),
        channel,
        pool,
        clock,
        stop,
        db,
    })
}

/// A pool on the test database whose connections live in `schema`.
pub(crate) async fn schema_pool(db: &TestDatabase, schema: &str) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(db.url())?.options([("search_path", schema)]);
    Ok(PgPoolOptions::new()
        .max_connections(5)
        .connect_with(options)
        .await?)
}

/// Everything logged so far by any test in this binary.
pub(crate) fn captured_logs() -> String {
    let buffer = CAPTURE.get_or_init(|| Mutex::new(Vec::new()));
    let bytes = buffer.lock().map(|b| b.clone()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

static CAPTURE: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

struct CaptureWriter;

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = CAPTURE.get_or_init(|| Mutex::new(Vec::new())).lock() {
            b.extend_from_slice(buf);
        }
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Debug for our code and sqlx (statements), so a leak at any level shows.
        let filter = tracing_subscriber::EnvFilter::new(
            "debug,h2=info,hyper=info,tower=info,tonic=info,hyper_util=info",
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(|| CaptureWriter)
            .with_ansi(false)
            .try_init();
    });
}

/// The field paths of an INVALID_ARGUMENT's BadRequest.
pub(crate) fn bad_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|f| f.field).collect())
        .unwrap_or_default()
}

/// The ErrorInfo reason of a status.
pub(crate) fn reason(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|i| i.reason)
}

/// Fails unless `result` is an error with `code`; returns the status.
pub(crate) fn expect_code<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
) -> anyhow::Result<Status> {
    match result {
        Err(status) if status.code() == code => Ok(status),
        other => anyhow::bail!("expected {code:?}, got {other:?}"),
    }
}

/// An identity.
pub(crate) fn identity(kind: pb::IdentityType, value: &str) -> pb::Identity {
    pb::Identity {
        identity_type: kind as i32,
        namespace: String::new(),
        value: value.to_owned(),
        create_time: None,
    }
}

/// A customer with an e-mail (and optionally a phone) and a few traits.
pub(crate) fn customer(email: &str) -> pb::Customer {
    pb::Customer {
        given_name: "Wei".to_owned(),
        family_name: "Li".to_owned(),
        identities: vec![identity(pb::IdentityType::Email, email)],
        geography: Some(pb::Geography {
            country_code: "cn".to_owned(),
            region: "CN-GD".to_owned(),
            city: "Shenzhen".to_owned(),
            postal_code: String::new(),
        }),
        tags: vec!["vip".to_owned()],
        ..pb::Customer::default()
    }
}

/// Creates a customer and returns it.
pub(crate) async fn create(app: &TestApp, customer: pb::Customer) -> anyhow::Result<pb::Customer> {
    let response = app
        .client
        .clone()
        .create_customer(pb::CreateCustomerRequest {
            customer: Some(customer),
            request_id: String::new(),
        })
        .await?;
    response
        .into_inner()
        .customer
        .context("no customer in the response")
}

/// A unique e-mail address for this test.
pub(crate) fn unique_email(tag: &str) -> String {
    format!("{tag}.{}@example.com", uuid::Uuid::new_v4().simple())
}

/// Now as a Timestamp, shifted by `seconds`.
pub(crate) fn time(seconds_from_now: i64) -> prost_types::Timestamp {
    let now = chrono::Utc::now().timestamp();
    prost_types::Timestamp {
        seconds: now + seconds_from_now,
        nanos: 0,
    }
}

/// A purchase activity of `customer_id`.
pub(crate) fn purchase(customer_id: &str, event_id: &str, amount_minor: i64) -> pb::Activity {
    pb::Activity {
        customer_id: customer_id.to_owned(),
        source: "order_service".to_owned(),
        event_id: event_id.to_owned(),
        occur_time: Some(time(-3600)),
        channel: "web".to_owned(),
        details: Some(pb::activity::Details::Purchase(pb::Purchase {
            order_id: format!("order-{event_id}"),
            amount: Some(common::Money {
                amount_minor,
                currency: "CNY".to_owned(),
            }),
            categories: vec!["shoes".to_owned()],
            item_count: 1,
        })),
        ..pb::Activity::default()
    }
}

/// Types of the outbox events about `aggregate_id`, in append order.
pub(crate) async fn outbox_types(app: &TestApp, aggregate_id: &str) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT type FROM outbox WHERE aggregateid = $1 ORDER BY appended_at, id",
    )
    .bind(aggregate_id)
    .fetch_all(&app.pool)
    .await?)
}
