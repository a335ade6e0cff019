//! Benchmark of the hot-path lookups against a baseline run in the same process: a customer's
//! segments asked straight of Postgres with the query a cache miss runs, then through the
//! service's cache layers in-process (local layer, Redis), then end to end over gRPC
//! (`CheckMembership`, `ListCustomerSegments`), each cold (first pass) and warm.
//!
//! Run: `make bench` (or `scripts/dev-env.sh cargo run --release -p custops-segmentation
//! --example lookup_bench`). Needs `DATABASE_URL` and a `redis-server` binary (it starts its
//! own). Prints calls per second, p50 / p99 latency, the ratio to the baseline, and the
//! process's resident memory before and after.

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use custops_common::cache::{RedisCache, RedisSettings};
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use custops_segmentation::lookups::Lookups;
use custops_testkit::TestDatabase;
use custops_testkit::redis::TestRedis;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const CUSTOMERS: usize = 20_000;
const SEGMENTS: usize = 10;
const CALLS: usize = 20_000;
const CONCURRENCY: usize = 8;

/// Latencies of one run.
struct Run {
    label: &'static str,
    total: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.total.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }

    fn report(&mut self, baseline: Option<f64>) {
        let rate = self.per_second();
        let (p50, p99) = (self.percentile(0.5), self.percentile(0.99));
        let ratio = baseline.map_or(String::new(), |b| {
            format!("  {:.2}× the baseline", rate / b)
        });
        println!(
            "{:<46} {:>9.0} calls/s  p50 {:>7.3} ms  p99 {:>7.3} ms{ratio}",
            self.label,
            rate,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
        );
    }
}

/// Asks `CALLS` questions from `CONCURRENCY` tasks; `ask(i)` asks question `i`.
async fn measure<F, Fut>(label: &'static str, ask: F) -> anyhow::Result<Run>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let ask = ask.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(CALLS / CONCURRENCY);
            for i in (worker..CALLS).step_by(CONCURRENCY) {
                let call = Instant::now();
                ask(i).await?;
                latencies.push(call.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(CALLS);
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Run {
        label,
        total: started.elapsed(),
        latencies,
    })
}

/// Resident memory of this process in MiB (Linux), 0 elsewhere.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The customer and segment a question `i` is about (a fixed pseudo-random walk).
fn question(i: usize, segments: &[String]) -> (String, String) {
    let customer = (i * 7919) % CUSTOMERS;
    let segment = &segments[(i * 31) % segments.len()];
    (format!("c-{customer:06}"), segment.clone())
}

async fn setup(
    client: &mut SegmentationServiceClient<Channel>,
    pool: &PgPool,
) -> anyhow::Result<Vec<String>> {
    sqlx::query(
        "INSERT INTO segmentation.customer_facts (customer_id) \
         SELECT format('c-%s', lpad(n::text, 6, '0')) FROM generate_series(0, $1 - 1) n",
    )
    .bind(CUSTOMERS as i64)
    .execute(pool)
    .await?;
    let mut segments = Vec::new();
    for s in 0..SEGMENTS {
        let segment_id = client
            .create_segment(pb::CreateSegmentRequest {
                segment: Some(pb::Segment {
                    display_name: format!("Bench list {s}"),
                    kind: pb::SegmentKind::Static.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .segment
            .map(|s| s.segment_id)
            .unwrap_or_default();
        // Every customer whose number is divisible by s + 2: lists of 50 % down to 8 %.
        let members: Vec<String> = (0..CUSTOMERS)
            .filter(|n| n % (s + 2) == 0)
            .map(|n| format!("c-{n:06}"))
            .collect();
        let upload = pb::UploadStaticMembersRequest {
            segment_id: segment_id.clone(),
            mode: pb::StaticUploadMode::Add.into(),
            request_id: String::new(),
            customer_ids: members,
        };
        client
            .upload_static_members(futures_util::stream::iter(vec![upload]))
            .await?;
        segments.push(segment_id);
    }
    Ok(segments)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let redis = TestRedis::start().await?;
    let mut settings = ServiceSettings::for_local(ServiceKind::Segmentation, db.url());
    settings.redis = Some(RedisSettings::new(&redis.url()));
    let app = custops_segmentation::build(settings).await?;
    let port = app.port();
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move { app.run_until_stopped(stop.cancelled_owned()).await }
    });
    let mut client = SegmentationServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
    let pool = PgPool::connect(db.url()).await?;
    // The service's own view: unqualified names resolve in its schema.
    let service_pool = PgPool::connect_with(
        db.url()
            .parse::<sqlx::postgres::PgConnectOptions>()?
            .options([("search_path", "segmentation")]),
    )
    .await?;
    let segments = setup(&mut client, &pool).await?;
    let rss_before = rss_mib();
    println!(
        "lookup_bench: {CUSTOMERS} customers, {SEGMENTS} static segments, {CALLS} calls from {CONCURRENCY} tasks per run"
    );

    // Baseline: the query a cache miss runs, straight to Postgres.
    let baseline = {
        let (pool, segments) = (pool.clone(), segments.clone());
        measure("baseline: Postgres, a customer's segment ids", move |i| {
            let (pool, (customer, _)) = (pool.clone(), question(i, &segments));
            async move {
                let _: Vec<uuid::Uuid> = sqlx::query_scalar(
                    "SELECT segment_id FROM segmentation.memberships \
                     WHERE customer_id = $1 ORDER BY segment_id",
                )
                .bind(customer)
                .fetch_all(&pool)
                .await?;
                Ok(())
            }
        })
        .await?
    };
    // The same question through the service's cache layers, in-process (no gRPC).
    let lookups = Arc::new(Lookups::new(Some(
        RedisCache::connect(&RedisSettings::new(&redis.url())).await?,
    )));
    let cached = |label| {
        let (lookups, pool, segments) = (lookups.clone(), service_pool.clone(), segments.clone());
        measure(label, move |i| {
            let (lookups, pool, (customer, _)) =
                (lookups.clone(), pool.clone(), question(i, &segments));
            async move {
                lookups.customer_segments(&pool, &customer).await?;
                Ok(())
            }
        })
    };
    let cache_cold = cached("cache layers, cold (fills Redis)").await?;
    let cache_warm = cached("cache layers, warm").await?;
    let check = |label| {
        let (client, segments) = (client.clone(), segments.clone());
        measure(label, move |i| {
            let (mut client, (customer, segment)) = (client.clone(), question(i, &segments));
            async move {
                client
                    .check_membership(pb::CheckMembershipRequest {
                        segment_id: segment,
                        customer_id: customer,
                    })
                    .await?;
                Ok(())
            }
        })
    };
    // First pass fills the cache from Postgres; the second is served from it.
    let cold = check("CheckMembership over gRPC, cold cache").await?;
    let warm = check("CheckMembership over gRPC, warm cache").await?;
    let list = {
        let (client, segments) = (client.clone(), segments.clone());
        measure("ListCustomerSegments over gRPC", move |i| {
            let (mut client, (customer, _)) = (client.clone(), question(i, &segments));
            async move {
                client
                    .list_customer_segments(pb::ListCustomerSegmentsRequest {
                        customer_id: customer,
                        ..Default::default()
                    })
                    .await?;
                Ok(())
            }
        })
        .await?
    };
    let mut baseline = baseline;
    let base_rate = baseline.per_second();
    baseline.report(None);
    for mut run in [cache_cold, cache_warm, cold, warm, list] {
        run.report(Some(base_rate));
    }
    println!(
        "resident memory: {rss_before:.1} MiB after set-up, {:.1} MiB after the runs",
        rss_mib()
    );
    stop.cancel();
    Ok(())
}
