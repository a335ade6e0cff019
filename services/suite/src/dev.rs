//! Running several services in one process: each gets its own listener and task, and one
//! token stops them all, each draining as it would alone. Each listener is registered with
//! telemetry, so the spans of calls it serves name their own service
//! (`telemetry::register_listener`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Context;
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_common::telemetry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::services;

/// Services started in this process.
#[derive(Debug)]
pub struct RunningSuite {
    addrs: BTreeMap<ServiceKind, SocketAddr>,
    tasks: JoinSet<anyhow::Result<()>>,
    stop: CancellationToken,
}

/// Builds every service in `settings` (connect, migrate, bind) and starts serving them. If
/// any fails to build, none is left running.
pub async fn start(settings: Vec<ServiceSettings>) -> anyhow::Result<RunningSuite> {
    // Build concurrently: each waits on its own database connection and migrations.
    let mut builds = JoinSet::new();
    for settings in settings {
        let service = settings.service;
        // Built as the service's own work, so the background tasks it starts are too.
        builds.spawn(telemetry::in_service(service, async move {
            services::build(settings)
                .await
                .with_context(|| format!("Failed to start {service}"))
        }));
    }
    let mut apps = Vec::new();
    while let Some(built) = builds.join_next().await {
        // Returning here drops `builds` and `apps`: nothing has started serving yet.
        apps.push(built.context("a service's start-up task panicked")??);
    }

    let stop = CancellationToken::new();
    let mut addrs = BTreeMap::new();
    let mut tasks = JoinSet::new();
    for app in apps {
        let service = app.service();
        addrs.insert(service, app.local_addr());
        telemetry::register_listener(app.local_addr().port(), service);
        let stopped = stop.clone().cancelled_owned();
        tasks.spawn(async move {
            app.run_until_stopped(stopped)
                .await
                .with_context(|| format!("{service} failed while serving"))
        });
    }
    Ok(RunningSuite { addrs, tasks, stop })
}

impl RunningSuite {
    /// Address the service listens on, if it was started.
    pub fn addr(&self, service: ServiceKind) -> Option<SocketAddr> {
        self.addrs.get(&service).copied()
    }

    /// Every started service and its address, in [`ServiceKind`] order.
    pub fn addrs(&self) -> impl Iterator<Item = (ServiceKind, SocketAddr)> + '_ {
        self.addrs.iter().map(|(service, addr)| (*service, *addr))
    }

    /// Completes when a service stops serving on its own, which only happens when it fails.
    pub async fn any_stopped(&mut self) -> anyhow::Result<()> {
        match self.tasks.join_next().await {
            None => Ok(()),
            Some(finished) => finished
                .context("a service panicked")?
                .context("a service stopped unexpectedly"),
        }
    }

    /// Signals every service to drain and waits until all have stopped; the first error wins.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        for addr in self.addrs.values() {
            telemetry::unregister_listener(addr.port());
        }
        let mut result = Ok(());
        while let Some(finished) = self.tasks.join_next().await {
            let outcome = finished
                .context("a service panicked")
                .and_then(|served| served);
            if let Err(error) = outcome {
                tracing::error!(
                    error = format!("{error:#}"),
                    "service stopped with an error"
                );
                if result.is_ok() {
                    result = Err(error);
                }
            }
        }
        result
    }
}

/// What `custops dev` prints once the services are up: where each listens and how to call it
/// with grpcurl or `buf curl` through reflection alone.
pub fn how_to_call(suite: &RunningSuite) -> String {
    let mut text = String::from("custops is running:\n");
    for (service, addr) in suite.addrs() {
        text.push_str(&format!("  {service:<13} {addr}\n"));
    }
    if let Some(addr) = suite.addr(ServiceKind::Profiles) {
        text.push_str(&format!(
            "\nTry (reflection is on, no .proto files needed):\n\
             \x20 grpcurl -plaintext {addr} list\n\
             \x20 grpcurl -plaintext {addr} describe custops.profiles.v1.ProfilesService\n\
             \x20 grpcurl -plaintext -d '{{\"service\":\"\"}}' {addr} grpc.health.v1.Health/Check\n\
             \x20 buf curl --protocol grpc --http2-prior-knowledge http://{addr}/grpc.health.v1.Health/Check\n\
             Stop with Ctrl-C.\n"
        ));
    }
    text
}
