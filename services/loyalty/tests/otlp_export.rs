//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the real binary exports its spans and RPC metrics
//! over OTLP/gRPC: a stand-in collector started by the test receives them, named after the
//! service, and the last ones arrive on SIGTERM (telemetry is flushed at shutdown).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use custops_contracts::custops::common::v1::GetFeedPositionRequest;
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use custops_testkit::TestDatabase;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tonic::{Request, Response, Status};

/// What the stand-in collector received: (service.name, span or metric name).
#[derive(Debug, Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<(String, String)>>>,
    metrics: Arc<Mutex<Vec<(String, String)>>>,
}

fn service_name(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .into_iter()
        .flat_map(|r| r.attributes.iter())
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self
            .spans
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        for resource_spans in request.into_inner().resource_spans {
            let service = service_name(resource_spans.resource.as_ref());
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push((service.clone(), span.name));
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut metrics = self
            .metrics
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        for resource_metrics in request.into_inner().resource_metrics {
            let service = service_name(resource_metrics.resource.as_ref());
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    metrics.push((service.clone(), metric.name));
                }
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test]
async fn spans_and_rpc_metrics_reach_the_collector() -> anyhow::Result<()> {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let collector_addr = listener.local_addr()?;
    let collector = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .add_service(MetricsServiceServer::new(received.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let db = TestDatabase::create().await?;
    let port = free_port()?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_custops-loyalty"))
        .env_clear()
        .env("DATABASE_URL", db.url())
        .env("CUSTOPS_AUTH_MODE", "disabled")
        .env("CUSTOPS_LISTEN_HOST", "127.0.0.1")
        .env("CUSTOPS_LOYALTY_PORT", port.to_string())
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        )
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;

    // Wait until it serves, then make a call.
    let url = format!("http://127.0.0.1:{port}");
    let mut channel = None;
    for _ in 0..100 {
        if let Ok(c) = tonic::transport::Channel::from_shared(url.clone())?
            .connect()
            .await
        {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let channel = channel.ok_or_else(|| anyhow::anyhow!("custops-loyalty never listened"))?;
    EventFeedServiceClient::new(channel)
        .get_feed_position(GetFeedPositionRequest {})
        .await?;

    let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    anyhow::ensure!(killed.success(), "kill failed");
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait()).await??;
    assert!(exit.success(), "exit: {exit:?}");

    let spans = received.spans.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        spans.contains(&(
            "custops-loyalty".to_owned(),
            "custops.common.v1.EventFeedService/GetFeedPosition".to_owned()
        )),
        "spans received: {spans:?}"
    );
    let metrics = received
        .metrics
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    assert!(
        metrics.contains(&(
            "custops-loyalty".to_owned(),
            "rpc.server.duration".to_owned()
        )),
        "metrics received: {metrics:?}"
    );
    collector.abort();
    Ok(())
}
