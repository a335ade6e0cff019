//! The cross-service end-to-end tests: one binary, one module per area.

mod computed_traits;
mod customer360;
mod discovery;
mod feeds;
mod fuzz;
mod predictions;
mod privacy;
mod replicas;
