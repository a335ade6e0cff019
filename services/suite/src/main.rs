//! The `custops` binary. Commands are parsed in `cli` and carried out by the library; this file
//! only wires them to the environment and the exit code.

// A command-line tool answers on stdout; logs go to stderr.
#![allow(clippy::print_stdout, reason = "CLI output")]

use std::process::ExitCode;

use custops_common::auth::{AuthSettings, TokenIssuer};
use custops_common::config::{ConfigError, DatabaseSettings, Environment, ServiceSettings};
use custops_common::service::ServiceKind;
use custops_common::telemetry;
use custops_suite::cli::{self, Command};
use custops_suite::{bench, demo, dev, migrate};

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
            let settings = dev::settings_from_env(env)
                .map(|mut settings| dev::wire_peers(&mut settings).map(|()| settings));
            match settings {
                Ok(Ok(settings)) => {
                    dev::run(settings, sample_data, &dev::banner::Tools::find()).await
                }
                Ok(Err(error)) => Err(anyhow::Error::new(error).context("Failed to pick a port")),
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
            demo::run(&profiles_url(&env), &auth, customers).await
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

/// Where `custops demo` finds profiles: `CUSTOPS_PROFILES_URL`, else loopback on
/// `CUSTOPS_PROFILES_PORT` (default 50051), where `custops dev` with the same environment
/// listens.
fn profiles_url(env: &Environment) -> String {
    env.get("CUSTOPS_PROFILES_URL").map_or_else(
        || {
            let port = env.get("CUSTOPS_PROFILES_PORT").unwrap_or("50051");
            format!("http://127.0.0.1:{port}")
        },
        str::to_owned,
    )
}
