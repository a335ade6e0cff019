//! What feedback holds about one customer: GetCustomerFeedbackSummary and the data-subject
//! export (ExportCustomerData).

use custops_contracts::custops::feedback::v1 as pb;
use tonic::Request;

use super::{FeedbackApi, Rpc, convert, ok, parse};
use crate::workflow;

#[tracing::instrument(skip_all)]
pub(super) async fn get_customer_feedback_summary(
    api: &FeedbackApi,
    request: Request<pb::GetCustomerFeedbackSummaryRequest>,
) -> Rpc<pb::GetCustomerFeedbackSummaryResponse> {
    let customer_id = parse::required_customer_id("customer_id", &request.get_ref().customer_id)?;
    let s = workflow::responses::customer_summary(&api.ctx, &customer_id).await?;
    ok(pb::GetCustomerFeedbackSummaryResponse {
        summary: Some(convert::customer_summary(customer_id, &s)),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn export_customer_data(
    api: &FeedbackApi,
    request: Request<pb::ExportCustomerDataRequest>,
) -> Rpc<pb::ExportCustomerDataResponse> {
    let customer_id = parse::required_customer_id("customer_id", &request.get_ref().customer_id)?;
    let data = workflow::export::customer_data(&api.ctx, &customer_id).await?;
    ok(pb::ExportCustomerDataResponse {
        customer_data_export: Some(convert::customer_export(&data)),
    })
}
