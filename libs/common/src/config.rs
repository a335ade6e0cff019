//! Typed settings read from the environment once at start-up and validated there, so a bad
//! deployment fails immediately with a message naming the variable instead of failing later.
//!
//! Variables (all optional unless marked):
//! - `DATABASE_URL` (required): Postgres URL; `CUSTOPS_<SVC>_DATABASE_URL` overrides it for one
//!   service, so any service can be pointed at its own database by configuration alone.
//! - `CUSTOPS_LISTEN_HOST` (default `0.0.0.0`) and `CUSTOPS_<SVC>_PORT` (default 50051–50054).
//! - `CUSTOPS_DB_MAX_CONNECTIONS` (10), `CUSTOPS_DB_CONNECT_TIMEOUT_SECS` (10),
//!   `CUSTOPS_DB_STATEMENT_TIMEOUT_MS` (5000), `CUSTOPS_DB_LOCK_TIMEOUT_MS` (2000, below the
//!   statement timeout), `CUSTOPS_DB_ACQUIRE_TIMEOUT_MS` (2000).
//! - `CUSTOPS_MIGRATE_ON_START` (`true`): production runs migrations in a Job instead.
//! - `CUSTOPS_SHUTDOWN_GRACE_SECS` (20): how long in-flight calls may finish after SIGTERM.
//! - `CUSTOPS_LOG_FORMAT` (`text` or `json`) and `RUST_LOG` (filter, default `info`).
//! - `CUSTOPS_FEED_RETENTION_HOURS` (168): how long the outbox keeps events at least (and until
//!   every registered consumer has acknowledged them; `retention.rs`).
//!
//! Tests build these structs directly, or read them from an [`Environment`] made of pairs;
//! nothing here mutates the process environment.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::auth::AuthSettings;
use crate::cache::RedisSettings;
use crate::paging::PageTokens;
use crate::service::ServiceKind;
use crate::tls::{ClientTls, ServerTls, TlsSettings};

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
    // Every name looked up, so a test can hold the code to the VARIABLES list.
    reads: std::sync::Mutex<std::collections::BTreeSet<String>>,
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
            reads: Default::default(),
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
            reads: Default::default(),
        }
    }

    /// Every variable name looked up so far.
    pub fn names_read(&self) -> Vec<String> {
        self.reads
            .lock()
            .map(|reads| reads.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// This environment with `var` set to `value` unless it is already set.
    pub fn with_default(mut self, var: &str, value: &str) -> Self {
        if self.get(var).is_none() {
            self.vars.insert(var.to_owned(), value.to_owned());
        }
        self
    }

    /// The variable's value; an empty value counts as unset.
    pub fn get(&self, var: &str) -> Option<&str> {
        if let Ok(mut reads) = self.reads.lock() {
            reads.insert(var.to_owned());
        }
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

/// One environment variable a custops binary reads. `{SVC}` in a name stands for the service's
/// upper-case name (`PROFILES`, `SEGMENTATION`, `LOYALTY`, `FEEDBACK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    /// The name, possibly with `{SVC}`.
    pub name: &'static str,
    /// When the binary refuses to start without it.
    pub requirement: Requirement,
    /// What it holds.
    pub doc: &'static str,
}

/// Whether a [`Variable`] must be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Always required.
    Required,
    /// Required unless the named variable has the named value, e.g. the token secret unless
    /// `CUSTOPS_AUTH_MODE=disabled`.
    RequiredUnless(&'static str, &'static str),
    /// Optional, with a default.
    Optional,
}

impl Variable {
    const fn required(name: &'static str, doc: &'static str) -> Self {
        Self {
            name,
            requirement: Requirement::Required,
            doc,
        }
    }

    const fn required_unless(
        name: &'static str,
        unless: (&'static str, &'static str),
        doc: &'static str,
    ) -> Self {
        Self {
            name,
            requirement: Requirement::RequiredUnless(unless.0, unless.1),
            doc,
        }
    }

    const fn optional(name: &'static str, doc: &'static str) -> Self {
        Self {
            name,
            requirement: Requirement::Optional,
            doc,
        }
    }

    /// The name for one service (`{SVC}` replaced).
    pub fn name_for(&self, service: ServiceKind) -> String {
        self.name
            .replace("{SVC}", &service.name().to_ascii_uppercase())
    }
}

/// Every variable the service binaries and `custops` read: the single list that the README's
/// table, the Kubernetes manifests (`make k8s-check`) and a unit test are checked against.
#[rustfmt::skip]
pub const VARIABLES: &[Variable] = &[
    Variable::required("DATABASE_URL", "Postgres URL shared by the services"),
    Variable::optional("CUSTOPS_{SVC}_DATABASE_URL", "Postgres URL for one service; overrides DATABASE_URL"),
    Variable::optional("DATABASE_DIRECT_URL", "direct Postgres URL for LISTEN and migrations when DATABASE_URL is a transaction-pooling PgBouncer"),
    Variable::optional("CUSTOPS_{SVC}_DATABASE_DIRECT_URL", "direct Postgres URL for one service; overrides DATABASE_DIRECT_URL"),
    Variable::optional("CUSTOPS_LISTEN_HOST", "address the gRPC server binds (default 0.0.0.0)"),
    Variable::optional("CUSTOPS_{SVC}_PORT", "gRPC port (default 50051-50054)"),
    Variable::optional("CUSTOPS_DB_MAX_CONNECTIONS", "pool size (default 10)"),
    Variable::optional("CUSTOPS_DB_CONNECT_TIMEOUT_SECS", "how long start-up waits for Postgres (default 10)"),
    Variable::optional("CUSTOPS_DB_STATEMENT_TIMEOUT_MS", "server-side statement timeout (default 5000)"),
    Variable::optional("CUSTOPS_DB_LOCK_TIMEOUT_MS", "server-side lock timeout, below the statement timeout; a call waiting longer on a locked row is ABORTED (default 2000)"),
    Variable::optional("CUSTOPS_DB_ACQUIRE_TIMEOUT_MS", "longest wait for a pooled connection before UNAVAILABLE (default 2000)"),
    Variable::optional("CUSTOPS_MIGRATE_ON_START", "apply migrations before serving (default true)"),
    Variable::optional("CUSTOPS_SHUTDOWN_GRACE_SECS", "drain period after SIGTERM (default 20)"),
    Variable::optional("CUSTOPS_LOG_FORMAT", "text or json (default text)"),
    Variable::optional("RUST_LOG", "log filter (default info)"),
    Variable::optional("CUSTOPS_HEALTH_PORT", "extra plaintext port serving only grpc.health.v1, for probes when TLS is on"),
    Variable::optional("CUSTOPS_MAX_CONCURRENT_CALLS", "unary calls served at once before RESOURCE_EXHAUSTED (default 256)"),
    Variable::optional("CUSTOPS_MAX_CLIENT_STREAMS", "client streams (imports, uploads) open at once (default 32)"),
    Variable::optional("CUSTOPS_MAX_SERVER_STREAMS", "server streams (feeds, member streams) open at once (default 256)"),
    Variable::optional("CUSTOPS_CALLER_SHARE_PERCENT", "share of each call budget one caller may hold, 1-100 (default 50)"),
    Variable::optional("CUSTOPS_CLIENT_STREAM_IDLE_TIMEOUT_SECS", "a client stream that sends nothing this long is ended (default 30)"),
    Variable::optional("CUSTOPS_MAX_CALL_TIMEOUT_SECS", "deadline for calls without grpc-timeout, and cap on it (default 30)"),
    Variable::optional("CUSTOPS_HANDSHAKE_TIMEOUT_SECS", "a new connection that sends no HTTP/2 preface within this is closed (default 10)"),
    Variable::optional("CUSTOPS_KEEPALIVE_INTERVAL_SECS", "HTTP/2 keep-alive ping interval of idle connections (default 30)"),
    Variable::optional("CUSTOPS_KEEPALIVE_TIMEOUT_SECS", "an unanswered keep-alive ping closes the connection after this (default 20)"),
    Variable::optional("CUSTOPS_AUTH_MODE", "jwt or disabled (default jwt)"),
    Variable::required_unless("CUSTOPS_AUTH_JWT_SECRET", ("CUSTOPS_AUTH_MODE", "disabled"), "HS256 key for service tokens, at least 32 bytes"),
    Variable::optional("CUSTOPS_AUTH_AUDIENCE", "audience tokens must name (default custops)"),
    Variable::optional("CUSTOPS_AUTH_MAX_TOKEN_LIFETIME_SECS", "longest validity (exp - iat) a token may have, 60 to 2592000 (default 86400)"),
    Variable::optional("CUSTOPS_TLS_CERT_FILE", "PEM server certificate chain; enables TLS (with the key)"),
    Variable::optional("CUSTOPS_TLS_KEY_FILE", "PEM private key of that certificate"),
    Variable::optional("CUSTOPS_TLS_CLIENT_CA_FILE", "PEM CA; when set, clients must present a certificate it signed (mTLS)"),
    Variable::optional("CUSTOPS_TLS_CA_FILE", "PEM CA trusted for calls to other services"),
    Variable::optional("OTEL_EXPORTER_OTLP_ENDPOINT", "OTLP/gRPC collector; traces and metrics exported when set"),
    Variable::optional("OTEL_METRIC_EXPORT_INTERVAL", "milliseconds between metric exports (default 60000); gauges are sampled as often, at least every 15 s"),
    Variable::optional("HOSTNAME", "service.instance.id of exported telemetry (the pod name in Kubernetes; a random id when unset)"),
    Variable::optional("CUSTOPS_PROFILES_URL", "where the profiles service is reached, e.g. http://profiles-headless:50051"),
    Variable::optional("CUSTOPS_SEGMENTATION_URL", "where the segmentation service is reached"),
    Variable::optional("CUSTOPS_LOYALTY_URL", "where the loyalty service is reached"),
    Variable::optional("CUSTOPS_FEEDBACK_URL", "where the feedback service is reached"),
    Variable::optional("REDIS_URL", "Redis URL for the shared cache (redis://host:6379, or a cluster's seed nodes: redis+cluster://host:6379,host:6379)"),
    Variable::optional("CUSTOPS_REDIS_TIMEOUT_MS", "Redis command timeout (default 200)"),
    Variable::optional("CUSTOPS_FEED_RETENTION_HOURS", "outbox events are kept at least this long, and until every registered consumer has acknowledged them (default 168, 7 days; at least 1)"),
    Variable::optional("CUSTOPS_PAGE_TOKEN_SECRET", "key that signs page tokens (32+ bytes); set the same on every replica"),
    Variable::optional("CUSTOPS_{SVC}_DB_PASSWORD", "custops migrate --create-roles: login password of the service's Postgres role"),
];

/// Everything one service needs to start.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Which service this is.
    pub service: ServiceKind,
    /// How the gRPC server listens, authenticates and drains.
    pub server: ServerSettings,
    /// Where its data lives.
    pub database: DatabaseSettings,
    /// Run pending migrations before serving.
    pub migrate_on_start: bool,
    /// How it calls other services.
    pub clients: ClientSettings,
    /// The shared Redis, when configured.
    pub redis: Option<RedisSettings>,
    /// Signs and checks the page tokens of its list RPCs.
    pub page_tokens: PageTokens,
    /// How long its outbox keeps an event at least (`CUSTOPS_FEED_RETENTION_HOURS`); events
    /// a registered consumer has not acknowledged are kept longer (`retention.rs`).
    pub feed_retention: Duration,
}

