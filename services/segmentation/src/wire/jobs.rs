//! Recompute jobs on the wire: the stored job as `RecomputeJob` (responses and the
//! RecomputeJobFinished event), and the column values of the wire enums.

use chrono::{DateTime, Utc};
use custops_contracts::custops::segmentation::v1 as pb;

use super::timestamp;
use crate::store::jobs::JobRecord;

/// The id of `job` as the API returns it ("" for none).
pub fn job_id_string(job: Option<&JobRecord>) -> String {
    job.map(|j| j.recompute_job_id.to_string())
        .unwrap_or_default()
}

/// A stored job on the wire.
pub fn job_to_proto(job: &JobRecord) -> pb::RecomputeJob {
    let ts = |t: Option<DateTime<Utc>>| t.map(timestamp);
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
        create_time: Some(timestamp(job.create_time)),
        start_time: ts(job.start_time),
        end_time: ts(job.end_time),
        error_message: job.error_message.clone(),
        requester: job.requester.clone(),
        prediction_as_of_time: ts(job.prediction_as_of_time),
        prediction_model_version: job.prediction_model_version,
        computed_trait_changed_count: job.computed_trait_changed_count,
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
        pb::RecomputeScope::Prediction => Some("prediction"),
        pb::RecomputeScope::ComputedTraits => Some("computed_traits"),
    }
}

fn scope_from_slug(slug: &str) -> pb::RecomputeScope {
    match slug {
        "segment" => pb::RecomputeScope::Segment,
        "rfm" => pb::RecomputeScope::Rfm,
        "lifecycle" => pb::RecomputeScope::Lifecycle,
        "all" => pb::RecomputeScope::All,
        "prediction" => pb::RecomputeScope::Prediction,
        "computed_traits" => pb::RecomputeScope::ComputedTraits,
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
