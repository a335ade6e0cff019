//! The command line as users type it: every command and flag `custops` has, and the mistakes
//! it refuses (with clap's error kind and a message naming what is wrong).

use clap::error::ErrorKind;

use super::*;

fn parsed(args: &[&str]) -> Result<Command, clap::Error> {
    parse(std::iter::once("custops").chain(args.iter().copied()))
}

fn check(args: &[&str], expected: Command) {
    match parsed(args) {
        Ok(command) => assert_eq!(command, expected, "{args:?}"),
        Err(error) => panic!("{args:?} did not parse: {error}"),
    }
}

/// `args` is refused with `kind`, and the message says each of `mentions`.
fn refused(args: &[&str], kind: ErrorKind, mentions: &[&str]) {
    match parsed(args) {
        Ok(command) => panic!("{args:?} parsed as {command:?}"),
        Err(error) => {
            assert_eq!(error.kind(), kind, "{args:?}: {error}");
            let message = error.to_string();
            for mention in mentions {
                assert!(message.contains(mention), "{args:?}: {message}");
            }
        }
    }
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
        Command::Token {
            subject: "ops".to_owned(),
            scopes: vec!["loyalty.read".to_owned(), "loyalty.write".to_owned()],
            ttl_secs: 3600,
        },
    );
    // Spaces separate too, the option may be repeated, and the validity is a positive number.
    check(
        &[
            "token",
            "--scopes",
            "loyalty.read profiles.read",
            "--service",
            "ops",
            "--scopes",
            "feedback.read",
            "--ttl-secs",
            "60",
        ],
        Command::Token {
            subject: "ops".to_owned(),
            scopes: vec![
                "loyalty.read".to_owned(),
                "profiles.read".to_owned(),
                "feedback.read".to_owned(),
            ],
            ttl_secs: 60,
        },
    );
    refused(
        &["token", "--scopes", "loyalty.read"],
        ErrorKind::MissingRequiredArgument,
        &["--service <NAME>"],
    );
    refused(
        &["token", "--service", "ops"],
        ErrorKind::MissingRequiredArgument,
        &["--scopes"],
    );
    refused(
        &["token", "--service", "ops", "--scopes"],
        ErrorKind::InvalidValue,
        &["--scopes"],
    );
    refused(
        &["token", "--service", "ops", "--scopes", ","],
        ErrorKind::InvalidValue,
        &["--scopes names no scope", "custops token"],
    );
    refused(
        &[
            "token",
            "--service",
            "ops",
            "--scopes",
            "loyalty.read",
            "--ttl-secs",
            "0",
        ],
        ErrorKind::ValueValidation,
        &["--ttl-secs"],
    );
    // Every unknown scope is named at once, with the valid ones.
    refused(
        &[
            "token",
            "--service",
            "ops",
            "--scopes",
            "loyalty.read,loyalty.points.writ,admin",
        ],
        ErrorKind::InvalidValue,
        &[
            "unknown scope(s) loyalty.points.writ, admin;",
            "valid scopes: ",
            "loyalty.points.write",
        ],
    );
    // The feed's `{service}` placeholder is expanded, and every declared scope is known.
    let valid = custops_common::auth::known_scopes();
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
    check(&["dev"], Command::Dev { sample_data: true });
    check(
        &["dev", "--no-sample-data"],
        Command::Dev { sample_data: false },
    );
    check(&["demo"], Command::Demo { customers: 2000 });
    check(
        &["demo", "--customers", "50"],
        Command::Demo { customers: 50 },
    );
    check(
        &["migrate"],
        Command::Migrate {
            services: ServiceKind::ALL.to_vec(),
            create_roles: false,
        },
    );
    check(
        &["migrate", "loyalty", "profiles"],
        Command::Migrate {
            services: vec![ServiceKind::Loyalty, ServiceKind::Profiles],
            create_roles: false,
        },
    );
    check(
        &["migrate", "loyalty", "loyalty"],
        Command::Migrate {
            services: vec![ServiceKind::Loyalty],
            create_roles: false,
        },
    );
    check(
        &["migrate", "--create-roles"],
        Command::Migrate {
            services: ServiceKind::ALL.to_vec(),
            create_roles: true,
        },
    );
    check(
        &["migrate", "loyalty", "--create-roles"],
        Command::Migrate {
            services: vec![ServiceKind::Loyalty],
            create_roles: true,
        },
    );
}

#[test]
fn help_is_asked_for_in_every_usual_way() {
    for args in [&["help"][..], &["--help"], &["-h"], &["help", "token"]] {
        refused(args, ErrorKind::DisplayHelp, &["Usage: custops"]);
    }
    // The full help names every visible command and the configuration, not the hidden ones.
    refused(
        &["--help"],
        ErrorKind::DisplayHelp,
        &[
            "dev",
            "migrate",
            "token",
            "demo",
            "bench",
            "DATABASE_URL",
            "README",
        ],
    );
    if let Err(error) = parsed(&["--help"]) {
        assert!(!error.to_string().contains("bench-serve"), "{error}");
        assert_eq!(error.exit_code(), 0);
    }
    refused(
        &["dev", "--help"],
        ErrorKind::DisplayHelp,
        &["--no-sample-data", "CUSTOPS_<SVC>_PORT"],
    );
}

#[test]
fn parses_the_bench_commands() {
    check(
        &["bench"],
        Command::Bench {
            quick: false,
            only: None,
            out: None,
        },
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
        Command::Bench {
            quick: true,
            only: Some("lookup.check".into()),
            out: Some("/tmp/b".into()),
        },
    );
    refused(&["bench", "--only"], ErrorKind::InvalidValue, &["--only"]);
    refused(
        &["bench", "--only", "--quick"],
        ErrorKind::InvalidValue,
        &["--only"],
    );
    check(
        &["bench-serve", "segmentation", "--port", "7000"],
        Command::BenchServe {
            service: ServiceKind::Segmentation,
            port: 7000,
        },
    );
    check(
        &["bench-serve", "loyalty"],
        Command::BenchServe {
            service: ServiceKind::Loyalty,
            port: 0,
        },
    );
    refused(
        &["bench-serve"],
        ErrorKind::MissingRequiredArgument,
        &["<SERVICE>"],
    );
    check(
        &["bench-echo", "--list-ids", "3"],
        Command::BenchEcho {
            port: 0,
            list_ids: 3,
        },
    );
    refused(
        &["bench-echo", "--port", "x"],
        ErrorKind::ValueValidation,
        &["--port"],
    );
}

#[test]
fn rejects_what_it_does_not_know() {
    let usage_error = |args: &[&str]| parsed(args).err().map(|error| error.exit_code());
    refused(
        &[],
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand,
        &["Usage: custops"],
    );
    assert_eq!(usage_error(&[]), Some(2));
    refused(&["serve"], ErrorKind::InvalidSubcommand, &["serve"]);
    assert_eq!(usage_error(&["serve"]), Some(2));
    refused(&["dev", "now"], ErrorKind::UnknownArgument, &["now"]);
    refused(
        &["migrate", "billing"],
        ErrorKind::ValueValidation,
        &["unknown service `billing`"],
    );
    refused(
        &["migrate", "--create-role"],
        ErrorKind::UnknownArgument,
        &["--create-role"],
    );
    refused(
        &["demo", "--customers", "many"],
        ErrorKind::ValueValidation,
        &["--customers"],
    );
}
