//! `custops dev` as a newcomer meets it: a suite started on other ports than the defaults is
//! wired to itself (peers follow the ports given, so a second suite never consumes the first
//! one's feeds), the calls its banner prints work exactly as printed — with the buf the
//! project installs, and with a token minted by `custops token` when authentication is on —
//! and the demo load reports its progress, which segmentation then catches up with.

use std::net::TcpListener;
use std::time::Duration;

use anyhow::Context;
use custops_common::auth::AuthSettings;
use custops_common::client::plain;
use custops_common::config::{Environment, ServiceSettings};
use custops_common::service::ServiceKind;
use custops_contracts::custops::profiles::v1 as profiles;
use custops_contracts::custops::profiles::v1::profiles_service_client::ProfilesServiceClient;
use custops_contracts::custops::segmentation::v1::GetCustomerFactsRequest;
use custops_contracts::custops::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use custops_suite::demo::{self, LoadProgress, catch_up};
use custops_suite::dev::{self, RunningSuite, banner};
use custops_testkit::{TestDatabase, eventually};
use tokio::process::Command;
use tonic::transport::Channel;

const KEY: &str = "dev-test-key-dev-test-key-0123456789";

/// `n` distinct free loopback ports (free when this returns).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind(("127.0.0.1", 0)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?)
}

/// `custops dev`'s settings for this environment, peers wired.
fn dev_settings(pairs: Vec<(String, String)>) -> anyhow::Result<Vec<ServiceSettings>> {
    let mut settings = dev::settings_from_env(Environment::from_pairs(pairs))?;
    dev::wire_peers(&mut settings)?;
    Ok(settings)
}

/// The environment of a suite on `ports` (profiles, segmentation, loyalty, feedback).
fn on_ports(database_url: &str, ports: &[u16]) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        ("CUSTOPS_LISTEN_HOST".to_owned(), "127.0.0.1".to_owned()),
    ];
    for (service, port) in ServiceKind::ALL.into_iter().zip(ports) {
        pairs.push((format!("{}PORT", service.env_prefix()), port.to_string()));
    }
    pairs
}

fn peer(settings: &[ServiceSettings], of: ServiceKind, peer: ServiceKind) -> Option<String> {
    settings
        .iter()
        .find(|s| s.service == of)
        .and_then(|s| s.clients.peers.get(&peer).cloned())
}

#[test]
fn peers_follow_the_ports_the_services_are_given() -> anyhow::Result<()> {
    let ports = [56051, 56052, 56053, 56054];
    let settings = dev_settings(on_ports("postgres://db/x", &ports))?;
    for (service, _) in ServiceKind::ALL.into_iter().zip(ports) {
        for (other, other_port) in ServiceKind::ALL.into_iter().zip(ports) {
            let expected = (other != service).then(|| format!("http://127.0.0.1:{other_port}"));
            assert_eq!(
                peer(&settings, service, other),
                expected,
                "{service} → {other}"
            );
        }
    }

    // An explicit CUSTOPS_<SVC>_URL still wins; a server on every address is reached on
    // loopback; a service asked for port 0 gets a free port its peers are told.
    let mut pairs = on_ports("postgres://db/x", &[56051, 0, 56053, 56054]);
    pairs.retain(|(name, _)| name != "CUSTOPS_LISTEN_HOST");
    pairs.push((
        "CUSTOPS_FEEDBACK_URL".to_owned(),
        "http://feedback.internal:7000".to_owned(),
    ));
    let settings = dev_settings(pairs)?;
    assert_eq!(
        peer(&settings, ServiceKind::Loyalty, ServiceKind::Feedback).as_deref(),
        Some("http://feedback.internal:7000")
    );
    assert_eq!(
        peer(&settings, ServiceKind::Loyalty, ServiceKind::Profiles).as_deref(),
        Some("http://127.0.0.1:56051")
    );
    let segmentation_port = settings
        .iter()
        .find(|s| s.service == ServiceKind::Segmentation)
        .map(|s| s.server.listen_addr.port())
        .unwrap_or(0);
    assert_ne!(segmentation_port, 0);
    assert_eq!(
        peer(&settings, ServiceKind::Profiles, ServiceKind::Segmentation),
        Some(format!("http://127.0.0.1:{segmentation_port}"))
    );
    Ok(())
}

