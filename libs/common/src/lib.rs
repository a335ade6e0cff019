//! The runtime every custops service shares, written once so each service crate holds only its
//! own domain.
//!
//! # Layout
//! - [`service`]: the four services' names, schemas and default ports.
//! - [`config`]: typed settings read from the environment and validated at start-up.
//! - [`db`]: the Postgres pool (one schema per service) and migrations.
//! - [`db_roles`]: the per-service Postgres role that can use only its own schema.
//! - [`cache`]: the Redis client and the two-level (in-process, then Redis) cache.
//! - [`paging`]: tamper-evident page tokens for keyset pagination, and `page_size`.
//! - [`server`]: binds the listener, serves a service's APIs with health and reflection, and
//!   drains on shutdown.
//! - [`shutdown`]: SIGTERM / SIGINT as one future.
//! - [`telemetry`]: the tracing subscriber.
//! - [`bootstrap`]: connect, migrate and bind in one call, and the whole `main` of a service
//!   binary, so each `main.rs` stays one call.
//! - [`feed`]: the `EventFeedService` every service serves for its outbox.
//! - [`outbox`]: appends a service's domain events to its outbox, in the caller's transaction.
//! - [`sequencer`]: gives committed outbox events their feed position, in visibility order.
//! - [`consumer`]: follows another service's feed, applying each event exactly once.

pub mod bootstrap;
pub mod cache;
pub mod config;
pub mod consumer;
pub mod db;
pub mod db_roles;
pub mod feed;
pub mod outbox;
pub mod paging;
pub mod sequencer;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;
