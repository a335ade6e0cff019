//! The `custops.common.v1.EventFeedService` every service serves over its own outbox.
//!
//! Until the outbox feed is implemented (common-runtime issue) the RPCs answer UNIMPLEMENTED
//! through the generated default stubs; registering the API now keeps each server's surface,
//! health and reflection listing final.

use custops_contracts::custops::common::v1::event_feed_service_server::{
    EventFeedService, EventFeedServiceServer,
};

use crate::server::MAX_MESSAGE_BYTES;

/// The feed API of one service.
#[derive(Debug, Clone, Default)]
pub struct EventFeedApi;

#[tonic::async_trait]
impl EventFeedService for EventFeedApi {}

/// The feed API wrapped for serving, with the message limits every server uses.
pub fn event_feed_server() -> EventFeedServiceServer<EventFeedApi> {
    EventFeedServiceServer::new(EventFeedApi)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
