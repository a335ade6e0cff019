//! The segmentation hot path against a bare tonic server: `lookup.list`, `lookup.check`,
//! `lookup.batch_check` (closed loop at each concurrency), `lookup.latency` (open loop at half
//! the service's own maximum rate), `memory.after_lookups`, and `overload` (twice the peak
//! offered to a service whose concurrency limit is reached).
//!
//! The data: static segments over synthetic customers, made the way an operator would (facts
//! rows, then CreateSegment and UploadStaticMembers through the API); segment `s` holds every
//! customer whose number is divisible by `s + 2`, so a customer is in about two segments. Every
//! customer is looked up once before the rows, so lookups are served warm from the caches, as
//! the hot path is meant to be; each call then asks about a customer (and segment) drawn
//! uniformly at random.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use serde_json::{Value, json};
use sqlx::Connection;
use tonic::transport::Channel;

use super::child::{Child, service_env};
use super::database::BenchDatabase;
use super::load::{self, Connections, LatencyFrom, MakeCall, Measured, Rng, Window};
use super::report::{Row, ratio};
use super::{Harness, Scale, finished};

/// How the lookups meet their data, said in every row's params.
pub(super) const CACHE_NOTE: &str = "warm: every customer looked up once before the rows; \
                                     each call asks about a customer (and segment) drawn \
                                     uniformly at random";

/// Open-loop calls in flight at most (far above what a healthy run needs).
const MAX_IN_FLIGHT: usize = 20_000;

/// The three lookup RPCs measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rpc {
    List,
    Check,
    BatchCheck,
}

const RPCS: [(&str, Rpc); 3] = [
    ("lookup.list", Rpc::List),
    ("lookup.check", Rpc::Check),
    ("lookup.batch_check", Rpc::BatchCheck),
];

/// The rows of this group at `scale`.
pub fn row_names(scale: &Scale) -> Vec<String> {
    let mut names = Vec::new();
    for (base, _) in RPCS {
        for c in &scale.concurrency {
            names.push(format!("{base}.c{c}"));
        }
    }
    names.extend(
        ["lookup.latency", "memory.after_lookups", "overload"]
            .into_iter()
            .map(str::to_owned),
    );
    names
}

/// The customers and segments calls ask about.
#[derive(Debug, Clone)]
pub(super) struct Data {
    customers: Arc<Vec<String>>,
    segments: Arc<Vec<String>>,
    /// Segment ids a customer holds on average, rounded: the echo server's list answer.
    typical_segments: usize,
}

impl Data {
    /// How many customers calls ask about.
    pub(super) fn customer_count(&self) -> usize {
        self.customers.len()
    }

    fn customer(&self, pick: u64) -> String {
        self.customers[(pick % self.customers.len() as u64) as usize].clone()
    }

    fn segment(&self, pick: u64) -> String {
        self.segments[((pick >> 32) % self.segments.len() as u64) as usize].clone()
    }
}

/// The call a row makes, the same for both servers.
pub(super) fn make_call(rpc: Rpc, data: &Data, batch: usize) -> MakeCall {
    let data = data.clone();
    match rpc {
        Rpc::List => Arc::new(move |channel: Channel, pick| {
            let request = pb::ListCustomerSegmentsRequest {
                customer_id: data.customer(pick),
                ..Default::default()
            };
            Box::pin(async move {
                SegmentationServiceClient::new(channel)
                    .list_customer_segments(request)
                    .await
                    .map(drop)
            })
        }),
        Rpc::Check => Arc::new(move |channel: Channel, pick| {
            let request = pb::CheckMembershipRequest {
                segment_id: data.segment(pick),
                customer_id: data.customer(pick),
            };
            Box::pin(async move {
                SegmentationServiceClient::new(channel)
                    .check_membership(request)
                    .await
                    .map(drop)
            })
        }),
        Rpc::BatchCheck => Arc::new(move |channel: Channel, pick| {
            let mut rng = Rng::new(pick);
            let request = pb::BatchCheckMembershipRequest {
                segment_id: data.segment(pick),
                customer_ids: (0..batch).map(|_| data.customer(rng.next_u64())).collect(),
            };
            Box::pin(async move {
                SegmentationServiceClient::new(channel)
                    .batch_check_membership(request)
                    .await
                    .map(drop)
            })
        }),
    }
}

