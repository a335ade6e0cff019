//! The Postgres role each service connects as, able to use and change only its own schema.
//!
//! Schemas keep the services' data apart only if the services cannot reach across them, and
//! an append-only ledger is append-only only if the database says so. So in production each
//! service connects as `custops_<schema>`, which holds exactly what its code does:
//! - `CONNECT` and `TEMPORARY` on the database (segmentation's recomputes use temp tables);
//! - `USAGE` on its own schema, not `CREATE`: migrations run as the admin, never as the
//!   service;
//! - `SELECT, INSERT, UPDATE, DELETE` on the schema's tables — no `TRUNCATE`, `REFERENCES` or
//!   `TRIGGER` — present and future (default privileges for tables the migrating admin
//!   creates), except the tables in [`NARROWER_GRANTS`]: append-only ones (the points ledger,
//!   tier history, where lots went) get `SELECT, INSERT`, the consent trail `SELECT, INSERT,
//!   DELETE` (erasure forgets it, nothing rewrites it), the migration history `SELECT`;
//! - `USAGE, SELECT` on sequences and `EXECUTE` on routines;
//! - `search_path` set to its schema for its sessions in the database (`ALTER ROLE … IN
//!   DATABASE … SET`), so a pooler's sessions, which cannot set it at connect time, are there;
//! - nothing on the other services' schemas (explicitly revoked, in case a grant was ever made
//!   by hand), and no `CREATE` on `public` (revoked from `PUBLIC`, the default since
//!   Postgres 15 and the advice of Postgres's "secure schema usage pattern").
//!
//! Re-running the set-up revokes everything first and grants this again, so a role made by an
//! older version (which held every privilege) is brought down to it.
//!
//! `custops migrate --create-roles` calls [`ensure_service_role`] after migrating each
//! service. The schema must exist, so migrations come first.
//!
//! # Production recipe
//!
//! 1. Make up one password per service and keep it in the Secret that holds that service's
//!    database URL: `postgres://custops_<svc>:<password>@host:5432/custops` (the service reads
//!    it as `DATABASE_URL` or `CUSTOPS_<SVC>_DATABASE_URL`). Run the services with
//!    `CUSTOPS_MIGRATE_ON_START=false`.
//! 2. Run `custops migrate --create-roles <svc>` as the migration Job, with the admin URL in
//!    `DATABASE_URL` and the password in `CUSTOPS_<SVC>_DB_PASSWORD`. The admin is a role that
//!    owns the database and may create roles (`CREATEROLE`, or a superuser); it creates the
//!    schema and its tables, so later migrations it runs can alter them. Give the Job neither
//!    `CUSTOPS_<SVC>_DATABASE_URL` (it would then migrate as the service's role) nor the
//!    other services' passwords.
//! 3. Re-running the Job is safe: it re-applies the grants and, when a password is given, sets
//!    it, which is how a password is rotated (set the new one in both places, re-run the Job,
//!    restart the Deployment).
//!
//! `custops dev` and the tests connect as an admin and migrate on start; a service connected
//! as its own role must run with `CUSTOPS_MIGRATE_ON_START=false`.
//!
//! Without a password the role is created `NOLOGIN`, and an existing role's login and password
//! are left as they are. That suits credentials issued by something else (e.g. Vault's database
//! secrets engine): grant `custops_<svc>` to the login roles it creates, which inherit its
//! privileges.
//!
//! Postgres takes no bind parameters in `CREATE ROLE`, so the statement is built by the server
//! itself with `format('%I', …)` and `format('%L', …)` from bound values, and then executed:
//! the password never passes through string splicing on our side. It does appear in the
//! server's log when `log_statement` is `all` (or `ddl`); to keep it out, set
//! `CUSTOPS_<SVC>_DB_PASSWORD` to the password's SCRAM verifier
//! (`SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`, from any SCRAM tool), which Postgres
//! recognises and stores as given.

use secrecy::{ExposeSecret, SecretString};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection, Postgres, Transaction};

use crate::config::Environment;
use crate::service::ServiceKind;

