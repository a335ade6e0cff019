//! The points ledger's write path: `loyalty.earn` (EarnPoints/s spread uniformly over the
//! members, against `pgbench -b tpcb-like` on the same Postgres at the same concurrency) and
//! `loyalty.earn_hot` (1 % of the members take half of the earns, against uniform).
//!
//! Every earn is an idempotent grant of 1–100 points with a fresh request id; one call in 50
//! instead replays an earlier successful request (same id, same payload), which must not earn
//! again. The generator adds up what each member earned, and after the rows every member's
//! balance must equal the sum of its ledger entries, the points its lots hold and what was
//! earned: a point lost or doubled fails the run.
//!
//! `loyalty.feed_delay`: while the uniform row runs, a subscriber of loyalty's own feed
//! receives every PointsEarned; the delay of each earn is from its answer to the event's
//! arrival (zero when the event came first: the answer leaves after the commit). Every earn
//! answered must arrive once: an event missing or delivered twice fails the run. The
//! baseline is the same delay for earns sent one at a time on the otherwise idle service.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use custops_contracts::custops::loyalty::v1 as pb;
use custops_contracts::custops::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use prost::{Message, Name};
use serde_json::json;
use sqlx::Connection;
use tonic::transport::Channel;

use super::child::{Child, process_cpu_ticks, service_env};
use super::database::BenchDatabase;
use super::delivery::{self, Deliveries};
use super::load::{self, Connections, MakeCall, Samples, Window};
use super::report::{self, Row};
use super::{Harness, Scale, finished};

/// One call in this many replays an earlier request.
const REPLAY_EVERY: u64 = 50;

/// Slots remembering recent successful earns, to replay.
const RECENT_SLOTS: usize = 64;

/// The rows of this group.
pub fn row_names() -> Vec<String> {
    vec![
        "loyalty.earn".to_owned(),
        "loyalty.earn_hot".to_owned(),
        "loyalty.feed_delay".to_owned(),
    ]
}

/// Earns sent one at a time for `loyalty.feed_delay`'s idle baseline.
const IDLE_EARNS: usize = 200;

/// How the members are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spread {
    /// Uniformly over all members.
    Uniform,
    /// Half of the earns to the first 1 % of the members, the rest uniformly.
    Hot,
}

/// An earn that succeeded: what a replay sends again.
#[derive(Debug, Clone)]
pub(super) struct Earned {
    request_id: String,
    member: usize,
    points: i64,
}

/// The members and what the generator knows they earned.
#[derive(Debug)]
pub(super) struct Ledger {
    members: Vec<String>,
    earned: Vec<AtomicI64>,
    recent: Vec<Mutex<Option<Earned>>>,
    replays: AtomicUsize,
    /// Calls that failed, warm-up included: one may have earned without the generator
    /// knowing, so the check names them.
    failures: AtomicUsize,
}

impl Ledger {
    /// How many members earn.
    pub(super) fn member_count(&self) -> usize {
        self.members.len()
    }

    fn member(&self, spread: Spread, pick: u64) -> usize {
        let n = self.members.len();
        let hot = (n / 100).max(1);
        match spread {
            Spread::Hot if pick & 1 == 0 => ((pick >> 1) % hot as u64) as usize,
            Spread::Uniform | Spread::Hot => ((pick >> 1) % n as u64) as usize,
        }
    }
}

/// The ledger entry a PointsEarned reports.
pub fn earned_entry(payload: &[u8]) -> anyhow::Result<Option<String>> {
    let earned = pb::PointsEarned::decode(payload).context("a PointsEarned does not decode")?;
    Ok(earned.ledger_entry.map(|entry| entry.ledger_entry_id))
}

/// Follows loyalty's PointsEarned into `deliveries`.
pub async fn follow_earns(
    channel: Channel,
    deliveries: Arc<Deliveries>,
) -> anyhow::Result<delivery::Follower> {
    delivery::follow(
        channel,
        pb::PointsEarned::full_name(),
        earned_entry,
        deliveries,
    )
    .await
}

