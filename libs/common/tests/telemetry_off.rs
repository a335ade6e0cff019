//! With nothing exported (no `OTEL_EXPORTER_OTLP_ENDPOINT`), spans are not sampled — nothing
//! is recorded — yet every span still has a trace id: logs and errors name it, and the
//! `traceparent` of outgoing calls and outbox rows carries it on. (Its own test binary:
//! telemetry is installed once per process.)

use custops_common::telemetry::{self, Exporters, LogFormat};
use custops_common::trace_context;

#[test]
fn unexported_spans_are_not_recorded_but_keep_their_trace_ids() {
    let installed = telemetry::init("custops-test", LogFormat::Text, Exporters::None);
    assert!(installed.is_some(), "telemetry was installed elsewhere");

    let call = tracing::info_span!("grpc.server");
    let (trace_id, traceparent) = call.in_scope(|| {
        (
            trace_context::current_trace_id(),
            trace_context::current_traceparent(),
        )
    });
    let trace_id = trace_id.unwrap_or_default();
    assert_eq!(trace_id.len(), 32, "a trace id for the logs: {trace_id:?}");
    // `00-<trace id>-<span id>-00`: carried on, flagged as not sampled.
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent}"
    );
    assert!(traceparent.ends_with("-00"), "{traceparent}");

    // A call continuing that traceparent keeps the trace.
    let next = tracing::info_span!("grpc.server");
    trace_context::continue_trace(&next, &traceparent);
    let continued = next.in_scope(trace_context::current_trace_id);
    assert_eq!(continued.as_deref(), Some(trace_id.as_str()));
}
