//! TODO(segmentation): replace with the real handlers.

use custops_contracts::custops::segmentation::v1::{
    BatchGetSegmentsRequest, BatchGetSegmentsResponse, CreateSegmentRequest, CreateSegmentResponse,
    DeleteSegmentRequest, DeleteSegmentResponse, GetSegmentRequest, GetSegmentResponse,
    ListSegmentVersionsRequest, ListSegmentVersionsResponse, ListSegmentsRequest,
    ListSegmentsResponse, PreviewSegmentRequest, PreviewSegmentResponse, UpdateSegmentRequest,
    UpdateSegmentResponse, UploadStaticMembersRequest, UploadStaticMembersResponse,
};
use tonic::{Request, Response, Status, Streaming};

use super::SegmentationApi;

/// CreateSegment.
pub(super) async fn create_segment(
    _api: &SegmentationApi,
    _request: Request<CreateSegmentRequest>,
) -> Result<Response<CreateSegmentResponse>, Status> {
    Err(Status::unimplemented("CreateSegment"))
}

/// GetSegment.
pub(super) async fn get_segment(
    _api: &SegmentationApi,
    _request: Request<GetSegmentRequest>,
) -> Result<Response<GetSegmentResponse>, Status> {
    Err(Status::unimplemented("GetSegment"))
}

/// BatchGetSegments.
pub(super) async fn batch_get_segments(
    _api: &SegmentationApi,
    _request: Request<BatchGetSegmentsRequest>,
) -> Result<Response<BatchGetSegmentsResponse>, Status> {
    Err(Status::unimplemented("BatchGetSegments"))
}

/// ListSegments.
pub(super) async fn list_segments(
    _api: &SegmentationApi,
    _request: Request<ListSegmentsRequest>,
) -> Result<Response<ListSegmentsResponse>, Status> {
    Err(Status::unimplemented("ListSegments"))
}

/// UpdateSegment.
pub(super) async fn update_segment(
    _api: &SegmentationApi,
    _request: Request<UpdateSegmentRequest>,
) -> Result<Response<UpdateSegmentResponse>, Status> {
    Err(Status::unimplemented("UpdateSegment"))
}

/// DeleteSegment.
pub(super) async fn delete_segment(
    _api: &SegmentationApi,
    _request: Request<DeleteSegmentRequest>,
) -> Result<Response<DeleteSegmentResponse>, Status> {
    Err(Status::unimplemented("DeleteSegment"))
}

/// ListSegmentVersions.
pub(super) async fn list_segment_versions(
    _api: &SegmentationApi,
    _request: Request<ListSegmentVersionsRequest>,
) -> Result<Response<ListSegmentVersionsResponse>, Status> {
    Err(Status::unimplemented("ListSegmentVersions"))
}

/// PreviewSegment.
pub(super) async fn preview_segment(
    _api: &SegmentationApi,
    _request: Request<PreviewSegmentRequest>,
) -> Result<Response<PreviewSegmentResponse>, Status> {
    Err(Status::unimplemented("PreviewSegment"))
}

/// UploadStaticMembers.
pub(super) async fn upload_static_members(
    _api: &SegmentationApi,
    _request: Request<Streaming<UploadStaticMembersRequest>>,
) -> Result<Response<UploadStaticMembersResponse>, Status> {
    Err(Status::unimplemented("UploadStaticMembers"))
}
