//! A database of the benchmark's own on the server `DATABASE_URL` names, created empty and
//! dropped (with its connections) at the end, so a run neither reads nor leaves data anywhere
//! else. The same idea as the testkit's `TestDatabase`, which is a dev-dependency and cannot
//! ship in the binary.

use anyhow::Context;
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// Prefix of every database a benchmark creates, so leftovers of a killed run are
/// recognisable (`DROP DATABASE` them by this prefix).
pub const BENCH_DATABASE_PREFIX: &str = "custops_bench_";

/// A database that exists for one benchmark group.
#[derive(Debug)]
pub struct BenchDatabase {
    name: String,
    admin_url: String,
    url: String,
}

impl BenchDatabase {
    /// Creates a new, empty database named after `purpose` and a random suffix, through the
    /// admin URL.
    pub async fn create(admin_url: &str, purpose: &str) -> anyhow::Result<Self> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{BENCH_DATABASE_PREFIX}{purpose}_{}", &suffix[..12]);
        let mut admin = PgConnection::connect(admin_url)
            .await
            .context("Failed to connect to Postgres at DATABASE_URL")?;
        admin
            // The name is ours (a fixed prefix, a purpose from the code, hex), never input.
            .execute(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .await
            .with_context(|| format!("Failed to create the database {name}"))?;
        admin.close().await.ok();
        let mut url = url::Url::parse(admin_url).context("DATABASE_URL is not a URL")?;
        url.set_path(&name);
        Ok(Self {
            name,
            admin_url: admin_url.to_owned(),
            url: url.into(),
        })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for BenchDatabase {
    fn drop(&mut self) {
        // Drop cannot await, and may run inside the runtime: the DROP gets a small runtime of
        // its own on a plain thread.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
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
            eprintln!("bench: warning: could not drop the database {}", self.name);
        }
    }
}
