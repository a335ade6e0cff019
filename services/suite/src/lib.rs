//! The `custops` suite: the four services in one process (`custops dev`) and the operator
//! commands that act on all of them (`custops migrate`, `custops bench`).
//!
//! # Layout
//! - [`services`]: the one table from a [`ServiceKind`] to its crate's `build` and migrations.
//! - [`dev`]: starts services in-process and stops them together; `custops dev` and the
//!   end-to-end tests use the same code. Points the services at each other where they listen,
//!   and prints how to call them (`dev::banner`).
//! - [`demo`]: the sample data (`custops demo`, and `custops dev` into an empty database) with
//!   its progress, and how far segmentation has followed it (`demo::catch_up`).
//! - [`migrate`]: `custops migrate [service…]`.
//! - [`bench`]: `custops bench`, the load generator and the benchmarks, and the hidden child
//!   commands it measures (`bench-serve`, `bench-echo`).
//! - [`cli`]: argument parsing for the binary.
//!
//! [`ServiceKind`]: custops_common::service::ServiceKind

pub mod bench;
pub mod cli;
pub mod demo;
pub mod dev;
pub mod migrate;
pub mod services;
