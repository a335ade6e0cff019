//! The segmentation service: who is in which group: rule and static segments, RFM, lifecycle
//! stages and fast membership lookups.
//!
//! # Layout
//! - `api`: the `custops.segmentation.v1.SegmentationService` gRPC API (transport only).
//! - `domain`: facts, catalog, rules and the in-process evaluator, RFM and lifecycle rules.
//! - `rules_wire`: rules and explanations ↔ their wire messages (used by `api` and by the
//!   decoding of stored rules).
//! - `segments_wire`: stored segments as wire messages (responses and outbox events).
//! - `workflow`: the use cases, reads included: one transaction each over `store`, with outbox
//!   events, idempotency keys and job queueing; `api` parses, calls one, converts.
//! - `error`: the service's one error type (refusals by name, database, internal);
//!   `api::error` maps it to `Status`.
//! - `store`: sqlx queries on the `segmentation` schema, the rule → SQL compiler.
//! - `feeds`: follows the profiles, loyalty and feedback feeds into the facts projection.
//! - `derived`: RFM and lifecycle values, per customer and in full runs.
//! - `membership`: keeps memberships current as facts change (events, erasures, merges).
//! - `lookups`: the membership lookup caches (in-process, Redis) and their write-through.
//! - `jobs`: recompute jobs, the rollover pass and the scheduler.
//! - `events`: the membership, segment and job events of the outbox.
//! - `state`: what handlers and background tasks share.
//! - `migrations/`: the `segmentation` schema, applied after the shared ones from `libs/common`.

pub mod api;
pub mod derived;
pub mod domain;
pub mod error;
pub mod events;
pub mod feeds;
pub mod fixture;
pub mod jobs;
pub mod lookups;
pub mod membership;
pub mod rules_wire;
pub mod segments_wire;
pub mod state;
pub mod store;
pub mod workflow;

use std::sync::Arc;

use anyhow::Context;
use custops_common::bootstrap;
use custops_common::clock::{Clock, SystemClock};
use custops_common::config::ServiceSettings;
use custops_common::feed::{FeedOptions, event_feed_server};
use custops_common::server::Application;
use sqlx::migrate::Migrator;

/// This service's own migrations (`services/segmentation/migrations`).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// What tests may replace in a built service.
#[derive(Debug, Clone)]
pub struct Overrides {
    /// The clock of evaluations, rollovers and jobs (tests move time).
    pub clock: Arc<dyn Clock>,
}

impl Default for Overrides {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
        }
    }
}

/// Connects, migrates and binds the service; serve it with
/// [`Application::run_until_stopped`].
pub async fn build(settings: ServiceSettings) -> anyhow::Result<Application> {
    build_with(settings, Overrides::default()).await
}

/// [`build`] with `overrides`.
pub async fn build_with(
    settings: ServiceSettings,
    overrides: Overrides,
) -> anyhow::Result<Application> {
    build_with_workers(settings, overrides, jobs::WorkerOptions::default()).await
}

/// [`build_with`], with the recompute worker and scheduler paced by `workers` (tests poll
/// faster and drive the scheduler themselves).
pub async fn build_with_workers(
    settings: ServiceSettings,
    overrides: Overrides,
    workers: jobs::WorkerOptions,
) -> anyhow::Result<Application> {
    let (pool, app) = bootstrap::prepare(&settings, &MIGRATIONS).await?;
    // Feed streams end as soon as the server starts draining, not at the end of the grace.
    let feed_options = FeedOptions {
        shutdown: app.shutdown_token(),
        ..FeedOptions::default()
    };
    let feed = event_feed_server(pool.clone(), settings.service, feed_options);
    let redis = match &settings.redis {
        Some(redis) => Some(
            custops_common::cache::RedisCache::connect(redis)
                .await
                .context("Failed to set up the Redis client")?,
        ),
        None => None,
    };
    let lookups = Arc::new(lookups::Lookups::new(redis));
    let state = Arc::new(state::AppState {
        pool: pool.clone(),
        clock: overrides.clock,
        page_tokens: settings.page_tokens.clone(),
        lookups: lookups.clone(),
    });
    let shutdown = app.shutdown_token();
    let listening = tokio_util::sync::CancellationToken::new();
    custops_common::telemetry::spawn(lookups::listen(
        lookups,
        pool.clone(),
        shutdown.clone(),
        listening.clone(),
    ));
    // Changes committed before the listener is in place would never reach the cache.
    tokio::time::timeout(std::time::Duration::from_secs(10), listening.cancelled())
        .await
        .context("Failed to start listening for membership changes")?;
    feeds::start(
        &settings,
        pool.clone(),
        state.clock.clone(),
        app.shutdown_token(),
    );
    jobs::start(state.clone(), workers, shutdown);
    let api = api::SegmentationApi::new(state);
    Ok(app.add_api(api::server(api)).add_api(feed))
}
