//! The `custops.segmentation.v1.SegmentationService` API. RPCs not implemented yet answer UNIMPLEMENTED
//! through the generated default stubs; the segmentation issue replaces every one of them.

use custops_common::server::MAX_MESSAGE_BYTES;
use custops_contracts::custops::segmentation::v1::segmentation_service_server::{
    SegmentationService, SegmentationServiceServer,
};

/// The gRPC handlers of the segmentation service.
#[derive(Debug, Clone, Default)]
pub struct SegmentationApi;

#[tonic::async_trait]
impl SegmentationService for SegmentationApi {}

/// The API wrapped for serving, with explicit message size limits.
pub fn server() -> SegmentationServiceServer<SegmentationApi> {
    SegmentationServiceServer::new(SegmentationApi)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
