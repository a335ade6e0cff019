//! The per-service Postgres role, against a real Postgres: the role reads and writes its own
//! schema's tables but changes no schema (migrations are the admin's) and touches nothing in
//! the others, a re-run takes back what an older set-up granted, its password is stored
//! exactly as given whatever it contains, and a re-run is safe.
//!
//! Roles belong to the whole cluster, not to the test's database, so every test names its
//! roles with a unique prefix and drops them when it ends (`TestRoles`, declared before the
//! `TestDatabase` so it drops after it).

use std::str::FromStr;

use custops_common::config::DatabaseSettings;
use custops_common::db;
use custops_common::db_roles::{self, RoleError, ServiceRole};
use custops_common::service::ServiceKind;
use custops_testkit::TestDatabase;
use custops_testkit::roles::TestRoles;
use secrecy::SecretString;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection, SqlSafeStr};

/// Names this test's roles with its unique prefix.
fn role(roles: &TestRoles, service: ServiceKind) -> anyhow::Result<ServiceRole> {
    Ok(ServiceRole::with_prefix(roles.prefix(), service)?)
}

/// Applies the shared migrations (outbox, feed cursors) to `service`'s schema, as the admin.
async fn migrate(db: &TestDatabase, service: ServiceKind) -> anyhow::Result<()> {
    let pool = db::connect(&DatabaseSettings::new(service, db.url())).await?;
    db::migrate(
        &pool,
        service.schema(),
        &Migrator::with_migrations(Vec::new()),
    )
    .await?;
    pool.close().await;
    Ok(())
}

async fn admin(db: &TestDatabase) -> anyhow::Result<PgConnection> {
    Ok(PgConnection::connect(db.url()).await?)
}

async fn connect_as(
    db: &TestDatabase,
    role: &ServiceRole,
    password: &str,
) -> anyhow::Result<PgConnection> {
    let options = PgConnectOptions::from_str(db.url())?
        .username(role.name())
        .password(password);
    Ok(PgConnection::connect_with(&options).await?)
}

/// Runs `sql` and returns the SQLSTATE it failed with, or `None` when it succeeded.
async fn sqlstate(conn: &mut PgConnection, sql: &'static str) -> Option<String> {
    match conn.execute(sql).await {
        Ok(_) => None,
        Err(sqlx::Error::Database(error)) => error.code().map(|c| c.into_owned()),
        Err(other) => Some(format!("not a database error: {other}")),
    }
}

const DENIED: Option<&str> = Some("42501"); // insufficient_privilege

fn secret(password: &str) -> SecretString {
    SecretString::from(password.to_owned())
}

#[tokio::test]
async fn a_service_role_can_use_its_own_schema_and_nothing_else() -> anyhow::Result<()> {
    let roles = TestRoles::new();
    let db = TestDatabase::create().await?;
    migrate(&db, ServiceKind::Loyalty).await?;
    migrate(&db, ServiceKind::Profiles).await?;
    let loyalty = role(&roles, ServiceKind::Loyalty)?;
    let profiles = role(&roles, ServiceKind::Profiles)?;
    let mut admin = admin(&db).await?;
    db_roles::ensure_service_role(&mut admin, &loyalty, Some(&secret("loyalty-pw"))).await?;
    db_roles::ensure_service_role(&mut admin, &profiles, Some(&secret("profiles-pw"))).await?;

    let mut conn = connect_as(&db, &loyalty, "loyalty-pw").await?;
    // Its sessions start in its schema with nothing set at connect time, as behind a pooler.
    let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(schema.as_deref(), Some("loyalty"));
    // Its own tables: read, write, change, delete.
    let own: [&'static str; 6] = [
        "INSERT INTO loyalty.outbox (id, aggregatetype, aggregateid, type, payload) \
         VALUES (gen_random_uuid(), 'member', 'm1', 'custops.loyalty.v1.PointsEarned', '\\x00')",
        "SELECT count(*) FROM loyalty.outbox",
        "UPDATE loyalty.outbox SET sequence = 1 WHERE sequence IS NULL",
        "INSERT INTO loyalty.feed_cursors (feed) VALUES ('profiles')",
        "UPDATE loyalty.feed_cursors SET last_sequence = 7",
        "DELETE FROM loyalty.outbox",
    ];
    for sql in own {
        assert_eq!(sqlstate(&mut conn, sql).await, None, "{sql}");
    }
    // No schema changes anywhere (migrations run as the admin), no TRUNCATE, nothing of others.
    for sql in [
        "CREATE TABLE loyalty.scratch (id int)",
        "TRUNCATE loyalty.outbox",
        "DROP TABLE loyalty.feed_cursors",
        "SELECT count(*) FROM profiles.outbox",
        "INSERT INTO profiles.feed_cursors (feed) VALUES ('loyalty')",
        "CREATE TABLE profiles.intruder (id int)",
        "CREATE TABLE public.intruder (id int)",
        "CREATE SCHEMA intruder",
    ] {
        assert_eq!(sqlstate(&mut conn, sql).await.as_deref(), DENIED, "{sql}");
    }

    // A table a later migration (run by the admin) creates is the role's to use too.
    admin
        .execute("CREATE TABLE loyalty.later (id int PRIMARY KEY)")
        .await?;
    assert_eq!(
        sqlstate(&mut conn, "INSERT INTO loyalty.later VALUES (1)").await,
        None
    );

    // And the other role is just as confined the other way round.
    let mut other = connect_as(&db, &profiles, "profiles-pw").await?;
    assert_eq!(
        sqlstate(&mut other, "SELECT count(*) FROM profiles.outbox").await,
        None
    );
    assert_eq!(
        sqlstate(&mut other, "SELECT count(*) FROM loyalty.outbox")
            .await
            .as_deref(),
        DENIED
    );
    Ok(())
}

