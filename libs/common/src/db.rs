//! The Postgres side of a service: a pool whose connections live in the service's own schema,
//! and the migrations that build that schema.
//!
//! Each service's migrator is the shared migrations of `libs/common/migrations` (outbox, feed
//! cursors) followed by the service's own `services/<svc>/migrations`. Its history table is
//! `<schema>._sqlx_migrations`, so four services can share one database without seeing each
//! other's history.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use crate::client::RetryPolicy;
use crate::config::DatabaseSettings;

/// Migrations every service applies first, in its own schema.
static SHARED_MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Failure to reach or prepare the database at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be made within the configured connect timeout.
    #[error("could not connect to Postgres for schema `{schema}` within {timeout:?}")]
    Connect {
        /// The schema the service wanted.
        schema: &'static str,
        /// How long it kept trying.
        timeout: Duration,
        /// The last connection error.
        #[source]
        source: sqlx::Error,
    },
    /// The URL could not be turned into connect options.
    #[error("the database URL is not a valid Postgres URL")]
    Url(#[source] sqlx::Error),
    /// A migration failed; the schema is left as the last successful migration made it.
    #[error("migrating schema `{schema}` failed")]
    Migrate {
        /// The schema being migrated.
        schema: &'static str,
        /// What went wrong.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// Opens the service's pool. Every connection has `search_path` set to the service's schema, a
/// server-side statement timeout, a lock timeout below it (a call waiting on a locked row gives
/// up and frees its connection rather than let the pool run dry) and an application name that
/// says which service it is; a call waits at most the acquire timeout for a connection.
///
/// Start-up may race the database (a pod starting beside a Postgres that is still booting), so
/// a first connection is retried with backoff until `connect_timeout`; only then is the pool
/// created, with the shorter acquire timeout requests should see.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    let statement_timeout_ms = settings.statement_timeout.as_millis().to_string();
    let lock_timeout_ms = settings.lock_timeout.as_millis().to_string();
    let options = PgConnectOptions::from_str(settings.expose_url())
        .map_err(DbError::Url)?
        .application_name(&format!("custops-{}", settings.schema))
        .options([
            ("search_path", settings.schema),
            ("statement_timeout", statement_timeout_ms.as_str()),
            ("lock_timeout", lock_timeout_ms.as_str()),
        ]);

    let deadline = tokio::time::Instant::now() + settings.connect_timeout;
    let retrying = RetryPolicy::forever(Duration::from_millis(100), Duration::from_secs(2));
    let mut delays = retrying.delays();
    loop {
        match PgConnection::connect_with(&options).await {
            Ok(probe) => {
                // Only a reachability check; the pool opens its own connections.
                let _ = probe.close().await;
                break;
            }
            Err(source) if tokio::time::Instant::now() >= deadline => {
                return Err(DbError::Connect {
                    schema: settings.schema,
                    timeout: settings.connect_timeout,
                    source,
                });
            }
            Err(error) => {
                tracing::warn!(schema = settings.schema, %error, "database not reachable yet, retrying");
                let delay = delays.next().unwrap_or(retrying.max_backoff);
                // The last wait ends at the deadline, for one attempt there.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(delay.min(left)).await;
            }
        }
    }
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options))
}

/// A read-only transaction in which every read sees one snapshot (REPEATABLE READ, taken by
/// its first query): for reads that must agree with each other, such as a data-subject export.
pub async fn begin_snapshot(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The complete migrator of one service: shared migrations, then `own`, recorded in
/// `<schema>._sqlx_migrations`, creating the schema first if it does not exist.
pub fn service_migrator(schema: &'static str, own: &Migrator) -> Migrator {
    let mut migrator = migrator_without_schema(schema, own);
    migrator.create_schema(schema);
    migrator
}

/// [`service_migrator`] for a schema that exists already.
fn migrator_without_schema(schema: &'static str, own: &Migrator) -> Migrator {
    let migrations = SHARED_MIGRATIONS
        .iter()
        .chain(own.iter())
        .cloned()
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    migrator.dangerous_set_table_name(format!("{schema}._sqlx_migrations"));
    migrator
}

/// Applies every pending migration of the service to its schema. Safe to run from several
/// replicas at once: sqlx serialises migrators with an advisory lock.
///
/// The schema is created only when it is missing: `CREATE SCHEMA IF NOT EXISTS` needs `CREATE`
/// on the database even when the schema exists, which a service's own role (`db_roles`)
/// deliberately lacks, and that role must still be able to run its schema's migrations.
pub async fn migrate(pool: &PgPool, schema: &'static str, own: &Migrator) -> Result<(), DbError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(pool)
            .await
            .map_err(|source| DbError::Migrate {
                schema,
                source: source.into(),
            })?;
    let migrator = if exists {
        migrator_without_schema(schema, own)
    } else {
        service_migrator(schema, own)
    };
    migrator
        .run(pool)
        .await
        .map_err(|source| DbError::Migrate { schema, source })
}
