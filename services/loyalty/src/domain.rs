//! The loyalty domain: plain Rust types and rules, with no transport or storage in them.
//!
//! **Invariant:** nothing here imports tonic, prost or sqlx. `api` converts wire types into
//! these and back; `store` persists them and runs the rules inside its transactions.

pub mod benefit;
pub mod earning;
pub mod event;
pub mod ledger;
pub mod limits;
pub mod member;
pub mod money;
pub mod program;
pub mod rejection;
pub mod reward;

/// The service clock is the suite's one (`custops_common::clock`): whole microseconds, as
/// Postgres keeps them, so a time answered equals the time stored.
pub use custops_common::clock::{Clock, ManualClock, SystemClock};
pub use rejection::Rejection;
