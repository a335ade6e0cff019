//! Two replicas of a service on one machine against one: `replicas.lookup` (CheckMembership
//! in closed loop at the lookup rows' highest concurrency, where it peaks) and `replicas.earn`
//! (EarnPoints spread uniformly over the members, 16 in flight, as `loyalty.earn`), each on a
//! benchmark database of its own.
//!
//! Each run starts its own `custops bench-serve` children of the service on the benchmark
//! database and stops them after it: one replica, or two with the generator's connections
//! opened half to each (calls handed out round-robin, so each replica answers half of them).
//! Whatever a second replica costs while it runs (its background work included) falls on the
//! two-replica runs. The replicas share one replica's budget, as a deployment shares it
//! (`Layout::env`): one replica has the services' default pool of Postgres connections and a
//! runtime thread per core, each of two has half of both. Given each a full share, two
//! replicas on two cores oversubscribe Postgres and the CPUs, which measures an overloaded
//! machine, not a second replica (on 2026-12-06: earns 0.77 of one replica, lookups
//! 0.79-0.83; with the budget shared, 0.92-0.98 and 0.91-0.94). One and two alternate (one,
//! two, one, two, …) so a drift of the shared machine falls on both, and the row sets the
//! median rate of the two-replica runs against the median of the one-replica runs. On two
//! cores the point is that a second replica loses nothing, not that it gains: both share the
//! cores with the generator and Postgres.
//!
//! The data are the lookup and loyalty groups' own: static segments made through the API,
//! members enrolled through it. After the earns, every member's balance, ledger and lots must
//! hold what the generator saw it earn through either replica, or the run fails.

use std::net::SocketAddr;
use std::sync::Arc;

use custops_common::config::DEFAULT_DB_MAX_CONNECTIONS;
use serde_json::{Value, json};

use super::child::{Child, service_env};
use super::database::BenchDatabase;
use super::load::{self, Connections, MakeCall, Samples, Window};
use super::lookups::{self, Data, Rpc};
use super::loyalty::{self, Spread};
use super::report::Row;
use super::{Harness, cores, finished};

/// The goal of both rows: a second replica on the same machine loses at most a tenth.
const MIN_RATIO: f64 = 0.9;

/// The rows of this group.
pub fn row_names() -> Vec<String> {
    vec!["replicas.lookup".to_owned(), "replicas.earn".to_owned()]
}

/// Runs the selected rows of this group.
pub async fn run(harness: &Harness, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    if harness.selection.wants("replicas.lookup") {
        finished(rows, lookup_row(harness).await?);
    }
    if harness.selection.wants("replicas.earn") {
        finished(rows, earn_row(harness).await?);
    }
    Ok(())
}

/// `replicas.lookup`: CheckMembership over the lookup group's data, every replica warmed
/// before it is loaded.
async fn lookup_row(harness: &Harness) -> anyhow::Result<Row> {
    let scale = &harness.scale;
    let db = BenchDatabase::create(&harness.admin_database_url, "replicas_lookup").await?;
    let mut replicas = Replicas::new(harness, &db, "segmentation");
    let set_up = replicas.start(Layout::One).await?;
    let data = lookups::setup(&db, set_up.children[0].addr(), scale).await?;
    set_up.stop().await?;
    // Each replica has an in-process cache of its own: each is warmed with every customer.
    let warm = async |addr: SocketAddr| {
        let connections = Connections::open(addr, harness.scale.connections).await?;
        lookups::warm(&connections, &data, 16).await
    };
    let concurrency = scale.concurrency.iter().copied().max().unwrap_or(16);
    let call = lookups::make_call(Rpc::Check, &data, scale.batch);
    let name = "replicas.lookup";
    let runs = Alternated::run(&mut replicas, name, concurrency, &call, warm).await?;
    Ok(runs.row(
        name,
        lookup_params(&data, concurrency, harness.redis_url.is_some()),
    ))
}

/// What `replicas.lookup` loads the replicas with.
fn lookup_params(data: &Data, concurrency: usize, redis: bool) -> Value {
    json!({
        "service": "segmentation",
        "rpc": "CheckMembership",
        "concurrency": concurrency,
        "customers": data.customer_count(),
        "cache": lookups::CACHE_NOTE,
        "warmed": "each replica, once started, looked every customer up once before its run",
        "redis": redis,
    })
}

