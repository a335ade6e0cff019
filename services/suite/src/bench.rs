//! `custops bench`: every performance goal of the suite measured against a baseline run in the
//! same invocation on the same machine, because a figure alone says nothing about the machine
//! it came from. The load generator runs in this process; what it measures runs in child
//! processes of the same binary (`custops bench-serve`, `custops bench-echo`), reached over real
//! TCP connections, so neither shares a runtime or an allocator with the load.
//!
//! # Layout
//! - [`load`]: the load generator: connections, closed loop (maximum throughput) and open loop
//!   (a fixed rate, latency from the scheduled send time), latency samples.
//! - [`child`]: the child processes: start, wait for SERVING, resident memory, stop (and kill
//!   on drop, so an error never leaves one behind).
//! - [`database`]: a database of the benchmark's own, dropped at the end.
//! - [`serve`] and [`echo`]: the bodies of the two child commands.
//! - [`memory`], [`lookups`], [`loyalty`], [`segmentation`], [`writes`], [`replicas`]: the
//!   benchmark groups, each producing rows.
//! - [`report`]: rows, the table, `results.json` and what the machine was doing.

// A benchmark reports on stdout: that is its output, not logging.
#![allow(clippy::print_stdout, reason = "the benchmark's table is its output")]

pub mod child;
pub mod database;
pub mod delivery;
pub mod echo;
pub mod load;
pub mod lookups;
pub mod loyalty;
pub mod memory;
pub mod replicas;
pub mod report;
pub mod segmentation;
pub mod serve;
pub mod writes;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use report::Row;

/// The benchmarks, in the order they run, with what each measures. A row is named by one of
/// these, or by one of these followed by `.` and a qualifier (the concurrency, the service).
pub const BENCHMARKS: &[(&str, &str)] = &[
    (
        "memory.idle",
        "resident memory of each service started alone on an empty database (custops bench-serve), \
         against the bare tonic echo server's",
    ),
    (
        "lookup.list",
        "ListCustomerSegments calls/s at each concurrency, against the echo server",
    ),
    (
        "lookup.check",
        "CheckMembership calls/s at each concurrency, against the echo server",
    ),
    (
        "lookup.batch_check",
        "BatchCheckMembership calls/s at each concurrency, against the echo server",
    ),
    (
        "lookup.latency",
        "CheckMembership p99 at half the service's own maximum rate (open loop), against the echo \
         server's p99 at the same rate",
    ),
    (
        "memory.after_lookups",
        "resident memory of the segmentation service after the lookup benchmarks",
    ),
    (
        "overload",
        "goodput at twice the peak offered load with the concurrency limit reached, against the \
         peak; p99 of the refusals",
    ),
    (
        "loyalty.earn",
        "EarnPoints/s spread uniformly over the members, against pgbench tpcb-like at the same \
         concurrency on the same Postgres",
    ),
    (
        "loyalty.earn_hot",
        "EarnPoints/s with 1 % of the members taking half of the earns, against uniform",
    ),
    (
        "loyalty.feed_delay",
        "p99 from an EarnPoints answer to its event at a feed subscriber during loyalty.earn, \
         against earns sent one at a time",
    ),
    (
        "segmentation.recompute",
        "RecomputeSegment of one rule segment over the scale fixture (every member entering), \
         against the hand-written INSERT ... SELECT of its members on the same data",
    ),
    (
        "segmentation.recompute_events",
        "RecomputeSegment of one rule segment over custom events (an event count in a window \
         with a property filter) over the scale fixture's 20 event types, against the \
         hand-written INSERT ... SELECT of its members on the same data",
    ),
    (
        "segmentation.recompute_all",
        "RecomputeAll (RFM, lifecycle, every rule segment) over the scale fixture, against the \
         hand-written SQL of the same work on the same data",
    ),
    (
        "segmentation.apply",
        "events/s segmentation applies from profiles' feed at the full customer base and 54 rule \
         segments (4 over custom events), against profiles' own ingest rate of the same events",
    ),
    (
        "segmentation.apply_flat",
        "the apply rate at the full customer base against the rate at 10,000 customers",
    ),
    (
        "segmentation.freshness",
        "RecordActivity to CheckMembership true, p99, with profiles' feed at half the apply rate, \
         against the same probes on an idle feed",
    ),
    (
        "segmentation.apply_events",
        "events/s segmentation applies of custom events of 20 types (RecordActivity with a \
         custom_event) from profiles' feed at the full customer base, against profiles' own \
         ingest rate of the same events",
    ),
    (
        "writes.mixed",
        "commits/s of profiles, loyalty and feedback on one database written to at once \
         (RecordActivity, EarnPoints, SubmitResponse), against pgbench tpcb-like at the same \
         concurrency",
    ),
    (
        "writes.feed_delay",
        "p99 from each write's answer to its event at its feed's subscriber during writes.mixed, \
         against writes sent one at a time",
    ),
    (
        "replicas.lookup",
        "CheckMembership calls/s at the lookup rows' highest concurrency spread over two \
         segmentation children on one database, against the same load on one of them \
         (alternated one, two, one, two, ...; medians)",
    ),
    (
        "replicas.earn",
        "EarnPoints/s as loyalty.earn spread over two loyalty children on one database, against \
         the same load on one of them (alternated; medians), the ledger checked after",
    ),
];

