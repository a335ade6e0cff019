//! Customer 360: the profile and its activity summary from profiles itself, plus segments,
//! loyalty and feedback fetched from those services in parallel, each under its own timeout
//! (`peers::fetch`). A section that fails is flagged with its state; the call fails only when
//! the profile itself cannot be read. Enumerations come as the owning service's own enum
//! (authoritative) and as the lower-case slug the first version of the contract promised.

use std::time::Duration;

use custops_contracts::custops::feedback::v1 as feedback;
use custops_contracts::custops::loyalty::v1 as loyalty;
use custops_contracts::custops::profiles::v1 as pb;
use custops_contracts::custops::segmentation::v1 as segmentation;

use super::convert::ts;
use super::peers::{Ask, Peers, fetch, or_empty, slug};

/// Default and bounds of `section_timeout`.
pub(super) const DEFAULT_SECTION_TIMEOUT: Duration = Duration::from_millis(300);
pub(super) const MIN_SECTION_TIMEOUT: Duration = Duration::from_millis(10);
pub(super) const MAX_SECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The three remote sections for `customer_id`.
pub(super) async fn sections(
    peers: &Peers,
    caller_scopes: &[String],
    customer_id: &str,
    wanted: &[i32],
    timeout: Duration,
) -> (
    pb::Customer360Segments,
    pb::Customer360Loyalty,
    pb::Customer360Feedback,
) {
    let ask = |section: pb::Customer360Section, scope: &str| {
        if !(wanted.is_empty() || wanted.contains(&(section as i32))) {
            Ask::NotRequested
        } else if peers.auth_enabled && !caller_scopes.iter().any(|s| s == scope) {
            Ask::NotAllowed
        } else {
            Ask::Fetch
        }
    };
    let segments = fetch(
        ask(pb::Customer360Section::Segments, "segmentation.read"),
        peers.segmentation.read.as_ref(),
        timeout,
        |ch| segments_section(ch, customer_id.to_owned()),
    );
    let loyalty_section = fetch(
        ask(pb::Customer360Section::Loyalty, "loyalty.read"),
        peers.loyalty.read.as_ref(),
        timeout,
        |ch| loyalty_section(ch, customer_id.to_owned()),
    );
    let feedback_section = fetch(
        ask(pb::Customer360Section::Feedback, "feedback.read"),
        peers.feedback.read.as_ref(),
        timeout,
        |ch| feedback_section(ch, customer_id.to_owned()),
    );
    let ((s_status, mut s), (l_status, mut l), (f_status, mut f)) =
        tokio::join!(segments, loyalty_section, feedback_section);
    s.status = Some(s_status);
    l.status = Some(l_status);
    f.status = Some(f_status);
    (s, l, f)
}

async fn segments_section(
    channel: custops_common::client::ServiceChannel,
    id: String,
) -> Result<pb::Customer360Segments, tonic::Status> {
    let mut list_client =
        segmentation::segmentation_service_client::SegmentationServiceClient::new(channel);
    let mut rfm_client = list_client.clone();
    let mut lifecycle_client = list_client.clone();
    let mut prediction_client = list_client.clone();
    let mut traits_client = list_client.clone();
    let (list, rfm, lifecycle, prediction, traits) = tokio::join!(
        list_client.list_customer_segments(segmentation::ListCustomerSegmentsRequest {
            customer_id: id.clone(),
            view: segmentation::CustomerSegmentsView::Full as i32,
            ..Default::default()
        }),
        rfm_client.get_customer_rfm(segmentation::GetCustomerRfmRequest {
            customer_id: id.clone(),
        }),
        lifecycle_client.get_customer_lifecycle(segmentation::GetCustomerLifecycleRequest {
            customer_id: id.clone()
        }),
        prediction_client.get_customer_prediction(segmentation::GetCustomerPredictionRequest {
            customer_id: id.clone()
        }),
        traits_client.get_customer_computed_traits(
            segmentation::GetCustomerComputedTraitsRequest { customer_id: id }
        ),
    );
    let computed_traits = or_empty(traits)?.computed_traits;
    let prediction = or_empty(prediction)?.prediction;
    let list = or_empty(list)?;
    let rfm = or_empty(rfm)?.rfm.unwrap_or_default();
    let lifecycle = or_empty(lifecycle)?.lifecycle.unwrap_or_default();
    let stage = segmentation::LifecycleStage::try_from(lifecycle.stage)
        .unwrap_or(segmentation::LifecycleStage::Unspecified);
    let group =
        segmentation::RfmGroup::try_from(rfm.group).unwrap_or(segmentation::RfmGroup::Unspecified);
    Ok(pb::Customer360Segments {
        status: None,
        memberships: list
            .memberships
            .into_iter()
            .map(|m| pb::SegmentMembershipSummary {
                segment_id: m.segment_id,
                display_name: m.display_name,
                enter_time: m.enter_time,
                kind: m.kind,
            })
            .collect(),
        lifecycle_stage: slug(stage.as_str_name(), "LIFECYCLE_STAGE_"),
        lifecycle_stage_value: stage as i32,
        churn_risk: lifecycle.churn_risk,
        rfm_group: slug(group.as_str_name(), "RFM_GROUP_"),
        rfm_group_value: group as i32,
        recency_score: rfm.recency_score,
        frequency_score: rfm.frequency_score,
        monetary_score: rfm.monetary_score,
        prediction,
        computed_traits,
    })
}

