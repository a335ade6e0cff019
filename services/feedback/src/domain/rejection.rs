//! Why the feedback rules refuse a well-formed request in the current state: each variant is
//! one `google.rpc.ErrorInfo` reason of the contract (`FeedbackService` docs), named here and
//! spelled once, in `api/error.rs`, with the metadata a caller needs to act on it.

use uuid::Uuid;

use super::survey::SurveyStatus;
use super::ticket::{Status as TicketStatus, Transition};

/// A refusal by the feedback rules (not a malformed request, not an infrastructure failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The `etag` sent is not the resource's current one: ABORTED.
    #[error("the {resource} changed since it was read (stale etag)")]
    StaleEtag {
        /// What changed, in words: "survey", "ticket", "SLA policy".
        resource: &'static str,
    },
    /// SURVEY_CLOSED.
    #[error("the survey is closed")]
    SurveyClosed,
    /// SURVEY_NOT_DRAFT: an update of an active survey's questions or target.
    #[error("questions and target can change only while the survey is a draft")]
    SurveyDesignFrozen,
    /// SURVEY_NOT_DRAFT: a delete of a survey that is not a draft.
    #[error("only draft surveys can be deleted; close it instead")]
    SurveyNotDeletable,
    /// SURVEY_NOT_ACTIVE: an invitation to a draft or closed survey.
    #[error("the survey is {}, not active", .status.as_str())]
    SurveyNotActive {
        /// The survey's status.
        status: SurveyStatus,
    },
    /// CUSTOMER_NOT_IN_SEGMENT.
    #[error("the customer is not a member of the survey's target segment")]
    CustomerNotInSegment,
    /// INVITATION_EXISTS (ALREADY_EXISTS): one invitation per survey, customer and touchpoint.
    #[error("the customer is already invited to this survey for this touchpoint")]
    InvitationExists {
        /// The existing invitation.
        invitation_id: Uuid,
    },
    /// RESPONSE_ALREADY_SUBMITTED (ALREADY_EXISTS): one response per invitation.
    #[error("this invitation has already been answered")]
    ResponseAlreadySubmitted {
        /// The existing response.
        response_id: Uuid,
    },
    /// INVITATION_EXPIRED.
    #[error("the invitation has expired")]
    InvitationExpired,
    /// NO_REWARD: RetryReward on a response without a reward.
    #[error("the response has no reward")]
    NoReward,
    /// TICKET_CLOSED.
    #[error("the ticket is closed")]
    TicketClosed,
    /// INVALID_TICKET_TRANSITION: the workflow has no such step from the ticket's status.
    #[error("cannot {transition:?} a ticket that is {}", .from.as_str())]
    InvalidTicketTransition {
        /// The step asked for.
        transition: Transition,
        /// The ticket's status.
        from: TicketStatus,
    },
    /// INVALID_TICKET_TRANSITION: a follow-up outcome on a ticket that is not OPEN or
    /// IN_PROGRESS.
    #[error(
        "outcomes are recorded on OPEN or IN_PROGRESS follow-ups; this one is {} (reopen it first)",
        .from.as_str()
    )]
    OutcomeOnInactiveTicket {
        /// The ticket's status.
        from: TicketStatus,
    },
    /// NOT_A_FOLLOW_UP: a follow-up outcome on a complaint.
    #[error("the ticket is a complaint, not a follow-up")]
    NotAFollowUp,
}
