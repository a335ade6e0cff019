//! Recompute jobs, the rollover pass and the scheduler, run in every replica.
//!
//! - The **worker** claims queued jobs with `FOR UPDATE SKIP LOCKED` (a running job whose
//!   heartbeat went stale is claimed again: its replica stopped). A segment is recomputed in
//!   one transaction: the rule compiled to SQL selects the new members at T into a temporary
//!   table, set-based `DELETE … RETURNING` / `INSERT … SELECT … RETURNING` apply the
//!   difference, the SegmentExited / SegmentEntered events are written from it by one
//!   `INSERT … SELECT` each, payloads encoded in SQL (`events::append_entered_from`), and the
//!   job's progress is saved in the same transaction. The segment row is locked for the
//!   transaction, so a concurrent incremental change of the same segment's count waits for it.
//! - The **scheduler** queues the full recompute (an ALL job) every
//!   `full_recompute_interval` and runs the rollover pass every `rollover_interval`; the
//!   `schedule_runs` row of each, locked with `SKIP LOCKED`, makes one replica do it.
//! - The **rollover pass** re-applies the time-dependent rule segments (reason SCHEDULE),
//!   after re-staging lifecycles (the segments on `lifecycle.*` too when stages moved).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::ChangeReason;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::derived;
use crate::events::{self, ChangeCause};
use crate::state::AppState;
use crate::store::compile::{compile, compile_grouped};
use crate::store::jobs::{self as job_store, JobRecord, SegmentResult};
use crate::store::{self, memberships, segments, settings};

/// Above this many changed customers a recompute moves the cache epoch instead of notifying
/// each customer.
const NOTIFY_EACH_MAX: usize = 1_000;

/// After a job that changed this many memberships, the planner's statistics of `memberships`
/// are refreshed at once.
const ANALYZE_AFTER_CHANGES: i64 = 10_000;

/// How the background tasks pace themselves.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// How often an idle worker looks for a queued job.
    pub poll: Duration,
    /// How often a running job's heartbeat is written.
    pub heartbeat: Duration,
    /// A running job whose heartbeat is older than this is resumed by another replica.
    pub stale_after: Duration,
    /// How often the scheduler checks whether a scheduled run is due.
    pub scheduler_tick: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            heartbeat: Duration::from_secs(5),
            stale_after: Duration::from_secs(60),
            scheduler_tick: Duration::from_secs(10),
        }
    }
}

/// Starts the worker and the scheduler; both stop with `shutdown`.
pub fn start(state: Arc<AppState>, options: WorkerOptions, shutdown: CancellationToken) {
    custops_common::telemetry::spawn(worker(state.clone(), options.clone(), shutdown.clone()));
    custops_common::telemetry::spawn(scheduler(state, options, shutdown));
}

async fn worker(state: Arc<AppState>, options: WorkerOptions, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let claimed = job_store::claim(
            &state.pool,
            state.clock.now(),
            options.stale_after.as_secs_f64(),
        )
        .await;
        match claimed {
            Ok(Some(job)) => {
                let job_id = job.recompute_job_id;
                let beat = CancellationToken::new();
                custops_common::telemetry::spawn(heartbeat(
                    state.pool.clone(),
                    job_id,
                    options.heartbeat,
                    beat.clone(),
                ));
                if let Err(error) = run_job(&state, job).await {
                    tracing::error!(%job_id, error = format!("{error:#}"), "recompute job failed");
                    if let Err(error) = fail_job(&state, job_id).await {
                        tracing::error!(%job_id, error = %error, "failed to record a failed job");
                    }
                }
                beat.cancel();
                continue;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(error = %error, "failed to claim a recompute job"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(options.poll) => {}
        }
    }
}

async fn heartbeat(pool: PgPool, job_id: Uuid, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(error) = job_store::heartbeat(&pool, job_id).await {
            tracing::warn!(%job_id, error = %error, "failed to write a job heartbeat");
        }
    }
}

