//! Customer 360: the profile and its activity summary from profiles itself, plus segments,
//! loyalty and feedback fetched from those services in parallel, each under its own timeout.
//! A section that fails is flagged with its state; the call fails only when the profile
//! itself cannot be read.

use std::future::Future;
use std::time::{Duration, Instant};

use custops_common::client::{ClientBuilder, ServiceChannel};
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::feedback::v1 as feedback;
use custops_contracts::custops::loyalty::v1 as loyalty;
use custops_contracts::custops::profiles::v1 as pb;
use custops_contracts::custops::segmentation::v1 as segmentation;
use tonic::{Code, Status};

use super::convert::ts;

/// Default and bounds of `section_timeout`.
pub(super) const DEFAULT_SECTION_TIMEOUT: Duration = Duration::from_millis(300);
pub(super) const MIN_SECTION_TIMEOUT: Duration = Duration::from_millis(10);
pub(super) const MAX_SECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Time kept back from the call's deadline to assemble the answer.
pub(super) const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// The caller's deadline from the `grpc-timeout` header (e.g. `300m`), if sent.
pub(super) fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Channels to the other services (absent when their URL is not configured).
#[derive(Debug, Clone, Default)]
pub struct Peers {
    segmentation: Option<ServiceChannel>,
    loyalty: Option<ServiceChannel>,
    feedback: Option<ServiceChannel>,
    /// With auth off every caller may read every section.
    auth_enabled: bool,
}

fn channel(settings: &ServiceSettings, target: ServiceKind, scope: &str) -> Option<ServiceChannel> {
    let builder = ClientBuilder::for_peer(&settings.clients, target, &[scope]).ok()?;
    match builder.build() {
        Ok(channel) => Some(channel),
        Err(error) => {
            tracing::warn!(%error, peer = %target, "cannot build a channel for Customer 360");
            None
        }
    }
}

impl Peers {
    /// Channels to every configured peer (`CUSTOPS_<SVC>_URL`). Call inside a Tokio runtime.
    pub fn from_settings(settings: &ServiceSettings) -> Self {
        Self {
            segmentation: channel(settings, ServiceKind::Segmentation, "segmentation.read"),
            loyalty: channel(settings, ServiceKind::Loyalty, "loyalty.read"),
            feedback: channel(settings, ServiceKind::Feedback, "feedback.read"),
            auth_enabled: settings.server.auth.is_enabled(),
        }
    }
}

type Section<T> = (pb::Customer360SectionStatus, T);

fn section_status(
    state: pb::Customer360SectionState,
    detail: &str,
    latency: Option<Duration>,
) -> pb::Customer360SectionStatus {
    pb::Customer360SectionStatus {
        state: state as i32,
        detail: detail.to_owned(),
        latency: latency.and_then(|l| prost_types::Duration::try_from(l).ok()),
    }
}

fn state_of(status: &Status) -> pb::Customer360SectionState {
    use pb::Customer360SectionState as S;
    match status.code() {
        Code::DeadlineExceeded | Code::Cancelled => S::DeadlineExceeded,
        Code::Unavailable | Code::ResourceExhausted => S::Unavailable,
        Code::PermissionDenied | Code::Unauthenticated => S::PermissionDenied,
        _ => S::Failed,
    }
}

/// Runs one section's fetch under `timeout`, turning every failure into a section state.
async fn fetch<T: Default, F>(
    requested: bool,
    channel: Option<&ServiceChannel>,
    allowed: bool,
    timeout: Duration,
    work: impl FnOnce(ServiceChannel) -> F,
) -> Section<T>
where
    F: Future<Output = Result<T, Status>>,
{
    use pb::Customer360SectionState as S;
    if !requested {
        return (section_status(S::NotRequested, "", None), T::default());
    }
    if !allowed {
        return (
            section_status(
                S::PermissionDenied,
                "the caller's token lacks the section's scope",
                None,
            ),
            T::default(),
        );
    }
    let Some(channel) = channel else {
        return (
            section_status(S::Unavailable, "the service's URL is not configured", None),
            T::default(),
        );
    };
    let started = Instant::now();
    match tokio::time::timeout(timeout, work(channel.clone())).await {
        Ok(Ok(value)) => (section_status(S::Ok, "", Some(started.elapsed())), value),
        Ok(Err(status)) => (
            section_status(state_of(&status), status.message(), Some(started.elapsed())),
            T::default(),
        ),
        Err(_) => (
            section_status(
                S::DeadlineExceeded,
                "no answer within section_timeout",
                Some(started.elapsed()),
            ),
            T::default(),
        ),
    }
}

