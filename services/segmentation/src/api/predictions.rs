//! Predicted value and churn: the config, fit requests, models and one customer's predictions.

use custops_common::auth::Caller;
use custops_common::error::Violations;
use custops_contracts::custops::common::v1::Money;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::{
    FitPredictionModelRequest, FitPredictionModelResponse, GetCustomerPredictionRequest,
    GetCustomerPredictionResponse, GetPredictionConfigRequest, GetPredictionConfigResponse,
    GetPredictionDistributionRequest, GetPredictionDistributionResponse, GetPredictionModelRequest,
    GetPredictionModelResponse, UpdatePredictionConfigRequest, UpdatePredictionConfigResponse,
};
use tonic::{Request, Response, Status};

use super::SegmentationApi;
use super::jobs::{check_request_id, key};
use super::parse::parse_customer_id;
use super::rfm::{mask_paths, optional_segment};
use crate::domain::prediction_config::PredictionConfig;
use crate::error::{Error, Result};
use crate::store::predictions::{PredictionState, StoredModel};
use crate::wire::predictions::prediction_to_proto;
use crate::wire::{from_timestamp, timestamp};
use crate::workflow::configs;
use crate::workflow::predictions as workflow;

/// GetPredictionConfig.
pub(super) async fn get_prediction_config(
    api: &SegmentationApi,
    _request: Request<GetPredictionConfigRequest>,
) -> Result<Response<GetPredictionConfigResponse>, Status> {
    let state = configs::current::<PredictionState>(api.state()).await?;
    Ok(Response::new(GetPredictionConfigResponse {
        prediction_config: Some(config_to_proto(&state)),
    }))
}

/// UpdatePredictionConfig: applies the masked fields, validates the result, and queues a
/// PREDICTION job when anything changed.
pub(super) async fn update_prediction_config(
    api: &SegmentationApi,
    request: Request<UpdatePredictionConfigRequest>,
) -> Result<Response<UpdatePredictionConfigResponse>, Status> {
    let requester = Caller::service_of(&request);
    let request = request.into_inner();
    let paths = mask_paths(request.update_mask.as_ref())?;
    let input = request.prediction_config.unwrap_or_default();
    let (state, job) =
        configs::update::<PredictionState>(api.state(), &requester, &input.etag, |current| {
            merge(current, &input, &paths)
        })
        .await?;
    Ok(Response::new(UpdatePredictionConfigResponse {
        prediction_config: Some(config_to_proto(&state)),
        recompute_job_id: job.map(|id| id.to_string()).unwrap_or_default(),
    }))
}

/// FitPredictionModel.
pub(super) async fn fit_prediction_model(
    api: &SegmentationApi,
    request: Request<FitPredictionModelRequest>,
) -> Result<Response<FitPredictionModelResponse>, Status> {
    let caller = Caller::service_of(&request);
    let request = request.into_inner();
    let mut v = Violations::new();
    let as_of = match &request.as_of_time {
        None => None,
        Some(t) => {
            let parsed = from_timestamp(Some(t));
            if parsed.is_none() {
                v.add("as_of_time", "must be a valid timestamp");
            }
            parsed
        }
    };
    if let Err(error) = check_request_id(&request.request_id) {
        v.add("request_id", error.to_string());
    }
    Error::check(v)?;
    let key = key(&caller, &request.request_id, "FitPredictionModel", &request);
    let response = workflow::fit(api.state(), &caller, as_of, key).await?;
    Ok(Response::new(response))
}

/// GetPredictionModel.
pub(super) async fn get_prediction_model(
    api: &SegmentationApi,
    request: Request<GetPredictionModelRequest>,
) -> Result<Response<GetPredictionModelResponse>, Status> {
    let version = match request.get_ref().version {
        0 => None,
        v if v < 0 => {
            return Err(Error::invalid("version", "must be 0 (the current model) or above").into());
        }
        v => Some(v),
    };
    let model = workflow::model(api.state(), version).await?;
    Ok(Response::new(GetPredictionModelResponse {
        model: Some(model_to_proto(&model)),
    }))
}

