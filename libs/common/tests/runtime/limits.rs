//! Load shedding, deadlines, panics and request ids.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use custops_common::auth::AuthSettings;
use custops_common::config::ServerSettings;
use custops_common::service::ServiceKind;
use custops_testkit::eventually;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::test_api::{PATIENCE, TestApi, TestServer, plain_client, request};

fn api() -> TestApi {
    TestApi::named("a")
}

#[tokio::test]
async fn over_the_limit_calls_get_resource_exhausted_at_once() -> anyhow::Result<()> {
    let mut settings = ServerSettings::local(ServiceKind::Profiles, AuthSettings::Disabled);
    settings.max_concurrent_calls = 2;
    settings.caller_share_percent = 100;
    let api = api();
    let held = api.held.clone();
    let server = TestServer::start(&settings, api).await?;

    // Two held calls take both slots; the handler says when both have started.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut client = plain_client(server.addr).await?;
        slow.push(tokio::spawn(async move {
            client.get_feed_position(request("hold")).await
        }));
    }
    held.wait_for_in_flight(2).await?;

    // Twenty more are refused while both slow calls are still held: not queued behind them
    // (a queued call would wait for the release, which comes only after these twenty).
    let mut client = plain_client(server.addr).await?;
    for _ in 0..20 {
        let answer = tokio::time::timeout(PATIENCE, client.get_feed_position(request("")))
            .await
            .map_err(|_| anyhow::anyhow!("a call over the limit waited for a slot"))?;
        assert_eq!(
            answer.err().map(|s| s.code()),
            Some(Code::ResourceExhausted)
        );
    }
    assert_eq!(held.in_flight(), 2);
    assert!(slow.iter().all(|call| !call.is_finished()));
    // Health is never shed: an overloaded pod must not also fail its liveness probe.
    let channel = tonic::transport::Channel::from_shared(server.url())?
        .connect()
        .await?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;

    // The slow calls finish normally, and then the slots are free again.
    held.release();
    for call in slow {
        call.await??;
    }
    client.get_feed_position(request("")).await?;
    server.shutdown().await
}

#[tokio::test]
async fn the_callers_deadline_is_enforced_and_capped_by_the_server() -> anyhow::Result<()> {
    let mut settings = ServerSettings::local(ServiceKind::Profiles, AuthSettings::Disabled);
    settings.max_call_timeout = Duration::from_millis(800);
    let api = api();
    let held = api.held.clone();
    let server = TestServer::start(&settings, api).await?;
    let mut client = plain_client(server.addr).await?;

    // The caller asks for 200 ms for a call that is never released. The header is set by
    // hand: `set_timeout` would also make the client give up on its own (CANCELLED), and it is
    // the server's enforcement under test. tonic's transport races this layer on the same
    // deadline and answers CANCELLED when it wins (possible on a loaded machine, so a few
    // tries are allowed); when the layer answers, it names the caller's deadline (less its
    // margin), not the server's cap.
    let mut answered_by_the_layer = false;
    for _ in 0..5 {
        let mut asked = request("hold");
        asked.metadata_mut().insert("grpc-timeout", "200m".parse()?);
        let status = tokio::time::timeout(PATIENCE, client.get_feed_position(asked))
            .await
            .map_err(|_| anyhow::anyhow!("the caller's deadline was not enforced"))?
            .err()
            .ok_or_else(|| anyhow::anyhow!("a held call answered OK"))?;
        match status.code() {
            Code::DeadlineExceeded => {
                assert!(status.message().contains("180ms"), "{status:?}");
                answered_by_the_layer = true;
                break;
            }
            Code::Cancelled => {}
            _ => anyhow::bail!("unexpected answer: {status:?}"),
        }
    }
    assert!(answered_by_the_layer, "tonic's timer won every race");
    // Either way the work stopped at the deadline: the server dropped the held handler.
    held.wait_for_in_flight(0).await?;

    // No deadline from the caller: the server's cap (800 ms) applies.
    let status = tokio::time::timeout(PATIENCE, client.get_feed_position(request("hold")))
        .await
        .map_err(|_| anyhow::anyhow!("the server's cap was not enforced"))?
        .err();
    assert_eq!(
        status.as_ref().map(|s| s.code()),
        Some(Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(
        status
            .as_ref()
            .is_some_and(|s| s.message().contains("800ms")),
        "{status:?}"
    );
    held.wait_for_in_flight(0).await?;

    // A call within its deadline is untouched.
    client.get_feed_position(request("sleep:50")).await?;
    server.shutdown().await
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_and_the_server_lives_on() -> anyhow::Result<()> {
    let settings = ServerSettings::local(ServiceKind::Profiles, AuthSettings::Disabled);
    let server = TestServer::start(&settings, api()).await?;
    let mut client = plain_client(server.addr).await?;
    for _ in 0..3 {
        let status = client.get_feed_position(request("panic")).await.err();
        let status = status.ok_or_else(|| anyhow::anyhow!("the panic answered OK"))?;
        assert_eq!(status.code(), Code::Internal);
        assert!(
            !status.message().contains("on purpose"),
            "panic text leaked: {status:?}"
        );
    }
    client.get_feed_position(request("")).await?;
    server.shutdown().await
}

#[tokio::test]
async fn the_request_id_is_kept_or_made_and_echoed() -> anyhow::Result<()> {
    let settings = ServerSettings::local(ServiceKind::Profiles, AuthSettings::Disabled);
    let server = TestServer::start(&settings, api()).await?;
    let mut client = plain_client(server.addr).await?;
    let mut given = request("");
    given
        .metadata_mut()
        .insert("x-request-id", "req-42".parse()?);
    let response = client.get_feed_position(given).await?;
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("req-42")
    );
    let response = client.get_feed_position(request("")).await?;
    let made = response
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "made id: {made:?}");
    server.shutdown().await
}

#[tokio::test]
async fn sockets_that_never_speak_http2_are_closed_after_the_handshake_timeout()
-> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    /// Waits until the server closes `socket` (a read sees EOF or a reset), reading past
    /// anything it sent before closing (a GOAWAY).
    async fn closed(mut socket: TcpStream) {
        let mut buf = [0u8; 64];
        while let Ok(1..) = socket.read(&mut buf).await {}
    }
    let mut settings = ServerSettings::local(ServiceKind::Profiles, AuthSettings::Disabled);
    settings.handshake_timeout = Duration::from_secs(1);
    let server = TestServer::start(&settings, api()).await?;

    // Fifty silent sockets, and one that sends half of the preface then stops.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(server.addr).await?);
    }
    let mut partial = TcpStream::connect(server.addr).await?;
    partial.write_all(b"PRI * HTTP/2.0\r\n").await?;
    silent.push(partial);

    // A real client connected meanwhile, and one more silent socket after it: once that one
    // is closed, the client's connection is past its own handshake deadline too.
    let mut client = plain_client(server.addr).await?;
    client.get_feed_position(request("")).await?;
    silent.push(TcpStream::connect(server.addr).await?);

    // Every one of them is closed by the server; without the deadline they would stay open.
    // The wait is half the default timeout (10 s), so it is the configured 1 s that closed
    // them, not the default.
    let all_closed = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::future::join_all(silent.into_iter().map(closed)),
    )
    .await;
    assert!(all_closed.is_ok(), "a silent socket was still open");

    // The real client keeps working past the timeout.
    client.get_feed_position(request("")).await?;
    drop(client);
    server.shutdown().await
}

