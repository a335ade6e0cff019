//! Typed settings read from the environment once at start-up and validated there, so a bad
//! deployment fails immediately with a message naming the variable instead of failing later.
//!
//! Variables (all optional unless marked):
//! - `DATABASE_URL` (required): Postgres URL; `CUSTOPS_<SVC>_DATABASE_URL` overrides it for one
//!   service, so any service can be pointed at its own database by configuration alone.
//! - `CUSTOPS_LISTEN_HOST` (default `0.0.0.0`) and `CUSTOPS_<SVC>_PORT` (default 50051–50054).
//! - `CUSTOPS_DB_MAX_CONNECTIONS` (10), `CUSTOPS_DB_CONNECT_TIMEOUT_SECS` (10),
//!   `CUSTOPS_DB_STATEMENT_TIMEOUT_MS` (5000).
//! - `CUSTOPS_MIGRATE_ON_START` (`true`): production runs migrations in a Job instead.
//! - `CUSTOPS_SHUTDOWN_GRACE_SECS` (20): how long in-flight calls may finish after SIGTERM.
//! - `CUSTOPS_LOG_FORMAT` (`text` or `json`) and `RUST_LOG` (filter, default `info`).
//!
//! Tests build these structs directly, or read them from an [`Environment`] made of pairs;
//! nothing here mutates the process environment.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::service::ServiceKind;

/// A configuration variable that is missing or malformed. Its `Display` is one line that names
/// the variable and never echoes a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set (or is empty).
    #[error("{var} is not set: {hint}")]
    Missing {
        /// The variable's name.
        var: String,
        /// What it should contain.
        hint: &'static str,
    },
    /// A variable is set but cannot be used.
    #[error("{var} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        var: String,
        /// Why, without the value when the value may be secret.
        reason: String,
    },
}

impl ConfigError {
    /// The name of the variable at fault.
    pub fn var(&self) -> &str {
        match self {
            ConfigError::Missing { var, .. } | ConfigError::Invalid { var, .. } => var,
        }
    }
}

/// Where settings are read from: the process environment in binaries, a map in tests.
pub struct Environment {
    vars: HashMap<String, String>,
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets (database passwords); list only the names.
        f.debug_struct("Environment")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Environment {
    /// A snapshot of the process environment.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    /// An environment holding exactly these variables.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The variable's value; an empty value counts as unset.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.vars
            .get(var)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// Parses the variable with `FromStr`, or returns `default` when it is unset.
    pub fn parse_or<T>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::Invalid {
                    var: var.to_owned(),
                    reason: format!("`{raw}`: {e}"),
                }),
        }
    }

    /// Parses a boolean written `true`/`false`/`1`/`0`, or returns `default` when unset.
    pub fn flag_or(&self, var: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" => Ok(false),
            Some(v) => Err(ConfigError::Invalid {
                var: var.to_owned(),
                reason: format!("`{v}` is not a boolean (use true or false)"),
            }),
        }
    }
}

/// Everything one service needs to start.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Which service this is.
    pub service: ServiceKind,
    /// Address the gRPC server binds; port 0 picks a free port (tests).
    pub listen_addr: SocketAddr,
    /// Where its data lives.
    pub database: DatabaseSettings,
    /// Run pending migrations before serving.
    pub migrate_on_start: bool,
    /// How long in-flight calls may finish after a shutdown signal.
    pub shutdown_grace: Duration,
}

impl ServiceSettings {
    /// Reads and validates the service's settings.
    pub fn from_env(service: ServiceKind, env: &Environment) -> Result<Self, ConfigError> {
        let host: IpAddr = env.parse_or("CUSTOPS_LISTEN_HOST", IpAddr::from([0, 0, 0, 0]))?;
        let port_var = format!("{}PORT", service.env_prefix());
        let port: u16 = env.parse_or(&port_var, service.default_port())?;
        Ok(Self {
            service,
            listen_addr: SocketAddr::new(host, port),
            database: DatabaseSettings::from_env(service, env)?,
            migrate_on_start: env.flag_or("CUSTOPS_MIGRATE_ON_START", true)?,
            shutdown_grace: Duration::from_secs(env.parse_or("CUSTOPS_SHUTDOWN_GRACE_SECS", 20)?),
        })
    }

