//! Why a segmentation call fails: the one error type of the use cases (`workflow`) and of
//! request parsing, each refusal by name. `api::error` is its one mapping to `Status`, with
//! the codes, messages and `google.rpc` details the contract documents.

use custops_common::error::{FieldViolation, ServiceError, Violations};
use custops_common::idempotency::KeyError;
use uuid::Uuid;

/// `Result` of segmentation's use cases.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed segmentation call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: INVALID_ARGUMENT naming every bad field (a
    /// `google.rpc.BadRequest`).
    #[error("invalid argument ({} bad fields)", .0.len())]
    InvalidArgument(Vec<FieldViolation>),
    /// The named resource does not exist: NOT_FOUND.
    #[error("{resource} `{id}` was not found")]
    NotFound {
        /// Kind of resource, e.g. "segment".
        resource: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The request id was used before with a different request: ALREADY_EXISTS, reason
    /// `REQUEST_ID_REUSED`.
    #[error("request_id was already used with a different request")]
    RequestIdReused,
    /// UpdateSegment / DeleteSegment with a stale segment etag: ABORTED.
    #[error("the segment changed since it was read (stale etag)")]
    StaleSegment,
    /// UpdateRfmConfig / UpdateLifecycleConfig with a stale etag: ABORTED.
    #[error("the config changed since it was read (stale etag)")]
    StaleConfig,
    /// UpdateEvaluationSettings with a stale etag: ABORTED.
    #[error("the settings changed since they were read (stale etag)")]
    StaleSettings,
    /// CreateSegment when the deployment holds the most segments it may: RESOURCE_EXHAUSTED.
    #[error("the deployment already holds {limit} segments")]
    SegmentLimitReached {
        /// The limit.
        limit: i64,
    },
    /// PreviewSegment while the replica runs the most previews it may: RESOURCE_EXHAUSTED.
    #[error("too many previews are running; retry shortly")]
    TooManyPreviews,
    /// An UploadStaticMembers stream past its limit of ids: RESOURCE_EXHAUSTED.
    #[error("an upload holds at most 1,000,000 ids")]
    UploadTooLarge,
    /// UploadStaticMembers to a rule segment: FAILED_PRECONDITION.
    #[error("members can be uploaded only to a STATIC segment")]
    UploadToRuleSegment,
    /// RecomputeSegment of a static segment: FAILED_PRECONDITION.
    #[error("a STATIC segment is not recomputed")]
    StaticNotRecomputed,
    /// DeleteSegment of a segment other segments' rules reference (their ids):
    /// FAILED_PRECONDITION with one `SEGMENT_REFERENCED` precondition violation each.
    #[error("{} other segment(s) reference this segment; change their rules first", .0.len())]
    SegmentReferenced(Vec<Uuid>),
    /// CreateComputedTrait with a name already taken: ALREADY_EXISTS.
    #[error("a computed trait named \"{0}\" already exists")]
    TraitExists(String),
    /// CreateComputedTrait when the deployment holds the most computed traits it may:
    /// RESOURCE_EXHAUSTED.
    #[error("the deployment already holds {limit} computed traits")]
    TraitLimitReached {
        /// The limit.
        limit: i64,
    },
    /// DeleteComputedTrait, or an UpdateComputedTrait changing its value type, while segments'
    /// rules read the trait (their ids): FAILED_PRECONDITION with one `COMPUTED_TRAIT_IN_USE`
    /// precondition violation each.
    #[error("{} segment(s) read this computed trait; change their rules first", .0.len())]
    TraitInUse(Vec<Uuid>),
    /// The database failed (classified by the suite's `ServiceError`: ABORTED, UNAVAILABLE,
    /// DEADLINE_EXCEEDED, … or INTERNAL).
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A defect or unexpected failure: INTERNAL, logged with the trace id where it becomes a
    /// status; the caller sees only the trace id.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    /// INVALID_ARGUMENT on one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// NOT_FOUND for `resource` `id`.
    pub fn not_found(resource: &'static str, id: impl ToString) -> Self {
        Error::NotFound {
            resource,
            id: id.to_string(),
        }
    }

    /// An unexpected failure.
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Error::Internal(error.into())
    }

    /// `Ok` when `violations` holds none, else INVALID_ARGUMENT with every one of them.
    pub fn check(violations: Violations) -> Result<()> {
        let violations = field_violations(violations);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }
}

/// A request key that could not be used: its request id used with another RPC or request, or
/// the database.
impl From<KeyError> for Error {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Reused { .. } => Error::RequestIdReused,
            KeyError::Database(error) => Error::Database(error),
        }
    }
}

/// The violations `violations` recorded, in order.
pub fn field_violations(violations: Violations) -> Vec<FieldViolation> {
    match violations.into_result() {
        Err(ServiceError::InvalidArgument(v)) => v,
        // `Violations` only ever reports INVALID_ARGUMENT.
        _ => Vec::new(),
    }
}
