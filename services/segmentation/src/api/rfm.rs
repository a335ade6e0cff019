//! TODO(segmentation): replace with the real handlers.

use custops_contracts::custops::segmentation::v1::{
    GetCustomerRfmRequest, GetCustomerRfmResponse, GetRfmConfigRequest, GetRfmConfigResponse,
    GetRfmDistributionRequest, GetRfmDistributionResponse, UpdateRfmConfigRequest,
    UpdateRfmConfigResponse,
};
use tonic::{Request, Response, Status};

use super::SegmentationApi;

/// GetRfmConfig.
pub(super) async fn get_rfm_config(
    _api: &SegmentationApi,
    _request: Request<GetRfmConfigRequest>,
) -> Result<Response<GetRfmConfigResponse>, Status> {
    Err(Status::unimplemented("GetRfmConfig"))
}

/// UpdateRfmConfig.
pub(super) async fn update_rfm_config(
    _api: &SegmentationApi,
    _request: Request<UpdateRfmConfigRequest>,
) -> Result<Response<UpdateRfmConfigResponse>, Status> {
    Err(Status::unimplemented("UpdateRfmConfig"))
}

/// GetCustomerRfm.
pub(super) async fn get_customer_rfm(
    _api: &SegmentationApi,
    _request: Request<GetCustomerRfmRequest>,
) -> Result<Response<GetCustomerRfmResponse>, Status> {
    Err(Status::unimplemented("GetCustomerRfm"))
}

/// GetRfmDistribution.
pub(super) async fn get_rfm_distribution(
    _api: &SegmentationApi,
    _request: Request<GetRfmDistributionRequest>,
) -> Result<Response<GetRfmDistributionResponse>, Status> {
    Err(Status::unimplemented("GetRfmDistribution"))
}
