//! The feedback service: listening to customers: surveys, responses, NPS/CSAT/CES metrics, tickets, follow-ups and reviews.
//!
//! # Layout
//! - `api`: the `custops.feedback.v1.FeedbackService` gRPC API (transport only), one module
//!   per area (`surveys`, `responses`, `metrics`, `tickets`, `reviews`, `customers`): each
//!   handler parses its request (the area's parsers over the shared field parsers of
//!   `api/parse`), calls one use case and converts the result (`api/convert`).
//! - `workflow`: the use cases, one transaction each (store + domain rules + outbox); a call
//!   with a request id runs through `custops_common::idempotency` and replays its first reply.
//! - `domain`: plain Rust types and rules (no tonic, prost or sqlx), and the refusals by name
//!   (`Rejection`); the suite's clock is re-exported there, but the domain reads no clock.
//! - `store`: sqlx queries on the `feedback` schema; metrics are aggregated in SQL there.
//! - `events`: the outbox events (events.proto) built from domain values; with `api` it shares
//!   `wire`, the domain ↔ wire value mappings, so neither imports the other.
//! - `feeds`: consumers of other services' feeds: `feeds::profiles` (merges, unmerges and
//!   erasures, applied by `store::customers`).
//! - `jobs`: background work: `jobs::rewards`, the worker that pays survey rewards through
//!   loyalty, exactly once; the pruner of idempotency keys past their retention.
//! - `segments`: membership questions to segmentation (targeted surveys, response segments).
//! - `error`: the service's one error enum (the domain's `Rejection` by name, invalid fields,
//!   database, internal); `api/error` is its one mapping to `Status`.
//! - `migrations/`: the `feedback` schema, applied after the shared ones from `libs/common`.

pub mod api;
pub mod domain;
pub mod error;
pub mod events;
pub mod feeds;
pub mod jobs;
pub mod segments;
pub mod store;
mod wire;
pub mod workflow;

use std::sync::Arc;

use custops_common::bootstrap;
use custops_common::config::ServiceSettings;
use custops_common::feed::{FeedOptions, event_feed_server};
use custops_common::server::Application;
use sqlx::migrate::Migrator;

use crate::domain::{Clock, SystemClock};

/// This service's own migrations (`services/feedback/migrations`).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Connects, migrates and binds the service; serve it with
/// [`Application::run_until_stopped`].
pub async fn build(settings: ServiceSettings) -> anyhow::Result<Application> {
    build_with(settings, Overrides::default()).await
}

/// What tests may replace in a built service.
#[derive(Debug, Clone)]
pub struct Overrides {
    /// The service's clock: the API's, the reward worker's and the feed consumer's (tests move
    /// time to check SLA breaches and reward retries).
    pub clock: Arc<dyn Clock>,
    /// The reward worker's pacing (tests retry faster).
    pub rewards: jobs::rewards::WorkerOptions,
    /// How often expired idempotency keys are pruned ([`jobs::PRUNE_KEYS_EVERY`]; a test
    /// prunes sooner).
    pub prune_keys_every: std::time::Duration,
}

impl Default for Overrides {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            rewards: jobs::rewards::WorkerOptions::default(),
            prune_keys_every: jobs::PRUNE_KEYS_EVERY,
        }
    }
}

/// [`build`] with `overrides`.
pub async fn build_with(
    settings: ServiceSettings,
    overrides: Overrides,
) -> anyhow::Result<Application> {
    let clock = overrides.clock;
    let (pool, app) = bootstrap::prepare(&settings, &MIGRATIONS).await?;
    let feed_options = FeedOptions::for_service(&settings, clock.clone(), app.shutdown_token());
    let feed = event_feed_server(pool.clone(), settings.service, feed_options);
    feeds::start(&settings, pool.clone(), clock.clone(), app.shutdown_token());
    jobs::start(
        &settings,
        pool.clone(),
        clock.clone(),
        overrides.rewards,
        overrides.prune_keys_every,
        app.shutdown_token(),
    );
    let api = api::FeedbackApi::new(
        store::PgStore { pool },
        clock,
        settings.page_tokens.clone(),
        segment_directory(&settings),
    );
    Ok(app.add_api(api::server(api)).add_api(feed))
}

/// Segmentation over gRPC when its address is configured (`CUSTOPS_SEGMENTATION_URL`).
fn segment_directory(settings: &ServiceSettings) -> Option<Arc<dyn segments::SegmentDirectory>> {
    use custops_common::client::ClientBuilder;
    use custops_common::service::ServiceKind;
    if !settings
        .clients
        .peers
        .contains_key(&ServiceKind::Segmentation)
    {
        tracing::info!("CUSTOPS_SEGMENTATION_URL not set: segment-targeted surveys cannot invite");
        return None;
    }
    match ClientBuilder::for_peer(
        &settings.clients,
        ServiceKind::Segmentation,
        segments::SEGMENTATION_SCOPES,
    )
    .and_then(ClientBuilder::build)
    {
        Ok(channel) => Some(Arc::new(segments::GrpcSegments::new(channel))),
        Err(error) => {
            tracing::warn!(%error, "cannot reach segmentation");
            None
        }
    }
}
