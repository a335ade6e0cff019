//! The loyalty service: points and membership: programs, members, the points ledger, tiers, benefits and rewards.
//!
//! # Layout
//! - `api`: the `custops.loyalty.v1.LoyaltyService` gRPC API (transport only): `convert`
//!   (requests → domain commands, every bad field collected), `error` (the one mapping to
//!   `Status`).
//! - `wire`: domain values as contract messages, shared by the API's answers and `events`.
//! - `events`: domain events → `events.proto` messages in the outbox.
//! - `feeds`: the profiles change feed (`feeds::profiles`).
//! - `jobs`: the scheduled jobs (release, expiry, tier review), by RPC and by the in-process
//!   scheduler.
//! - `directory`: profiles' `GetCustomer`, asked before an enrolment.
//! - `domain`: plain Rust types and rules (earning calculation, FIFO lots, clawback,
//!   rejections, the injectable `Clock`); no tonic, prost or sqlx.
//! - `store`: the `loyalty` schema through sqlx, and the transactions that apply the rules.
//! - `migrations/`: the `loyalty` schema, applied after the shared ones from `libs/common`.
//!
//! Lower modules (`domain`, `store`, `wire`, `events`, `feeds`, `jobs`, `directory`) never
//! import `api`.

pub mod api;
pub mod directory;
pub mod domain;
pub mod events;
pub mod feeds;
pub mod jobs;
pub mod store;
pub mod wire;

use std::sync::Arc;

use custops_common::bootstrap;
use custops_common::config::ServiceSettings;
use custops_common::feed::{FeedOptions, event_feed_server};
use custops_common::server::Application;
use sqlx::migrate::Migrator;

use crate::domain::{Clock, SystemClock};
use crate::jobs::JobSchedule;

/// This service's own migrations (`services/loyalty/migrations`).
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// What [`build_with`] takes besides the settings: the parts tests replace.
#[derive(Debug, Clone)]
pub struct Options {
    /// The service clock.
    pub clock: Arc<dyn Clock>,
    /// The in-process job scheduler's pace; `None` runs no scheduler (the jobs then run
    /// only on request).
    pub jobs: Option<JobSchedule>,
}

impl Default for Options {
    /// The wall clock and the scheduler at its default pace: what production runs.
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            jobs: Some(JobSchedule::default()),
        }
    }
}

/// Connects, migrates and binds the service; serve it with
/// [`Application::run_until_stopped`].
pub async fn build(settings: ServiceSettings) -> anyhow::Result<Application> {
    build_with(settings, Options::default()).await
}

/// [`build`] with another clock or scheduler pace, so tests can walk time forward and run
/// the scheduler fast (or not at all).
pub async fn build_with(
    settings: ServiceSettings,
    options: Options,
) -> anyhow::Result<Application> {
    let Options { clock, jobs } = options;
    let (pool, app) = bootstrap::prepare(&settings, &MIGRATIONS).await?;
    // Feed streams end as soon as the server starts draining, not at the end of the grace.
    let feed_options = FeedOptions {
        shutdown: app.shutdown_token(),
        ..FeedOptions::default()
    };
    let store = store::PgStore::new(pool.clone(), clock.clone());
    feeds::profiles::spawn(&settings, pool.clone(), clock, app.shutdown_token())?;
    if let Some(schedule) = jobs {
        jobs::spawn_scheduler(store.clone(), schedule, app.shutdown_token());
    }
    let customers = directory::CustomerDirectory::from_settings(&settings)?;
    let feed = event_feed_server(pool, settings.service, feed_options);
    Ok(app
        .add_api(api::server(store, settings.page_tokens.clone(), customers))
        .add_api(feed))
}
