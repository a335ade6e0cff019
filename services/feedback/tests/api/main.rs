//! The feedback API tested through real gRPC against a real Postgres, one database per test.

mod auth;
mod customers;
mod helpers;
mod idempotency;
mod limits;
mod metrics;
mod paging;
mod profiles_feed;
mod responses;
mod reviews;
mod surveys;
mod tickets;
