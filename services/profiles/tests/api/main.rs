//! The profiles service through its gRPC API, against a real Postgres (one database per test).

mod activities;
mod clock;
mod consents;
mod customer360;
mod customers;
mod demo;
mod errors;
mod identities;
mod limits;
mod merge_erase;
mod pii_logs;
mod streams;
mod support;
