//! Helpers for tests, shared by every custops crate (dev-dependency only).
//!
//! Tests talk to a real Postgres: the one `DATABASE_URL` names (set by `scripts/dev-env.sh`,
//! which `make test` and CI run first), falling back to the machine's
//! `postgres://postgres@127.0.0.1:5432/postgres`. Each test gets a database of its own, created
//! here and dropped when the test ends, so tests never see each other's rows.
//!
//! # Layout
//! - [`TestDatabase`]: a fresh database per test.
//! - [`startup`]: checks that a service binary refuses bad configuration clearly.
//! - [`redis`]: a `redis-server` of the test's own, which the test may stop.
//! - [`redis_cluster`]: a Redis Cluster (three masters, three replicas) of the test's own,
//!   whose masters the test may kill.
//! - [`roles`]: Postgres roles named per test and dropped when it ends.
//! - [`pgbouncer`]: a PgBouncer of the test's own in transaction pooling mode, with an alias
//!   per service schema.
//! - [`otlp`]: a stand-in OpenTelemetry Collector receiving OTLP over gRPC.

pub mod otlp;
pub mod pgbouncer;
pub mod redis;
pub mod redis_cluster;
pub mod roles;
pub mod startup;

use std::time::Duration;

use anyhow::Context;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// Prefix of every database a test creates, so leftovers of a killed run are recognisable.
pub const TEST_DATABASE_PREFIX: &str = "custops_test_";

/// The admin URL tests create their databases through.
pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for one test: created empty, dropped (with its connections) on drop.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    admin_url: String,
    url: String,
}

impl TestDatabase {
    /// Creates a new, empty database with a unique name.
    pub async fn create() -> anyhow::Result<Self> {
        let admin_url = admin_database_url();
        let name = format!("{TEST_DATABASE_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .with_context(|| format!("Failed to connect to the test Postgres at {admin_url}"))?;
        admin
            // The name is ours (prefix + UUID), never user input.
            .execute(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .await
            .context("Failed to create the test database")?;
        admin.close().await.ok();
        let mut url = url::Url::parse(&admin_url).context("DATABASE_URL is not a URL")?;
        url.set_path(&name);
        Ok(Self {
            name,
            admin_url,
            url: url.into(),
        })
    }

    /// URL of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Name of this test's database.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside any async context we could borrow, so the DROP gets a small
        // runtime of its own on a plain thread.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                admin
                    .execute(AssertSqlSafe(format!(
                        r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
                    )))
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// Whether `program --version` runs and succeeds: how a test finds out that a server program
/// it starts itself (redis-server, pgbouncer) is installed, to fail with an install hint.
pub async fn program_runs(program: &str) -> bool {
    tokio::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success())
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes; returns whether it
/// became true. For waiting on a condition instead of sleeping a guessed time.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