/// `replicas.earn`: uniform EarnPoints over members enrolled before the runs; the ledger is
/// checked before the row is reported.
async fn earn_row(harness: &Harness) -> anyhow::Result<Row> {
    let scale = &harness.scale;
    let db = BenchDatabase::create(&harness.admin_database_url, "replicas_earn").await?;
    let mut replicas = Replicas::new(harness, &db, "loyalty");
    let set_up = replicas.start(Layout::One).await?;
    let ledger = Arc::new(loyalty::setup(&set_up.connections, scale).await?);
    set_up.stop().await?;
    let call = loyalty::make_call(&ledger, Spread::Uniform, None);
    let concurrency = scale.earn_concurrency;
    // Loyalty keeps no cache: what a fresh replica warms, its pool, the runs' warm-up does.
    let nothing_to_warm = async |_: SocketAddr| anyhow::Ok(());
    let name = "replicas.earn";
    let runs = Alternated::run(&mut replicas, name, concurrency, &call, nothing_to_warm).await?;
    loyalty::verify(&db, &ledger).await?;
    Ok(runs.row(
        name,
        json!({
            "service": "loyalty",
            "rpc": "EarnPoints",
            "concurrency": concurrency,
            "members": ledger.member_count(),
            "spread": "uniform",
            "earn": "EarnPoints grant of 1-100 points, fresh request id; 1 call in 50 replays an earlier request (must not earn again), through whichever replica the call goes to",
            "checked": "after the runs, every member's balance, ledger sum and lots equal what was earned",
        }),
    ))
}

/// The Postgres connections a service's replicas share, as a pooler holds them in prod
/// (PgBouncer's `default_pool_size` caps the server connections of all a service's replicas
/// together, `k8s/components/pgbouncer`): the services' default pool.
const DATABASE_BUDGET: usize = DEFAULT_DB_MAX_CONNECTIONS as usize;

/// The processes of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// One replica with the whole budget of cores and connections.
    One,
    /// Two replicas sharing the budget, half each.
    Two,
}

impl Layout {
    fn replicas(self) -> usize {
        match self {
            Layout::One => 1,
            Layout::Two => 2,
        }
    }

    /// Each replica's settings: its share of the database budget
    /// (`CUSTOPS_DB_MAX_CONNECTIONS`) and of this machine's cores (the runtime's worker
    /// threads, `TOKIO_WORKER_THREADS`; a pod finds its share the same way, from its CPU
    /// limit).
    fn env(self) -> Vec<(String, String)> {
        let share = |budget: usize| (budget / self.replicas()).max(1).to_string();
        vec![
            (
                "CUSTOPS_DB_MAX_CONNECTIONS".to_owned(),
                share(DATABASE_BUDGET),
            ),
            ("TOKIO_WORKER_THREADS".to_owned(), share(cores())),
        ]
    }
}

/// How to start the replicas of a service on one benchmark database.
struct Replicas<'h> {
    harness: &'h Harness,
    service: &'static str,
    env: Vec<(String, String)>,
    /// Children started so far (their logs are numbered by it).
    started: usize,
}

/// The replicas of one run and the generator's connections, spread over them.
struct Running {
    children: Vec<Child>,
    connections: Arc<Connections>,
}

impl Running {
    /// Closes the connections and stops every replica; fails if one had died.
    async fn stop(self) -> anyhow::Result<()> {
        drop(self.connections);
        for child in self.children {
            child.stop().await?;
        }
        Ok(())
    }
}

impl<'h> Replicas<'h> {
    fn new(harness: &'h Harness, db: &BenchDatabase, service: &'static str) -> Self {
        Self {
            harness,
            service,
            env: service_env(db.url(), harness.redis_url.as_deref()),
            started: 0,
        }
    }

    /// The generator's connections in every run: `scale.connections`, at least two so each
    /// of two replicas has one.
    fn connections(&self) -> usize {
        self.harness.scale.connections.max(2)
    }

    /// Starts the replicas of `layout` (the first start migrates the schema) and opens
    /// [`Replicas::connections`] spread over them, so calls handed out round-robin go to
    /// each evenly.
    async fn start(&mut self, layout: Layout) -> anyhow::Result<Running> {
        let mut children = Vec::new();
        for i in 1..=layout.replicas() {
            self.started += 1;
            let name = format!("replicas-{}-{}-{i}", self.service, self.started);
            let mut env = self.env.clone();
            env.extend(layout.env());
            let args = serve(self.service);
            children.push(Child::start(&name, &args, &env, &self.harness.log_dir).await?);
        }
        let addrs: Vec<SocketAddr> = children.iter().map(Child::addr).collect();
        let connections = Connections::spread(&addrs, self.connections()).await?;
        Ok(Running {
            children,
            connections,
        })
    }
}

/// `custops bench-serve SERVICE`.
fn serve(service: &str) -> [String; 2] {
    ["bench-serve".to_owned(), service.to_owned()]
}

/// The runs of one way of loading the service.
#[derive(Debug, Default)]
struct Runs {
    /// Calls/s of each run, in order.
    rates: Vec<f64>,
    /// Every call's latency.
    latency: Samples,
}

impl Runs {
    fn add(&mut self, measured: load::Measured) {
        self.rates.push(measured.ok_per_sec());
        self.latency.extend(measured.ok);
    }
}

/// The closed-loop runs of one row: one replica and two, alternated.
#[derive(Debug, Default)]
struct Alternated {
    connections: usize,
    one: Runs,
    two: Runs,
    /// CPU ticks each replica used during the two-replica runs, warm-ups included.
    two_cpu_ticks: [u64; 2],
    warmup_s: f64,
    window_s: f64,
}

