//! `custops bench-echo`: the baseline of the lookup benchmarks. A bare tonic server from this
//! workspace serving `custops.segmentation.v1.SegmentationService` with the same generated
//! code, tonic features, message size limits and socket options as the real service, but none
//! of the suite's layers and no work: ListCustomerSegments, CheckMembership and
//! BatchCheckMembership answer a constant of the shape and size the real service answers for
//! the benchmark's data; every other RPC keeps its generated UNIMPLEMENTED stub. The gap
//! between this and the real service is what the suite's layers, caches and handlers cost.

use anyhow::Context;
use custops_common::server::MAX_MESSAGE_BYTES;
use custops_common::shutdown;
use custops_contracts::custops::segmentation::v1::segmentation_service_server::{
    SegmentationService, SegmentationServiceServer,
};
use custops_contracts::custops::segmentation::v1::{
    BatchCheckMembershipRequest, BatchCheckMembershipResponse, CheckMembershipRequest,
    CheckMembershipResponse, ListCustomerSegmentsRequest, ListCustomerSegmentsResponse,
};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::serve::{announce, stdin_closed};

/// The constant answers.
#[derive(Debug)]
struct Echo {
    list: ListCustomerSegmentsResponse,
}

#[tonic::async_trait]
impl SegmentationService for Echo {
    async fn list_customer_segments(
        &self,
        _request: Request<ListCustomerSegmentsRequest>,
    ) -> Result<Response<ListCustomerSegmentsResponse>, Status> {
        Ok(Response::new(self.list.clone()))
    }

    async fn check_membership(
        &self,
        _request: Request<CheckMembershipRequest>,
    ) -> Result<Response<CheckMembershipResponse>, Status> {
        Ok(Response::new(CheckMembershipResponse { member: true }))
    }

    async fn batch_check_membership(
        &self,
        request: Request<BatchCheckMembershipRequest>,
    ) -> Result<Response<BatchCheckMembershipResponse>, Status> {
        // One flag per customer asked, as the real answer has.
        let asked = request.get_ref().customer_ids.len();
        Ok(Response::new(BatchCheckMembershipResponse {
            is_member: (0..asked).map(|i| i % 2 == 0).collect(),
        }))
    }
}

/// Serves on `port` (0: any) with `list_ids` segment ids (UUID strings, as the real ones) in
/// every ListCustomerSegments answer, until SIGTERM/SIGINT or the end of standard input.
pub async fn run(port: u16, list_ids: usize) -> anyhow::Result<()> {
    let echo = Echo {
        list: ListCustomerSegmentsResponse {
            segment_ids: (0..list_ids)
                .map(|_| uuid::Uuid::now_v7().to_string())
                .collect(),
            memberships: Vec::new(),
        },
    };
    let api = SegmentationServiceServer::new(echo)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Health, so the parent waits for SERVING the same way for both servers.
    let (health, health_api) = tonic_health::server::health_reporter();
    health
        .set_serving::<SegmentationServiceServer<Echo>>()
        .await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .context("Failed to bind the echo server")?;
    let addr = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    announce(addr);
    let stdin_closed = stdin_closed();
    let stop = async move {
        tokio::select! {
            () = shutdown::shutdown_signal() => {}
            () = stdin_closed.cancelled() => {}
        }
    };
    tonic::transport::Server::builder()
        .add_service(health_api)
        .add_service(api)
        .serve_with_incoming_shutdown(incoming, stop)
        .await
        .context("the echo server failed")
}
