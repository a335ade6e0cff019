//! The segmentation service: who is in which group: rule and static segments, RFM, lifecycle
//! stages and fast membership lookups.
//!
//! # Layout
//! - `api`: the `custops.segmentation.v1.SegmentationService` gRPC API (transport only).
//! - `domain`: facts, catalog, rules and the in-process evaluator, RFM and lifecycle rules.
//! - `store`: sqlx queries on the `segmentation` schema, the rule → SQL compiler.
//! - `feeds`: follows the profiles, loyalty and feedback feeds into the facts projection.
//! - `derived`: RFM and lifecycle values, per customer and in full runs.
//! - `membership`: keeps memberships current as facts change (events, erasures, merges).
//! - `state`: what handlers and background tasks share.
//! - `migrations/`: the `segmentation` schema, applied after the shared ones from `libs/common`.

pub mod api;
pub mod derived;
pub mod domain;
pub mod feeds;
pub mod membership;
pub mod state;
pub mod store;

use std::sync::Arc;

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
    let (pool, app) = bootstrap::prepare(&settings, &MIGRATIONS).await?;
    // Feed streams end as soon as the server starts draining, not at the end of the grace.
    let feed_options = FeedOptions {
        shutdown: app.shutdown_token(),
        ..FeedOptions::default()
    };
    let feed = event_feed_server(pool.clone(), settings.service, feed_options);
    feeds::start(
        &settings,
        pool.clone(),
        overrides.clock.clone(),
        app.shutdown_token(),
    );
    let state = Arc::new(state::AppState {
        pool,
        clock: overrides.clock,
        page_tokens: settings.page_tokens.clone(),
    });
    let api = api::SegmentationApi::new(state);
    Ok(app.add_api(api::server(api)).add_api(feed))
}
