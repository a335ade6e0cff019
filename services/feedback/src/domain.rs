//! The feedback domain: plain Rust types and rules (survey design, answer validation and
//! scoring, the ticket workflow and SLA, metrics arithmetic), with no tonic, prost or sqlx.
//!
//! `api` converts wire types into these and `store` persists them; the rules live here so they
//! can be read and unit-tested without a server or a database.

pub mod metrics;
pub mod rejection;
pub mod response;
pub mod review;
pub mod sla;
pub mod survey;
pub mod text;
pub mod ticket;

/// The service clock is the suite's one (`custops_common::clock`): whole microseconds, as
/// Postgres keeps them, so a time answered equals the time stored. The domain reads no clock:
/// "now" is passed in.
pub use custops_common::clock::{Clock, ManualClock, SystemClock};
pub use rejection::Rejection;
