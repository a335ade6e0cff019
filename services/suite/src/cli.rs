//! Command-line parsing for `custops`, by hand: a few subcommands with positional arguments do
//! not justify a parser crate in every build.

use std::path::PathBuf;
use std::str::FromStr;

use custops_common::service::{ServiceKind, UnknownService};

/// What the user asked `custops` to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `custops dev [--no-sample-data]`: run all four services in this process; unless told
    /// not to, load the demo's sample data into an empty database.
    Dev {
        /// Load the sample data when profiles holds no customer.
        sample_data: bool,
    },
    /// `custops migrate [--create-roles] [service…]`: migrate the named services (all when
    /// none is named), and with `--create-roles` create or update each one's Postgres role.
    Migrate {
        /// The services to migrate, in order.
        services: Vec<ServiceKind>,
        /// Also set up each service's own role (`custops_<schema>`) after its migrations.
        create_roles: bool,
    },
    /// `custops token --service NAME --scopes a,b [--ttl-secs N]`: mint a bearer token.
    Token {
        /// Who the token names as the caller.
        subject: String,
        /// The scopes it grants.
        scopes: Vec<String>,
        /// How long it is valid, in seconds.
        ttl_secs: u64,
    },
    /// `custops demo [--customers N]`: load sample customers and activities into a running
    /// profiles service through its API.
    Demo {
        /// How many customers.
        customers: usize,
    },
    /// `custops bench [--quick] [--only NAME] [--out DIR]`: start what the benchmarks measure
    /// as child processes, load them from this process and report against same-run baselines.
    Bench {
        /// Every benchmark at tiny scale, for seconds (what `make test` runs).
        quick: bool,
        /// Only the benchmarks whose name starts with this.
        only: Option<String>,
        /// Where `results.json` and the children's logs go (default `target/bench`).
        out: Option<PathBuf>,
    },
    /// `custops bench-serve SERVICE [--port P]` (hidden): one service, as `custops dev` would
    /// run it, until SIGTERM/SIGINT or until its standard input closes; prints
    /// `listening ADDR` on stdout once bound. The process `custops bench` measures.
    BenchServe {
        /// The service to run.
        service: ServiceKind,
        /// The port (0: any free one, the default).
        port: u16,
    },
    /// `custops bench-echo [--port P] [--list-ids K]` (hidden): the bare tonic baseline of the
    /// lookup benchmarks, stopped like `bench-serve`.
    BenchEcho {
        /// The port (0: any free one, the default).
        port: u16,
        /// Segment ids in each ListCustomerSegments answer.
        list_ids: usize,
    },
    /// `custops help` or `--help`.
    Help,
}

/// Usage text printed by `custops help` and after a usage error.
pub const USAGE: &str = "\
usage: custops <command>

