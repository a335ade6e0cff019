//! The client builder: balancing over every resolved address, tokens on outgoing calls, and
//! retries of idempotent calls.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use custops_common::auth::AuthSettings;
use custops_common::client::{ClientBuilder, Resolver, RetryPolicy, retry_idempotent};
use custops_common::config::ServerSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use tonic::{Code, Status};

use crate::test_api::{TestApi, TestServer, request};

/// A resolver whose answer the test changes, as DNS would when pods come and go.
fn fixed_resolver(addrs: Arc<Mutex<Vec<SocketAddr>>>) -> Resolver {
    Arc::new(move |_host: String, _port: u16| {
        let answer = addrs.lock().map(|a| a.clone()).unwrap_or_default();
        Box::pin(async move { Ok(answer) })
    })
}

async fn served_by(
    client: &mut EventFeedServiceClient<custops_common::client::ServiceChannel>,
) -> anyhow::Result<String> {
    let response = client.get_feed_position(request("")).await?;
    Ok(response
        .metadata()
        .get("x-server")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test]
async fn calls_spread_over_every_resolved_replica_and_follow_changes() -> anyhow::Result<()> {
    let settings = ServerSettings::local(ServiceKind::Loyalty, AuthSettings::Disabled);
    let a = TestServer::start(&settings, TestApi::named("a")).await?;
    let b = TestServer::start(&settings, TestApi::named("b")).await?;
    let answer = Arc::new(Mutex::new(vec![a.addr, b.addr]));
    let channel = ClientBuilder::new("http://loyalty-headless:50053", "feedback")
        .resolver(fixed_resolver(Arc::clone(&answer)))
        .resolve_every(Duration::from_millis(100))
        .build()?;
    let mut client = EventFeedServiceClient::new(channel);

    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..60 {
        *seen.entry(served_by(&mut client).await?).or_default() += 1;
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["a", "b"],
        "{seen:?}"
    );

    // Replica b leaves the answer (scaled down): after a re-resolve every call goes to a.
    if let Ok(mut addrs) = answer.lock() {
        *addrs = vec![a.addr];
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..20 {
        assert_eq!(served_by(&mut client).await?, "a");
    }
    a.shutdown().await?;
    b.shutdown().await
}

#[tokio::test]
async fn outgoing_calls_carry_a_token_naming_the_caller() -> anyhow::Result<()> {
    let auth = AuthSettings::jwt("a-shared-key-of-at-least-32-bytes!", "custops")
        .map_err(anyhow::Error::msg)?;
    let settings = ServerSettings::local(ServiceKind::Loyalty, auth.clone());
    let server = TestServer::start(&settings, TestApi::named("a")).await?;

    let channel = ClientBuilder::new(server.url(), "feedback")
        .auth(&auth, &["loyalty.events.read"])
        .build()?;
    let response = EventFeedServiceClient::new(channel)
        .get_feed_position(request("whoami"))
        .await?;
    assert_eq!(
        response
            .metadata()
            .get("x-caller")
            .and_then(|v| v.to_str().ok()),
        Some("feedback")
    );

    // The same builder without the scope is refused by the server.
    let channel = ClientBuilder::new(server.url(), "feedback")
        .auth(&auth, &["loyalty.read"])
        .build()?;
    let refused = EventFeedServiceClient::new(channel)
        .get_feed_position(request(""))
        .await
        .err();
    assert_eq!(refused.map(|s| s.code()), Some(Code::PermissionDenied));
    server.shutdown().await
}

#[tokio::test]
async fn idempotent_calls_are_retried_on_unavailable_only() -> anyhow::Result<()> {
    let policy = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    };
    let attempts = AtomicU32::new(0);
    let result = retry_idempotent(policy, || async {
        match attempts.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => Err(Status::unavailable("restarting")),
            _ => Ok("done"),
        }
    })
    .await;
    assert_eq!(result.ok(), Some("done"));
    assert_eq!(attempts.load(Ordering::SeqCst), 3);

    // Other errors are answers, not retried.
    let attempts = AtomicU32::new(0);
    let result: Result<(), Status> = retry_idempotent(policy, || async {
        attempts.fetch_add(1, Ordering::SeqCst);
        Err(Status::failed_precondition("insufficient points"))
    })
    .await;
    assert_eq!(
        result.err().map(|s| s.code()),
        Some(Code::FailedPrecondition)
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 1);

    // Attempts are bounded.
    let attempts = AtomicU32::new(0);
    let result: Result<(), Status> = retry_idempotent(policy, || async {
        attempts.fetch_add(1, Ordering::SeqCst);
        Err(Status::unavailable("down"))
    })
    .await;
    assert_eq!(result.err().map(|s| s.code()), Some(Code::Unavailable));
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
    Ok(())
}
