//! Every metric the suite exports, declared once: name, instrument, unit, attributes and what it
//! means. Code takes its instruments from these declarations ([`Metric::counter`] and the
//! others), the dashboard and alert rules in `k8s/observability/` may name only what this
//! catalogue declares (`make k8s-check` reads the rendering of it in
//! `k8s/observability/metrics.json`, which a test keeps equal to [`CATALOGUE`]), and the
//! metrics test of the suite (`services/suite/tests/metrics.rs`) checks that a running suite
//! exports every one of them over OTLP.
//!
//! Names follow the OpenTelemetry semantic conventions where one exists (`rpc.*`,
//! `db.client.connection.*`, `messaging.*` attributes); the rest are `custops.*`. Metrics are
//! exported over OTLP with the spans (`OTEL_EXPORTER_OTLP_ENDPOINT`, see [`crate::telemetry`]);
//! an OpenTelemetry Collector's Prometheus exporter turns `rpc.server.duration` (unit `ms`,
//! a histogram) into `rpc_server_duration_milliseconds_bucket` and so on:
//! [`Metric::prometheus_series`] is that translation, written once.
//!
//! Gauges that need a query (pool, outbox backlog, rewards, tickets) are sampled by a task per
//! service ([`spawn_sampler`]), only when metrics are exported, every
//! [`sample_interval`].

use std::future::Future;
use std::time::Duration;

// Re-exported so a service records its metrics without depending on OpenTelemetry itself.
pub use opentelemetry::KeyValue;
pub use opentelemetry::metrics::{Counter, Gauge, Histogram};
use tokio_util::sync::CancellationToken;

use crate::service::ServiceKind;

/// How a metric is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instrument {
    /// A monotonic count (`_total` in Prometheus).
    Counter,
    /// A distribution of measurements (`_bucket`, `_sum`, `_count` in Prometheus).
    Histogram,
    /// A value sampled now and then (a level: a backlog, a pool's size).
    Gauge,
}

/// One exported metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    /// The OpenTelemetry name.
    pub name: &'static str,
    /// How it is recorded.
    pub instrument: Instrument,
    /// UCUM unit, or a `{annotation}` for a plain count.
    pub unit: &'static str,
    /// What it measures, as exported.
    pub description: &'static str,
    /// The attributes every data point carries.
    pub attributes: &'static [&'static str],
    /// A histogram's bucket boundaries, in its unit (empty for other instruments).
    pub buckets: &'static [f64],
}

impl Metric {
    /// A counter for this metric, from the global meter provider (install telemetry first).
    pub fn counter(&self) -> Counter<u64> {
        debug_assert_eq!(self.instrument, Instrument::Counter, "{}", self.name);
        opentelemetry::global::meter(METER)
            .u64_counter(self.name)
            .with_unit(self.unit)
            .with_description(self.description)
            .build()
    }

    /// A histogram for this metric, from the global meter provider.
    pub fn histogram(&self) -> Histogram<f64> {
        debug_assert_eq!(self.instrument, Instrument::Histogram, "{}", self.name);
        opentelemetry::global::meter(METER)
            .f64_histogram(self.name)
            .with_unit(self.unit)
            .with_description(self.description)
            .with_boundaries(self.buckets.to_vec())
            .build()
    }

    /// A gauge for this metric, from the global meter provider.
    pub fn gauge(&self) -> Gauge<f64> {
        debug_assert_eq!(self.instrument, Instrument::Gauge, "{}", self.name);
        opentelemetry::global::meter(METER)
            .f64_gauge(self.name)
            .with_unit(self.unit)
            .with_description(self.description)
            .build()
    }

    /// The Prometheus name of the metric after an OpenTelemetry Collector's Prometheus
    /// exporter (default settings): dots to underscores, the unit's word appended (`ms` →
    /// `milliseconds`, `s` → `seconds`; `{annotations}` add nothing), `_total` for counters.
    pub fn prometheus_name(&self) -> String {
        let mut name = self.name.replace('.', "_");
        let unit = match self.unit {
            "ms" => Some("milliseconds"),
            "s" => Some("seconds"),
            "By" => Some("bytes"),
            _ => None,
        };
        if let Some(unit) = unit
            && !name.ends_with(unit)
        {
            name.push('_');
            name.push_str(unit);
        }
        if self.instrument == Instrument::Counter {
            name.push_str("_total");
        }
        name
    }

