//! The recompute worker: claims queued jobs with `FOR UPDATE SKIP LOCKED` (a running job
//! whose heartbeat went stale is claimed again: its replica stopped), keeps a heartbeat while
//! one runs, and runs it segment by segment (`workflow::recompute`), saving its progress with
//! each segment.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use custops_common::db::retry_lost_races;
use custops_common::metrics::{self, Counter, Histogram, KeyValue};
use custops_contracts::custops::segmentation::v1::ChangeReason;
use futures_util::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::WorkerOptions;
use crate::domain::computed::FIELD_PREFIX;
use crate::domain::predict::PredictError;
use crate::events::{self, ChangeCause};
use crate::state::AppState;
use crate::store::jobs::{self as job_store, JobRecord, SegmentResult};
use crate::store::{self, begin_long, memberships, segments};
use crate::wire::jobs::job_to_proto;
use crate::workflow::recompute::apply_segment;
use crate::workflow::{computed, derived, predictions};

/// How many times a bulk step of a job is tried when it keeps losing races.
const BULK_ATTEMPTS: usize = 3;

/// After a job that changed this many memberships, the planner's statistics of `memberships`
/// are refreshed at once.
const ANALYZE_AFTER_CHANGES: i64 = 10_000;

/// How long each job took, by scope and outcome (`custops_common::metrics`).
static RECOMPUTE_DURATION: LazyLock<Histogram<f64>> =
    LazyLock::new(|| metrics::SEGMENT_RECOMPUTE_DURATION.histogram());
/// Memberships each job changed, counted as each segment's changes commit.
static RECOMPUTE_CHANGES: LazyLock<Counter<u64>> =
    LazyLock::new(|| metrics::SEGMENT_RECOMPUTE_CHANGES.counter());

