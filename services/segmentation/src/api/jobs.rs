//! Recompute jobs (queue, read, list) and the evaluation settings.

use std::time::Duration;

use chrono::{DateTime, Utc};
use custops_common::auth::Caller;
use custops_common::error::Violations;
use custops_common::idempotency::RequestKey;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::{
    GetEvaluationSettingsRequest, GetEvaluationSettingsResponse, GetRecomputeJobRequest,
    GetRecomputeJobResponse, ListRecomputeJobsRequest, ListRecomputeJobsResponse,
    RecomputeAllRequest, RecomputeAllResponse, RecomputeSegmentRequest, RecomputeSegmentResponse,
    UpdateEvaluationSettingsRequest, UpdateEvaluationSettingsResponse,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::SegmentationApi;
use super::parse::{both, page, parse_id};
use crate::error::{Error, Result};
use crate::store::jobs::JobFilter;
use crate::store::settings::EvaluationSettings;
use crate::wire::jobs::{job_to_proto, scope_slug, state_slug};
use crate::wire::timestamp as ts;
use crate::workflow::jobs as workflow;
use crate::workflow::settings::{self as settings_workflow, SettingsChange};

pub(super) fn check_request_id(request_id: &str) -> Result<()> {
    if request_id.len() <= 128 && request_id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Error::invalid(
            "request_id",
            "must be 1-128 printable ASCII characters",
        ))
    }
}

/// The idempotency key of `request` when it carries a request id.
pub(super) fn key(
    caller: &str,
    request_id: &str,
    method: &'static str,
    request: &impl prost::Message,
) -> Option<RequestKey> {
    (!request_id.is_empty()).then(|| RequestKey::new(caller, request_id, method, request))
}

/// RecomputeSegment.
pub(super) async fn recompute_segment(
    api: &SegmentationApi,
    request: Request<RecomputeSegmentRequest>,
) -> Result<Response<RecomputeSegmentResponse>, Status> {
    let caller = Caller::service_of(&request);
    let request = request.into_inner();
    let segment_id = parse_id("segment_id", &request.segment_id)?;
    check_request_id(&request.request_id)?;
    let key = key(&caller, &request.request_id, "RecomputeSegment", &request);
    let response = workflow::recompute_segment(api.state(), &caller, segment_id, key).await?;
    Ok(Response::new(response))
}

/// RecomputeAll.
pub(super) async fn recompute_all(
    api: &SegmentationApi,
    request: Request<RecomputeAllRequest>,
) -> Result<Response<RecomputeAllResponse>, Status> {
    let caller = Caller::service_of(&request);
    let request = request.into_inner();
    check_request_id(&request.request_id)?;
    let key = key(&caller, &request.request_id, "RecomputeAll", &request);
    let response = workflow::recompute_all(api.state(), &caller, key).await?;
    Ok(Response::new(response))
}

/// GetRecomputeJob.
pub(super) async fn get_recompute_job(
    api: &SegmentationApi,
    request: Request<GetRecomputeJobRequest>,
) -> Result<Response<GetRecomputeJobResponse>, Status> {
    let request = request.into_inner();
    let id = parse_id("recompute_job_id", &request.recompute_job_id)?;
    let job = workflow::get(api.state(), id).await?;
    Ok(Response::new(GetRecomputeJobResponse {
        job: Some(job_to_proto(&job)),
    }))
}

/// ListRecomputeJobs: newest first, keyset `(create_time, recompute_job_id)`.
pub(super) async fn list_recompute_jobs(
    api: &SegmentationApi,
    request: Request<ListRecomputeJobsRequest>,
) -> Result<Response<ListRecomputeJobsResponse>, Status> {
    let request = request.into_inner();
    let state = api.state();
    let (page, filter) = both(
        page::<_, (DateTime<Utc>, Uuid)>(&state.page_tokens, &request),
        job_filter(&request),
    )?;
    let mut rows = workflow::list(state, &filter, page.after, page.limit()).await?;
    let next_page_token = page
        .finish(&mut rows, |j| (j.create_time, j.recompute_job_id))
        .map_err(Error::internal)?;
    Ok(Response::new(ListRecomputeJobsResponse {
        jobs: rows.iter().map(job_to_proto).collect(),
        next_page_token,
    }))
}

