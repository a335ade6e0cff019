//! ExportCustomerData: everything segmentation holds about one customer, for a data-subject
//! access request that profiles' ExportCustomer gathers.

use chrono::{DateTime, Utc};

use super::facts::{self, CustomerFacts};
use crate::error::Result;
use crate::state::AppState;
use crate::store::memberships::{self, SegmentMembership};

/// One customer's data, read in one snapshot.
#[derive(Debug, Clone)]
pub struct CustomerData {
    /// `None` for an unknown, merged-away or erased customer.
    pub facts: Option<CustomerFacts>,
    pub memberships: Vec<SegmentMembership>,
    pub export_time: DateTime<Utc>,
}

/// Facts, memberships, RFM and lifecycle read in one REPEATABLE READ, read-only transaction,
/// so the parts agree with each other (no membership of a change the facts do not show yet).
/// An unknown, merged-away or erased customer has no facts row: the export is then empty but
/// for the id and time, as the contract says.
pub async fn customer_data(state: &AppState, customer_id: &str) -> Result<CustomerData> {
    let now = state.clock.now();
    let mut tx = custops_common::db::begin_snapshot(&state.pool).await?;
    let facts = facts::read(&mut tx, customer_id, now).await?;
    let held = memberships::customer_segment_memberships(&mut *tx, customer_id).await?;
    tx.commit().await?;
    Ok(CustomerData {
        facts,
        memberships: held,
        export_time: now,
    })
}