/// What `custops bench` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Every benchmark at tiny scale, for seconds.
    pub quick: bool,
    /// Only the rows whose name starts with this.
    pub only: Option<String>,
    /// Where `results.json` and the children's logs go.
    pub out: PathBuf,
}

/// How big and how long: the full run, or `--quick`.
#[derive(Debug, Clone)]
pub struct Scale {
    /// `--quick`.
    pub quick: bool,
    /// Load before measuring starts (connections warm, caches filled, the CPU at speed).
    pub warmup: Duration,
    /// How long each measurement lasts.
    pub window: Duration,
    /// Connections (HTTP/2) from the load generator to each server.
    pub connections: usize,
    /// The concurrencies of the lookup rows.
    pub concurrency: Vec<usize>,
    /// Customers in the lookup data set.
    pub customers: usize,
    /// Static segments in the lookup data set.
    pub segments: usize,
    /// Customers per BatchCheckMembership call.
    pub batch: usize,
    /// The segmentation child's unary call limit in the overload benchmark.
    pub overload_limit: usize,
    /// How long an idle child runs before its memory is read.
    pub settle: Duration,
    /// Loyalty members earning.
    pub members: usize,
    /// Concurrent EarnPoints calls (and pgbench clients).
    pub earn_concurrency: usize,
    /// Customers of the segmentation scale fixture.
    pub seg_customers: u64,
    /// Activities of the segmentation scale fixture (about).
    pub seg_activities: u64,
    /// Customers of the small fixture `segmentation.apply_flat` compares with (activities in
    /// the same proportion).
    pub seg_small_customers: u64,
    /// Rule segments over activities and attributes (at most 50); the four over custom events
    /// come on top.
    pub seg_segments: usize,
    /// Customers created in profiles for the feed rows, the freshness probes among them.
    pub feed_customers: usize,
    /// Activities recorded in profiles for `segmentation.apply`.
    pub feed_activities: usize,
    /// Custom events recorded in profiles for `segmentation.apply_events`.
    pub feed_custom_events: usize,
    /// Calls in flight creating customers and recording activities.
    pub feed_concurrency: usize,
    /// Freshness probes on an idle feed (the baseline).
    pub probes_idle: usize,
    /// Freshness probes with the background feed running.
    pub probes_loaded: usize,
    /// Time between two probes with the background feed running.
    pub probe_every: Duration,
    /// A probe still not a member after this counts as this.
    pub probe_timeout: Duration,
    /// How long a segmentation child may take to apply the feed before its row reports the
    /// rate it reached.
    pub apply_timeout: Duration,
    /// How long a recompute job may take.
    pub job_timeout: Duration,
    /// Rounds of the replica rows, each a run against one replica then one against two.
    pub replica_rounds: usize,
}

impl Scale {
    /// The scale `make bench` runs at: sized for a 2-core machine.
    pub fn full() -> Self {
        Self {
            quick: false,
            warmup: Duration::from_secs(2),
            window: Duration::from_secs(8),
            connections: 4,
            concurrency: vec![1, 16, 64],
            customers: 20_000,
            segments: 10,
            batch: 100,
            overload_limit: 64,
            settle: Duration::from_secs(2),
            members: 10_000,
            earn_concurrency: 16,
            seg_customers: 1_000_000,
            seg_activities: 5_000_000,
            seg_small_customers: 10_000,
            seg_segments: 50,
            feed_customers: 2_000,
            feed_activities: 20_000,
            feed_custom_events: 20_000,
            feed_concurrency: 16,
            probes_idle: 30,
            probes_loaded: 100,
            probe_every: Duration::from_millis(200),
            probe_timeout: Duration::from_secs(30),
            apply_timeout: Duration::from_secs(240),
            job_timeout: Duration::from_secs(3600),
            replica_rounds: 3,
        }
    }

    /// `--quick`: every benchmark for about a second, to prove the harness runs.
    pub fn quick() -> Self {
        Self {
            quick: true,
            warmup: Duration::from_millis(200),
            window: Duration::from_secs(1),
            connections: 2,
            concurrency: vec![1, 4],
            customers: 300,
            segments: 10,
            batch: 20,
            overload_limit: 8,
            settle: Duration::from_millis(200),
            members: 200,
            earn_concurrency: 4,
            seg_customers: 300,
            seg_activities: 1_500,
            seg_small_customers: 100,
            seg_segments: 12,
            feed_customers: 30,
            feed_activities: 150,
            feed_custom_events: 150,
            feed_concurrency: 4,
            probes_idle: 3,
            probes_loaded: 5,
            probe_every: Duration::from_millis(100),
            probe_timeout: Duration::from_secs(20),
            apply_timeout: Duration::from_secs(60),
            job_timeout: Duration::from_secs(120),
            replica_rounds: 2,
        }
    }
}

