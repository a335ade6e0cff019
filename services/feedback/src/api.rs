//! The `custops.feedback.v1.FeedbackService` API. RPCs not implemented yet answer UNIMPLEMENTED
//! through the generated default stubs; the feedback issue replaces every one of them.

use custops_common::server::MAX_MESSAGE_BYTES;
use custops_contracts::custops::feedback::v1::feedback_service_server::{
    FeedbackService, FeedbackServiceServer,
};

/// The gRPC handlers of the feedback service.
#[derive(Debug, Clone, Default)]
pub struct FeedbackApi;

#[tonic::async_trait]
impl FeedbackService for FeedbackApi {}

/// The API wrapped for serving, with explicit message size limits.
pub fn server() -> FeedbackServiceServer<FeedbackApi> {
    FeedbackServiceServer::new(FeedbackApi)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
