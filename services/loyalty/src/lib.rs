//! The loyalty service: points and membership: programs, members, the points ledger, tiers, benefits and rewards.
//!
//! # Layout
//! - `api`: the `custops.loyalty.v1.LoyaltyService` gRPC API (transport only): `convert`
//!   (prost ↔ domain, validation), `error` (the one mapping to `Status`), `events` (outbox).
//! - `domain`: plain Rust types and rules (earning calculation, FIFO lots, clawback,
//!   rejections, the injectable `Clock`); no tonic, prost or sqlx.
//! - `store`: the `loyalty` schema through sqlx, and the transactions that apply the rules.
//! - `migrations/`: the `loyalty` schema, applied after the shared ones from `libs/common`.

pub mod api;
pub mod domain;
pub mod store;

use std::sync::Arc;

use custops_common::bootstrap;
use custops_common::config::ServiceSettings;
use custops_common::feed::{FeedOptions, event_feed_server};
use custops_common::server::Application;
use sqlx::migrate::Migrator;

use crate::domain::{Clock, SystemClock};

/// This service's own migrations (`services/loyalty/migrations`).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Connects, migrates and binds the service; serve it with
/// [`Application::run_until_stopped`].
pub async fn build(settings: ServiceSettings) -> anyhow::Result<Application> {
    build_with_clock(settings, Arc::new(SystemClock)).await
}

/// [`build`] with another clock, so tests can walk time forward.
pub async fn build_with_clock(
    settings: ServiceSettings,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Application> {
    let (pool, app) = bootstrap::prepare(&settings, &MIGRATIONS).await?;
    // Feed streams end as soon as the server starts draining, not at the end of the grace.
    let feed_options = FeedOptions {
        shutdown: app.shutdown_token(),
        ..FeedOptions::default()
    };
    let store = store::PgStore::new(pool.clone(), clock.clone());
    api::profiles_feed::spawn(&settings, pool.clone(), clock, app.shutdown_token())?;
    let feed = event_feed_server(pool, settings.service, feed_options);
    Ok(app
        .add_api(api::server(store, settings.page_tokens.clone()))
        .add_api(feed))
}
