//! The `custops.profiles.v1.ProfilesService` API. RPCs not implemented yet answer UNIMPLEMENTED
//! through the generated default stubs; the profiles issue replaces every one of them.

use custops_common::server::MAX_MESSAGE_BYTES;
use custops_contracts::custops::profiles::v1::profiles_service_server::{
    ProfilesService, ProfilesServiceServer,
};

/// The gRPC handlers of the profiles service.
#[derive(Debug, Clone, Default)]
pub struct ProfilesApi;

#[tonic::async_trait]
impl ProfilesService for ProfilesApi {}

/// The API wrapped for serving, with explicit message size limits.
pub fn server() -> ProfilesServiceServer<ProfilesApi> {
    ProfilesServiceServer::new(ProfilesApi)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
