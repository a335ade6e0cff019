//! One trace across a client call and one service-to-service hop, collected by the in-memory
//! exporter: each hosted service's spans under its own `service.name`, client spans with their
//! status and server address. (Its own test binary: telemetry is installed once per process.)

#[path = "test_api/mod.rs"]
mod test_api;

use custops_common::auth::AuthSettings;
use custops_common::client::ClientBuilder;
use custops_common::config::ServerSettings;
use custops_common::service::ServiceKind;
use custops_common::telemetry::{self, Exporters, LogFormat, Telemetry};
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use custops_testkit::eventually;
use opentelemetry::Key;
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use std::sync::{Arc, Mutex, OnceLock};
use tracing::Instrument;

use test_api::{PATIENCE, TestApi, TestServer, request};

/// Spans exported so far, each with the `service.name` of the provider that exported it.
#[derive(Clone, Default)]
struct Exported(Arc<Mutex<Vec<(String, InMemorySpanExporter)>>>);

impl Exported {
    /// The tracer provider for `resource`, exporting into a new in-memory exporter.
    fn provider(&self, resource: Resource) -> SdkTracerProvider {
        let exporter = InMemorySpanExporter::default();
        let name = resource
            .get(&Key::new("service.name"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        if let Ok(mut all) = self.0.lock() {
            all.push((name, exporter.clone()));
        }
        SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(resource)
            .build()
    }

    fn spans(&self) -> anyhow::Result<Vec<(String, SpanData)>> {
        let all = self
            .0
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .clone();
        let mut spans = Vec::new();
        for (name, exporter) in all {
            for span in exporter.get_finished_spans()? {
                spans.push((name.clone(), span));
            }
        }
        Ok(spans)
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// Telemetry for this test binary, installed once: one process hosting two services, as
/// `custops dev` hosts four. Tests tell their spans apart by trace.
fn exported() -> anyhow::Result<Exported> {
    static INSTALLED: OnceLock<Option<(Exported, Telemetry)>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let exported = Exported::default();
            telemetry::init_hosting(
                "custops-test",
                &[ServiceKind::Feedback, ServiceKind::Loyalty],
                LogFormat::Text,
                Exporters::Spans(Box::new({
                    let exported = exported.clone();
                    move |resource| exported.provider(resource)
                })),
            )
            .map(|telemetry| (exported, telemetry))
        })
        .as_ref()
        .map(|(exported, _)| exported.clone())
        .ok_or_else(|| anyhow::anyhow!("telemetry was already installed"))
}

/// The finished spans of the trace `root` (a span name) started, with their service names.
fn trace_of(exported: &Exported, root: &str) -> anyhow::Result<Vec<(String, SpanData)>> {
    let all = exported.spans()?;
    let trace_id = all
        .iter()
        .find(|(_, s)| s.name == root)
        .map(|(_, s)| s.span_context.trace_id())
        .ok_or_else(|| anyhow::anyhow!("no {root} span: {all:#?}"))?;
    Ok(all
        .into_iter()
        .filter(|(_, s)| s.span_context.trace_id() == trace_id)
        .collect())
}

#[tokio::test]
async fn one_trace_spans_the_client_call_and_the_hop_to_the_next_service() -> anyhow::Result<()> {
    let exported = exported()?;

    let settings = ServerSettings::local(ServiceKind::Loyalty, AuthSettings::Disabled);
    // feedback (a) → loyalty (b): a's handler calls b through the shared client builder.
    let b = TestServer::start(&settings, TestApi::named("b")).await?;
    telemetry::register_listener(b.addr.port(), ServiceKind::Loyalty);
    let to_b = ClientBuilder::new(b.url(), "feedback").build()?;
    let a = TestServer::start(&settings, TestApi::named("a").calling(to_b)).await?;
    telemetry::register_listener(a.addr.port(), ServiceKind::Feedback);

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
    // A server span ends when its call's future is dropped, which may be after the caller has
    // its answer: wait until the four call spans have been exported.
    let exported_all = eventually(PATIENCE, || async {
        trace_of(&exported, "test.caller").is_ok_and(|all| {
            let calls = all
                .iter()
                .filter(|(_, s)| matches!(s.span_kind, SpanKind::Client | SpanKind::Server));
            calls.count() >= 4
        })
    })
    .await;
    assert!(exported_all, "the call spans were not all exported");

    let all = trace_of(&exported, "test.caller")?;
    let spans: Vec<SpanData> = all.iter().map(|(_, s)| s.clone()).collect();
    let service_of = |span: &SpanData| {
        all.iter()
            .find(|(_, s)| s.span_context == span.span_context)
            .map(|(name, _)| name.clone())
            .unwrap_or_default()
    };
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
    assert_eq!(
        attribute(&server_b, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    // The client span of the hop: its status and the server it called.
    assert_eq!(
        attribute(&hop, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    assert_eq!(
        attribute(&hop, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attribute(&hop, "server.port"),
        Some(b.addr.port().to_string())
    );
    // Each service's spans under its own name; the test's own under the process's.
    assert_eq!(service_of(caller), "custops-test");
    assert_eq!(service_of(&first_call), "custops-test");
    assert_eq!(service_of(&server_a), "custops-feedback");
    assert_eq!(service_of(&hop), "custops-feedback");
    assert_eq!(service_of(&server_b), "custops-loyalty");

    a.shutdown().await?;
    b.shutdown().await
}

#[tokio::test]
async fn a_client_span_carries_the_status_of_a_call_that_never_reached_a_server()
-> anyhow::Result<()> {
    let exported = exported()?;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let root = tracing::info_span!("test.unreachable");
    let outcome = async {
        let channel = ClientBuilder::new(format!("http://{closed}"), "test").build()?;
        Ok::<_, anyhow::Error>(
            EventFeedServiceClient::new(channel)
                .get_feed_position(request("nothing"))
                .await,
        )
    }
    .instrument(root.clone())
    .await?;
    drop(root);
    assert_eq!(
        outcome.err().map(|s| s.code()),
        Some(tonic::Code::Unavailable)
    );
    // Wait until the client span under the root has been exported.
    let client_exported = eventually(PATIENCE, || async {
        trace_of(&exported, "test.unreachable").is_ok_and(|spans| spans.len() >= 2)
    })
    .await;
    assert!(client_exported, "no client span was exported");
    let spans = trace_of(&exported, "test.unreachable")?;
    let root = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "test.unreachable")
        .ok_or_else(|| anyhow::anyhow!("no root span"))?;
    let client = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.parent_span_id == root.span_context.span_id())
        .ok_or_else(|| anyhow::anyhow!("no client span: {spans:#?}"))?;
    assert_eq!(
        attribute(client, "rpc.grpc.status_code").as_deref(),
        Some("14")
    );
    assert_eq!(
        attribute(client, "server.port"),
        Some(closed.port().to_string())
    );
    Ok(())
}

#[tokio::test]
async fn background_work_spawned_while_a_service_is_built_carries_its_name() -> anyhow::Result<()> {
    let exported = exported()?;
    // As `custops dev` builds loyalty: under its mark, the build spawns a worker.
    let spawned = telemetry::in_service(ServiceKind::Loyalty, async {
        // The handle is awaited below, outside the service's context.
        let handle = telemetry::spawn(async {
            tracing::info_span!("test.background.loyalty").in_scope(|| {});
        });
        Some(handle)
    })
    .await;
    if let Some(worker) = spawned {
        worker.await?;
    }
    // A task spawned outside any service stays the process's.
    telemetry::spawn(async {
        tracing::info_span!("test.background.process").in_scope(|| {});
    })
    .await?;
    let both_exported = eventually(PATIENCE, || async {
        trace_of(&exported, "test.background.loyalty").is_ok()
            && trace_of(&exported, "test.background.process").is_ok()
    })
    .await;
    assert!(both_exported, "the background spans were not exported");
    let service = |root: &str| -> anyhow::Result<String> {
        Ok(trace_of(&exported, root)?
            .into_iter()
            .find(|(_, s)| s.name == root)
            .map(|(service, _)| service)
            .unwrap_or_default())
    };
    assert_eq!(service("test.background.loyalty")?, "custops-loyalty");
    assert_eq!(service("test.background.process")?, "custops-test");
    Ok(())
}