/// Runs the selected rows of this group.
pub async fn run(harness: &Harness, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let scale = &harness.scale;
    let wants = |name: &str| harness.selection.wants(name);
    if !harness.selection.wants_any(&row_names(scale)) {
        return Ok(());
    }
    let db = BenchDatabase::create(&harness.admin_database_url, "lookups").await?;
    let env = service_env(db.url(), harness.redis_url.as_deref());
    let serve = ["bench-serve".to_owned(), "segmentation".to_owned()];
    let suite = Child::start("lookups-segmentation", &serve, &env, &harness.log_dir).await?;
    let data = setup(&db, suite.addr(), scale).await?;
    let echo_args = [
        "bench-echo".to_owned(),
        "--list-ids".to_owned(),
        data.typical_segments.to_string(),
    ];
    let echo = Child::start("lookups-echo", &echo_args, &[], &harness.log_dir).await?;
    let suite_conns = Connections::open(suite.addr(), scale.connections).await?;
    let echo_conns = Connections::open(echo.addr(), scale.connections).await?;
    warm(&suite_conns, &data, 16).await?;

    let window = Window {
        warmup: scale.warmup,
        measure: scale.window,
    };
    let common = json!({
        "connections": suite_conns.len(),
        "customers": data.customers.len(),
        "segments": data.segments.len(),
        "warmup_s": scale.warmup.as_secs_f64(),
        "window_s": scale.window.as_secs_f64(),
        "cache": CACHE_NOTE,
        "redis": harness.redis_url.is_some(),
        "auth": "disabled (as custops dev)",
        "baseline": "custops bench-echo: bare tonic, same generated code, no layers, constant answers",
    });
    let mut ran = Vec::new();
    let mut max_check_rate: f64 = 0.0;
    for (base, rpc) in RPCS {
        for &concurrency in &scale.concurrency {
            let name = format!("{base}.c{concurrency}");
            if !wants(&name) {
                continue;
            }
            let call = make_call(rpc, &data, scale.batch);
            let mut baseline = load::closed_loop(&echo_conns, concurrency, window, &call).await?;
            baseline.expect_clean(&format!("{name} against the echo server"))?;
            let mut measured = load::closed_loop(&suite_conns, concurrency, window, &call).await?;
            measured.expect_clean(&format!("{name} against custops"))?;
            if rpc == Rpc::Check {
                max_check_rate = max_check_rate.max(measured.ok_per_sec());
            }
            let mut params = with(
                &common,
                json!({
                    "concurrency": concurrency,
                    "loop": "closed",
                    "calls": measured.ok.len(),
                    "baseline_calls": baseline.ok.len(),
                    "baseline_p50_ms": baseline.ok.quantile_ms(0.5),
                    "baseline_p99_ms": baseline.ok.quantile_ms(0.99),
                }),
            );
            if rpc == Rpc::BatchCheck {
                params = with(&params, json!({ "customers_per_call": scale.batch }));
            }
            let row = Row::new(
                name.clone(),
                "calls/s",
                measured.ok_per_sec(),
                baseline.ok_per_sec(),
            )
            .ratio_at_least(0.8)
            .latency(measured.ok.quantile_ms(0.5), measured.ok.quantile_ms(0.99))
            .params(params);
            finished(rows, row);
            ran.push(name);
        }
    }

    if wants("lookup.latency") {
        let call = make_call(Rpc::Check, &data, scale.batch);
        if max_check_rate <= 0.0 {
            // The check rows did not run: measure the maximum the same way, without a row.
            for &concurrency in &scale.concurrency {
                let measured = load::closed_loop(&suite_conns, concurrency, window, &call).await?;
                measured.expect_clean("lookup.latency's maximum rate")?;
                max_check_rate = max_check_rate.max(measured.ok_per_sec());
            }
        }
        let rate = max_check_rate / 2.0;
        let from = LatencyFrom::Schedule;
        let mut baseline =
            load::open_loop(&echo_conns, rate, window, MAX_IN_FLIGHT, from, &call).await?;
        baseline.expect_clean("lookup.latency against the echo server")?;
        let mut measured =
            load::open_loop(&suite_conns, rate, window, MAX_IN_FLIGHT, from, &call).await?;
        measured.expect_clean("lookup.latency against custops")?;
        let (p50, p99) = (measured.ok.quantile_ms(0.5), measured.ok.quantile_ms(0.99));
        let baseline_p99 = baseline.ok.quantile_ms(0.99);
        let row = Row::new(
            "lookup.latency",
            "ms (p99)",
            p99.unwrap_or(f64::NAN),
            baseline_p99.unwrap_or(f64::NAN),
        )
        .ratio_at_most(2.0)
        .latency(p50, p99)
        .params(with(
            &common,
            json!({
                "rpc": "CheckMembership",
                "loop": "open: latency from each call's scheduled send time",
                "rate_per_s": rate.round(),
                "max_rate_per_s": max_check_rate.round(),
                "calls": measured.ok.len(),
                "baseline_p50_ms": baseline.ok.quantile_ms(0.5),
                "p99_under_2_ms": p99.map(|p| p < 2.0),
                "send_lag_p99_ms": measured.lag.quantile_ms(0.99),
                "baseline_send_lag_p99_ms": baseline.lag.quantile_ms(0.99),
            }),
        ));
        finished(rows, row);
        ran.push("lookup.latency".to_owned());
    }

    if wants("memory.after_lookups") {
        let row = Row::new(
            "memory.after_lookups",
            "MiB",
            suite.rss_mib()?,
            echo.rss_mib()?,
        )
        .params(json!({
            "process": "the segmentation child of the rows before",
            "after": ran,
            "customers": data.customers.len(),
            "measure": "VmRSS of /proc/<pid>/status",
            "baseline": "the echo child after the same load",
        }));
        finished(rows, row);
    }
    drop((suite_conns, echo_conns));
    suite.stop().await?;
    echo.stop().await?;

    if wants("overload") {
        finished(rows, overload(harness, &db, &data).await?);
    }
    Ok(())
}

