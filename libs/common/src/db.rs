//! The Postgres side of a service: a pool whose connections live in the service's own schema,
//! and the migrations that build that schema.
//!
//! Each service's migrator is the shared migrations of `libs/common/migrations` (outbox, feed
//! cursors) followed by the service's own `services/<svc>/migrations`. Its history table is
//! `<schema>._sqlx_migrations`, so four services can share one database without seeing each
//! other's history.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Transaction};

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
    /// Behind a transaction pooler, the sessions the pooler hands out are not in the
    /// service's schema (or could not be checked).
    #[error(
        "the pooled connections (DATABASE_URL behind a pooler, since a direct URL is set) are \
         in {found}, not in schema `{schema}`: set it for the service's role \
         (`custops migrate --create-roles` does) or in the pooler's connect_query"
    )]
    PooledSession {
        /// The schema the service wanted.
        schema: &'static str,
        /// What the check found.
        found: String,
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
///
/// Behind a transaction pooler (`direct_url` set, ARCHITECTURE.md "Postgres behind a
/// pooler"), a connection is a different server session from one transaction to the next, so
/// the pool sends no session settings in its start-up packet (PgBouncer refuses them; they
/// come from the service's role or the pooler's `connect_query`), keeps no prepared statements
/// (a statement prepared on one server connection is unknown on the next), and its work runs in
/// transactions only ([`read`] for reads). Start-up then checks that the pooler's sessions are
/// in the service's schema, and refuses to start otherwise: reads and writes in another
/// schema would fail in confusing ways, or worse, succeed.
pub async fn connect(settings: &DatabaseSettings) -> Result<PgPool, DbError> {
    let pooled = settings.direct_url.is_some();
    let options = if pooled {
        PgConnectOptions::from_str(settings.expose_url())
            .map_err(DbError::Url)?
            .application_name(&format!("custops-{}{POOLED_SUFFIX}", settings.schema))
            .statement_cache_capacity(0)
    } else {
        session_options(settings, settings.expose_url())?
    };

    reach(&options, settings, pooled).await?;
    Ok(pool_options(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options))
}

/// A connection that waited in the pool at least this long is pinged before it is handed out;
/// one used more recently is handed out as it is (HikariCP's `aliveBypassWindowMs`, 500 ms).
pub const PING_WHEN_IDLE_FOR: Duration = Duration::from_millis(500);

/// Pool options for `max_connections`: a connection idle for [`PING_WHEN_IDLE_FOR`] or longer
/// is checked with a ping before use, a busier one is not ([`pool_options_pinging_after`]).
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    pool_options_pinging_after(max_connections, PING_WHEN_IDLE_FOR)
}

