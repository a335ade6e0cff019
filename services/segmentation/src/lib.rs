//! The segmentation service: who is in which group: rule and static segments, RFM, lifecycle
//! stages and fast membership lookups.
//!
//! # Layout
//! - `api`: the `custops.segmentation.v1.SegmentationService` gRPC API (transport only):
//!   parse, call one use case, convert; `api::error` is the one mapping to `Status`.
//! - `error`: the service's one error type (refusals by name, database, internal).
//! - `domain`: facts, catalog, rules and the in-process evaluator, RFM and lifecycle rules, the
//!   segment reference graph.
//! - `workflow`: the use cases (one transaction each over `store`, with outbox events,
//!   idempotency keys and job queueing), and the engines feeds and jobs run in their own
//!   transactions: memberships (`membership`), RFM and lifecycle (`derived`), set-based
//!   recomputes (`recompute`).
//! - `store`: sqlx queries on the `segmentation` schema, the rule → SQL compiler.
//! - `wire`: segmentation's types as the contract's messages where more than the API needs
//!   them (outbox payloads, stored responses, stored rules).
//! - `feeds`: follows the profiles, loyalty and feedback feeds into the facts projection.
//! - `jobs`: the background work: recompute worker, scheduler (rollover pass, full recompute,
//!   RFM bounds) and the lookup caches' listener.
//! - `lookups`: the membership lookup caches (in-process, Redis) and their write-through.
//! - `events`: the membership, segment and job events of the outbox.
//! - `fixture`: the scale fixture of tests and `custops bench`.
//! - `state`: what handlers and background tasks share.
//! - `migrations/`: the `segmentation` schema, applied after the shared ones from `libs/common`.

pub mod api;
pub mod domain;
pub mod error;
pub mod events;
pub mod feeds;
pub mod fixture;
pub mod jobs;
pub mod lookups;
pub mod state;
pub mod store;
pub mod wire;
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
    let feed_options =
        FeedOptions::for_service(&settings, overrides.clock.clone(), app.shutdown_token());
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
    let listen_options = custops_common::db::direct_options(&settings.database)
        .context("Failed to read the direct database URL")?;
    custops_common::telemetry::spawn(jobs::listener::listen(
        lookups,
        pool.clone(),
        listen_options,
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