fn earn_request(ledger: &Ledger, earned: &Earned) -> pb::EarnPointsRequest {
    pb::EarnPointsRequest {
        request_id: earned.request_id.clone(),
        member: Some(pb::MemberRef {
            key: Some(pb::member_ref::Key::MemberId(
                ledger.members[earned.member].clone(),
            )),
        }),
        source: Some(pb::earn_points_request::Source::Grant(pb::PointsGrant {
            points: earned.points,
            qualifying: false,
            expire_time: None,
        })),
        reason: "Benchmark".to_owned(),
        ..Default::default()
    }
}

/// One EarnPoints: new, or (one in [`REPLAY_EVERY`]) a replay of an earlier success. A new
/// earn's answer is reported to `delays` when given.
pub(super) fn make_call(
    ledger: &Arc<Ledger>,
    spread: Spread,
    delays: Option<Arc<Deliveries>>,
) -> MakeCall {
    let ledger = ledger.clone();
    Arc::new(move |channel: Channel, pick| {
        let ledger = ledger.clone();
        let delays = delays.clone();
        let slot = ((pick >> 48) as usize) % RECENT_SLOTS;
        let replay = if (pick >> 32) % REPLAY_EVERY == 0 {
            ledger.recent[slot]
                .lock()
                .ok()
                .and_then(|recent| recent.clone())
        } else {
            None
        };
        Box::pin(async move {
            let is_replay = replay.is_some();
            let earn = replay.unwrap_or_else(|| Earned {
                request_id: uuid::Uuid::now_v7().to_string(),
                member: ledger.member(spread, pick),
                points: 1 + ((pick >> 40) % 100) as i64,
            });
            let answered = LoyaltyServiceClient::new(channel)
                .earn_points(earn_request(&ledger, &earn))
                .await;
            let answer = match answered {
                Ok(answer) => answer.into_inner(),
                Err(status) => {
                    ledger.failures.fetch_add(1, Ordering::Relaxed);
                    return Err(status);
                }
            };
            if let (Some(delays), Some(entry), false) = (&delays, answer.ledger_entry, is_replay) {
                delays.answered(entry.ledger_entry_id);
            }
            if is_replay {
                ledger.replays.fetch_add(1, Ordering::Relaxed);
            } else {
                ledger.earned[earn.member].fetch_add(earn.points, Ordering::Relaxed);
                if let Ok(mut recent) = ledger.recent[slot].lock() {
                    *recent = Some(earn);
                }
            }
            Ok(())
        })
    })
}

