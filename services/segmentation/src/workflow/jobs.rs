//! Recompute jobs asked for by callers: queue a segment's or everyone's recompute (or answer
//! the one already queued), and read jobs. The worker that runs them is in `jobs`.
//!
//! A queueing call with a request id replays the response stored with its key, so these
//! return the response messages (as `workflow::segments` does).

use chrono::{DateTime, Utc};
use custops_common::idempotency::{Completed, RequestKey};
use custops_contracts::custops::segmentation::v1::{
    RecomputeAllResponse, RecomputeSegmentResponse,
};
use futures_util::FutureExt;
use prost::Message;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::jobs::{self as job_store, JobFilter, JobRecord};
use crate::store::segments;
use crate::wire::jobs::job_to_proto;

/// Queues a recompute of the rule segment `segment_id` (or answers the one already queued),
/// or replays the response stored with `key`.
///
/// One job per key however many calls race: the segment's row lock makes a second call wait
/// for the first's commit, and only one call records the key (`super::respond_once`), so a
/// replay that finds the first job already running rolls back the job it queued.
pub async fn recompute_segment(
    state: &AppState,
    caller: &str,
    segment_id: Uuid,
    key: Option<RequestKey>,
) -> Result<RecomputeSegmentResponse> {
    let now = state.clock.now();
    let caller = caller.to_owned();
    super::respond_once(state, key.as_ref(), now, move |conn| {
        async move {
            let segment = segments::get_for_update(&mut *conn, segment_id)
                .await?
                .ok_or_else(|| Error::not_found("segment", segment_id))?;
            if !segment.rule_kind {
                return Err(Error::StaticNotRecomputed);
            }
            let job = match job_store::queued(&mut *conn, "segment", Some(segment_id)).await? {
                Some(job) => job,
                None => {
                    let job = JobRecord::queued(
                        "segment",
                        Some((segment_id, segment.version)),
                        "requested",
                        &caller,
                        now,
                    );
                    job_store::insert(&mut *conn, &job).await?;
                    segments::set_latest_job(&mut *conn, segment_id, job.recompute_job_id).await?;
                    job
                }
            };
            let response = RecomputeSegmentResponse {
                job: Some(job_to_proto(&job)),
            };
            Ok(Completed::response(response.encode_to_vec()))
        }
        .boxed()
    })
    .await
}

/// Queues a recompute of everything (or answers the one already queued), or replays the
/// response stored with `key`.
pub async fn recompute_all(
    state: &AppState,
    caller: &str,
    key: Option<RequestKey>,
) -> Result<RecomputeAllResponse> {
    let now = state.clock.now();
    let caller = caller.to_owned();
    super::respond_once(state, key.as_ref(), now, move |conn| {
        async move {
            // Two concurrent calls must not both queue: serialise on a transaction lock.
            job_store::lock_recompute_all(&mut *conn).await?;
            let job = match job_store::queued(&mut *conn, "all", None).await? {
                Some(job) => job,
                None => {
                    let job = JobRecord::queued("all", None, "requested", &caller, now);
                    job_store::insert(&mut *conn, &job).await?;
                    job
                }
            };
            let response = RecomputeAllResponse {
                job: Some(job_to_proto(&job)),
            };
            Ok(Completed::response(response.encode_to_vec()))
        }
        .boxed()
    })
    .await
}

/// One job (kept 30 days after it ends).
pub async fn get(state: &AppState, id: Uuid) -> Result<JobRecord> {
    job_store::get(&mut *custops_common::db::read(&state.pool).await?, id)
        .await?
        .ok_or_else(|| Error::not_found("recompute job", id))
}

/// Up to `limit` jobs matching `filter`, newest first, before the keyset `before`.
pub async fn list(
    state: &AppState,
    filter: &JobFilter,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<JobRecord>> {
    Ok(job_store::list(
        &mut *custops_common::db::read(&state.pool).await?,
        filter,
        before,
        limit,
    )
    .await?)
}
