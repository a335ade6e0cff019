//! Starting a service, written once: [`prepare`] does what every service's `build` does first
//! (connect, migrate, bind), and [`run`] is the whole `main` of a service binary (logging,
//! settings from the environment, build, serve until SIGTERM/SIGINT).
//!
//! Exit codes of [`run`]: 0 after a clean shutdown, 2 for a configuration error (one line on
//! stderr naming the variable), 1 when start-up or serving fails.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::migrate::Migrator;

use std::time::Instant;

use opentelemetry::KeyValue;
use tokio_util::sync::CancellationToken;

use crate::config::{Environment, ServiceSettings};
use crate::server::Application;
use crate::service::ServiceKind;
use crate::{db, metrics, outbox, shutdown, telemetry};

/// Applies the service's migrations when `migrate_on_start` is set (over a direct connection:
/// [`db::connect_direct`]), connects its pool, and binds its listener. The caller adds its
/// APIs to the returned [`Application`].
pub async fn prepare(
    settings: &ServiceSettings,
    migrations: &Migrator,
) -> anyhow::Result<(PgPool, Application)> {
    let schema = settings.database.schema;
    if settings.migrate_on_start {
        // Straight to Postgres: the migrator holds a session-level advisory lock, which a
        // transaction pooler would not keep on one server connection. First: behind a pooler,
        // the pool's check of its sessions' schema needs the schema to exist.
        let direct = db::connect_direct(&settings.database, 1)
            .await
            .context("Failed to connect to Postgres for migrations")?;
        db::migrate(&direct, schema, migrations)
            .await
            .context("Failed to migrate the database")?;
        direct.close().await;
    }
    let pool = db::connect(&settings.database)
        .await
        .context("Failed to connect to Postgres")?;
    let app = Application::bind(&settings.server)
        .await
        .context("Failed to bind the gRPC listener")?;
    sample_service_metrics(schema, &pool, app.shutdown_token());
    Ok((pool, app))
}

/// Samples the gauges every service has (when metrics are exported): its pool's connections
/// by state and limit, the time to obtain one (the sampler's own acquisition: a call arriving
/// then would have waited as long), and its outbox backlog.
fn sample_service_metrics(schema: &'static str, pool: &PgPool, shutdown: CancellationToken) {
    metrics::spawn_sampler(
        shutdown,
        ServiceGauges {
            pool: pool.clone(),
            pool_name: KeyValue::new("db.client.connection.pool.name", schema),
            service: KeyValue::new(metrics::SERVICE, schema),
            connections: metrics::DB_CONNECTION_COUNT.gauge(),
            max: metrics::DB_CONNECTION_MAX.gauge(),
            wait_time: metrics::DB_CONNECTION_WAIT_TIME.histogram(),
            unsequenced: metrics::OUTBOX_UNSEQUENCED.gauge(),
            oldest_age: metrics::OUTBOX_OLDEST_UNSEQUENCED_AGE.gauge(),
        },
    );
}

/// The gauges of [`sample_service_metrics`].
struct ServiceGauges {
    pool: PgPool,
    pool_name: KeyValue,
    service: KeyValue,
    connections: metrics::Gauge<f64>,
    max: metrics::Gauge<f64>,
    wait_time: metrics::Histogram<f64>,
    unsequenced: metrics::Gauge<f64>,
    oldest_age: metrics::Gauge<f64>,
}

impl metrics::Sampler for ServiceGauges {
    async fn sample(&self) -> anyhow::Result<()> {
        let pool_name = std::slice::from_ref(&self.pool_name);
        let size = f64::from(self.pool.size());
        let idle = self.pool.num_idle() as f64;
        for (state, count) in [("idle", idle), ("used", (size - idle).max(0.0))] {
            self.connections.record(
                count,
                &[
                    self.pool_name.clone(),
                    KeyValue::new("db.client.connection.state", state),
                ],
            );
        }
        let max = self.pool.options().get_max_connections();
        self.max.record(f64::from(max), pool_name);
        let started = Instant::now();
        let mut conn = db::read(&self.pool).await?;
        self.wait_time
            .record(started.elapsed().as_secs_f64(), pool_name);
        let backlog = outbox::backlog(&mut conn).await?;
        let service = std::slice::from_ref(&self.service);
        self.unsequenced.record(backlog.events as f64, service);
        self.oldest_age
            .record(backlog.oldest_age.as_secs_f64(), service);
        Ok(())
    }
}

/// Runs one service binary to completion and returns its exit code.
pub async fn run<F, Fut>(service: ServiceKind, build: F) -> ExitCode
where
    F: FnOnce(ServiceSettings) -> Fut,
    Fut: Future<Output = anyhow::Result<Application>>,
{
    let env = Environment::from_process();
    let format = match telemetry::log_format_from_env(&env) {
        Ok(format) => format,
        Err(error) => {
            eprintln!("custops-{service}: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    metrics::set_process_service(service);
    let telemetry = telemetry::init(
        &format!("custops-{service}"),
        format,
        telemetry::Exporters::from_env(&env),
    );
    let settings = match ServiceSettings::from_env(service, &env) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("custops-{service}: configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    let code = serve(service, settings, build).await;
    // Spans and metrics of the last calls leave before the process does.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    code
}

async fn serve<F, Fut>(service: ServiceKind, settings: ServiceSettings, build: F) -> ExitCode
where
    F: FnOnce(ServiceSettings) -> Fut,
    Fut: Future<Output = anyhow::Result<Application>>,
{
    let app = match build(settings).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!(%service, error = format!("{error:#}"), "start-up failed");
            eprintln!("custops-{service}: start-up failed: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped(shutdown::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%service, error = format!("{error:#}"), "server failed");
            ExitCode::FAILURE
        }
    }
}
