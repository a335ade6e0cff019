//! The loyalty service over real gRPC against a real Postgres, one database per test.

mod helpers;

mod benefits;
mod due_points;
mod earn_groups;
mod enrolment;
mod erasure;
mod export;
mod idempotency;
mod jobs;
mod ledger;
mod limits;
mod locks;
mod merges;
mod pending;
mod programs;
mod race;
mod rewards;
mod scheduler;
mod tier_changes;
mod time_zones;
mod unmerges;
mod validation;
