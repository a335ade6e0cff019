//! The `custops.loyalty.v1.LoyaltyService` API. RPCs not implemented yet answer UNIMPLEMENTED
//! through the generated default stubs; the loyalty issue replaces every one of them.

use custops_common::server::MAX_MESSAGE_BYTES;
use custops_contracts::custops::loyalty::v1::loyalty_service_server::{
    LoyaltyService, LoyaltyServiceServer,
};

/// The gRPC handlers of the loyalty service.
#[derive(Debug, Clone, Default)]
pub struct LoyaltyApi;

#[tonic::async_trait]
impl LoyaltyService for LoyaltyApi {}

/// The API wrapped for serving, with explicit message size limits.
pub fn server() -> LoyaltyServiceServer<LoyaltyApi> {
    LoyaltyServiceServer::new(LoyaltyApi)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
