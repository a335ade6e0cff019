//! The shared Redis client and a two-level cache in front of a source of truth (Postgres).
//!
//! Reads go to a small in-process layer first (entries live for a short `local_ttl`, the
//! number of entries is bounded), then to Redis, then to the caller's loader; what the loader
//! returns fills both layers. Writes go through to both layers (`put`), and `invalidate`
//! removes a key from both.
//!
//! **Redis is an optimisation, never a dependency.** Every Redis command is bounded by
//! `CUSTOPS_REDIS_TIMEOUT_MS`; a failure (timeout, refused connection, server error, a value
//! that does not decode) is counted ([`TwoLevelCache::redis_errors`] and the OpenTelemetry
//! counter `custops.cache.redis.errors`), logged (one warning per outage or per 10 s, the rest
//! at debug), and the call is answered from the loader. After a connection failure Redis is not
//! tried again for one second (`RedisSettings::retry_after`), so during an outage only about
//! one call per second pays the timeout and the others go straight to the source.
//!
//! Consistency: the in-process layer of *other* replicas is not invalidated by this type; a
//! caller that writes through on every replica (segmentation's listener) keeps them current,
//! and `local_ttl` bounds any change that reaches no `put`. A fill never undoes a write: the
//! in-process layer takes a value read from Redis or the loader only when no `put` or
//! `invalidate` of this cache ran while it was being read (a read that raced a write answers
//! its value once, but does not keep it), and the Redis fill uses `SET NX`, so it cannot
//! overwrite a newer value a concurrent `put` wrote; a load racing an `invalidate` can still
//! leave an old value in Redis, for at most the Redis TTL.
//!
//! Redis Cluster: `REDIS_URL=redis+cluster://[user:password@]host:port,host:port,…` names
//! seed nodes of a cluster, served through the redis crate's cluster client (it learns the
//! slot map from the seeds and follows MOVED/ASK and failovers); the cache logic above is the
//! same for both, behind `Connection`. Every command names one key, so no key needs a hash
//! tag. On a cluster a write-through (`put`, `invalidate`) is followed by `WAIT 1` on the
//! key's master and counts as failed unless a replica acknowledged it: replication is
//! asynchronous, and a write only the failed master held would vanish in a failover, leaving
//! the older value it replaced to be read as if current.
//!
//! Why not `moka` for the in-process layer: its coalescing `get_with` inserts the loaded value
//! even when a `put` landed during the load (the guard above would be lost, or every write would
//! have to wait behind loads of its key), and its per-key gets are several times slower than a
//! hit in this map, which [`TwoLevelCache::read_local`] serves for a whole batch under one lock.
//! Concurrent misses of one key are therefore not coalesced: each reads Redis or the source.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::error::DisplayChain;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{ConfigError, Environment};
use crate::metrics;

/// Variable holding the Redis URL; unset means no Redis (in-process layer only).
pub const REDIS_URL_VAR: &str = "REDIS_URL";
/// Variable holding the per-command timeout in milliseconds.
pub const REDIS_TIMEOUT_VAR: &str = "CUSTOPS_REDIS_TIMEOUT_MS";
/// Default per-command timeout: Redis answers in well under a millisecond when healthy.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(200);

/// The scheme of a Redis Cluster URL: `redis+cluster://[user:password@]host:port,host:port`.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";
/// How often the cluster client may retry a command inside one call (a MOVED after a failover,
/// a reconnection); the whole call stays bounded by the timeout.
const CLUSTER_RETRIES: u32 = 3;

/// How long Redis is left alone after a connection failure, by default.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// At most one warning per this period for failures that do not open an outage.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`, or `redis+cluster://[user:password@]host:port,…`
    /// (seed nodes of a Redis Cluster); secret because it may hold a password.
    pub url: SecretString,
    /// Bound on connecting and on every command.
    pub timeout: Duration,
    /// How long Redis is left alone (commands skipped, answered from the source) after it
    /// timed out or refused a connection. Not configurable from the environment: tests set
    /// it to tell a skipped command from a sent one.
    pub retry_after: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &"[redacted]")
            .field("timeout", &self.timeout)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl RedisSettings {
    /// Settings for `url` with the default timeout; the URL is checked when connecting.
    pub fn new(url: &str) -> Self {
        Self {
            url: SecretString::from(url.to_owned()),
            timeout: DEFAULT_REDIS_TIMEOUT,
            retry_after: DEFAULT_RETRY_AFTER,
        }
    }

    /// Reads `REDIS_URL` and `CUSTOPS_REDIS_TIMEOUT_MS` (default 200). `Ok(None)` when
    /// `REDIS_URL` is unset: the service then caches in-process only.
    pub fn from_env(env: &Environment) -> Result<Option<Self>, ConfigError> {
        let Some(url) = env.get(REDIS_URL_VAR) else {
            return Ok(None);
        };
        validate_redis_url(url)?;
        let timeout_ms: u64 = env.parse_or(
            REDIS_TIMEOUT_VAR,
            u64::try_from(DEFAULT_REDIS_TIMEOUT.as_millis()).unwrap_or(200),
        )?;
        if timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                var: REDIS_TIMEOUT_VAR.to_owned(),
                reason: "must be at least 1 (milliseconds)".to_owned(),
            });
        }
        Ok(Some(Self {
            url: SecretString::from(url.to_owned()),
            timeout: Duration::from_millis(timeout_ms),
            retry_after: DEFAULT_RETRY_AFTER,
        }))
    }
}