#[tokio::test]
async fn the_role_cannot_migrate_and_a_rerun_takes_back_what_an_older_setup_granted()
-> anyhow::Result<()> {
    let roles = TestRoles::new();
    let db = TestDatabase::create().await?;
    migrate(&db, ServiceKind::Feedback).await?;
    let feedback = role(&roles, ServiceKind::Feedback)?;
    let mut admin = admin(&db).await?;
    db_roles::ensure_service_role(&mut admin, &feedback, Some(&secret("pw"))).await?;
    // An older version granted everything: CREATE on the schema, ALL on the tables.
    let name = feedback.name();
    for sql in [
        format!("GRANT ALL ON SCHEMA feedback TO {name}"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA feedback TO {name}"),
    ] {
        admin.execute(sqlx::AssertSqlSafe(sql)).await?;
    }

    // Act: the set-up runs again (every migration Job does).
    db_roles::ensure_service_role(&mut admin, &feedback, None).await?;

    // Assert: reading and writing stay, changing the schema is gone — so a service connected
    // as its role cannot run a migration (CUSTOPS_MIGRATE_ON_START=false in production).
    let mut conn = connect_as(&db, &feedback, "pw").await?;
    assert_eq!(
        sqlstate(
            &mut conn,
            "INSERT INTO feedback.feed_cursors (feed) VALUES ('profiles')"
        )
        .await,
        None
    );
    for sql in [
        "CREATE TABLE feedback.surveys (id uuid PRIMARY KEY)",
        "TRUNCATE feedback.outbox",
        "DELETE FROM feedback._sqlx_migrations",
    ] {
        assert_eq!(sqlstate(&mut conn, sql).await.as_deref(), DENIED, "{sql}");
    }
    let url = PgConnectOptions::from_str(db.url())?
        .username(feedback.name())
        .password("pw");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(url.options([("search_path", "feedback")]))
        .await?;
    let own = Migrator::with_migrations(vec![Migration::new(
        20_250_101_000_000,
        "surveys".into(),
        MigrationType::Simple,
        "CREATE TABLE surveys (id uuid PRIMARY KEY)".into_sql_str(),
        false,
    )]);
    assert!(db::migrate(&pool, "feedback", &own).await.is_err());
    pool.close().await;
    Ok(())
}

/// Whether `role`'s stored md5 hash is that of `password`.
async fn stored(
    admin: &mut PgConnection,
    role: &ServiceRole,
    password: &str,
) -> anyhow::Result<bool> {
    let matches: Option<bool> = sqlx::query_scalar(
        "SELECT rolpassword = 'md5' || md5($1 || rolname) FROM pg_authid WHERE rolname = $2",
    )
    .bind(password)
    .bind(role.name())
    .fetch_optional(admin)
    .await?;
    Ok(matches == Some(true))
}

async fn can_login(admin: &mut PgConnection, role: &ServiceRole) -> anyhow::Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
            .bind(role.name())
            .fetch_one(admin)
            .await?,
    )
}

