//! Running several services in one process: each gets its own listener and task, and one
//! token stops them all, each draining as it would alone. Each listener is registered with
//! telemetry, so the spans of calls it serves name their own service
//! (`telemetry::register_listener`). The services are pointed at each other where they listen
//! ([`wire_peers`]), and `banner` says how to call them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Context;
use custops_common::config::{ConfigError, Environment, ServiceSettings};
use custops_common::service::ServiceKind;
use custops_common::telemetry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::demo::catch_up;
use crate::services;

pub mod banner;

/// The settings `custops dev` runs the four services with: the environment's, with
/// authentication off unless `CUSTOPS_AUTH_MODE` asks for it (each server then logs loudly
/// that it is off). Peers are not wired yet: see [`wire_peers`].
pub fn settings_from_env(env: Environment) -> Result<Vec<ServiceSettings>, ConfigError> {
    let env = env.with_default("CUSTOPS_AUTH_MODE", "disabled");
    ServiceKind::ALL
        .into_iter()
        .map(|service| ServiceSettings::from_env(service, &env))
        .collect()
}

/// Points each service at the others where they will listen (feeds, rewards, targeting,
/// Customer 360), unless its `CUSTOPS_<SVC>_URL` already names one: a suite started on other
/// ports (`CUSTOPS_<SVC>_PORT`) talks to itself, never to another suite on the defaults. A
/// service asked to listen on port 0 is given a free port here, since its peers must be told
/// one before it binds (another process could take it in between; the start then fails with
/// "could not bind").
pub fn wire_peers(settings: &mut [ServiceSettings]) -> std::io::Result<()> {
    // Every probe listener is held until all ports are chosen, so two services given port 0
    // are never told the same free port.
    let mut probes = Vec::new();
    for service in settings.iter_mut() {
        let listen = &mut service.server.listen_addr;
        if listen.port() == 0 {
            let probe = std::net::TcpListener::bind(*listen)?;
            listen.set_port(probe.local_addr()?.port());
            probes.push(probe);
        }
    }
    drop(probes);
    let reachable: Vec<(ServiceKind, String)> = settings
        .iter()
        .map(|service| {
            let scheme = if service.server.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let addr = reachable_addr(service.server.listen_addr);
            (service.service, format!("{scheme}://{addr}"))
        })
        .collect();
    for service in settings.iter_mut() {
        for (peer, url) in reachable
            .iter()
            .filter(|(peer, _)| *peer != service.service)
        {
            service
                .clients
                .peers
                .entry(*peer)
                .or_insert_with(|| url.clone());
        }
    }
    Ok(())
}

/// Where a client on this machine reaches a server listening on `listen`: loopback for a
/// server on every address (`0.0.0.0`, `::`), else the address itself.
pub fn reachable_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port())
        }
        _ => listen,
    }
}

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

/// `custops dev`: starts `settings`' services, prints how to call them, loads the sample data
/// into an empty database when `sample_data` (not without profiles), logs how far
/// segmentation has followed profiles while it is behind, and runs until SIGTERM/SIGINT or
/// until a service fails.
#[allow(clippy::print_stdout, reason = "the banner is the command's output")]
pub async fn run(
    settings: Vec<ServiceSettings>,
    sample_data: bool,
    tools: &banner::Tools,
) -> anyhow::Result<()> {
    let profiles_auth = settings
        .iter()
        .find(|s| s.service == ServiceKind::Profiles)
        .map(|s| s.server.auth.clone());
    let segmentation_db = settings
        .iter()
        .find(|s| s.service == ServiceKind::Segmentation)
        .map(|s| s.database.clone());
    let mut suite = start(settings).await?;
    let addrs: Vec<_> = suite.addrs().collect();
    let auth_on = profiles_auth.as_ref().is_some_and(|auth| auth.is_enabled());
    println!("{}", banner::how_to_call(&addrs, auth_on, tools));

    let watching = CancellationToken::new();
    if let (Some(addr), Some(auth)) = (suite.addr(ServiceKind::Profiles), profiles_auth) {
        let url = format!("http://{}", reachable_addr(addr));
        if sample_data {
            tokio::spawn(crate::demo::seed_if_empty(url.clone(), auth.clone()));
        }
        if let Some(database) = segmentation_db {
            let stop = watching.clone();
            tokio::spawn(async move {
                match catch_up::Follower::connect(&url, &auth, &database).await {
                    Ok(follower) => catch_up::watch(follower, catch_up::WATCH_EVERY, stop).await,
                    Err(error) => tracing::warn!(
                        error = format!("{error:#}"),
                        "segmentation's progress through the profiles feed will not be shown"
                    ),
                }
            });
        }
    }
    let _stop_watching = watching.drop_guard();
    tokio::select! {
        () = custops_common::shutdown::shutdown_signal() => suite.stop().await,
        failed = suite.any_stopped() => {
            let stopped = suite.stop().await;
            failed.and(stopped)
        }
    }
}