commands:
  dev [--no-sample-data]
                        run profiles, segmentation, loyalty and feedback in this process
                        (ports from CUSTOPS_<SVC>_PORT, default 50051-50054); into an empty
                        database it loads the demo's 2,000 customers unless --no-sample-data
  migrate [--create-roles] [service...]
                        apply pending migrations (all services when none is named) and exit;
                        --create-roles also creates or updates each service's Postgres role
                        custops_<service>, limited to its own schema (LOGIN with the password
                        in CUSTOPS_<SVC>_DB_PASSWORD when set, else NOLOGIN)
  token --service NAME --scopes SCOPE[,SCOPE...] [--ttl-secs N]
                        print a bearer token (signed with CUSTOPS_AUTH_JWT_SECRET) naming NAME
                        as the caller with these scopes, valid N seconds (default 3600), e.g.
                        custops token --service ops --scopes loyalty.read,loyalty.points.write
  demo [--customers N]  load N (default 2000) synthetic customers with two years of purchases
                        and interactions into the running profiles service (CUSTOPS_PROFILES_URL,
                        default http://127.0.0.1:50051) through its API; running it again the
                        same day adds nothing
  bench [--quick] [--only NAME] [--out DIR]
                        measure the suite against baselines run in the same invocation
                        (bare tonic echo, pgbench, its own peak): starts the services as
                        child processes in a database of its own (DATABASE_URL, REDIS_URL),
                        prints a table and writes DIR/results.json (default target/bench);
                        --quick runs every benchmark at tiny scale, --only those whose name
                        starts with NAME
  help                  show this text

configuration comes from the environment: DATABASE_URL (required), CUSTOPS_LISTEN_HOST,
CUSTOPS_<SVC>_PORT, CUSTOPS_<SVC>_DATABASE_URL, CUSTOPS_<SVC>_DB_PASSWORD, CUSTOPS_LOG_FORMAT,
RUST_LOG, CUSTOPS_AUTH_MODE (dev defaults it to disabled), CUSTOPS_AUTH_JWT_SECRET; the README
lists every variable";

/// A command line that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    /// No subcommand at all.
    #[error("no command given")]
    NoCommand,
    /// A subcommand we do not have.
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    /// An argument the subcommand does not take.
    #[error("`{command}` takes no argument `{argument}`")]
    UnexpectedArgument {
        /// The subcommand.
        command: &'static str,
        /// The stray argument.
        argument: String,
    },
    /// A required option is absent or has no value.
    #[error("`{command}` needs {option}")]
    MissingOption {
        /// The subcommand.
        command: &'static str,
        /// The option and its value.
        option: &'static str,
    },
    /// A service name that is not one of the four.
    #[error("{0}")]
    Service(String),
    /// Scopes no method requires: a token carrying them would open nothing.
    #[error("unknown scope(s) {}; valid scopes: {}", .unknown.join(", "), .valid.join(", "))]
    UnknownScopes {
        /// The names given that no method requires, in the order given.
        unknown: Vec<String>,
        /// Every scope some method requires.
        valid: Vec<String>,
    },
}

impl From<UnknownService> for UsageError {
    fn from(error: UnknownService) -> Self {
        UsageError::Service(error.to_string())
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let Some((command, rest)) = args.split_first() else {
        return Err(UsageError::NoCommand);
    };
    match command.as_str() {
        "dev" => match rest {
            [] => Ok(Command::Dev { sample_data: true }),
            [flag] if flag == "--no-sample-data" => Ok(Command::Dev { sample_data: false }),
            [argument, ..] => Err(UsageError::UnexpectedArgument {
                command: "dev",
                argument: argument.clone(),
            }),
        },
        "help" | "--help" | "-h" => Ok(Command::Help),
        "migrate" => {
            let mut services = Vec::new();
            let mut create_roles = false;
            for argument in rest {
                match argument.as_str() {
                    "--create-roles" => create_roles = true,
                    flag if flag.starts_with('-') => {
                        return Err(UsageError::UnexpectedArgument {
                            command: "migrate",
                            argument: flag.to_owned(),
                        });
                    }
                    name => services.push(ServiceKind::from_str(name)?),
                }
            }
            if services.is_empty() {
                services = ServiceKind::ALL.to_vec();
            }
            services.dedup();
            Ok(Command::Migrate {
                services,
                create_roles,
            })
        }
        "token" => parse_token(rest),
        "demo" => parse_demo(rest),
        "bench" => parse_bench(rest),
        "bench-serve" => parse_bench_serve(rest),
        "bench-echo" => parse_bench_echo(rest),
        other => Err(UsageError::UnknownCommand(other.to_owned())),
    }
}

fn parse_demo(rest: &[String]) -> Result<Command, UsageError> {
    match rest {
        [] => Ok(Command::Demo { customers: 2000 }),
        [flag, value] if flag == "--customers" => value
            .parse()
            .map(|customers| Command::Demo { customers })
            .map_err(|_| UsageError::MissingOption {
                command: "demo",
                option: "--customers <number>",
            }),
        [argument, ..] => Err(UsageError::UnexpectedArgument {
            command: "demo",
            argument: argument.clone(),
        }),
    }
}

fn parse_bench(rest: &[String]) -> Result<Command, UsageError> {
    let (mut quick, mut only, mut out) = (false, None, None);
    let mut args = rest.iter();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--quick" => quick = true,
            "--only" => only = Some(option_value(&mut args, "bench", "--only NAME")?),
            "--out" => out = Some(option_value(&mut args, "bench", "--out DIR")?.into()),
            other => {
                return Err(UsageError::UnexpectedArgument {
                    command: "bench",
                    argument: other.to_owned(),
                });
            }
        }
    }
    Ok(Command::Bench { quick, only, out })
}

