//! RFM: one customer's values and the distribution over cells, optionally among a segment's
//! members. (The config is read and updated by `workflow::configs`.)

use uuid::Uuid;

use crate::domain::rfm::RfmState;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::rfm::{Distribution, StoredRfm};
use crate::store::{self, rfm};

/// One customer's stored RFM and the config's currency; NOT_FOUND when segmentation holds no
/// facts for the customer.
pub async fn customer(state: &AppState, customer_id: &str) -> Result<(StoredRfm, String)> {
    let mut conn = custops_common::db::read(&state.pool).await?;
    let stored = rfm::get(&mut conn, customer_id)
        .await?
        .ok_or_else(|| Error::not_found("customer", customer_id))?;
    let currency = rfm::load(&mut conn).await?.config.currency;
    Ok((stored, currency))
}

/// Customers per cell, over everyone or the members of `segment` (NOT_FOUND when it does not
/// exist), with the config and bounds.
pub async fn distribution(
    state: &AppState,
    segment: Option<Uuid>,
) -> Result<(Distribution, RfmState)> {
    let mut conn = custops_common::db::read(&state.pool).await?;
    require_segment(&mut conn, segment).await?;
    let counts = rfm::distribution(&mut conn, segment).await?;
    let current = rfm::load(&mut conn).await?;
    Ok((counts, current))
}

/// NOT_FOUND when `segment` is given and does not exist.
pub(super) async fn require_segment(
    conn: &mut sqlx::PgConnection,
    segment: Option<Uuid>,
) -> Result<()> {
    match segment {
        Some(id) if !store::segments::exists(conn, id).await? => {
            Err(Error::not_found("segment", id))
        }
        _ => Ok(()),
    }
}
