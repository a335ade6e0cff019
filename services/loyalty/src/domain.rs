//! The loyalty domain: plain Rust types and rules, with no transport or storage in them.
//!
//! **Invariant:** nothing here imports tonic, prost or sqlx. `api` converts wire types into
//! these and `wire` back; `store` persists them; `workflow` applies the rules in its
//! transactions.

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

/// A command with the request id its caller sent: the idempotency key's id and, for a change
/// of the ledger, the origin its entry records.
#[derive(Debug)]
pub struct Keyed<C> {
    /// Request id.
    pub request_id: String,
    /// Command.
    pub command: C,
}
