//! The feedback domain: plain Rust types and rules (survey design, answer validation and
//! scoring, the ticket workflow and SLA, metrics arithmetic), with no tonic, prost or sqlx.
//!
//! `api` converts wire types into these and `store` persists them; the rules live here so they
//! can be read and unit-tested without a server or a database.

pub mod clock;
pub mod metrics;
pub mod response;
pub mod review;
pub mod sla;
pub mod survey;
pub mod text;
pub mod ticket;

/// Why a domain rule refused an operation on existing state (the request itself was
/// well-formed). Mapped to FAILED_PRECONDITION with `reason` as the ErrorInfo reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// Machine-readable reason, e.g. `INVALID_TICKET_TRANSITION`.
    pub reason: &'static str,
    /// What happened, for people.
    pub message: String,
}

impl Refusal {
    /// A refusal with `reason` and `message`.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}
