//! ExportCustomerData: everything segmentation holds about one customer, for a data-subject
//! access request that profiles' ExportCustomer gathers.

use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::{
    ExportCustomerDataRequest, ExportCustomerDataResponse,
};
use tonic::{Request, Response, Status};

use super::SegmentationApi;
use super::facts::customer_facts_to_proto;
use super::parse::parse_customer_id;
use crate::wire::segments::membership_to_proto;
use crate::wire::timestamp;
use crate::workflow::export as workflow;

/// ExportCustomerData: one snapshot of facts, memberships, RFM and lifecycle
/// (`workflow::export`); an unknown, merged-away or erased customer gets only its id and time.
pub(super) async fn export_customer_data(
    api: &SegmentationApi,
    request: Request<ExportCustomerDataRequest>,
) -> Result<Response<ExportCustomerDataResponse>, Status> {
    let customer_id = parse_customer_id("customer_id", &request.get_ref().customer_id)?;
    let data = workflow::customer_data(api.state(), &customer_id).await?;
    let facts = data
        .facts
        .as_ref()
        .map(|f| customer_facts_to_proto(&customer_id, f));
    let (rfm, lifecycle) = match &facts {
        Some(f) => (f.rfm.clone(), f.lifecycle.clone()),
        None => (None, None),
    };
    Ok(Response::new(ExportCustomerDataResponse {
        customer_data_export: Some(pb::CustomerDataExport {
            customer_id,
            facts,
            memberships: data.memberships.iter().map(membership_to_proto).collect(),
            rfm,
            lifecycle,
            export_time: Some(timestamp(data.export_time)),
        }),
    }))
}
