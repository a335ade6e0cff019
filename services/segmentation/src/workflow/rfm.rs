//! RFM: the config (an update queues an RFM run), one customer's values, and the
//! distribution over cells, optionally among a segment's members.

use uuid::Uuid;

use crate::domain::rfm::{RfmConfig, RfmState};
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::jobs as job_store;
use crate::store::rfm::{Distribution, StoredRfm};
use crate::store::{self, rfm};

/// The config with its version and the bounds of the last full run.
pub async fn config(state: &AppState) -> Result<RfmState> {
    let mut conn = state.pool.acquire().await?;
    Ok(rfm::load(&mut conn).await?)
}

/// Applies `change` (the request's masked fields merged into the current config and validated
/// as a whole, by the caller) under the config's lock, then checks `etag`: an invalid request
/// is INVALID_ARGUMENT whatever its etag. A changed config is saved and an RFM run queued (its
/// id returned); an unchanged one is answered as it stands.
pub async fn update_config(
    state: &AppState,
    requester: &str,
    etag: &str,
    change: impl FnOnce(&RfmConfig) -> Result<RfmConfig>,
) -> Result<(RfmState, Option<Uuid>)> {
    let now = state.clock.now();
    let mut tx = state.pool.begin().await?;
    store::settings::lock_config(&mut tx, "rfm").await?;
    let mut current = rfm::load(&mut tx).await?;
    let next = change(&current.config)?;
    if !etag.is_empty() && etag != current.etag {
        return Err(Error::StaleConfig);
    }
    if next == current.config {
        return Ok((current, None));
    }
    current.config = next;
    current.etag = Uuid::now_v7().simple().to_string();
    current.update_time = Some(now);
    rfm::save(&mut tx, &current, now).await?;
    let job = job_store::insert_config_recompute(&mut tx, "rfm", requester, now).await?;
    tx.commit().await?;
    Ok((current, Some(job)))
}

/// One customer's stored RFM and the config's currency; NOT_FOUND when segmentation holds no
/// facts for the customer.
pub async fn customer(state: &AppState, customer_id: &str) -> Result<(StoredRfm, String)> {
    let mut conn = state.pool.acquire().await?;
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
    let mut conn = state.pool.acquire().await?;
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