/// Runs one claimed job to its end.
pub async fn run_job(state: &AppState, mut job: JobRecord) -> anyhow::Result<()> {
    let now = state.clock.now();
    let cause = ChangeCause {
        reason: ChangeReason::Recompute,
        event_id: String::new(),
        recompute_job_id: Some(job.recompute_job_id),
    };
    let targets: Vec<Uuid> = match job.scope.as_str() {
        "segment" => job.segment_id.into_iter().collect(),
        scope => {
            let mut prefixes: Vec<&str> = Vec::new();
            if matches!(scope, "rfm" | "all") {
                let mut tx = begin_long(&state.pool).await?;
                job.rfm_group_changed_count = i64::try_from(derived::run_rfm(&mut tx, now).await?)?;
                tx.commit().await?;
                prefixes.push("rfm.");
            }
            if matches!(scope, "lifecycle" | "all") {
                let mut tx = begin_long(&state.pool).await?;
                job.lifecycle_changed_count =
                    i64::try_from(derived::run_lifecycle(&mut tx, now).await?)?;
                tx.commit().await?;
                prefixes.push("lifecycle.");
            }
            let mut conn = state.pool.acquire().await?;
            segments::rule_segments(&mut conn)
                .await?
                .into_iter()
                .filter(|s| {
                    scope == "all"
                        || s.fields
                            .iter()
                            .any(|f| prefixes.iter().any(|p| f.starts_with(p)))
                })
                .map(|s| s.segment_id)
                .collect()
        }
    };
    job.segments_total = i64::try_from(targets.len())?;
    // A resumed job keeps the segments it finished.
    let finished: Vec<Uuid> = job.segment_results.iter().map(|r| r.segment_id).collect();
    // Each segment evaluates everyone known at the job's start: counted once for the job, on a
    // connection of its own beside the first segment's statements (a count of a million
    // customers takes most of a second of the other core).
    let mut counting = (!targets.is_empty()).then(|| {
        let pool = state.pool.clone();
        tokio::spawn(async move { store::facts::customer_count(&mut *pool.acquire().await?).await })
    });
    let mut known = 0;
    for segment_id in targets {
        if finished.contains(&segment_id) {
            continue;
        }
        let mut tx = begin_long(&state.pool).await?;
        memberships::lock_for_recompute(&mut tx).await?;
        let Some(segment) = segments::get_for_update(&mut tx, segment_id).await? else {
            // Deleted meanwhile: nothing to apply.
            job.segments_done += 1;
            continue;
        };
        if !segment.rule_kind {
            job.segments_done += 1;
            continue;
        }
        let started = Instant::now();
        let mut outcome = apply_segment(&mut tx, &segment, now, &cause).await?;
        if let Some(count) = counting.take() {
            known = count.await??;
        }
        outcome.customers_evaluated += known;
        segments::set_latest_job(&mut tx, segment_id, job.recompute_job_id).await?;
        job.segment_version = if job.scope == "segment" {
            segment.version
        } else {
            job.segment_version
        };
        job.customers_evaluated += outcome.customers_evaluated;
        job.entered_count += outcome.entered;
        job.exited_count += outcome.exited;
        job.segments_done += 1;
        job.segment_results.push(SegmentResult {
            segment_id,
            segment_version: segment.version,
            entered_count: outcome.entered,
            exited_count: outcome.exited,
            member_count: outcome.member_count,
            duration_millis: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        });
        job.progress_percent = progress(job.segments_done, job.segments_total);
        job_store::save(&mut tx, &job).await?;
        tx.commit().await?;
    }
    if job.entered_count + job.exited_count >= ANALYZE_AFTER_CHANGES {
        refresh_statistics(&state.pool).await;
    }
    let mut tx = begin_long(&state.pool).await?;
    job.state = "succeeded".to_owned();
    job.progress_percent = 100;
    job.end_time = Some(state.clock.now());
    job_store::save(&mut tx, &job).await?;
    events::append_job_finished(&mut tx, job_to_proto(&job)).await?;
    tx.commit().await?;
    Ok(())
}

