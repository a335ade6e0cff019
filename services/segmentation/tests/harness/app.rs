//! The segmentation service started in-process on port 0 over a fresh database with a manual
//! clock, a typed client, and a pool on the service's schema for arranging facts and for
//! driving the feed handlers directly.

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use custops_common::clock::ManualClock;
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use custops_testkit::TestDatabase;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// A running segmentation service.
pub(crate) struct TestApp {
    pub(crate) client: SegmentationServiceClient<Channel>,
    #[allow(dead_code, reason = "not every test binary moves time")]
    pub(crate) clock: ManualClock,
    /// Pool whose connections live in the `segmentation` schema.
    pub(crate) pool: PgPool,
    stop: CancellationToken,
    // Last: the database is dropped after everything that uses it.
    _db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The as-of instant of the fixtures: 2026-11-23T00:00:00Z.
pub(crate) fn as_of() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The service over a fresh database, its clock at [`as_of`].
pub(crate) async fn spawn_app() -> anyhow::Result<TestApp> {
    let db = TestDatabase::create().await?;
    let settings = ServiceSettings::for_local(ServiceKind::Segmentation, db.url());
    let clock = ManualClock::new(as_of());
    let overrides = custops_segmentation::Overrides {
        clock: Arc::new(clock.clone()),
    };
    let app = custops_segmentation::build_with(settings, overrides).await?;
    let port = app.port();
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move { app.run_until_stopped(stop.cancelled_owned()).await }
    });
    let client = SegmentationServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
    let options = PgConnectOptions::from_str(db.url())?.options([("search_path", "segmentation")]);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    Ok(TestApp {
        client,
        clock,
        pool,
        stop,
        _db: db,
    })
}
