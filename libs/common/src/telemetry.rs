//! Logging and tracing set-up, in one place: readable text for people, JSON for log pipelines,
//! filtered by `RUST_LOG` (default `info`); spans into OpenTelemetry, exported over OTLP with
//! RPC metrics when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Logs go to stderr so stdout stays free for command output
//! (`custops token` prints a token there).
//!
//! # One process, several services
//!
//! `custops dev` (and the end-to-end tests) run the four services in one process, under one
//! `tracing` subscriber. Their spans must still name their own `service.name`, which
//! OpenTelemetry takes from the tracer provider's resource. So [`init_hosting`] builds one
//! tracer provider per hosted service, and the tracer handed to `tracing-opentelemetry` picks
//! the provider of each span from a service mark in the span's parent OpenTelemetry context
//! ([`with_service`]). The mark is set where a service's work starts: the server span of a call
//! (the server layer finds the service of the listener the call arrived on, registered with
//! [`register_listener`]) and the root of a service's background work ([`in_service`]). Child
//! spans inherit it through their parent's context; a `traceparent` from another service never
//! carries it. Spans with no mark go to the process's provider.
//!
//! # Spans nobody records cost nothing
//!
//! `tracing-opentelemetry` builds span data (a builder, its attributes, a context) for every
//! span it sees, sampled or not, and the text log layer formats every span's fields when it
//! opens. So the hot paths (the server span of each call, the client span of each outgoing call)
//! ask [`records_under`] first: when the span would not be sampled they open no span at all and
//! run in the bare trace context [`unrecorded`] gives them (the caller's, or fresh ids), which
//! is all that trace ids in error messages, outgoing `traceparent`s and outbox rows need. The
//! decision is known in advance because the providers built here sample `ParentBased(AlwaysOn)`
//! when they export and `AlwaysOff` when they do not. Log lines inside an unrecorded call carry
//! no request span; the ones that matter (internal errors, panics) name the trace id.

use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::trace::{
    SpanBuilder, SpanContext, TraceContextExt as _, TraceFlags, TraceState, Tracer,
    TracerProvider as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, fmt};

use crate::config::{ConfigError, Environment};
use crate::service::ServiceKind;

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
    /// Nothing leaves the process, and nothing is recorded for export (spans are not
    /// sampled). Spans still carry trace ids, so `traceparent` still flows from incoming to
    /// outgoing calls and into outbox rows.
    None,
    /// OTLP over gRPC to a collector: batched spans and periodic metrics.
    Otlp(OtlpSettings),
    /// Spans handed synchronously as they end to the tracer provider this builds for a
    /// resource: called once for the process and once per hosted service (tests use the
    /// in-memory exporter, and tell the services apart by the resource's `service.name`).
    /// The provider must keep the default `ParentBased(AlwaysOn)` sampler ([`records_under`]
    /// assumes it).
    Spans(Box<dyn Fn(Resource) -> SdkTracerProvider + Send>),
}

impl std::fmt::Debug for Exporters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exporters::None => f.write_str("None"),
            Exporters::Otlp(settings) => f.debug_tuple("Otlp").field(settings).finish(),
            Exporters::Spans(_) => f.write_str("Spans(..)"),
        }
    }
}

/// Where and how often OTLP export goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The collector's gRPC endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub endpoint: String,
    /// How often metrics are exported (`OTEL_METRIC_EXPORT_INTERVAL`, milliseconds; default
    /// 60 s, the OpenTelemetry default). Gauges are sampled as often, up to every 15 s
    /// ([`crate::metrics::sample_interval`]).
    pub metric_interval: Duration,
    /// `service.instance.id` of everything exported, so replicas of a service write series
    /// of their own (the `instance` label in Prometheus): `HOSTNAME` (the pod's name in
    /// Kubernetes), else a UUID made at start.
    pub instance_id: String,
}

/// The OpenTelemetry default export interval of metrics.
pub const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_secs(60);

impl Exporters {
    /// OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else none. An unreadable
    /// `OTEL_METRIC_EXPORT_INTERVAL` falls back to the default, as the OpenTelemetry SDKs do.
    pub fn from_env(env: &Environment) -> Self {
        match env.get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(endpoint) => Exporters::Otlp(OtlpSettings {
                endpoint: endpoint.trim().to_owned(),
                metric_interval: env
                    .get("OTEL_METRIC_EXPORT_INTERVAL")
                    .and_then(|ms| ms.trim().parse::<u64>().ok())
                    .filter(|ms| *ms > 0)
                    .map_or(DEFAULT_METRIC_INTERVAL, Duration::from_millis),
                instance_id: env
                    .get("HOSTNAME")
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned),
            }),
            None => Exporters::None,
        }
    }
}