/// NOT_FOUND from a peer means it holds nothing about the customer: an empty, OK answer.
fn or_empty<T: Default>(result: Result<tonic::Response<T>, Status>) -> Result<T, Status> {
    match result {
        Ok(response) => Ok(response.into_inner()),
        Err(status) if status.code() == Code::NotFound => Ok(T::default()),
        Err(status) => Err(status),
    }
}

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
    let wants = |s: pb::Customer360Section| wanted.is_empty() || wanted.contains(&(s as i32));
    let may = |scope: &str| !peers.auth_enabled || caller_scopes.iter().any(|s| s == scope);
    let id = customer_id.to_owned();
    let segments = fetch(
        wants(pb::Customer360Section::Segments),
        peers.segmentation.as_ref(),
        may("segmentation.read"),
        timeout,
        |ch| {
            let id = id.clone();
            async move {
                let mut list_client =
                    segmentation::segmentation_service_client::SegmentationServiceClient::new(ch);
                let mut rfm_client = list_client.clone();
                let mut client = list_client.clone();
                let (list, rfm, lifecycle) = tokio::join!(
                    list_client.list_customer_segments(segmentation::ListCustomerSegmentsRequest {
                        customer_id: id.clone(),
                        ..Default::default()
                    }),
                    rfm_client.get_customer_rfm(segmentation::GetCustomerRfmRequest {
                        customer_id: id.clone(),
                    }),
                    client.get_customer_lifecycle(segmentation::GetCustomerLifecycleRequest {
                        customer_id: id.clone(),
                    }),
                );
                let list = or_empty(list)?;
                let rfm = or_empty(rfm)?.rfm.unwrap_or_default();
                let lifecycle = or_empty(lifecycle)?.lifecycle.unwrap_or_default();
                Ok(pb::Customer360Segments {
                    status: None,
                    memberships: list
                        .segment_ids
                        .into_iter()
                        .map(|segment_id| pb::SegmentMembershipSummary {
                            segment_id,
                            ..Default::default()
                        })
                        .collect(),
                    lifecycle_stage: segmentation::LifecycleStage::try_from(lifecycle.stage)
                        .map(|s| s.as_str_name().to_owned())
                        .unwrap_or_default(),
                    churn_risk: lifecycle.churn_risk,
                    rfm_group: segmentation::RfmGroup::try_from(rfm.group)
                        .map(|g| g.as_str_name().to_owned())
                        .unwrap_or_default(),
                    recency_score: rfm.recency_score,
                    frequency_score: rfm.frequency_score,
                    monetary_score: rfm.monetary_score,
                    ..Default::default()
                })
            }
        },
    );
    let loyalty_section = fetch(
        wants(pb::Customer360Section::Loyalty),
        peers.loyalty.as_ref(),
        may("loyalty.read"),
        timeout,
        |ch| {
            let id = id.clone();
            async move {
                let mut client = loyalty::loyalty_service_client::LoyaltyServiceClient::new(ch);
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
                            pb::LoyaltyMembershipSummary {
                                program_id: m.program_id,
                                member_id: m.member_id,
                                member_status: loyalty::MemberStatus::try_from(m.status)
                                    .map(|s| s.as_str_name().to_owned())
                                    .unwrap_or_default(),
                                tier_id: tier.tier_code,
                                tier_name: tier.display_name,
                                redeemable_points: balances.available_points,
                                pending_points: balances.pending_points,
                                qualifying_points: balances.qualifying_points,
                                expiring_points: expiring.within_30_days_points,
                                next_expire_time: expiring.next_expire_time,
                                enroll_time: m.enrol_time,
                                ..Default::default()
                            }
                        })
                        .collect(),
                })
            }
        },
    );
    let feedback_section = fetch(
        wants(pb::Customer360Section::Feedback),
        peers.feedback.as_ref(),
        may("feedback.read"),
        timeout,
        |ch| {
            let id = id.clone();
            async move {
                let mut client = feedback::feedback_service_client::FeedbackServiceClient::new(ch);
                let summary = or_empty(
                    client
                        .get_customer_feedback_summary(
                            feedback::GetCustomerFeedbackSummaryRequest { customer_id: id },
                        )
                        .await,
                )?
                .summary
                .unwrap_or_default();
                Ok(pb::Customer360Feedback {
                    status: None,
                    latest_nps_score: summary.last_nps.as_ref().map(|s| s.score),
                    latest_nps_category: feedback::NpsCategory::try_from(summary.last_nps_category)
                        .map(|c| c.as_str_name().to_owned())
                        .unwrap_or_default(),
                    latest_nps_time: summary.last_nps.as_ref().and_then(|s| s.submit_time),
                    latest_csat_score: summary.last_csat.as_ref().map(|s| s.score),
                    latest_csat_time: summary.last_csat.as_ref().and_then(|s| s.submit_time),
                    response_count: i32::try_from(summary.response_count).unwrap_or(i32::MAX),
                    open_ticket_count: i32::try_from(summary.open_ticket_count).unwrap_or(i32::MAX),
                    open_follow_up_count: 0,
                    ..Default::default()
                })
            }
        },
    );
    let ((s_status, mut s), (l_status, mut l), (f_status, mut f)) =
        tokio::join!(segments, loyalty_section, feedback_section);
    s.status = Some(s_status);
    l.status = Some(l_status);
    f.status = Some(f_status);
    (s, l, f)
}

/// The activity summary of the customer in the contract's shape.
pub(super) fn summary_to_pb(s: &crate::store::ActivitySummary) -> pb::ActivitySummary {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        let check = |header: &str, expected: Option<Duration>| {
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Ok(value) = header.parse() {
                metadata.insert("grpc-timeout", value);
            }
            assert_eq!(grpc_timeout(&metadata), expected, "{header}");
        };
        check("300m", Some(Duration::from_millis(300)));
        check("2S", Some(Duration::from_secs(2)));
        check("1M", Some(Duration::from_secs(60)));
        check("5000u", Some(Duration::from_millis(5)));
        check("7x", None);
        check("m", None);
    }
}
