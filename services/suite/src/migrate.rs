//! `custops migrate [--create-roles] [service…]`: applies pending migrations to each service's
//! schema and exits; with `--create-roles` it then creates or updates each service's own
//! Postgres role (see `custops_common::db_roles` for what the role may do, and the production
//! recipe). Production runs it as a Kubernetes Job, with the admin URL, before the Deployments
//! roll.

use std::collections::BTreeMap;

use anyhow::Context;
use custops_common::config::{DatabaseSettings, Environment};
use custops_common::db;
use custops_common::db_roles::{self, DEFAULT_ROLE_PREFIX, ServiceRole};
use custops_common::service::ServiceKind;
use secrecy::SecretString;

use crate::services;

/// Which roles `--create-roles` sets up, and with which passwords.
#[derive(Debug)]
pub struct RoleOptions {
    /// Role names are `<prefix>_<schema>`; `custops` in production, unique per test.
    pub prefix: String,
    /// Login passwords by service; a service without one gets a `NOLOGIN` role.
    pub passwords: BTreeMap<ServiceKind, SecretString>,
}

impl RoleOptions {
    /// The production roles (`custops_<schema>`), with passwords from
    /// `CUSTOPS_<SVC>_DB_PASSWORD` where set.
    pub fn from_env(env: &Environment) -> Self {
        let passwords = ServiceKind::ALL
            .into_iter()
            .filter_map(|service| {
                db_roles::password_from_env(service, env).map(|password| (service, password))
            })
            .collect();
        Self {
            prefix: DEFAULT_ROLE_PREFIX.to_owned(),
            passwords,
        }
    }
}

/// Migrates each service's schema in turn, each through its own pool and settings.
pub async fn run(targets: &[(ServiceKind, DatabaseSettings)]) -> anyhow::Result<()> {
    run_with_roles(targets, None).await
}

/// [`run`], then, with `roles`, sets up each migrated service's role right after its
/// migrations (the role's grants cover the tables those migrations made).
pub async fn run_with_roles(
    targets: &[(ServiceKind, DatabaseSettings)],
    roles: Option<&RoleOptions>,
) -> anyhow::Result<()> {
    for (service, database) in targets {
        // Straight to Postgres even behind a pooler: migrations hold a session-level lock.
        let pool = db::connect_direct(database, 1)
            .await
            .with_context(|| format!("Failed to connect to Postgres for {service}"))?;
        db::migrate(&pool, database.schema, services::migrations(*service))
            .await
            .with_context(|| format!("Failed to migrate {service}"))?;
        tracing::info!(%service, "migrations applied");
        if let Some(roles) = roles {
            let role = ServiceRole::with_prefix(&roles.prefix, *service)?;
            let mut connection = pool
                .acquire()
                .await
                .with_context(|| format!("Failed to connect to Postgres for {service}"))?;
            db_roles::ensure_service_role(&mut connection, &role, roles.passwords.get(service))
                .await
                .with_context(|| format!("Failed to set up the database role of {service}"))?;
        }
        pool.close().await;
    }
    Ok(())
}
