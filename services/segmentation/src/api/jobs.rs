//! TODO(segmentation): replace with the real handlers.

use custops_contracts::custops::segmentation::v1::{
    GetEvaluationSettingsRequest, GetEvaluationSettingsResponse, GetRecomputeJobRequest,
    GetRecomputeJobResponse, ListRecomputeJobsRequest, ListRecomputeJobsResponse,
    RecomputeAllRequest, RecomputeAllResponse, RecomputeSegmentRequest, RecomputeSegmentResponse,
    UpdateEvaluationSettingsRequest, UpdateEvaluationSettingsResponse,
};
use tonic::{Request, Response, Status};

use super::SegmentationApi;

/// RecomputeSegment.
pub(super) async fn recompute_segment(
    _api: &SegmentationApi,
    _request: Request<RecomputeSegmentRequest>,
) -> Result<Response<RecomputeSegmentResponse>, Status> {
    Err(Status::unimplemented("RecomputeSegment"))
}

/// RecomputeAll.
pub(super) async fn recompute_all(
    _api: &SegmentationApi,
    _request: Request<RecomputeAllRequest>,
) -> Result<Response<RecomputeAllResponse>, Status> {
    Err(Status::unimplemented("RecomputeAll"))
}

/// GetRecomputeJob.
pub(super) async fn get_recompute_job(
    _api: &SegmentationApi,
    _request: Request<GetRecomputeJobRequest>,
) -> Result<Response<GetRecomputeJobResponse>, Status> {
    Err(Status::unimplemented("GetRecomputeJob"))
}

/// ListRecomputeJobs.
pub(super) async fn list_recompute_jobs(
    _api: &SegmentationApi,
    _request: Request<ListRecomputeJobsRequest>,
) -> Result<Response<ListRecomputeJobsResponse>, Status> {
    Err(Status::unimplemented("ListRecomputeJobs"))
}

/// GetEvaluationSettings.
pub(super) async fn get_evaluation_settings(
    _api: &SegmentationApi,
    _request: Request<GetEvaluationSettingsRequest>,
) -> Result<Response<GetEvaluationSettingsResponse>, Status> {
    Err(Status::unimplemented("GetEvaluationSettings"))
}

/// UpdateEvaluationSettings.
pub(super) async fn update_evaluation_settings(
    _api: &SegmentationApi,
    _request: Request<UpdateEvaluationSettingsRequest>,
) -> Result<Response<UpdateEvaluationSettingsResponse>, Status> {
    Err(Status::unimplemented("UpdateEvaluationSettings"))
}
