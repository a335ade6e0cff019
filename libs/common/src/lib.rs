//! The runtime every custops service shares, written once so each service crate holds only its
//! own domain.
//!
//! # Layout
//! - [`error`]: the one error type of service code and its mapping to gRPC status codes.
//! - [`auth`]: service tokens (JWT), the caller identity and the per-RPC scope policy.
//! - [`layers`]: the tower layers every call passes (request id, span and metrics, auth,
//!   deadline, load shedding, panic catching).
//! - [`trace_context`]: W3C `traceparent` in and out of calls and outbox rows.
//! - [`client`]: channels to other services (TLS, token, trace context, DNS balancing, retries).
//! - [`tls`]: server TLS / mTLS and the client side, from certificate files.
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
//! - [`metrics`]: the catalogue of every exported metric, and the gauge sampler.
//! - [`bootstrap`]: connect, migrate and bind in one call, and the whole `main` of a service
//!   binary, so each `main.rs` stays one call.
//! - [`feed`]: the `EventFeedService` every service serves for its outbox.
//! - [`idempotency`]: request-id replays: the first response stored and returned to retries.
//! - [`outbox`]: appends a service's domain events to its outbox, in the caller's transaction.
//! - [`sequencer`]: gives committed outbox events their feed position, in visibility order.
//! - [`retention`]: prunes the outbox once every registered consumer has passed an event and
//!   the retention period has elapsed.
//! - [`consumer`]: follows another service's feed, applying each event exactly once.
//! - [`clock`]: the injectable time source (system clock, and a manual one for tests).
//! - [`time`]: `google.protobuf.Timestamp` to and from `chrono`.

pub mod auth;
pub mod bootstrap;
pub mod cache;
pub mod client;
pub mod clock;
pub mod config;
pub mod consumer;
pub mod db;
pub mod db_roles;
pub mod error;
pub mod feed;
pub mod handshake;
pub mod idempotency;
pub mod layers;
pub mod metrics;
pub mod outbox;
pub mod paging;
pub mod request_check;
pub mod retention;
pub mod sequencer;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod trace_context;
