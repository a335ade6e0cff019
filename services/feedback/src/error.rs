//! The feedback service's one error: every way a call can fail, by name. Lower layers
//! (store, workflow, segments, jobs) return it; the domain returns its own [`Rejection`],
//! which this wraps. `api/error.rs` is the only place that turns it into a `Status`.

use custops_common::error::{FieldViolation, ServiceError, Violations};
use custops_common::idempotency::KeyError;

use crate::domain::Rejection;

/// Why a feedback call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (or names something the stored state shows is wrong, such as
    /// a touchpoint kind the survey does not target): one violation per bad field.
    #[error("invalid argument: {}", custops_common::error::describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    /// The named resource does not exist.
    #[error("{resource} `{id}` was not found")]
    NotFound {
        /// Kind of resource, e.g. "survey".
        resource: &'static str,
        /// The id asked for.
        id: String,
    },
    /// A feedback rule refused the call in the current state.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The request id was used before with another RPC or a different request
    /// (REQUEST_ID_REUSED).
    #[error("request_id was already used with a different request")]
    RequestIdReused,
    /// The survey targets a segment and no segmentation address is configured.
    #[error("the survey targets a segment and segmentation is not configured")]
    SegmentationNotConfigured,
    /// Segmentation did not answer a membership question in time (the cause is logged where
    /// the call failed).
    #[error("segmentation cannot answer in time; retry later")]
    SegmentationUnavailable,
    /// A database failure; classified (conflict, unavailable, timeout, internal) by
    /// `custops_common::error` when it becomes a status.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A defect or unexpected failure (corrupt stored data, …). Logged with the trace id when
    /// it becomes a status; the caller sees only that id.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    /// NOT_FOUND for `resource` `id`.
    pub fn not_found(resource: &'static str, id: impl ToString) -> Self {
        Error::NotFound {
            resource,
            id: id.to_string(),
        }
    }

    /// INVALID_ARGUMENT on one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// Unexpected failure.
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Error::Internal(error.into())
    }
}

/// `Ok` when `v` recorded no violation, else INVALID_ARGUMENT with every one of them.
pub fn invalid_fields(v: Violations) -> Result<(), Error> {
    v.into_result().map_err(Error::from)
}

/// What the shared helpers answer (`Violations`, the paging of `custops_common::paging`):
/// field violations stay field violations (a bad `page_size` or `page_token` names its
/// field); they report nothing else, so anything else is a defect, kept total rather than
/// assumed.
impl From<ServiceError> for Error {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::InvalidArgument(violations) => Error::InvalidArgument(violations),
            ServiceError::Internal(error) => Error::Internal(error),
            other => Error::internal(other),
        }
    }
}

/// A request id that cannot be used (`custops_common::idempotency`): reused with another
/// RPC or another request is REQUEST_ID_REUSED.
impl From<KeyError> for Error {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Reused { .. } => Error::RequestIdReused,
            KeyError::Database(error) => Error::Database(error),
        }
    }
}