    /// The Prometheus series names a query may use for this metric.
    pub fn prometheus_series(&self) -> Vec<String> {
        let name = self.prometheus_name();
        match self.instrument {
            Instrument::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{name}{suffix}"))
                .collect(),
            Instrument::Counter | Instrument::Gauge => vec![name],
        }
    }

    /// The Prometheus label names of the attributes (dots to underscores).
    pub fn prometheus_labels(&self) -> Vec<String> {
        self.attributes
            .iter()
            .map(|a| a.replace('.', "_"))
            .collect()
    }
}

/// The instrumentation scope of every custops metric.
const METER: &str = "custops";

// Attribute names shared by several metrics.
/// The custops service a data point belongs to (`profiles`, `segmentation`, `loyalty`,
/// `feedback`): several services may share one process (`custops dev`), so `service.name`
/// alone cannot tell them apart.
pub const SERVICE: &str = "custops.service";
/// The feed a consumer follows: the producing service's name (semantic conventions).
pub const FEED: &str = "messaging.destination.name";
/// The consumer group reading a feed (semantic conventions): the consuming service's name,
/// shared by all its replicas.
pub const CONSUMER_GROUP: &str = "messaging.consumer.group.name";

/// Call durations, in milliseconds: fine below 10 ms (a segment lookup's target is 2 ms),
/// 500 ms (the latency alert's threshold) a bound.
const CALL_MS_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

const RPC_ATTRIBUTES: &[&str] = &[
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "rpc.grpc.status_code",
];

/// Server-side duration of each call (semantic conventions), by method and status.
pub const RPC_SERVER_DURATION: Metric = Metric {
    name: "rpc.server.duration",
    instrument: Instrument::Histogram,
    unit: "ms",
    description: "Duration of inbound RPCs, by method and gRPC status code",
    attributes: RPC_ATTRIBUTES,
    buckets: CALL_MS_BUCKETS,
};

/// Calls refused by a call budget before they ran.
pub const RPC_SERVER_REFUSED: Metric = Metric {
    name: "rpc.server.refused",
    instrument: Instrument::Counter,
    unit: "{call}",
    description: "Calls refused with RESOURCE_EXHAUSTED by a call budget, by budget and method",
    attributes: &["budget", "rpc.service", "rpc.method"],
    buckets: &[],
};

/// Client-side duration of each call one service makes to another (semantic conventions).
pub const RPC_CLIENT_DURATION: Metric = Metric {
    name: "rpc.client.duration",
    instrument: Instrument::Histogram,
    unit: "ms",
    description: "Duration of outbound RPCs to other custops services, by calling service, method and gRPC status code",
    attributes: &[
        SERVICE,
        "rpc.system",
        "rpc.service",
        "rpc.method",
        "rpc.grpc.status_code",
    ],
    buckets: CALL_MS_BUCKETS,
};

/// Reads of the two-level cache, by where they were answered.
pub const CACHE_LOOKUPS: Metric = Metric {
    name: "custops.cache.lookups",
    instrument: Instrument::Counter,
    unit: "{lookup}",
    description: "Reads of the two-level cache, by cache and result (local_hit, redis_hit, miss)",
    attributes: &["cache.namespace", "cache.result"],
    buckets: &[],
};

/// Redis commands of the cache that failed.
pub const CACHE_REDIS_ERRORS: Metric = Metric {
    name: "custops.cache.redis.errors",
    instrument: Instrument::Counter,
    unit: "{error}",
    description: "Redis commands of the two-level cache that failed and fell back to the source",
    attributes: &["cache.namespace", "cache.operation", "error.type"],
    buckets: &[],
};

/// Reads answered from the source of truth because Redis failed.
pub const CACHE_FALLBACKS: Metric = Metric {
    name: "custops.cache.fallbacks",
    instrument: Instrument::Counter,
    unit: "{lookup}",
    description: "Cache reads answered from the database because Redis failed",
    attributes: &["cache.namespace"],
    buckets: &[],
};

/// Connections of a service's pool, by state (semantic conventions).
pub const DB_CONNECTION_COUNT: Metric = Metric {
    name: "db.client.connection.count",
    instrument: Instrument::Gauge,
    unit: "{connection}",
    description: "Open connections of the service's Postgres pool, by state (idle, used)",
    attributes: &[
        "db.client.connection.pool.name",
        "db.client.connection.state",
    ],
    buckets: &[],
};

/// The most connections a pool may open (semantic conventions).
pub const DB_CONNECTION_MAX: Metric = Metric {
    name: "db.client.connection.max",
    instrument: Instrument::Gauge,
    unit: "{connection}",
    description: "The most connections the service's Postgres pool may open",
    attributes: &["db.client.connection.pool.name"],
    buckets: &[],
};

