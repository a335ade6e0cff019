//! Shared set-up of the end-to-end tests: the whole suite, started in-process exactly as
//! `custops dev` starts it, against a database of the test's own.

use std::net::SocketAddr;

use anyhow::Context;
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_suite::dev::{self, RunningSuite};
use custops_testkit::TestDatabase;

/// The four services running for one test. Dropping it without [`TestSuite::stop`] leaves the
/// servers to die with the test's runtime.
#[derive(Debug)]
pub struct TestSuite {
    /// The running services.
    pub services: RunningSuite,
    /// The test's database; dropped (and deleted) after the services.
    pub database: TestDatabase,
}

impl TestSuite {
    /// Starts all four services on free loopback ports against a fresh database.
    pub async fn start() -> anyhow::Result<Self> {
        let database = TestDatabase::create().await?;
        let settings = ServiceKind::ALL
            .into_iter()
            .map(|service| ServiceSettings::for_local(service, database.url()))
            .collect();
        let services = dev::start(settings).await?;
        Ok(Self { services, database })
    }

    /// Where `service` listens.
    pub fn addr(&self, service: ServiceKind) -> anyhow::Result<SocketAddr> {
        self.services
            .addr(service)
            .with_context(|| format!("{service} is not running"))
    }

    /// A plaintext channel to `service`.
    pub async fn channel(&self, service: ServiceKind) -> anyhow::Result<tonic::transport::Channel> {
        let addr = self.addr(service)?;
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await
            .with_context(|| format!("Failed to connect to {service} at {addr}"))
    }

    /// Drains every service, then drops the database.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.services.stop().await
    }
}