/// Prefix of the production role names: `custops_profiles`, `custops_loyalty`, …
pub const DEFAULT_ROLE_PREFIX: &str = "custops";

/// The variable holding a service's role password; `{SVC}` is the upper-case service name.
pub const PASSWORD_VAR: &str = "CUSTOPS_{SVC}_DB_PASSWORD";

/// Postgres truncates identifiers longer than this (NAMEDATALEN - 1); we refuse them instead.
const MAX_IDENTIFIER_LEN: usize = 63;

/// Tables whose role gets fewer privileges than the schema's default, with the privileges it
/// gets: what the service's code does to them and nothing more. `tests/migrate_roles.rs`
/// refuses a forbidden UPDATE as the role; the end-to-end journey runs every service as its
/// role.
pub const NARROWER_GRANTS: &[(ServiceKind, &str, &str)] = &[
    (ServiceKind::Loyalty, "ledger_entries", "SELECT, INSERT"),
    (ServiceKind::Loyalty, "tier_changes", "SELECT, INSERT"),
    (ServiceKind::Loyalty, "lot_spends", "SELECT, INSERT"),
    (ServiceKind::Loyalty, "lot_returns", "SELECT, INSERT"),
    (
        ServiceKind::Profiles,
        "consent_changes",
        "SELECT, INSERT, DELETE",
    ),
];

/// What a role gets on the migration history of its schema: it reads, the admin writes.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Serialises concurrent role set-ups (two migrate Jobs racing would otherwise both try to
/// `CREATE ROLE`). Any constant works as long as nothing else uses it.
const ROLE_LOCK_KEY: i64 = 0x6375_7374_726f_6c65; // "custrole"

/// A role set-up that failed. Messages name the role and the step, never a password.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The role name would not be a plain lower-case identifier of at most 63 bytes.
    #[error("invalid role name `{name}`: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The service's schema is not there yet: migrate first.
    #[error("schema `{schema}` does not exist; run the service's migrations first")]
    SchemaMissing {
        /// The missing schema.
        schema: &'static str,
    },
    /// A statement failed.
    #[error("failed to {step} for role `{role}`")]
    Database {
        /// The role being set up.
        role: String,
        /// What was being done.
        step: &'static str,
        /// The database's answer.
        #[source]
        source: sqlx::Error,
    },
}

/// The role one service connects as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRole {
    service: ServiceKind,
    name: String,
}

impl ServiceRole {
    /// The production role, `custops_<schema>`.
    pub fn new(service: ServiceKind) -> Self {
        Self {
            service,
            name: format!("{DEFAULT_ROLE_PREFIX}_{}", service.schema()),
        }
    }

    /// The role `<prefix>_<schema>`. Roles are shared by the whole Postgres cluster, so tests
    /// pass a unique prefix (e.g. `custops_test_<uuid>`) and drop their roles at the end.
    /// The prefix must be lower-case ASCII letters, digits and `_`, starting with a letter or
    /// `_`, and the whole name at most 63 bytes.
    pub fn with_prefix(prefix: &str, service: ServiceKind) -> Result<Self, RoleError> {
        let name = format!("{prefix}_{}", service.schema());
        let invalid = |reason| RoleError::InvalidName {
            name: name.clone(),
            reason,
        };
        if name.len() > MAX_IDENTIFIER_LEN {
            return Err(invalid("longer than 63 bytes"));
        }
        if !prefix.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
            return Err(invalid("must start with a lower-case letter or `_`"));
        }
        if !prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(invalid(
                "may contain only lower-case letters, digits and `_`",
            ));
        }
        Ok(Self { service, name })
    }

    /// The role's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service whose schema the role may use.
    pub fn service(&self) -> ServiceKind {
        self.service
    }
}

/// The name of `service`'s password variable, e.g. `CUSTOPS_LOYALTY_DB_PASSWORD`.
pub fn password_var(service: ServiceKind) -> String {
    format!("{}DB_PASSWORD", service.env_prefix())
}

