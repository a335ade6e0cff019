//! Lifecycle: one customer's stage and the distribution over stages, optionally among a
//! segment's members. (The config is read and updated by `workflow::configs`.)

use uuid::Uuid;

use super::rfm::require_segment;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::lifecycle::{self, StoredLifecycle};

/// One customer's stored lifecycle; NOT_FOUND when segmentation holds no facts for them.
pub async fn customer(state: &AppState, customer_id: &str) -> Result<StoredLifecycle> {
    let mut conn = custops_common::db::read(&state.pool).await?;
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
    let mut conn = custops_common::db::read(&state.pool).await?;
    require_segment(&mut conn, segment).await?;
    Ok(lifecycle::distribution(&mut conn, segment).await?)
}