/// Keeps the telemetry pipeline alive; [`Telemetry::shutdown`] flushes what is buffered.
#[derive(Debug)]
pub struct Telemetry {
    tracer_providers: Vec<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporters (at the end of a graceful shutdown).
    pub fn shutdown(self) {
        for provider in self.tracer_providers {
            if let Err(error) = provider.shutdown() {
                tracing::warn!(%error, "flushing spans failed");
            }
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
    init_hosting(service_name, &[], format, exporters)
}

/// [`init`] for a process that hosts `services` (`custops dev`): the spans of each one's work
/// are exported under its own `service.name` ([`service_name`]), everything else under
/// `process_name`. See the module docs.
pub fn init_hosting(
    process_name: &str,
    services: &[ServiceKind],
    format: LogFormat,
    exporters: Exporters,
) -> Option<Telemetry> {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if INSTALLED.set(()).is_err() {
        return None;
    }
    let instance_id = match &exporters {
        Exporters::Otlp(settings) => Some(settings.instance_id.clone()),
        Exporters::None | Exporters::Spans(_) => None,
    };
    let resource = |name: &str| {
        let builder = Resource::builder().with_service_name(name.to_owned());
        match &instance_id {
            Some(id) => builder
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.instance.id",
                    id.clone(),
                ))
                .build(),
            None => builder.build(),
        }
    };
    let mut meter_provider = None;
    let mut records = !matches!(exporters, Exporters::None);
    let (process, hosted) = match exporters {
        // Nothing is exported, so every span may as well come from one provider.
        Exporters::None => (plain_provider(resource(process_name)), Vec::new()),
        Exporters::Spans(make) => (
            make(resource(process_name)),
            services
                .iter()
                .map(|s| (*s, make(resource(&service_name(*s)))))
                .collect(),
        ),
        Exporters::Otlp(OtlpSettings {
            endpoint,
            metric_interval,
            ..
        }) => {
            let pipelines = otlp_meter_provider(&endpoint, metric_interval, resource(process_name))
                .and_then(|meter| {
                    let process = otlp_tracer_provider(&endpoint, resource(process_name))?;
                    let hosted = services
                        .iter()
                        .map(|s| {
                            otlp_tracer_provider(&endpoint, resource(&service_name(*s)))
                                .map(|provider| (*s, provider))
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    Ok((meter, process, hosted))
                });
            match pipelines {
                Ok((meter, process, hosted)) => {
                    opentelemetry::global::set_meter_provider(meter.clone());
                    meter_provider = Some(meter);
                    crate::metrics::exporting_every(metric_interval);
                    (process, hosted)
                }
                Err(error) => {
                    // Telemetry must never stop the service; say so and carry on without export.
                    eprintln!("custops: OTLP export to {endpoint} disabled: {error:#}");
                    records = false;
                    (plain_provider(resource(process_name)), Vec::new())
                }
            }
        }
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(process.clone());
    let tracer = ServiceTracers {
        process: process.tracer("custops"),
        hosted: hosted
            .iter()
            .map(|(service, provider)| (*service, provider.tracer("custops")))
            .collect(),
    };

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (text, json) = match format {
        // Colour only on a terminal: escape codes in a redirected log are noise to every
        // reader and tool.
        LogFormat::Text => (
            Some(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            ),
            None,
        ),
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
    // No busy/idle timing (two clock reads per poll of every span) and no thread attributes
    // (two per span): on the hot path they cost more than they tell.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_threads(false)
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
    RECORDING.store(records, Ordering::Relaxed);
    let mut tracer_providers = vec![process];
    tracer_providers.extend(hosted.into_iter().map(|(_, provider)| provider));
    Some(Telemetry {
        tracer_providers,
        meter_provider,
    })
}

/// The `service.name` of `service`'s spans: what its own binary calls itself.
pub fn service_name(service: ServiceKind) -> String {
    format!("custops-{service}")
}

/// The provider of a process that exports no spans: it samples none, so spans cost no
/// recording (no attributes kept, no span data built at their end), while each still gets
/// a trace id for the logs, the `traceparent` of outgoing calls and outbox rows.
fn plain_provider(resource: Resource) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOff)
        .with_resource(resource)
        .build()
}

fn otlp_tracer_provider(endpoint: &str, resource: Resource) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource)
        .build())
}

