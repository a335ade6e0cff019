//! Logging and tracing set-up, in one place: readable text for people, JSON for log pipelines,
//! filtered by `RUST_LOG` (default `info`); spans into OpenTelemetry, exported over OTLP with
//! RPC metrics when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Logs go to stderr so stdout stays free for command output
//! (`custops token` prints a token there).

use std::str::FromStr;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, fmt};

use crate::config::{ConfigError, Environment};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Text,
    /// One JSON object per line, for production log collection.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not a log format (use text or json)")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Reads `CUSTOPS_LOG_FORMAT` (default `text`).
pub fn log_format_from_env(env: &Environment) -> Result<LogFormat, ConfigError> {
    env.parse_or("CUSTOPS_LOG_FORMAT", LogFormat::Text)
}

/// What a process exports besides its logs.
pub enum Exporters {
    /// Nothing leaves the process. Spans still carry trace ids, so `traceparent` still flows
    /// from incoming to outgoing calls and into outbox rows.
    None,
    /// OTLP over gRPC to this collector endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`): batched
    /// spans and periodic metrics.
    Otlp(String),
    /// Spans handed to this exporter synchronously as they end (tests use the in-memory one).
    Spans(Box<dyn FnOnce() -> opentelemetry_sdk::trace::SdkTracerProvider + Send>),
}

impl std::fmt::Debug for Exporters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exporters::None => f.write_str("None"),
            Exporters::Otlp(endpoint) => f.debug_tuple("Otlp").field(endpoint).finish(),
            Exporters::Spans(_) => f.write_str("Spans(..)"),
        }
    }
}

impl Exporters {
    /// OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else none.
    pub fn from_env(env: &Environment) -> Self {
        match env.get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(endpoint) => Exporters::Otlp(endpoint.trim().to_owned()),
            None => Exporters::None,
        }
    }
}

/// Keeps the telemetry pipeline alive; [`Telemetry::shutdown`] flushes what is buffered.
#[derive(Debug)]
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporters (at the end of a graceful shutdown).
    pub fn shutdown(self) {
        if let Err(error) = self.tracer_provider.shutdown() {
            tracing::warn!(%error, "flushing spans failed");
        }
        if let Some(meter_provider) = self.meter_provider
            && let Err(error) = meter_provider.shutdown()
        {
            tracing::warn!(%error, "flushing metrics failed");
        }
    }
}

/// Installs logging and tracing for the process: `service_name` becomes the OpenTelemetry
/// `service.name`. Only the first call in a process installs anything (several services in one
/// test process, or `custops dev`, share it); later calls return `None`.
pub fn init(service_name: &str, format: LogFormat, exporters: Exporters) -> Option<Telemetry> {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if INSTALLED.set(()).is_err() {
        return None;
    }
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let mut meter_provider = None;
    let tracer_provider = match exporters {
        Exporters::None => SdkTracerProvider::builder().with_resource(resource).build(),
        Exporters::Spans(make) => make(),
        Exporters::Otlp(endpoint) => {
            match otlp_providers(&endpoint, resource.clone()) {
                Ok((tracer, meter)) => {
                    opentelemetry::global::set_meter_provider(meter.clone());
                    meter_provider = Some(meter);
                    tracer
                }
                Err(error) => {
                    // Telemetry must never stop the service; say so and carry on without export.
                    eprintln!("custops: OTLP export to {endpoint} disabled: {error:#}");
                    SdkTracerProvider::builder().with_resource(resource).build()
                }
            }
        }
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (text, json) = match format {
        LogFormat::Text => (Some(fmt::layer().with_writer(std::io::stderr)), None),
        LogFormat::Json => (
            None,
            Some(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    // Spans go to OpenTelemetry at INFO whatever RUST_LOG says, so a quiet log level does not
    // break traces.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer_provider.tracer("custops"))
        .with_filter(LevelFilter::INFO);
    let installed = tracing_subscriber::registry()
        .with(text.with_filter(filter.clone()))
        .with(json.with_filter(filter))
        .with(otel)
        .try_init();
    if installed.is_err() {
        // Someone else installed a subscriber first; keep theirs.
        return None;
    }
    Some(Telemetry {
        tracer_provider,
        meter_provider,
    })
}

fn otlp_providers(
    endpoint: &str,
    resource: Resource,
) -> anyhow::Result<(SdkTracerProvider, SdkMeterProvider)> {
    use opentelemetry_otlp::WithExportConfig;
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let tracer = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let meter = SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .with_resource(resource)
        .build();
    Ok((tracer, meter))
}

/// A value that must not reach logs or spans (email, phone, names): its `Debug` and `Display`
/// print `[redacted]`, so `?customer.email` in a log line is safe by construction. The value is
/// reached only through [`Redacted::expose`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// Wraps a sensitive value.
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value, for the code that really needs it (storage, the customer's own answer).
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> std::fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> std::fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_values_never_print() {
        let email = Redacted::new("ana@example.com".to_owned());
        assert_eq!(
            format!("{email} {email:?} {:?}", Some(&email)),
            "[redacted] [redacted] Some([redacted])"
        );
        assert_eq!(email.expose(), "ana@example.com");
    }
}
