//! The one mapping of profiles errors to gRPC statuses: every variant named, no catch-all.
//! Reasons the contract names travel as `google.rpc.ErrorInfo`.

use std::collections::HashMap;

use custops_common::error::{ERROR_DOMAIN, ServiceError, status_with_reason};
use tonic::{Code, Status};

use crate::error::ProfilesError;

fn with_reason(
    code: Code,
    message: &str,
    reason: &str,
    metadata: HashMap<String, String>,
) -> Status {
    status_with_reason(code, message, ERROR_DOMAIN, reason, metadata)
}

impl From<ProfilesError> for Status {
    fn from(error: ProfilesError) -> Self {
        let message = error.to_string();
        match error {
            ProfilesError::Invalid(violations) => ServiceError::InvalidArgument(violations).into(),
            ProfilesError::NotFound { resource, id } => {
                ServiceError::NotFound { resource, id }.into()
            }
            ProfilesError::IdentityTaken { field, holder } => {
                let mut metadata = HashMap::from([("field".to_owned(), field)]);
                if let Some(holder) = holder {
                    metadata.insert("customer_id".to_owned(), holder.to_string());
                }
                with_reason(Code::AlreadyExists, &message, "IDENTITY_TAKEN", metadata)
            }
            ProfilesError::RequestIdReused => with_reason(
                Code::AlreadyExists,
                &message,
                "REQUEST_ID_REUSED",
                HashMap::new(),
            ),
            ProfilesError::EventIdReused => with_reason(
                Code::AlreadyExists,
                &message,
                "EVENT_ID_REUSED",
                HashMap::new(),
            ),
            ProfilesError::StaleEtag => ServiceError::Aborted(message).into(),
            ProfilesError::CustomerMerged { merged_into } => with_reason(
                Code::FailedPrecondition,
                &message,
                "CUSTOMER_MERGED",
                HashMap::from([(
                    "merged_into_customer_id".to_owned(),
                    merged_into.to_string(),
                )]),
            ),
            ProfilesError::CustomerDeleted => with_reason(
                Code::FailedPrecondition,
                &message,
                "CUSTOMER_DELETED",
                HashMap::new(),
            ),
            ProfilesError::CustomerErased => with_reason(
                Code::FailedPrecondition,
                &message,
                "CUSTOMER_ERASED",
                HashMap::new(),
            ),
            ProfilesError::IdentityLimit => with_reason(
                Code::FailedPrecondition,
                &message,
                "IDENTITY_LIMIT",
                HashMap::new(),
            ),
            ProfilesError::AttributeExists => ServiceError::AlreadyExists {
                message,
                reason: None,
            }
            .into(),
            ProfilesError::AttributeCatalogFull => with_reason(
                Code::FailedPrecondition,
                &message,
                "ATTRIBUTE_CATALOG_FULL",
                HashMap::new(),
            ),
            ProfilesError::UnmergeWindowExpired | ProfilesError::MergeSnapshotPurged => {
                with_reason(
                    Code::FailedPrecondition,
                    &message,
                    "UNMERGE_WINDOW_EXPIRED",
                    HashMap::new(),
                )
            }
            ProfilesError::AlreadyUnmerged => with_reason(
                Code::FailedPrecondition,
                &message,
                "ALREADY_UNMERGED",
                HashMap::new(),
            ),
            ProfilesError::TargetNotActive | ProfilesError::SourceNotMerged => with_reason(
                Code::FailedPrecondition,
                &message,
                "TARGET_NOT_ACTIVE",
                HashMap::new(),
            ),
            ProfilesError::Database(error) => ServiceError::from(error).into(),
            ProfilesError::Internal(error) => ServiceError::Internal(error).into(),
        }
    }
}
