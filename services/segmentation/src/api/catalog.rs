//! TODO(segmentation): replace with the real handlers.

use custops_contracts::custops::segmentation::v1::{ListFieldsRequest, ListFieldsResponse};
use tonic::{Request, Response, Status};

use super::SegmentationApi;

/// ListFields.
pub(super) async fn list_fields(
    _api: &SegmentationApi,
    _request: Request<ListFieldsRequest>,
) -> Result<Response<ListFieldsResponse>, Status> {
    Err(Status::unimplemented("ListFields"))
}
