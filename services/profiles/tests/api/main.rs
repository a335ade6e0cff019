//! The profiles service through its gRPC API, against a real Postgres (one database per test).

mod activities;
mod clock;
mod consents;
mod custom_events;
mod customer360;
mod customers;
mod demo;
mod errors;
mod idempotency;
mod identities;
mod limits;
mod merge_erase;
mod paging;
mod pii_logs;
mod streams;
mod support;
