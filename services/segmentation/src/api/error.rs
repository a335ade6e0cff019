//! The one mapping from segmentation's [`Error`] to `Status`: every variant by name, with the
//! codes, messages and `google.rpc` details the contract documents (`REQUEST_ID_REUSED` in an
//! `ErrorInfo` of domain "custops", `SEGMENT_REFERENCED` precondition violations). Validation,
//! database and internal failures go through the suite's `ServiceError`, which names bad
//! fields, classifies SQLSTATEs and logs internal errors once with the trace id.

use custops_common::error::{ERROR_DOMAIN, ServiceError, no_metadata, status_with_reason};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::Error;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(violations) => ServiceError::InvalidArgument(violations).into(),
            Error::NotFound { resource, id } => ServiceError::not_found(resource, id).into(),
            Error::RequestIdReused => status_with_reason(
                Code::AlreadyExists,
                message,
                ERROR_DOMAIN,
                "REQUEST_ID_REUSED",
                no_metadata(),
            ),
            Error::StaleSegment | Error::StaleConfig | Error::StaleSettings => {
                ServiceError::Aborted(message).into()
            }
            Error::SegmentLimitReached { .. }
            | Error::TraitLimitReached { .. }
            | Error::TooManyPreviews
            | Error::UploadTooLarge => ServiceError::ResourceExhausted(message).into(),
            Error::TraitExists(_) => Status::already_exists(message),
            Error::TraitInUse(readers) => {
                let mut details = ErrorDetails::new();
                for segment in readers {
                    details.add_precondition_failure_violation(
                        "COMPUTED_TRAIT_IN_USE",
                        format!("segments/{segment}"),
                        "this segment's rule reads the computed trait",
                    );
                }
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            Error::UploadToRuleSegment | Error::StaticNotRecomputed => {
                ServiceError::FailedPrecondition(message).into()
            }
            Error::SegmentReferenced(referencing) => {
                let mut details = ErrorDetails::new();
                for other in referencing {
                    details.add_precondition_failure_violation(
                        "SEGMENT_REFERENCED",
                        format!("segments/{other}"),
                        "this segment's rule references the segment being deleted",
                    );
                }
                Status::with_error_details(Code::FailedPrecondition, message, details)
            }
            Error::Database(error) => ServiceError::from(error).into(),
            Error::Internal(error) => ServiceError::Internal(error).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn check(error: Error, code: Code, message: &str) {
        let status = Status::from(error);
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().starts_with(message), "{status:?}");
    }

    #[test]
    fn every_refusal_keeps_the_code_and_message_callers_had() {
        check(
            Error::invalid("segment_id", "required"),
            Code::InvalidArgument,
            "invalid argument: segment_id: required",
        );
        check(
            Error::not_found("segment", "s1"),
            Code::NotFound,
            "segment `s1` was not found",
        );
        check(
            Error::StaleSegment,
            Code::Aborted,
            "the segment changed since it was read (stale etag)",
        );
        check(
            Error::StaleConfig,
            Code::Aborted,
            "the config changed since it was read (stale etag)",
        );
        check(
            Error::StaleSettings,
            Code::Aborted,
            "the settings changed since they were read (stale etag)",
        );
        check(
            Error::SegmentLimitReached { limit: 10_000 },
            Code::ResourceExhausted,
            "the deployment already holds 10000 segments",
        );
        check(
            Error::TooManyPreviews,
            Code::ResourceExhausted,
            "too many previews are running; retry shortly",
        );
        check(
            Error::UploadTooLarge,
            Code::ResourceExhausted,
            "an upload holds at most 1,000,000 ids",
        );
        check(
            Error::UploadToRuleSegment,
            Code::FailedPrecondition,
            "members can be uploaded only to a STATIC segment",
        );
        check(
            Error::StaticNotRecomputed,
            Code::FailedPrecondition,
            "a STATIC segment is not recomputed",
        );
        check(
            Error::Database(sqlx::Error::PoolTimedOut),
            Code::Unavailable,
            "the database is unavailable",
        );
    }

    #[test]
    fn a_reused_request_id_carries_its_reason() {
        let status = Status::from(Error::RequestIdReused);
        assert_eq!(status.code(), Code::AlreadyExists);
        let info = status.get_details_error_info();
        assert_eq!(
            info.map(|i| (i.reason, i.domain)),
            Some(("REQUEST_ID_REUSED".to_owned(), ERROR_DOMAIN.to_owned()))
        );
    }

    #[test]
    fn a_referenced_segment_names_every_referencing_one() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let status = Status::from(Error::SegmentReferenced(vec![a, b]));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "2 other segment(s) reference this segment; change their rules first"
        );
        let subjects: Vec<String> = status
            .get_details_precondition_failure()
            .map(|p| p.violations.into_iter().map(|v| v.subject).collect())
            .unwrap_or_default();
        assert_eq!(subjects, [format!("segments/{a}"), format!("segments/{b}")]);
    }

    #[test]
    fn internal_detail_never_reaches_the_caller() {
        let status = Status::from(Error::internal(anyhow::anyhow!(
            "relation \"secret_table\" does not exist"
        )));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret_table"), "{status:?}");
    }
}