/// Runs the selected rows of this group.
pub async fn run(harness: &Harness, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let wants = |name: &str| harness.selection.wants(name);
    if !harness.selection.wants_any(&row_names()) {
        return Ok(());
    }
    let scale = &harness.scale;
    let window = Window {
        warmup: scale.warmup,
        measure: scale.window,
    };
    // pgbench alone on the machine, in a database of its own on the same server: just before
    // the uniform window and again just after it (`Pgbench::bracketing`).
    let pgbench_before = if wants("loyalty.earn") {
        let tables = PgbenchTables::create(harness).await?;
        let before = tables.run(harness).await?;
        Some((tables, before))
    } else {
        None
    };

    let db = BenchDatabase::create(&harness.admin_database_url, "loyalty").await?;
    let env = service_env(db.url(), harness.redis_url.as_deref());
    let serve = ["bench-serve".to_owned(), "loyalty".to_owned()];
    let child = Child::start("loyalty", &serve, &env, &harness.log_dir).await?;
    let conns = Connections::open(child.addr(), scale.connections).await?;
    let ledger = Arc::new(setup(&conns, scale).await?);
    let concurrency = scale.earn_concurrency;

    let delays = Arc::new(Deliveries::default());
    let subscriber = follow_earns(conns.pick(), delays.clone()).await?;
    let uniform_call = make_call(&ledger, Spread::Uniform, Some(delays.clone()));
    let uniform_cpu = CpuTicks::over_window(window, Some(child.pid()));
    let mut uniform = load::closed_loop(&conns, concurrency, window, &uniform_call).await?;
    uniform.expect_clean("loyalty.earn (uniform)")?;
    let uniform_cpu = uniform_cpu.await.ok().flatten();
    let pgbench = match pgbench_before {
        Some((tables, before)) => Some(Pgbench::bracketing(before, tables.run(harness).await?)),
        None => None,
    };
    let mut loaded_delays = delivery::finish(vec![subscriber], &delays, "loyalty.earn").await?;
    let common = json!({
        "concurrency": concurrency,
        "connections": conns.len(),
        "members": ledger.members.len(),
        "earn": "EarnPoints grant of 1-100 points, fresh request id; 1 call in 50 replays an earlier request (must not earn again)",
        "warmup_s": scale.warmup.as_secs_f64(),
        "window_s": scale.window.as_secs_f64(),
        "auth": "disabled (as custops dev)",
    });
    if let Some(pgbench) = &pgbench {
        let mut params = common.clone();
        if let Some(params) = params.as_object_mut() {
            params.insert("spread".to_owned(), json!("uniform"));
            params.insert("calls".to_owned(), json!(uniform.ok.len()));
            params.insert("baseline".to_owned(), pgbench.describe());
            params.insert(
                "cpu".to_owned(),
                cpu_spent(uniform_cpu, uniform.ok.len(), pgbench.busy_ticks_per_tx),
            );
        }
        let row = Row::new("loyalty.earn", "calls/s", uniform.ok_per_sec(), pgbench.tps)
            .ratio_at_least(0.7)
            .latency(uniform.ok.quantile_ms(0.5), uniform.ok.quantile_ms(0.99))
            .params(params);
        finished(rows, row);
    }
    if wants("loyalty.earn_hot") {
        let hot_call = make_call(&ledger, Spread::Hot, None);
        let mut hot = load::closed_loop(&conns, concurrency, window, &hot_call).await?;
        hot.expect_clean("loyalty.earn_hot")?;
        let mut params = common.clone();
        if let Some(params) = params.as_object_mut() {
            params.insert(
                "spread".to_owned(),
                json!("half of the earns to 1 % of the members, the rest uniform"),
            );
            params.insert("calls".to_owned(), json!(hot.ok.len()));
            params.insert(
                "baseline".to_owned(),
                json!("loyalty.earn's uniform spread, measured just before"),
            );
        }
        let row = Row::new(
            "loyalty.earn_hot",
            "calls/s",
            hot.ok_per_sec(),
            uniform.ok_per_sec(),
        )
        .ratio_at_least(0.5)
        .latency(hot.ok.quantile_ms(0.5), hot.ok.quantile_ms(0.99))
        .params(params);
        finished(rows, row);
    }
    if wants("loyalty.feed_delay") {
        let row = feed_delay_row(&conns, &ledger, &mut loaded_delays, uniform.ok_per_sec()).await?;
        finished(rows, row);
    }
    drop(conns);
    child.stop().await?;
    verify(&db, &ledger).await
}

/// `loyalty.feed_delay`: the uniform row's delays (`loaded`, at `rate` earns/s) against those
/// of [`IDLE_EARNS`] earns sent one at a time.
async fn feed_delay_row(
    conns: &Arc<Connections>,
    ledger: &Arc<Ledger>,
    loaded: &mut Samples,
    rate: f64,
) -> anyhow::Result<Row> {
    let delays = Arc::new(Deliveries::default());
    let subscriber = follow_earns(conns.pick(), delays.clone()).await?;
    for i in 0..IDLE_EARNS {
        let earn = Earned {
            request_id: uuid::Uuid::now_v7().to_string(),
            member: (i * 7919) % ledger.members.len(),
            points: 1 + (i % 100) as i64,
        };
        let answer = LoyaltyServiceClient::new(conns.pick())
            .earn_points(earn_request(ledger, &earn))
            .await
            .context("an EarnPoints sent alone failed")?
            .into_inner();
        ledger.earned[earn.member].fetch_add(earn.points, Ordering::Relaxed);
        if let Some(entry) = answer.ledger_entry {
            delays.answered(entry.ledger_entry_id);
        }
    }
    let mut idle = delivery::finish(vec![subscriber], &delays, "loyalty.feed_delay (idle)").await?;
    Ok(delivery::delay_row(
        "loyalty.feed_delay",
        loaded,
        &mut idle,
        json!({
            "custops": "from an EarnPoints answer to its PointsEarned at a subscriber of loyalty's feed (zero when the event came first), every earn of loyalty.earn's uniform run (warm-up included)",
            "earns_per_s": rate,
            "baseline": format!("the same for {IDLE_EARNS} earns sent one at a time"),
            "checked": "every earn answered reached the subscriber once",
        }),
    ))
}

