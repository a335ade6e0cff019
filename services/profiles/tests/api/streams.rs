//! Client streams against the call budgets of the shared runtime: idle imports cannot lock
//! unary calls out, a quiet import is ended, and an import that keeps sending may run past
//! the unary deadline cap.

use std::time::{Duration, Instant};

use custops_contracts::custops::profiles::v1 as pb;
use futures_util::StreamExt;
use tonic::Code;

use crate::support::{create, customer, purchase, spawn_app_with, unique_email};

fn item(customer_id: &str, event_id: &str) -> pb::ImportActivitiesRequest {
    pb::ImportActivitiesRequest {
        activity: Some(purchase(customer_id, event_id, 1000)),
        customer_identity: None,
    }
}

/// An import stream that sends one item, then stays open and silent.
fn idle_stream(
    customer_id: &str,
    tag: usize,
) -> impl tokio_stream::Stream<Item = pb::ImportActivitiesRequest> + use<> {
    futures_util::stream::once(std::future::ready(item(
        customer_id,
        &format!("idle-{tag}"),
    )))
    .chain(futures_util::stream::pending())
}

#[tokio::test]
async fn idle_import_streams_never_starve_unary_calls_and_are_ended_when_quiet()
-> anyhow::Result<()> {
    let app = spawn_app_with(|settings| {
        settings.server.max_client_streams = 8;
        settings.server.caller_share_percent = 100;
        settings.server.client_stream_idle_timeout = Duration::from_secs(1);
    })
    .await?;
    let c = create(&app, customer(&unique_email("idle"))).await?;

    // 40 streams send one item each and go quiet: 8 are admitted, the rest refused at once.
    let mut streams = Vec::new();
    for tag in 0..40 {
        let mut client = app.client.clone();
        let stream = idle_stream(&c.customer_id, tag);
        streams.push(tokio::spawn(async move {
            client.import_activities(stream).await.map(|_| ())
        }));
    }
    // Meanwhile unary calls are answered as usual.
    let mut client = app.client.clone();
    let started = Instant::now();
    for _ in 0..20 {
        client
            .get_customer(pb::GetCustomerRequest {
                customer_id: c.customer_id.clone(),
            })
            .await?;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "unary calls waited {:?}",
        started.elapsed()
    );

    // The quiet ones are ended by the idle timeout, not by the test.
    let mut codes = Vec::new();
    for stream in streams {
        let outcome = tokio::time::timeout(Duration::from_secs(10), stream).await??;
        codes.push(outcome.err().map(|s| s.code()));
    }
    let refused = codes
        .iter()
        .filter(|c| **c == Some(Code::ResourceExhausted))
        .count();
    let ended = codes
        .iter()
        .filter(|c| **c == Some(Code::DeadlineExceeded))
        .count();
    assert_eq!(refused + ended, 40, "{codes:?}");
    assert!((1..=8).contains(&ended), "{codes:?}");
    Ok(())
}

#[tokio::test]
async fn an_import_that_keeps_sending_outlives_the_unary_deadline_cap() -> anyhow::Result<()> {
    let app = spawn_app_with(|settings| {
        settings.server.max_call_timeout = Duration::from_secs(1);
        settings.server.client_stream_idle_timeout = Duration::from_secs(1);
    })
    .await?;
    let c = create(&app, customer(&unique_email("long"))).await?;
    let id = c.customer_id.clone();
    // 25 items, one every 100 ms: 2.5 s in all, more than twice the 1 s cap.
    let items = futures_util::stream::iter(0..25).then(move |i| {
        let id = id.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            item(&id, &format!("long-{i}"))
        }
    });
    let started = Instant::now();
    let response = app
        .client
        .clone()
        .import_activities(items)
        .await?
        .into_inner();
    assert!(started.elapsed() > Duration::from_secs(2));
    assert_eq!(response.accepted_count, 25);
    Ok(())
}
