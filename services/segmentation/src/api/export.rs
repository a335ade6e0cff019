//! ExportCustomerData: everything segmentation holds about one customer, for a data-subject
//! access request that profiles' ExportCustomer gathers.

use custops_common::error::ServiceError;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::{
    ExportCustomerDataRequest, ExportCustomerDataResponse,
};
use tonic::{Request, Response, Status};

use super::SegmentationApi;
use super::facts::customer_facts;
use super::parse::parse_customer_id;
use crate::derived::timestamp;
use crate::segments_wire::membership_to_proto;
use crate::store::memberships;

/// ExportCustomerData: facts, memberships, RFM and lifecycle read in one REPEATABLE READ,
/// read-only transaction, so the parts agree with each other (no membership of a change the
/// facts do not show yet). An unknown, merged-away or erased customer has no facts row: the
/// export is then empty but for the id and time, as the contract says.
pub(super) async fn export_customer_data(
    api: &SegmentationApi,
    request: Request<ExportCustomerDataRequest>,
) -> Result<Response<ExportCustomerDataResponse>, Status> {
    let customer_id = parse_customer_id("customer_id", &request.get_ref().customer_id)?;
    let state = api.state();
    let now = state.clock.now();
    let mut tx = custops_common::db::begin_snapshot(&state.pool)
        .await
        .map_err(ServiceError::from)?;
    let facts = customer_facts(&mut tx, &customer_id, now).await?;
    let held = memberships::customer_segment_memberships(&mut *tx, &customer_id)
        .await
        .map_err(ServiceError::from)?;
    tx.commit().await.map_err(ServiceError::from)?;
    let (rfm, lifecycle) = match &facts {
        Some(f) => (f.rfm.clone(), f.lifecycle.clone()),
        None => (None, None),
    };
    Ok(Response::new(ExportCustomerDataResponse {
        customer_data_export: Some(pb::CustomerDataExport {
            customer_id,
            facts,
            memberships: held.iter().map(membership_to_proto).collect(),
            rfm,
            lifecycle,
            export_time: Some(timestamp(now)),
        }),
    }))
}
