//! A real SIGTERM to this test process while a slow call is in flight: the call finishes with
//! OK, new calls are no longer accepted, and the server stops cleanly.
//! (Its own test binary: the signal goes to the whole process.)

#[path = "test_api/mod.rs"]
mod test_api;

use std::time::Duration;

use custops_common::auth::AuthSettings;
use custops_common::config::ServerSettings;
use custops_common::server::Application;
use custops_common::service::ServiceKind;
use custops_common::shutdown;
use custops_contracts::custops::common::v1::event_feed_service_server::EventFeedServiceServer;

use test_api::{PATIENCE, TestApi, plain_client, request};

#[tokio::test]
async fn sigterm_lets_an_in_flight_call_finish_with_ok() -> anyhow::Result<()> {
    let mut settings = ServerSettings::local(ServiceKind::Feedback, AuthSettings::Disabled);
    // Far longer than the test waits for the server to stop: it must stop because its last
    // call ended, not because the grace period ran out.
    settings.shutdown_grace = Duration::from_secs(300);
    let api = TestApi::named("a");
    let held = api.held.clone();
    let app = Application::bind(&settings)
        .await?
        .add_api(EventFeedServiceServer::new(api));
    let addr = app.local_addr();
    let draining = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped(shutdown::shutdown_signal()));

    let mut client = plain_client(addr).await?;
    client.get_feed_position(request("")).await?;
    let slow = tokio::spawn(async move { client.get_feed_position(request("hold")).await });
    held.wait_for_in_flight(1).await?;

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill failed");

    // Draining (the server says so): a new connection is not accepted any more.
    tokio::time::timeout(PATIENCE, draining.cancelled())
        .await
        .map_err(|_| anyhow::anyhow!("SIGTERM did not start draining"))?;
    let fresh = tokio::time::timeout(Duration::from_secs(2), plain_client(addr)).await;
    let refused = match fresh {
        Err(_) | Ok(Err(_)) => true,
        Ok(Ok(mut late)) => late.get_feed_position(request("")).await.is_err(),
    };
    assert!(refused, "a new call was accepted after SIGTERM");

    // The call in flight was not cut short: it is still held, the server is still draining
    // (it does not return while a call runs), and once released the call answers OK with the
    // handler's response.
    assert!(
        !slow.is_finished(),
        "the in-flight call ended before its release"
    );
    assert_eq!(held.in_flight(), 1);
    assert!(
        !server.is_finished(),
        "the server stopped with a call in flight"
    );
    held.release();
    let response = slow.await??;
    assert_eq!(response.into_inner().latest_sequence, 7);

    // And the server then stops by itself, long before the grace period ends.
    tokio::time::timeout(Duration::from_secs(30), server).await???;
    Ok(())
}
