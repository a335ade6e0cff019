//! Why a profiles operation failed, in the service's own terms. `api/error.rs` holds the one
//! exhaustive mapping of these to gRPC statuses.

use custops_common::error::FieldViolation;
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
    /// A request id was used before with a different payload.
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
    /// A precondition the contract names with an ErrorInfo reason (e.g. ALREADY_UNMERGED).
    #[error("{message}")]
    FailedReason {
        /// The ErrorInfo reason.
        reason: &'static str,
        /// What to do, in words.
        message: String,
    },
    /// Another precondition failed (described for the caller, no personal data).
    #[error("{0}")]
    Precondition(String),
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

    /// No such customer.
    pub fn customer_not_found(id: Uuid) -> Self {
        ProfilesError::NotFound {
            resource: "customer",
            id: id.to_string(),
        }
    }
}

/// Result of profiles operations.
pub type Result<T, E = ProfilesError> = std::result::Result<T, E>;
