//! Values segmentation derives from the facts: RFM scores and lifecycle stages, for the
//! customers a feed batch touched or for everyone at once (full runs of recompute jobs and
//! rollovers). Each
//! change of RFM group, lifecycle stage or churn flag is reported on the outbox, in the
//! caller's transaction (aggregate "customer").

use chrono::{DateTime, Utc};
use custops_contracts::custops::common::v1::Money;
use custops_contracts::custops::segmentation::v1 as pb;
use sqlx::PgConnection;

use crate::domain::lifecycle::Stage;
use crate::domain::rfm::{RfmGroup, RfmState, frequency_monetary_score};
use crate::events::CustomerEvents;
use crate::membership::{Cause, Causes};
use crate::store::lifecycle::{LifecycleChange, StoredLifecycle};
use crate::store::rfm::{GroupChange, StoredRfm};
use crate::store::{Who, facts, lifecycle, rfm};

/// Recomputes `customer_id`'s RFM (with the stored bounds, as of `cause.now`) and lifecycle
/// stage; see [`refresh_customers`].
pub async fn refresh_customer(
    conn: &mut PgConnection,
    customer_id: &str,
    cause: &Cause,
) -> anyhow::Result<()> {
    refresh_customers(
        conn,
        &[customer_id.to_owned()],
        &Causes::single(cause, customer_id),
    )
    .await
}

/// Recomputes the RFM values and lifecycle stages of `customer_ids` as of `causes.now`, one
/// statement each for all of them, writing RfmGroupChanged / LifecycleStageChanged /
/// ChurnRiskChanged events for those that change. Scores use the bounds stored by the last
/// full run, never bounds computed here: those take a pass over every customer and purchase,
/// a cost per event that would grow with the customer base. Before the first full run there
/// are none, and customers stay unscored until the scheduler's run (`jobs`, queued when bounds
/// are missing). Customers segmentation does not know are left alone.
pub async fn refresh_customers(
    conn: &mut PgConnection,
    customer_ids: &[String],
    causes: &Causes,
) -> anyhow::Result<()> {
    if customer_ids.is_empty() {
        return Ok(());
    }
    let who = Who::Customers(customer_ids);
    let state = rfm::load(&mut *conn).await?;
    let changes = rfm::score(
        &mut *conn,
        &state.config,
        state.thresholds().as_ref(),
        causes.now,
        who,
    )
    .await?;
    report_rfm(&mut *conn, &state, &changes, causes).await?;
    let config = lifecycle::load(&mut *conn).await?.config;
    let changes = lifecycle::evaluate(&mut *conn, &config, causes.now, who).await?;
    report_lifecycle(conn, &changes, causes).await?;
    Ok(())
}

/// Full RFM run as of `now`: new quintile bounds (unless fixed), stored with `now` as the
/// compute time, and every customer scored. Returns the number of customers whose group
/// changed. Events carry reason RECOMPUTE.
pub async fn run_rfm(conn: &mut PgConnection, now: DateTime<Utc>) -> anyhow::Result<u64> {
    let mut state = rfm::load(&mut *conn).await?;
    if state.config.fixed_thresholds.is_none() {
        state.computed_thresholds = rfm::quintiles(&mut *conn, &state.config, now).await?;
    }
    state.compute_time = Some(now);
    state.computed_customers = Some(facts::customer_count(&mut *conn).await?);
    let update_time = state.update_time.unwrap_or(now);
    rfm::save(&mut *conn, &state, update_time).await?;
    let changes = rfm::score(
        &mut *conn,
        &state.config,
        state.thresholds().as_ref(),
        now,
        Who::Everyone,
    )
    .await?;
    report_rfm(conn, &state, &changes, &recompute(now)).await?;
    Ok(changes.len() as u64)
}

/// Full lifecycle run as of `now`. Returns the number of customers whose stage changed.
/// Events carry reason RECOMPUTE.
pub async fn run_lifecycle(conn: &mut PgConnection, now: DateTime<Utc>) -> anyhow::Result<u64> {
    let config = lifecycle::load(&mut *conn).await?.config;
    let changes = lifecycle::evaluate(&mut *conn, &config, now, Who::Everyone).await?;
    report_lifecycle(conn, &changes, &recompute(now)).await?;
    Ok(changes
        .iter()
        .filter(|c| c.old_stage != c.lifecycle.stage)
        .count() as u64)
}

fn recompute(now: DateTime<Utc>) -> Causes {
    Causes::new(pb::ChangeReason::Recompute, now)
}

/// The upstream event id the derived events carry: set for reason EVENT only.
fn cause_event_id(cause: &Cause) -> String {
    if cause.reason == pb::ChangeReason::Event {
        cause.event_id.clone()
    } else {
        String::new()
    }
}

/// Reports RFM group changes, all in one insert (a full run may change hundreds of thousands).
async fn report_rfm(
    conn: &mut PgConnection,
    state: &RfmState,
    changes: &[GroupChange],
    causes: &Causes,
) -> anyhow::Result<()> {
    let mut events = CustomerEvents::default();
    for change in changes {
        let cause = causes.of(&change.customer_id);
        let event = pb::RfmGroupChanged {
            customer_id: change.customer_id.clone(),
            previous_group: group_to_proto(&change.previous_group) as i32,
            rfm: Some(rfm_to_proto(
                &change.customer_id,
                &change.rfm,
                &state.config.currency,
            )),
            reason: cause.reason as i32,
            cause_event_id: cause_event_id(&cause),
        };
        events.push(&change.customer_id, &event);
    }
    events.append(conn).await?;
    Ok(())
}

/// Reports stage and churn flag changes, in one insert, each customer's stage change before
/// its churn flag change.
async fn report_lifecycle(
    conn: &mut PgConnection,
    changes: &[LifecycleChange],
    causes: &Causes,
) -> anyhow::Result<()> {
    let mut events = CustomerEvents::default();
    for change in changes {
        let id = &change.lifecycle.customer_id;
        let cause = causes.of(id);
        let lifecycle = lifecycle_to_proto(&change.lifecycle);
        if change.old_stage != change.lifecycle.stage {
            let event = pb::LifecycleStageChanged {
                customer_id: id.clone(),
                previous_stage: stage_to_proto(&change.old_stage) as i32,
                lifecycle: Some(lifecycle.clone()),
                reason: cause.reason as i32,
                cause_event_id: cause_event_id(&cause),
            };
            events.push(id, &event);
        }
        if change.old_churn_risk != change.lifecycle.churn_risk {
            let event = pb::ChurnRiskChanged {
                customer_id: id.clone(),
                lifecycle: Some(lifecycle),
                reason: cause.reason as i32,
                cause_event_id: cause_event_id(&cause),
            };
            events.push(id, &event);
        }
    }
    events.append(conn).await?;
    Ok(())
}

pub use custops_common::time::to_timestamp as timestamp;

/// The instant of a protobuf timestamp; `None` when unset or out of range.
pub fn from_timestamp(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(custops_common::time::from_timestamp)
}

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

/// Queues a recompute job of `scope` ("rfm" or "lifecycle") triggered by a config change,
/// for the recompute worker; returns its id.
pub async fn queue_config_recompute(
    conn: &mut PgConnection,
    scope: &str,
    requester: &str,
    now: DateTime<Utc>,
) -> Result<uuid::Uuid, sqlx::Error> {
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO recompute_jobs (recompute_job_id, scope, trigger, create_time, requester) \
         VALUES ($1, $2, 'config_changed', $3, $4)",
    )
    .bind(id)
    .bind(scope)
    .bind(now)
    .bind(requester)
    .execute(conn)
    .await?;
    Ok(id)
}
