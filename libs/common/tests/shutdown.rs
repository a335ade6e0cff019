//! A real SIGTERM to this test process while a slow call is in flight: the call finishes with
//! OK, new calls are no longer accepted, and the server stops cleanly.
//! (Its own test binary: the signal goes to the whole process.)

#[path = "test_api/mod.rs"]
mod test_api;

use std::time::{Duration, Instant};

use custops_common::auth::AuthSettings;
use custops_common::config::ServerSettings;
use custops_common::server::Application;
use custops_common::service::ServiceKind;
use custops_common::shutdown;
use custops_contracts::custops::common::v1::event_feed_service_server::EventFeedServiceServer;

use test_api::{TestApi, plain_client, request};

#[tokio::test]
async fn sigterm_lets_an_in_flight_call_finish_with_ok() -> anyhow::Result<()> {
    let mut settings = ServerSettings::local(ServiceKind::Feedback, AuthSettings::Disabled);
    settings.shutdown_grace = Duration::from_secs(10);
    let app = Application::bind(&settings)
        .await?
        .add_api(EventFeedServiceServer::new(TestApi {
            name: "a".to_owned(),
            peer: None,
        }));
    let addr = app.local_addr();
    let server = tokio::spawn(app.run_until_stopped(shutdown::shutdown_signal()));

    let mut client = plain_client(addr).await?;
    client.get_feed_position(request("")).await?;
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let result = client.get_feed_position(request("sleep:1500")).await;
        (result, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill failed");

    // Draining: a new connection is not accepted any more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = tokio::time::timeout(Duration::from_secs(2), plain_client(addr)).await;
    let refused = match fresh {
        Err(_) | Ok(Err(_)) => true,
        Ok(Ok(mut late)) => late.get_feed_position(request("")).await.is_err(),
    };
    assert!(refused, "a new call was accepted after SIGTERM");

    let (result, took) = slow.await?;
    let response = result?;
    assert_eq!(response.into_inner().latest_sequence, 7);
    assert!(
        took >= Duration::from_millis(1500),
        "the call was cut short: {took:?}"
    );

    // And the server then stops by itself, well before the grace period ends.
    tokio::time::timeout(Duration::from_secs(5), server).await???;
    Ok(())
}