/// The password for `service`'s role from `CUSTOPS_<SVC>_DB_PASSWORD`, if set.
pub fn password_from_env(service: ServiceKind, env: &Environment) -> Option<SecretString> {
    env.get(&password_var(service))
        .map(|password| SecretString::from(password.to_owned()))
}

/// Creates `role` or brings it up to date, and grants it its own schema and nothing else
/// (see the module documentation). With `password` the role can log in with it; without,
/// a new role is `NOLOGIN` and an existing one keeps its login and password.
///
/// `admin` must be connected to the service's database as a role allowed to create roles and
/// owning the schemas (the one that ran the migrations). Everything happens in one
/// transaction: the role ends up fully set up or unchanged.
pub async fn ensure_service_role(
    admin: &mut PgConnection,
    role: &ServiceRole,
    password: Option<&SecretString>,
) -> Result<(), RoleError> {
    let mut setup = RoleSetup {
        tx: admin.begin().await.map_err(|e| role.error("begin", e))?,
        role,
    };
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ROLE_LOCK_KEY)
        .execute(&mut *setup.tx)
        .await
        .map_err(|e| role.error("take the role set-up lock", e))?;

    let schema = role.service.schema();
    if !setup.schema_exists(schema).await? {
        return Err(RoleError::SchemaMissing { schema });
    }

    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&role.name)
            .fetch_one(&mut *setup.tx)
            .await
            .map_err(|e| role.error("look up the role", e))?;
    let password = password.map(ExposeSecret::expose_secret);
    match (exists, password) {
        (false, Some(password)) => {
            setup
                .run(
                    "create the role",
                    "CREATE ROLE %I LOGIN PASSWORD %L",
                    &[password],
                )
                .await?;
        }
        (false, None) => {
            setup
                .run("create the role", "CREATE ROLE %I NOLOGIN", &[])
                .await?
        }
        (true, Some(password)) => {
            setup
                .run(
                    "set the role's password",
                    "ALTER ROLE %I LOGIN PASSWORD %L",
                    &[password],
                )
                .await?;
        }
        (true, None) => {}
    }

    // Connecting: PUBLIC has CONNECT by default, but hardened clusters revoke it.
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&mut *setup.tx)
        .await
        .map_err(|e| role.error("look up the database", e))?;
    setup
        .run(
            "grant CONNECT and TEMPORARY on the database",
            "GRANT CONNECT, TEMPORARY ON DATABASE %2$I TO %1$I",
            &[&database],
        )
        .await?;
    // Its sessions start in its schema even when nothing sets `search_path` at connect time:
    // behind a transaction pooler the start-up packet cannot (`db::connect`).
    setup
        .run(
            "set its search_path",
            "ALTER ROLE %1$I IN DATABASE %2$I SET search_path = %3$I",
            &[&database, schema],
        )
        .await?;

    // Nothing in `public`, nor in the other services' schemas.
    if setup.schema_exists("public").await? {
        setup
            .run_plain(
                "revoke CREATE on schema public",
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            )
            .await?;
        setup
            .run(
                "revoke its privileges on schema public",
                "REVOKE ALL ON SCHEMA public FROM %I",
                &[],
            )
            .await?;
    }
    for other in ServiceKind::ALL.into_iter().filter(|s| *s != role.service) {
        if !setup.schema_exists(other.schema()).await? {
            continue;
        }
        for (step, statement) in [
            (
                "revoke another schema",
                "REVOKE ALL ON SCHEMA %2$I FROM %1$I",
            ),
            (
                "revoke another schema's tables",
                "REVOKE ALL ON ALL TABLES IN SCHEMA %2$I FROM %1$I",
            ),
            (
                "revoke another schema's sequences",
                "REVOKE ALL ON ALL SEQUENCES IN SCHEMA %2$I FROM %1$I",
            ),
            (
                "revoke another schema's routines",
                "REVOKE ALL ON ALL ROUTINES IN SCHEMA %2$I FROM %1$I",
            ),
        ] {
            setup.run(step, statement, &[other.schema()]).await?;
        }
    }

    // Its own schema: start from nothing (an older set-up granted everything), then use it
    // and read and write what is (and will be) in it, as the code does.
    for (step, statement) in [
        (
            "revoke its schema's privileges",
            "REVOKE ALL ON SCHEMA %2$I FROM %1$I",
        ),
        (
            "revoke its schema's tables",
            "REVOKE ALL ON ALL TABLES IN SCHEMA %2$I FROM %1$I",
        ),
        (
            "revoke its schema's sequences",
            "REVOKE ALL ON ALL SEQUENCES IN SCHEMA %2$I FROM %1$I",
        ),
        (
            "revoke the old default privileges on tables",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA %2$I REVOKE ALL ON TABLES FROM %1$I",
        ),
        (
            "revoke the old default privileges on sequences",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA %2$I REVOKE ALL ON SEQUENCES FROM %1$I",
        ),
        (
            "grant USAGE on its schema",
            "GRANT USAGE ON SCHEMA %2$I TO %1$I",
        ),
        (
            "grant its schema's tables",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %2$I TO %1$I",
        ),
        (
            "grant its schema's sequences",
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %2$I TO %1$I",
        ),
        (
            "grant its schema's routines",
            "GRANT EXECUTE ON ALL ROUTINES IN SCHEMA %2$I TO %1$I",
        ),
        // Default privileges cover objects that the current (migrating) role creates later.
        (
            "set default privileges on tables",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA %2$I \
             GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %1$I",
        ),
        (
            "set default privileges on sequences",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA %2$I GRANT USAGE, SELECT ON SEQUENCES TO %1$I",
        ),
        (
            "set default privileges on routines",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA %2$I GRANT EXECUTE ON ROUTINES TO %1$I",
        ),
    ] {
        setup.run(step, statement, &[schema]).await?;
    }
    let narrower = NARROWER_GRANTS
        .iter()
        .filter(|(service, _, _)| *service == role.service)
        .map(|(_, table, privileges)| (*table, *privileges))
        .chain([(MIGRATIONS_TABLE, "SELECT")]);
    for (table, privileges) in narrower {
        if !setup.table_exists(schema, table).await? {
            continue;
        }
        setup
            .run(
                "narrow a table's privileges",
                "REVOKE ALL ON TABLE %2$I.%3$I FROM %1$I",
                &[schema, table],
            )
            .await?;
        // The privilege list is one of the fixed strings above, never input.
        let grant = format!("GRANT {privileges} ON TABLE %2$I.%3$I TO %1$I");
        setup
            .run_owned("narrow a table's privileges", grant, &[schema, table])
            .await?;
    }

    setup
        .tx
        .commit()
        .await
        .map_err(|e| role.error("commit", e))?;
    tracing::info!(role = %role.name, schema, login = password.is_some(), "service role ready");
    Ok(())
}