/// The filter of a ListRecomputeJobs request.
fn job_filter(request: &ListRecomputeJobsRequest) -> Result<JobFilter> {
    let mut violations = Violations::new();
    let segment_id = if request.segment_id.is_empty() {
        None
    } else {
        violations.take(
            "segment_id",
            Uuid::parse_str(&request.segment_id).map_err(|_| "not a valid UUID".to_owned()),
        )
    };
    let job_state = match pb::RecomputeJobState::try_from(request.state) {
        Ok(s) => state_slug(s),
        Err(_) => {
            violations.add("state", "unknown state");
            None
        }
    };
    let scope = match pb::RecomputeScope::try_from(request.scope) {
        Ok(s) => scope_slug(s),
        Err(_) => {
            violations.add("scope", "unknown scope");
            None
        }
    };
    Error::check(violations)?;
    Ok(JobFilter {
        segment_id,
        state: job_state.map(str::to_owned),
        scope: scope.map(str::to_owned),
    })
}

fn settings_to_proto(s: &EvaluationSettings) -> pb::EvaluationSettings {
    let duration = |d: Duration| prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    };
    pb::EvaluationSettings {
        time_zone: s.time_zone.clone(),
        full_recompute_interval: Some(duration(s.full_recompute_interval)),
        rollover_interval: Some(duration(s.rollover_interval)),
        activity_retention_days: s.activity_retention_days,
        update_time: s.update_time.map(ts),
        etag: s.etag.clone(),
    }
}

/// GetEvaluationSettings.
pub(super) async fn get_evaluation_settings(
    api: &SegmentationApi,
    _request: Request<GetEvaluationSettingsRequest>,
) -> Result<Response<GetEvaluationSettingsResponse>, Status> {
    let current = settings_workflow::get(api.state()).await?;
    Ok(Response::new(GetEvaluationSettingsResponse {
        evaluation_settings: Some(settings_to_proto(&current)),
    }))
}

/// An interval within `[min, max]`, whole seconds.
fn interval(
    violations: &mut Violations,
    field: &str,
    value: Option<&prost_types::Duration>,
    min: Duration,
    max: Duration,
) -> Option<Duration> {
    let Some(value) = value else {
        violations.add(field, "required");
        return None;
    };
    let ok = value.nanos == 0
        && u64::try_from(value.seconds).is_ok_and(|s| (min.as_secs()..=max.as_secs()).contains(&s));
    if !ok {
        violations.add(
            field,
            format!(
                "must be whole seconds between {}s and {}s",
                min.as_secs(),
                max.as_secs()
            ),
        );
        return None;
    }
    u64::try_from(value.seconds).ok().map(Duration::from_secs)
}

/// UpdateEvaluationSettings.
pub(super) async fn update_evaluation_settings(
    api: &SegmentationApi,
    request: Request<UpdateEvaluationSettingsRequest>,
) -> Result<Response<UpdateEvaluationSettingsResponse>, Status> {
    let request = request.into_inner();
    let new = request.evaluation_settings.unwrap_or_default();
    let paths: Vec<String> = request.update_mask.map(|m| m.paths).unwrap_or_default();
    let mut violations = Violations::new();
    if paths.is_empty() {
        violations.add(
            "update_mask",
            "required: any of time_zone, full_recompute_interval, rollover_interval, \
             activity_retention_days",
        );
    }
    for path in &paths {
        if !matches!(
            path.as_str(),
            "time_zone"
                | "full_recompute_interval"
                | "rollover_interval"
                | "activity_retention_days"
        ) {
            violations.add("update_mask", format!("`{path}` cannot be updated"));
        }
    }
    let has = |p: &str| paths.iter().any(|x| x == p);
    let full = has("full_recompute_interval")
        .then(|| {
            interval(
                &mut violations,
                "evaluation_settings.full_recompute_interval",
                new.full_recompute_interval.as_ref(),
                Duration::from_secs(3600),
                Duration::from_secs(7 * 24 * 3600),
            )
        })
        .flatten();
    let rollover = has("rollover_interval")
        .then(|| {
            interval(
                &mut violations,
                "evaluation_settings.rollover_interval",
                new.rollover_interval.as_ref(),
                Duration::from_secs(60),
                Duration::from_secs(3600),
            )
        })
        .flatten();
    let retention = has("activity_retention_days").then_some(new.activity_retention_days);
    if retention.is_some_and(|days| !(30..=36_500).contains(&days)) {
        violations.add(
            "evaluation_settings.activity_retention_days",
            "must be between 30 and 36500",
        );
    }
    Error::check(violations)?;
    let change = SettingsChange {
        etag: new.etag,
        time_zone: has("time_zone").then_some(new.time_zone),
        full_recompute_interval: full,
        rollover_interval: rollover,
        activity_retention_days: retention,
    };
    let updated = settings_workflow::update(api.state(), change).await?;
    Ok(Response::new(UpdateEvaluationSettingsResponse {
        evaluation_settings: Some(settings_to_proto(&updated)),
    }))
}
