//! One trace across a client call and one service-to-service hop, collected by the in-memory
//! exporter. (Its own test binary: telemetry is installed once per process.)

#[path = "test_api/mod.rs"]
mod test_api;

use std::time::Duration;

use custops_common::auth::AuthSettings;
use custops_common::client::ClientBuilder;
use custops_common::config::ServerSettings;
use custops_common::service::ServiceKind;
use custops_common::telemetry::{self, Exporters, LogFormat};
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;

use test_api::{TestApi, TestServer, request};

#[tokio::test]
async fn one_trace_spans_the_client_call_and_the_hop_to_the_next_service() -> anyhow::Result<()> {
    let exporter = InMemorySpanExporter::default();
    let installed = telemetry::init(
        "custops-test",
        LogFormat::Text,
        Exporters::Spans(Box::new({
            let exporter = exporter.clone();
            move || {
                SdkTracerProvider::builder()
                    .with_simple_exporter(exporter)
                    .build()
            }
        })),
    );
    anyhow::ensure!(installed.is_some(), "telemetry was already installed");

    let settings = ServerSettings::local(ServiceKind::Loyalty, AuthSettings::Disabled);
    // feedback (a) → loyalty (b): a's handler calls b through the shared client builder.
    let b = TestServer::start(
        &settings,
        TestApi {
            name: "b".to_owned(),
            peer: None,
        },
    )
    .await?;
    let to_b = ClientBuilder::new(b.url(), "feedback").build()?;
    let a = TestServer::start(
        &settings,
        TestApi {
            name: "a".to_owned(),
            peer: Some(to_b),
        },
    )
    .await?;

    let root = tracing::info_span!("test.caller");
    async {
        let channel = ClientBuilder::new(a.url(), "test").build()?;
        EventFeedServiceClient::new(channel)
            .get_feed_position(request("hop"))
            .await?;
        anyhow::Ok(())
    }
    .instrument(root.clone())
    .await?;
    drop(root);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let spans = exporter.get_finished_spans()?;
    let find = |name: &str| spans.iter().find(|s| s.name == name);
    let caller =
        find("test.caller").ok_or_else(|| anyhow::anyhow!("no caller span: {spans:#?}"))?;
    let trace_id: TraceId = caller.span_context.trace_id();
    let of_kind = |kind: SpanKind| -> Vec<&SpanData> {
        spans.iter().filter(|s| s.span_kind == kind).collect()
    };
    let clients = of_kind(SpanKind::Client);
    let servers = of_kind(SpanKind::Server);
    assert_eq!((clients.len(), servers.len()), (2, 2), "{spans:#?}");
    for span in clients.iter().chain(&servers) {
        assert_eq!(span.span_context.trace_id(), trace_id, "{span:#?}");
    }

    let child_of = |parent: SpanId, among: &[&SpanData]| -> Option<SpanData> {
        among
            .iter()
            .find(|s| s.parent_span_id == parent)
            .map(|s| (*s).clone())
    };
    // test.caller → client span → a's server span (parented on the client span)
    let first_call = child_of(caller.span_context.span_id(), &clients)
        .ok_or_else(|| anyhow::anyhow!("no client span under the caller"))?;
    let server_a = child_of(first_call.span_context.span_id(), &servers)
        .ok_or_else(|| anyhow::anyhow!("a's server span is not the client span's child"))?;
    // → a's outgoing client span → b's server span
    let hop = child_of(server_a.span_context.span_id(), &clients)
        .ok_or_else(|| anyhow::anyhow!("a's outgoing call is not under a's server span"))?;
    let server_b = child_of(hop.span_context.span_id(), &servers)
        .ok_or_else(|| anyhow::anyhow!("b's server span is not the hop's child"))?;
    let status_attribute = server_b
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "rpc.grpc.status_code")
        .map(|kv| kv.value.to_string());
    assert_eq!(status_attribute.as_deref(), Some("0"));

    a.shutdown().await?;
    b.shutdown().await
}