/// Checks the URL without echoing it: it may carry a password.
fn validate_redis_url(url: &str) -> Result<(), ConfigError> {
    parse_redis_url(url)
        .map(drop)
        .map_err(|reason| ConfigError::Invalid {
            var: REDIS_URL_VAR.to_owned(),
            reason: reason.to_owned(),
        })
}

/// Where Redis is. Not `Debug`: the URLs may carry a password.
#[derive(PartialEq, Eq)]
enum RedisTarget {
    /// One server: `redis://…` or `redis+unix://…`, as the redis crate reads it.
    Single(String),
    /// The seed nodes of a Redis Cluster, each as `redis://[user:password@]host:port`.
    Cluster(Vec<String>),
}

/// Reads `REDIS_URL`. The redis crate takes one node per URL, so a cluster's list of seed
/// nodes is split here, each node getting the list's credentials. The error is a reason that
/// never quotes the URL.
fn parse_redis_url(url: &str) -> Result<RedisTarget, &'static str> {
    if url.starts_with("rediss://") || url.starts_with("rediss+cluster://") {
        return Err(
            "TLS (rediss://) is not supported by this build; use redis:// or redis+cluster://",
        );
    }
    if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
        return parse_cluster_nodes(rest).map(RedisTarget::Cluster);
    }
    if !(url.starts_with("redis://") || url.starts_with("redis+unix://")) {
        return Err(
            "expected a URL starting with redis:// (one server) or redis+cluster:// (a cluster)",
        );
    }
    if url.contains(',') {
        return Err("a list of nodes is a cluster: write redis+cluster://host:port,host:port");
    }
    redis::Client::open(url)
        .map(|_| RedisTarget::Single(url.to_owned()))
        .map_err(|_| "not a well-formed Redis URL (redis://[:password@]host:port[/db])")
}

/// `[user:password@]host:port,host:port[/]` → one `redis://` URL per seed node.
fn parse_cluster_nodes(rest: &str) -> Result<Vec<String>, &'static str> {
    const SHAPE: &str = "expected redis+cluster://[user:password@]host:port,host:port (seed nodes of a cluster, no database, no options)";
    // Credentials end at the last `@`; host lists hold none.
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((credentials, hosts)) => (Some(credentials), hosts),
        None => (None, rest),
    };
    let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
    if hosts.contains(['/', '?', '#']) {
        return Err(
            "a cluster has only database 0 and takes no options: redis+cluster://[user:password@]host:port,host:port",
        );
    }
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        let has_port = host.rsplit_once(':').is_some_and(|(name, port)| {
            !name.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !has_port {
            return Err(SHAPE);
        }
        let node = match credentials {
            Some(credentials) => format!("redis://{credentials}@{host}"),
            None => format!("redis://{host}"),
        };
        if redis::Client::open(node.as_str()).is_err() {
            return Err(SHAPE);
        }
        nodes.push(node);
    }
    Ok(nodes)
}

