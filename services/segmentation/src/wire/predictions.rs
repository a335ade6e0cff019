//! A customer's stored predictions on the wire: GetCustomerPrediction's answer and the
//! PredictedChurnRiskChanged event carry the same `CustomerPrediction`.

use custops_contracts::custops::common::v1::Money;
use custops_contracts::custops::segmentation::v1 as pb;

use super::timestamp;
use crate::store::predictions::StoredPrediction;

/// `p` on the wire, its money in `currency` (the model's).
pub fn prediction_to_proto(p: &StoredPrediction, currency: &str) -> pb::CustomerPrediction {
    let money = |amount_minor: i64| Money {
        amount_minor,
        currency: currency.to_owned(),
    };
    pb::CustomerPrediction {
        customer_id: p.customer_id.clone(),
        model_version: p.model_version,
        as_of_time: Some(timestamp(p.as_of_time)),
        repeat_transactions: p.repeat_transactions,
        recency_weeks: p.recency_weeks,
        age_weeks: p.age_weeks,
        probability_alive: p.probability_alive,
        expected_purchases_90d: p.expected_purchases_90d,
        expected_transaction_value: Some(money(p.expected_value_minor)),
        clv: Some(money(p.clv_minor)),
        churn_risk: p.churn_risk,
    }
}
