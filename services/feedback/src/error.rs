//! The feedback service's error: the suite's `ServiceError` plus the contract's refusals
//! (FAILED_PRECONDITION with an ErrorInfo reason, ALREADY_EXISTS with ErrorInfo metadata),
//! and the one exhaustive mapping to `Status` (built by `status_with_reason`).

use custops_common::error::{ERROR_DOMAIN, ServiceError, no_metadata, status_with_reason};
use tonic::{Code, Status};

use crate::domain::Refusal;

/// Why a feedback call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Anything the suite's error expresses (validation, not found, database trouble, …).
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// A domain rule refused the call in the current state: FAILED_PRECONDITION + reason.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The resource exists already: ALREADY_EXISTS + reason + metadata naming it.
    #[error("{message}")]
    Exists {
        /// ErrorInfo reason, e.g. `RESPONSE_ALREADY_SUBMITTED`.
        reason: &'static str,
        /// What exists.
        message: String,
        /// ErrorInfo metadata, e.g. `response_id`.
        metadata: Vec<(&'static str, String)>,
    },
}

impl Error {
    /// NOT_FOUND for `resource` `id`.
    pub fn not_found(resource: &'static str, id: impl ToString) -> Self {
        Error::Service(ServiceError::not_found(resource, id.to_string()))
    }

    /// ABORTED: a stale etag or a lost race.
    pub fn aborted(message: impl Into<String>) -> Self {
        Error::Service(ServiceError::Aborted(message.into()))
    }

    /// INVALID_ARGUMENT on one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::Service(ServiceError::invalid_argument(field, description))
    }

    /// Unexpected failure.
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Error::Service(ServiceError::internal(error))
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Error::Service(error.into())
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Service(error) => error.into(),
            Error::Refused(Refusal { reason, message }) => status_with_reason(
                Code::FailedPrecondition,
                message,
                ERROR_DOMAIN,
                reason,
                no_metadata(),
            ),
            Error::Exists {
                reason,
                message,
                metadata,
            } => status_with_reason(Code::AlreadyExists, message, ERROR_DOMAIN, reason, metadata),
        }
    }
}
