//! The scheduler: queues the full recompute (an ALL job) every `full_recompute_interval`, runs
//! the rollover pass every `rollover_interval` (the `schedule_runs` row of each, locked with
//! `SKIP LOCKED`, makes one replica do it), keeps the RFM bounds current, and prunes the ended
//! jobs and the request keys past `custops_common::idempotency::RETENTION`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use custops_common::idempotency;
use custops_contracts::custops::segmentation::v1::ChangeReason;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::WorkerOptions;
use crate::domain::computed::FIELD_PREFIX;
use crate::events::ChangeCause;
use crate::state::AppState;
use crate::store::jobs::{self as job_store, JobRecord};
use crate::store::{self, begin_long, memberships, segments, settings};
use crate::workflow::recompute::apply_segment;
use crate::workflow::{computed, derived};

/// Runs [`schedule_once`] every `options.scheduler_tick` until `shutdown` (and checks the RFM
/// bounds at start-up).
pub(super) async fn run(state: Arc<AppState>, options: WorkerOptions, shutdown: CancellationToken) {
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

/// Re-applies the time-dependent rule segments at `now` (reason SCHEDULE), after re-staging
/// lifecycles and re-storing the time-dependent computed traits; segments on `lifecycle.*`
/// fields follow when any stage moved, segments on a computed trait when its values moved.
/// Returns the memberships changed.
pub async fn rollover(pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<i64> {
    let mut tx = begin_long(pool).await?;
    let staged = derived::run_lifecycle(&mut tx, now).await?;
    tx.commit().await?;
    let mut tx = begin_long(pool).await?;
    let moved_traits: Vec<String> = computed::run_time_dependent(&mut tx, now)
        .await?
        .into_iter()
        .map(|name| format!("{FIELD_PREFIX}{name}"))
        .collect();
    tx.commit().await?;
    let mut conn = custops_common::db::read(pool).await?;
    let due: Vec<Uuid> = segments::rule_segments(&mut conn)
        .await?
        .into_iter()
        .filter(|s| {
            s.time_dependent
                || (staged > 0 && s.fields.iter().any(|f| f.starts_with("lifecycle.")))
                || s.fields.iter().any(|f| moved_traits.contains(f))
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

/// Queues an RFM run (trigger SCHEDULE) when the stored quintile bounds are missing though
/// customers have purchased, or were computed over fewer than half of the customers known
/// now, and no RFM or full run is already queued or running. Returns whether it queued one.
///
/// The per-event refresh scores with the stored bounds only
/// (`workflow::derived::refresh_customers`): a customer who buys before the first run stays
/// unscored until it has run, and a young customer base, whose quintiles move fast, has them
/// recomputed each time it doubles — a total cost that stays proportional to the base, not to
/// the events. The customers known
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

/// One scheduler tick: queues the full recompute and runs the rollover pass when due, keeps
/// the RFM bounds current ([`ensure_rfm_bounds`]), and prunes ended jobs and request keys
/// past their retention (every replica's tick: a delete of what another deleted deletes
/// nothing).
pub async fn schedule_once(state: &AppState) -> anyhow::Result<()> {
    let now = state.clock.now();
    ensure_rfm_bounds(&state.pool, now).await?;
    let config = settings::get(&mut *custops_common::db::read(&state.pool).await?).await?;
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
    tx.commit().await?;
    idempotency::prune(&state.pool, now, idempotency::RETENTION).await?;

    // The row lock is held while the pass runs, so only one replica runs it.
    let mut tx = begin_long(&state.pool).await?;
    if settings::claim_schedule(&mut tx, "rollover", now, config.rollover_interval).await? {
        let changed = rollover(&state.pool, now).await?;
        tracing::info!(changed, "rollover pass finished");
    }
    tx.commit().await?;
    Ok(())
}