/// Which rows to run: every row unless `--only` names a prefix.
#[derive(Debug, Clone)]
pub struct Selection {
    only: Option<String>,
}

impl Selection {
    /// Whether the row `name` runs.
    pub fn wants(&self, name: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|only| name.starts_with(only))
    }

    /// Whether any of `names` (a group's rows) runs.
    pub fn wants_any(&self, names: &[String]) -> bool {
        names.iter().any(|name| self.wants(name))
    }
}

/// Where the benchmarks find their datastores and put their files.
#[derive(Debug, Clone)]
pub struct Harness {
    /// The admin URL databases are created through (`DATABASE_URL`).
    pub admin_database_url: String,
    /// The Redis the services use (`REDIS_URL`), when there is one.
    pub redis_url: Option<String>,
    /// Where the children's logs go.
    pub log_dir: PathBuf,
    /// How big and how long.
    pub scale: Scale,
    /// Which rows run.
    pub selection: Selection,
}

/// Every row name the run at `scale` can produce, in order; `--only` must match one.
pub fn row_names(scale: &Scale) -> Vec<String> {
    let mut names = memory::row_names();
    names.extend(lookups::row_names(scale));
    names.extend(loyalty::row_names());
    names.extend(segmentation::row_names());
    names.extend(writes::row_names());
    names.extend(replicas::row_names());
    names
}

/// Runs the selected benchmarks, prints the table and writes `results.json`. Fails (after
/// writing what it has) when a benchmark group failed.
pub async fn run(options: Options) -> anyhow::Result<()> {
    let scale = if options.quick {
        Scale::quick()
    } else {
        Scale::full()
    };
    let selection = Selection {
        only: options.only.clone(),
    };
    let names = row_names(&scale);
    if !selection.wants_any(&names) {
        anyhow::bail!(
            "--only {} matches no benchmark; the names are: {}",
            options.only.as_deref().unwrap_or_default(),
            names.join(", ")
        );
    }
    let admin_database_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .context("DATABASE_URL is not set: the benchmarks need a Postgres to create their database in (make bench sets it)")?;
    let redis_url = std::env::var("REDIS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty());
    let log_dir = options.out.join("logs");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("Failed to create {}", log_dir.display()))?;
    let harness = Harness {
        admin_database_url,
        redis_url,
        log_dir,
        scale,
        selection,
    };

    eprintln!(
        "bench: {} run; children's logs in {}",
        if harness.scale.quick { "quick" } else { "full" },
        harness.log_dir.display()
    );
    let machine_before = report::MachineSample::take(harness.scale.settle).await;
    let mut rows: Vec<Row> = Vec::new();
    let mut failures = Vec::new();
    // A group that fails keeps the rows it finished; the others still run.
    if let Err(error) = memory::run(&harness, &mut rows).await {
        eprintln!("bench: the memory benchmarks failed: {error:#}");
        failures.push("memory");
    }
    if let Err(error) = lookups::run(&harness, &mut rows).await {
        eprintln!("bench: the lookup benchmarks failed: {error:#}");
        failures.push("lookups");
    }
    if let Err(error) = loyalty::run(&harness, &mut rows).await {
        eprintln!("bench: the loyalty benchmarks failed: {error:#}");
        failures.push("loyalty");
    }
    if let Err(error) = segmentation::run(&harness, &mut rows).await {
        eprintln!("bench: the segmentation benchmarks failed: {error:#}");
        failures.push("segmentation");
    }
    if let Err(error) = writes::run(&harness, &mut rows).await {
        eprintln!("bench: the mixed write benchmarks failed: {error:#}");
        failures.push("writes");
    }
    if let Err(error) = replicas::run(&harness, &mut rows).await {
        eprintln!("bench: the replica benchmarks failed: {error:#}");
        failures.push("replicas");
    }
    let machine = report::machine(&machine_before, &harness.scale).await;
    println!(
        "{}\n{}",
        report::machine_line(&machine),
        report::table(&rows)
    );
    let path = options.out.join("results.json");
    report::write_json(&path, &machine, &rows)?;
    println!("written to {}", path.display());
    if !failures.is_empty() {
        anyhow::bail!("benchmark groups failed: {}", failures.join(", "));
    }
    Ok(())
}

/// This machine's cores, as the runtime counts them (1 when it cannot tell).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Adds a finished row, and reports it on stderr at once, so a long run shows progress.
pub fn finished(rows: &mut Vec<Row>, row: Row) {
    eprintln!("bench: {}", row.one_line());
    rows.push(row);
}
