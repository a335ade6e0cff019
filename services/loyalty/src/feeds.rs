//! Consumers of other services' change feeds, each applying an event in the transaction that
//! moves its cursor (`custops_common::consumer`).
//!
//! - `profiles`: customer merges and unmerges, erasure, birth months.

pub mod profiles;
