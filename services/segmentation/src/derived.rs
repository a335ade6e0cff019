//! Values segmentation derives from the facts: RFM scores and lifecycle stages, per customer
//! (after an event) or for everyone at once (full runs of recompute jobs and rollovers).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::membership::Cause;

/// Recomputes `customer_id`'s RFM (with the stored bounds) and lifecycle stage, writing
/// RfmGroupChanged / LifecycleStageChanged / ChurnRiskChanged events when they change.
pub async fn refresh_customer(
    _conn: &mut PgConnection,
    _customer_id: &str,
    _cause: &Cause,
) -> anyhow::Result<()> {
    Ok(())
}

/// Full RFM run as of `now`: new quintile bounds, every customer scored. Returns the number of
/// customers whose group changed.
pub async fn run_rfm(_conn: &mut PgConnection, _now: DateTime<Utc>) -> anyhow::Result<u64> {
    Ok(0)
}

/// Full lifecycle run as of `now`. Returns the number of customers whose stage changed.
pub async fn run_lifecycle(_conn: &mut PgConnection, _now: DateTime<Utc>) -> anyhow::Result<u64> {
    Ok(0)
}