/// A program and `scale.members` members enrolled through the API, 16 at a time.
pub(super) async fn setup(conns: &Arc<Connections>, scale: &Scale) -> anyhow::Result<Ledger> {
    let mut client = LoyaltyServiceClient::new(conns.pick());
    let program = client
        .create_program(pb::CreateProgramRequest {
            request_id: uuid::Uuid::now_v7().to_string(),
            program: Some(program()),
        })
        .await
        .context("Failed to create the loyalty program")?
        .into_inner()
        .program
        .context("CreateProgram answered no program")?
        .program_id;
    let count = scale.members;
    let next = Arc::new(AtomicUsize::new(0));
    let enrolled = Arc::new(Mutex::new(vec![String::new(); count]));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (conns, next, enrolled, program) = (
            conns.clone(),
            next.clone(),
            enrolled.clone(),
            program.clone(),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                let member = LoyaltyServiceClient::new(conns.pick())
                    .enrol_member(pb::EnrolMemberRequest {
                        request_id: uuid::Uuid::now_v7().to_string(),
                        program_id: program.clone(),
                        customer_id: uuid::Uuid::now_v7().to_string(),
                        enrol_channel: "app".to_owned(),
                    })
                    .await
                    .context("Failed to enrol a member")?
                    .into_inner()
                    .member
                    .context("EnrolMember answered no member")?;
                if let Ok(mut enrolled) = enrolled.lock() {
                    enrolled[i] = member.member_id;
                }
            }
        });
    }
    while let Some(worker) = workers.join_next().await {
        worker.context("an enrolling worker panicked")??;
    }
    let members = std::mem::take(
        &mut *enrolled
            .lock()
            .map_err(|_| anyhow::anyhow!("an enrolling worker panicked"))?,
    );
    Ok(Ledger {
        earned: members.iter().map(|_| AtomicI64::new(0)).collect(),
        members,
        recent: (0..RECENT_SLOTS).map(|_| Mutex::new(None)).collect(),
        replays: AtomicUsize::new(0),
        failures: AtomicUsize::new(0),
    })
}

/// A plain program: CNY, one point per yuan, one tier, points that never expire.
fn program() -> pb::Program {
    pb::Program {
        display_name: "Benchmark Rewards".to_owned(),
        currency: "CNY".to_owned(),
        earning_rules: Some(pb::EarningRules {
            base_rate: Some(pb::EarnRate {
                points: 1,
                per_amount_minor: 100,
            }),
            rounding_mode: pb::RoundingMode::Down as i32,
            ..Default::default()
        }),
        expiry_policy: Some(pb::ExpiryPolicy {
            expire_after_days: 0,
        }),
        clawback_policy: pb::ClawbackPolicy::WithinBalance as i32,
        tiers: vec![pb::Tier {
            tier_code: "member".to_owned(),
            display_name: "Member".to_owned(),
            ..Default::default()
        }],
        tier_policy: Some(pb::TierPolicy {
            qualifying_window_days: 365,
            review_schedule: pb::TierReviewSchedule::Anniversary as i32,
            review_period_months: 12,
            grace_period_days: 30,
            downgrade_mode: pb::TierDowngradeMode::ToQualifiedTier as i32,
        }),
        ..Default::default()
    }
}

