//! The runtime every custops service shares, written once so each service crate holds only its
//! own domain.
//!
//! # Layout
//! - [`service`]: the four services' names, schemas and default ports.
//! - [`config`]: typed settings read from the environment and validated at start-up.
//! - [`db`]: the Postgres pool (one schema per service) and migrations.
//! - [`server`]: binds the listener, serves a service's APIs with health and reflection, and
//!   drains on shutdown.
//! - [`shutdown`]: SIGTERM / SIGINT as one future.
//! - [`telemetry`]: the tracing subscriber.
//! - [`bootstrap`]: connect, migrate and bind in one call, and the whole `main` of a service
//!   binary, so each `main.rs` stays one call.
//! - [`feed`]: the `EventFeedService` every service serves for its outbox.

pub mod bootstrap;
pub mod config;
pub mod db;
pub mod feed;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;
