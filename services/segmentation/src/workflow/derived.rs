//! Values segmentation derives from the facts: RFM scores and lifecycle stages, for the
//! customers a feed batch touched or for everyone at once (full runs of recompute jobs and
//! rollovers). Each
//! change of RFM group, lifecycle stage or churn flag is reported on the outbox, in the
//! caller's transaction (aggregate "customer").

use chrono::{DateTime, Utc};
use custops_contracts::custops::segmentation::v1 as pb;
use sqlx::PgConnection;

use super::membership::{Cause, Causes};
use crate::domain::rfm::RfmState;
use crate::events::CustomerEvents;
use crate::store::lifecycle::LifecycleChange;
use crate::store::rfm::GroupChange;
use crate::store::{Who, facts, lifecycle, rfm};
use crate::wire::derived::{group_to_proto, lifecycle_to_proto, rfm_to_proto, stage_to_proto};

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

/// Recomputes the RFM values, lifecycle stages and predictions (`predictions::
/// refresh_customers`) of `customer_ids` as of `causes.now`, one statement each for all of them, writing RfmGroupChanged / LifecycleStageChanged /
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
    report_lifecycle(&mut *conn, &changes, causes).await?;
    super::predictions::refresh_customers(conn, customer_ids, causes).await
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