/// Refreshes the planner's statistics of `memberships` after a recompute changed many rows. A
/// first recompute takes the table from empty to millions of rows in one transaction, and
/// until autovacuum's next analyze (a minute or more later) the statistics still say empty:
/// the feed's per-batch lookups of customers' memberships then scan the whole table (measured
/// at 1M customers: 5 s each, the statement timeout, and the feed stalled retrying). A role
/// that does not own the table gets a warning from Postgres and nothing else: autovacuum
/// remains the fallback.
async fn refresh_statistics(pool: &PgPool) {
    if let Err(error) = sqlx::query("ANALYZE memberships").execute(pool).await {
        tracing::warn!(error = %error, "could not analyze memberships after a large recompute");
    }
}

/// A transaction for set-based work over the whole customer base: the pool's statement and
/// lock timeouts (seconds, meant for API calls) are lifted to an hour for it.
async fn begin_long(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL statement_timeout = '1h'")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL lock_timeout = '1h'")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

fn progress(done: i64, total: i64) -> i32 {
    if total == 0 {
        return 100;
    }
    i32::try_from((done * 100 / total).clamp(0, 100)).unwrap_or(100)
}

/// Records a failed job with a message safe for operators.
async fn fail_job(state: &AppState, job_id: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = begin_long(&state.pool).await?;
    let Some(mut job) = job_store::get(&mut *tx, job_id).await? else {
        return Ok(());
    };
    job.state = "failed".to_owned();
    job.progress_percent = 100;
    job.end_time = Some(state.clock.now());
    job.error_message = format!(
        "the recompute failed; see the service logs for job {job_id} (trace id {})",
        custops_common::trace_context::current_traceparent()
    );
    job_store::save(&mut tx, &job).await?;
    events::append_job_finished(&mut tx, job_to_proto(&job)).await?;
    tx.commit().await
}

/// What applying one segment's rule changed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SegmentOutcome {
    pub customers_evaluated: i64,
    pub entered: i64,
    pub exited: i64,
    pub member_count: i64,
}

/// Re-applies a rule segment (the caller holds `memberships::lock_for_recompute`, then the
/// segment row) at `now` to every customer with facts, set-based, in the caller's transaction:
/// memberships, events, member count, membership version, cache notifications. Then every
/// segment that references it, directly or through others, follows for the customers whose
/// membership moved (see [`follow_dependants`]), in the same transaction: no reader ever sees
/// the segment changed and a dependant not yet. The outcome is the segment's own, with
/// `customers_evaluated` 0: the caller counts the customers once for many segments.
pub async fn apply_segment(
    tx: &mut PgConnection,
    segment: &segments::SegmentRecord,
    now: DateTime<Utc>,
    cause: &ChangeCause,
) -> anyhow::Result<SegmentOutcome> {
    let dependants = segments::dependants(&mut *tx, segment.segment_id).await?;
    let want_moved = !dependants.is_empty();
    let (outcome, moved) =
        apply_rule(tx, segment, now, cause, Candidates::Everyone, want_moved).await?;
    apply_dependants(tx, &dependants, &moved, now, cause).await?;
    Ok(outcome)
}

/// After the memberships of `root` moved for the customers `moved` (a recompute, a rollover,
/// a static upload; the caller holds `memberships::lock_for_recompute`): re-evaluates every
/// rule segment that references `root`, transitively, in dependency order, for those
/// customers only, set-based and in the caller's transaction, with the same cause. Restricting
/// to `moved` is exact: a dependant reads the facts (unchanged here) and the memberships of the
/// segments it references, which changed for nobody else. Returns what changed in dependants.
pub async fn follow_dependants(
    tx: &mut PgConnection,
    root: Uuid,
    moved: &[String],
    now: DateTime<Utc>,
    cause: &ChangeCause,
) -> anyhow::Result<SegmentOutcome> {
    if moved.is_empty() {
        return Ok(SegmentOutcome::default());
    }
    let dependants = segments::dependants(&mut *tx, root).await?;
    apply_dependants(tx, &dependants, moved, now, cause).await
}