/// `overload`: a fresh segmentation child on the same data whose unary call limit is low
/// enough to be reached (and all of it open to the one caller the benchmark is); its peak
/// (closed loop at the limit), then twice that offered in open loop. Goodput should hold and
/// the calls over the limit be refused at once. On a machine the generator shares, it offers
/// what it can of that (reported as `sent_per_s`).
async fn overload(harness: &Harness, db: &BenchDatabase, data: &Data) -> anyhow::Result<Row> {
    let scale = &harness.scale;
    let limit = scale.overload_limit;
    let mut env = service_env(db.url(), harness.redis_url.as_deref());
    env.push(("CUSTOPS_MAX_CONCURRENT_CALLS".to_owned(), limit.to_string()));
    env.push(("CUSTOPS_CALLER_SHARE_PERCENT".to_owned(), "100".to_owned()));
    let serve = ["bench-serve".to_owned(), "segmentation".to_owned()];
    let child = Child::start("overload-segmentation", &serve, &env, &harness.log_dir).await?;
    let conns = Connections::open(child.addr(), scale.connections).await?;
    // Under the limit, or the warming itself would be refused.
    warm(&conns, data, (limit / 2).max(1)).await?;
    let window = Window {
        warmup: scale.warmup,
        measure: scale.window,
    };
    let call = make_call(Rpc::Check, data, scale.batch);
    // The peak: as many calls in flight as the limit allows (a few may still be refused,
    // when a slot is released just after the caller sees its answer).
    let peak = load::closed_loop(&conns, limit, window, &call).await?;
    anyhow::ensure!(
        peak.error_count() == 0 && !peak.ok.is_empty(),
        "overload's peak failed: {:?} {}",
        peak.errors,
        peak.first_error.as_deref().unwrap_or("no call completed")
    );
    let offered = 2.0 * peak.ok_per_sec();
    // A generator sharing the server's machine cannot send twice what the server answers at
    // its peak: at most four times the limit is kept in flight (three quarters of them
    // refused and sent again at once), a backlog waits in the generator, and refusals are
    // timed from their actual send, since the generator's lag is not the server's refusal
    // time. The rate actually sent is reported beside the rate asked for.
    let mut over: Measured =
        load::open_loop(&conns, offered, window, 4 * limit, LatencyFrom::Send, &call).await?;
    drop(conns);
    child.stop().await?;

    let goodput = over.ok_per_sec();
    let (refused_p50, refused_p99) = (
        over.refused.quantile_ms(0.5),
        over.refused.quantile_ms(0.99),
    );
    let kept = ratio(goodput, peak.ok_per_sec());
    let mut row = Row::new("overload", "calls/s", goodput, peak.ok_per_sec())
        .latency(refused_p50, refused_p99);
    row.goal = Some("ratio >= 0.9, refusals p99 < 10 ms".to_owned());
    // No refusal at all means the limit was never reached: the overload did not happen.
    row.met = Some(kept.is_some_and(|k| k >= 0.9) && refused_p99.is_some_and(|p| p < 10.0));
    Ok(row.params(json!({
        "rpc": "CheckMembership",
        "max_concurrent_calls": limit,
        "caller_share_percent": 100,
        "peak": format!("closed loop at {limit} concurrent calls"),
        "peak_refused": peak.refused.len(),
        "offered_per_s": offered.round(),
        "sent_per_s": over.sent_per_sec().round(),
        "max_in_flight": 4 * limit,
        "send_lag_p50_ms": over.lag.quantile_ms(0.5),
        "send_lag_p99_ms": over.lag.quantile_ms(0.99),
        "refused_per_s": over.refused_per_sec().round(),
        "other_failures": over.errors,
        "first_other_failure": over.first_error,
        "ok_p50_ms": over.ok.quantile_ms(0.5),
        "ok_p99_ms": over.ok.quantile_ms(0.99),
        "p50_p99": "of the RESOURCE_EXHAUSTED refusals, from each call's actual send",
        "connections": scale.connections,
        "window_s": scale.window.as_secs_f64(),
        "cache": CACHE_NOTE,
    })))
}