fn otlp_meter_provider(
    endpoint: &str,
    interval: Duration,
    resource: Resource,
) -> anyhow::Result<SdkMeterProvider> {
    use opentelemetry_otlp::WithExportConfig;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(metrics)
        .with_interval(interval)
        .build();
    Ok(SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build())
}

/// Whether the installed providers record (sample) spans at all: set once by [`init_hosting`].
static RECORDING: AtomicBool = AtomicBool::new(false);

/// Whether a span started under `parent` would be recorded, so worth opening (see the module
/// docs): only when an exporter is installed, and then unless the parent is a trace its
/// caller chose not to sample.
pub fn records_under(parent: &Context) -> bool {
    if !RECORDING.load(Ordering::Relaxed) {
        return false;
    }
    let span = parent.span();
    let parent_span = span.span_context();
    !parent_span.is_valid() || parent_span.is_sampled()
}

/// The trace context of work that opens no span because nobody records it: `parent` when it
/// continues a trace, else `parent` with fresh trace and span ids flagged "not sampled" (what
/// an unsampled span would have had), so error messages, outgoing calls and outbox rows still
/// name a trace.
pub fn unrecorded(parent: Context) -> Context {
    if parent.span().span_context().is_valid() {
        return parent;
    }
    let ids = RandomIdGenerator::default();
    parent.with_remote_span_context(SpanContext::new(
        ids.new_trace_id(),
        ids.new_span_id(),
        TraceFlags::default(),
        false,
        TraceState::NONE,
    ))
}

/// The mark of a service's work in an OpenTelemetry context (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ServiceMark(ServiceKind);

/// `cx` marked as the work of `service`: spans started under it are exported under
/// `service`'s name when the process hosts it.
pub fn with_service(cx: Context, service: ServiceKind) -> Context {
    cx.with_value(ServiceMark(service))
}

/// The service whose work the current context is, if marked.
pub fn current_service() -> Option<ServiceKind> {
    Context::current().get::<ServiceMark>().map(|mark| mark.0)
}

/// An empty context keeping only the current context's service mark: the base on which a
/// span continues a trace from elsewhere (a `traceparent`) without forgetting whose work it is.
pub fn current_service_context() -> Context {
    match current_service() {
        Some(service) => with_service(Context::new(), service),
        None => Context::new(),
    }
}

/// Runs `future` as `service`'s work: the root of a background task a service spawns (a
/// worker, a feed consumer), so its spans carry the service's name.
pub fn in_service<F: Future>(service: ServiceKind, future: F) -> WithContext<F> {
    future.with_context(with_service(Context::new(), service))
}

/// `tokio::spawn`, keeping the spawning context's service mark: background work started while
/// a service is built (`custops dev` builds each under [`in_service`]) is that service's work
/// in the traces. The one way the services and the shared runtime start background tasks.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(future.with_context(current_service_context()))
}

/// Which service listens on each local port, for processes hosting several services.
static LISTENERS: RwLock<BTreeMap<u16, ServiceKind>> = RwLock::new(BTreeMap::new());

/// Records that `service` serves the listener on local `port`: the server spans of calls
/// arriving there are marked as its work. A process serving one service need not call it.
pub fn register_listener(port: u16, service: ServiceKind) {
    if let Ok(mut listeners) = LISTENERS.write() {
        listeners.insert(port, service);
    }
}

/// Forgets the listener on `port` (its server has stopped).
pub fn unregister_listener(port: u16) {
    if let Ok(mut listeners) = LISTENERS.write() {
        listeners.remove(&port);
    }
}

/// The service registered for local `port`.
pub fn listener_service(port: u16) -> Option<ServiceKind> {
    LISTENERS.read().ok()?.get(&port).copied()
}

/// The tracer `tracing-opentelemetry` uses: each span comes from the provider of the service
/// marked in its parent context, or from the process's.
#[derive(Debug, Clone)]
struct ServiceTracers {
    process: SdkTracer,
    hosted: Vec<(ServiceKind, SdkTracer)>,
}

impl Tracer for ServiceTracers {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Self::Span {
        let tracer = parent_cx
            .get::<ServiceMark>()
            .and_then(|mark| self.hosted.iter().find(|(service, _)| *service == mark.0))
            .map_or(&self.process, |(_, tracer)| tracer);
        tracer.build_with_context(builder, parent_cx)
    }
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
