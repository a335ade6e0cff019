//! `custops migrate --create-roles`: after migrating, each service's role can use its own
//! schema's tables and is refused the other services' tables.

use std::collections::BTreeMap;
use std::str::FromStr;

use custops_common::config::DatabaseSettings;
use custops_common::db_roles::ServiceRole;
use custops_common::service::ServiceKind;
use custops_suite::migrate::{self, RoleOptions};
use custops_testkit::TestDatabase;
use custops_testkit::roles::TestRoles;
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

/// Runs `sql` and returns the SQLSTATE it failed with, or `None` when it succeeded.
async fn sqlstate(conn: &mut PgConnection, sql: &'static str) -> Option<String> {
    match conn.execute(sql).await {
        Ok(_) => None,
        Err(sqlx::Error::Database(error)) => error.code().map(|c| c.into_owned()),
        Err(other) => Some(format!("not a database error: {other}")),
    }
}

#[tokio::test]
async fn migrate_with_roles_confines_each_service_to_its_schema() -> anyhow::Result<()> {
    // Declared first so it drops last, after the database that holds the roles' grants.
    let roles = TestRoles::new();
    let db = TestDatabase::create().await?;
    let services = [ServiceKind::Loyalty, ServiceKind::Profiles];
    let targets: Vec<_> = services
        .into_iter()
        .map(|service| (service, DatabaseSettings::new(service, db.url())))
        .collect();
    let options = RoleOptions {
        prefix: roles.prefix().to_owned(),
        passwords: BTreeMap::from([(
            ServiceKind::Loyalty,
            SecretString::from("loyalty's password".to_owned()),
        )]),
    };

    migrate::run_with_roles(&targets, Some(&options)).await?;
    // Running it again changes nothing and fails nothing.
    migrate::run_with_roles(&targets, Some(&options)).await?;

    let loyalty = ServiceRole::with_prefix(roles.prefix(), ServiceKind::Loyalty)?;
    let connect = PgConnectOptions::from_str(db.url())?
        .username(loyalty.name())
        .password("loyalty's password");
    let mut conn = PgConnection::connect_with(&connect).await?;
    for sql in [
        "INSERT INTO loyalty.outbox (id, aggregatetype, aggregateid, type, payload) \
         VALUES (gen_random_uuid(), 'member', 'm1', 'custops.loyalty.v1.PointsEarned', '\\x00')",
        "SELECT * FROM loyalty.outbox",
        "SELECT * FROM loyalty.ledger_entries",
        "UPDATE loyalty.members SET status = status",
        "CREATE TEMPORARY TABLE moved (id int)",
        "INSERT INTO loyalty.feed_cursors (feed) VALUES ('profiles')",
        "UPDATE loyalty.feed_cursors SET last_sequence = last_sequence + 1",
        "SELECT * FROM loyalty._sqlx_migrations",
    ] {
        assert_eq!(sqlstate(&mut conn, sql).await, None, "{sql}");
    }
    for sql in [
        "SELECT * FROM profiles.outbox",
        "INSERT INTO profiles.feed_cursors (feed) VALUES ('loyalty')",
        "SELECT * FROM profiles._sqlx_migrations",
        // Its own ledger is append-only, enforced by the database: no rewriting, no removing.
        "UPDATE loyalty.ledger_entries SET points = points + 1",
        "DELETE FROM loyalty.ledger_entries",
        "TRUNCATE loyalty.ledger_entries",
        "UPDATE loyalty.tier_changes SET to_rank = to_rank",
        // No schema changes from the service: migrations run as the admin.
        "CREATE TABLE loyalty.sneaky (id int)",
        "DELETE FROM loyalty._sqlx_migrations",
    ] {
        // 42501: insufficient_privilege.
        assert_eq!(
            sqlstate(&mut conn, sql).await.as_deref(),
            Some("42501"),
            "{sql}"
        );
    }

    // Profiles had no password: its role exists but cannot log in.
    let profiles = ServiceRole::with_prefix(roles.prefix(), ServiceKind::Profiles)?;
    let mut admin = PgConnection::connect(db.url()).await?;
    let can_login: Option<bool> =
        sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
            .bind(profiles.name())
            .fetch_optional(&mut admin)
            .await?;
    assert_eq!(can_login, Some(false));
    Ok(())
}
