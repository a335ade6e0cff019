//! Lifecycle: the config (an update queues a lifecycle run), one customer's stage, and the
//! distribution over stages, optionally among a segment's members.

use uuid::Uuid;

use super::rfm::require_segment;
use crate::domain::lifecycle::LifecycleConfig;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::jobs as job_store;
use crate::store::lifecycle::{self, LifecycleState, StoredLifecycle};

/// The config with its version.
pub async fn config(state: &AppState) -> Result<LifecycleState> {
    let mut conn = state.pool.acquire().await?;
    Ok(lifecycle::load(&mut conn).await?)
}

/// Applies `change` (the request's masked fields merged into the current config and validated,
/// by the caller) under the config's lock, then checks `etag`, as
/// [`super::rfm::update_config`] does; a changed config queues a lifecycle run.
pub async fn update_config(
    state: &AppState,
    requester: &str,
    etag: &str,
    change: impl FnOnce(&LifecycleConfig) -> Result<LifecycleConfig>,
) -> Result<(LifecycleState, Option<Uuid>)> {
    let now = state.clock.now();
    let mut tx = state.pool.begin().await?;
    crate::store::settings::lock_config(&mut tx, "lifecycle").await?;
    let mut current = lifecycle::load(&mut tx).await?;
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
    lifecycle::save(&mut tx, &current.config, &current.etag, now).await?;
    let job = job_store::insert_config_recompute(&mut tx, "lifecycle", requester, now).await?;
    tx.commit().await?;
    Ok((current, Some(job)))
}

/// One customer's stored lifecycle; NOT_FOUND when segmentation holds no facts for them.
pub async fn customer(state: &AppState, customer_id: &str) -> Result<StoredLifecycle> {
    let mut conn = state.pool.acquire().await?;
    lifecycle::get(&mut conn, customer_id)
        .await?
        .ok_or_else(|| Error::not_found("customer", customer_id))
}

/// `(stage, customers, of which flagged)` per non-empty stage, over everyone or the members of
/// `segment` (NOT_FOUND when it does not exist).
pub async fn distribution(
    state: &AppState,
    segment: Option<Uuid>,
) -> Result<Vec<(String, i64, i64)>> {
    let mut conn = state.pool.acquire().await?;
    require_segment(&mut conn, segment).await?;
    Ok(lifecycle::distribution(&mut conn, segment).await?)
}
