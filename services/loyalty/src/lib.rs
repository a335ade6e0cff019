//! The loyalty service: points and membership: programs, members, the points ledger, tiers, benefits and rewards.
//!
//! # Layout
//! - `api`: the `custops.loyalty.v1.LoyaltyService` gRPC API (transport only): one module per
//!   area (`programs`, `members`, `ledger`, `rewards`, `tiers`, `jobs`), each parsing its
//!   requests (`convert`, `parse`: every bad field collected), calling one use case in
//!   `workflow` and converting the answer; `error` is the one mapping to `Status`.
//! - `workflow`: the use cases, one function per operation: its transaction, `store` calls,
//!   `domain` rules, outbox events (`events`), idempotency, time from the injected clock.
//! - `domain`: plain Rust types and rules (earning calculation, FIFO lots, clawback,
//!   rejections, the injectable `Clock`); no tonic, prost or sqlx.
//! - `store`: the `loyalty` schema through sqlx: the SQL, one module per table family, and
//!   `StoreError`, the service's one error enum.
//! - `wire`: domain values as contract messages, shared by the API's answers and `events`.
//! - `events`: domain events → `events.proto` messages in the outbox.
//! - `feeds`: the profiles change feed (`feeds::profiles`), applied through `workflow`.
//! - `jobs`: the in-process scheduler of the scheduled jobs (`workflow::jobs`).
//! - `directory`: profiles' `GetCustomer`, asked before an enrolment.
//! - `migrations/`: the `loyalty` schema, applied after the shared ones from `libs/common`.
//!
//! Lower modules (`workflow`, `store`, `domain`, `wire`, `events`, `feeds`, `jobs`,
//! `directory`) never import `api`.

pub mod api;
pub mod directory;
pub mod domain;
pub mod events;
pub mod feeds;
pub mod jobs;
pub mod store;
pub mod wire;
pub mod workflow;

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
    let feed_options = FeedOptions::for_service(&settings, clock.clone(), app.shutdown_token());
    feeds::profiles::spawn(&settings, pool.clone(), clock.clone(), app.shutdown_token())?;
    let customers = directory::CustomerDirectory::from_settings(&settings)?;
    let ctx = workflow::Context::new(pool.clone(), clock, customers);
    if let Some(schedule) = jobs {
        jobs::spawn_scheduler(ctx.clone(), schedule, app.shutdown_token());
    }
    let feed = event_feed_server(pool, settings.service, feed_options);
    Ok(app
        .add_api(api::server(ctx, settings.page_tokens.clone()))
        .add_api(feed))
}