/// Why a Redis command did not give an answer. Never returned by [`TwoLevelCache`], which
/// falls back to the loader; returned by the raw [`RedisCache`] commands.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis failed recently and is left alone for a moment; the command was not sent.
    #[error("Redis skipped after a recent connection failure")]
    Skipped,
    /// No answer within the configured timeout.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or was refused.
    #[error("Redis connection failed")]
    Connection(#[source] redis::RedisError),
    /// Redis answered with an error.
    #[error("Redis command failed")]
    Command(#[source] redis::RedisError),
    /// A cached value did not decode as the expected type (e.g. written by an older build).
    #[error("cached value does not decode")]
    Decode(#[source] ValueDecodeError),
    /// On a cluster, the key's master took the write but no replica acknowledged it in time:
    /// a failover now could lose it, so it is not counted as written.
    #[error("no replica acknowledged the write within {0:?}")]
    NotReplicated(Duration),
}

impl CacheError {
    /// Short name for metrics and logs: `skipped`, `timeout`, `connection`, `command`,
    /// `decode`, `not_replicated`.
    pub fn kind(&self) -> &'static str {
        match self {
            CacheError::Skipped => "skipped",
            CacheError::Timeout(_) => "timeout",
            CacheError::Connection(_) => "connection",
            CacheError::Command(_) => "command",
            CacheError::Decode(_) => "decode",
            CacheError::NotReplicated(_) => "not_replicated",
        }
    }

    /// Whether Redis itself looks unreachable (as opposed to one bad command or value).
    fn is_outage(&self) -> bool {
        matches!(self, CacheError::Timeout(_) | CacheError::Connection(_))
    }
}

/// A Redis client shared by every cache of a process: one multiplexed connection (one per
/// node on a cluster), re-opened in the background when it breaks, every command bounded by
/// the timeout. Cheap to clone.
#[derive(Clone)]
pub struct RedisCache {
    inner: Arc<RedisInner>,
}

struct RedisInner {
    connection: Connection,
    timeout: Duration,
    retry_after: Duration,
    health: Mutex<Health>,
}

/// The one place that knows whether Redis is one server or a cluster; everything above it
/// (timeouts, skipping, counting, `SET NX` fills) is written once.
#[derive(Clone)]
enum Connection {
    /// One server, through the crate's reconnecting manager.
    Single(ConnectionManager),
    /// A Redis Cluster: commands go to the master of their key's slot.
    Cluster(ClusterConnection),
}

/// What is sent: one command, or commands that must reach the same node (a write and its
/// `WAIT`).
enum Request {
    One(redis::Cmd),
    Pipeline(redis::Pipeline),
}

impl Connection {
    async fn send<T: redis::FromRedisValue>(&self, request: &Request) -> redis::RedisResult<T> {
        match (self.clone(), request) {
            (Connection::Single(mut c), Request::One(cmd)) => cmd.query_async(&mut c).await,
            (Connection::Single(mut c), Request::Pipeline(p)) => p.query_async(&mut c).await,
            (Connection::Cluster(mut c), Request::One(cmd)) => cmd.query_async(&mut c).await,
            (Connection::Cluster(mut c), Request::Pipeline(p)) => p.query_async(&mut c).await,
        }
    }
}

/// What the client knows about Redis's recent behaviour, for skipping and for quiet logs.
#[derive(Debug, Default)]
struct Health {
    /// Set while Redis is unreachable: when the outage was first seen.
    down_since: Option<Instant>,
    /// Commands are not sent before this instant.
    retry_at: Option<Instant>,
    /// When the last warning was logged.
    last_warning: Option<Instant>,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("timeout", &self.inner.timeout)
            .field("health", &*self.health())
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Creates the client. Fails only when the URL is unusable; an unreachable Redis is
    /// logged and tolerated (the connection is retried on later commands), so a service starts
    /// and serves from its source while Redis is down.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, CacheError> {
        let target = parse_redis_url(settings.url.expose_secret()).map_err(|reason| {
            CacheError::Connection(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "unusable REDIS_URL",
                reason.to_owned(),
            )))
        })?;
        let connection = match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url).map_err(CacheError::Connection)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(settings.timeout))
                    .set_response_timeout(Some(settings.timeout))
                    // One quick retry inside the manager; beyond that our own skip window decides.
                    .set_number_of_retries(1)
                    .set_max_delay(settings.timeout);
                let manager = ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(CacheError::Connection)?;
                Connection::Single(manager)
            }
            RedisTarget::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes)
                    .retries(CLUSTER_RETRIES)
                    .overall_response_timeout(Some(settings.timeout))
                    .build()
                    .map_err(CacheError::Connection)?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(settings.timeout)
                    .set_response_timeout(settings.timeout);
                // Connects in the background, like the single server's lazy manager, so a
                // service starts while the cluster is unreachable.
                Connection::Cluster(client.get_pending_async_connection_with_config(config))
            }
        };
        let cache = Self {
            inner: Arc::new(RedisInner {
                connection,
                timeout: settings.timeout,
                retry_after: settings.retry_after,
                health: Mutex::new(Health::default()),
            }),
        };
        // Failures are logged by `ping` itself; the service starts either way.
        let _ = cache.ping().await;
        Ok(cache)
    }

    /// The per-command timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Whether this client talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.connection, Connection::Cluster(_))
    }

    /// Checks that Redis answers (on a cluster, every master the client is connected to).
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.query::<String>("ping", Request::One(redis::cmd("PING")))
            .await
            .map(drop)
    }

    /// The value stored at `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.query("get", Request::One(cmd)).await
    }

    /// Stores `value` at `key` for `ttl` (at least one millisecond). With `only_if_absent`,
    /// an existing value is kept; returns whether the value was written. On a cluster, a
    /// write without `only_if_absent` (a write-through) fails with
    /// [`CacheError::NotReplicated`] unless a replica acknowledged it.
    pub async fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        only_if_absent: bool,
    ) -> Result<bool, CacheError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(ttl_ms);
        if only_if_absent {
            cmd.arg("NX");
            // A fill needs no replica: losing it in a failover leaves what the replica held
            // before, which every acknowledged write-through already reached.
            // SET answers OK, or nil when NX found the key taken.
            let written: Option<String> = self.query("set", Request::One(cmd)).await?;
            return Ok(written.is_some());
        }
        let written: Option<String> = self.write_through("set", cmd).await?;
        Ok(written.is_some())
    }

    /// Removes `key`. On a cluster, fails with [`CacheError::NotReplicated`] unless a replica
    /// acknowledged the removal.
    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        self.write_through::<i64>("delete", cmd).await.map(drop)
    }

    /// Sends a write that replaces what a key holds. On a cluster it is followed, on the
    /// same connection to the key's master, by `WAIT 1 <half the timeout>`: the write counts
    /// only when a replica has it, so a failover cannot bring back the value it replaced.
    async fn write_through<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        cmd: redis::Cmd,
    ) -> Result<T, CacheError> {
        if !self.is_cluster() {
            return self.query(operation, Request::One(cmd)).await;
        }
        // Half the timeout, so a slow replica is told from a hung master (a whole-call
        // timeout, which would leave Redis alone for `retry_after`); WAIT 0 would block forever.
        let wait = (self.inner.timeout / 2).max(Duration::from_millis(1));
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut pipeline = redis::pipe();
        // The pipeline goes to the node of its one key; WAIT names none.
        pipeline.add_command(cmd).cmd("WAIT").arg(1).arg(wait_ms);
        let (answer, replicas): (T, i64) =
            self.query(operation, Request::Pipeline(pipeline)).await?;
        if replicas < 1 {
            let error = CacheError::NotReplicated(wait);
            self.record_failure(operation, &error);
            return Err(error);
        }
        Ok(answer)
    }

    /// Sends one request, bounded by the timeout, unless Redis failed within the last second.
    async fn query<T: redis::FromRedisValue>(
        &self,
        operation: &'static str,
        request: Request,
    ) -> Result<T, CacheError> {
        if self.health().retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(CacheError::Skipped);
        }
        // The clients bound connecting and each response, but a reconnect with its retries
        // can take longer than one timeout; this bounds the whole call.
        let connection = &self.inner.connection;
        let result = match tokio::time::timeout(self.inner.timeout, connection.send::<T>(&request))
            .await
        {
            Err(_elapsed) => Err(CacheError::Timeout(self.inner.timeout)),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if error.is_timeout() => Err(CacheError::Timeout(self.inner.timeout)),
            // A cluster whose slot has no master yet (a failover under way) is unreachable
            // for that key, like a server that refuses connections.
            Ok(Err(error))
                if error.is_io_error()
                    || error.is_connection_dropped()
                    || matches!(
                        error.kind(),
                        redis::ErrorKind::Server(
                            redis::ServerErrorKind::ClusterDown | redis::ServerErrorKind::TryAgain
                        )
                    ) =>
            {
                Err(CacheError::Connection(error))
            }
            Ok(Err(error)) => Err(CacheError::Command(error)),
        };
        match &result {
            Ok(_) => self.record_success(),
            Err(error) => self.record_failure(operation, error),
        }
        result
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        // The guarded data is a few timestamps, valid whatever a panicking holder did.
        self.inner
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn record_success(&self) {
        let mut health = self.health();
        health.retry_at = None;
        if let Some(since) = health.down_since.take() {
            tracing::info!(
                outage_secs = since.elapsed().as_secs_f64(),
                "Redis reachable again; cache reads and writes resume"
            );
        }
    }

    /// Logs one warning when an outage starts (and at most one per 10 s for other failures);
    /// everything else at debug, so a Redis outage does not flood the logs.
    fn record_failure(&self, operation: &'static str, error: &CacheError) {
        let now = Instant::now();
        let mut health = self.health();
        let warn = if error.is_outage() {
            health.retry_at = Some(now + self.inner.retry_after);
            // Warn when the outage starts; its later failures only at debug.
            let starts = health.down_since.is_none();
            health.down_since.get_or_insert(now);
            starts
        } else {
            health
                .last_warning
                .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        };
        if warn {
            health.last_warning = Some(now);
            tracing::warn!(
                operation,
                error = %DisplayChain(error),
                "Redis failed; answering from the source (further failures are logged at debug)"
            );
        } else {
            tracing::debug!(operation, error = %DisplayChain(error), "Redis failed");
        }
    }

    /// Records a value that came back from Redis but does not decode, for the same quiet
    /// logging as command failures.
    fn record_bad_value(&self, error: &CacheError) {
        self.record_failure("decode", error);
    }
}

