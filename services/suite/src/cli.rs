//! The `custops` command line, declared with `clap`'s derive: each command and flag is one
//! annotated field, and the help text is generated from these doc comments. What clap cannot
//! say in a declaration is checked after it parses ([`parse`]): `migrate` with no service
//! means all four, and `token`'s scopes must be ones some method requires.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{ArgAction, CommandFactory, Parser, Subcommand};
use custops_common::service::ServiceKind;

/// Configuration the services read, shown under every help text.
const CONFIGURATION: &str = "\
Configuration comes from the environment: DATABASE_URL (required), CUSTOPS_LISTEN_HOST,
CUSTOPS_<SVC>_PORT, CUSTOPS_<SVC>_DATABASE_URL, CUSTOPS_<SVC>_DB_PASSWORD, CUSTOPS_LOG_FORMAT,
RUST_LOG, CUSTOPS_AUTH_MODE (dev and demo default it to disabled), CUSTOPS_AUTH_JWT_SECRET;
the README lists every variable.";

/// Customer operations: the four custops services in one process, and the operator commands.
#[derive(Debug, Parser)]
#[command(name = "custops", after_help = CONFIGURATION, subcommand_required = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What the user asked `custops` to do.
#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run profiles, segmentation, loyalty and feedback in this process
    ///
    /// Ports come from CUSTOPS_<SVC>_PORT (default 50051-50054), and each service is pointed at
    /// the others on the ports they bind. Into an empty database it loads the demo's 2,000
    /// customers unless --no-sample-data.
    #[command(verbatim_doc_comment)]
    Dev {
        /// Leave an empty database empty (no demo customers)
        #[arg(long = "no-sample-data", action = ArgAction::SetFalse)]
        sample_data: bool,
    },
    /// Apply pending migrations and exit
    ///
    /// Migrates the named services, all four when none is named. With --create-roles it also
    /// creates or updates each service's Postgres role custops_<service>, limited to its own
    /// schema (LOGIN with the password in CUSTOPS_<SVC>_DB_PASSWORD when set, else NOLOGIN).
    #[command(verbatim_doc_comment)]
    Migrate {
        /// Also create or update each service's own Postgres role after its migrations
        #[arg(long)]
        create_roles: bool,
        /// The services to migrate, in order (profiles, segmentation, loyalty, feedback)
        #[arg(value_name = "SERVICE")]
        services: Vec<ServiceKind>,
    },
    /// Print a bearer token signed with CUSTOPS_AUTH_JWT_SECRET
    ///
    /// The token names NAME as the caller and grants the scopes, e.g.
    ///   custops token --service ops --scopes loyalty.read,loyalty.points.write
    #[command(verbatim_doc_comment)]
    Token {
        /// Who the token names as the caller
        #[arg(long = "service", value_name = "NAME")]
        subject: String,
        /// The scopes it grants, separated by commas (the option may be repeated)
        #[arg(long, value_name = "SCOPE[,SCOPE...]", required = true)]
        scopes: Vec<String>,
        /// How long it is valid, in seconds
        #[arg(long, value_name = "N", default_value_t = 3600,
              value_parser = clap::value_parser!(u64).range(1..))]
        ttl_secs: u64,
    },
    /// Load synthetic customers into the running profiles service
    ///
    /// N customers with two years of purchases and interactions, through the API of the
    /// profiles service at CUSTOPS_PROFILES_URL (default http://127.0.0.1:50051, or the port in
    /// CUSTOPS_PROFILES_PORT); running it again the same day adds nothing.
    #[command(verbatim_doc_comment)]
    Demo {
        /// How many customers
        #[arg(long, value_name = "N", default_value_t = 2000)]
        customers: usize,
    },
    /// Measure the suite against baselines run in the same invocation
    ///
    /// Starts the services as child processes in a database of its own (DATABASE_URL,
    /// REDIS_URL), loads them against bare tonic echo, pgbench and their own peak, prints a
    /// table and writes DIR/results.json.
    #[command(verbatim_doc_comment)]
    Bench {
        /// Every benchmark at tiny scale, for seconds (what `make test` runs)
        #[arg(long)]
        quick: bool,
        /// Only the benchmarks whose name starts with NAME
        #[arg(long, value_name = "NAME")]
        only: Option<String>,
        /// Where results.json and the children's logs go [default: target/bench]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// One service as `custops dev` would run it, until SIGTERM/SIGINT or until its standard
    /// input closes; prints `listening ADDR` on stdout once bound. The process `custops bench`
    /// measures.
    #[command(hide = true)]
    BenchServe {
        /// The service to run
        service: ServiceKind,
        /// The port (0: any free one)
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// The bare tonic baseline of the lookup benchmarks, stopped like `bench-serve`.
    #[command(hide = true)]
    BenchEcho {
        /// The port (0: any free one)
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Segment ids in each ListCustomerSegments answer
        #[arg(long, value_name = "K", default_value_t = 2)]
        list_ids: usize,
    },
}

/// Parses a whole command line, program name first. A request for help is an error of kind
/// [`ErrorKind::DisplayHelp`] too: `error.print()` and `error.exit_code()` do the right thing
/// for both (help on stdout with 0, a usage error on stderr with 2).
pub fn parse<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = Cli::try_parse_from(args)?.command;
    match command {
        Command::Migrate {
            mut services,
            create_roles,
        } => {
            if services.is_empty() {
                services = ServiceKind::ALL.to_vec();
            }
            services.dedup();
            Ok(Command::Migrate {
                services,
                create_roles,
            })
        }
        Command::Token {
            subject,
            scopes,
            ttl_secs,
        } => Ok(Command::Token {
            subject,
            scopes: known_scopes(&scopes)?,
            ttl_secs,
        }),
        other => Ok(other),
    }
}

/// The scopes given, split at commas and spaces, each one some method requires: a token
/// carrying any other would open nothing (a typo), so all unknown ones are named at once,
/// with the valid ones.
fn known_scopes(given: &[String]) -> Result<Vec<String>, clap::Error> {
    let scopes: Vec<String> = given
        .iter()
        .flat_map(|value| value.split([',', ' ']))
        .filter(|scope| !scope.is_empty())
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        return Err(token_error("--scopes names no scope".to_owned()));
    }
    let valid = custops_common::auth::known_scopes();
    let unknown: Vec<&str> = scopes
        .iter()
        .filter(|scope| !valid.contains(scope))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(token_error(format!(
            "unknown scope(s) {}; valid scopes: {}",
            unknown.join(", "),
            valid.join(", ")
        )));
    }
    Ok(scopes)
}

/// An invalid value of `custops token`, reported with that command's usage.
fn token_error(message: String) -> clap::Error {
    let mut cli = Cli::command();
    // Building gives the subcommand its full name (`custops token`) for the usage line.
    cli.build();
    match cli.find_subcommand_mut("token") {
        Some(token) => token.error(ErrorKind::InvalidValue, message),
        None => cli.error(ErrorKind::InvalidValue, message),
    }
}

#[cfg(test)]
mod tests;
