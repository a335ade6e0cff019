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
//! - [`memory`], [`lookups`], [`loyalty`]: the benchmark groups, each producing rows.
//! - [`report`]: rows, the table, `results.json` and what the machine was doing.

// A benchmark reports on stdout: that is its output, not logging.
#![allow(clippy::print_stdout, reason = "the benchmark's table is its output")]

pub mod child;
pub mod database;
pub mod echo;
pub mod load;
pub mod lookups;
pub mod loyalty;
pub mod memory;
pub mod report;
pub mod serve;

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

    /// Whether any of `names` runs.
    pub fn wants_any<'a>(&self, mut names: impl Iterator<Item = &'a str>) -> bool {
        names.any(|name| self.wants(name))
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
    if !selection.wants_any(names.iter().map(String::as_str)) {
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

/// Adds a finished row, and reports it on stderr at once, so a long run shows progress.
pub fn finished(rows: &mut Vec<Row>, row: Row) {
    eprintln!("bench: {}", row.one_line());
    rows.push(row);
}
