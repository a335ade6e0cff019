//! Channels to other custops services.
//!
//! Every generated client in the suite is built over a [`ServiceChannel`], so code that calls
//! another service (or follows its event feed) does not depend on how the channel was made.
//! [`ClientBuilder`] makes one with everything a service-to-service call needs:
//!
//! - a per-call deadline (sent as `grpc-timeout`, enforced by the server too) and a connect
//!   timeout;
//! - TLS / mTLS from [`crate::tls::ClientTls`];
//! - a bearer token naming the calling service and the scopes it asked for, minted locally and
//!   renewed before it expires;
//! - the W3C `traceparent` of the current span, in a `grpc.client` span, so the callee's work
//!   joins the caller's trace; the span carries the OpenTelemetry RPC attributes, the call's
//!   `rpc.grpc.status_code` (from the trailers, or from the transport failure) and the
//!   `server.address` / `server.port` of the URL the channel was built for;
//! - DNS-based balancing: the host is resolved to every address (a Kubernetes headless Service
//!   answers one per ready pod) and re-resolved periodically; calls are spread over the
//!   healthy ones (tower's power-of-two-choices balancer inside tonic).
//!
//! Retries are not automatic: only the caller knows whether a call is idempotent (a read, or a
//! mutation carrying a `request_id`). [`retry_idempotent`] retries such calls on UNAVAILABLE
//! with exponential backoff and jitter, within the call's overall deadline.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use tonic::Code;
use tonic::body::Body;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};
use tower::Service;
use tracing::Instrument;

use crate::auth::{AuthSettings, TokenIssuer};
use crate::config::ClientSettings;
use crate::layers::{RpcName, StatusBody, grpc_status};
use crate::service::ServiceKind;
use crate::tls::ClientTls;
use crate::{metrics, telemetry, trace_context};

/// A cloneable channel to one service, usable by any generated tonic client
/// (`FooServiceClient::new(channel)`).
///
/// Its error type is tonic's concrete transport error rather than a boxed one: with a boxed
/// error, calls made inside a `#[tonic::async_trait]` handler fail to prove `Send`.
pub type ServiceChannel =
    tower::util::BoxCloneSyncService<Request<Body>, Response<Body>, tonic::transport::Error>;

/// Wraps a plain tonic channel (no token, no trace injection) as a [`ServiceChannel`]; tests
/// and tools use it, services use the builder.
pub fn plain(channel: Channel) -> ServiceChannel {
    ServiceChannel::new(channel)
}

