//! Lifecycle configuration, per-customer stages and the distribution over stages.

use custops_common::auth::Caller;
use custops_common::error::Violations;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::{
    GetCustomerLifecycleRequest, GetCustomerLifecycleResponse, GetLifecycleConfigRequest,
    GetLifecycleConfigResponse, GetLifecycleDistributionRequest, GetLifecycleDistributionResponse,
    UpdateLifecycleConfigRequest, UpdateLifecycleConfigResponse,
};
use tonic::{Request, Response, Status};

use super::SegmentationApi;
use super::parse::parse_customer_id;
use super::rfm::{mask_paths, optional_segment};
use crate::domain::lifecycle::{LifecycleConfig, Stage};
use crate::error::{Error, Result};
use crate::store::lifecycle::LifecycleState;
use crate::wire::derived::{lifecycle_to_proto, stage_to_proto};
use crate::wire::timestamp;
use crate::workflow::configs;
use crate::workflow::lifecycle as workflow;

/// GetLifecycleConfig.
pub(super) async fn get_lifecycle_config(
    api: &SegmentationApi,
    _request: Request<GetLifecycleConfigRequest>,
) -> Result<Response<GetLifecycleConfigResponse>, Status> {
    let state = configs::current::<LifecycleState>(api.state()).await?;
    Ok(Response::new(GetLifecycleConfigResponse {
        lifecycle_config: Some(config_to_proto(&state)),
    }))
}

/// UpdateLifecycleConfig: applies the masked fields, validates ranges and ordering of the
/// result, and queues a lifecycle recompute when anything changed.
pub(super) async fn update_lifecycle_config(
    api: &SegmentationApi,
    request: Request<UpdateLifecycleConfigRequest>,
) -> Result<Response<UpdateLifecycleConfigResponse>, Status> {
    let requester = Caller::service_of(&request);
    let request = request.into_inner();
    let paths = mask_paths(request.update_mask.as_ref())?;
    let input = request.lifecycle_config.unwrap_or_default();
    // Validation first, as in UpdateRfmConfig: an invalid request is INVALID_ARGUMENT even
    // with a stale etag.
    let (state, job) =
        configs::update::<LifecycleState>(api.state(), &requester, &input.etag, |current| {
            merge(current, &input, &paths)
        })
        .await?;
    Ok(Response::new(UpdateLifecycleConfigResponse {
        lifecycle_config: Some(config_to_proto(&state)),
        recompute_job_id: job.map(|id| id.to_string()).unwrap_or_default(),
    }))
}

/// GetCustomerLifecycle.
pub(super) async fn get_customer_lifecycle(
    api: &SegmentationApi,
    request: Request<GetCustomerLifecycleRequest>,
) -> Result<Response<GetCustomerLifecycleResponse>, Status> {
    let customer_id = parse_customer_id("customer_id", &request.get_ref().customer_id)?;
    let stored = workflow::customer(api.state(), &customer_id).await?;
    Ok(Response::new(GetCustomerLifecycleResponse {
        lifecycle: Some(lifecycle_to_proto(&stored)),
    }))
}

/// GetLifecycleDistribution: all 7 stages, zero counts included.
pub(super) async fn get_lifecycle_distribution(
    api: &SegmentationApi,
    request: Request<GetLifecycleDistributionRequest>,
) -> Result<Response<GetLifecycleDistributionResponse>, Status> {
    let segment = optional_segment(&request.get_ref().segment_id)?;
    let rows = workflow::distribution(api.state(), segment).await?;
    let stage_counts: Vec<pb::LifecycleStageCount> = Stage::ALL
        .into_iter()
        .map(|stage| {
            let (n, risk) = rows
                .iter()
                .filter(|(slug, _, _)| slug == stage.slug())
                .fold((0, 0), |(n, r), (_, cn, cr)| (n + cn, r + cr));
            pb::LifecycleStageCount {
                stage: stage_to_proto(stage.slug()) as i32,
                customer_count: n,
                churn_risk_count: risk,
            }
        })
        .collect();
    Ok(Response::new(GetLifecycleDistributionResponse {
        customer_count: stage_counts.iter().map(|s| s.customer_count).sum(),
        churn_risk_count: stage_counts.iter().map(|s| s.churn_risk_count).sum(),
        stage_counts,
    }))
}

/// `current` with the masked fields of `input`, validated as a whole.
fn merge(
    current: &LifecycleConfig,
    input: &pb::LifecycleConfig,
    paths: &[String],
) -> Result<LifecycleConfig> {
    let mut next = *current;
    let mut v = Violations::new();
    for (i, path) in paths.iter().enumerate() {
        match path.as_str() {
            "new_window_days" => next.new_window_days = input.new_window_days,
            "active_window_days" => next.active_window_days = input.active_window_days,
            "active_min_purchases" => next.active_min_purchases = input.active_min_purchases,
            "at_risk_after_days" => next.at_risk_after_days = input.at_risk_after_days,
            "dormant_after_days" => next.dormant_after_days = input.dormant_after_days,
            "churned_after_days" => next.churned_after_days = input.churned_after_days,
            "reactivated_window_days" => {
                next.reactivated_window_days = input.reactivated_window_days
            }
            "churn_risk_gap_multiplier" => {
                next.churn_risk_gap_multiplier = input.churn_risk_gap_multiplier
            }
            _ => v.add(format!("update_mask.paths[{i}]"), "not an updatable field"),
        }
    }
    for (field, description) in next.validate() {
        v.add(format!("lifecycle_config.{field}"), description);
    }
    Error::check(v)?;
    Ok(next)
}

fn config_to_proto(state: &LifecycleState) -> pb::LifecycleConfig {
    let c = &state.config;
    pb::LifecycleConfig {
        new_window_days: c.new_window_days,
        active_window_days: c.active_window_days,
        active_min_purchases: c.active_min_purchases,
        at_risk_after_days: c.at_risk_after_days,
        dormant_after_days: c.dormant_after_days,
        churned_after_days: c.churned_after_days,
        reactivated_window_days: c.reactivated_window_days,
        churn_risk_gap_multiplier: c.churn_risk_gap_multiplier,
        update_time: state.update_time.map(timestamp),
        etag: state.etag.clone(),
    }
}
