//! A stand-in OpenTelemetry Collector: a real OTLP/gRPC receiver (the collector protocol's own
//! generated services) on a free loopback port, keeping what it is sent, so a test reads the
//! spans and metrics a process exported exactly as a collector would receive them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

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
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use tonic::{Request, Response, Status};

/// How a received metric was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A monotonic sum (a counter).
    Counter,
    /// A sum that may go down.
    UpDownCounter,
    /// A gauge.
    Gauge,
    /// An explicit-bucket histogram.
    Histogram,
    /// Anything else (exponential histograms, summaries).
    Other,
}

/// One data point of one metric, as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The exporting resource's `service.name`.
    pub service_name: String,
    /// The metric's name.
    pub metric: String,
    /// Its kind.
    pub kind: Kind,
    /// Its unit.
    pub unit: String,
    /// The point's attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// A sum's or gauge's value; a histogram's count.
    pub value: f64,
    /// A histogram's bucket bounds (empty otherwise).
    pub bounds: Vec<f64>,
}

/// A running stand-in collector; stops when dropped.
#[derive(Debug)]
pub struct Collector {
    endpoint: String,
    received: Received,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Default)]
struct Received {
    /// (service.name, span name)
    spans: Arc<Mutex<Vec<(String, String)>>>,
    points: Arc<Mutex<Vec<Point>>>,
}

impl Collector {
    /// Starts the receiver on a free port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let received = Received::default();
        let service = received.clone();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service.clone()))
                .add_service(MetricsServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        Ok(Self {
            endpoint,
            received,
            server,
        })
    }

    /// The URL to export to (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every span received so far: (service.name, span name).
    pub fn spans(&self) -> Vec<(String, String)> {
        lock(&self.received.spans).clone()
    }

    /// Every metric data point received so far, in arrival order (with cumulative
    /// temporality, the last point of a series is its current value).
    pub fn points(&self) -> Vec<Point> {
        lock(&self.received.points).clone()
    }

    /// The last point received of each series (metric and attributes), by metric name.
    pub fn latest(&self) -> BTreeMap<String, Vec<Point>> {
        let mut series: BTreeMap<(String, BTreeMap<String, String>), Point> = BTreeMap::new();
        for point in self.points() {
            series.insert((point.metric.clone(), point.attributes.clone()), point);
        }
        let mut by_metric: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        for ((metric, _), point) in series {
            by_metric.entry(metric).or_default().push(point);
        }
        by_metric
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn service_name(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .and_then(|r| attributes(&r.attributes).remove("service.name"))
        .unwrap_or_default()
}

fn number(value: Option<&number_data_point::Value>) -> f64 {
    match value {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        #[allow(clippy::cast_precision_loss, reason = "test counts are small")]
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => f64::NAN,
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = lock(&self.spans);
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
        let mut points = lock(&self.points);
        for resource_metrics in request.into_inner().resource_metrics {
            let service = service_name(resource_metrics.resource.as_ref());
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    let point = |kind, attrs: &[KeyValue], value, bounds| Point {
                        service_name: service.clone(),
                        metric: metric.name.clone(),
                        kind,
                        unit: metric.unit.clone(),
                        attributes: attributes(attrs),
                        value,
                        bounds,
                    };
                    match &metric.data {
                        Some(Data::Sum(sum)) => {
                            let kind = if sum.is_monotonic {
                                Kind::Counter
                            } else {
                                Kind::UpDownCounter
                            };
                            for p in &sum.data_points {
                                points.push(point(
                                    kind,
                                    &p.attributes,
                                    number(p.value.as_ref()),
                                    Vec::new(),
                                ));
                            }
                        }
                        Some(Data::Gauge(gauge)) => {
                            for p in &gauge.data_points {
                                points.push(point(
                                    Kind::Gauge,
                                    &p.attributes,
                                    number(p.value.as_ref()),
                                    Vec::new(),
                                ));
                            }
                        }
                        Some(Data::Histogram(histogram)) => {
                            for p in &histogram.data_points {
                                #[allow(
                                    clippy::cast_precision_loss,
                                    reason = "test counts are small"
                                )]
                                let count = p.count as f64;
                                points.push(point(
                                    Kind::Histogram,
                                    &p.attributes,
                                    count,
                                    p.explicit_bounds.clone(),
                                ));
                            }
                        }
                        _ => points.push(point(Kind::Other, &[], f64::NAN, Vec::new())),
                    }
                }
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}