/// Pool options whose connections are pinged before use only when they have been idle for
/// `idle_for` or longer. sqlx by default pings every connection it hands out: a round trip
/// more per transaction, on top of the ping it makes when a connection comes back (with both,
/// an earn took seven round trips, not five). A connection that comes back has just been
/// checked by that return ping (sqlx closes it when the ping fails), so what a skipped ping
/// would catch is a server session that ended in the moment since: the call on it then fails
/// as UNAVAILABLE, as it would had the session ended a moment later, and the broken connection
/// is closed on its return (test `a_connection_used_a_moment_ago_is_handed_out_unpinged`).
pub fn pool_options_pinging_after(max_connections: u32, idle_for: Duration) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= idle_for {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// `sql` with each parameter `$n` made `$(n + by)`: fixed SQL written from `$1` that also
/// joins a statement after `by` parameters of its own ([`crate::idempotency::LastWrite`]);
/// made once, not per call. Only for
/// SQL with no `$` but its parameters (no dollar quoting, none in a literal or a name).
pub fn shift_parameters(sql: &str, by: usize) -> String {
    let mut shifted = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        shifted.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        match rest[..digits].parse::<usize>() {
            Ok(n) => shifted.push_str(&(n + by).to_string()),
            Err(_) => shifted.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    shifted.push_str(rest);
    shifted
}

/// A pool of at most `max_connections` straight to Postgres (the direct URL behind a pooler,
/// else the service's URL), its sessions set up as [`connect`]'s are when connecting
/// directly: for migrations, which hold a session-level advisory lock. Waits for the
/// database as [`connect`] does.
pub async fn connect_direct(
    settings: &DatabaseSettings,
    max_connections: u32,
) -> Result<PgPool, DbError> {
    let options = direct_options(settings)?;
    reach(&options, settings, false).await?;
    Ok(pool_options(max_connections)
        .acquire_timeout(settings.connect_timeout)
        .connect_lazy_with(options))
}

/// Connect options straight to Postgres (the direct URL behind a pooler, else the service's
/// URL) with the service's session settings: for a LISTEN connection.
pub fn direct_options(settings: &DatabaseSettings) -> Result<PgConnectOptions, DbError> {
    session_options(settings, settings.expose_direct_url())
}

/// Connects once to see the database answer, retrying with backoff until the settings'
/// connect timeout; behind a pooler (`pooled`), also checks the session it hands out.
async fn reach(
    options: &PgConnectOptions,
    settings: &DatabaseSettings,
    pooled: bool,
) -> Result<(), DbError> {
    let deadline = tokio::time::Instant::now() + settings.connect_timeout;
    let retrying = RetryPolicy::forever(Duration::from_millis(100), Duration::from_secs(2));
    let mut delays = retrying.delays();
    loop {
        let attempt = async {
            let mut probe = PgConnection::connect_with(options).await?;
            let session = if pooled {
                Some(pooled_session(&mut probe).await)
            } else {
                None
            };
            let _ = probe.close().await;
            session.transpose()
        };
        match attempt.await {
            Ok(None) => return Ok(()),
            Ok(Some(session)) => return session.check(settings),
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
}

/// Ends the application name of a pool behind a transaction pooler: how [`read`] tells.
const POOLED_SUFFIX: &str = " (pooled)";

/// Connect options for `url` with the service's session settings in the start-up packet.
fn session_options(settings: &DatabaseSettings, url: &str) -> Result<PgConnectOptions, DbError> {
    let statement_timeout_ms = settings.statement_timeout.as_millis().to_string();
    let lock_timeout_ms = settings.lock_timeout.as_millis().to_string();
    Ok(PgConnectOptions::from_str(url)
        .map_err(DbError::Url)?
        .application_name(&format!("custops-{}", settings.schema))
        .options([
            ("search_path", settings.schema),
            ("statement_timeout", statement_timeout_ms.as_str()),
            ("lock_timeout", lock_timeout_ms.as_str()),
        ]))
}

/// What a session a pooler hands out is set up with.
struct PooledSession {
    schema: Option<String>,
    statement_timeout: String,
}

/// Reads the pooled session's schema and statement timeout, in a transaction as all pooled
/// work is.
async fn pooled_session(probe: &mut PgConnection) -> Result<PooledSession, sqlx::Error> {
    let mut tx = probe.begin().await?;
    let (schema, statement_timeout) =
        sqlx::query_as("SELECT current_schema(), current_setting('statement_timeout')")
            .fetch_one(&mut *tx)
            .await?;
    tx.rollback().await?;
    Ok(PooledSession {
        schema,
        statement_timeout,
    })
}

impl PooledSession {
    /// Refuses a session outside the service's schema; warns when its statement timeout is
    /// off (a runaway query could then hold a server connection every replica shares).
    fn check(self, settings: &DatabaseSettings) -> Result<(), DbError> {
        if self.schema.as_deref() != Some(settings.schema) {
            return Err(DbError::PooledSession {
                schema: settings.schema,
                found: self.schema.map_or_else(
                    || "no existing schema".to_owned(),
                    |found| format!("schema `{found}`"),
                ),
            });
        }
        if self.statement_timeout == "0" {
            tracing::warn!(
                schema = settings.schema,
                "the pooler's sessions have no statement_timeout: set it with the service's \
                 role or the pooler's connect_query"
            );
        }
        Ok(())
    }
}

/// Whether `pool` was opened by [`connect`] behind a transaction pooler.
pub fn behind_pooler(pool: &PgPool) -> bool {
    pool.connect_options()
        .get_application_name()
        .is_some_and(|name| name.ends_with(POOLED_SUFFIX))
}

/// A connection for reads: statements that change nothing, each of which may be its own
/// transaction. Connected directly, a pooled connection (no `BEGIN` to pay for); behind a
/// transaction pooler, a transaction, rolled back when dropped: outside one, the pooler may
/// give the statement's execution a different server connection than its preparation, on
/// which the statement does not exist. Writes take `pool.begin()` and commit.
pub async fn read(pool: &PgPool) -> Result<ReadConnection, sqlx::Error> {
    Ok(if behind_pooler(pool) {
        ReadConnection::Pooled(pool.begin().await?)
    } else {
        ReadConnection::Direct(pool.acquire().await?)
    })
}

/// What [`read`] gives: use it as a `PgConnection`.
#[derive(Debug)]
pub enum ReadConnection {
    /// Connected to Postgres itself.
    Direct(PoolConnection<Postgres>),
    /// Behind a transaction pooler.
    Pooled(Transaction<'static, Postgres>),
}

impl Deref for ReadConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            Self::Direct(connection) => connection,
            Self::Pooled(transaction) => transaction,
        }
    }
}

impl DerefMut for ReadConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Self::Direct(connection) => connection,
            Self::Pooled(transaction) => transaction,
        }
    }
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

/// Whether `error` (anywhere in its chain) is a transaction that lost a race: Postgres rolled
/// it back to break a deadlock (SQLSTATE 40P01) or a serialization conflict (40001), so the
/// same work tried again can succeed. Seen as the `sqlx::Error` itself or as the database
/// error under it (a transparent wrapper's source is the inner error's source).
pub fn lost_a_race(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let code = match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx) => sqlx.as_database_error().and_then(|db| db.code()),
            None => cause
                .downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .map(|db| std::borrow::Cow::Borrowed(db.code())),
        };
        code.is_some_and(|code| code == "40P01" || code == "40001")
    })
}

/// Runs `attempt` (a whole transaction) again while it fails by [`lost_a_race`], at most
/// `attempts` times in all: for background work whose bulk statements can meet another's in
/// opposite row order (two set-based updates of one table), where Postgres breaking the
/// deadlock is expected and the rolled-back work is simply done again.
pub async fn retry_lost_races<T, F, A>(attempts: usize, mut attempt: A) -> anyhow::Result<T>
where
    A: FnMut() -> F,
    F: Future<Output = anyhow::Result<T>>,
{
    let mut tried = 1;
    loop {
        match attempt().await {
            Err(error) if tried < attempts && lost_a_race(&error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    tried,
                    "lost a race to another transaction; trying again"
                );
                tried += 1;
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shift_parameters;

    #[test]
    fn parameters_are_renumbered_and_nothing_else_changes() {
        assert_eq!(
            shift_parameters("a AS (UPDATE t SET x = $2, y = $10 WHERE id = $1)", 12),
            "a AS (UPDATE t SET x = $14, y = $22 WHERE id = $13)"
        );
        assert_eq!(
            shift_parameters("SELECT $1::bigint, $3", 0),
            "SELECT $1::bigint, $3"
        );
        assert_eq!(shift_parameters("no parameters", 5), "no parameters");
    }
}