/// [`follow_dependants`] with the dependants, in dependency order, already read.
async fn apply_dependants(
    tx: &mut PgConnection,
    dependants: &[Uuid],
    moved: &[String],
    now: DateTime<Utc>,
    cause: &ChangeCause,
) -> anyhow::Result<SegmentOutcome> {
    let mut total = SegmentOutcome::default();
    if moved.is_empty() || dependants.is_empty() {
        return Ok(total);
    }
    sqlx::raw_sql(
        "CREATE TEMP TABLE IF NOT EXISTS moved_customers (customer_id text PRIMARY KEY) \
             ON COMMIT DROP; \
         TRUNCATE moved_customers",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO moved_customers (customer_id) \
         SELECT DISTINCT c FROM unnest($1::text[]) AS c",
    )
    .bind(moved)
    .execute(&mut *tx)
    .await?;
    sqlx::query("ANALYZE moved_customers")
        .execute(&mut *tx)
        .await?;
    for &segment_id in dependants {
        let Some(segment) = segments::get_for_update(&mut *tx, segment_id).await? else {
            continue;
        };
        if !segment.rule_kind {
            continue;
        }
        let (outcome, _) = apply_rule(tx, &segment, now, cause, Candidates::Moved, false).await?;
        total.customers_evaluated += outcome.customers_evaluated;
        total.entered += outcome.entered;
        total.exited += outcome.exited;
    }
    Ok(total)
}

/// Which customers a set-based application of a rule re-evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidates {
    /// Every customer with facts: a recompute (how many, the caller counts).
    Everyone,
    /// Only the customers in the temporary table `moved_customers` (see
    /// [`follow_dependants`]); memberships of others are left alone.
    Moved,
}

