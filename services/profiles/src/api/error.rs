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
            ProfilesError::EventTypeExists => ServiceError::AlreadyExists {
                message,
                reason: None,
            }
            .into(),
            ProfilesError::EventTypeCatalogFull => with_reason(
                Code::FailedPrecondition,
                &message,
                "EVENT_TYPE_CATALOG_FULL",
                HashMap::new(),
            ),
            ProfilesError::EventPropertyExists { field } => with_reason(
                Code::AlreadyExists,
                &message,
                "EVENT_PROPERTY_EXISTS",
                HashMap::from([("field".to_owned(), field)]),
            ),
            ProfilesError::EventTypePropertyLimit => with_reason(
                Code::FailedPrecondition,
                &message,
                "EVENT_TYPE_PROPERTY_LIMIT",
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

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;
    use uuid::Uuid;

    use super::*;

    /// The code and ErrorInfo reason a profiles error answers.
    fn check(error: ProfilesError, code: Code, reason: Option<&str>) {
        let shown = format!("{error:?}");
        let status = Status::from(error);
        assert_eq!(status.code(), code, "{shown}");
        let info = status.get_details_error_info();
        assert_eq!(info.as_ref().map(|i| i.reason.as_str()), reason, "{shown}");
        if let Some(info) = info {
            assert_eq!(info.domain, ERROR_DOMAIN, "{shown}");
        }
    }

    #[test]
    fn every_rejection_answers_its_code_and_contract_reason() {
        use Code::{AlreadyExists, FailedPrecondition};
        let id = Uuid::now_v7();
        check(
            ProfilesError::invalid("customer_id", "is required"),
            Code::InvalidArgument,
            None,
        );
        check(ProfilesError::customer_not_found(id), Code::NotFound, None);
        check(
            ProfilesError::IdentityTaken {
                field: "identity".to_owned(),
                holder: Some(id),
            },
            AlreadyExists,
            Some("IDENTITY_TAKEN"),
        );
        check(
            ProfilesError::RequestIdReused,
            AlreadyExists,
            Some("REQUEST_ID_REUSED"),
        );
        check(
            ProfilesError::EventIdReused,
            AlreadyExists,
            Some("EVENT_ID_REUSED"),
        );
        check(ProfilesError::StaleEtag, Code::Aborted, None);
        check(
            ProfilesError::CustomerMerged { merged_into: id },
            FailedPrecondition,
            Some("CUSTOMER_MERGED"),
        );
        check(
            ProfilesError::CustomerDeleted,
            FailedPrecondition,
            Some("CUSTOMER_DELETED"),
        );
        check(
            ProfilesError::CustomerErased,
            FailedPrecondition,
            Some("CUSTOMER_ERASED"),
        );
        check(
            ProfilesError::IdentityLimit,
            FailedPrecondition,
            Some("IDENTITY_LIMIT"),
        );
        check(ProfilesError::AttributeExists, AlreadyExists, None);
        check(
            ProfilesError::AttributeCatalogFull,
            FailedPrecondition,
            Some("ATTRIBUTE_CATALOG_FULL"),
        );
        check(ProfilesError::EventTypeExists, AlreadyExists, None);
        check(
            ProfilesError::EventTypeCatalogFull,
            FailedPrecondition,
            Some("EVENT_TYPE_CATALOG_FULL"),
        );
        check(
            ProfilesError::EventPropertyExists {
                field: "properties[0]".to_owned(),
            },
            AlreadyExists,
            Some("EVENT_PROPERTY_EXISTS"),
        );
        check(
            ProfilesError::EventTypePropertyLimit,
            FailedPrecondition,
            Some("EVENT_TYPE_PROPERTY_LIMIT"),
        );
        check(
            ProfilesError::UnmergeWindowExpired,
            FailedPrecondition,
            Some("UNMERGE_WINDOW_EXPIRED"),
        );
        check(
            ProfilesError::MergeSnapshotPurged,
            FailedPrecondition,
            Some("UNMERGE_WINDOW_EXPIRED"),
        );
        check(
            ProfilesError::AlreadyUnmerged,
            FailedPrecondition,
            Some("ALREADY_UNMERGED"),
        );
        check(
            ProfilesError::TargetNotActive,
            FailedPrecondition,
            Some("TARGET_NOT_ACTIVE"),
        );
        check(
            ProfilesError::SourceNotMerged,
            FailedPrecondition,
            Some("TARGET_NOT_ACTIVE"),
        );
        check(
            ProfilesError::Internal(anyhow::anyhow!("a defect")),
            Code::Internal,
            None,
        );
    }

    #[test]
    fn an_internal_error_tells_the_caller_nothing_of_its_cause() {
        let status = Status::from(ProfilesError::Internal(anyhow::anyhow!("secret detail")));
        assert!(!status.message().contains("secret"), "{}", status.message());
    }
}
