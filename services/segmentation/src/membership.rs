//! Keeping memberships current: re-evaluating one customer after their facts changed,
//! removing an erased customer, moving memberships on a merge. Each writes memberships,
//! member counts and SegmentEntered / SegmentExited events in the caller's transaction.
//! TODO(segmentation/segments): the real engine.

use chrono::{DateTime, Utc};
use custops_contracts::custops::segmentation::v1::ChangeReason;
use sqlx::PgConnection;

/// Why memberships are being changed, carried onto the events.
#[derive(Debug, Clone)]
pub struct Cause {
    pub reason: ChangeReason,
    /// For `ChangeReason::Event`: the upstream event's id.
    pub event_id: String,
    /// The evaluation time.
    pub now: DateTime<Utc>,
}

/// Re-evaluates every rule segment for `customer_id` after their facts changed.
pub async fn reevaluate_customer(
    _tx: &mut PgConnection,
    _customer_id: &str,
    _cause: &Cause,
) -> anyhow::Result<()> {
    Ok(())
}

/// Ends every membership of an erased customer.
pub async fn remove_customer(
    _tx: &mut PgConnection,
    _customer_id: &str,
    _cause: &Cause,
) -> anyhow::Result<()> {
    Ok(())
}

/// After `source` was merged into `target` (facts already moved): `source` leaves every
/// segment, its static memberships pass to `target`, `target` is re-evaluated.
pub async fn merge_customers(
    _tx: &mut PgConnection,
    _source: &str,
    _target: &str,
    _cause: &Cause,
) -> anyhow::Result<()> {
    Ok(())
}
