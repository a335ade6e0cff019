//! TLS and mTLS with certificates generated for the test (rcgen).

use std::net::{IpAddr, Ipv4Addr};

use custops_common::auth::AuthSettings;
use custops_common::client::ClientBuilder;
use custops_common::config::ServerSettings;
use custops_common::service::ServiceKind;
use custops_common::tls::{ClientTls, PemIdentity, ServerTls};
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

use crate::test_api::{TestApi, TestServer, request};

/// A throw-away CA and a leaf it signed for 127.0.0.1 / localhost, usable as server and client.
struct Pki {
    ca_pem: String,
    leaf: PemIdentity,
    /// Signed by a different CA: a stranger's certificate.
    stranger: PemIdentity,
}

fn ca(name: &str) -> anyhow::Result<(String, Issuer<'static, KeyPair>)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

fn leaf(issuer: &Issuer<'static, KeyPair>) -> anyhow::Result<PemIdentity> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params
        .distinguished_name
        .push(DnType::CommonName, "loyalty");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, issuer)?;
    Ok(PemIdentity {
        cert: cert.pem().into_bytes(),
        key: key.serialize_pem().into_bytes(),
    })
}

fn pki() -> anyhow::Result<Pki> {
    let (ca_pem, issuer) = ca("custops test CA")?;
    let (_, other) = ca("someone else's CA")?;
    Ok(Pki {
        leaf: leaf(&issuer)?,
        stranger: leaf(&other)?,
        ca_pem,
    })
}

fn mtls_settings(pki: &Pki) -> ServerSettings {
    let mut settings = ServerSettings::local(ServiceKind::Loyalty, AuthSettings::Disabled);
    settings.tls = Some(ServerTls {
        identity: pki.leaf.clone(),
        client_ca: Some(pki.ca_pem.clone().into_bytes()),
    });
    settings
}

fn api() -> TestApi {
    TestApi::named("tls")
}

async fn mtls_server(pki: &Pki) -> anyhow::Result<TestServer> {
    TestServer::start(&mtls_settings(pki), api()).await
}

#[tokio::test]
async fn probes_get_plaintext_health_on_its_own_port_and_nothing_else() -> anyhow::Result<()> {
    use custops_common::server::Application;
    use custops_contracts::custops::common::v1::event_feed_service_server::EventFeedServiceServer;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let pki = pki()?;
    let mut settings = mtls_settings(&pki);
    settings.health_addr = Some("127.0.0.1:0".parse()?);
    let app = Application::bind(&settings)
        .await?
        .add_api(EventFeedServiceServer::new(api()));
    let health_addr = app
        .health_addr()
        .ok_or_else(|| anyhow::anyhow!("no health listener"))?;
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));

    let channel = tonic::transport::Channel::from_shared(format!("http://{health_addr}"))?
        .connect()
        .await?;
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status;
    assert_eq!(status, 1, "SERVING");
    // The API itself is not reachable around mTLS through the health port.
    let api = EventFeedServiceClient::new(channel)
        .get_feed_position(request(""))
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(api, Some(tonic::Code::Unimplemented));
    stop.cancel();
    server.await??;
    Ok(())
}

fn client_tls(pki: &Pki, identity: Option<PemIdentity>) -> ClientTls {
    ClientTls {
        ca: pki.ca_pem.clone().into_bytes(),
        identity,
    }
}

#[tokio::test]
async fn a_call_over_mtls_succeeds_and_a_client_without_a_certificate_is_refused()
-> anyhow::Result<()> {
    let pki = pki()?;
    let server = mtls_server(&pki).await?;
    let url = format!("https://{}", server.addr);

    // With the certificate the CA signed: the call goes through.
    let channel = ClientBuilder::new(&url, "feedback")
        .tls(Some(client_tls(&pki, Some(pki.leaf.clone()))))
        .build()?;
    let response = EventFeedServiceClient::new(channel)
        .get_feed_position(request(""))
        .await?;
    assert_eq!(response.into_inner().latest_sequence, 7);

    // Trusting the server but presenting no certificate: the handshake is refused.
    let channel = ClientBuilder::new(&url, "feedback")
        .tls(Some(client_tls(&pki, None)))
        .build()?;
    let refused = EventFeedServiceClient::new(channel)
        .get_feed_position(request(""))
        .await;
    assert!(
        refused.is_err(),
        "a client without a certificate got through"
    );

    // A certificate from another CA is refused as well.
    let channel = ClientBuilder::new(&url, "feedback")
        .tls(Some(client_tls(&pki, Some(pki.stranger.clone()))))
        .build()?;
    let refused = EventFeedServiceClient::new(channel)
        .get_feed_position(request(""))
        .await;
    assert!(refused.is_err(), "a stranger's certificate got through");

    // And plaintext to a TLS port gets nowhere.
    let plaintext = ClientBuilder::new(format!("http://{}", server.addr), "feedback").build()?;
    let refused = EventFeedServiceClient::new(plaintext)
        .get_feed_position(request(""))
        .await;
    assert!(refused.is_err(), "plaintext reached a TLS server");
    server.shutdown().await
}
