//! The loyalty service: points and membership: programs, members, the points ledger, tiers, benefits and rewards.
//!
//! # Layout
//! - `api`: the `custops.loyalty.v1.LoyaltyService` gRPC API (transport only).
//! - `migrations/`: the `loyalty` schema, applied after the shared ones from `libs/common`.

pub mod api;

use custops_common::bootstrap;
use custops_common::config::ServiceSettings;
use custops_common::feed::{FeedOptions, event_feed_server};
use custops_common::server::Application;
use sqlx::migrate::Migrator;

/// This service's own migrations (`services/loyalty/migrations`).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Connects, migrates and binds the service; serve it with
/// [`Application::run_until_stopped`].
pub async fn build(settings: ServiceSettings) -> anyhow::Result<Application> {
    let (pool, app) = bootstrap::prepare(&settings, &MIGRATIONS).await?;
    // Feed streams end as soon as the server starts draining, not at the end of the grace.
    let feed_options = FeedOptions {
        shutdown: app.shutdown_token(),
        ..FeedOptions::default()
    };
    let feed = event_feed_server(pool, settings.service, feed_options);
    Ok(app.add_api(api::server()).add_api(feed))
}
