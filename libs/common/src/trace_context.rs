//! W3C trace context (`traceparent`) across process boundaries: read from incoming gRPC
//! metadata, written into outgoing calls and into outbox rows, so one trace follows a request
//! from feedback to loyalty and from a producer's event to its consumer's work.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of the current tracing span, or an empty string when there is no sampled
/// OpenTelemetry context (telemetry off, or a span outside any trace).
pub fn current_traceparent() -> String {
    let context = tracing::Span::current().context();
    let mut carrier = TraceparentCarrier::default();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.traceparent.unwrap_or_default()
}

/// The trace id of the current span (32 hex digits), when it belongs to a trace.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    let context = tracing::Span::current().context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The OpenTelemetry context a `traceparent` value describes; the empty context when the value
/// is empty or malformed (a bad header never fails a call).
pub fn context_from_traceparent(traceparent: &str) -> Context {
    let carrier = TraceparentCarrier {
        traceparent: Some(traceparent.to_owned()),
    };
    TraceContextPropagator::new().extract(&carrier)
}

/// The OpenTelemetry context carried by HTTP/2 headers (gRPC metadata).
pub fn context_from_headers(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Writes the current span's context into outgoing headers (`traceparent`, `tracestate`).
pub fn inject_current(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
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
