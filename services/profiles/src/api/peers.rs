//! The other three services as profiles reaches them for Customer 360 and the data-subject
//! export: one channel per service and purpose (reads with the `<svc>.read` scope, exports with
//! `<svc>.privacy`, so a token minted for one cannot do the other), and the one way a section
//! is fetched: under a timeout, every failure turned into a section state, never an error of
//! the whole call.

use std::future::Future;
use std::time::{Duration, Instant};

use custops_common::client::{ClientBuilder, ServiceChannel};
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::profiles::v1 as pb;
use tonic::{Code, Status};

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

/// `timeout`, shortened so the answer can still be assembled within the call's deadline.
pub(super) fn within_deadline(timeout: Duration, call_deadline: Option<Duration>) -> Duration {
    match call_deadline {
        Some(deadline) => timeout.min(deadline.saturating_sub(DEADLINE_MARGIN)),
        None => timeout,
    }
}

/// Channels to one other service (absent when its URL is not configured).
#[derive(Debug, Clone, Default)]
pub(super) struct Peer {
    /// With the service's `.read` scope: Customer 360.
    pub(super) read: Option<ServiceChannel>,
    /// With the service's `.privacy` scope: ExportCustomerData.
    pub(super) privacy: Option<ServiceChannel>,
}

impl Peer {
    fn from_settings(settings: &ServiceSettings, target: ServiceKind) -> Self {
        Self {
            read: channel(settings, target, &format!("{}.read", target.name())),
            privacy: channel(settings, target, &format!("{}.privacy", target.name())),
        }
    }
}

/// Channels to the other services.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    pub(super) segmentation: Peer,
    pub(super) loyalty: Peer,
    pub(super) feedback: Peer,
    /// With auth off every caller may read every Customer 360 section.
    pub(super) auth_enabled: bool,
}

fn channel(settings: &ServiceSettings, target: ServiceKind, scope: &str) -> Option<ServiceChannel> {
    let builder = ClientBuilder::for_peer(&settings.clients, target, &[scope]).ok()?;
    match builder.build() {
        Ok(channel) => Some(channel),
        Err(error) => {
            tracing::warn!(%error, peer = %target, "cannot build a channel to a peer");
            None
        }
    }
}

impl Peers {
    /// Channels to every configured peer (`CUSTOPS_<SVC>_URL`). Call inside a Tokio runtime.
    pub fn from_settings(settings: &ServiceSettings) -> Self {
        Self {
            segmentation: Peer::from_settings(settings, ServiceKind::Segmentation),
            loyalty: Peer::from_settings(settings, ServiceKind::Loyalty),
            feedback: Peer::from_settings(settings, ServiceKind::Feedback),
            auth_enabled: settings.server.auth.is_enabled(),
        }
    }
}

/// A fetched section: how fetching it ended, and its data (the default unless OK).
pub(super) type Section<T> = (pb::Customer360SectionStatus, T);

pub(super) fn section_status(
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

/// Whether a section is wanted, and whether the caller may have it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ask {
    /// The request did not ask for it.
    NotRequested,
    /// The caller's token lacks the section's scope.
    NotAllowed,
    /// Fetch it.
    Fetch,
}

/// Runs one section's fetch under `timeout`, turning every failure into a section state.
pub(super) async fn fetch<T: Default, F>(
    ask: Ask,
    channel: Option<&ServiceChannel>,
    timeout: Duration,
    work: impl FnOnce(ServiceChannel) -> F,
) -> Section<T>
where
    F: Future<Output = Result<T, Status>>,
{
    use pb::Customer360SectionState as S;
    match ask {
        Ask::NotRequested => return (section_status(S::NotRequested, "", None), T::default()),
        Ask::NotAllowed => {
            return (
                section_status(
                    S::PermissionDenied,
                    "the caller's token lacks the section's scope",
                    None,
                ),
                T::default(),
            );
        }
        Ask::Fetch => {}
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
pub(super) fn or_empty<T: Default>(
    result: Result<tonic::Response<T>, Status>,
) -> Result<T, Status> {
    match result {
        Ok(response) => Ok(response.into_inner()),
        Err(status) if status.code() == Code::NotFound => Ok(T::default()),
        Err(status) => Err(status),
    }
}

/// The lower-case slug of an enum value's proto name without its type prefix
/// (`LIFECYCLE_STAGE_AT_RISK` → `at_risk`); empty for the UNSPECIFIED value.
pub(super) fn slug(proto_name: &str, prefix: &str) -> String {
    match proto_name.strip_prefix(prefix) {
        Some("UNSPECIFIED") | None => String::new(),
        Some(rest) => rest.to_ascii_lowercase(),
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

    #[test]
    fn slugs_drop_the_prefix_and_the_unspecified_value() {
        assert_eq!(
            slug("LIFECYCLE_STAGE_AT_RISK", "LIFECYCLE_STAGE_"),
            "at_risk"
        );
        assert_eq!(slug("RFM_GROUP_CHAMPIONS", "RFM_GROUP_"), "champions");
        assert_eq!(slug("RFM_GROUP_UNSPECIFIED", "RFM_GROUP_"), "");
        assert_eq!(slug("SOMETHING_ELSE", "RFM_GROUP_"), "");
    }
}
