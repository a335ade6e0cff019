//! The profiles service: the single customer record: customers, identities, consent, activities, merge, privacy and Customer 360.
//!
//! # Layout
//! - `api`: the `custops.profiles.v1.ProfilesService` gRPC API (transport only): each handler
//!   parses its request (`api/commands.rs`, `api/convert.rs`: every bad field collected), calls
//!   one use case in `workflow` and converts the answer; `api/error.rs` is the one mapping of
//!   `ProfilesError` to `Status`. `customer360`, `export` and `peers` reach the other services.
//! - `workflow`: the use cases, one function per operation: its transaction, `store` calls,
//!   `domain` rules and outbox events (`events`), with time from the injected clock.
//! - `domain`: plain Rust types and rules (normalisation, update masks, merge survivorship and
//!   window, consent ordering, duplicate rules, the injectable `Clock`). No tonic, prost, sqlx
//!   or I/O.
//! - `store`: the `profiles` schema through sqlx: SQL only, one module per table family,
//!   functions over a connection.
//! - `events`: the feed's event payloads, built from domain values.
//! - `wire`: domain values as contract messages, shared by API answers, events and merge
//!   snapshots.
//! - `error`: the service's one error enum.
//! - `demo`: sample data for `custops demo`, loaded through the public RPCs.
//! - `migrations/`: the `profiles` schema, applied after the shared ones from `libs/common`.
//!
//! Lower modules (`workflow`, `store`, `domain`, `events`, `wire`) never import `api`.

pub mod api;
pub mod demo;
pub mod domain;
pub mod error;
pub mod events;
pub mod store;
pub mod wire;
pub mod workflow;

use std::sync::Arc;
use std::time::Duration;

use custops_common::bootstrap;
use custops_common::config::ServiceSettings;
use custops_common::feed::{FeedOptions, event_feed_server};
use custops_common::idempotency;
use custops_common::server::Application;
use sqlx::migrate::Migrator;

use crate::domain::{Clock, SystemClock};

/// This service's own migrations (`services/profiles/migrations`).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// What [`build_with`] takes besides the settings: the parts tests replace.
#[derive(Debug, Clone)]
pub struct Options {
    /// The service clock: every time profiles stores or decides on (create and update times,
    /// consent record times, the unmerge window, age filters) is read from it.
    pub clock: Arc<dyn Clock>,
    /// How often request ids older than `idempotency::RETENTION` (by `clock`) are pruned.
    pub prune_every: Duration,
}

/// How often production prunes request ids: hourly, so none outlives the retention by more
/// than an hour.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);

impl Default for Options {
    /// The wall clock, pruning hourly: what production runs.
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            prune_every: PRUNE_EVERY,
        }
    }
}

/// Connects, migrates and binds the service; serve it with
/// [`Application::run_until_stopped`].
pub async fn build(settings: ServiceSettings) -> anyhow::Result<Application> {
    build_with(settings, Options::default()).await
}

/// [`build`] with another clock, so tests can move time (e.g. past the unmerge window or the
/// request ids' retention), and another pruning pace.
pub async fn build_with(
    settings: ServiceSettings,
    options: Options,
) -> anyhow::Result<Application> {
    let Options { clock, prune_every } = options;
    let (pool, app) = bootstrap::prepare(&settings, &MIGRATIONS).await?;
    let feed_options = FeedOptions::for_service(&settings, clock.clone(), app.shutdown_token());
    let peers = api::Peers::from_settings(&settings);
    // Request ids are kept for the shared retention, then pruned until the server stops.
    idempotency::spawn_pruner(
        pool.clone(),
        clock.clone(),
        idempotency::RETENTION,
        prune_every,
        app.shutdown_token(),
    );
    let api = api::ProfilesApi::new(
        workflow::Context::new(pool.clone(), clock),
        settings.page_tokens.clone(),
        peers,
    );
    let feed = event_feed_server(pool, settings.service, feed_options);
    Ok(app.add_api(api::server(api)).add_api(feed))
}
