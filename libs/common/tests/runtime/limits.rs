//! Load shedding, deadlines, panics and request ids.

use std::time::{Duration, Instant};

use custops_common::auth::AuthSettings;
use custops_common::config::ServerSettings;
use custops_common::service::ServiceKind;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::test_api::{TestApi, TestServer, plain_client, request};

fn api() -> TestApi {
    TestApi {
        name: "a".to_owned(),
        peer: None,
    }
}

#[tokio::test]
async fn over_the_limit_calls_get_resource_exhausted_at_once() -> anyhow::Result<()> {
    let mut settings = ServerSettings::local(ServiceKind::Profiles, AuthSettings::Disabled);
    settings.max_concurrent_calls = 2;
    settings.caller_share_percent = 100;
    let server = TestServer::start(&settings, api()).await?;

    // Two slow calls take both slots.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut client = plain_client(server.addr).await?;
        slow.push(tokio::spawn(async move {
            client.get_feed_position(request("sleep:2000")).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Twenty more are refused immediately, not queued behind the slow ones.
    let mut client = plain_client(server.addr).await?;
    let started = Instant::now();
    for _ in 0..20 {
        let status = client.get_feed_position(request("")).await.err();
        assert_eq!(status.map(|s| s.code()), Some(Code::ResourceExhausted));
    }
    let shed_in = started.elapsed();
    assert!(
        shed_in < Duration::from_millis(1000),
        "20 refusals took {shed_in:?}: they waited for a slot"
    );
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
    let server = TestServer::start(&settings, api()).await?;
    let mut client = plain_client(server.addr).await?;

    // The caller asks for 200 ms. The header is set by hand: `set_timeout` would also make the
    // client give up on its own (CANCELLED), and it is the server's enforcement under test.
    let mut asked = request("sleep:3000");
    asked.metadata_mut().insert("grpc-timeout", "200m".parse()?);
    let started = Instant::now();
    let status = client.get_feed_position(asked).await.err();
    // tonic's transport races this layer on the same deadline and answers CANCELLED when it
    // wins (possible on a loaded machine); either way the work stopped at the deadline.
    let code = status.map(|s| s.code());
    assert!(
        matches!(code, Some(Code::DeadlineExceeded | Code::Cancelled)),
        "{code:?}"
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(700),
        "the server let it run {took:?}"
    );

    // No deadline from the caller: the server's cap (800 ms) applies.
    let status = client.get_feed_position(request("sleep:3000")).await.err();
    assert_eq!(
        status.as_ref().map(|s| s.code()),
        Some(Code::DeadlineExceeded),
        "{status:?}"
    );

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
    let mut settings = ServerSettings::local(ServiceKind::Profiles, AuthSettings::Disabled);
    settings.handshake_timeout = Duration::from_secs(1);
    let server = TestServer::start(&settings, api()).await?;

    // Fifty silent sockets, and one that sends half of the preface then stops.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tokio::net::TcpStream::connect(server.addr).await?);
    }
    let mut partial = tokio::net::TcpStream::connect(server.addr).await?;
    partial.write_all(b"PRI * HTTP/2.0\r\n").await?;

    // A real client connected meanwhile keeps working past the timeout.
    let mut client = plain_client(server.addr).await?;
    client.get_feed_position(request("")).await?;

    // Every one of them is closed by the server (a read sees EOF or a reset) well before the
    // 10 s the test allows; without the deadline they would stay open.
    let started = Instant::now();
    for mut socket in silent.into_iter().chain([partial]) {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    // Anything the server sent before closing (a GOAWAY) is read past.
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "a socket was still open after {:?}",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
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
    let server = TestServer::start(&settings, api()).await?;
    let issuer = TokenIssuer::from_settings(&auth).ok_or_else(|| anyhow::anyhow!("no issuer"))?;
    let as_caller = |caller: &str, action: &str| -> anyhow::Result<_> {
        let token = issuer.mint(caller, &["loyalty.events.read"], Duration::from_secs(60))?;
        let mut req = request(action);
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        Ok(req)
    };

    // Caller A fills its half of the budget with slow calls.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut client = plain_client(server.addr).await?;
        let req = as_caller("greedy", "sleep:1500")?;
        slow.push(tokio::spawn(
            async move { client.get_feed_position(req).await },
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A third call of A is refused; caller B still gets in.
    let mut client = plain_client(server.addr).await?;
    let refused = client
        .get_feed_position(as_caller("greedy", "")?)
        .await
        .err();
    assert_eq!(refused.map(|s| s.code()), Some(Code::ResourceExhausted));
    client.get_feed_position(as_caller("modest", "")?).await?;
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

    // Closing a stream gives its slot back (once the server sees the stream go).
    drop(open.pop());
    let started = Instant::now();
    loop {
        match client.subscribe(SubscribeRequest::default()).await {
            Ok(stream) => {
                open.push(stream.into_inner());
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "the closed stream's slot never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
    drop(open);
    drop(client);
    server.shutdown().await
}