/// Claims and runs queued jobs until `shutdown`, looking for one every `options.poll` when idle.
pub(super) async fn run(state: Arc<AppState>, options: WorkerOptions, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let claimed = claim(&state, &options).await;
        match claimed {
            Ok(Some(job)) => {
                let job_id = job.recompute_job_id;
                let scope = job.scope.clone();
                let started = Instant::now();
                let beat = CancellationToken::new();
                custops_common::telemetry::spawn(heartbeat(
                    state.pool.clone(),
                    job_id,
                    options.heartbeat,
                    beat.clone(),
                ));
                let outcome = match run_job(&state, job).await {
                    Ok(()) => "succeeded",
                    Err(error) => {
                        tracing::error!(%job_id, error = format!("{error:#}"), "recompute job failed");
                        // A fit the data cannot support says why, in words for the marketer.
                        let refusal = error
                            .downcast_ref::<PredictError>()
                            .map(ToString::to_string);
                        if let Err(error) = fail_job(&state, job_id, refusal).await {
                            tracing::error!(%job_id, error = %error, "failed to record a failed job");
                        }
                        "failed"
                    }
                };
                RECOMPUTE_DURATION.record(
                    started.elapsed().as_secs_f64(),
                    &[
                        KeyValue::new("custops.recompute.kind", scope),
                        KeyValue::new("custops.recompute.outcome", outcome),
                    ],
                );
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
        let beat = async {
            let mut tx = pool.begin().await?;
            job_store::heartbeat(&mut *tx, job_id).await?;
            tx.commit().await
        };
        if let Err(error) = beat.await {
            tracing::warn!(%job_id, error = %error, "failed to write a job heartbeat");
        }
    }
}

/// Claims the next queued job (or a running one whose heartbeat went stale), if any.
async fn claim(
    state: &AppState,
    options: &WorkerOptions,
) -> Result<Option<JobRecord>, sqlx::Error> {
    let mut tx = state.pool.begin().await?;
    let claimed = job_store::claim(
        &mut *tx,
        state.clock.now(),
        options.stale_after.as_secs_f64(),
    )
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// Runs one claimed job to its end.
pub async fn run_job(state: &AppState, mut job: JobRecord) -> anyhow::Result<()> {
    let now = state.clock.now();
    let cause = ChangeCause {
        reason: ChangeReason::Recompute,
        event_id: String::new(),
        recompute_job_id: Some(job.recompute_job_id),
    };
    let scope = job.scope.clone();
    let targets: Vec<Uuid> = match scope.as_str() {
        "segment" => job.segment_id.into_iter().collect(),
        scope => {
            let mut prefixes: Vec<&str> = Vec::new();
            if scope == "prediction" {
                // A new model moves everyone's predictions: then the segments reading them.
                predictions::run_fit(state, &mut job).await?;
                prefixes.push("predicted.");
            }
            if matches!(scope, "rfm" | "all") {
                job.rfm_group_changed_count =
                    bulk_step(state, |tx| Box::pin(derived::run_rfm(tx, now))).await?;
                prefixes.push("rfm.");
            }
            if matches!(scope, "lifecycle" | "all") {
                job.lifecycle_changed_count =
                    bulk_step(state, |tx| Box::pin(derived::run_lifecycle(tx, now))).await?;
                prefixes.push("lifecycle.");
            }
            if matches!(scope, "computed_traits" | "all") {
                job.computed_trait_changed_count =
                    bulk_step(state, |tx| Box::pin(computed::run_all(tx, now))).await?;
                prefixes.push(FIELD_PREFIX);
            }
            let mut conn = custops_common::db::read(&state.pool).await?;
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
        tokio::spawn(async move {
            store::facts::customer_count(&mut *custops_common::db::read(&pool).await?).await
        })
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
        for (change, count) in [("entered", outcome.entered), ("exited", outcome.exited)] {
            RECOMPUTE_CHANGES.add(
                u64::try_from(count).unwrap_or(0),
                &[
                    KeyValue::new("custops.recompute.kind", job.scope.clone()),
                    KeyValue::new("custops.membership.change", change),
                ],
            );
        }
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
    if job.scope == "all" && job.trigger == "schedule" {
        // The scheduled full recompute is followed by a refit of the prediction models on the
        // day's purchases (a base too small to fit fails that job, saying why).
        let refit = JobRecord::queued("prediction", None, "schedule", "scheduler", now);
        job_store::insert(&mut tx, &refit).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Runs one bulk step of a job (`step` updates everyone's facts in one statement and answers
/// how many changed) in a transaction of its own, and answers its count. Such a statement
/// locks rows in no set order, so it can deadlock with another (the scheduler's rollover
/// updates lifecycles in its own): Postgres rolls one back, and the step runs again, up to
/// [`BULK_ATTEMPTS`] tries (`db::retry_lost_races`).
async fn bulk_step<S>(state: &AppState, step: S) -> anyhow::Result<i64>
where
    S: for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, anyhow::Result<u64>>,
{
    let step = &step;
    let changed = retry_lost_races(BULK_ATTEMPTS, || async move {
        let mut tx = begin_long(&state.pool).await?;
        let changed = step(&mut tx).await?;
        tx.commit().await?;
        anyhow::Ok(changed)
    })
    .await?;
    Ok(i64::try_from(changed)?)
}

/// Refreshes the planner's statistics of `memberships` after a recompute changed many rows. A
/// first recompute takes the table from empty to millions of rows in one transaction, and
/// until autovacuum's next analyze (a minute or more later) the statistics still say empty:
/// the feed's per-batch lookups of customers' memberships then scan the whole table (measured
/// at 1M customers: 5 s each, the statement timeout, and the feed stalled retrying). A role
/// that does not own the table gets a warning from Postgres and nothing else: autovacuum
/// remains the fallback.
async fn refresh_statistics(pool: &PgPool) {
    let analyzed = async {
        let mut tx = pool.begin().await?;
        sqlx::query("ANALYZE memberships").execute(&mut *tx).await?;
        tx.commit().await
    };
    if let Err(error) = analyzed.await {
        tracing::warn!(error = %error, "could not analyze memberships after a large recompute");
    }
}

fn progress(done: i64, total: i64) -> i32 {
    if total == 0 {
        return 100;
    }
    i32::try_from((done * 100 / total).clamp(0, 100)).unwrap_or(100)
}

/// Records a failed job with a message safe for operators: `refusal` when the job refused its
/// input, else a pointer to the logs.
async fn fail_job(
    state: &AppState,
    job_id: Uuid,
    refusal: Option<String>,
) -> Result<(), sqlx::Error> {
    let mut tx = begin_long(&state.pool).await?;
    let Some(mut job) = job_store::get(&mut *tx, job_id).await? else {
        return Ok(());
    };
    job.state = "failed".to_owned();
    job.progress_percent = 100;
    job.end_time = Some(state.clock.now());
    job.error_message = refusal.unwrap_or_else(|| {
        format!(
            "the recompute failed; see the service logs for job {job_id} (trace id {})",
            custops_common::trace_context::current_traceparent()
        )
    });
    job_store::save(&mut tx, &job).await?;
    events::append_job_finished(&mut tx, job_to_proto(&job)).await?;
    tx.commit().await
}