/// Every member's balance (available + pending) equals the sum of its ledger entries, the
/// points its lots still hold (the benchmark's earns never expire and nothing is spent, so
/// every point earned stays in its lot) and what the generator saw it earn; fails naming the
/// first members that differ.
pub(super) async fn verify(db: &BenchDatabase, ledger: &Ledger) -> anyhow::Result<()> {
    let mut connection = sqlx::PgConnection::connect(db.url())
        .await
        .context("Failed to connect to the loyalty benchmark database")?;
    let held: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        // Each table summed once and joined: a subquery per member scanned the lots (indexed
        // only where points remain) once per member, seconds at 10,000 members.
        "SELECT b.member_id::text, (b.available_points + b.pending_points)::bigint, \
           coalesce(e.points, 0)::bigint, coalesce(l.points, 0)::bigint \
         FROM loyalty.balances b \
         LEFT JOIN (SELECT member_id, sum(available_delta + pending_delta) AS points \
                    FROM loyalty.ledger_entries GROUP BY member_id) e USING (member_id) \
         LEFT JOIN (SELECT member_id, sum(remaining_points) AS points \
                    FROM loyalty.point_lots GROUP BY member_id) l USING (member_id)",
    )
    .fetch_all(&mut connection)
    .await
    .context("Failed to read the balances, ledgers and lots")?;
    connection.close().await.ok();
    let held: HashMap<String, Held> = held
        .into_iter()
        .map(|(member, balance, ledger_sum, lots)| {
            (
                member,
                Held {
                    balance,
                    ledger_sum,
                    lots,
                },
            )
        })
        .collect();
    let earned: Vec<i64> = ledger
        .earned
        .iter()
        .map(|points| points.load(Ordering::Relaxed))
        .collect();
    let total: i64 = earned.iter().sum();
    let wrong = discrepancies(&ledger.members, &earned, &held);
    anyhow::ensure!(
        wrong.is_empty(),
        "the ledger does not hold what was earned ({} of {} members differ; {} replays sent, \
         {} calls failed): {}",
        wrong.len(),
        ledger.members.len(),
        ledger.replays.load(Ordering::Relaxed),
        ledger.failures.load(Ordering::Relaxed),
        wrong.iter().take(5).cloned().collect::<Vec<_>>().join("; ")
    );
    eprintln!(
        "bench: loyalty ledger checked: {} members, {total} points earned, {} replays; balances, \
         ledgers and lots hold what was earned, none lost or doubled",
        ledger.members.len(),
        ledger.replays.load(Ordering::Relaxed)
    );
    Ok(())
}

/// What the database holds for one member, in points.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    /// Available + pending.
    balance: i64,
    /// The sum of its ledger entries' deltas.
    ledger_sum: i64,
    /// What its lots still hold.
    lots: i64,
}

/// The members whose balance, ledger sum or lots differ from what they earned, described.
fn discrepancies(members: &[String], earned: &[i64], held: &HashMap<String, Held>) -> Vec<String> {
    members
        .iter()
        .zip(earned)
        .filter_map(|(member, &earned)| {
            let Held {
                balance,
                ledger_sum,
                lots,
            } = held.get(member).copied().unwrap_or_default();
            (balance != earned || ledger_sum != earned || lots != earned).then(|| {
                format!(
                    "{member}: earned {earned}, balance {balance}, ledger {ledger_sum}, lots {lots}"
                )
            })
        })
        .collect()
}

/// pgbench's tpcb-like transactions per second on the same server: one run, or the mean of
/// the runs just before and just after what it is set against ([`Pgbench::bracketing`]).
#[derive(Debug)]
pub(super) struct Pgbench {
    pub(super) tps: f64,
    /// Each run's rate, in order.
    runs: Vec<f64>,
    scale: usize,
    clients: usize,
    threads: usize,
    latency_avg_ms: Option<f64>,
    seconds: u64,
    /// The machine's busy CPU ticks per transaction over the measured run(s), when
    /// `/proc/stat` could be read.
    busy_ticks_per_tx: Option<f64>,
}