/// Time to obtain a connection from the pool (semantic conventions), measured by the sampler's
/// own acquisition each interval: what a call arriving then would have waited.
pub const DB_CONNECTION_WAIT_TIME: Metric = Metric {
    name: "db.client.connection.wait_time",
    instrument: Instrument::Histogram,
    unit: "s",
    description: "Time to obtain a connection from the service's Postgres pool (sampled each interval)",
    attributes: &["db.client.connection.pool.name"],
    buckets: &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ],
};

/// Acquisitions that gave up waiting for a connection (semantic conventions).
pub const DB_CONNECTION_TIMEOUTS: Metric = Metric {
    name: "db.client.connection.timeouts",
    instrument: Instrument::Counter,
    unit: "{timeout}",
    description: "Attempts to obtain a connection from the service's Postgres pool that timed out",
    attributes: &["db.client.connection.pool.name"],
    buckets: &[],
};

/// Committed outbox rows the sequencer has not yet given a feed position.
pub const OUTBOX_UNSEQUENCED: Metric = Metric {
    name: "custops.outbox.unsequenced",
    instrument: Instrument::Gauge,
    unit: "{event}",
    description: "Committed outbox events not yet given a feed position",
    attributes: &[SERVICE],
    buckets: &[],
};

/// Age of the oldest committed outbox row without a feed position (0 when there is none).
pub const OUTBOX_OLDEST_UNSEQUENCED_AGE: Metric = Metric {
    name: "custops.outbox.oldest_unsequenced.age",
    instrument: Instrument::Gauge,
    unit: "s",
    description: "Age of the oldest committed outbox event not yet given a feed position (0 when none)",
    attributes: &[SERVICE],
    buckets: &[],
};

/// The last feed position a consumer group applied.
pub const FEED_CONSUMER_POSITION: Metric = Metric {
    name: "custops.feed.consumer.position",
    instrument: Instrument::Gauge,
    unit: "{event}",
    description: "The last feed position the consumer group applied",
    attributes: &[FEED, CONSUMER_GROUP],
    buckets: &[],
};

/// How far a consumer group is behind the feed's head: the one definition of feed lag.
pub const FEED_CONSUMER_LAG: Metric = Metric {
    name: "custops.feed.consumer.lag",
    instrument: Instrument::Gauge,
    unit: "{event}",
    description: "Events of the feed the consumer group has not applied yet (head minus position)",
    attributes: &[FEED, CONSUMER_GROUP],
    buckets: &[],
};

/// How long ago the oldest event a consumer group has not applied happened: feed lag in time.
pub const FEED_CONSUMER_LAG_SECONDS: Metric = Metric {
    name: "custops.feed.consumer.oldest_unapplied.age",
    instrument: Instrument::Gauge,
    unit: "s",
    description: "Age of the oldest retained event the consumer group has not applied (0 when caught up), measured by the producer at its acknowledged position",
    attributes: &[FEED, CONSUMER_GROUP],
    buckets: &[],
};

/// Times a consumer group found its position pruned by the producer's retention and resynced.
pub const FEED_CONSUMER_RESYNCS: Metric = Metric {
    name: "custops.feed.consumer.resyncs",
    instrument: Instrument::Counter,
    unit: "{resync}",
    description: "Times the consumer group's position had been pruned by the feed's retention and it resynced (events may have been lost)",
    attributes: &[FEED, CONSUMER_GROUP],
    buckets: &[],
};

/// How long a segment recompute took.
pub const SEGMENT_RECOMPUTE_DURATION: Metric = Metric {
    name: "custops.segmentation.recompute.duration",
    instrument: Instrument::Histogram,
    unit: "s",
    description: "Duration of segment recompute jobs, by kind and outcome",
    attributes: &["custops.recompute.kind", "custops.recompute.outcome"],
    buckets: &[
        0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ],
};

/// Memberships a recompute changed.
pub const SEGMENT_RECOMPUTE_CHANGES: Metric = Metric {
    name: "custops.segmentation.recompute.changes",
    instrument: Instrument::Counter,
    unit: "{membership}",
    description: "Segment memberships changed by recompute jobs, by change (entered, exited)",
    attributes: &["custops.recompute.kind", "custops.membership.change"],
    buckets: &[],
};

