//! TODO(segmentation): replace with the real handlers.

use custops_contracts::custops::segmentation::v1::{
    GetCustomerLifecycleRequest, GetCustomerLifecycleResponse, GetLifecycleConfigRequest,
    GetLifecycleConfigResponse, GetLifecycleDistributionRequest, GetLifecycleDistributionResponse,
    UpdateLifecycleConfigRequest, UpdateLifecycleConfigResponse,
};
use tonic::{Request, Response, Status};

use super::SegmentationApi;

/// GetLifecycleConfig.
pub(super) async fn get_lifecycle_config(
    _api: &SegmentationApi,
    _request: Request<GetLifecycleConfigRequest>,
) -> Result<Response<GetLifecycleConfigResponse>, Status> {
    Err(Status::unimplemented("GetLifecycleConfig"))
}

/// UpdateLifecycleConfig.
pub(super) async fn update_lifecycle_config(
    _api: &SegmentationApi,
    _request: Request<UpdateLifecycleConfigRequest>,
) -> Result<Response<UpdateLifecycleConfigResponse>, Status> {
    Err(Status::unimplemented("UpdateLifecycleConfig"))
}

/// GetCustomerLifecycle.
pub(super) async fn get_customer_lifecycle(
    _api: &SegmentationApi,
    _request: Request<GetCustomerLifecycleRequest>,
) -> Result<Response<GetCustomerLifecycleResponse>, Status> {
    Err(Status::unimplemented("GetCustomerLifecycle"))
}

/// GetLifecycleDistribution.
pub(super) async fn get_lifecycle_distribution(
    _api: &SegmentationApi,
    _request: Request<GetLifecycleDistributionRequest>,
) -> Result<Response<GetLifecycleDistributionResponse>, Status> {
    Err(Status::unimplemented("GetLifecycleDistribution"))
}
