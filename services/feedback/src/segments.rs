//! What feedback asks segmentation: whether a customer is in a survey's target segment
//! (CreateInvitation) and which segments a customer is in when they respond (recorded on the
//! response for the metrics `segment_id` filter). Calls carry a short deadline so a slow
//! segmentation cannot hold an invitation or a submission for long.

use std::fmt::Debug;
use std::time::Duration;

use custops_common::client::ServiceChannel;
use custops_contracts::custops::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use custops_contracts::custops::segmentation::v1::{
    CheckMembershipRequest, ListCustomerSegmentsRequest,
};
use tonic::Code;

use crate::error::Error;

/// Scope feedback asks for on its calls to segmentation.
pub const SEGMENTATION_SCOPES: &[&str] = &["segmentation.read"];

/// How long one membership question may take.
const CALL_TIMEOUT: Duration = Duration::from_millis(800);

/// Segment membership, as segmentation answers it.
#[tonic::async_trait]
pub trait SegmentDirectory: Send + Sync + Debug {
    /// Whether `customer_id` is currently a member of `segment_id`. A segment that does not
    /// exist has no members.
    async fn is_member(&self, segment_id: &str, customer_id: &str) -> Result<bool, Error>;
    /// The segments `customer_id` is currently a member of.
    async fn segments_of(&self, customer_id: &str) -> Result<Vec<String>, Error>;
}

/// The segmentation service over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcSegments {
    client: SegmentationServiceClient<ServiceChannel>,
}

impl GrpcSegments {
    /// A directory calling segmentation over `channel`.
    pub fn new(channel: ServiceChannel) -> Self {
        Self {
            client: SegmentationServiceClient::new(channel),
        }
    }
}

#[tonic::async_trait]
impl SegmentDirectory for GrpcSegments {
    async fn is_member(&self, segment_id: &str, customer_id: &str) -> Result<bool, Error> {
        let mut request = tonic::Request::new(CheckMembershipRequest {
            segment_id: segment_id.to_owned(),
            customer_id: customer_id.to_owned(),
        });
        request.set_timeout(CALL_TIMEOUT);
        match self.client.clone().check_membership(request).await {
            Ok(response) => Ok(response.into_inner().member),
            Err(status) if status.code() == Code::NotFound => Ok(false),
            Err(status) => Err(unavailable(&status)),
        }
    }

    async fn segments_of(&self, customer_id: &str) -> Result<Vec<String>, Error> {
        let mut request = tonic::Request::new(ListCustomerSegmentsRequest {
            customer_id: customer_id.to_owned(),
            ..Default::default()
        });
        request.set_timeout(CALL_TIMEOUT);
        match self.client.clone().list_customer_segments(request).await {
            Ok(response) => Ok(response.into_inner().segment_ids),
            Err(status) => Err(unavailable(&status)),
        }
    }
}

/// UNAVAILABLE for a failed segmentation call; the cause is logged, not shown to the caller.
fn unavailable(status: &tonic::Status) -> Error {
    tracing::warn!(code = ?status.code(), message = status.message(), "segmentation call failed");
    Error::SegmentationUnavailable
}
