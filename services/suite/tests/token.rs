//! `custops token` mints a token the real services accept: a loyalty service started with auth
//! on refuses calls without it, refuses it for a method whose scope it lacks, and takes it
//! where the scope matches. Health stays open throughout.

use std::process::Command;

use custops_common::auth::AuthSettings;
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::GetFeedPositionRequest;
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use custops_contracts::custops::loyalty::v1::GetProgramRequest;
use custops_contracts::custops::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use custops_suite::dev;
use custops_testkit::TestDatabase;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const KEY: &str = "token-test-key-token-test-key-0123";

fn custops_token(scopes: &str) -> anyhow::Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_custops"))
        .args(["token", "--service", "ops-test", "--scopes", scopes])
        .env_clear()
        .env("CUSTOPS_AUTH_JWT_SECRET", KEY)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "custops token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn bearer<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

#[tokio::test]
async fn a_minted_token_opens_exactly_its_scopes_on_a_real_service() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let mut settings = ServiceSettings::for_local(ServiceKind::Loyalty, db.url());
    settings.server.auth = AuthSettings::jwt(KEY, "custops").map_err(anyhow::Error::msg)?;
    let suite = dev::start(vec![settings]).await?;
    let addr = suite
        .addr(ServiceKind::Loyalty)
        .ok_or_else(|| anyhow::anyhow!("loyalty did not start"))?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut feed = EventFeedServiceClient::new(channel.clone());
    let mut loyalty = LoyaltyServiceClient::new(channel.clone());

    let status = feed
        .get_feed_position(GetFeedPositionRequest {})
        .await
        .err();
    assert_eq!(status.map(|s| s.code()), Some(Code::Unauthenticated));

    let token = custops_token("loyalty.events.read")?;
    feed.get_feed_position(bearer(GetFeedPositionRequest {}, &token)?)
        .await?;
    let status = loyalty
        .get_program(bearer(GetProgramRequest::default(), &token)?)
        .await
        .err();
    assert_eq!(status.map(|s| s.code()), Some(Code::PermissionDenied));

    // With `loyalty.read` the call passes auth and reaches the service (which may still answer
    // UNIMPLEMENTED or a validation error, but never an auth error).
    let token = custops_token("loyalty.read")?;
    let status = loyalty
        .get_program(bearer(GetProgramRequest::default(), &token)?)
        .await
        .err()
        .map(|s| s.code());
    assert!(
        !matches!(status, Some(Code::Unauthenticated | Code::PermissionDenied)),
        "{status:?}"
    );

    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    assert_eq!(health.into_inner().status, 1);
    suite.stop().await
}

#[test]
fn a_scope_no_method_requires_is_refused_with_the_valid_ones_listed() -> anyhow::Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_custops"))
        .args([
            "token",
            "--service",
            "ops-test",
            "--scopes",
            "loyalty.read,loyalty.everything",
        ])
        .env_clear()
        .env("CUSTOPS_AUTH_JWT_SECRET", KEY)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "no token is printed");
    assert!(
        stderr.contains("unknown scope(s) loyalty.everything;"),
        "{stderr}"
    );
    assert!(
        stderr.contains("valid scopes: ") && stderr.contains("loyalty.points.write"),
        "{stderr}"
    );
    Ok(())
}