fn parse_bench_serve(rest: &[String]) -> Result<Command, UsageError> {
    let Some((service, rest)) = rest.split_first() else {
        return Err(UsageError::MissingOption {
            command: "bench-serve",
            option: "a service name",
        });
    };
    let service = ServiceKind::from_str(service)?;
    let mut port = 0;
    let mut args = rest.iter();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--port" => port = number(&mut args, "bench-serve", "--port PORT")?,
            other => {
                return Err(UsageError::UnexpectedArgument {
                    command: "bench-serve",
                    argument: other.to_owned(),
                });
            }
        }
    }
    Ok(Command::BenchServe { service, port })
}

fn parse_bench_echo(rest: &[String]) -> Result<Command, UsageError> {
    let (mut port, mut list_ids) = (0, 2);
    let mut args = rest.iter();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--port" => port = number(&mut args, "bench-echo", "--port PORT")?,
            "--list-ids" => list_ids = number(&mut args, "bench-echo", "--list-ids K")?,
            other => {
                return Err(UsageError::UnexpectedArgument {
                    command: "bench-echo",
                    argument: other.to_owned(),
                });
            }
        }
    }
    Ok(Command::BenchEcho { port, list_ids })
}

/// The value after an option, which may not look like another option.
fn option_value<'a>(
    args: &mut impl Iterator<Item = &'a String>,
    command: &'static str,
    option: &'static str,
) -> Result<String, UsageError> {
    args.next()
        .filter(|v| !v.starts_with("--"))
        .cloned()
        .ok_or(UsageError::MissingOption { command, option })
}

/// The number after an option.
fn number<'a, T: FromStr>(
    args: &mut impl Iterator<Item = &'a String>,
    command: &'static str,
    option: &'static str,
) -> Result<T, UsageError> {
    option_value(args, command, option)?
        .parse()
        .map_err(|_| UsageError::MissingOption { command, option })
}

