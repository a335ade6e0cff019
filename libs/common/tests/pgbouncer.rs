//! A service's pool behind a real PgBouncer in transaction pooling mode (the test's own, from
//! `custops_testkit::pgbouncer`): what `db::connect` does when a direct URL is set, and why
//! the services' work runs in transactions there (ARCHITECTURE.md, "Postgres behind a
//! pooler").

use custops_common::config::DatabaseSettings;
use custops_common::db::{self, DbError};
use custops_common::service::ServiceKind;
use custops_testkit::TestDatabase;
use custops_testkit::pgbouncer::TestPgBouncer;
use secrecy::SecretString;
use sqlx::{Connection, Executor, PgConnection};

/// The settings of `service` pointed at `pooled_url`, with `direct_url` for its sessions.
fn behind_pooler(service: ServiceKind, pooled_url: &str, direct_url: &str) -> DatabaseSettings {
    let mut settings = DatabaseSettings::new(service, pooled_url);
    settings.direct_url = Some(SecretString::from(direct_url.to_owned()));
    settings
}

/// A database with the loyalty schema and a table in it, and a PgBouncer whose `loyalty`
/// alias starts its sessions there and whose `profiles` alias starts them in `profiles`.
async fn pooled_database() -> anyhow::Result<(TestDatabase, TestPgBouncer)> {
    let database = TestDatabase::create().await?;
    let mut admin = PgConnection::connect(database.url()).await?;
    admin
        .execute(
            "CREATE SCHEMA loyalty; CREATE TABLE loyalty.counter (n int NOT NULL); \
             CREATE SCHEMA profiles",
        )
        .await?;
    admin.close().await?;
    let bouncer = TestPgBouncer::start(
        &[("loyalty", database.url()), ("profiles", database.url())],
        &[("statement_timeout", "5000"), ("lock_timeout", "2000")],
    )
    .await?;
    Ok((database, bouncer))
}

#[tokio::test]
async fn behind_a_transaction_pooler_reads_and_writes_run_in_transactions_in_the_schema()
-> anyhow::Result<()> {
    let (database, bouncer) = pooled_database().await?;
    let settings = behind_pooler(
        ServiceKind::Loyalty,
        &bouncer.url("loyalty", "postgres"),
        database.url(),
    );
    let pool = db::connect(&settings).await?;
    assert!(
        db::behind_pooler(&pool),
        "a pool with a direct URL is behind a pooler"
    );

    // Writes in a transaction, reads through `db::read`, many times over a few connections:
    // each transaction may be served by another server connection, and each statement is
    // prepared afresh in it.
    for n in 0..20 {
        let mut tx = pool.begin().await?;
        sqlx::query("INSERT INTO counter (n) VALUES ($1)")
            .bind(n)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let (count, schema): (i64, String) =
            sqlx::query_as("SELECT count(*), current_schema()::text FROM counter")
                .fetch_one(&mut *db::read(&pool).await?)
                .await?;
        assert_eq!((count, schema.as_str()), (n + 1, "loyalty"));
    }

    // A statement outside a transaction has its preparation and its execution split by a
    // sync, between which the pooler may switch server connections; with the pooler's reset
    // after every transaction (`DEALLOCATE ALL`), it fails every time rather than by luck,
    // which is how the suite's tests through PgBouncer catch any such statement.
    let outside = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM counter")
        .fetch_one(&pool)
        .await;
    let code = match &outside {
        Err(sqlx::Error::Database(error)) => error.code().map(|c| c.into_owned()),
        _ => None,
    };
    assert_eq!(
        code.as_deref(),
        Some("26000"),
        "a statement outside a transaction through the pooler: {outside:?}"
    );

    // The timeouts come from the pooler's sessions, not the start-up packet.
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&mut *db::read(&pool).await?)
        .await?;
    assert_eq!(timeout, "5s");
    pool.close().await;
    Ok(())
}

#[tokio::test]
async fn a_pooler_whose_sessions_are_in_another_schema_is_refused_at_start() -> anyhow::Result<()> {
    let (database, bouncer) = pooled_database().await?;
    // Loyalty pointed at the alias of profiles.
    let settings = behind_pooler(
        ServiceKind::Loyalty,
        &bouncer.url("profiles", "postgres"),
        database.url(),
    );
    let refused = db::connect(&settings).await;
    match refused {
        Err(error @ DbError::PooledSession { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("`profiles`") && message.contains("`loyalty`"),
                "{message}"
            );
        }
        other => panic!("expected PooledSession, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn the_direct_url_serves_migrations_and_listens_while_requests_go_through_the_pooler()
-> anyhow::Result<()> {
    let (database, bouncer) = pooled_database().await?;
    let settings = behind_pooler(
        ServiceKind::Loyalty,
        &bouncer.url("loyalty", "postgres"),
        database.url(),
    );
    // Migrations (a session-level advisory lock) run over the direct URL.
    let direct = db::connect_direct(&settings, 1).await?;
    let migrator = sqlx::migrate::Migrator::DEFAULT;
    db::migrate(&direct, settings.schema, &migrator).await?;
    let migrated: i64 = sqlx::query_scalar("SELECT count(*) FROM loyalty._sqlx_migrations")
        .fetch_one(&direct)
        .await?;
    assert!(migrated > 0, "the shared migrations ran");

    // A LISTEN on the direct options hears a NOTIFY committed through the pooler.
    let mut listener = sqlx::postgres::PgListener::connect_with(&sqlx::PgPool::connect_lazy_with(
        db::direct_options(&settings)?,
    ))
    .await?;
    listener.listen("pooled_test").await?;
    let pool = db::connect(&settings).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_notify('pooled_test', 'hello')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let heard = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv()).await??;
    assert_eq!(heard.payload(), "hello");
    Ok(())
}