impl Pgbench {
    /// The mean of a run `before` and a run `after` the measured window: on a shared machine
    /// whose speed drifts over a minute, a baseline on both sides of the window is set against
    /// what the machine did around it, not only before it.
    pub(super) fn bracketing(before: Self, after: Self) -> Self {
        let runs: Vec<f64> = before.runs.iter().chain(&after.runs).copied().collect();
        let latency_avg_ms = before
            .latency_avg_ms
            .zip(after.latency_avg_ms)
            .map(|(a, b)| f64::midpoint(a, b));
        let busy_ticks_per_tx = before
            .busy_ticks_per_tx
            .zip(after.busy_ticks_per_tx)
            .map(|(a, b)| f64::midpoint(a, b));
        Self {
            tps: runs.iter().sum::<f64>() / runs.len().max(1) as f64,
            runs,
            latency_avg_ms,
            busy_ticks_per_tx,
            ..before
        }
    }

    pub(super) fn describe(&self) -> serde_json::Value {
        json!({
            "tool": "pgbench -b tpcb-like",
            "scale": self.scale,
            "clients": self.clients,
            "threads": self.threads,
            "seconds": self.seconds,
            "latency_avg_ms": self.latency_avg_ms,
            "runs_tps": self.runs,
            "runs": if self.runs.len() > 1 {
                "the mean of a run just before and a run just after the measured window"
            } else {
                "one run, just before"
            },
            "database": "its own, on the DATABASE_URL server",
            "transport": "plaintext TCP like the services' pools (PGSSLMODE=disable)",
            "protocol": "simple, pgbench's default and the goal's definition (the services prepare their statements; pgbench -M prepared did about 30 % more tps here on 2026-12-06)",
        })
    }
}

/// pgbench's tables, in a database of their own at a scale of one branch per client
/// (pgbench's advice: fewer branches than clients measures contention on them).
pub(super) struct PgbenchTables {
    db: BenchDatabase,
    scale: usize,
    clients: usize,
    threads: usize,
}

impl PgbenchTables {
    /// Creates the database and initialises the tables.
    pub(super) async fn create(harness: &Harness) -> anyhow::Result<Self> {
        let scale = &harness.scale;
        let which = Command::new("pgbench").arg("--version").output();
        if !matches!(&which, Ok(out) if out.status.success()) {
            anyhow::bail!(
                "pgbench is not on PATH: loyalty.earn compares against it. Install the Debian \
                 package postgresql-client (make bench does, through scripts/bench-tools.sh)"
            );
        }
        let db = BenchDatabase::create(&harness.admin_database_url, "pgbench").await?;
        let clients = scale.earn_concurrency;
        let pg_scale = if scale.quick { 1 } else { clients };
        let threads = clients.min(super::cores());
        let init = vec![
            "-i".to_owned(),
            "-q".to_owned(),
            "-I".to_owned(),
            // drop, create tables, generate on the server, vacuum, primary keys
            "dtGvp".to_owned(),
            "-s".to_owned(),
            pg_scale.to_string(),
            db.url().to_owned(),
        ];
        run_pgbench(init).await.context("pgbench -i failed")?;
        Ok(Self {
            db,
            scale: pg_scale,
            clients,
            threads,
        })
    }