/// Drops a role made by [`ensure_service_role`], after dropping what it owns and revoking what
/// it was granted **in the database `admin` is connected to** (`DROP OWNED BY`). Meant for
/// tests and decommissioning; a role with grants in other databases must be dropped there too
/// (or after those databases are gone). Does nothing when the role does not exist.
pub async fn drop_service_role(
    admin: &mut PgConnection,
    role: &ServiceRole,
) -> Result<(), RoleError> {
    let mut setup = RoleSetup {
        tx: admin.begin().await.map_err(|e| role.error("begin", e))?,
        role,
    };
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(&role.name)
            .fetch_one(&mut *setup.tx)
            .await
            .map_err(|e| role.error("look up the role", e))?;
    if exists {
        setup
            .run("drop what the role owns", "DROP OWNED BY %I", &[])
            .await?;
        setup.run("drop the role", "DROP ROLE %I", &[]).await?;
    }
    setup.tx.commit().await.map_err(|e| role.error("commit", e))
}

impl ServiceRole {
    fn error(&self, step: &'static str, source: sqlx::Error) -> RoleError {
        RoleError::Database {
            role: self.name.clone(),
            step,
            source,
        }
    }
}

/// One transaction setting up one role.
struct RoleSetup<'c, 'r> {
    tx: Transaction<'c, Postgres>,
    role: &'r ServiceRole,
}

