//! The feedback API tested through real gRPC against a real Postgres, one database per test.

mod auth;
mod customers;
mod helpers;
mod limits;
mod metrics;
mod profiles_feed;
mod responses;
mod reviews;
mod surveys;
mod tickets;
