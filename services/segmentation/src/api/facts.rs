//! TODO(segmentation): replace with the real handlers.

use custops_contracts::custops::segmentation::v1::{
    GetCustomerFactsRequest, GetCustomerFactsResponse,
};
use tonic::{Request, Response, Status};

use super::SegmentationApi;

/// GetCustomerFacts.
pub(super) async fn get_customer_facts(
    _api: &SegmentationApi,
    _request: Request<GetCustomerFactsRequest>,
) -> Result<Response<GetCustomerFactsResponse>, Status> {
    Err(Status::unimplemented("GetCustomerFacts"))
}