#[tokio::test]
async fn the_password_is_stored_exactly_whatever_it_contains() -> anyhow::Result<()> {
    let roles = TestRoles::new();
    let db = TestDatabase::create().await?;
    migrate(&db, ServiceKind::Loyalty).await?;
    let role = role(&roles, ServiceKind::Loyalty)?;
    let mut admin = admin(&db).await?;
    // md5 hashes are `md5(password || rolname)`: checkable in SQL, unlike SCRAM's salted ones.
    admin.execute("SET password_encryption = 'md5'").await?;

    let tricky = r#"it's a "pass\word" $$ %s %L; DROP ROLE postgres; -- é"#;
    db_roles::ensure_service_role(&mut admin, &role, Some(&secret(tricky))).await?;
    assert!(
        stored(&mut admin, &role, tricky).await?,
        "the first password was not stored as given"
    );

    // A re-run with another password rotates it.
    let rotated = "'); ALTER ROLE postgres NOLOGIN; --";
    db_roles::ensure_service_role(&mut admin, &role, Some(&secret(rotated))).await?;
    assert!(
        stored(&mut admin, &role, rotated).await?,
        "the rotated password was not stored"
    );
    assert!(!stored(&mut admin, &role, tricky).await?);

    let postgres_can_login: bool =
        sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'postgres'")
            .fetch_one(&mut admin)
            .await?;
    assert!(postgres_can_login);
    Ok(())
}

#[tokio::test]
async fn without_a_password_a_new_role_is_nologin_and_an_existing_login_is_kept()
-> anyhow::Result<()> {
    let roles = TestRoles::new();
    let db = TestDatabase::create().await?;
    migrate(&db, ServiceKind::Segmentation).await?;
    let role = role(&roles, ServiceKind::Segmentation)?;
    let mut admin = admin(&db).await?;

    db_roles::ensure_service_role(&mut admin, &role, None).await?;
    assert!(!can_login(&mut admin, &role).await?);
    db_roles::ensure_service_role(&mut admin, &role, Some(&secret("pw"))).await?;
    assert!(can_login(&mut admin, &role).await?);
    // A run without the password (e.g. a Job missing the Secret) must not lock the service out.
    db_roles::ensure_service_role(&mut admin, &role, None).await?;
    assert!(can_login(&mut admin, &role).await?);

    // Grants are still complete after the re-runs.
    let mut conn = connect_as(&db, &role, "pw").await?;
    assert_eq!(
        sqlstate(&mut conn, "SELECT count(*) FROM segmentation.outbox").await,
        None
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_schema_is_reported_and_no_role_is_left_behind() -> anyhow::Result<()> {
    let roles = TestRoles::new();
    let db = TestDatabase::create().await?;
    let role = role(&roles, ServiceKind::Loyalty)?;
    let mut admin = admin(&db).await?;

    let result = db_roles::ensure_service_role(&mut admin, &role, Some(&secret("pw"))).await;
    assert!(
        matches!(result, Err(RoleError::SchemaMissing { schema: "loyalty" })),
        "{result:?}"
    );
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role.name())
            .fetch_one(&mut admin)
            .await?;
    assert!(!exists);
    Ok(())
}

#[tokio::test]
async fn a_role_can_be_dropped_again() -> anyhow::Result<()> {
    let roles = TestRoles::new();
    let db = TestDatabase::create().await?;
    migrate(&db, ServiceKind::Loyalty).await?;
    let role = role(&roles, ServiceKind::Loyalty)?;
    let mut admin = admin(&db).await?;
    db_roles::ensure_service_role(&mut admin, &role, Some(&secret("pw"))).await?;
    // It owns something, as a role of an older version that ran its own migrations did.
    admin.execute("CREATE TABLE loyalty.owned (id int)").await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE loyalty.owned OWNER TO {}",
            role.name()
        )))
        .await?;

    db_roles::drop_service_role(&mut admin, &role).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role.name())
            .fetch_one(&mut admin)
            .await?;
    assert!(!exists);
    // Dropping what does not exist is fine.
    db_roles::drop_service_role(&mut admin, &role).await?;
    Ok(())
}
