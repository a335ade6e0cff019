//! The `custops` binary. Commands are parsed in `cli` and carried out by the library; this file
//! only wires them to the environment and the exit code.

// A command-line tool answers on stdout; logs go to stderr.
#![allow(clippy::print_stdout, reason = "CLI output")]

use std::process::ExitCode;

use custops_common::auth::{AuthSettings, TokenIssuer};
use custops_common::config::{ConfigError, DatabaseSettings, Environment, ServiceSettings};
use custops_common::service::ServiceKind;
use custops_common::{shutdown, telemetry};
use custops_contracts::custops::profiles::v1::profiles_service_client::ProfilesServiceClient;
use custops_suite::cli::{self, Command};
use custops_suite::{bench, dev, migrate};

#[tokio::main]
async fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os()) {
        Ok(command) => command,
        // Help goes to stdout with 0, a usage error to stderr with 2.
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let env = Environment::from_process();
    // `custops dev` hosts the four services: each one's spans carry its own service.name.
    // `custops bench-serve` hosts one.
    let hosted: &[ServiceKind] = match &command {
        Command::Dev { .. } => &ServiceKind::ALL,
        Command::BenchServe { service, .. } => std::slice::from_ref(service),
        _ => &[],
    };
    let telemetry = match telemetry::log_format_from_env(&env) {
        Ok(format) => telemetry::init_hosting(
            "custops",
            hosted,
            format,
            telemetry::Exporters::from_env(&env),
        ),
        Err(error) => return config_error(&error),
    };
    let result = match command {
        Command::Token {
            subject,
            scopes,
            ttl_secs,
        } => {
            let auth = match AuthSettings::from_env(&env) {
                Ok(auth) => auth,
                Err(error) => return config_error(&error),
            };
            mint_token(&auth, &subject, &scopes, ttl_secs)
        }
        Command::Dev { sample_data } => {
            // A laptop suite: no tokens unless CUSTOPS_AUTH_MODE asks for them. Each server
            // logs loudly that auth is off.
            let mut env = env.with_default("CUSTOPS_AUTH_MODE", "disabled");
            // The services find each other on their local ports (feeds, rewards, targeting,
            // Customer 360) unless the environment says otherwise.
            for peer in ServiceKind::ALL {
                env = env.with_default(
                    &format!("CUSTOPS_{}_URL", peer.name().to_ascii_uppercase()),
                    &format!("http://127.0.0.1:{}", peer.default_port()),
                );
            }
            let settings = ServiceKind::ALL
                .into_iter()
                .map(|service| ServiceSettings::from_env(service, &env))
                .collect::<Result<Vec<_>, _>>();
            match settings {
                Ok(settings) => run_dev(settings, sample_data).await,
                Err(error) => return config_error(&error),
            }
        }
        Command::Demo { customers } => {
            // Like `custops dev`: no tokens unless CUSTOPS_AUTH_MODE asks for them.
            let env = env.with_default("CUSTOPS_AUTH_MODE", "disabled");
            let auth = match AuthSettings::from_env(&env) {
                Ok(auth) => auth,
                Err(error) => return config_error(&error),
            };
            run_demo(&env, &auth, customers).await
        }
        Command::Bench { quick, only, out } => {
            let options = bench::Options {
                quick,
                only,
                out: out.unwrap_or_else(|| "target/bench".into()),
            };
            bench::run(options).await
        }
        Command::BenchServe { service, port } => {
            // Run as `custops dev` runs it: no tokens unless CUSTOPS_AUTH_MODE asks for them.
            let env = env.with_default("CUSTOPS_AUTH_MODE", "disabled");
            match ServiceSettings::from_env(service, &env) {
                Ok(mut settings) => {
                    settings.server.listen_addr.set_port(port);
                    bench::serve::run(settings).await
                }
                Err(error) => return config_error(&error),
            }
        }
        Command::BenchEcho { port, list_ids } => bench::echo::run(port, list_ids).await,
        Command::Migrate {
            services,
            create_roles,
        } => {
            let targets = services
                .into_iter()
                .map(|service| DatabaseSettings::from_env(service, &env).map(|db| (service, db)))
                .collect::<Result<Vec<_>, _>>();
            let roles = create_roles.then(|| migrate::RoleOptions::from_env(&env));
            match targets {
                Ok(targets) => migrate::run_with_roles(&targets, roles.as_ref()).await,
                Err(error) => return config_error(&error),
            }
        }
    };
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("custops: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn mint_token(
    auth: &AuthSettings,
    subject: &str,
    scopes: &[String],
    ttl_secs: u64,
) -> anyhow::Result<()> {
    let issuer = TokenIssuer::from_settings(auth).ok_or_else(|| {
        anyhow::anyhow!("CUSTOPS_AUTH_MODE is disabled: the services accept calls without a token")
    })?;
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let token = issuer.mint(subject, &scopes, std::time::Duration::from_secs(ttl_secs))?;
    println!("{token}");
    Ok(())
}

fn config_error(error: &ConfigError) -> ExitCode {
    eprintln!("custops: configuration error: {error}");
    ExitCode::from(2)
}

/// Loads sample data into the running profiles service through its API.
async fn run_demo(env: &Environment, auth: &AuthSettings, customers: usize) -> anyhow::Result<()> {
    let url = env.get("CUSTOPS_PROFILES_URL").map_or_else(
        || {
            let port = env.get("CUSTOPS_PROFILES_PORT").unwrap_or("50051");
            format!("http://127.0.0.1:{port}")
        },
        str::to_owned,
    );
    let channel = custops_common::client::ClientBuilder::new(url.clone(), "custops-demo")
        .auth(auth, &["profiles.write"])
        .timeout(std::time::Duration::from_secs(120))
        .build()?;
    let mut client = ProfilesServiceClient::new(channel);
    println!("loading {customers} sample customers into {url} …");
    let summary = custops_profiles::demo::load(&mut client, customers).await?;
    println!(
        "{} customers; {} activities stored, {} already there",
        summary.customers, summary.activities_accepted, summary.activities_duplicate
    );
    Ok(())
}

/// Loads the demo data when the profiles database holds no customer at all, so a newcomer's
/// first `make run` has something to look at.
async fn seed_if_empty(url: String, auth: AuthSettings) {
    let seeded = async {
        let channel = custops_common::client::ClientBuilder::new(url.clone(), "custops-dev")
            .auth(&auth, &["profiles.read", "profiles.write"])
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        let mut client = ProfilesServiceClient::new(channel);
        let all_states = (1..=4).collect();
        let any = client
            .list_customers(
                custops_contracts::custops::profiles::v1::ListCustomersRequest {
                    filter: Some(custops_contracts::custops::profiles::v1::CustomerFilter {
                        states: all_states,
                        ..Default::default()
                    }),
                    page_size: 1,
                    page_token: String::new(),
                },
            )
            .await?
            .into_inner();
        if !any.customers.is_empty() {
            return anyhow::Ok(None);
        }
        tracing::info!("empty database: loading sample data (custops demo)");
        Ok(Some(custops_profiles::demo::load(&mut client, 2000).await?))
    };
    match seeded.await {
        Ok(Some(summary)) => tracing::info!(
            customers = summary.customers,
            activities = summary.activities_accepted,
            "sample data loaded"
        ),
        Ok(None) => {}
        Err(error) => tracing::warn!(error = format!("{error:#}"), "could not load sample data"),
    }
}

/// Runs the four services until SIGTERM/SIGINT, or until one of them fails; with
/// `sample_data`, loads the demo into an empty database.
async fn run_dev(settings: Vec<ServiceSettings>, sample_data: bool) -> anyhow::Result<()> {
    let profiles_auth = settings
        .iter()
        .find(|s| s.service == ServiceKind::Profiles)
        .map(|s| s.server.auth.clone());
    let mut suite = dev::start(settings).await?;
    println!("{}", dev::how_to_call(&suite));
    if let (true, Some(addr), Some(auth)) = (
        sample_data,
        suite.addr(ServiceKind::Profiles),
        profiles_auth,
    ) {
        tokio::spawn(seed_if_empty(format!("http://{addr}"), auth));
    }
    tokio::select! {
        () = shutdown::shutdown_signal() => suite.stop().await,
        failed = suite.any_stopped() => {
            let stopped = suite.stop().await;
            failed.and(stopped)
        }
    }
}