/// `base` with the fields of `more` added.
pub(super) fn with(base: &Value, more: Value) -> Value {
    let mut merged = base.clone();
    if let (Some(merged), Value::Object(more)) = (merged.as_object_mut(), more) {
        merged.extend(more);
    }
    merged
}

/// Makes the customers and segments through the running service.
pub(super) async fn setup(
    db: &BenchDatabase,
    addr: SocketAddr,
    scale: &Scale,
) -> anyhow::Result<Data> {
    // A tag of this run in the ids, so the shared Redis never answers from another run's keys.
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let customers: Vec<String> = (0..scale.customers)
        .map(|n| format!("bench-{tag}-{n:06}"))
        .collect();
    // The facts projection is built from the profiles feed in production; rows with no facts
    // but the id are what a static segment needs, and the feed is not what is measured.
    let mut connection = sqlx::PgConnection::connect(db.url())
        .await
        .context("Failed to connect to the benchmark database")?;
    sqlx::query("INSERT INTO segmentation.customer_facts (customer_id) SELECT unnest($1::text[])")
        .bind(&customers)
        .execute(&mut connection)
        .await
        .context("Failed to insert the customers' facts")?;
    connection.close().await.ok();

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = SegmentationServiceClient::new(channel);
    let mut segments = Vec::new();
    for s in 0..scale.segments {
        let segment_id = client
            .create_segment(pb::CreateSegmentRequest {
                segment: Some(pb::Segment {
                    display_name: format!("Bench list {s}"),
                    kind: pb::SegmentKind::Static.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .context("Failed to create a segment")?
            .into_inner()
            .segment
            .map(|segment| segment.segment_id)
            .context("CreateSegment answered no segment")?;
        let members: Vec<String> = customers
            .iter()
            .enumerate()
            .filter(|(n, _)| n % (s + 2) == 0)
            .map(|(_, id)| id.clone())
            .collect();
        // At most 10,000 ids per message.
        let messages: Vec<pb::UploadStaticMembersRequest> = members
            .chunks(5_000)
            .enumerate()
            .map(|(i, chunk)| pb::UploadStaticMembersRequest {
                segment_id: if i == 0 {
                    segment_id.clone()
                } else {
                    String::new()
                },
                mode: if i == 0 {
                    pb::StaticUploadMode::Add.into()
                } else {
                    pb::StaticUploadMode::Unspecified.into()
                },
                request_id: String::new(),
                customer_ids: chunk.to_vec(),
            })
            .collect();
        let uploaded = client
            .upload_static_members(futures_util::stream::iter(messages))
            .await
            .context("Failed to upload a segment's members")?
            .into_inner();
        anyhow::ensure!(
            uploaded.added_count == members.len() as i64,
            "segment {s}: {} of {} members added",
            uploaded.added_count,
            members.len()
        );
        segments.push(segment_id);
    }
    let per_customer: f64 = (0..scale.segments).map(|s| 1.0 / (s as f64 + 2.0)).sum();
    Ok(Data {
        customers: Arc::new(customers),
        segments: Arc::new(segments),
        typical_segments: per_customer.round() as usize,
    })
}

/// Looks every customer up once, `concurrency` at a time, so the rows meet warm caches.
pub(super) async fn warm(
    connections: &Arc<Connections>,
    data: &Data,
    concurrency: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (connections, data, next) = (connections.clone(), data.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(customer) = data.customers.get(i) else {
                    return anyhow::Ok(());
                };
                SegmentationServiceClient::new(connections.pick())
                    .list_customer_segments(pb::ListCustomerSegmentsRequest {
                        customer_id: customer.clone(),
                        ..Default::default()
                    })
                    .await
                    .context("Failed to warm the caches")?;
            }
        });
    }
    while let Some(worker) = workers.join_next().await {
        worker.context("a warming worker panicked")??;
    }
    Ok(())
}
