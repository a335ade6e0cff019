//! The `custops.feedback.v1.FeedbackService` API (transport only): each RPC is handled in the
//! submodule for its area, which parses the request into domain values (field violations
//! through `parse`), calls one use case in `workflow` and converts the result (`convert`).
//! Failures become a `Status` in `error`, and nowhere else.
//!
//! A mutation with a request id passes its reply (domain → wire) to its use case, which
//! stores it with the key for replays (`workflow::once`). Every List RPC pages with
//! `custops_common::paging`: `FeedbackApi::page` reads the request's page, the use case
//! reads `page.fetch()` rows after `page.after`, and `next_page_token` cuts them to the page.
//!
//! - `surveys`: survey design and lifecycle.
//! - `responses`: invitations, responses and reward retries.
//! - `metrics`: GetSurveyMetrics.
//! - `tickets`: tickets, their workflow, notes, follow-up outcomes, the SLA policy and the
//!   closed-loop report.
//! - `reviews`: reviews and their summaries.
//! - `customers`: the per-customer summary and the data-subject export.
//! - `parse`: the field parsers the areas share (ids, request ids, time ranges, touchpoints,
//!   answers, SLA targets, …); `convert`: domain → wire; `error`: `Error` → `Status`.

pub mod convert;
mod customers;
mod error;
mod metrics;
pub mod parse;
mod responses;
mod reviews;
mod surveys;
mod tickets;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use custops_common::paging::{Page, PageTokens, PagedRequest};
use custops_common::server::MAX_MESSAGE_BYTES;
use custops_contracts::custops::feedback::v1 as pb;
use custops_contracts::custops::feedback::v1::feedback_service_server::{
    FeedbackService, FeedbackServiceServer,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::Clock;
use crate::error::Error;
use crate::segments::SegmentDirectory;
use crate::store::PgStore;
use crate::workflow::Context;

type Rpc<T> = Result<Response<T>, Status>;

/// The gRPC handlers of the feedback service.
#[derive(Debug, Clone)]
pub struct FeedbackApi {
    ctx: Context,
    pages: PageTokens,
}

impl FeedbackApi {
    /// Handlers over `store`, reading time from `clock`, signing page tokens with `pages`,
    /// asking `segments` about segment membership.
    pub fn new(
        store: PgStore,
        clock: Arc<dyn Clock>,
        pages: PageTokens,
        segments: Option<Arc<dyn SegmentDirectory>>,
    ) -> Self {
        Self {
            ctx: Context {
                store,
                clock,
                segments,
            },
            pages,
        }
    }
}

/// The API wrapped for serving, with explicit message size limits.
pub fn server(api: FeedbackApi) -> FeedbackServiceServer<FeedbackApi> {
    FeedbackServiceServer::new(api)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

/// Where a list newest first (or by due time) goes on: the last row's sort time and id.
type Keyset = (DateTime<Utc>, Uuid);

impl FeedbackApi {
    /// The page `request` asks for (`custops_common::paging`): INVALID_ARGUMENT on
    /// `page_size` or on `page_token` (not one of ours, or issued for other filters).
    fn page<R: PagedRequest, C: DeserializeOwned>(
        &self,
        request: &R,
    ) -> Result<Page<'_, C>, Error> {
        Ok(self.pages.page(request)?)
    }
}

/// Cuts `rows` (read with [`Page::fetch`]) to the page and returns the next page's token,
/// empty when no row followed.
fn next_page_token<C: Serialize, T>(
    page: &Page<'_, C>,
    rows: &mut Vec<T>,
    cursor: impl FnOnce(&T) -> C,
) -> Result<String, Error> {
    Ok(page.finish(rows, cursor)?)
}

#[tonic::async_trait]
impl FeedbackService for FeedbackApi {
    async fn create_survey(
        &self,
        request: Request<pb::CreateSurveyRequest>,
    ) -> Rpc<pb::CreateSurveyResponse> {
        surveys::create_survey(self, request).await
    }

    async fn get_survey(
        &self,
        request: Request<pb::GetSurveyRequest>,
    ) -> Rpc<pb::GetSurveyResponse> {
        surveys::get_survey(self, request).await
    }

    async fn list_surveys(
        &self,
        request: Request<pb::ListSurveysRequest>,
    ) -> Rpc<pb::ListSurveysResponse> {
        surveys::list_surveys(self, request).await
    }

    async fn update_survey(
        &self,
        request: Request<pb::UpdateSurveyRequest>,
    ) -> Rpc<pb::UpdateSurveyResponse> {
        surveys::update_survey(self, request).await
    }

    async fn delete_survey(
        &self,
        request: Request<pb::DeleteSurveyRequest>,
    ) -> Rpc<pb::DeleteSurveyResponse> {
        surveys::delete_survey(self, request).await
    }

    async fn activate_survey(
        &self,
        request: Request<pb::ActivateSurveyRequest>,
    ) -> Rpc<pb::ActivateSurveyResponse> {
        surveys::activate_survey(self, request).await
    }

    async fn close_survey(
        &self,
        request: Request<pb::CloseSurveyRequest>,
    ) -> Rpc<pb::CloseSurveyResponse> {
        surveys::close_survey(self, request).await
    }

    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Rpc<pb::CreateInvitationResponse> {
        responses::create_invitation(self, request).await
    }

    async fn get_invitation(
        &self,
        request: Request<pb::GetInvitationRequest>,
    ) -> Rpc<pb::GetInvitationResponse> {
        responses::get_invitation(self, request).await
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Rpc<pb::ListInvitationsResponse> {
        responses::list_invitations(self, request).await
    }

    async fn get_customer_feedback_summary(
        &self,
        request: Request<pb::GetCustomerFeedbackSummaryRequest>,
    ) -> Rpc<pb::GetCustomerFeedbackSummaryResponse> {
        customers::get_customer_feedback_summary(self, request).await
    }

    async fn submit_response(
        &self,
        request: Request<pb::SubmitResponseRequest>,
    ) -> Rpc<pb::SubmitResponseResponse> {
        responses::submit_response(self, request).await
    }

    async fn get_response(
        &self,
        request: Request<pb::GetResponseRequest>,
    ) -> Rpc<pb::GetResponseResponse> {
        responses::get_response(self, request).await
    }

    async fn retry_reward(
        &self,
        request: Request<pb::RetryRewardRequest>,
    ) -> Rpc<pb::RetryRewardResponse> {
        responses::retry_reward(self, request).await
    }

    async fn list_responses(
        &self,
        request: Request<pb::ListResponsesRequest>,
    ) -> Rpc<pb::ListResponsesResponse> {
        responses::list_responses(self, request).await
    }

    async fn get_survey_metrics(
        &self,
        request: Request<pb::GetSurveyMetricsRequest>,
    ) -> Rpc<pb::GetSurveyMetricsResponse> {
        metrics::get_survey_metrics(self, request).await
    }

    async fn open_ticket(
        &self,
        request: Request<pb::OpenTicketRequest>,
    ) -> Rpc<pb::OpenTicketResponse> {
        tickets::open_ticket(self, request).await
    }

    async fn get_ticket(
        &self,
        request: Request<pb::GetTicketRequest>,
    ) -> Rpc<pb::GetTicketResponse> {
        tickets::get_ticket(self, request).await
    }

    async fn list_tickets(
        &self,
        request: Request<pb::ListTicketsRequest>,
    ) -> Rpc<pb::ListTicketsResponse> {
        tickets::list_tickets(self, request).await
    }

    async fn update_ticket(
        &self,
        request: Request<pb::UpdateTicketRequest>,
    ) -> Rpc<pb::UpdateTicketResponse> {
        tickets::update_ticket(self, request).await
    }

    async fn list_ticket_history(
        &self,
        request: Request<pb::ListTicketHistoryRequest>,
    ) -> Rpc<pb::ListTicketHistoryResponse> {
        tickets::list_ticket_history(self, request).await
    }

    async fn assign_ticket(
        &self,
        request: Request<pb::AssignTicketRequest>,
    ) -> Rpc<pb::AssignTicketResponse> {
        tickets::assign_ticket(self, request).await
    }

    async fn start_ticket(
        &self,
        request: Request<pb::StartTicketRequest>,
    ) -> Rpc<pb::StartTicketResponse> {
        tickets::start_ticket(self, request).await
    }

    async fn resolve_ticket(
        &self,
        request: Request<pb::ResolveTicketRequest>,
    ) -> Rpc<pb::ResolveTicketResponse> {
        tickets::resolve_ticket(self, request).await
    }

    async fn close_ticket(
        &self,
        request: Request<pb::CloseTicketRequest>,
    ) -> Rpc<pb::CloseTicketResponse> {
        tickets::close_ticket(self, request).await
    }

    async fn reopen_ticket(
        &self,
        request: Request<pb::ReopenTicketRequest>,
    ) -> Rpc<pb::ReopenTicketResponse> {
        tickets::reopen_ticket(self, request).await
    }

    async fn add_ticket_note(
        &self,
        request: Request<pb::AddTicketNoteRequest>,
    ) -> Rpc<pb::AddTicketNoteResponse> {
        tickets::add_ticket_note(self, request).await
    }

    async fn get_sla_policy(
        &self,
        request: Request<pb::GetSlaPolicyRequest>,
    ) -> Rpc<pb::GetSlaPolicyResponse> {
        tickets::get_sla_policy(self, request).await
    }

    async fn update_sla_policy(
        &self,
        request: Request<pb::UpdateSlaPolicyRequest>,
    ) -> Rpc<pb::UpdateSlaPolicyResponse> {
        tickets::update_sla_policy(self, request).await
    }

    async fn record_follow_up_outcome(
        &self,
        request: Request<pb::RecordFollowUpOutcomeRequest>,
    ) -> Rpc<pb::RecordFollowUpOutcomeResponse> {
        tickets::record_follow_up_outcome(self, request).await
    }

    async fn get_follow_up_report(
        &self,
        request: Request<pb::GetFollowUpReportRequest>,
    ) -> Rpc<pb::GetFollowUpReportResponse> {
        tickets::get_follow_up_report(self, request).await
    }

    async fn create_review(
        &self,
        request: Request<pb::CreateReviewRequest>,
    ) -> Rpc<pb::CreateReviewResponse> {
        reviews::create_review(self, request).await
    }

    async fn get_review(
        &self,
        request: Request<pb::GetReviewRequest>,
    ) -> Rpc<pb::GetReviewResponse> {
        reviews::get_review(self, request).await
    }

    async fn list_reviews(
        &self,
        request: Request<pb::ListReviewsRequest>,
    ) -> Rpc<pb::ListReviewsResponse> {
        reviews::list_reviews(self, request).await
    }

    async fn get_review_summary(
        &self,
        request: Request<pb::GetReviewSummaryRequest>,
    ) -> Rpc<pb::GetReviewSummaryResponse> {
        reviews::get_review_summary(self, request).await
    }

    async fn batch_get_review_summaries(
        &self,
        request: Request<pb::BatchGetReviewSummariesRequest>,
    ) -> Rpc<pb::BatchGetReviewSummariesResponse> {
        reviews::batch_get_review_summaries(self, request).await
    }

    async fn export_customer_data(
        &self,
        request: Request<pb::ExportCustomerDataRequest>,
    ) -> Rpc<pb::ExportCustomerDataResponse> {
        customers::export_customer_data(self, request).await
    }
}