impl ServiceSettings {
    /// Reads and validates the service's settings.
    pub fn from_env(service: ServiceKind, env: &Environment) -> Result<Self, ConfigError> {
        // The database first: it is the one setting every deployment must get right.
        let database = DatabaseSettings::from_env(service, env)?;
        let auth = AuthSettings::from_env(env)?;
        let tls = TlsSettings::from_env(env)?;
        Ok(Self {
            service,
            server: ServerSettings::from_env(service, env, auth.clone(), tls.server)?,
            database,
            migrate_on_start: env.flag_or("CUSTOPS_MIGRATE_ON_START", true)?,
            clients: ClientSettings::from_env(service, env, &auth, tls.client)?,
            redis: RedisSettings::from_env(env)?,
            page_tokens: PageTokens::from_env(env)?,
            feed_retention: feed_retention(env)?,
        })
    }

    /// Settings for tests and tools: the given database, a free port on loopback, migrations
    /// on, short timeouts, and authentication explicitly disabled.
    pub fn for_local(service: ServiceKind, database_url: &str) -> Self {
        Self {
            service,
            server: ServerSettings::local(service, AuthSettings::Disabled),
            database: DatabaseSettings::new(service, database_url),
            migrate_on_start: true,
            clients: ClientSettings::local(service),
            redis: None,
            page_tokens: PageTokens::random(),
            feed_retention: crate::retention::DEFAULT_RETENTION,
        }
    }
}