fn parse_token(rest: &[String]) -> Result<Command, UsageError> {
    let mut subject = None;
    let mut scopes = Vec::new();
    let mut ttl_secs = 3600;
    let mut args = rest.iter();
    while let Some(flag) = args.next() {
        let mut value = |option: &'static str| {
            args.next()
                .filter(|v| !v.starts_with("--"))
                .cloned()
                .ok_or(UsageError::MissingOption {
                    command: "token",
                    option,
                })
        };
        match flag.as_str() {
            "--service" => subject = Some(value("--service NAME")?),
            "--scopes" => scopes.extend(
                value("--scopes SCOPE[,SCOPE...]")?
                    .split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            "--ttl-secs" => {
                ttl_secs = value("--ttl-secs N")?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(UsageError::MissingOption {
                        command: "token",
                        option: "--ttl-secs with a positive number of seconds",
                    })?;
            }
            other => {
                return Err(UsageError::UnexpectedArgument {
                    command: "token",
                    argument: other.to_owned(),
                });
            }
        }
    }
    let subject = subject.ok_or(UsageError::MissingOption {
        command: "token",
        option: "--service NAME",
    })?;
    if scopes.is_empty() {
        return Err(UsageError::MissingOption {
            command: "token",
            option: "--scopes SCOPE[,SCOPE...]",
        });
    }
    let valid = custops_common::auth::known_scopes();
    let unknown: Vec<String> = scopes
        .iter()
        .filter(|scope| !valid.contains(scope))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(UsageError::UnknownScopes { unknown, valid });
    }
    Ok(Command::Token {
        subject,
        scopes,
        ttl_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &[&str], expected: Result<Command, UsageError>) {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        assert_eq!(parse(&args), expected, "{args:?}");
    }

    #[test]
    fn parses_token_requests() {
        check(
            &[
                "token",
                "--service",
                "ops",
                "--scopes",
                "loyalty.read,loyalty.write",
            ],
            Ok(Command::Token {
                subject: "ops".to_owned(),
                scopes: vec!["loyalty.read".to_owned(), "loyalty.write".to_owned()],
                ttl_secs: 3600,
            }),
        );
        check(
            &["token", "--scopes", "loyalty.read"],
            Err(UsageError::MissingOption {
                command: "token",
                option: "--service NAME",
            }),
        );
        check(
            &["token", "--service", "ops", "--scopes"],
            Err(UsageError::MissingOption {
                command: "token",
                option: "--scopes SCOPE[,SCOPE...]",
            }),
        );
        let valid = custops_common::auth::known_scopes();
        check(
            &[
                "token",
                "--service",
                "ops",
                "--scopes",
                "loyalty.read,loyalty.points.writ,admin",
            ],
            Err(UsageError::UnknownScopes {
                unknown: vec!["loyalty.points.writ".to_owned(), "admin".to_owned()],
                valid: valid.clone(),
            }),
        );
        // The feed's `{service}` placeholder is expanded, and every declared scope is known.
        for scope in [
            "profiles.events.read",
            "feedback.events.read",
            "loyalty.points.write",
            "profiles.privacy",
            "segmentation.facts.read",
        ] {
            assert!(valid.iter().any(|v| v == scope), "{scope} in {valid:?}");
        }
        assert!(!valid.iter().any(|v| v.contains('{')), "{valid:?}");
    }

    #[test]
    fn parses_every_command() {
        check(&["dev"], Ok(Command::Dev { sample_data: true }));
        check(
            &["dev", "--no-sample-data"],
            Ok(Command::Dev { sample_data: false }),
        );
        check(&["demo"], Ok(Command::Demo { customers: 2000 }));
        check(
            &["demo", "--customers", "50"],
            Ok(Command::Demo { customers: 50 }),
        );
        check(&["help"], Ok(Command::Help));
        check(&["--help"], Ok(Command::Help));
        check(
            &["migrate"],
            Ok(Command::Migrate {
                services: ServiceKind::ALL.to_vec(),
                create_roles: false,
            }),
        );
        check(
            &["migrate", "loyalty", "profiles"],
            Ok(Command::Migrate {
                services: vec![ServiceKind::Loyalty, ServiceKind::Profiles],
                create_roles: false,
            }),
        );
        check(
            &["migrate", "--create-roles"],
            Ok(Command::Migrate {
                services: ServiceKind::ALL.to_vec(),
                create_roles: true,
            }),
        );
        check(
            &["migrate", "loyalty", "--create-roles"],
            Ok(Command::Migrate {
                services: vec![ServiceKind::Loyalty],
                create_roles: true,
            }),
        );
    }

    #[test]
    fn parses_the_bench_commands() {
        check(
            &["bench"],
            Ok(Command::Bench {
                quick: false,
                only: None,
                out: None,
            }),
        );
        check(
            &[
                "bench",
                "--quick",
                "--only",
                "lookup.check",
                "--out",
                "/tmp/b",
            ],
            Ok(Command::Bench {
                quick: true,
                only: Some("lookup.check".into()),
                out: Some("/tmp/b".into()),
            }),
        );
        check(
            &["bench", "--only"],
            Err(UsageError::MissingOption {
                command: "bench",
                option: "--only NAME",
            }),
        );
        check(
            &["bench-serve", "segmentation", "--port", "7000"],
            Ok(Command::BenchServe {
                service: ServiceKind::Segmentation,
                port: 7000,
            }),
        );
        check(
            &["bench-serve", "loyalty"],
            Ok(Command::BenchServe {
                service: ServiceKind::Loyalty,
                port: 0,
            }),
        );
        check(
            &["bench-echo", "--list-ids", "3"],
            Ok(Command::BenchEcho {
                port: 0,
                list_ids: 3,
            }),
        );
        check(
            &["bench-echo", "--port", "x"],
            Err(UsageError::MissingOption {
                command: "bench-echo",
                option: "--port PORT",
            }),
        );
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        check(&[], Err(UsageError::NoCommand));
        check(&["serve"], Err(UsageError::UnknownCommand("serve".into())));
        check(
            &["dev", "now"],
            Err(UsageError::UnexpectedArgument {
                command: "dev",
                argument: "now".into(),
            }),
        );
        assert!(matches!(
            parse(&["migrate".into(), "billing".into()]),
            Err(UsageError::Service(_))
        ));
        check(
            &["migrate", "--create-role"],
            Err(UsageError::UnexpectedArgument {
                command: "migrate",
                argument: "--create-role".into(),
            }),
        );
    }
}