/// Ledger entries written, by kind.
pub const LEDGER_OPERATIONS: Metric = Metric {
    name: "custops.loyalty.ledger.operations",
    instrument: Instrument::Counter,
    unit: "{operation}",
    description: "Points ledger entries written, by kind (EARN, REDEEM, ADJUST, EXPIRE, REVERSE, ...)",
    attributes: &["custops.ledger.kind"],
    buckets: &[],
};

/// Survey rewards waiting for delivery, by state.
pub const SURVEY_REWARDS_WAITING: Metric = Metric {
    name: "custops.feedback.survey_rewards.waiting",
    instrument: Instrument::Gauge,
    unit: "{reward}",
    description: "Survey completion rewards not yet delivered to loyalty, by state (pending, retrying)",
    attributes: &["custops.reward.state"],
    buckets: &[],
};

/// How long the oldest waiting reward has waited.
pub const SURVEY_REWARDS_OLDEST_WAITING_AGE: Metric = Metric {
    name: "custops.feedback.survey_rewards.oldest_waiting.age",
    instrument: Instrument::Gauge,
    unit: "s",
    description: "Age of the oldest survey reward not yet delivered (since its response was submitted; 0 when none)",
    attributes: &[],
    buckets: &[],
};

/// Rewards that reached an end state.
pub const SURVEY_REWARDS_SETTLED: Metric = Metric {
    name: "custops.feedback.survey_rewards.settled",
    instrument: Instrument::Counter,
    unit: "{reward}",
    description: "Survey rewards settled by the delivery job, by outcome (delivered, rejected)",
    attributes: &["custops.reward.outcome"],
    buckets: &[],
};

/// Open tickets past their SLA.
pub const TICKETS_SLA_BREACHED: Metric = Metric {
    name: "custops.feedback.tickets.sla_breached",
    instrument: Instrument::Gauge,
    unit: "{ticket}",
    description: "Open or in-progress tickets past their next SLA due time, by severity",
    attributes: &["custops.ticket.severity"],
    buckets: &[],
};

/// Every metric the suite exports.
pub const CATALOGUE: &[Metric] = &[
    RPC_SERVER_DURATION,
    RPC_SERVER_REFUSED,
    RPC_CLIENT_DURATION,
    CACHE_LOOKUPS,
    CACHE_REDIS_ERRORS,
    CACHE_FALLBACKS,
    DB_CONNECTION_COUNT,
    DB_CONNECTION_MAX,
    DB_CONNECTION_WAIT_TIME,
    DB_CONNECTION_TIMEOUTS,
    OUTBOX_UNSEQUENCED,
    OUTBOX_OLDEST_UNSEQUENCED_AGE,
    FEED_CONSUMER_POSITION,
    FEED_CONSUMER_LAG,
    FEED_CONSUMER_LAG_SECONDS,
    FEED_CONSUMER_RESYNCS,
    SEGMENT_RECOMPUTE_DURATION,
    SEGMENT_RECOMPUTE_CHANGES,
    LEDGER_OPERATIONS,
    SURVEY_REWARDS_WAITING,
    SURVEY_REWARDS_OLDEST_WAITING_AGE,
    SURVEY_REWARDS_SETTLED,
    TICKETS_SLA_BREACHED,
];

/// The catalogue as JSON, as kept in `k8s/observability/metrics.json` for the offline checks:
/// each metric's OpenTelemetry name, instrument, unit, description, and its Prometheus series
/// and labels.
pub fn catalogue_json() -> serde_json::Value {
    let metrics: Vec<serde_json::Value> = CATALOGUE
        .iter()
        .map(|metric| {
            serde_json::json!({
                "name": metric.name,
                "instrument": format!("{:?}", metric.instrument).to_lowercase(),
                "unit": metric.unit,
                "description": metric.description,
                "attributes": metric.attributes,
                "prometheus_series": metric.prometheus_series(),
                "prometheus_labels": metric.prometheus_labels(),
                "buckets": metric.buckets,
            })
        })
        .collect();
    serde_json::json!({
        "comment": "Generated from libs/common/src/metrics.rs (CATALOGUE); refresh with \
                    CUSTOPS_BLESS=1 cargo test -p custops-common --lib metrics",
        "metrics": metrics,
    })
}

/// The service a single-service process runs ([`crate::bootstrap::run`] sets it): data points
/// recorded outside any call's context (a pool timeout in a background job) still name it.
static PROCESS_SERVICE: std::sync::OnceLock<ServiceKind> = std::sync::OnceLock::new();