#[tokio::test]
async fn one_caller_cannot_take_the_whole_unary_budget() -> anyhow::Result<()> {
    use custops_common::auth::TokenIssuer;
    const KEY: &str = "limits-key-limits-key-limits-key-01";
    let auth = AuthSettings::jwt(KEY, "custops").map_err(anyhow::Error::msg)?;
    let mut settings = ServerSettings::local(ServiceKind::Loyalty, auth.clone());
    settings.max_concurrent_calls = 4;
    settings.caller_share_percent = 50;
    let api = api();
    let held = api.held.clone();
    let server = TestServer::start(&settings, api).await?;
    let issuer = TokenIssuer::from_settings(&auth).ok_or_else(|| anyhow::anyhow!("no issuer"))?;
    let as_caller = |caller: &str, action: &str| -> anyhow::Result<_> {
        let token = issuer.mint(caller, &["loyalty.events.read"], Duration::from_secs(60))?;
        let mut req = request(action);
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        Ok(req)
    };

    // Caller A fills its half of the budget with held calls.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut client = plain_client(server.addr).await?;
        let req = as_caller("greedy", "hold")?;
        slow.push(tokio::spawn(
            async move { client.get_feed_position(req).await },
        ));
    }
    held.wait_for_in_flight(2).await?;

    // A third call of A is refused; caller B still gets in.
    let mut client = plain_client(server.addr).await?;
    let refused =
        tokio::time::timeout(PATIENCE, client.get_feed_position(as_caller("greedy", "")?))
            .await
            .map_err(|_| anyhow::anyhow!("a call over the caller's share waited for a slot"))?
            .err();
    assert_eq!(refused.map(|s| s.code()), Some(Code::ResourceExhausted));
    client.get_feed_position(as_caller("modest", "")?).await?;
    assert!(slow.iter().all(|call| !call.is_finished()));
    held.release();
    for call in slow {
        call.await??;
    }
    // Its slots back, A gets in again.
    client.get_feed_position(as_caller("greedy", "")?).await?;
    drop(client);
    server.shutdown().await
}

#[tokio::test]
async fn open_server_streams_are_capped_and_do_not_take_unary_slots() -> anyhow::Result<()> {
    use custops_contracts::custops::common::v1::SubscribeRequest;
    let mut settings = ServerSettings::local(ServiceKind::Profiles, AuthSettings::Disabled);
    settings.max_server_streams = 3;
    settings.max_concurrent_calls = 2;
    settings.caller_share_percent = 100;
    let server = TestServer::start(&settings, api()).await?;
    let mut client = plain_client(server.addr).await?;

    // Three streams open and stay open; a fourth is refused at once.
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = client
            .subscribe(SubscribeRequest::default())
            .await?
            .into_inner();
        stream.message().await?;
        open.push(stream);
    }
    let fourth = client.subscribe(SubscribeRequest::default()).await.err();
    assert_eq!(fourth.map(|s| s.code()), Some(Code::ResourceExhausted));

    // Unary calls have their own budget: the open streams take none of it.
    for _ in 0..5 {
        client.get_feed_position(request("")).await?;
    }

    // Closing a stream gives its slot back (once the server sees the stream go): a new one
    // opens, and until then the only refusal is RESOURCE_EXHAUSTED.
    drop(open.pop());
    let last = Arc::new(Mutex::new(None));
    let reopened = eventually(PATIENCE, || {
        let mut client = client.clone();
        let last = Arc::clone(&last);
        async move {
            let answer = client.subscribe(SubscribeRequest::default()).await;
            let refused = matches!(&answer, Err(s) if s.code() == Code::ResourceExhausted);
            if let Ok(mut last) = last.lock() {
                *last = Some(answer.map(tonic::Response::into_inner));
            }
            !refused
        }
    })
    .await;
    assert!(reopened, "the closed stream's slot never came back");
    let answer = last
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .take()
        .ok_or_else(|| anyhow::anyhow!("no answer"))?;
    open.push(answer?);
    drop(open);
    drop(client);
    server.shutdown().await
}