impl RoleSetup<'_, '_> {
    async fn schema_exists(&mut self, schema: &str) -> Result<bool, RoleError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(schema)
            .fetch_one(&mut *self.tx)
            .await
            .map_err(|e| self.role.error("look up a schema", e))
    }

    async fn table_exists(&mut self, schema: &str, table: &str) -> Result<bool, RoleError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)",
        )
        .bind(schema)
        .bind(table)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| self.role.error("look up a table", e))
    }

    /// [`Self::run`] with a template built from fixed strings at run time.
    async fn run_owned(
        &mut self,
        step: &'static str,
        template: String,
        args: &[&str],
    ) -> Result<(), RoleError> {
        self.run_template(step, &template, args).await
    }

    /// Runs `template` after the server has filled it in with `format()`: `%1$I` (or the first
    /// `%I`) is the role name, `%2$…` onwards are `args`, quoted by the server (`%I` as an
    /// identifier, `%L` as a literal).
    async fn run(
        &mut self,
        step: &'static str,
        template: &'static str,
        args: &[&str],
    ) -> Result<(), RoleError> {
        self.run_template(step, template, args).await
    }

    async fn run_template(
        &mut self,
        step: &'static str,
        template: &str,
        args: &[&str],
    ) -> Result<(), RoleError> {
        let mut values = vec![self.role.name.as_str()];
        values.extend_from_slice(args);
        // format() is variadic over text; one placeholder per value, each bound, never spliced.
        let placeholders: String = (2..=values.len() + 1)
            .map(|i| format!(", ${i}::text"))
            .collect();
        let query = format!("SELECT format($1{placeholders})");
        let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(query)).bind(template);
        for value in &values {
            query = query.bind(*value);
        }
        let statement = query
            .fetch_one(&mut *self.tx)
            .await
            .map_err(|e| self.role.error(step, e))?;
        // The statement text may hold the password: it is executed, never logged or returned.
        self.tx
            .execute(AssertSqlSafe(statement))
            .await
            .map_err(|e| self.role.error(step, e))?;
        Ok(())
    }

    /// Runs a fixed statement that names no role.
    async fn run_plain(
        &mut self,
        step: &'static str,
        statement: &'static str,
    ) -> Result<(), RoleError> {
        self.tx
            .execute(statement)
            .await
            .map_err(|e| self.role.error(step, e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_names_follow_the_schema() {
        let names: Vec<String> = ServiceKind::ALL
            .into_iter()
            .map(|s| ServiceRole::new(s).name().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "custops_profiles",
                "custops_segmentation",
                "custops_loyalty",
                "custops_feedback"
            ]
        );
        assert_eq!(
            password_var(ServiceKind::Loyalty),
            "CUSTOPS_LOYALTY_DB_PASSWORD"
        );
    }

    #[test]
    fn prefixes_must_make_plain_short_identifiers() {
        let check = |prefix: &str, ok: bool| {
            let role = ServiceRole::with_prefix(prefix, ServiceKind::Segmentation);
            assert_eq!(role.is_ok(), ok, "{prefix:?}: {role:?}");
        };
        check("custops", true);
        check("custops_test_0123456789abcdef0123456789abcdef", true);
        check("_x", true);
        check("", false);
        check("9lives", false);
        check("Custops", false);
        check("custops\"; DROP ROLE postgres; --", false);
        check("custops-test", false);
        check(&"x".repeat(50), true); // 63 bytes with "_segmentation"
        check(&"x".repeat(51), false);
    }

    #[test]
    fn the_password_comes_from_the_service_variable() {
        let env = Environment::from_pairs([("CUSTOPS_LOYALTY_DB_PASSWORD", "pw")]);
        let password = password_from_env(ServiceKind::Loyalty, &env);
        assert_eq!(password.as_ref().map(|p| p.expose_secret()), Some("pw"));
        assert!(password_from_env(ServiceKind::Profiles, &env).is_none());
    }
}