/// Records the service this process runs alone (a service binary, not `custops dev`).
pub fn set_process_service(service: ServiceKind) {
    let _ = PROCESS_SERVICE.set(service);
}

/// The service whose work is running: the mark of the current context (`custops dev` hosts
/// several), else the process's own service.
pub fn current_service() -> Option<ServiceKind> {
    crate::telemetry::current_service().or_else(|| PROCESS_SERVICE.get().copied())
}

/// Counts an attempt to obtain a pool connection that timed out, for the current service's
/// pool (the pool's name is its schema, the service's name).
pub fn record_pool_timeout() {
    static TIMEOUTS: std::sync::LazyLock<Counter<u64>> =
        std::sync::LazyLock::new(|| DB_CONNECTION_TIMEOUTS.counter());
    let pool = current_service().map_or("unknown", ServiceKind::schema);
    TIMEOUTS.add(
        1,
        &[opentelemetry::KeyValue::new(
            "db.client.connection.pool.name",
            pool,
        )],
    );
}

/// The export interval of the installed metrics pipeline; unset while nothing is exported.
static EXPORT_INTERVAL: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

/// Records that metrics are exported every `interval` ([`crate::telemetry`] calls it when it
/// installs the OTLP pipeline).
pub(crate) fn exporting_every(interval: Duration) {
    let _ = EXPORT_INTERVAL.set(interval);
}

/// Whether metrics leave the process at all (an OTLP pipeline is installed): samplers run
/// only then.
pub fn exported() -> bool {
    EXPORT_INTERVAL.get().is_some()
}

/// How often samplers read their gauges: as often as metrics are exported, at most every
/// 15 s (so an alert on a gauge is never more than that behind).
pub fn sample_interval() -> Duration {
    EXPORT_INTERVAL
        .get()
        .map_or(MOST_BETWEEN_SAMPLES, |interval| {
            (*interval).min(MOST_BETWEEN_SAMPLES)
        })
}

/// The longest pause between two samples of a gauge.
const MOST_BETWEEN_SAMPLES: Duration = Duration::from_secs(15);

/// Gauges read together, by a query or a call: a pool's state, a backlog, a feed's lag.
pub trait Sampler: Send + Sync + 'static {
    /// Reads the values and records them on the gauges.
    fn sample(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Runs `sampler` every [`sample_interval`] until `shutdown`, when metrics are exported (else
/// does nothing): the one way a service samples the gauges that need a query. A failed sample
/// is logged at debug and tried again next interval; the gauges keep their last values.
pub fn spawn_sampler(shutdown: CancellationToken, sampler: impl Sampler) {
    if !exported() {
        return;
    }
    crate::telemetry::spawn(async move {
        let mut ticks = tokio::time::interval(sample_interval());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(error) = sampler.sample().await {
                tracing::debug!(error = format!("{error:#}"), "sampling metrics failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_follow_the_collector_translation() {
        assert_eq!(
            RPC_SERVER_DURATION.prometheus_series(),
            [
                "rpc_server_duration_milliseconds_bucket",
                "rpc_server_duration_milliseconds_sum",
                "rpc_server_duration_milliseconds_count",
            ]
        );
        assert_eq!(
            LEDGER_OPERATIONS.prometheus_series(),
            ["custops_loyalty_ledger_operations_total"]
        );
        assert_eq!(
            OUTBOX_OLDEST_UNSEQUENCED_AGE.prometheus_series(),
            ["custops_outbox_oldest_unsequenced_age_seconds"]
        );
        assert_eq!(
            DB_CONNECTION_COUNT.prometheus_labels(),
            [
                "db_client_connection_pool_name",
                "db_client_connection_state"
            ]
        );
    }

    #[test]
    fn every_name_is_declared_once() {
        let mut names: Vec<&str> = CATALOGUE.iter().map(|m| m.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a metric is declared twice");
    }

    /// `k8s/observability/metrics.json` is what the offline dashboard and alert checks read:
    /// it must be the catalogue as the code declares it.
    #[test]
    fn metrics_json_is_the_catalogue() -> anyhow::Result<()> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../k8s/observability/metrics.json");
        let want = format!("{}\n", serde_json::to_string_pretty(&catalogue_json())?);
        if std::env::var_os("CUSTOPS_BLESS").is_some() {
            std::fs::write(&path, &want)?;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} is not the catalogue of libs/common/src/metrics.rs; refresh it with \
             CUSTOPS_BLESS=1 cargo test -p custops-common --lib metrics",
            path.display()
        );
        Ok(())
    }
}