/// A value that can be cached: cloned out of the in-process layer, stored in Redis as bytes.
///
/// Implemented for every prost message, which includes `Vec<u8>` and `String` (stored as the
/// `BytesValue` / `StringValue` wrappers). A domain type is cached through its prost
/// counterpart, or by implementing this trait.
pub trait CacheValue: Clone + Send + Sync + 'static {
    /// The bytes stored in Redis.
    fn to_bytes(&self) -> Vec<u8>;
    /// The value back from those bytes.
    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueDecodeError>;
}

/// Bytes in Redis that are not a value of the cache's type (counted, then replaced).
#[derive(Debug, thiserror::Error)]
#[error("a cached value does not decode: {0}")]
pub struct ValueDecodeError(pub String);

impl<M> CacheValue for M
where
    M: prost::Message + Default + Clone + Send + Sync + 'static,
{
    fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueDecodeError> {
        M::decode(bytes).map_err(|error| ValueDecodeError(error.to_string()))
    }
}

/// A short-lived, size-bounded in-process cache: at most `capacity` entries, each dropped
/// `ttl` after it was written. When full, the entry that expires first goes.
struct LocalLayer<V> {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<String, LocalEntry<V>>,
    /// Entries by expiry (and a sequence number to break ties), for eviction in O(log n).
    by_expiry: BTreeMap<(Instant, u64), String>,
    next_seq: u64,
}