/// The call lines of a banner (between "Try it" and the grpcurl alternative), as a script.
fn banner_script(text: &str) -> anyhow::Result<String> {
    let start = text.find("Try it").context("the banner has no calls")?;
    let calls = &text[start..];
    let end = calls
        .find("or with grpcurl")
        .or_else(|| calls.find("Stop with"))
        .unwrap_or(calls.len());
    Ok(calls[..end]
        .lines()
        .skip(1)
        .map(|line| line.trim_start())
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Runs `script` in bash, failing on its first failing command; its output. Awaited, so the
/// test's runtime goes on serving the calls the script makes.
async fn run_script(script: &str, env: &[(&str, &str)]) -> anyhow::Result<String> {
    let running = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .with_context(|| format!("the banner's calls hung:\n{script}"))??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "the banner's calls failed:\n{script}\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

/// The tools as `custops dev` finds them, with this package's `custops` binary; buf must be
/// there (`make tools`, which `make run` and `make test` run first).
fn tools() -> anyhow::Result<banner::Tools> {
    let tools = banner::Tools {
        custops: env!("CARGO_BIN_EXE_custops").to_owned(),
        ..banner::Tools::find()
    };
    anyhow::ensure!(
        tools.buf_installed,
        "buf is not installed: run `make tools` (it puts buf at {})",
        tools.buf
    );
    Ok(tools)
}

async fn channel(suite: &RunningSuite, service: ServiceKind) -> anyhow::Result<Channel> {
    let addr = suite
        .addr(service)
        .with_context(|| format!("{service} is not running"))?;
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

#[tokio::test]
async fn a_suite_on_other_ports_is_wired_to_itself_and_its_banner_calls_work() -> anyhow::Result<()>
{
    // Arrange: the whole suite on free ports other than the defaults.
    let db = TestDatabase::create().await?;
    let settings = dev_settings(on_ports(db.url(), &free_ports(4)?))?;
    let segmentation_db = settings
        .iter()
        .find(|s| s.service == ServiceKind::Segmentation)
        .map(|s| s.database.clone())
        .context("no segmentation settings")?;
    let suite = dev::start(settings).await?;
    let profiles_addr = suite.addr(ServiceKind::Profiles).context("no profiles")?;

    // Act: the sample data, a small load, reporting every millisecond.
    let mut reports: Vec<LoadProgress> = Vec::new();
    let summary = demo::load(
        plain(channel(&suite, ServiceKind::Profiles).await?),
        20,
        Duration::from_millis(1),
        |progress| reports.push(progress),
    )
    .await?;

    // Assert: progress only grows, and its last report is the whole load.
    assert_eq!(summary.customers, 20);
    assert!(summary.activities_accepted > 0, "{summary:?}");
    for pair in reports.windows(2) {
        assert!(
            pair[0].customers <= pair[1].customers && pair[0].activities <= pair[1].activities,
            "{reports:?}"
        );
    }
    let sent = u64::try_from(summary.activities_accepted + summary.activities_duplicate)?;
    assert_eq!(
        reports.last().copied(),
        Some(LoadProgress {
            customers: 20,
            of: 20,
            activities: sent,
        })
    );

    // Assert: profiles reaches this suite's other three (Customer 360)...
    let mut profiles_client =
        ProfilesServiceClient::new(channel(&suite, ServiceKind::Profiles).await?);
    let customer_id = profiles_client
        .list_customers(profiles::ListCustomersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner()
        .customers
        .first()
        .map(|c| c.customer_id.clone())
        .context("no customer listed")?;
    let view = profiles_client
        .get_customer360(profiles::GetCustomer360Request {
            customer_id: customer_id.clone(),
            sections: Vec::new(),
            section_timeout: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
        })
        .await?
        .into_inner();
    let ok = profiles::Customer360SectionState::Ok as i32;
    let states = [
        view.segments.and_then(|s| s.status).map(|s| s.state),
        view.loyalty.and_then(|s| s.status).map(|s| s.state),
        view.feedback.and_then(|s| s.status).map(|s| s.state),
    ];
    assert_eq!(states, [Some(ok); 3]);

    // ...and segmentation follows this suite's profiles feed to its head.
    let segmentation =
        SegmentationServiceClient::new(channel(&suite, ServiceKind::Segmentation).await?);
    let learned = eventually(Duration::from_secs(60), || {
        let mut segmentation = segmentation.clone();
        let customer_id = customer_id.clone();
        async move {
            segmentation
                .get_customer_facts(GetCustomerFactsRequest { customer_id })
                .await
                .is_ok()
        }
    })
    .await;
    assert!(
        learned,
        "segmentation never learned a customer of its own profiles"
    );
    let follower = catch_up::Follower::connect(
        &format!("http://{profiles_addr}"),
        &AuthSettings::Disabled,
        &segmentation_db,
    )
    .await?;
    let caught_up = eventually(Duration::from_secs(120), || {
        let mut follower = follower.clone();
        async move {
            follower
                .positions()
                .await
                .is_ok_and(|p| p.head > 0 && p.applied == p.head)
        }
    })
    .await;
    assert!(caught_up, "segmentation never reached profiles' feed head");

    // Assert: the banner's calls work as printed (buf at its real path).
    let addrs: Vec<_> = suite.addrs().collect();
    let text = banner::how_to_call(&addrs, false, &tools()?);
    let output = run_script(&banner_script(&text)?, &[]).await?;
    for expected in [
        "custops.profiles.v1.ProfilesService/ListCustomers",
        "SERVING",
        &customer_id,
    ] {
        assert!(output.contains(expected), "{expected} not in:\n{output}");
    }
    suite.stop().await
}

#[tokio::test]
async fn with_authentication_on_the_banner_mints_the_token_its_calls_need() -> anyhow::Result<()> {
    // Arrange: profiles alone, authentication on, on a port of its own.
    let db = TestDatabase::create().await?;
    let mut pairs = on_ports(db.url(), &free_ports(4)?);
    pairs.push(("CUSTOPS_AUTH_MODE".to_owned(), "jwt".to_owned()));
    pairs.push(("CUSTOPS_AUTH_JWT_SECRET".to_owned(), KEY.to_owned()));
    let settings: Vec<_> = dev_settings(pairs)?
        .into_iter()
        .filter(|s| s.service == ServiceKind::Profiles)
        .collect();
    assert!(settings.iter().all(|s| s.server.auth.is_enabled()));
    let suite = dev::start(settings).await?;
    let addrs: Vec<_> = suite.addrs().collect();

    // Act
    let text = banner::how_to_call(&addrs, true, &tools()?);
    let script = banner_script(&text)?;
    let output = run_script(&script, &[("CUSTOPS_AUTH_JWT_SECRET", KEY)]).await?;

    // Assert: every call passed, the listing with the token the banner minted. Without the
    // token the same listing is refused, so the token is what opened it.
    assert!(script.contains("TOKEN=$("), "{script}");
    assert!(output.contains("SERVING"), "{output}");
    let without_token = script.replace(r#" -H "authorization: Bearer $TOKEN""#, "");
    let refused = run_script(&without_token, &[("CUSTOPS_AUTH_JWT_SECRET", KEY)]).await;
    let refused = refused.err().map(|error| format!("{error:#}"));
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("unauthenticated")),
        "{refused:?}"
    );
    suite.stop().await
}
