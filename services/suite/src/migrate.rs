//! `custops migrate [service…]`: applies pending migrations to each service's schema and
//! exits. Production runs it as a Kubernetes Job before the Deployments roll.

use anyhow::Context;
use custops_common::config::DatabaseSettings;
use custops_common::db;
use custops_common::service::ServiceKind;

use crate::services;

/// Migrates each service's schema in turn, each through its own pool and settings.
pub async fn run(targets: &[(ServiceKind, DatabaseSettings)]) -> anyhow::Result<()> {
    for (service, database) in targets {
        let pool = db::connect(database)
            .await
            .with_context(|| format!("Failed to connect to Postgres for {service}"))?;
        db::migrate(&pool, database.schema, services::migrations(*service))
            .await
            .with_context(|| format!("Failed to migrate {service}"))?;
        pool.close().await;
        tracing::info!(%service, "migrations applied");
    }
    Ok(())
}