struct LocalEntry<V> {
    value: V,
    expires: Instant,
    seq: u64,
}

impl<V: Clone> LocalLayer<V> {
    fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: HashMap::new(),
            by_expiry: BTreeMap::new(),
            next_seq: 0,
        }
    }

    fn enabled(&self) -> bool {
        self.capacity > 0 && !self.ttl.is_zero()
    }

    fn get(&mut self, key: &str, now: Instant) -> Option<V> {
        let entry = self.entries.get(key)?;
        if entry.expires > now {
            return Some(entry.value.clone());
        }
        self.remove(key);
        None
    }

    fn insert(&mut self, key: &str, value: V, now: Instant) {
        if !self.enabled() {
            return;
        }
        self.remove(key);
        self.evict_expired(now);
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.by_expiry.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let expires = now + self.ttl;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_expiry.insert((expires, seq), key.to_owned());
        self.entries.insert(
            key.to_owned(),
            LocalEntry {
                value,
                expires,
                seq,
            },
        );
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.by_expiry.remove(&(entry.expires, entry.seq));
        }
    }

    fn evict_expired(&mut self, now: Instant) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What a process's layer holds at one instant, read under its lock
/// ([`TwoLevelCache::read_local`]).
pub struct LocalHeld<'a, V> {
    layer: &'a LocalLayer<V>,
    metrics: &'a CacheMetrics,
    now: Instant,
}

impl<V> fmt::Debug for LocalHeld<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalHeld")
            .field("entries", &self.layer.entries.len())
            .finish_non_exhaustive()
    }
}

impl<V> LocalHeld<'_, V> {
    /// The value held for `key`, unless it has expired. Counted as a local hit or a miss.
    pub fn get(&self, key: &str) -> Option<&V> {
        let value = self
            .layer
            .entries
            .get(key)
            .filter(|entry| entry.expires > self.now)
            .map(|entry| &entry.value);
        self.metrics.lookup(if value.is_some() {
            Lookup::LocalHit
        } else {
            Lookup::Miss
        });
        value
    }
}

/// When a batch read of the source began, for [`TwoLevelCache::fill`].
#[derive(Debug, Clone, Copy)]
pub struct FillToken(u64);

/// A cache of values of type `V` in one namespace: in-process first, then Redis, then the
/// loader. Share it (`Arc`) across the handlers that read the same kind of value.
pub struct TwoLevelCache<V> {
    namespace: String,
    redis: Option<RedisCache>,
    local: Mutex<LocalLayer<V>>,
    /// Bumped by every `put` and `invalidate`: a fill read before a write must not be kept.
    writes: AtomicU64,
    redis_errors: AtomicU64,
    metrics: CacheMetrics,
    _value: PhantomData<fn() -> V>,
}

/// The cache's instruments, with the attributes of its lookups built once (the namespace is
/// shared, not copied, by every data point).
struct CacheMetrics {
    namespace: opentelemetry::Value,
    errors: Counter<u64>,
    lookups: Counter<u64>,
    fallbacks: Counter<u64>,
}

/// Where a lookup was answered.
#[derive(Debug, Clone, Copy)]
enum Lookup {
    LocalHit,
    RedisHit,
    Miss,
}

