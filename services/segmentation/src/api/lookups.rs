//! TODO(segmentation): replace with the real handlers.

use custops_contracts::custops::segmentation::v1::{
    BatchCheckMembershipRequest, BatchCheckMembershipResponse, CheckMembershipRequest,
    CheckMembershipResponse, ExplainMembershipRequest, ExplainMembershipResponse,
    GetSegmentSizeRequest, GetSegmentSizeResponse, ListCustomerSegmentsRequest,
    ListCustomerSegmentsResponse, StreamSegmentMembersRequest, StreamSegmentMembersResponse,
};
use tonic::{Request, Response, Status};

use super::SegmentationApi;

/// The stream StreamSegmentMembers answers with.
pub(crate) type MemberStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<StreamSegmentMembersResponse, Status>> + Send>,
>;

/// ListCustomerSegments.
pub(super) async fn list_customer_segments(
    _api: &SegmentationApi,
    _request: Request<ListCustomerSegmentsRequest>,
) -> Result<Response<ListCustomerSegmentsResponse>, Status> {
    Err(Status::unimplemented("ListCustomerSegments"))
}

/// CheckMembership.
pub(super) async fn check_membership(
    _api: &SegmentationApi,
    _request: Request<CheckMembershipRequest>,
) -> Result<Response<CheckMembershipResponse>, Status> {
    Err(Status::unimplemented("CheckMembership"))
}

/// BatchCheckMembership.
pub(super) async fn batch_check_membership(
    _api: &SegmentationApi,
    _request: Request<BatchCheckMembershipRequest>,
) -> Result<Response<BatchCheckMembershipResponse>, Status> {
    Err(Status::unimplemented("BatchCheckMembership"))
}

/// StreamSegmentMembers.
pub(super) async fn stream_segment_members(
    _api: &SegmentationApi,
    _request: Request<StreamSegmentMembersRequest>,
) -> Result<Response<MemberStream>, Status> {
    Err(Status::unimplemented("StreamSegmentMembers"))
}

/// GetSegmentSize.
pub(super) async fn get_segment_size(
    _api: &SegmentationApi,
    _request: Request<GetSegmentSizeRequest>,
) -> Result<Response<GetSegmentSizeResponse>, Status> {
    Err(Status::unimplemented("GetSegmentSize"))
}

/// ExplainMembership.
pub(super) async fn explain_membership(
    _api: &SegmentationApi,
    _request: Request<ExplainMembershipRequest>,
) -> Result<Response<ExplainMembershipResponse>, Status> {
    Err(Status::unimplemented("ExplainMembership"))
}
