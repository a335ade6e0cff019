//! The one mapping from feedback failures to `Status`: every error and every rejection by
//! name, with the `google.rpc.ErrorInfo` reason (domain `custops`) and metadata the contract
//! documents (`feedback_service.proto`). The shared shapes — field violations, NOT_FOUND,
//! database classification, internal errors logged once with the trace id — come from
//! `custops_common::error::ServiceError`.

use custops_common::error::{ERROR_DOMAIN, ServiceError, status_with_reason};
use tonic::{Code, Status};

use crate::domain::Rejection;
use crate::error::Error;

fn with_reason(code: Code, message: String, reason: &str, metadata: &[(&str, String)]) -> Status {
    let metadata = metadata.iter().map(|(k, v)| (*k, v.clone()));
    status_with_reason(code, message, ERROR_DOMAIN, reason, metadata)
}

/// The status of a rejection.
fn rejection_status(rejection: Rejection) -> Status {
    use Code::{AlreadyExists, FailedPrecondition};
    let message = rejection.to_string();
    match rejection {
        Rejection::StaleEtag { .. } => ServiceError::Aborted(message).into(),
        Rejection::SurveyClosed => with_reason(FailedPrecondition, message, "SURVEY_CLOSED", &[]),
        Rejection::SurveyDesignFrozen | Rejection::SurveyNotDeletable => {
            with_reason(FailedPrecondition, message, "SURVEY_NOT_DRAFT", &[])
        }
        Rejection::SurveyNotActive { .. } => {
            with_reason(FailedPrecondition, message, "SURVEY_NOT_ACTIVE", &[])
        }
        Rejection::CustomerNotInSegment => {
            with_reason(FailedPrecondition, message, "CUSTOMER_NOT_IN_SEGMENT", &[])
        }
        Rejection::InvitationExists { invitation_id } => with_reason(
            AlreadyExists,
            message,
            "INVITATION_EXISTS",
            &[("invitation_id", invitation_id.to_string())],
        ),
        Rejection::ResponseAlreadySubmitted { response_id } => with_reason(
            AlreadyExists,
            message,
            "RESPONSE_ALREADY_SUBMITTED",
            &[("response_id", response_id.to_string())],
        ),
        Rejection::InvitationExpired => {
            with_reason(FailedPrecondition, message, "INVITATION_EXPIRED", &[])
        }
        Rejection::NoReward => with_reason(FailedPrecondition, message, "NO_REWARD", &[]),
        Rejection::TicketClosed => with_reason(FailedPrecondition, message, "TICKET_CLOSED", &[]),
        Rejection::InvalidTicketTransition { .. } | Rejection::OutcomeOnInactiveTicket { .. } => {
            with_reason(
                FailedPrecondition,
                message,
                "INVALID_TICKET_TRANSITION",
                &[],
            )
        }
        Rejection::NotAFollowUp => with_reason(FailedPrecondition, message, "NOT_A_FOLLOW_UP", &[]),
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(violations) => ServiceError::InvalidArgument(violations).into(),
            Error::NotFound { resource, id } => ServiceError::not_found(resource, id).into(),
            Error::Rejected(rejection) => rejection_status(rejection),
            e @ Error::RequestIdReused => ServiceError::AlreadyExists {
                message: e.to_string(),
                reason: Some("REQUEST_ID_REUSED"),
            }
            .into(),
            e @ (Error::SegmentationNotConfigured | Error::SegmentationUnavailable) => {
                ServiceError::Unavailable(e.to_string()).into()
            }
            Error::Database(error) => ServiceError::from(error).into(),
            Error::Internal(error) => ServiceError::Internal(error).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;
    use uuid::Uuid;

    use super::*;
    use crate::domain::survey::SurveyStatus;
    use crate::domain::ticket::{Status as TicketStatus, Transition};

    /// The code, ErrorInfo reason and metadata `error` answers.
    fn check(error: impl Into<Error>, code: Code, reason: &str, metadata: &[(&str, String)]) {
        let status = Status::from(error.into());
        assert_eq!(status.code(), code, "{status:?}");
        let info = status.get_details_error_info();
        assert_eq!(
            info.as_ref().map(|i| i.reason.as_str()).unwrap_or_default(),
            reason,
            "{status:?}"
        );
        let mut got: Vec<(String, String)> = info
            .map(|i| i.metadata.into_iter().collect())
            .unwrap_or_default();
        got.sort();
        let want: Vec<(String, String)> = metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        assert_eq!(got, want, "{status:?}");
        if !reason.is_empty() {
            assert_eq!(
                status
                    .get_details_error_info()
                    .map(|i| i.domain)
                    .unwrap_or_default(),
                "custops"
            );
        }
    }

    #[test]
    fn every_rejection_answers_the_code_and_reason_the_contract_documents() {
        use Code::{Aborted, AlreadyExists, FailedPrecondition};
        let id = Uuid::now_v7();
        check(
            Rejection::StaleEtag { resource: "survey" },
            Aborted,
            "",
            &[],
        );
        check(
            Rejection::SurveyClosed,
            FailedPrecondition,
            "SURVEY_CLOSED",
            &[],
        );
        check(
            Rejection::SurveyDesignFrozen,
            FailedPrecondition,
            "SURVEY_NOT_DRAFT",
            &[],
        );
        check(
            Rejection::SurveyNotDeletable,
            FailedPrecondition,
            "SURVEY_NOT_DRAFT",
            &[],
        );
        check(
            Rejection::SurveyNotActive {
                status: SurveyStatus::Draft,
            },
            FailedPrecondition,
            "SURVEY_NOT_ACTIVE",
            &[],
        );
        check(
            Rejection::CustomerNotInSegment,
            FailedPrecondition,
            "CUSTOMER_NOT_IN_SEGMENT",
            &[],
        );
        check(
            Rejection::InvitationExists { invitation_id: id },
            AlreadyExists,
            "INVITATION_EXISTS",
            &[("invitation_id", id.to_string())],
        );
        check(
            Rejection::ResponseAlreadySubmitted { response_id: id },
            AlreadyExists,
            "RESPONSE_ALREADY_SUBMITTED",
            &[("response_id", id.to_string())],
        );
        check(
            Rejection::InvitationExpired,
            FailedPrecondition,
            "INVITATION_EXPIRED",
            &[],
        );
        check(Rejection::NoReward, FailedPrecondition, "NO_REWARD", &[]);
        check(
            Rejection::TicketClosed,
            FailedPrecondition,
            "TICKET_CLOSED",
            &[],
        );
        check(
            Rejection::InvalidTicketTransition {
                transition: Transition::Close,
                from: TicketStatus::Open,
            },
            FailedPrecondition,
            "INVALID_TICKET_TRANSITION",
            &[],
        );
        check(
            Rejection::OutcomeOnInactiveTicket {
                from: TicketStatus::Closed,
            },
            FailedPrecondition,
            "INVALID_TICKET_TRANSITION",
            &[],
        );
        check(
            Rejection::NotAFollowUp,
            FailedPrecondition,
            "NOT_A_FOLLOW_UP",
            &[],
        );
    }

    #[test]
    fn the_other_errors_answer_their_codes() {
        check(
            Error::RequestIdReused,
            Code::AlreadyExists,
            "REQUEST_ID_REUSED",
            &[],
        );
        check(
            Error::invalid("survey_id", "required"),
            Code::InvalidArgument,
            "",
            &[],
        );
        check(Error::not_found("survey", "x"), Code::NotFound, "", &[]);
        check(Error::SegmentationNotConfigured, Code::Unavailable, "", &[]);
        check(Error::SegmentationUnavailable, Code::Unavailable, "", &[]);
        check(
            Error::Database(sqlx::Error::PoolTimedOut),
            Code::Unavailable,
            "",
            &[],
        );
        check(
            Error::Database(sqlx::Error::RowNotFound),
            Code::Internal,
            "",
            &[],
        );
        let internal = Status::from(Error::internal(anyhow::anyhow!("secret_table is gone")));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("secret_table"), "{internal:?}");
    }

    #[test]
    fn a_stale_etag_names_what_changed() {
        let status = Status::from(Error::from(Rejection::StaleEtag {
            resource: "SLA policy",
        }));
        assert_eq!(
            status.message(),
            "the SLA policy changed since it was read (stale etag)"
        );
    }
}