/// GetPredictionDistribution.
pub(super) async fn get_prediction_distribution(
    api: &SegmentationApi,
    request: Request<GetPredictionDistributionRequest>,
) -> Result<Response<GetPredictionDistributionResponse>, Status> {
    let segment = optional_segment(&request.get_ref().segment_id)?;
    let (spread, model) = workflow::distribution(api.state(), segment).await?;
    let money = |amount_minor: i64| Money {
        amount_minor,
        currency: model.currency.clone(),
    };
    Ok(Response::new(GetPredictionDistributionResponse {
        model_version: model.version,
        customer_count: spread.customers,
        churn_risk_count: spread.churn_risk,
        clv_deciles: spread.clv_deciles.iter().map(|&v| money(v)).collect(),
        probability_alive_deciles: spread.probability_alive_deciles,
        mean_clv: Some(money(spread.mean_clv)),
    }))
}

/// GetCustomerPrediction.
pub(super) async fn get_customer_prediction(
    api: &SegmentationApi,
    request: Request<GetCustomerPredictionRequest>,
) -> Result<Response<GetCustomerPredictionResponse>, Status> {
    let customer_id = parse_customer_id("customer_id", &request.get_ref().customer_id)?;
    let (stored, currency) = workflow::customer(api.state(), &customer_id).await?;
    Ok(Response::new(GetCustomerPredictionResponse {
        prediction: Some(prediction_to_proto(&stored, &currency)),
    }))
}

fn config_to_proto(state: &PredictionState) -> pb::PredictionConfig {
    let c = &state.config;
    pb::PredictionConfig {
        horizon_months: c.horizon_months,
        monthly_discount_rate: c.monthly_discount_rate,
        churn_threshold: c.churn_threshold,
        min_customers: c.min_customers,
        min_repeat_customers: c.min_repeat_customers,
        update_time: state.update_time.map(timestamp),
        etag: state.etag.clone(),
    }
}

/// `current` with the masked fields of `input`, validated as a whole.
fn merge(
    current: &PredictionConfig,
    input: &pb::PredictionConfig,
    paths: &[String],
) -> Result<PredictionConfig> {
    let mut next = *current;
    let mut v = Violations::new();
    for (i, path) in paths.iter().enumerate() {
        match path.as_str() {
            "horizon_months" => next.horizon_months = input.horizon_months,
            "monthly_discount_rate" => next.monthly_discount_rate = input.monthly_discount_rate,
            "churn_threshold" => next.churn_threshold = input.churn_threshold,
            "min_customers" => next.min_customers = input.min_customers,
            "min_repeat_customers" => next.min_repeat_customers = input.min_repeat_customers,
            _ => v.add(format!("update_mask.paths[{i}]"), "not an updatable field"),
        }
    }
    for (field, description) in next.validate() {
        v.add(format!("prediction_config.{field}"), description);
    }
    Error::check(v)?;
    Ok(next)
}

fn model_to_proto(m: &StoredModel) -> pb::PredictionModel {
    pb::PredictionModel {
        version: m.version,
        as_of_time: Some(timestamp(m.as_of_time)),
        currency: m.currency.clone(),
        customer_count: m.customer_count,
        repeat_customer_count: m.repeat_customer_count,
        bg_nbd: Some(pb::BgNbdParameters {
            r: m.bg_nbd.r,
            alpha: m.bg_nbd.alpha,
            a: m.bg_nbd.a,
            b: m.bg_nbd.b,
            log_likelihood: m.bg_log_likelihood,
            converged: m.bg_converged,
            iterations: m.bg_iterations,
        }),
        gamma_gamma: Some(pb::GammaGammaParameters {
            p: m.gamma_gamma.p,
            q: m.gamma_gamma.q,
            gamma: m.gamma_gamma.gamma,
            log_likelihood: m.gg_log_likelihood,
            converged: m.gg_converged,
            iterations: m.gg_iterations,
        }),
        fit_time: Some(timestamp(m.fit_time)),
        fit_duration: Some(prost_types::Duration {
            seconds: m.fit_millis / 1000,
            nanos: i32::try_from((m.fit_millis % 1000) * 1_000_000).unwrap_or(0),
        }),
        recompute_job_id: m.recompute_job_id.to_string(),
    }
}