/// Applies `segment`'s rule to `candidates` at `now`: the compiled SQL into a temporary table,
/// set-based `DELETE … RETURNING` / `INSERT … SELECT … RETURNING` into two more, the events
/// written from those inside Postgres (one `INSERT … SELECT` each for exits and entries), the
/// member count, cache notifications. Returns the outcome and the customers whose membership
/// moved — read back only when `want_moved` or when few enough to notify one by one, empty
/// otherwise.
async fn apply_rule(
    tx: &mut PgConnection,
    segment: &segments::SegmentRecord,
    now: DateTime<Utc>,
    cause: &ChangeCause,
    candidates: Candidates,
    want_moved: bool,
) -> anyhow::Result<(SegmentOutcome, Vec<String>)> {
    let bytes = segment
        .rule
        .as_deref()
        .context("rule segment without a rule")?;
    let condition = segments::decode_rule(bytes).context("Failed to decode a stored rule")?;
    let catalog = store::catalog::load_catalog(&mut *tx).await?;
    let rule = crate::rules_wire::parse_rule(&condition, "segment.rule", &catalog)
        .map_err(|v| anyhow::anyhow!("stored rule does not parse: {v:?}"))?;
    let ctx = store::facts::eval_context(&mut *tx, now).await?;
    // Fixed fragments only: which customers are candidates is decided here, not by input.
    // Everyone: aggregates in one grouped pass; a few moved customers: correlated.
    let (compiled, from, only_moved) = match candidates {
        Candidates::Everyone => {
            let compiled = compile_grouped(&rule);
            let from = compiled.from_clause();
            (compiled, from, "")
        }
        Candidates::Moved => (
            compile(&rule),
            "customer_facts f JOIN moved_customers c ON c.customer_id = f.customer_id".to_owned(),
            " AND m.customer_id IN (SELECT customer_id FROM moved_customers)",
        ),
    };

    create_recompute_tables(&mut *tx).await?;
    let customers_evaluated: i64 = match candidates {
        Candidates::Everyone => 0,
        Candidates::Moved => {
            let counted = format!("SELECT count(*) FROM {from}");
            sqlx::query_scalar(sqlx::AssertSqlSafe(counted))
                .fetch_one(&mut *tx)
                .await?
        }
    };
    let select = format!("SELECT f.customer_id FROM {from} WHERE {}", compiled.sql);
    // A segment without members (just created, or emptied) has nothing to compare with:
    // its members go straight from the rule into `memberships`, without staging them.
    let empty = matches!(candidates, Candidates::Everyone)
        && !sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM memberships WHERE segment_id = $1)",
        )
        .bind(segment.segment_id)
        .fetch_one(&mut *tx)
        .await?;
    let enter = (segment, now, memberships::reason_slug(cause.reason));
    let (matched, exited, entered) = if empty {
        let entered = insert_matching(&mut *tx, &compiled, &select, ctx.today, enter).await?;
        (entered, 0, entered)
    } else {
        let staged = format!("INSERT INTO recompute_members (customer_id) {select}");
        let query = sqlx::query(sqlx::AssertSqlSafe(staged))
            .bind(now)
            .bind(ctx.today);
        let matched = compiled
            .bind(query)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("ANALYZE recompute_members")
            .execute(&mut *tx)
            .await?;
        let (exited, entered) = apply_difference(&mut *tx, only_moved, enter).await?;
        (matched, exited, entered)
    };

    events::append_exited_from(
        &mut *tx,
        "recompute_exited",
        segment.segment_id,
        segment.version,
        now,
        cause,
    )
    .await?;
    events::append_entered_from(
        &mut *tx,
        "recompute_entered",
        segment.segment_id,
        segment.version,
        now,
        cause,
    )
    .await?;

    let entered_count = i64::try_from(entered)?;
    let exited_count = i64::try_from(exited)?;
    let changed_count = usize::try_from(entered + exited)?;
    // Who moved is read back only when someone needs the list: the cache notifications of a
    // few customers, or the segments that reference this one.
    let changed: Vec<String> =
        if changed_count > 0 && (changed_count <= NOTIFY_EACH_MAX || want_moved) {
            sqlx::query_scalar(
                "SELECT customer_id FROM recompute_exited \
                 UNION ALL SELECT customer_id FROM recompute_entered",
            )
            .fetch_all(&mut *tx)
            .await?
        } else {
            Vec::new()
        };
    let member_count: i64 = match candidates {
        // A recompute applied the current version to everyone: the members are those matched.
        Candidates::Everyone => {
            sqlx::query_scalar(
                "UPDATE segments SET member_count = $2, \
                 membership_version = GREATEST(membership_version, $3) \
             WHERE segment_id = $1 RETURNING member_count",
            )
            .bind(segment.segment_id)
            .bind(i64::try_from(matched)?)
            .bind(segment.version)
            .fetch_one(&mut *tx)
            .await?
        }
        // A few customers: move the count, as incremental changes do.
        Candidates::Moved => {
            sqlx::query_scalar(
                "UPDATE segments SET member_count = member_count + $2 \
             WHERE segment_id = $1 RETURNING member_count",
            )
            .bind(segment.segment_id)
            .bind(entered_count - exited_count)
            .fetch_one(&mut *tx)
            .await?
        }
    };

    if changed_count > 0 || matches!(candidates, Candidates::Everyone) {
        // Sizes first: once a lookup shows a customer's new segments, sizes already agree.
        memberships::notify_segments(&mut *tx, &[segment.segment_id]).await?;
    }
    if changed_count > NOTIFY_EACH_MAX {
        memberships::bump_epoch(&mut *tx).await?;
    } else {
        memberships::notify_customers(&mut *tx, &changed).await?;
    }
    Ok((
        SegmentOutcome {
            customers_evaluated,
            entered: entered_count,
            exited: exited_count,
            member_count,
        },
        changed,
    ))
}

