//! Postgres roles made by one test. Roles belong to the whole cluster, not to the test's
//! database, so a test names its roles with a unique prefix and this guard drops every role
//! with that prefix when the test ends, also when it fails.

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use crate::admin_database_url;

/// A unique role-name prefix (`custops_test_<uuid>`) whose roles are dropped on drop.
///
/// Declare it **before** the test's `TestDatabase`: locals drop in reverse order, and a role
/// cannot be dropped while a database still holds grants to it.
#[derive(Debug)]
pub struct TestRoles {
    prefix: String,
}

impl TestRoles {
    /// A fresh prefix.
    pub fn new() -> Self {
        Self {
            prefix: format!("custops_test_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The prefix; the test's roles are named `<prefix>_<something>`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Default for TestRoles {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRoles {
    fn drop(&mut self) {
        // As in `TestDatabase`: a runtime of its own on a plain thread.
        let admin_url = admin_database_url();
        let pattern = format!("{}\\_%", self.prefix);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                let statements: Vec<String> = sqlx::query_scalar(
                    "SELECT format('DROP ROLE IF EXISTS %I', rolname) FROM pg_roles \
                     WHERE rolname LIKE $1",
                )
                .bind(&pattern)
                .fetch_all(&mut admin)
                .await?;
                for statement in statements {
                    // Quoted by the server's format('%I').
                    admin.execute(AssertSqlSafe(statement)).await?;
                }
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop the test roles {}_*", self.prefix);
        }
    }
}
