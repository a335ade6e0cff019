//! The data-subject export across the suite: what profiles holds, plus what segmentation,
//! loyalty and feedback hold, each fetched from that service's ExportCustomerData (with
//! profiles' own `<svc>.privacy` identity) in parallel under one timeout. A section that cannot
//! be fetched is flagged and the export is not `complete`; the caller retries before handing
//! it over, rather than getting nothing.

use std::time::Duration;

use custops_common::client::ServiceChannel;
use custops_common::server::MAX_MESSAGE_BYTES;
use custops_contracts::custops::feedback::v1 as feedback;
use custops_contracts::custops::loyalty::v1 as loyalty;
use custops_contracts::custops::profiles::v1 as pb;
use custops_contracts::custops::segmentation::v1 as segmentation;
use tonic::Status;

use super::peers::{Ask, Peers, fetch};

/// Default and bounds of `section_timeout`: exports read whole histories, so they get far
/// longer than Customer 360's glance.
pub(super) const DEFAULT_SECTION_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const MIN_SECTION_TIMEOUT: Duration = Duration::from_millis(100);
pub(super) const MAX_SECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Fills the segmentation, loyalty and feedback sections of `export` (whose profiles part is
/// already there) and `complete`.
pub(super) async fn gather(
    peers: &Peers,
    customer_id: &str,
    timeout: Duration,
    export: &mut pb::CustomerExport,
) {
    let segments = fetch(
        Ask::Fetch,
        peers.segmentation.privacy.as_ref(),
        timeout,
        |ch| segmentation_export(ch, customer_id.to_owned()),
    );
    let loyalty_section = fetch(Ask::Fetch, peers.loyalty.privacy.as_ref(), timeout, |ch| {
        loyalty_export(ch, customer_id.to_owned())
    });
    let feedback_section = fetch(Ask::Fetch, peers.feedback.privacy.as_ref(), timeout, |ch| {
        feedback_export(ch, customer_id.to_owned())
    });
    let ((s_status, s), (l_status, l), (f_status, f)) =
        tokio::join!(segments, loyalty_section, feedback_section);
    let ok = pb::Customer360SectionState::Ok as i32;
    export.complete = [&s_status, &l_status, &f_status]
        .iter()
        .all(|status| status.state == ok);
    export.segmentation = s;
    export.segmentation_status = Some(s_status);
    export.loyalty = l;
    export.loyalty_status = Some(l_status);
    export.feedback = f;
    export.feedback_status = Some(f_status);
}

async fn segmentation_export(
    channel: ServiceChannel,
    customer_id: String,
) -> Result<Option<segmentation::CustomerDataExport>, Status> {
    let mut client =
        segmentation::segmentation_service_client::SegmentationServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let response = client
        .export_customer_data(segmentation::ExportCustomerDataRequest { customer_id })
        .await?;
    Ok(response.into_inner().customer_data_export)
}

async fn loyalty_export(
    channel: ServiceChannel,
    customer_id: String,
) -> Result<Option<loyalty::CustomerDataExport>, Status> {
    let mut client = loyalty::loyalty_service_client::LoyaltyServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let response = client
        .export_customer_data(loyalty::ExportCustomerDataRequest { customer_id })
        .await?;
    Ok(response.into_inner().customer_data_export)
}

async fn feedback_export(
    channel: ServiceChannel,
    customer_id: String,
) -> Result<Option<feedback::CustomerDataExport>, Status> {
    let mut client = feedback::feedback_service_client::FeedbackServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let response = client
        .export_customer_data(feedback::ExportCustomerDataRequest { customer_id })
        .await?;
    Ok(response.into_inner().customer_data_export)
}