/// Turns a host and port into the addresses to balance over. The default asks DNS; tests give
/// their own.
pub type Resolver = Arc<
    dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The DNS resolver (the system's, through Tokio).
pub fn dns_resolver() -> Resolver {
    Arc::new(|host: String, port: u16| {
        Box::pin(async move {
            tokio::net::lookup_host((host.as_str(), port))
                .await
                .map(Iterator::collect)
        })
    })
}

/// How long minted tokens live; they are renewed at half-life.
const TOKEN_TTL: Duration = Duration::from_secs(300);

/// Failure to set up a channel.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http(s)://host:port`.
    #[error("`{0}` is not a usable service URL (http://host:port or https://host:port)")]
    Url(String),
    /// No URL is configured for the service.
    #[error("no address configured for {0}: set CUSTOPS_{upper}_URL", upper = .0.name().to_ascii_uppercase())]
    NotConfigured(ServiceKind),
    /// TLS settings were refused.
    #[error("invalid TLS settings for {0}")]
    Tls(String, #[source] tonic::transport::Error),
}

/// Builds a [`ServiceChannel`] to one service.
#[derive(Clone)]
pub struct ClientBuilder {
    url: String,
    resolver: Resolver,
    caller: String,
    scopes: Vec<String>,
    issuer: Option<TokenIssuer>,
    tls: Option<ClientTls>,
    timeout: Duration,
    connect_timeout: Duration,
    resolve_every: Duration,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("caller", &self.caller)
            .field("scopes", &self.scopes)
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A channel to `url` (`http://host:port`, `https://host:port`) on behalf of `caller`.
    /// Defaults: 5 s per call, 2 s to connect, re-resolve DNS every 15 s, no token, no TLS.
    pub fn new(url: impl Into<String>, caller: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            resolver: dns_resolver(),
            caller: caller.into(),
            scopes: Vec::new(),
            issuer: None,
            tls: None,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            resolve_every: Duration::from_secs(15),
        }
    }

    /// A channel from `settings.caller` to `target`, with the suite's TLS and auth settings,
    /// asking for `scopes` in its token.
    pub fn for_peer(
        settings: &ClientSettings,
        target: ServiceKind,
        scopes: &[&str],
    ) -> Result<Self, ClientError> {
        let url = settings
            .peers
            .get(&target)
            .ok_or(ClientError::NotConfigured(target))?;
        Ok(Self::new(url.clone(), settings.caller.name())
            .auth(&settings.auth, scopes)
            .tls(settings.tls.clone()))
    }

    /// Sends tokens minted per `auth` with these scopes (nothing when auth is disabled).
    pub fn auth(mut self, auth: &AuthSettings, scopes: &[&str]) -> Self {
        self.issuer = TokenIssuer::from_settings(auth);
        self.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Uses TLS (required for `https://` URLs).
    pub fn tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Deadline of each call, unless the call sets its own (`Request::set_timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long to wait for a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How often the host name is re-resolved for balancing.
    pub fn resolve_every(mut self, every: Duration) -> Self {
        self.resolve_every = every;
        self
    }

    /// Resolves host names with `resolver` instead of DNS.
    pub fn resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// The channel. Connections are made lazily, so a service may start before its peers.
    /// Must be called inside a Tokio runtime (the resolver runs as a task, and stops when every
    /// clone of the channel is dropped).
    pub fn build(self) -> Result<ServiceChannel, ClientError> {
        let url = url::Url::parse(&self.url).map_err(|_| ClientError::Url(self.url.clone()))?;
        let host = url
            .host_str()
            .ok_or_else(|| ClientError::Url(self.url.clone()))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| ClientError::Url(self.url.clone()))?;
        let use_tls = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(ClientError::Url(self.url.clone())),
        };
        if use_tls && self.tls.is_none() {
            return Err(ClientError::Url(format!(
                "{} (https needs CUSTOPS_TLS_CA_FILE)",
                self.url
            )));
        }

        let endpoint_for = {
            let builder = self.clone();
            let host = host.clone();
            move |addr: SocketAddr| -> Result<Endpoint, ClientError> {
                let scheme = if use_tls { "https" } else { "http" };
                let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
                    .map_err(|_| ClientError::Url(builder.url.clone()))?
                    .connect_timeout(builder.connect_timeout)
                    .timeout(builder.timeout)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_while_idle(true);
                match (&builder.tls, use_tls) {
                    // The certificate names the service, not the pod's address.
                    (Some(tls), true) => endpoint
                        .tls_config(tls.to_config(&host))
                        .map_err(|error| ClientError::Tls(builder.url.clone(), error)),
                    _ => Ok(endpoint),
                }
            }
        };

        let channel = match host.parse::<std::net::IpAddr>() {
            // A literal address: one endpoint, nothing to resolve.
            Ok(ip) => endpoint_for(SocketAddr::new(ip, port))?.connect_lazy(),
            Err(_) => {
                let (channel, changes) = Channel::balance_channel::<SocketAddr>(64);
                tokio::spawn(
                    resolve_loop(
                        Arc::clone(&self.resolver),
                        host.clone(),
                        port,
                        self.resolve_every,
                        changes,
                        Arc::new(endpoint_for),
                    )
                    .instrument(tracing::debug_span!("dns_balancer", %host, port)),
                );
                channel
            }
        };

        let outgoing = Outgoing {
            inner: channel,
            server_address: Arc::from(host.as_str()),
            server_port: port,
            duration: metrics::RPC_CLIENT_DURATION.histogram(),
            tokens: self.issuer.map(|issuer| {
                Arc::new(TokenCache {
                    issuer,
                    caller: self.caller,
                    scopes: self.scopes,
                    current: Mutex::new(None),
                })
            }),
        };
        Ok(ServiceChannel::new(outgoing))
    }
}

/// Keeps the balancer's endpoint set equal to what DNS answers for `host`, until the channel
/// is gone.
async fn resolve_loop<F>(
    resolver: Resolver,
    host: String,
    port: u16,
    every: Duration,
    changes: tokio::sync::mpsc::Sender<Change<SocketAddr, Endpoint>>,
    endpoint_for: Arc<F>,
) where
    F: Fn(SocketAddr) -> Result<Endpoint, ClientError> + Send + Sync + 'static,
{
    let mut current = BTreeSet::new();
    loop {
        match resolver(host.clone(), port).await {
            Ok(addrs) => {
                let resolved: BTreeSet<SocketAddr> = addrs.into_iter().collect();
                for gone in current.difference(&resolved) {
                    if changes.send(Change::Remove(*gone)).await.is_err() {
                        return;
                    }
                }
                for new in resolved.difference(&current) {
                    match endpoint_for(*new) {
                        Ok(endpoint) => {
                            if changes.send(Change::Insert(*new, endpoint)).await.is_err() {
                                return;
                            }
                        }
                        Err(error) => tracing::warn!(%error, addr = %new, "endpoint refused"),
                    }
                }
                if resolved != current {
                    tracing::debug!(addresses = resolved.len(), "service addresses changed");
                }
                current = resolved;
            }
            // Keep the last good set: a DNS hiccup must not empty the balancer.
            Err(error) => tracing::warn!(%error, "resolving the service failed"),
        }
        if changes.is_closed() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

/// Mints and caches the bearer token of outgoing calls.
#[derive(Debug)]
struct TokenCache {
    issuer: TokenIssuer,
    caller: String,
    scopes: Vec<String>,
    current: Mutex<Option<(HeaderValue, Instant)>>,
}

impl TokenCache {
    fn header(&self) -> Option<HeaderValue> {
        let mut current = self.current.lock().ok()?;
        if let Some((header, renew_at)) = current.as_ref()
            && Instant::now() < *renew_at
        {
            return Some(header.clone());
        }
        let scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        match self.issuer.mint(&self.caller, &scopes, TOKEN_TTL) {
            Ok(token) => {
                let header = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
                *current = Some((header.clone(), Instant::now() + TOKEN_TTL / 2));
                Some(header)
            }
            Err(error) => {
                tracing::error!(%error, "could not mint a service token");
                None
            }
        }
    }
}

/// The channel's own layer: token, trace context and the client span.
#[derive(Debug, Clone)]
struct Outgoing {
    inner: Channel,
    /// The host of the channel's URL (a name, not the resolved pod address: the logical
    /// server, as the OpenTelemetry conventions ask).
    server_address: Arc<str>,
    server_port: u16,
    tokens: Option<Arc<TokenCache>>,
    duration: opentelemetry::metrics::Histogram<f64>,
}

impl Service<Request<Body>> for Outgoing {
    type Response = Response<Body>;
    type Error = tonic::transport::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<Body>, tonic::transport::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The contracts' names, shared: nothing is allocated for them per call.
        let rpc = RpcName::of(request.uri().path());
        // Like the server span: none when nobody would record it (see `telemetry`).
        let span = if telemetry::records_under(&opentelemetry::Context::current()) {
            tracing::info_span!(
                "grpc.client",
                otel.name = %rpc.full,
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                rpc.system = "grpc",
                rpc.service = %rpc.service,
                rpc.method = %rpc.method,
                rpc.grpc.status_code = tracing::field::Empty,
                server.address = %self.server_address,
                server.port = self.server_port,
            )
        } else {
            tracing::Span::none()
        };
        let finish = ClientCall {
            span: span.clone(),
            start: Instant::now(),
            rpc,
            duration: self.duration.clone(),
        };
        span.in_scope(|| trace_context::inject_current(request.headers_mut()));
        if let Some(header) = self.tokens.as_ref().and_then(|tokens| tokens.header()) {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, header);
        }
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(
            async move {
                match ready.call(request).await {
                    Ok(response) => match grpc_status(response.headers()) {
                        // Trailers-only: the call failed before any message.
                        Some(code) => {
                            finish.record(code);
                            Ok(response)
                        }
                        // Otherwise the status comes in the trailers, after the messages.
                        None => Ok(response.map(|body| {
                            Body::new(StatusBody::new(body, move |code| finish.record(code)))
                        })),
                    },
                    Err(error) => {
                        finish.record(transport_code(&error));
                        Err(error)
                    }
                }
            }
            .instrument(span),
        )
    }
}

/// What is recorded once an outgoing call's status is known: on its client span (per the
/// OpenTelemetry gRPC conventions every code but OK makes a client span an error) and in
/// `rpc.client.duration`.
struct ClientCall {
    span: tracing::Span,
    start: Instant,
    rpc: RpcName,
    duration: opentelemetry::metrics::Histogram<f64>,
}

impl ClientCall {
    fn record(self, code: Code) {
        self.span.record("rpc.grpc.status_code", code as i32);
        if code != Code::Ok {
            self.span.record("otel.status_code", "ERROR");
        }
        let caller = metrics::current_service().map_or("unknown", ServiceKind::name);
        self.duration.record(
            self.start.elapsed().as_secs_f64() * 1000.0,
            &[
                opentelemetry::KeyValue::new(metrics::SERVICE, caller),
                opentelemetry::KeyValue::new("rpc.system", "grpc"),
                opentelemetry::KeyValue::new("rpc.service", self.rpc.service),
                opentelemetry::KeyValue::new("rpc.method", self.rpc.method),
                opentelemetry::KeyValue::new("rpc.grpc.status_code", i64::from(code as i32)),
            ],
        );
    }
}

/// The status a caller sees for a call the transport failed, as tonic derives it: a status
/// in the error's chain, CANCELLED for the channel's timeout, UNAVAILABLE when no connection
/// could be made, UNKNOWN otherwise.
fn transport_code(error: &tonic::transport::Error) -> Code {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(status) = error.downcast_ref::<tonic::Status>() {
            return status.code();
        }
        if error.is::<tonic::TimeoutExpired>() {
            return Code::Cancelled;
        }
        if error.is::<tonic::ConnectError>() {
            return Code::Unavailable;
        }
        source = error.source();
    }
    Code::Unknown
}

/// How a failed call or connection is tried again: the suite's one retry policy, used by
/// [`retry_idempotent`], the feed consumer's reconnections, the feed listener and the
/// database's start-up probe. Exponential backoff with jitter (`backon`'s): each delay is
/// the current backoff plus a random part of it, so replicas that failed together do not
/// all come back at the same instant.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (`u32::MAX`: no limit).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled each time, plus up to as much jitter.
    pub initial_backoff: Duration,
    /// Upper bound of one backoff (before its jitter).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// A policy that never gives up: for reconnecting loops that end only on shutdown.
    pub const fn forever(initial_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            max_attempts: u32::MAX,
            initial_backoff,
            max_backoff,
        }
    }

    /// The delays before each retry, in order; ends after `max_attempts - 1` of them.
    pub fn delays(&self) -> backon::ExponentialBackoff {
        let builder = backon::ExponentialBuilder::new()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_jitter();
        let builder = match self.max_attempts {
            u32::MAX => builder.without_max_times(),
            attempts => builder.with_max_times(attempts.saturating_sub(1) as usize),
        };
        backon::BackoffBuilder::build(builder)
    }
}

/// Runs `call` again while it fails with UNAVAILABLE (the server never saw the call, or could
/// not serve it), up to the policy's attempts. Only for idempotent calls: reads, and mutations
/// whose `request_id` makes a replay harmless.
pub async fn retry_idempotent<T, F, Fut>(policy: RetryPolicy, call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    use backon::Retryable as _;
    call.retry(policy.delays())
        .when(|status| status.code() == tonic::Code::Unavailable)
        .notify(|status, delay| {
            tracing::debug!(
                ?delay,
                message = status.message(),
                "retrying an idempotent call"
            );
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_bound_with_jitter_and_stop_after_the_attempts() {
        let policy = RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
        };
        for _ in 0..50 {
            let delays: Vec<Duration> = policy.delays().collect();
            // Five retries after the first attempt: 100, 200, 400, 400, 400 ms, each plus up
            // to as much again of jitter.
            let bases = [100, 200, 400, 400, 400].map(Duration::from_millis);
            assert_eq!(delays.len(), bases.len(), "{delays:?}");
            for (delay, base) in delays.iter().zip(bases) {
                assert!(
                    *delay >= base && *delay <= base * 2,
                    "{delay:?} for {base:?}"
                );
            }
        }
    }

    #[test]
    fn a_policy_forever_never_runs_out_of_delays() {
        let policy = RetryPolicy::forever(Duration::from_millis(1), Duration::from_millis(8));
        let delays: Vec<Duration> = policy.delays().take(1000).collect();
        assert_eq!(delays.len(), 1000);
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(16)));
    }
}