impl CacheMetrics {
    fn new(namespace: &str) -> Self {
        Self {
            namespace: opentelemetry::Value::String(Arc::<str>::from(namespace).into()),
            errors: metrics::CACHE_REDIS_ERRORS.counter(),
            lookups: metrics::CACHE_LOOKUPS.counter(),
            fallbacks: metrics::CACHE_FALLBACKS.counter(),
        }
    }

    fn lookup(&self, result: Lookup) {
        let result = match result {
            Lookup::LocalHit => "local_hit",
            Lookup::RedisHit => "redis_hit",
            Lookup::Miss => "miss",
        };
        self.lookups.add(
            1,
            &[
                KeyValue::new("cache.namespace", self.namespace.clone()),
                KeyValue::new("cache.result", result),
            ],
        );
    }

    fn fallback(&self) {
        self.fallbacks.add(
            1,
            &[KeyValue::new("cache.namespace", self.namespace.clone())],
        );
    }
}

impl<V> fmt::Debug for TwoLevelCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwoLevelCache")
            .field("namespace", &self.namespace)
            .field("redis", &self.redis)
            .field("redis_errors", &self.redis_errors.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<V: CacheValue> TwoLevelCache<V> {
    /// A cache whose keys live under `custops:<namespace>:` in Redis (so caches of different
    /// kinds never collide), keeping up to `capacity` values in-process for `local_ttl` each.
    /// `redis: None`, a zero `capacity` or a zero `local_ttl` disable that layer.
    ///
    /// Create caches after telemetry is set up: the instruments are taken from the global
    /// meter provider installed at that moment.
    pub fn new(
        redis: Option<RedisCache>,
        local_ttl: Duration,
        capacity: usize,
        namespace: impl Into<String>,
    ) -> Self {
        let namespace = namespace.into();
        Self {
            metrics: CacheMetrics::new(&namespace),
            namespace,
            redis,
            local: Mutex::new(LocalLayer::new(local_ttl, capacity)),
            writes: AtomicU64::new(0),
            redis_errors: AtomicU64::new(0),
            _value: PhantomData,
        }
    }

    /// The value for `key`: from the in-process layer, else from Redis, else from `loader`,
    /// whose value then fills Redis (for `redis_ttl`) and the in-process layer. A loader error
    /// is returned as is and nothing is cached; a Redis failure is never returned.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: &str,
        redis_ttl: Duration,
        loader: F,
    ) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        if let Some(value) = self.local().get(key, Instant::now()) {
            self.metrics.lookup(Lookup::LocalHit);
            return Ok(value);
        }
        let writes_before = self.writes.load(Ordering::Acquire);
        let redis_key = self.redis_key(key);
        // Whether a fill should be written, and whether it may replace what Redis holds.
        let mut fill = None;
        if let Some(redis) = &self.redis {
            match redis.get(&redis_key).await {
                Ok(Some(bytes)) => match V::from_bytes(&bytes) {
                    Ok(value) => {
                        self.metrics.lookup(Lookup::RedisHit);
                        self.fill_local(key, &value, writes_before);
                        return Ok(value);
                    }
                    Err(error) => {
                        let error = CacheError::Decode(error);
                        redis.record_bad_value(&error);
                        self.count("get", &error);
                        // Replace the undecodable value with a good one.
                        fill = Some(false);
                    }
                },
                Ok(None) => fill = Some(true),
                // Redis is failing: do not also try to write to it.
                Err(error) => {
                    self.count("get", &error);
                    self.metrics.fallback();
                }
            }
        }
        self.metrics.lookup(Lookup::Miss);
        let value = loader().await?;
        self.fill_local(key, &value, writes_before);
        if let (Some(redis), Some(only_if_absent)) = (&self.redis, fill) {
            let bytes = value.to_bytes();
            if let Err(error) = redis
                .set(&redis_key, &bytes, redis_ttl, only_if_absent)
                .await
            {
                self.count("set", &error);
            }
        }
        Ok(value)
    }

    /// Runs `read` over what this process's layer holds, under one lock and one clock read,
    /// without asking Redis or the source: for batch reads (many keys, each looked up in
    /// place rather than cloned out under a lock of its own) that fetch what is missing in one
    /// query of their own. Keep `read` short: other lookups wait for it.
    pub fn read_local<R>(&self, read: impl FnOnce(&LocalHeld<'_, V>) -> R) -> R {
        let layer = self.local();
        read(&LocalHeld {
            layer: &layer,
            metrics: &self.metrics,
            now: Instant::now(),
        })
    }

    /// Taken before a batch read of the source, to keep what it read with [`Self::fill`].
    pub fn begin_fill(&self) -> FillToken {
        FillToken(self.writes.load(Ordering::Acquire))
    }

    /// Keeps a value a batch read of the source returned in this process's layer, unless a
    /// `put` or `invalidate` ran since its [`Self::begin_fill`] (the same guard as
    /// `get_or_load`'s fills). Redis is not filled.
    pub fn fill(&self, key: &str, value: &V, since: FillToken) {
        self.fill_local(key, value, since.0);
    }

    /// Writes `value` through to both layers (Redis for `redis_ttl`), e.g. after the source
    /// changed. A Redis failure is counted and logged, not returned; the result says whether
    /// Redis took the write (true without Redis), so a caller can tell that Redis may still
    /// hold an older value (also when the command was skipped during an outage).
    pub async fn put(&self, key: &str, value: V, redis_ttl: Duration) -> bool {
        let bytes = self.redis.as_ref().map(|_| value.to_bytes());
        {
            // Counted under the layer's lock, so a fill that read before this write sees the
            // count move when it takes the lock to insert.
            let mut local = self.local();
            self.writes.fetch_add(1, Ordering::AcqRel);
            local.insert(key, value, Instant::now());
        }
        let (Some(redis), Some(bytes)) = (&self.redis, bytes) else {
            return true;
        };
        match redis
            .set(&self.redis_key(key), &bytes, redis_ttl, false)
            .await
        {
            // Without NX the value is always written.
            Ok(_) => true,
            Err(error) => {
                self.count("set", &error);
                false
            }
        }
    }

    /// Removes `key` from this process's layer and from Redis. Other replicas' in-process
    /// layers keep their copy until it expires (`local_ttl`). The result says whether Redis
    /// took the removal (true without Redis).
    pub async fn invalidate(&self, key: &str) -> bool {
        {
            let mut local = self.local();
            self.writes.fetch_add(1, Ordering::AcqRel);
            local.remove(key);
        }
        let Some(redis) = &self.redis else {
            return true;
        };
        match redis.delete(&self.redis_key(key)).await {
            Ok(()) => true,
            Err(error) => {
                self.count("delete", &error);
                false
            }
        }
    }

    /// Keeps a value read from Redis or the loader in the in-process layer, unless a `put` or
    /// `invalidate` ran since the read began (`writes_before`): the read may predate that write,
    /// and a kept stale value would outlive it until the layer's TTL.
    fn fill_local(&self, key: &str, value: &V, writes_before: u64) {
        let mut local = self.local();
        if self.writes.load(Ordering::Acquire) == writes_before {
            local.insert(key, value.clone(), Instant::now());
        }
    }

    /// How many Redis commands of this cache failed (skipped commands are not counted).
    pub fn redis_errors(&self) -> u64 {
        self.redis_errors.load(Ordering::Relaxed)
    }

    /// How many values the in-process layer holds now (expired ones may still be counted).
    pub fn local_len(&self) -> usize {
        self.local().len()
    }

    /// The Redis key that holds `key`.
    pub fn redis_key(&self, key: &str) -> String {
        format!("custops:{}:{key}", self.namespace)
    }

    fn count(&self, operation: &'static str, error: &CacheError) {
        if matches!(error, CacheError::Skipped) {
            return;
        }
        self.redis_errors.fetch_add(1, Ordering::Relaxed);
        self.metrics.errors.add(
            1,
            &[
                KeyValue::new("cache.namespace", self.metrics.namespace.clone()),
                KeyValue::new("cache.operation", operation),
                KeyValue::new("error.type", error.kind()),
            ],
        );
    }

    fn local(&self) -> MutexGuard<'_, LocalLayer<V>> {
        // Entries are inserted whole, so a panic elsewhere cannot leave one half-written.
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(ttl_ms: u64, capacity: usize) -> LocalLayer<u32> {
        LocalLayer::new(Duration::from_millis(ttl_ms), capacity)
    }

    #[test]
    fn local_entries_expire_after_the_ttl() {
        let t0 = Instant::now();
        let mut local = layer(100, 10);
        local.insert("a", 1, t0);
        assert_eq!(local.get("a", t0 + Duration::from_millis(99)), Some(1));
        assert_eq!(local.get("a", t0 + Duration::from_millis(100)), None);
        assert_eq!(local.len(), 0);
    }

    #[test]
    fn local_layer_is_bounded_and_evicts_the_oldest() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut local = layer(1000, 3);
        local.insert("a", 1, t0);
        local.insert("b", 2, t0 + ms(1));
        local.insert("c", 3, t0 + ms(2));
        // Rewriting "a" makes it the newest.
        local.insert("a", 10, t0 + ms(3));
        local.insert("d", 4, t0 + ms(4));
        assert_eq!(local.len(), 3);
        let now = t0 + ms(5);
        let present: Vec<_> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|k| local.get(k, now))
            .collect();
        assert_eq!(present, vec![Some(10), None, Some(3), Some(4)]);
        assert_eq!(local.by_expiry.len(), local.entries.len());
    }

    #[test]
    fn expired_entries_make_room_before_live_ones_are_evicted() {
        let t0 = Instant::now();
        let mut local = layer(10, 2);
        local.insert("old", 1, t0);
        local.insert("live", 2, t0 + Duration::from_millis(8));
        local.insert("new", 3, t0 + Duration::from_millis(12));
        let now = t0 + Duration::from_millis(13);
        assert_eq!(local.get("live", now), Some(2));
        assert_eq!(local.get("new", now), Some(3));
        assert_eq!(local.get("old", now), None);
    }

    #[test]
    fn a_zero_capacity_or_ttl_disables_the_local_layer() {
        let t0 = Instant::now();
        for mut local in [layer(0, 10), layer(100, 0)] {
            local.insert("a", 1, t0);
            assert_eq!(local.get("a", t0), None);
        }
    }

    #[test]
    fn a_cluster_url_is_split_into_seed_nodes_with_its_credentials() {
        let cluster = |nodes: &[&str]| {
            Ok(RedisTarget::Cluster(
                nodes.iter().map(|n| (*n).to_owned()).collect(),
            ))
        };
        let check = |url: &str, expected: Result<RedisTarget, &'static str>| {
            assert!(parse_redis_url(url) == expected, "{url}");
        };
        check(
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001/",
            cluster(&["redis://10.0.0.1:7000", "redis://10.0.0.2:7001"]),
        );
        check(
            "redis+cluster://app:s3cret@cache-0:6379,cache-1:6379",
            cluster(&[
                "redis://app:s3cret@cache-0:6379",
                "redis://app:s3cret@cache-1:6379",
            ]),
        );
        check(
            "redis+cluster://[::1]:7000",
            cluster(&["redis://[::1]:7000"]),
        );
        check(
            "redis://cache:6379/2",
            Ok(RedisTarget::Single("redis://cache:6379/2".to_owned())),
        );
    }

    #[test]
    fn settings_come_from_the_environment_and_hide_the_url() {
        let read = |pairs: &[(&str, &str)]| {
            RedisSettings::from_env(&Environment::from_pairs(pairs.iter().copied()))
        };
        assert!(matches!(read(&[]), Ok(None)));
        let settings = read(&[("REDIS_URL", "redis://:hunter2@cache:6379/0")]);
        let settings = settings.ok().flatten();
        assert_eq!(
            settings.as_ref().map(|s| s.timeout),
            Some(Duration::from_millis(200))
        );
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        let custom = read(&[
            ("REDIS_URL", "redis://cache:6379"),
            ("CUSTOPS_REDIS_TIMEOUT_MS", "50"),
        ]);
        assert_eq!(
            custom.ok().flatten().map(|s| s.timeout),
            Some(Duration::from_millis(50))
        );

        let check = |pairs: &[(&str, &str)], var: &str| {
            let error = read(pairs).err();
            assert_eq!(error.as_ref().map(ConfigError::var), Some(var), "{pairs:?}");
            let line = error.map(|e| e.to_string()).unwrap_or_default();
            assert!(!line.contains("hunter2"), "secret leaked: {line}");
        };
        check(&[("REDIS_URL", "http://:hunter2@cache")], "REDIS_URL");
        check(&[("REDIS_URL", "rediss://:hunter2@cache")], "REDIS_URL");
        check(&[("REDIS_URL", "redis://:hunter2@cache:port")], "REDIS_URL");
        check(
            &[("REDIS_URL", "redis://:hunter2@a:7000,b:7001")],
            "REDIS_URL",
        );
        check(
            &[("REDIS_URL", "rediss+cluster://:hunter2@a:7000")],
            "REDIS_URL",
        );
        for bad in [
            "",
            "a:7000,",
            "a:7000,,b:7001",
            "a,b:7001",
            "a:0",
            ":7000",
            "a:7000/1",
            "a:7000?protocol=resp3",
        ] {
            let url = format!("redis+cluster://:hunter2@{bad}");
            check(&[("REDIS_URL", url.as_str())], "REDIS_URL");
        }
        let url = ("REDIS_URL", "redis://:hunter2@cache:6379");
        check(
            &[url, ("CUSTOPS_REDIS_TIMEOUT_MS", "0")],
            "CUSTOPS_REDIS_TIMEOUT_MS",
        );
        check(
            &[url, ("CUSTOPS_REDIS_TIMEOUT_MS", "soon")],
            "CUSTOPS_REDIS_TIMEOUT_MS",
        );
    }
}
