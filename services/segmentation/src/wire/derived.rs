//! RFM values and lifecycle stages on the wire: API responses and the RfmGroupChanged /
//! LifecycleStageChanged / ChurnRiskChanged events carry the same messages.

use custops_contracts::custops::common::v1::Money;
use custops_contracts::custops::segmentation::v1 as pb;

use super::timestamp;
use crate::domain::lifecycle::Stage;
use crate::domain::rfm::{RfmGroup, frequency_monetary_score};
use crate::store::lifecycle::StoredLifecycle;
use crate::store::rfm::StoredRfm;

/// The wire group of a stored slug ("" → UNSPECIFIED).
pub fn group_to_proto(slug: &str) -> pb::RfmGroup {
    match RfmGroup::from_slug(slug) {
        None => pb::RfmGroup::Unspecified,
        Some(RfmGroup::Champions) => pb::RfmGroup::Champions,
        Some(RfmGroup::Loyal) => pb::RfmGroup::Loyal,
        Some(RfmGroup::PotentialLoyalist) => pb::RfmGroup::PotentialLoyalist,
        Some(RfmGroup::NewCustomers) => pb::RfmGroup::NewCustomers,
        Some(RfmGroup::Promising) => pb::RfmGroup::Promising,
        Some(RfmGroup::NeedAttention) => pb::RfmGroup::NeedAttention,
        Some(RfmGroup::AboutToSleep) => pb::RfmGroup::AboutToSleep,
        Some(RfmGroup::AtRisk) => pb::RfmGroup::AtRisk,
        Some(RfmGroup::CannotLose) => pb::RfmGroup::CannotLose,
        Some(RfmGroup::Hibernating) => pb::RfmGroup::Hibernating,
        Some(RfmGroup::Lost) => pb::RfmGroup::Lost,
    }
}

/// The wire stage of a stored slug ("" → UNSPECIFIED).
pub fn stage_to_proto(slug: &str) -> pb::LifecycleStage {
    match Stage::from_slug(slug) {
        None => pb::LifecycleStage::Unspecified,
        Some(Stage::Prospect) => pb::LifecycleStage::Prospect,
        Some(Stage::New) => pb::LifecycleStage::New,
        Some(Stage::Active) => pb::LifecycleStage::Active,
        Some(Stage::AtRisk) => pb::LifecycleStage::AtRisk,
        Some(Stage::Dormant) => pb::LifecycleStage::Dormant,
        Some(Stage::Churned) => pb::LifecycleStage::Churned,
        Some(Stage::Reactivated) => pb::LifecycleStage::Reactivated,
    }
}

/// CustomerRfm of stored values; monetary in `currency`.
pub fn rfm_to_proto(customer_id: &str, stored: &StoredRfm, currency: &str) -> pb::CustomerRfm {
    let scored = stored.recency_score > 0;
    pb::CustomerRfm {
        customer_id: customer_id.to_owned(),
        scored,
        recency_days: stored.recency_days,
        frequency: stored.frequency,
        monetary: Some(Money {
            currency: currency.to_owned(),
            amount_minor: stored.monetary_minor,
        }),
        recency_score: stored.recency_score,
        frequency_score: stored.frequency_score,
        monetary_score: stored.monetary_score,
        frequency_monetary_score: if scored {
            frequency_monetary_score(stored.frequency_score, stored.monetary_score)
        } else {
            0
        },
        group: group_to_proto(&stored.group) as i32,
        score_time: stored.score_time.map(timestamp),
    }
}

/// CustomerLifecycle of stored values.
pub fn lifecycle_to_proto(stored: &StoredLifecycle) -> pb::CustomerLifecycle {
    pb::CustomerLifecycle {
        customer_id: stored.customer_id.clone(),
        stage: stage_to_proto(&stored.stage) as i32,
        stage_start_time: Some(timestamp(stored.stage_start_time)),
        previous_stage: stage_to_proto(&stored.previous_stage) as i32,
        days_since_last_purchase: stored.days_since_last_purchase,
        expected_purchase_gap_days: stored.expected_gap_days,
        churn_risk_score: stored.churn_risk_score,
        churn_risk: stored.churn_risk,
        evaluate_time: stored.evaluate_time.map(timestamp),
    }
}
