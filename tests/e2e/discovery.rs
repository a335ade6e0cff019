//! A client that knows nothing but gRPC reflection and health can find and check every
//! service, as grpcurl, `buf curl` and Kubernetes probes do.

use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::event_feed_service_server;
use custops_contracts::custops::feedback::v1 as v1_feedback;
use custops_contracts::custops::loyalty::v1 as v1_loyalty;
use custops_contracts::custops::profiles::v1 as v1_profiles;
use custops_contracts::custops::segmentation::v1 as v1_segmentation;
use custops_e2e::TestSuite;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

fn api_name(service: ServiceKind) -> &'static str {
    match service {
        ServiceKind::Profiles => v1_profiles::profiles_service_server::SERVICE_NAME,
        ServiceKind::Segmentation => v1_segmentation::segmentation_service_server::SERVICE_NAME,
        ServiceKind::Loyalty => v1_loyalty::loyalty_service_server::SERVICE_NAME,
        ServiceKind::Feedback => v1_feedback::feedback_service_server::SERVICE_NAME,
    }
}

/// Sends one reflection request and returns the one response.
async fn reflect(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    request: MessageRequest,
) -> anyhow::Result<MessageResponse> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    let response: ServerReflectionResponse = responses
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("reflection answered nothing"))??;
    response
        .message_response
        .ok_or_else(|| anyhow::anyhow!("reflection response without a message"))
}

#[tokio::test]
async fn every_service_is_listed_by_reflection_and_reports_serving() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;

    for service in ServiceKind::ALL {
        let channel = suite.channel(service).await?;
        let api = api_name(service);

        let mut reflection = ServerReflectionClient::new(channel.clone());
        let MessageResponse::ListServicesResponse(listed) =
            reflect(&mut reflection, MessageRequest::ListServices(String::new())).await?
        else {
            anyhow::bail!("{service}: ListServices answered something else");
        };
        let mut names: Vec<String> = listed.service.into_iter().map(|s| s.name).collect();
        names.sort();
        let mut expected = vec![
            api.to_owned(),
            event_feed_service_server::SERVICE_NAME.to_owned(),
            "grpc.health.v1.Health".to_owned(),
        ];
        expected.sort();
        assert_eq!(
            names, expected,
            "{service} lists exactly its own APIs and health"
        );

        // The descriptors are really served, so a client can build calls from them alone.
        let MessageResponse::FileDescriptorResponse(files) = reflect(
            &mut reflection,
            MessageRequest::FileContainingSymbol(api.to_owned()),
        )
        .await?
        else {
            anyhow::bail!("{service}: FileContainingSymbol answered something else");
        };
        assert!(
            !files.file_descriptor_proto.is_empty(),
            "{service}: no descriptors"
        );

        let mut health = HealthClient::new(channel);
        for name in ["", api] {
            let status = health
                .check(HealthCheckRequest {
                    service: name.to_owned(),
                })
                .await?
                .into_inner()
                .status;
            assert_eq!(
                status,
                ServingStatus::Serving as i32,
                "{service} health of `{name}`"
            );
        }
    }

    suite.stop().await
}

#[tokio::test]
async fn health_of_a_service_that_is_not_served_is_not_found() -> anyhow::Result<()> {
    let suite = TestSuite::start().await?;
    let channel = suite.channel(ServiceKind::Profiles).await?;
    let mut health = HealthClient::new(channel);
    let unknown = health
        .check(HealthCheckRequest {
            service: "custops.billing.v1.BillingService".to_owned(),
        })
        .await
        .err()
        .map(|status| status.code());
    assert_eq!(
        unknown,
        Some(tonic::Code::NotFound),
        "health of an unknown service"
    );
    suite.stop().await
}
