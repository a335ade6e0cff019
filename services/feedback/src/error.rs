//! The feedback service's error: the suite's `ServiceError` plus the two shapes it cannot
//! carry (FAILED_PRECONDITION with an ErrorInfo reason, ALREADY_EXISTS with ErrorInfo
//! metadata), and the one exhaustive mapping to `Status`.

use std::collections::HashMap;

use custops_common::error::ServiceError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::Refusal;

/// ErrorInfo domain of every reason this service sends.
const ERROR_DOMAIN: &str = "custops";

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
            Error::Refused(Refusal { reason, message }) => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_error_info(
                    reason,
                    ERROR_DOMAIN,
                    HashMap::<String, String>::new(),
                ),
            ),
            Error::Exists {
                reason,
                message,
                metadata,
            } => Status::with_error_details(
                Code::AlreadyExists,
                message,
                ErrorDetails::with_error_info(
                    reason,
                    ERROR_DOMAIN,
                    metadata
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<HashMap<_, _>>(),
                ),
            ),
        }
    }
}
