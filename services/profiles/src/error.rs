//! Why a profiles operation failed, in the service's own terms: the one error enum of the
//! crate (bad fields, each rejection by name, database, internal). `api/error.rs` holds the
//! one exhaustive mapping of these to gRPC statuses, with the contract's ErrorInfo reasons.

use custops_common::error::{FieldViolation, ServiceError, Violations};
use custops_common::idempotency::KeyError;
use uuid::Uuid;

/// Every way a profiles operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum ProfilesError {
    /// Bad fields (also found by the store, e.g. an undeclared custom attribute).
    #[error("invalid argument")]
    Invalid(Vec<FieldViolation>),
    /// The named thing does not exist.
    #[error("{resource} `{id}` was not found")]
    NotFound {
        /// Kind, e.g. "customer".
        resource: &'static str,
        /// What was asked for (never personal data).
        id: String,
    },
    /// An identity is held by another customer.
    #[error("the identity is held by another customer")]
    IdentityTaken {
        /// Request path of the identity.
        field: String,
        /// Its holder.
        holder: Option<Uuid>,
    },
    /// A request id was used before with another RPC or a different payload.
    #[error("request_id was used with a different request")]
    RequestIdReused,
    /// (source, event id) was recorded before with different content.
    #[error("(source, event_id) was recorded with different content")]
    EventIdReused,
    /// The etag is not the current one.
    #[error("the etag is stale: the customer changed since it was read")]
    StaleEtag,
    /// The customer was merged away.
    #[error("the customer was merged into another customer")]
    CustomerMerged {
        /// Where it went.
        merged_into: Uuid,
    },
    /// The customer is soft-deleted.
    #[error("the customer is deleted")]
    CustomerDeleted,
    /// The customer is erased.
    #[error("the customer is erased")]
    CustomerErased,
    /// 20 identities already.
    #[error("the customer already has 20 identities")]
    IdentityLimit,
    /// The attribute is declared with another definition.
    #[error("the attribute is already declared with a different definition")]
    AttributeExists,
    /// 500 attributes declared.
    #[error("500 attributes are declared")]
    AttributeCatalogFull,
    /// The event type is declared with another definition.
    #[error("the event type is already declared with a different definition")]
    EventTypeExists,
    /// 500 event types declared.
    #[error("500 event types are declared")]
    EventTypeCatalogFull,
    /// A property to add exists with another definition (types are immutable).
    #[error(
        "the property is already declared with a different definition; properties never change"
    )]
    EventPropertyExists {
        /// Request path of the property, e.g. "properties[0]".
        field: String,
    },
    /// The event type would have more than 50 properties.
    #[error("an event type has at most 50 properties")]
    EventTypePropertyLimit,
    /// UnmergeCustomer after `unmerge_expire_time`.
    #[error("the merge can no longer be undone")]
    UnmergeWindowExpired,
    /// UnmergeCustomer of a merge whose snapshots are gone (an erasure purged them): answered
    /// like an expired window, since the contract knows no other way a merge stops being
    /// undoable.
    #[error("the merge's snapshot was purged")]
    MergeSnapshotPurged,
    /// UnmergeCustomer of a merge already undone.
    #[error("the merge was already undone")]
    AlreadyUnmerged,
    /// UnmergeCustomer while the merge's target is no longer ACTIVE.
    #[error("the target is no longer active; undo that first")]
    TargetNotActive,
    /// UnmergeCustomer while the source is no longer merged into the target (answered with
    /// the contract's TARGET_NOT_ACTIVE: undo what happened since first).
    #[error("the source is no longer merged into the target")]
    SourceNotMerged,
    /// The database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A defect.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ProfilesError {
    /// One bad field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ProfilesError::Invalid(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// `Ok` when `violations` recorded nothing, else [`ProfilesError::Invalid`] with every one.
    pub fn check(violations: Violations) -> Result<()> {
        violations.into_result().map_err(ProfilesError::from)
    }

    /// The value of a field the request must carry: INVALID_ARGUMENT naming `field` when absent.
    pub fn required<T>(field: &str, value: Option<T>) -> Result<T> {
        value.ok_or_else(|| ProfilesError::invalid(field, "is required"))
    }

    /// No such customer.
    pub fn customer_not_found(id: Uuid) -> Self {
        ProfilesError::NotFound {
            resource: "customer",
            id: id.to_string(),
        }
    }
}

/// What the shared request helpers (`Violations`, page tokens and sizes) answer: bad fields
/// stay bad fields; they answer nothing else but a defect, kept as one rather than lost.
impl From<ServiceError> for ProfilesError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::InvalidArgument(list) => ProfilesError::Invalid(list),
            ServiceError::Internal(error) => ProfilesError::Internal(error),
            other => ProfilesError::Internal(other.into()),
        }
    }
}

/// A request id that cannot be used: REQUEST_ID_REUSED, or the database failed.
impl From<KeyError> for ProfilesError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Reused { .. } => ProfilesError::RequestIdReused,
            KeyError::Database(error) => error.into(),
        }
    }
}

/// Result of profiles operations.
pub type Result<T, E = ProfilesError> = std::result::Result<T, E>;