async fn loyalty_section(
    channel: custops_common::client::ServiceChannel,
    id: String,
) -> Result<pb::Customer360Loyalty, tonic::Status> {
    let mut client = loyalty::loyalty_service_client::LoyaltyServiceClient::new(channel);
    let members = client
        .list_members(loyalty::ListMembersRequest {
            customer_id: id,
            page_size: 100,
            view: loyalty::MemberView::Full as i32,
            ..Default::default()
        })
        .await?
        .into_inner()
        .members;
    Ok(pb::Customer360Loyalty {
        status: None,
        memberships: members
            .into_iter()
            .map(|m| {
                let balances = m.balances.unwrap_or_default();
                let tier = m.tier.unwrap_or_default();
                let expiring = m.expiring.unwrap_or_default();
                let status = loyalty::MemberStatus::try_from(m.status)
                    .unwrap_or(loyalty::MemberStatus::Unspecified);
                pb::LoyaltyMembershipSummary {
                    program_id: m.program_id,
                    member_id: m.member_id,
                    member_status: slug(status.as_str_name(), "MEMBER_STATUS_"),
                    member_status_value: status as i32,
                    tier_id: tier.tier_code,
                    tier_name: tier.display_name,
                    redeemable_points: balances.available_points,
                    pending_points: balances.pending_points,
                    qualifying_points: balances.qualifying_points,
                    expiring_points: expiring.within_30_days_points,
                    next_expire_time: expiring.next_expire_time,
                    enroll_time: m.enrol_time,
                }
            })
            .collect(),
    })
}

async fn feedback_section(
    channel: custops_common::client::ServiceChannel,
    id: String,
) -> Result<pb::Customer360Feedback, tonic::Status> {
    let mut client = feedback::feedback_service_client::FeedbackServiceClient::new(channel);
    let summary = or_empty(
        client
            .get_customer_feedback_summary(feedback::GetCustomerFeedbackSummaryRequest {
                customer_id: id,
            })
            .await,
    )?
    .summary
    .unwrap_or_default();
    let category = feedback::NpsCategory::try_from(summary.last_nps_category)
        .unwrap_or(feedback::NpsCategory::Unspecified);
    let count = |n: i64| i32::try_from(n).unwrap_or(i32::MAX);
    Ok(pb::Customer360Feedback {
        status: None,
        latest_nps_score: summary.last_nps.as_ref().map(|s| s.score),
        latest_nps_category: slug(category.as_str_name(), "NPS_CATEGORY_"),
        latest_nps_category_value: category as i32,
        latest_nps_time: summary.last_nps.as_ref().and_then(|s| s.submit_time),
        latest_csat_score: summary.last_csat.as_ref().map(|s| s.score),
        latest_csat_time: summary.last_csat.as_ref().and_then(|s| s.submit_time),
        response_count: count(summary.response_count),
        open_ticket_count: count(summary.open_ticket_count),
        open_follow_up_count: count(summary.open_follow_up_count),
    })
}

/// The activity summary of the customer in the contract's shape.
pub(super) fn summary_to_pb(s: &crate::domain::activity::ActivitySummary) -> pb::ActivitySummary {
    pb::ActivitySummary {
        purchase_count: s.purchase_count,
        net_spend: s
            .net_spend
            .iter()
            .map(
                |(currency, amount_minor)| custops_contracts::custops::common::v1::Money {
                    amount_minor: *amount_minor,
                    currency: currency.clone(),
                },
            )
            .collect(),
        first_purchase_time: s.first_purchase_time.map(ts),
        last_purchase_time: s.last_purchase_time.map(ts),
        last_activity_time: s.last_activity_time.map(ts),
        interaction_count: s.interaction_count,
    }
}
