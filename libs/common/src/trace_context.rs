//! W3C trace context (`traceparent`) across process boundaries: read from incoming gRPC
//! metadata, written into outgoing calls and into outbox rows, so one trace follows a request
//! from feedback to loyalty and from a producer's event to its consumer's work.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The current OpenTelemetry context: the entered span's (`tracing-opentelemetry` makes a
/// span's context current while it is entered) or, in a call nobody records, the bare trace
/// context the server layer runs it in (`telemetry::unrecorded`).
fn current_context() -> Context {
    Context::current()
}

/// The `traceparent` of the current trace context, or an empty string when there is none
/// (work outside any call or trace).
pub fn current_traceparent() -> String {
    let context = current_context();
    let mut carrier = TraceparentCarrier::default();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.traceparent.unwrap_or_default()
}

/// The trace id of the current trace context (32 hex digits), when there is one.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = current_context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The OpenTelemetry context a `traceparent` value describes; no span when the value is empty
/// or malformed (a bad header never fails a call). It keeps the current context's service mark
/// (`telemetry::with_service`), so work a service resumes from a stored `traceparent` (an
/// outbox event, a queued reward) is still exported as that service's.
pub fn context_from_traceparent(traceparent: &str) -> Context {
    let carrier = TraceparentCarrier {
        traceparent: Some(traceparent.to_owned()),
    };
    TraceContextPropagator::new()
        .extract_with_context(&crate::telemetry::current_service_context(), &carrier)
}

/// Makes `span` continue the trace a stored `traceparent` names (an outbox row, a queued job),
/// keeping the current service mark; with an empty or malformed value it starts a new trace.
/// Without an OpenTelemetry layer (telemetry off) there is nothing to set.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let _ = span.set_parent(context_from_traceparent(traceparent));
}

/// The OpenTelemetry context carried by HTTP/2 headers (gRPC metadata).
pub fn context_from_headers(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes the current trace context into outgoing headers (`traceparent`, `tracestate`).
pub fn inject_current(headers: &mut http::HeaderMap) {
    let context = current_context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

#[derive(Default)]
struct TraceparentCarrier {
    traceparent: Option<String>,
}

impl Injector for TraceparentCarrier {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.traceparent = Some(value);
        }
    }
}

impl Extractor for TraceparentCarrier {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent")
            .then_some(self.traceparent.as_deref())
            .flatten()
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