/// `CUSTOPS_FEED_RETENTION_HOURS`: whole hours, at least one (a shorter retention would let a
/// consumer restarting after a brief outage find its position pruned).
fn feed_retention(env: &Environment) -> Result<Duration, ConfigError> {
    const VAR: &str = "CUSTOPS_FEED_RETENTION_HOURS";
    let default_hours = crate::retention::DEFAULT_RETENTION.as_secs() / 3600;
    let hours: u64 = env.parse_or(VAR, default_hours)?;
    if hours == 0 || hours > 24 * 3650 {
        return Err(ConfigError::Invalid {
            var: VAR.to_owned(),
            reason: format!("`{hours}`: must be between 1 and 87600 hours"),
        });
    }
    Ok(Duration::from_secs(hours * 3600))
}

/// How one gRPC server listens, authenticates, limits and drains.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Which service it serves.
    pub service: ServiceKind,
    /// Address the gRPC server binds; port 0 picks a free port (tests).
    pub listen_addr: SocketAddr,
    /// How long in-flight calls may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Token checks, or explicitly none.
    pub auth: AuthSettings,
    /// TLS, and mTLS when a client CA is set.
    pub tls: Option<ServerTls>,
    /// A second, plaintext listener serving only `grpc.health.v1`, for probes that cannot
    /// speak TLS or present a client certificate (the kubelet's gRPC probe). `None`: health is
    /// served on the main port only.
    pub health_addr: Option<SocketAddr>,
    /// Unary calls in progress at once before new ones get RESOURCE_EXHAUSTED.
    pub max_concurrent_calls: usize,
    /// Client streams (imports, uploads) open at once.
    pub max_client_streams: usize,
    /// Server streams (feeds, member streams) open at once.
    pub max_server_streams: usize,
    /// The share of each of those budgets one caller may hold, in percent.
    pub caller_share_percent: usize,
    /// A client stream that sends nothing for this long is ended.
    pub client_stream_idle_timeout: Duration,
    /// Longest a call may run, and the deadline of calls that bring none.
    pub max_call_timeout: Duration,
    /// How long a new connection may take to send the HTTP/2 preface before it is closed.
    pub handshake_timeout: Duration,
    /// How often an idle connection is pinged (HTTP/2 keep-alive).
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