    /// A warm-up, then the measured run, as long as the harness's window.
    pub(super) async fn run(&self, harness: &Harness) -> anyhow::Result<Pgbench> {
        let url = self.db.url().to_owned();
        let run = |seconds: u64| {
            vec![
                "-b".to_owned(),
                "tpcb-like".to_owned(),
                "-n".to_owned(),
                "-c".to_owned(),
                self.clients.to_string(),
                "-j".to_owned(),
                self.threads.to_string(),
                "-T".to_owned(),
                seconds.to_string(),
                url.clone(),
            ]
        };
        let warmup = harness.scale.warmup.as_secs().max(1);
        let seconds = harness.scale.window.as_secs().max(1);
        run_pgbench(run(warmup))
            .await
            .context("pgbench warm-up failed")?;
        let cpu_before = CpuTicks::now(None);
        let output = run_pgbench(run(seconds)).await.context("pgbench failed")?;
        let cpu = CpuTicks::now(None)
            .zip(cpu_before)
            .map(|(after, before)| after.since(before));
        let field = |prefix: &str| {
            output.lines().find_map(|line| {
                line.trim()
                    .strip_prefix(prefix)?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
        };
        let tps =
            field("tps = ").with_context(|| format!("no tps in pgbench's output:\n{output}"))?;
        Ok(Pgbench {
            tps,
            runs: vec![tps],
            scale: self.scale,
            clients: self.clients,
            threads: self.threads,
            latency_avg_ms: field("latency average = "),
            seconds,
            busy_ticks_per_tx: cpu.map(|cpu| cpu.machine_busy as f64 / (tps * seconds as f64)),
        })
    }
}

/// CPU spent between two moments, in clock ticks: the machine's busy and total time
/// (`/proc/stat`), the service child's and this process's (`/proc/<pid>/stat`).
#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    machine_busy: u64,
    machine_total: u64,
    service: u64,
    bench: u64,
}

impl CpuTicks {
    /// The counters now (the service's zero without one); None where `/proc` cannot be read.
    fn now(service: Option<u32>) -> Option<Self> {
        let (machine_busy, machine_total) = report::cpu_jiffies()?;
        Some(Self {
            machine_busy,
            machine_total,
            service: match service {
                Some(pid) => process_cpu_ticks(pid).ok()?,
                None => 0,
            },
            bench: process_cpu_ticks(std::process::id()).ok()?,
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            machine_busy: self.machine_busy.saturating_sub(before.machine_busy),
            machine_total: self.machine_total.saturating_sub(before.machine_total),
            service: self.service.saturating_sub(before.service),
            bench: self.bench.saturating_sub(before.bench),
        }
    }

    /// What is spent over the measured part of a closed loop started right after this call
    /// with `window` (`load::closed_loop` counts the calls that end inside it).
    fn over_window(window: Window, service: Option<u32>) -> tokio::task::JoinHandle<Option<Self>> {
        let start = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep_until(start + window.warmup).await;
            let before = Self::now(service);
            tokio::time::sleep_until(start + window.warmup + window.measure).await;
            Some(Self::now(service)?.since(before?))
        })
    }
}

/// `loyalty.earn`'s CPU: how busy the machine was over the window, the shares of the service
/// and of this process (load generator and feed subscriber; the rest is Postgres' and the
/// machine's), and the machine's busy time per earn set against its busy time per pgbench
/// transaction. On a saturated machine that last figure is about the inverse of the row's
/// ratio, and says which side a change of either moved.
fn cpu_spent(
    window: Option<CpuTicks>,
    calls: usize,
    pgbench_busy_per_tx: Option<f64>,
) -> serde_json::Value {
    let Some(cpu) = window.filter(|cpu| cpu.machine_busy > 0 && calls > 0) else {
        return json!("not measured (/proc unreadable)");
    };
    let busy = cpu.machine_busy as f64;
    let percent = |part: u64| (1000.0 * part as f64 / busy).round() / 10.0;
    let per_earn = busy / calls as f64;
    json!({
        "machine_busy_percent": (1000.0 * busy / cpu.machine_total.max(1) as f64).round() / 10.0,
        "service_percent_of_busy": percent(cpu.service),
        "bench_process_percent_of_busy": percent(cpu.bench),
        "rest_percent_of_busy": percent(cpu.machine_busy.saturating_sub(cpu.service + cpu.bench)),
        "busy_per_earn_over_busy_per_pgbench_tx": pgbench_busy_per_tx
            .filter(|per_tx| *per_tx > 0.0)
            .map(|per_tx| (100.0 * per_earn / per_tx).round() / 100.0),
        "what": "/proc/stat and /proc/<pid>/stat over the uniform window and over each measured pgbench run; the bench process is the load generator and the feed subscriber, the rest mostly Postgres",
    })
}

