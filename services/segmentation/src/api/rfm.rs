//! RFM configuration, per-customer values and the distribution over groups and cells.

use custops_common::auth::Caller;
use custops_common::error::Violations;
use custops_contracts::custops::common::v1::Money;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::{
    GetCustomerRfmRequest, GetCustomerRfmResponse, GetRfmConfigRequest, GetRfmConfigResponse,
    GetRfmDistributionRequest, GetRfmDistributionResponse, UpdateRfmConfigRequest,
    UpdateRfmConfigResponse,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::SegmentationApi;
use super::parse::parse_customer_id;
use crate::domain::rfm::{self, CurrencyRate, RfmConfig, RfmGroup, RfmState, Thresholds};
use crate::error::{Error, Result};
use crate::wire::derived::{group_to_proto, rfm_to_proto};
use crate::wire::timestamp;
use crate::workflow::configs;
use crate::workflow::rfm as workflow;

/// GetRfmConfig.
pub(super) async fn get_rfm_config(
    api: &SegmentationApi,
    _request: Request<GetRfmConfigRequest>,
) -> Result<Response<GetRfmConfigResponse>, Status> {
    let state = configs::current::<RfmState>(api.state()).await?;
    Ok(Response::new(GetRfmConfigResponse {
        rfm_config: Some(config_to_proto(&state)),
    }))
}

/// UpdateRfmConfig: applies the masked fields, validates the result, and queues an RFM
/// recompute when anything changed.
pub(super) async fn update_rfm_config(
    api: &SegmentationApi,
    request: Request<UpdateRfmConfigRequest>,
) -> Result<Response<UpdateRfmConfigResponse>, Status> {
    let requester = Caller::service_of(&request);
    let request = request.into_inner();
    let paths = mask_paths(request.update_mask.as_ref())?;
    let input = request.rfm_config.unwrap_or_default();
    let (state, job) =
        configs::update::<RfmState>(api.state(), &requester, &input.etag, |current| {
            merge(current, &input, &paths)
        })
        .await?;
    Ok(Response::new(UpdateRfmConfigResponse {
        rfm_config: Some(config_to_proto(&state)),
        recompute_job_id: job.map(|id| id.to_string()).unwrap_or_default(),
    }))
}

/// GetCustomerRfm.
pub(super) async fn get_customer_rfm(
    api: &SegmentationApi,
    request: Request<GetCustomerRfmRequest>,
) -> Result<Response<GetCustomerRfmResponse>, Status> {
    let customer_id = parse_customer_id("customer_id", &request.get_ref().customer_id)?;
    let (stored, currency) = workflow::customer(api.state(), &customer_id).await?;
    Ok(Response::new(GetCustomerRfmResponse {
        rfm: Some(rfm_to_proto(&customer_id, &stored, &currency)),
    }))
}

/// GetRfmDistribution: all 11 groups and 25 cells, zero counts included.
pub(super) async fn get_rfm_distribution(
    api: &SegmentationApi,
    request: Request<GetRfmDistributionRequest>,
) -> Result<Response<GetRfmDistributionResponse>, Status> {
    let segment = optional_segment(&request.get_ref().segment_id)?;
    let (counts, state) = workflow::distribution(api.state(), segment).await?;
    let count = |r: i32, fm: i32| {
        counts
            .cells
            .iter()
            .filter(|(cr, cfm, _)| *cr == r && *cfm == fm)
            .map(|(_, _, n)| n)
            .sum::<i64>()
    };
    let mut cell_counts = Vec::new();
    for r in 1..=5 {
        for fm in 1..=5 {
            cell_counts.push(pb::RfmCellCount {
                recency_score: r,
                frequency_monetary_score: fm,
                customer_count: count(r, fm),
            });
        }
    }
    let group_counts = RfmGroup::ALL
        .into_iter()
        .map(|g| pb::RfmGroupCount {
            group: group_to_proto(g.slug()) as i32,
            customer_count: rfm::grid()
                .into_iter()
                .filter(|(_, _, slug)| *slug == g.slug())
                .map(|(r, fm, _)| count(r, fm))
                .sum(),
        })
        .collect();
    Ok(Response::new(GetRfmDistributionResponse {
        group_counts,
        cell_counts,
        scored_customer_count: counts.cells.iter().map(|(_, _, n)| n).sum(),
        unscored_customer_count: counts.unscored,
        thresholds: state
            .thresholds()
            .map(|t| thresholds_to_proto(&t, &state.config.currency)),
        compute_time: state.compute_time.map(timestamp),
    }))
}

/// The paths of a required, non-empty update mask.
pub(super) fn mask_paths(mask: Option<&prost_types::FieldMask>) -> Result<Vec<String>> {
    match mask {
        Some(mask) if !mask.paths.is_empty() => Ok(mask.paths.clone()),
        _ => Err(Error::invalid(
            "update_mask",
            "must name at least one field",
        )),
    }
}

/// The segment of an optional filter: `None` when empty (existence is the use case's check).
pub(super) fn optional_segment(segment_id: &str) -> Result<Option<Uuid>> {
    if segment_id.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(segment_id)
        .map(Some)
        .map_err(|_| Error::invalid("segment_id", "must be a UUID"))
}

/// `current` with the masked fields of `input`, validated as a whole.
fn merge(current: &RfmConfig, input: &pb::RfmConfig, paths: &[String]) -> Result<RfmConfig> {
    let mut next = current.clone();
    let mut v = Violations::new();
    for (i, path) in paths.iter().enumerate() {
        match path.as_str() {
            "window_days" => next.window_days = input.window_days,
            "currency" => next.currency = input.currency.clone(),
            "fixed_thresholds" => next.fixed_thresholds = None,
            "currency_rates" => {
                next.currency_rates = input.currency_rates.iter().map(rate_from_proto).collect()
            }
            _ => v.add(format!("update_mask.paths[{i}]"), "not an updatable field"),
        }
    }
    if let Some(t) = &input.fixed_thresholds
        && paths.iter().any(|p| p == "fixed_thresholds")
    {
        next.fixed_thresholds = thresholds(t, &next.currency, &mut v);
    }
    for (field, description) in rfm::validate(&next) {
        v.add(format!("rfm_config.{field}"), description);
    }
    Error::check(v)?;
    // Stored and returned in currency order, so the same rates in another order change nothing.
    next.currency_rates
        .sort_by(|a, b| a.currency.cmp(&b.currency));
    Ok(next)
}

/// A wire rate as it stands; `domain::rfm::validate` judges it (an unset side reads as zero
/// and is refused there, named like any other bad value).
fn rate_from_proto(rate: &pb::CurrencyRate) -> CurrencyRate {
    let amount = rate.amount.clone().unwrap_or_default();
    let value = rate.value.clone().unwrap_or_default();
    CurrencyRate {
        currency: amount.currency,
        amount_minor: amount.amount_minor,
        value_currency: value.currency,
        value_minor: value.amount_minor,
    }
}

fn rate_to_proto(rate: &CurrencyRate) -> pb::CurrencyRate {
    pb::CurrencyRate {
        amount: Some(Money {
            amount_minor: rate.amount_minor,
            currency: rate.currency.clone(),
        }),
        value: Some(Money {
            amount_minor: rate.value_minor,
            currency: rate.value_currency.clone(),
        }),
    }
}

/// Fixed thresholds from the wire: exactly 4 strictly ascending values ≥ 0 per list, monetary
/// in `currency`. Every bad list is reported, not only the first.
fn thresholds(t: &pb::RfmThresholds, currency: &str, v: &mut Violations) -> Option<Thresholds> {
    let field = "rfm_config.fixed_thresholds";
    let recency: Vec<i64> = t.recency_days.iter().map(|&d| i64::from(d)).collect();
    let monetary: Vec<i64> = t.monetary.iter().map(|m| m.amount_minor).collect();
    let mut ok = true;
    for (name, values) in [
        ("recency_days", &recency),
        ("frequency", &t.frequency),
        ("monetary", &monetary),
    ] {
        let good = values.len() == 4
            && values.windows(2).all(|w| w[0] < w[1])
            && values.iter().all(|&x| x >= 0);
        v.check(
            good,
            &format!("{field}.{name}"),
            "must hold exactly 4 strictly ascending values ≥ 0",
        );
        ok &= good;
    }
    for (i, m) in t.monetary.iter().enumerate() {
        let good = m.currency == currency;
        v.check(
            good,
            &format!("{field}.monetary[{i}].currency"),
            "must be the config's currency",
        );
        ok &= good;
    }
    if !ok {
        return None;
    }
    Some(Thresholds {
        recency_days: t.recency_days.clone().try_into().ok()?,
        frequency: t.frequency.clone().try_into().ok()?,
        monetary_minor: monetary.try_into().ok()?,
    })
}

fn thresholds_to_proto(t: &Thresholds, currency: &str) -> pb::RfmThresholds {
    pb::RfmThresholds {
        recency_days: t.recency_days.to_vec(),
        frequency: t.frequency.to_vec(),
        monetary: t
            .monetary_minor
            .iter()
            .map(|&amount_minor| Money {
                amount_minor,
                currency: currency.to_owned(),
            })
            .collect(),
    }
}

fn config_to_proto(state: &RfmState) -> pb::RfmConfig {
    pb::RfmConfig {
        window_days: state.config.window_days,
        currency: state.config.currency.clone(),
        fixed_thresholds: state
            .config
            .fixed_thresholds
            .map(|t| thresholds_to_proto(&t, &state.config.currency)),
        update_time: state.update_time.map(timestamp),
        etag: state.etag.clone(),
        currency_rates: state
            .config
            .currency_rates
            .iter()
            .map(rate_to_proto)
            .collect(),
    }
}