    /// Settings for tests and tools: the given database, a free port on loopback, migrations
    /// on, short timeouts.
    pub fn for_local(service: ServiceKind, database_url: &str) -> Self {
        Self {
            service,
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database: DatabaseSettings::new(service, database_url),
            migrate_on_start: true,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// How a service reaches its Postgres schema.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// Connection URL; secret because it usually holds a password.
    pub url: SecretString,
    /// The schema the service owns; becomes the connections' `search_path`.
    pub schema: &'static str,
    /// Upper bound of pooled connections.
    pub max_connections: u32,
    /// How long start-up keeps trying to reach the database before giving up.
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout`, so a runaway query cannot hold a connection forever.
    pub statement_timeout: Duration,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &"[redacted]")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

impl DatabaseSettings {
    /// Defaults for `service` on `url`; the URL is not validated here.
    pub fn new(service: ServiceKind, url: &str) -> Self {
        Self {
            url: SecretString::from(url.to_owned()),
            schema: service.schema(),
            max_connections: 10,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_millis(5000),
        }
    }

    /// Reads `CUSTOPS_<SVC>_DATABASE_URL`, else `DATABASE_URL`, and the pool limits.
    pub fn from_env(service: ServiceKind, env: &Environment) -> Result<Self, ConfigError> {
        let own_var = format!("{}DATABASE_URL", service.env_prefix());
        let (var, url) = match (env.get(&own_var), env.get("DATABASE_URL")) {
            (Some(url), _) => (own_var, url),
            (None, Some(url)) => ("DATABASE_URL".to_owned(), url),
            (None, None) => {
                return Err(ConfigError::Missing {
                    var: "DATABASE_URL".to_owned(),
                    hint: "set it to the Postgres URL, e.g. postgres://user@host:5432/custops",
                });
            }
        };
        validate_postgres_url(&var, url)?;
        let mut settings = Self::new(service, url);
        settings.max_connections = env.parse_or("CUSTOPS_DB_MAX_CONNECTIONS", 10)?;
        if settings.max_connections == 0 {
            return Err(ConfigError::Invalid {
                var: "CUSTOPS_DB_MAX_CONNECTIONS".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        settings.connect_timeout =
            Duration::from_secs(env.parse_or("CUSTOPS_DB_CONNECT_TIMEOUT_SECS", 10)?);
        settings.statement_timeout =
            Duration::from_millis(env.parse_or("CUSTOPS_DB_STATEMENT_TIMEOUT_MS", 5000)?);
        Ok(settings)
    }

    /// The URL, for the one place that connects.
    pub(crate) fn expose_url(&self) -> &str {
        self.url.expose_secret()
    }
}

/// Checks the URL's shape without echoing it: it usually carries a password.
fn validate_postgres_url(var: &str, url: &str) -> Result<(), ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        var: var.to_owned(),
        reason: reason.to_owned(),
    };
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid(
            "expected a URL starting with postgres:// or postgresql://",
        ));
    }
    sqlx::postgres::PgConnectOptions::from_str(url)
        .map(|_| ())
        .map_err(|_| invalid("not a well-formed Postgres connection URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<ServiceSettings, ConfigError> {
        ServiceSettings::from_env(
            ServiceKind::Loyalty,
            &Environment::from_pairs(pairs.iter().copied()),
        )
    }

    #[test]
    fn defaults_apply_when_only_the_database_is_set() {
        let s = settings(&[("DATABASE_URL", "postgres://u:secret@db:5432/custops")]);
        let s = s.map_err(|e| e.to_string());
        let s = s
            .as_ref()
            .map(|s| (s.listen_addr.port(), s.database.schema));
        assert_eq!(s, Ok((50053, "loyalty")));
    }

    #[test]
    fn a_service_specific_url_wins() {
        let s = settings(&[
            ("DATABASE_URL", "postgres://shared/custops"),
            ("CUSTOPS_LOYALTY_DATABASE_URL", "postgres://own/loyalty"),
        ]);
        let url = s.map(|s| s.database.expose_url().to_owned()).ok();
        assert_eq!(url.as_deref(), Some("postgres://own/loyalty"));
    }

    #[test]
    fn errors_name_the_variable_and_hide_the_value() {
        let check = |pairs: &[(&str, &str)], var: &str| {
            let err = settings(pairs).err();
            let err = err.as_ref();
            assert_eq!(err.map(ConfigError::var), Some(var), "{pairs:?}");
            let line = err.map(ToString::to_string).unwrap_or_default();
            assert!(line.contains(var) && !line.contains('\n'), "{line}");
            assert!(!line.contains("hunter2"), "secret leaked: {line}");
        };
        check(&[], "DATABASE_URL");
        check(&[("DATABASE_URL", "  ")], "DATABASE_URL");
        check(
            &[("DATABASE_URL", "mysql://u:hunter2@db/x")],
            "DATABASE_URL",
        );
        check(
            &[("DATABASE_URL", "postgres://u:hunter2@db:notaport/x")],
            "DATABASE_URL",
        );
        check(
            &[("CUSTOPS_LOYALTY_DATABASE_URL", "hunter2")],
            "CUSTOPS_LOYALTY_DATABASE_URL",
        );
        let db = ("DATABASE_URL", "postgres://db/x");
        check(
            &[db, ("CUSTOPS_LOYALTY_PORT", "70000")],
            "CUSTOPS_LOYALTY_PORT",
        );
        check(
            &[db, ("CUSTOPS_LISTEN_HOST", "nowhere")],
            "CUSTOPS_LISTEN_HOST",
        );
        check(
            &[db, ("CUSTOPS_MIGRATE_ON_START", "yes")],
            "CUSTOPS_MIGRATE_ON_START",
        );
        check(
            &[db, ("CUSTOPS_DB_MAX_CONNECTIONS", "0")],
            "CUSTOPS_DB_MAX_CONNECTIONS",
        );
    }
}
