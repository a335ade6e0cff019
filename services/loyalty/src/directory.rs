//! Whether a customer id an enrolment names is a customer in profiles: a synchronous
//! `ProfilesService/GetCustomer` (scope `profiles.read`) with a short deadline, when loyalty
//! knows where profiles is (`CUSTOPS_PROFILES_URL`). Asked at call time rather than answered
//! from the profiles feed, because a customer created a moment ago may not be on the feed yet.

use std::time::Duration;

use custops_common::client::{ClientBuilder, RetryPolicy, ServiceChannel, retry_idempotent};
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::profiles::v1 as profiles;
use custops_contracts::custops::profiles::v1::profiles_service_client::ProfilesServiceClient;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::domain::member::CustomerStanding;

/// Deadline of one look-up: an enrolment waits at most this long per attempt.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Attempts when profiles is unreachable (a connection refused or reset fails fast).
const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    initial_backoff: Duration::from_millis(50),
    max_backoff: Duration::from_millis(400),
};

/// Why profiles gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Profiles could not answer in time (UNAVAILABLE or DEADLINE_EXCEEDED).
    #[error("profiles is unavailable")]
    Unavailable(Status),
    /// Profiles answered something loyalty cannot use (e.g. refused loyalty's token).
    #[error("{0}")]
    Unexpected(String),
}

/// The customers profiles knows, over gRPC.
#[derive(Debug, Clone)]
pub struct CustomerDirectory {
    client: ProfilesServiceClient<ServiceChannel>,
}

impl CustomerDirectory {
    /// The directory when `CUSTOPS_PROFILES_URL` is set; `None` for a standalone loyalty,
    /// which then enrols any well-formed customer id.
    pub fn from_settings(settings: &ServiceSettings) -> anyhow::Result<Option<Self>> {
        if !settings.clients.peers.contains_key(&ServiceKind::Profiles) {
            tracing::info!(
                "CUSTOPS_PROFILES_URL not set: enrolments are not checked against profiles"
            );
            return Ok(None);
        }
        let channel =
            ClientBuilder::for_peer(&settings.clients, ServiceKind::Profiles, &["profiles.read"])?
                .timeout(CALL_TIMEOUT)
                .build()?;
        Ok(Some(Self {
            client: ProfilesServiceClient::new(channel),
        }))
    }

    /// What profiles says about `customer_id` now.
    pub async fn standing(&self, customer_id: Uuid) -> Result<CustomerStanding, DirectoryError> {
        let answer = retry_idempotent(RETRY, || {
            let mut client = self.client.clone();
            let mut request = tonic::Request::new(profiles::GetCustomerRequest {
                customer_id: customer_id.to_string(),
            });
            request.set_timeout(CALL_TIMEOUT);
            async move { client.get_customer(request).await }
        })
        .await;
        let response = match answer {
            Ok(response) => response.into_inner(),
            Err(status) => {
                return match status.code() {
                    Code::NotFound => Ok(CustomerStanding::Unknown),
                    Code::Unavailable | Code::DeadlineExceeded => {
                        Err(DirectoryError::Unavailable(status))
                    }
                    code => Err(DirectoryError::Unexpected(format!(
                        "GetCustomer answered {code:?}: {}",
                        status.message()
                    ))),
                };
            }
        };
        let customer = response.customer.unwrap_or_default();
        let merged = !response.merged_from_customer_id.is_empty();
        match profiles::CustomerState::try_from(customer.state) {
            Ok(profiles::CustomerState::Active) if merged => Uuid::parse_str(&customer.customer_id)
                .map(CustomerStanding::MergedInto)
                .map_err(|_| {
                    DirectoryError::Unexpected("GetCustomer named a malformed survivor".to_owned())
                }),
            Ok(profiles::CustomerState::Active) => Ok(CustomerStanding::Live),
            Ok(profiles::CustomerState::Deleted) => Ok(CustomerStanding::Deleted),
            Ok(profiles::CustomerState::Erased) => Ok(CustomerStanding::Erased),
            // GetCustomer resolves merged ids to their survivor, so MERGED never comes back.
            Ok(
                state @ (profiles::CustomerState::Merged | profiles::CustomerState::Unspecified),
            ) => Err(DirectoryError::Unexpected(format!(
                "GetCustomer answered a customer in state {state:?}"
            ))),
            Err(unknown) => Err(DirectoryError::Unexpected(format!(
                "GetCustomer answered an unknown customer state {}",
                unknown.0
            ))),
        }
    }
}
