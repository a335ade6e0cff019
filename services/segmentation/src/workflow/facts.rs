//! A customer's facts as rules see them: the projection's row with RFM, lifecycle, computed
//! traits and how far each feed has been applied, read for GetCustomerFacts and the data-subject export.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::domain::facts::{EvalContext, Facts};
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::facts::{self, Positions};
use crate::store::lifecycle::{self, StoredLifecycle};
use crate::store::rfm::{self, StoredRfm};

/// Everything segmentation holds about one customer's facts.
#[derive(Debug, Clone)]
pub struct CustomerFacts {
    pub facts: Facts,
    /// The evaluation context at the read (T and today in the evaluation time zone).
    pub ctx: EvalContext,
    pub positions: Positions,
    pub rfm: StoredRfm,
    /// The RFM config's currency (of the monetary value).
    pub currency: String,
    pub lifecycle: StoredLifecycle,
    /// Every computed trait's value, ordered by name.
    pub computed: Vec<super::computed::TraitValue>,
}

/// GetCustomerFacts: NOT_FOUND when segmentation holds no facts for the customer.
pub async fn get(state: &AppState, customer_id: &str) -> Result<CustomerFacts> {
    let mut conn = custops_common::db::read(&state.pool).await?;
    read(&mut conn, customer_id, state.clock.now())
        .await?
        .ok_or_else(|| Error::not_found("customer", customer_id))
}

/// A customer's facts at `now`, with RFM and lifecycle; `None` when segmentation holds no
/// facts row for the customer. Every read goes through `conn`, so in a REPEATABLE READ
/// transaction (the export) they are one snapshot.
pub(super) async fn read(
    conn: &mut PgConnection,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<CustomerFacts>> {
    let Some(loaded) = facts::load_facts(&mut *conn, customer_id).await? else {
        return Ok(None);
    };
    let (Some(positions), Some(stored_rfm), Some(stored_lifecycle)) = (
        facts::positions(&mut *conn, customer_id).await?,
        rfm::get(&mut *conn, customer_id).await?,
        lifecycle::get(&mut *conn, customer_id).await?,
    ) else {
        // The row went away between the reads (outside a snapshot): as if never there.
        return Ok(None);
    };
    let currency = rfm::load(&mut *conn).await?.config.currency;
    let ctx = facts::eval_context(&mut *conn, now).await?;
    let computed = super::computed::customer_values(&mut *conn, customer_id).await?;
    Ok(Some(CustomerFacts {
        facts: loaded,
        ctx,
        positions,
        rfm: stored_rfm,
        currency,
        lifecycle: stored_lifecycle,
        computed,
    }))
}