/// A count, at least 1, from `var` (default `default`).
fn positive(env: &Environment, var: &str, default: usize) -> Result<usize, ConfigError> {
    let value: usize = env.parse_or(var, default)?;
    if value == 0 {
        return Err(ConfigError::Invalid {
            var: var.to_owned(),
            reason: "must be at least 1".to_owned(),
        });
    }
    Ok(value)
}

/// A whole number of seconds, at least 1, from `var` (default `default`).
fn positive_secs(env: &Environment, var: &str, default: u64) -> Result<Duration, ConfigError> {
    let secs: u64 = env.parse_or(var, default)?;
    if secs == 0 {
        return Err(ConfigError::Invalid {
            var: var.to_owned(),
            reason: "must be at least 1".to_owned(),
        });
    }
    Ok(Duration::from_secs(secs))
}

impl ServerSettings {
    fn from_env(
        service: ServiceKind,
        env: &Environment,
        auth: AuthSettings,
        tls: Option<ServerTls>,
    ) -> Result<Self, ConfigError> {
        let host: IpAddr = env.parse_or("CUSTOPS_LISTEN_HOST", IpAddr::from([0, 0, 0, 0]))?;
        let port_var = format!("{}PORT", service.env_prefix());
        let port: u16 = env.parse_or(&port_var, service.default_port())?;
        let max_concurrent_calls: usize = env.parse_or("CUSTOPS_MAX_CONCURRENT_CALLS", 256)?;
        if max_concurrent_calls == 0 {
            return Err(ConfigError::Invalid {
                var: "CUSTOPS_MAX_CONCURRENT_CALLS".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        let health_port: Option<u16> = match env.get("CUSTOPS_HEALTH_PORT") {
            None => None,
            Some(_) => Some(env.parse_or("CUSTOPS_HEALTH_PORT", 0)?),
        };
        if health_port == Some(port) {
            return Err(ConfigError::Invalid {
                var: "CUSTOPS_HEALTH_PORT".to_owned(),
                reason: format!("must differ from the gRPC port {port}"),
            });
        }
        let max_call_timeout: u64 = env.parse_or("CUSTOPS_MAX_CALL_TIMEOUT_SECS", 30)?;
        if max_call_timeout == 0 {
            return Err(ConfigError::Invalid {
                var: "CUSTOPS_MAX_CALL_TIMEOUT_SECS".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(Self {
            service,
            listen_addr: SocketAddr::new(host, port),
            shutdown_grace: Duration::from_secs(env.parse_or("CUSTOPS_SHUTDOWN_GRACE_SECS", 20)?),
            auth,
            tls,
            health_addr: health_port.map(|port| SocketAddr::new(host, port)),
            max_concurrent_calls,
            max_client_streams: positive(env, "CUSTOPS_MAX_CLIENT_STREAMS", 32)?,
            max_server_streams: positive(env, "CUSTOPS_MAX_SERVER_STREAMS", 256)?,
            caller_share_percent: match positive(env, "CUSTOPS_CALLER_SHARE_PERCENT", 50)? {
                share @ 1..=100 => share,
                _ => {
                    return Err(ConfigError::Invalid {
                        var: "CUSTOPS_CALLER_SHARE_PERCENT".to_owned(),
                        reason: "must be from 1 to 100".to_owned(),
                    });
                }
            },
            client_stream_idle_timeout: positive_secs(
                env,
                "CUSTOPS_CLIENT_STREAM_IDLE_TIMEOUT_SECS",
                30,
            )?,
            max_call_timeout: Duration::from_secs(max_call_timeout),
            handshake_timeout: positive_secs(env, "CUSTOPS_HANDSHAKE_TIMEOUT_SECS", 10)?,
            keepalive_interval: positive_secs(env, "CUSTOPS_KEEPALIVE_INTERVAL_SECS", 30)?,
            keepalive_timeout: positive_secs(env, "CUSTOPS_KEEPALIVE_TIMEOUT_SECS", 20)?,
        })
    }

    /// A plaintext server on a free loopback port with the given auth, for tests and tools.
    pub fn local(service: ServiceKind, auth: AuthSettings) -> Self {
        Self {
            service,
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shutdown_grace: Duration::from_secs(5),
            auth,
            tls: None,
            health_addr: None,
            max_concurrent_calls: 256,
            max_client_streams: 32,
            max_server_streams: 256,
            caller_share_percent: 50,
            client_stream_idle_timeout: Duration::from_secs(30),
            max_call_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// How a service reaches the others.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The calling service, named in the tokens it mints.
    pub caller: ServiceKind,
    /// Where each other service is reached (`CUSTOPS_<SVC>_URL`), when configured.
    pub peers: HashMap<ServiceKind, String>,
    /// Trust and identity for TLS calls; `None` means plaintext.
    pub tls: Option<ClientTls>,
    /// Auth settings, to mint the outgoing tokens (nothing is sent when disabled).
    pub auth: AuthSettings,
}

impl ClientSettings {
    fn from_env(
        caller: ServiceKind,
        env: &Environment,
        auth: &AuthSettings,
        tls: Option<ClientTls>,
    ) -> Result<Self, ConfigError> {
        let mut peers = HashMap::new();
        for peer in ServiceKind::ALL.into_iter().filter(|peer| *peer != caller) {
            let var = format!("CUSTOPS_{}_URL", peer.name().to_ascii_uppercase());
            if let Some(url) = env.get(&var) {
                let url = url.trim();
                let parsed = url::Url::parse(url).map_err(|error| ConfigError::Invalid {
                    var: var.clone(),
                    reason: format!("`{url}` is not a URL: {error}"),
                })?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                    return Err(ConfigError::Invalid {
                        var,
                        reason: format!("`{url}` must be http://host:port or https://host:port"),
                    });
                }
                peers.insert(peer, url.to_owned());
            }
        }
        Ok(Self {
            caller,
            peers,
            tls,
            auth: auth.clone(),
        })
    }

    /// No peers configured, plaintext, no tokens.
    pub fn local(caller: ServiceKind) -> Self {
        Self {
            caller,
            peers: HashMap::new(),
            tls: None,
            auth: AuthSettings::Disabled,
        }
    }
}

/// How a service reaches its Postgres schema.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// Connection URL; secret because it usually holds a password.
    pub url: SecretString,
    /// A direct connection to Postgres when `url` is a transaction pooler (PgBouncer): what
    /// needs a session of its own (LISTEN, migrations) connects here, and `url` is then
    /// treated as a pooler (`db::connect`). `None`: `url` is Postgres itself.
    pub direct_url: Option<SecretString>,
    /// The schema the service owns; becomes the connections' `search_path`.
    pub schema: &'static str,
    /// Upper bound of pooled connections.
    pub max_connections: u32,
    /// How long start-up keeps trying to reach the database before giving up.
    pub connect_timeout: Duration,
    /// Server-side `statement_timeout`, so a runaway query cannot hold a connection forever.
    pub statement_timeout: Duration,
    /// Server-side `lock_timeout`, below the statement timeout: a call waiting on a row
    /// another holds gives up (ABORTED, retryable) instead of holding its connection while
    /// others queue behind it.
    pub lock_timeout: Duration,
    /// How long a call waits for a free pooled connection before it is answered UNAVAILABLE.
    pub acquire_timeout: Duration,
}

impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &"[redacted]")
            .field(
                "direct_url",
                &self.direct_url.as_ref().map(|_| "[redacted]"),
            )
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// A service's pool size unless `CUSTOPS_DB_MAX_CONNECTIONS` says otherwise.
pub const DEFAULT_DB_MAX_CONNECTIONS: u32 = 10;

impl DatabaseSettings {
    /// Defaults for `service` on `url`; the URL is not validated here.
    pub fn new(service: ServiceKind, url: &str) -> Self {
        Self {
            url: SecretString::from(url.to_owned()),
            direct_url: None,
            schema: service.schema(),
            max_connections: DEFAULT_DB_MAX_CONNECTIONS,
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_millis(5000),
            lock_timeout: Duration::from_millis(2000),
            acquire_timeout: Duration::from_millis(2000),
        }
    }

    /// Reads `CUSTOPS_<SVC>_DATABASE_URL`, else `DATABASE_URL`; the direct URL behind a
    /// pooler from `CUSTOPS_<SVC>_DATABASE_DIRECT_URL`, else `DATABASE_DIRECT_URL`; and the
    /// pool limits.
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
        let own_direct_var = format!("{}DATABASE_DIRECT_URL", service.env_prefix());
        let direct = match (env.get(&own_direct_var), env.get("DATABASE_DIRECT_URL")) {
            (Some(url), _) => Some((own_direct_var, url)),
            (None, Some(url)) => Some(("DATABASE_DIRECT_URL".to_owned(), url)),
            (None, None) => None,
        };
        if let Some((var, url)) = direct {
            validate_postgres_url(&var, url)?;
            settings.direct_url = Some(SecretString::from(url.to_owned()));
        }
        settings.max_connections =
            env.parse_or("CUSTOPS_DB_MAX_CONNECTIONS", DEFAULT_DB_MAX_CONNECTIONS)?;
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
        let lock_timeout_ms: u64 = env.parse_or("CUSTOPS_DB_LOCK_TIMEOUT_MS", 2000)?;
        settings.lock_timeout = Duration::from_millis(lock_timeout_ms);
        if lock_timeout_ms == 0 || settings.lock_timeout >= settings.statement_timeout {
            return Err(ConfigError::Invalid {
                var: "CUSTOPS_DB_LOCK_TIMEOUT_MS".to_owned(),
                reason: format!(
                    "must be at least 1 and below the statement timeout ({} ms)",
                    settings.statement_timeout.as_millis()
                ),
            });
        }
        settings.acquire_timeout =
            Duration::from_millis(env.parse_or("CUSTOPS_DB_ACQUIRE_TIMEOUT_MS", 2000)?);
        if settings.acquire_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                var: "CUSTOPS_DB_ACQUIRE_TIMEOUT_MS".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(settings)
    }

    /// The URL, for the one place that connects.
    pub(crate) fn expose_url(&self) -> &str {
        self.url.expose_secret()
    }

    /// The URL for session-bound work: the direct one behind a pooler, else [`Self::url`].
    pub(crate) fn expose_direct_url(&self) -> &str {
        self.direct_url
            .as_ref()
            .map_or_else(|| self.expose_url(), |url| url.expose_secret())
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

    /// Settings from `pairs`, with auth explicitly disabled unless `pairs` say otherwise.
    fn settings(pairs: &[(&str, &str)]) -> Result<ServiceSettings, ConfigError> {
        ServiceSettings::from_env(
            ServiceKind::Loyalty,
            &Environment::from_pairs(pairs.iter().copied())
                .with_default("CUSTOPS_AUTH_MODE", "disabled"),
        )
    }

    #[test]
    fn defaults_apply_when_only_the_database_is_set() {
        let s = settings(&[("DATABASE_URL", "postgres://u:secret@db:5432/custops")]);
        let s = s.map_err(|e| e.to_string());
        let s = s
            .as_ref()
            .map(|s| (s.server.listen_addr.port(), s.database.schema));
        assert_eq!(s, Ok((50053, "loyalty")));
    }

    #[test]
    fn feed_retention_is_whole_hours_seven_days_by_default() {
        let db = ("DATABASE_URL", "postgres://u:secret@db:5432/custops");
        let retention = |pairs: &[(&str, &str)]| {
            settings(pairs)
                .map(|s| s.feed_retention.as_secs())
                .map_err(|e| e.var().to_owned())
        };
        assert_eq!(retention(&[db]), Ok(7 * 24 * 3600));
        assert_eq!(
            retention(&[db, ("CUSTOPS_FEED_RETENTION_HOURS", "36")]),
            Ok(36 * 3600)
        );
        for bad in ["0", "-1", "1.5", "87601"] {
            assert_eq!(
                retention(&[db, ("CUSTOPS_FEED_RETENTION_HOURS", bad)]),
                Err("CUSTOPS_FEED_RETENTION_HOURS".to_owned()),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_variables_list_is_exactly_what_the_binaries_read() {
        let mut read = std::collections::BTreeSet::new();
        for service in ServiceKind::ALL {
            // The minimum for a successful start with auth on; every other variable is looked
            // up (and found empty, meaning "default").
            let env = Environment::from_pairs([
                ("DATABASE_URL", "postgres://db/x"),
                (
                    "CUSTOPS_AUTH_JWT_SECRET",
                    "0123456789abcdef0123456789abcdef",
                ),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                // Set, so the OTLP settings that follow it are read too.
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ]);
            let settings = ServiceSettings::from_env(service, &env);
            assert!(settings.is_ok(), "{:?}", settings.err());
            let _ = crate::telemetry::log_format_from_env(&env);
            let _ = crate::telemetry::Exporters::from_env(&env);
            let _ = crate::db_roles::password_from_env(service, &env);
            let _ =
                AuthSettings::from_env(&Environment::from_pairs([("CUSTOPS_AUTH_MODE", "jwt")]));
            read.extend(env.names_read());
        }
        let listed: std::collections::BTreeSet<String> = VARIABLES
            .iter()
            .flat_map(|v| ServiceKind::ALL.map(|s| v.name_for(s)))
            // RUST_LOG is read by tracing-subscriber's EnvFilter, not through Environment.
            .filter(|name| name != "RUST_LOG")
            .collect();
        let unlisted: Vec<_> = read.difference(&listed).collect();
        let unread: Vec<_> = listed.difference(&read).collect();
        assert!(
            unlisted.is_empty(),
            "read but not in VARIABLES: {unlisted:?}"
        );
        assert!(unread.is_empty(), "in VARIABLES but never read: {unread:?}");
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
    fn a_direct_url_is_read_per_service_first_and_absent_by_default() {
        let direct = |pairs: &[(&str, &str)]| {
            settings(pairs)
                .ok()
                .map(|s| s.database.expose_direct_url().to_owned())
        };
        let pooled = ("DATABASE_URL", "postgres://bouncer:6432/loyalty");
        assert_eq!(
            direct(&[pooled]).as_deref(),
            Some("postgres://bouncer:6432/loyalty"),
            "without a direct URL, session work uses DATABASE_URL"
        );
        assert!(settings(&[pooled]).is_ok_and(|s| s.database.direct_url.is_none()));
        let shared = ("DATABASE_DIRECT_URL", "postgres://db:5432/custops");
        assert_eq!(
            direct(&[pooled, shared]).as_deref(),
            Some("postgres://db:5432/custops")
        );
        let own = (
            "CUSTOPS_LOYALTY_DATABASE_DIRECT_URL",
            "postgres://own:5432/custops",
        );
        assert_eq!(
            direct(&[pooled, shared, own]).as_deref(),
            Some("postgres://own:5432/custops")
        );
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
        check(
            &[
                ("DATABASE_URL", "postgres://db/x"),
                ("DATABASE_DIRECT_URL", "hunter2"),
            ],
            "DATABASE_DIRECT_URL",
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
        // A lock timeout at or above the statement timeout would never fire first.
        check(
            &[
                db,
                ("CUSTOPS_DB_STATEMENT_TIMEOUT_MS", "3000"),
                ("CUSTOPS_DB_LOCK_TIMEOUT_MS", "3000"),
            ],
            "CUSTOPS_DB_LOCK_TIMEOUT_MS",
        );
        check(
            &[db, ("CUSTOPS_DB_ACQUIRE_TIMEOUT_MS", "0")],
            "CUSTOPS_DB_ACQUIRE_TIMEOUT_MS",
        );
    }
}