/// The temporary tables of [`apply_rule`], empty: the new members (when staged), the
/// memberships that ended and those that began, from which the events are written inside
/// Postgres whatever their number.
async fn create_recompute_tables(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "CREATE TEMP TABLE IF NOT EXISTS recompute_members (customer_id text PRIMARY KEY) \
             ON COMMIT DROP; \
         CREATE TEMP TABLE IF NOT EXISTS recompute_exited \
             (customer_id text NOT NULL, enter_time timestamptz NOT NULL) ON COMMIT DROP; \
         CREATE TEMP TABLE IF NOT EXISTS recompute_entered (customer_id text NOT NULL) \
             ON COMMIT DROP; \
         TRUNCATE recompute_members, recompute_exited, recompute_entered",
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What a membership that begins records: the segment (its id and version), the instant, the
/// reason slug.
type Entry<'a> = (&'a segments::SegmentRecord, DateTime<Utc>, &'static str);

/// Inserts every customer `select` (the compiled rule: `$1` T, `$2` today, `$3…` its binds)
/// matches as a member of a segment without members, into `recompute_entered` too; returns
/// how many. No `ON CONFLICT`: the caller found the segment empty under the exclusive
/// recompute lock and the segment's row lock, so no membership of it can exist or appear
/// before commit, and a plain insert skips the speculative insertion of each row.
async fn insert_matching(
    tx: &mut PgConnection,
    compiled: &crate::store::compile::CompiledRule,
    select: &str,
    today: chrono::NaiveDate,
    (segment, now, reason): Entry<'_>,
) -> Result<u64, sqlx::Error> {
    // The segment's own values come after the rule's parameters.
    let next = 3 + compiled.binds.len();
    let (id, version, reason_param) = (next, next + 1, next + 2);
    let insert = format!(
        "WITH entered AS ( \
             INSERT INTO memberships (segment_id, customer_id, segment_version, enter_time, enter_reason) \
             SELECT ${id}, m.customer_id, ${version}, $1, ${reason_param} FROM ({select}) AS m \
             ORDER BY m.customer_id \
             RETURNING customer_id \
         ) \
         INSERT INTO recompute_entered (customer_id) SELECT customer_id FROM entered"
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(insert))
        .bind(now)
        .bind(today);
    Ok(compiled
        .bind(query)
        .bind(segment.segment_id)
        .bind(segment.version)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected())
}

/// Applies the difference between the segment's memberships (only the moved customers' when
/// `only_moved` restricts them) and the staged `recompute_members`: ends the memberships of
/// those not staged (into `recompute_exited`), begins those of the staged who are not members
/// (into `recompute_entered`). Returns (exited, entered).
async fn apply_difference(
    tx: &mut PgConnection,
    only_moved: &str,
    (segment, now, reason): Entry<'_>,
) -> Result<(u64, u64), sqlx::Error> {
    let delete = format!(
        "WITH exited AS ( \
             DELETE FROM memberships m WHERE m.segment_id = $1{only_moved} \
               AND NOT EXISTS (SELECT 1 FROM recompute_members n WHERE n.customer_id = m.customer_id) \
             RETURNING m.customer_id, m.enter_time \
         ) \
         INSERT INTO recompute_exited (customer_id, enter_time) \
         SELECT customer_id, enter_time FROM exited"
    );
    let exited = sqlx::query(sqlx::AssertSqlSafe(delete))
        .bind(segment.segment_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let entered = sqlx::query(
        "WITH entered AS ( \
             INSERT INTO memberships (segment_id, customer_id, segment_version, enter_time, enter_reason) \
             SELECT $1, n.customer_id, $2, $3, $4 FROM recompute_members n \
             ORDER BY n.customer_id \
             ON CONFLICT DO NOTHING RETURNING customer_id \
         ) \
         INSERT INTO recompute_entered (customer_id) SELECT customer_id FROM entered",
    )
    .bind(segment.segment_id)
    .bind(segment.version)
    .bind(now)
    .bind(reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok((exited, entered))
}

/// Re-applies the time-dependent rule segments at `now` (reason SCHEDULE), after re-staging
/// lifecycles; segments on `lifecycle.*` fields follow when any stage moved. Returns the
/// memberships changed.
pub async fn rollover(pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<i64> {
    let mut tx = begin_long(pool).await?;
    let staged = derived::run_lifecycle(&mut tx, now).await?;
    tx.commit().await?;
    let mut conn = pool.acquire().await?;
    let due: Vec<Uuid> = segments::rule_segments(&mut conn)
        .await?
        .into_iter()
        .filter(|s| {
            s.time_dependent || (staged > 0 && s.fields.iter().any(|f| f.starts_with("lifecycle.")))
        })
        .map(|s| s.segment_id)
        .collect();
    drop(conn);
    let cause = ChangeCause {
        reason: ChangeReason::Schedule,
        event_id: String::new(),
        recompute_job_id: None,
    };
    let mut changed = 0;
    for segment_id in due {
        let mut tx = begin_long(pool).await?;
        memberships::lock_for_recompute(&mut tx).await?;
        let Some(segment) = segments::get_for_update(&mut tx, segment_id).await? else {
            continue;
        };
        let outcome = apply_segment(&mut tx, &segment, now, &cause).await?;
        tx.commit().await?;
        changed += outcome.entered + outcome.exited;
    }
    Ok(changed)
}

async fn scheduler(state: Arc<AppState>, options: WorkerOptions, shutdown: CancellationToken) {
    // At start-up too: a deployment's first purchases should not wait a tick for their bounds.
    if let Err(error) = ensure_rfm_bounds(&state.pool, state.clock.now()).await {
        tracing::warn!(
            error = format!("{error:#}"),
            "checking the RFM bounds failed"
        );
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(options.scheduler_tick) => {}
        }
        if let Err(error) = schedule_once(&state).await {
            tracing::warn!(error = format!("{error:#}"), "scheduler tick failed");
        }
    }
}

/// Queues an RFM run (trigger SCHEDULE) when the stored quintile bounds are missing though
/// customers have purchased, or were computed over fewer than half of the customers known
/// now, and no RFM or full run is already queued or running. Returns whether it queued one.
///
/// The per-event refresh scores with the stored bounds only (`derived::refresh_customers`):
/// a customer who buys before the first run stays unscored until it has run, and a young
/// customer base, whose quintiles move fast, has them recomputed each time it doubles — a
/// total cost that stays proportional to the base, not to the events. The customers known
/// now are estimated above 100,000 (`customer_count_estimate`): this runs every tick, and a
/// doubling is seen at most one autovacuum analyze late.
pub async fn ensure_rfm_bounds(pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<bool> {
    let mut tx = pool.begin().await?;
    // One replica at a time decides.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('custops.segmentation.rfm_bounds', 0))",
    )
    .execute(&mut *tx)
    .await?;
    let rfm_state = store::rfm::load(&mut tx).await?;
    if rfm_state.config.fixed_thresholds.is_some() {
        return Ok(false);
    }
    let due = match (rfm_state.computed_thresholds, rfm_state.computed_customers) {
        (None, _) => store::rfm::any_purchase(&mut tx).await?,
        (Some(_), None) => false,
        (Some(_), Some(then)) => {
            store::facts::customer_count_estimate(&mut tx).await? >= (2 * then).max(100)
        }
    };
    if !due || job_store::active(&mut *tx, &["rfm", "all"]).await? {
        return Ok(false);
    }
    let job = JobRecord::queued("rfm", None, "schedule", "scheduler", now);
    job_store::insert(&mut tx, &job).await?;
    tx.commit().await?;
    tracing::info!(job_id = %job.recompute_job_id, "RFM bounds missing or outgrown: RFM run queued");
    Ok(true)
}

/// One scheduler tick: queues the full recompute and runs the rollover pass when due, and
/// keeps the RFM bounds current ([`ensure_rfm_bounds`]).
pub async fn schedule_once(state: &AppState) -> anyhow::Result<()> {
    let now = state.clock.now();
    ensure_rfm_bounds(&state.pool, now).await?;
    let config = settings::get(&state.pool).await?;
    let mut tx = begin_long(&state.pool).await?;
    if settings::claim_schedule(
        &mut tx,
        "full_recompute",
        now,
        config.full_recompute_interval,
    )
    .await?
        && job_store::queued(&mut *tx, "all", None).await?.is_none()
    {
        let job = JobRecord::queued("all", None, "schedule", "scheduler", now);
        job_store::insert(&mut tx, &job).await?;
    }
    job_store::purge_old(&mut *tx, now).await?;
    settings::purge_keys(&mut *tx, now).await?;
    tx.commit().await?;

    // The row lock is held while the pass runs, so only one replica runs it.
    let mut tx = begin_long(&state.pool).await?;
    if settings::claim_schedule(&mut tx, "rollover", now, config.rollover_interval).await? {
        let changed = rollover(&state.pool, now).await?;
        tracing::info!(changed, "rollover pass finished");
    }
    tx.commit().await?;
    Ok(())
}

/// The id of `job` as the API returns it ("" for none).
pub fn job_id_string(job: Option<&JobRecord>) -> String {
    job.map(|j| j.recompute_job_id.to_string())
        .unwrap_or_default()
}

/// A stored job on the wire.
pub fn job_to_proto(job: &JobRecord) -> pb::RecomputeJob {
    let ts = |t: Option<DateTime<Utc>>| t.map(events::timestamp);
    pb::RecomputeJob {
        recompute_job_id: job.recompute_job_id.to_string(),
        scope: scope_from_slug(&job.scope).into(),
        segment_id: job.segment_id.map(|s| s.to_string()).unwrap_or_default(),
        segment_version: job.segment_version,
        trigger: trigger_from_slug(&job.trigger).into(),
        state: state_from_slug(&job.state).into(),
        progress_percent: job.progress_percent,
        segments_total: job.segments_total,
        segments_done: job.segments_done,
        customers_evaluated: job.customers_evaluated,
        entered_count: job.entered_count,
        exited_count: job.exited_count,
        lifecycle_changed_count: job.lifecycle_changed_count,
        rfm_group_changed_count: job.rfm_group_changed_count,
        segment_results: job
            .segment_results
            .iter()
            .map(|r| pb::SegmentRecomputeResult {
                segment_id: r.segment_id.to_string(),
                segment_version: r.segment_version,
                entered_count: r.entered_count,
                exited_count: r.exited_count,
                member_count: r.member_count,
                duration_millis: r.duration_millis,
            })
            .collect(),
        create_time: Some(events::timestamp(job.create_time)),
        start_time: ts(job.start_time),
        end_time: ts(job.end_time),
        error_message: job.error_message.clone(),
        requester: job.requester.clone(),
    }
}

/// The `scope` column value.
pub fn scope_slug(scope: pb::RecomputeScope) -> Option<&'static str> {
    match scope {
        pb::RecomputeScope::Unspecified => None,
        pb::RecomputeScope::Segment => Some("segment"),
        pb::RecomputeScope::Rfm => Some("rfm"),
        pb::RecomputeScope::Lifecycle => Some("lifecycle"),
        pb::RecomputeScope::All => Some("all"),
    }
}

fn scope_from_slug(slug: &str) -> pb::RecomputeScope {
    match slug {
        "segment" => pb::RecomputeScope::Segment,
        "rfm" => pb::RecomputeScope::Rfm,
        "lifecycle" => pb::RecomputeScope::Lifecycle,
        "all" => pb::RecomputeScope::All,
        _ => pb::RecomputeScope::Unspecified,
    }
}

fn trigger_from_slug(slug: &str) -> pb::RecomputeTrigger {
    match slug {
        "segment_created" => pb::RecomputeTrigger::SegmentCreated,
        "rule_changed" => pb::RecomputeTrigger::RuleChanged,
        "config_changed" => pb::RecomputeTrigger::ConfigChanged,
        "requested" => pb::RecomputeTrigger::Requested,
        "schedule" => pb::RecomputeTrigger::Schedule,
        _ => pb::RecomputeTrigger::Unspecified,
    }
}

/// The `state` column value.
pub fn state_slug(state: pb::RecomputeJobState) -> Option<&'static str> {
    match state {
        pb::RecomputeJobState::Unspecified => None,
        pb::RecomputeJobState::Queued => Some("queued"),
        pb::RecomputeJobState::Running => Some("running"),
        pb::RecomputeJobState::Succeeded => Some("succeeded"),
        pb::RecomputeJobState::Failed => Some("failed"),
        pb::RecomputeJobState::Superseded => Some("superseded"),
    }
}

fn state_from_slug(slug: &str) -> pb::RecomputeJobState {
    match slug {
        "queued" => pb::RecomputeJobState::Queued,
        "running" => pb::RecomputeJobState::Running,
        "succeeded" => pb::RecomputeJobState::Succeeded,
        "failed" => pb::RecomputeJobState::Failed,
        "superseded" => pb::RecomputeJobState::Superseded,
        _ => pb::RecomputeJobState::Unspecified,
    }
}