/// How pgbench reaches the server: over plaintext TCP, as the services' pools do (sqlx is
/// built without TLS). libpq's default, `sslmode=prefer`, negotiates TLS with a server that
/// offers it (Debian's does), and a baseline paying for encryption the services do not was a
/// third slower here: 2,350-2,520 tps against 3,230-3,320 on 2026-12-06. A URL that sets
/// `sslmode` itself still wins over this.
const PGBENCH_SSLMODE: &str = "disable";

/// Runs pgbench with `args`, returning its standard output; fails with its standard error.
async fn run_pgbench(args: Vec<String>) -> anyhow::Result<String> {
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("pgbench")
            .env("PGSSLMODE", PGBENCH_SSLMODE)
            .args(&args)
            .output()
    })
    .await
    .context("the pgbench runner panicked")?
    .context("Failed to run pgbench")?;
    anyhow::ensure!(
        output.status.success(),
        "pgbench exited with {} after {:?}: {}",
        output.status,
        started.elapsed(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_of_a_window_is_shared_out_and_set_against_pgbench() {
        let window = CpuTicks {
            machine_busy: 1_000,
            machine_total: 1_250,
            service: 300,
            bench: 100,
        };
        // 1,000 busy ticks over 500 earns: 2 per earn, against 1.25 per pgbench transaction.
        let cpu = cpu_spent(Some(window), 500, Some(1.25));
        assert_eq!(cpu["machine_busy_percent"], json!(80.0));
        assert_eq!(cpu["service_percent_of_busy"], json!(30.0));
        assert_eq!(cpu["bench_process_percent_of_busy"], json!(10.0));
        assert_eq!(cpu["rest_percent_of_busy"], json!(60.0));
        assert_eq!(cpu["busy_per_earn_over_busy_per_pgbench_tx"], json!(1.6));
        assert_eq!(
            cpu_spent(Some(window), 500, None)["busy_per_earn_over_busy_per_pgbench_tx"],
            serde_json::Value::Null
        );
        assert_eq!(
            cpu_spent(None, 500, Some(1.25)),
            json!("not measured (/proc unreadable)")
        );
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_missing_one_has_none() -> anyhow::Result<()> {
        // Spin until the kernel has counted a tick of this process's CPU.
        let start = Instant::now();
        while process_cpu_ticks(std::process::id()).unwrap_or(0) == 0
            && start.elapsed() < std::time::Duration::from_secs(5)
        {
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        assert!(process_cpu_ticks(std::process::id())? > 0);
        assert!(process_cpu_ticks(u32::MAX).is_err());
        Ok(())
    }

    #[test]
    fn a_lost_or_doubled_point_is_found() {
        let members: Vec<String> = ["a", "b", "c", "d", "e"].map(str::to_owned).to_vec();
        let earned = [10, 20, 30, 0, 5];
        let held = |balance, ledger_sum, lots| Held {
            balance,
            ledger_sum,
            lots,
        };
        let held: HashMap<String, Held> = [
            ("a".to_owned(), held(10, 10, 10)),
            // b's earn doubled in the balance, the ledger and the lots
            ("b".to_owned(), held(40, 40, 40)),
            // c's balance lost a point its ledger and lots kept
            ("c".to_owned(), held(29, 30, 30)),
            // e's lot was never written
            ("e".to_owned(), held(5, 5, 0)),
        ]
        .into();
        let wrong = discrepancies(&members, &earned, &held);
        assert_eq!(wrong.len(), 3, "{wrong:?}");
        assert!(
            wrong[0].starts_with("b: earned 20, balance 40"),
            "{wrong:?}"
        );
        assert!(
            wrong[1].starts_with("c: earned 30, balance 29, ledger 30, lots 30"),
            "{wrong:?}"
        );
        assert!(
            wrong[2].starts_with("e: earned 5, balance 5, ledger 5, lots 0"),
            "{wrong:?}"
        );
        // A member who earned nothing and has no balance row is right.
        assert!(discrepancies(&members[3..4], &earned[3..4], &held).is_empty());
    }
}
