//! Scopes from the contract are enforced on the feedback API, and idempotency keys belong to
//! the calling service: the same request id from two services makes two resources.

use std::time::Duration;

use custops_common::auth::{AuthSettings, TokenIssuer};
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::feedback::v1 as pb;
use custops_feedback::domain::ManualClock;
use custops_testkit::TestDatabase;
use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::helpers::{full_survey, spawn_app_with, t0};

const KEY: &str = "a-shared-key-of-at-least-32-bytes!";

fn with_token<T>(
    message: T,
    issuer: &TokenIssuer,
    service: &str,
    scopes: &[&str],
) -> anyhow::Result<tonic::Request<T>> {
    let token = issuer
        .mint(service, scopes, Duration::from_secs(300))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}"))?,
    );
    Ok(request)
}

#[tokio::test]
async fn scopes_are_enforced_and_request_ids_belong_to_the_caller() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let mut settings = ServiceSettings::for_local(ServiceKind::Feedback, db.url());
    let auth = AuthSettings::jwt(KEY, "custops").map_err(anyhow::Error::msg)?;
    settings.server.auth = auth.clone();
    let mut app = spawn_app_with(db, settings, ManualClock::new(t0())).await?;
    let issuer = TokenIssuer::from_settings(&auth).ok_or_else(|| anyhow::anyhow!("no issuer"))?;
    let create = || pb::CreateSurveyRequest {
        survey: Some(full_survey()),
        request_id: "same-key".to_owned(),
    };

    let anonymous = app
        .client
        .create_survey(create())
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(anonymous, Some(Code::Unauthenticated));
    let reader = app
        .client
        .create_survey(with_token(create(), &issuer, "crm", &["feedback.read"])?)
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(reader, Some(Code::PermissionDenied));

    let crm = app
        .client
        .create_survey(with_token(create(), &issuer, "crm", &["feedback.write"])?)
        .await?
        .into_inner()
        .survey
        .unwrap_or_default();
    let crm_again = app
        .client
        .create_survey(with_token(create(), &issuer, "crm", &["feedback.write"])?)
        .await?
        .into_inner()
        .survey
        .unwrap_or_default();
    let marketing = app
        .client
        .create_survey(with_token(
            create(),
            &issuer,
            "marketing",
            &["feedback.write"],
        )?)
        .await?
        .into_inner()
        .survey
        .unwrap_or_default();
    assert_eq!(crm.survey_id, crm_again.survey_id);
    assert_ne!(crm.survey_id, marketing.survey_id);

    // The data-subject export takes the privacy scope; reading is not enough.
    let export = || pb::ExportCustomerDataRequest {
        customer_id: uuid::Uuid::now_v7().to_string(),
    };
    let reader = app
        .client
        .export_customer_data(with_token(export(), &issuer, "crm", &["feedback.read"])?)
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(reader, Some(Code::PermissionDenied));
    let profiles = app
        .client
        .export_customer_data(with_token(
            export(),
            &issuer,
            "profiles",
            &["feedback.privacy"],
        )?)
        .await?
        .into_inner()
        .customer_data_export
        .unwrap_or_default();
    assert!(profiles.responses.is_empty() && profiles.tickets.is_empty());
    Ok(())
}
