//! The loyalty service over real gRPC against a real Postgres, one database per test.

mod helpers;

mod benefits;
mod idempotency;
mod jobs;
mod ledger;
mod merges;
mod pending;
mod programs;
mod race;
mod rewards;
mod time_zones;
mod unmerges;
mod validation;