impl Alternated {
    /// `scale.replica_rounds` (at least two) rounds of a run against one replica, then one
    /// against two; the replicas of each run are started (and `warm`ed) for it and stopped
    /// after it, so no other process of the service runs beside a run's own. Each run is a
    /// warm-up and a window of `concurrency` calls in flight. A call that fails fails the
    /// row, and so does a second replica that used no CPU while it was loaded (the load
    /// never reached it).
    async fn run(
        replicas: &mut Replicas<'_>,
        name: &str,
        concurrency: usize,
        call: &MakeCall,
        warm: impl AsyncFn(SocketAddr) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let scale = &replicas.harness.scale;
        let window = Window {
            warmup: scale.warmup,
            measure: scale.window,
        };
        let mut alternated = Self {
            connections: replicas.connections(),
            warmup_s: scale.warmup.as_secs_f64(),
            window_s: scale.window.as_secs_f64(),
            ..Self::default()
        };
        for round in 1..=scale.replica_rounds.max(2) {
            let one = replicas.start(Layout::One).await?;
            warm(one.children[0].addr()).await?;
            let alone = load::closed_loop(&one.connections, concurrency, window, call).await?;
            one.stop().await?;
            alone.expect_clean(&format!("{name}, one replica, round {round}"))?;
            alternated.one.add(alone);

            let two = replicas.start(Layout::Two).await?;
            for child in &two.children {
                warm(child.addr()).await?;
            }
            let ticks = || -> anyhow::Result<Vec<u64>> {
                two.children.iter().map(Child::cpu_ticks).collect()
            };
            let before = ticks()?;
            let both = load::closed_loop(&two.connections, concurrency, window, call).await?;
            let after = ticks()?;
            two.stop().await?;
            both.expect_clean(&format!("{name}, two replicas, round {round}"))?;
            alternated.two.add(both);
            for (used, (b, a)) in alternated
                .two_cpu_ticks
                .iter_mut()
                .zip(before.iter().zip(after))
            {
                *used += a.saturating_sub(*b);
            }
        }
        anyhow::ensure!(
            alternated.two_cpu_ticks[1] > 0,
            "{name}: the second replica used no CPU during the two-replica runs"
        );
        Ok(alternated)
    }

    /// Each replica's share of the CPU time both used during the two-replica runs' windows,
    /// in percent.
    fn two_cpu_percent(&self) -> Vec<f64> {
        let total = self.two_cpu_ticks.iter().sum::<u64>().max(1) as f64;
        self.two_cpu_ticks
            .iter()
            .map(|&ticks| (1000.0 * ticks as f64 / total).round() / 10.0)
            .collect()
    }

    /// The row: the two-replica runs' median rate against the one-replica runs', with the
    /// two-replica calls' latency, and every run in `params` beside `about`.
    fn row(mut self, name: &str, about: Value) -> Row {
        let params = lookups::with(
            &about,
            json!({
                "loop": "closed",
                "database": "one benchmark database, every replica on it",
                "connections": self.connections,
                "one": format!("one replica started for the run and stopped after it, every connection to it; {DATABASE_BUDGET} Postgres connections, {} worker threads", cores()),
                "two": format!("two replicas started for the run and stopped after them, {} connections to each, calls handed out round-robin; {} Postgres connections and {} worker threads each", self.connections / 2, DATABASE_BUDGET / 2, (cores() / 2).max(1)),
                "budget": format!("the replicas share {DATABASE_BUDGET} Postgres connections (as PgBouncer's default_pool_size holds all of a service's replicas in prod; CUSTOPS_DB_MAX_CONNECTIONS = budget / replicas when connected directly) and this machine's {} cores (TOKIO_WORKER_THREADS = cores / replicas, as a pod's CPU limit sizes its runtime)", cores()),
                "order": "one, two, one, two, ...: each round a run of each",
                "one_per_s": self.one.rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
                "two_per_s": self.two.rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
                "figures": "median calls/s of the two-replica runs (custops) and of the one-replica runs (baseline)",
                "one_p50_ms": self.one.latency.quantile_ms(0.5),
                "one_p99_ms": self.one.latency.quantile_ms(0.99),
                "p50_p99": "of every call of the two-replica runs",
                "two_cpu_percent_by_replica": self.two_cpu_percent(),
                "cpu": "each replica's share of the CPU time the two used during the two-replica runs (warm-ups included)",
                "warmup_s": self.warmup_s,
                "window_s": self.window_s,
                "auth": "disabled (as custops dev)",
            }),
        );
        Row::new(
            name,
            "calls/s",
            median(&self.two.rates),
            median(&self.one.rates),
        )
        .ratio_at_least(MIN_RATIO)
        .latency(
            self.two.latency.quantile_ms(0.5),
            self.two.latency.quantile_ms(0.99),
        )
        .params(params)
    }
}

/// The median of `values` (the mean of the middle two when even); NaN when empty.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_run() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }
}
