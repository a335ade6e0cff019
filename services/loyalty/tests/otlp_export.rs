//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the real binary exports its spans and RPC metrics
//! over OTLP/gRPC: a stand-in collector started by the test receives them, named after the
//! service, and the last ones arrive on SIGTERM (telemetry is flushed at shutdown).

use std::time::Duration;

use custops_contracts::custops::common::v1::GetFeedPositionRequest;
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use custops_testkit::TestDatabase;
use custops_testkit::otlp::Collector;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test]
async fn spans_and_rpc_metrics_reach_the_collector() -> anyhow::Result<()> {
    let collector = Collector::start().await?;

    let db = TestDatabase::create().await?;
    let port = free_port()?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_custops-loyalty"))
        .env_clear()
        .env("DATABASE_URL", db.url())
        .env("CUSTOPS_AUTH_MODE", "disabled")
        .env("CUSTOPS_LISTEN_HOST", "127.0.0.1")
        .env("CUSTOPS_LOYALTY_PORT", port.to_string())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;

    // Wait until it serves, then make a call.
    let url = format!("http://127.0.0.1:{port}");
    let mut channel = None;
    for _ in 0..100 {
        if let Ok(c) = tonic::transport::Channel::from_shared(url.clone())?
            .connect()
            .await
        {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let channel = channel.ok_or_else(|| anyhow::anyhow!("custops-loyalty never listened"))?;
    EventFeedServiceClient::new(channel)
        .get_feed_position(GetFeedPositionRequest {})
        .await?;

    let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    anyhow::ensure!(killed.success(), "kill failed");
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait()).await??;
    assert!(exit.success(), "exit: {exit:?}");

    let spans = collector.spans();
    assert!(
        spans.contains(&(
            "custops-loyalty".to_owned(),
            "custops.common.v1.EventFeedService/GetFeedPosition".to_owned()
        )),
        "spans received: {spans:?}"
    );
    let metrics: Vec<(String, String)> = collector
        .points()
        .into_iter()
        .map(|point| (point.service_name, point.metric))
        .collect();
    assert!(
        metrics.contains(&(
            "custops-loyalty".to_owned(),
            "rpc.server.duration".to_owned()
        )),
        "metrics received: {metrics:?}"
    );
    Ok(())
}
