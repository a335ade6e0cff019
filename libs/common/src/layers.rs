//! The tower layers every server runs its calls through, outermost first:
//!
//! 1. [`RequestIdLayer`]: takes the caller's `x-request-id` or makes one, and echoes it back,
//!    so the caller's logs and the call's span (and its log lines, at debug) share one id.
//! 2. [`ObserveLayer`]: the server span (parented on the caller's W3C `traceparent`, and marked
//!    as the work of the service registered for the listener the call came in on, see
//!    `telemetry::register_listener`) and the RPC metrics (`rpc.server.duration` by
//!    `rpc.grpc.status_code`), recorded when the call's status is known, including for streams.
//!    A call whose span nobody would record (no exporter, or a caller's unsampled trace) opens
//!    none, and runs in its bare trace context (`telemetry`, "Spans nobody records cost
//!    nothing"); internal errors and panics still name the trace id, in the log line and to
//!    the caller.
//! 3. [`AuthLayer`]: the bearer token and the method's scope; refusals are cheap and never
//!    take a concurrency slot.
//! 4. [`DeadlineLayer`]: the caller's `grpc-timeout`, capped by the server's maximum (which is
//!    also the deadline of calls that bring none): DEADLINE_EXCEEDED, work dropped. Client
//!    streams are not capped (an import runs as long as it keeps sending).
//! 5. [`LoadShedLayer`]: separate budgets for unary calls, client streams and server streams
//!    (held until the stream ends), each shared out per caller; over a budget a call gets
//!    RESOURCE_EXHAUSTED at once instead of waiting in a queue, and a client stream that goes
//!    quiet is ended. Health and reflection are exempt, so an overloaded pod is not also killed
//!    by its liveness probe.
//! 6. [`crate::request_check`]: every request message checked against its contract (NUL bytes,
//!    nesting, time ranges, malformed bytes) before the handler decodes it.
//! 7. [`CatchPanicLayer`]: a panicking handler becomes INTERNAL for that call only.
//!
//! Each layer is a [`Middleware`]: one async function over the request, so the tower plumbing
//! (`Layer`, `Service`, readiness) is written once, in [`MiddlewareService`].
//!
//! Why not tower's and tower-http's layers: `LoadShed` over `ConcurrencyLimit` is one semaphore
//! released when the response head is ready (no budgets per call kind, no server stream held to
//! the end of its body, no per-caller share, no idle timeout); `tower::timeout` and tonic's own
//! timeout answer an error or CANCELLED, not DEADLINE_EXCEEDED from `grpc-timeout`; tower-http's
//! `SetRequestId` keeps any caller id unchecked; its `CatchPanic` does what ours does, but boxes
//! every response body again.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::{HeaderValue, Request, Response};
use opentelemetry::KeyValue;
use opentelemetry::context::FutureExt as _;
use opentelemetry::metrics::Histogram;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::auth::{Authenticator, Caller};
use crate::{metrics, telemetry, trace_context};

/// The future every middleware returns.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The header carrying the request id, in both directions.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// One concern applied around a call.
pub trait Middleware: Clone + Send + Sync + 'static {
    /// Handles `request`, calling `inner` (already ready) at most once.
    fn handle<S>(
        &self,
        inner: S,
        request: Request<Body>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static;
}

/// Turns a [`Middleware`] into a tower layer.
#[derive(Debug, Clone)]
pub struct MiddlewareLayer<M>(pub M);

impl<M: Clone, S> Layer<S> for MiddlewareLayer<M> {
    type Service = MiddlewareService<M, S>;

    fn layer(&self, inner: S) -> Self::Service {
        MiddlewareService {
            middleware: self.0.clone(),
            inner,
        }
    }
}

/// A service wrapped in a [`Middleware`].
#[derive(Debug, Clone)]
pub struct MiddlewareService<M, S> {
    middleware: M,
    inner: S,
}

impl<M, S> Service<Request<Body>> for MiddlewareService<M, S>
where
    M: Middleware,
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The ready service goes to this call; a fresh clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        self.middleware.handle(inner, request)
    }
}

fn refuse<E>(status: Status) -> BoxFuture<Result<Response<Body>, E>>
where
    E: Send + 'static,
{
    Box::pin(std::future::ready(Ok(status.into_http())))
}

fn is_open_path(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// A fresh request id: a UUIDv7 whose random part comes from a per-thread generator seeded
/// once from the OS, not a system call per call (request ids need to be unique, not secret).
fn new_request_id() -> String {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            uuid::Uuid::new_v4().as_u64_pair().0 | 1,
        );
    }
    let random = STATE.with(|state| {
        // xorshift64*, twice for the 10 random bytes a UUIDv7 carries.
        let next = || {
            let mut x = state.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            state.set(x);
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let (a, b) = (next(), next());
        let mut bytes = [0_u8; 10];
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&b.to_le_bytes()[..2]);
        bytes
    });
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .to_string()
}

/// The request id of a call, in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// See the module docs, layer 1.
pub type RequestIdLayer = MiddlewareLayer<RequestIdMiddleware>;

/// Keeps the caller's `x-request-id` when it is sane (1–128 visible ASCII characters), else
/// makes a UUIDv7.
#[derive(Debug, Clone, Default)]
pub struct RequestIdMiddleware;

impl Middleware for RequestIdMiddleware {
    fn handle<S>(
        &self,
        mut inner: S,
        mut request: Request<Body>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
            })
            .map(str::to_owned)
            .unwrap_or_else(new_request_id);
        let header = HeaderValue::from_str(&id).ok();
        request.extensions_mut().insert(RequestId(id));
        let call = inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            if let Some(header) = header {
                response.headers_mut().insert(REQUEST_ID_HEADER, header);
            }
            Ok(response)
        })
    }
}

/// See the module docs, layer 2.
pub type ObserveLayer = MiddlewareLayer<ObserveMiddleware>;

/// Opens the server span of each call and records its duration and status.
#[derive(Debug, Clone)]
pub struct ObserveMiddleware {
    duration: Histogram<f64>,
}

impl ObserveMiddleware {
    /// Instruments from the global meter provider, so install telemetry first.
    pub fn new() -> Self {
        Self {
            duration: metrics::RPC_SERVER_DURATION.histogram(),
        }
    }
}

impl Default for ObserveMiddleware {
    fn default() -> Self {
        Self::new()
    }
}

impl Middleware for ObserveMiddleware {
    fn handle<S>(
        &self,
        mut inner: S,
        request: Request<Body>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let rpc = RpcName::of(request.uri().path());
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.0.as_str());
        // A malformed or absent traceparent leaves the call as the root of a new trace.
        let mut parent = trace_context::context_from_headers(request.headers());
        if let Some(service) = local_port(&request).and_then(telemetry::listener_service) {
            parent = telemetry::with_service(parent, service);
        }
        // A call nobody records opens no span (see `telemetry`: spans nobody records cost
        // nothing) and runs in its bare trace context; a recorded one runs in its span, and so
        // does every call when logs are at debug, where a call's lines want its request id.
        let open_span = telemetry::records_under(&parent)
            || tracing::enabled!(target: "custops_common::layers", tracing::Level::DEBUG);
        let (span, context) = if open_span {
            let span = tracing::info_span!(
                "grpc.server",
                otel.name = %rpc.full,
                otel.kind = "server",
                otel.status_code = tracing::field::Empty,
                rpc.system = "grpc",
                rpc.service = %rpc.service,
                rpc.method = %rpc.method,
                rpc.grpc.status_code = tracing::field::Empty,
                request_id = request_id.unwrap_or_default(),
            );
            let _ = span.set_parent(parent.clone());
            (span, parent)
        } else {
            (tracing::Span::none(), telemetry::unrecorded(parent))
        };
        let finish = CallFinish {
            span: span.clone(),
            start: Instant::now(),
            duration: self.duration.clone(),
            rpc,
        };
        let call = {
            let _current = context.clone().attach();
            span.in_scope(|| inner.call(request))
        };
        // Dropped unanswered (the client went away, or tonic's own timer fired): CANCELLED.
        let mut unanswered = FinishGuard(Some(finish));
        Box::pin(
            async move {
                let response = call.await?;
                let Some(finish) = unanswered.0.take() else {
                    return Ok(response);
                };
                // Errors answered before any message carry their status in the headers
                // ("trailers-only"); otherwise it arrives in the body's trailers.
                match grpc_status(response.headers()) {
                    Some(code) => {
                        finish.record(code);
                        Ok(response)
                    }
                    None => Ok(response.map(|body| {
                        Body::new(StatusBody::new(body, move |code| finish.record(code)))
                    })),
                }
            }
            .instrument(span)
            .with_context(context),
        )
    }
}

/// An RPC's names for spans and metrics: `package.Service/Method`, `package.Service` and
/// `Method`. The contracts' RPCs are named by static strings (no allocation per call); a path
/// no contract declares is copied.
#[derive(Debug, Clone)]
pub(crate) struct RpcName {
    pub(crate) full: Arc<str>,
    pub(crate) service: Arc<str>,
    pub(crate) method: Arc<str>,
}

impl RpcName {
    pub(crate) fn of(path: &str) -> Self {
        static KNOWN: std::sync::OnceLock<std::collections::HashMap<&'static str, RpcName>> =
            std::sync::OnceLock::new();
        let known = KNOWN.get_or_init(|| {
            custops_contracts::METHOD_SCOPES
                .iter()
                .map(|(path, _)| (*path, Self::split(path)))
                .collect()
        });
        // Cloning shares the strings (reference counts), it copies none.
        known
            .get(path)
            .cloned()
            .unwrap_or_else(|| Self::split(path))
    }

    fn split(path: &str) -> RpcName {
        let full = path.trim_start_matches('/');
        let mut parts = full.splitn(2, '/');
        let service = parts.next().unwrap_or_default();
        let method = parts.next().unwrap_or_default();
        RpcName {
            full: full.into(),
            service: service.into(),
            method: method.into(),
        }
    }
}

/// The local port of the connection a call arrived on (plain or TLS).
fn local_port(request: &Request<Body>) -> Option<u16> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::local_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().local_addr())
        })
        .map(|addr| addr.port())
}

/// The `grpc-status` of a response's headers or trailers.
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map(Code::from)
}

/// What is recorded once a call's status is known.
struct CallFinish {
    /// The server span, or none when the call is not recorded.
    span: tracing::Span,
    start: Instant,
    duration: Histogram<f64>,
    rpc: RpcName,
}

impl CallFinish {
    fn record(self, code: Code) {
        let elapsed_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        self.span.record("rpc.grpc.status_code", code as i32);
        if is_server_fault(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        // On the stack, sharing the RPC's names: nothing allocated per call.
        let attributes = [
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", self.rpc.service),
            KeyValue::new("rpc.method", self.rpc.method),
            KeyValue::new("rpc.grpc.status_code", i64::from(code as i32)),
        ];
        self.duration.record(elapsed_ms, &attributes);
        let _entered = self.span.enter();
        tracing::debug!(code = ?code, elapsed_ms, "call finished");
    }
}

/// Records CANCELLED for a call whose future was dropped before it answered.
struct FinishGuard(Option<CallFinish>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if let Some(finish) = self.0.take() {
            finish.record(Code::Cancelled);
        }
    }
}

/// Codes that mean the server failed, per the OpenTelemetry gRPC conventions.
fn is_server_fault(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// A response body that reports the call's status when its trailers pass by, or CANCELLED
/// when the other side went away first. The server span and metrics use it, and so does the
/// client span of outgoing calls (`client.rs`).
pub(crate) struct StatusBody {
    inner: Body,
    on_status: Option<Box<dyn FnOnce(Code) + Send + Sync>>,
}

impl StatusBody {
    /// `inner`, calling `on_status` once with the call's status.
    pub(crate) fn new(inner: Body, on_status: impl FnOnce(Code) + Send + Sync + 'static) -> Self {
        Self {
            inner,
            on_status: Some(Box::new(on_status)),
        }
    }

    fn finish(&mut self, code: Code) {
        if let Some(on_status) = self.on_status.take() {
            on_status(code);
        }
    }
}

impl http_body::Body for StatusBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_status(trailers).unwrap_or(Code::Unknown);
                    this.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => this.finish(status.code()),
            Poll::Ready(None) => this.finish(Code::Unknown),
            Poll::Pending => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for StatusBody {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

/// See the module docs, layer 3.
pub type AuthLayer = MiddlewareLayer<AuthMiddleware>;

/// Checks the bearer token against the method's scope and hands the [`Caller`] to handlers.
#[derive(Debug, Clone)]
pub struct AuthMiddleware {
    authenticator: Arc<Authenticator>,
}

impl AuthMiddleware {
    /// Enforces `authenticator`.
    pub fn new(authenticator: Authenticator) -> Self {
        Self {
            authenticator: Arc::new(authenticator),
        }
    }
}

impl Middleware for AuthMiddleware {
    fn handle<S>(
        &self,
        mut inner: S,
        mut request: Request<Body>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        match self
            .authenticator
            .authorize(request.uri().path(), authorization)
        {
            Ok(caller) => {
                tracing::Span::current().record("caller", caller.service.as_str());
                request.extensions_mut().insert::<Caller>(caller);
                Box::pin(inner.call(request))
            }
            Err(error) => {
                tracing::info!(%error, "call refused");
                refuse(Status::new(error.code(), error.to_string()))
            }
        }
    }
}

/// See the module docs, layer 4.
pub type DeadlineLayer = MiddlewareLayer<DeadlineMiddleware>;

/// Enforces the caller's `grpc-timeout`, capped at `max`.
#[derive(Debug, Clone)]
pub struct DeadlineMiddleware {
    max: Duration,
}

impl DeadlineMiddleware {
    /// Calls never run longer than `max`.
    pub fn new(max: Duration) -> Self {
        Self { max }
    }
}

impl Middleware for DeadlineMiddleware {
    fn handle<S>(
        &self,
        mut inner: S,
        request: Request<Body>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        // tonic's transport also honours `grpc-timeout`, outside these layers, and answers
        // CANCELLED when it fires; answering a little earlier gives the caller (and the
        // metrics) the right code, DEADLINE_EXCEEDED, unless a loaded scheduler lets tonic's
        // timer win the race. Calls without the header are bounded by this layer alone.
        let asked = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|asked| asked.saturating_sub(DEADLINE_MARGIN));
        // A client stream (bulk import) may run past the cap for as long as it keeps sending:
        // the load-shed layer's idle timeout bounds it instead. Its caller's own deadline
        // still holds.
        let deadline = match CallKind::of(request.uri().path()) {
            CallKind::ClientStream => asked,
            CallKind::Unary | CallKind::ServerStream => {
                Some(asked.map_or(self.max, |asked| asked.min(self.max)))
            }
        };
        let call = inner.call(request);
        Box::pin(async move {
            let Some(deadline) = deadline else {
                return call.await;
            };
            match tokio::time::timeout(deadline, call).await {
                Ok(result) => result,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the call did not finish within its deadline of {deadline:?}"
                ))
                .into_http()),
            }
        })
    }
}

/// How much earlier than the caller's deadline this layer answers (see its `handle`).
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// See the module docs, layer 5.
pub type LoadShedLayer = MiddlewareLayer<LoadShedMiddleware>;

/// What kind of call a method makes, from the contracts' streaming flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// One request, one response (and methods this server does not know).
    Unary,
    /// A stream of requests (bulk imports, uploads).
    ClientStream,
    /// A stream of responses (feeds, member streams).
    ServerStream,
}

impl CallKind {
    /// The kind of the method at `path` (`/package.Service/Method`).
    pub fn of(path: &str) -> Self {
        if custops_contracts::CLIENT_STREAMING_METHODS.contains(&path) {
            CallKind::ClientStream
        } else if custops_contracts::SERVER_STREAMING_METHODS.contains(&path) {
            CallKind::ServerStream
        } else {
            CallKind::Unary
        }
    }
}

/// The budgets of [`LoadShedMiddleware`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBudgets {
    /// Unary calls in progress at once.
    pub unary: usize,
    /// Client streams open at once (each held until its handler answers).
    pub client_streams: usize,
    /// Server streams open at once (each held until the stream ends).
    pub server_streams: usize,
    /// The share of each budget one caller may hold, in percent (at least one call).
    pub caller_share_percent: usize,
    /// A client stream that sends no message for this long is ended with
    /// DEADLINE_EXCEEDED, and its slot freed.
    pub client_stream_idle_timeout: Duration,
}

/// One budget: how many calls of a kind may be in progress, in total and per caller.
#[derive(Debug)]
struct Budget {
    name: &'static str,
    limit: usize,
    per_caller: usize,
    held: std::sync::Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    /// Slots held per caller, keyed by a hash of who the caller is ([`budget_caller`]), so the
    /// hot path allocates nothing to count them.
    by_caller: std::collections::HashMap<u64, usize>,
}

impl Budget {
    fn new(name: &'static str, limit: usize, share_percent: usize) -> Arc<Self> {
        let limit = limit.max(1);
        Arc::new(Self {
            name,
            limit,
            per_caller: (limit * share_percent.clamp(1, 100) / 100).max(1),
            held: std::sync::Mutex::new(Held::default()),
        })
    }

    /// A slot for `caller`, or why there is none.
    fn take(self: &Arc<Self>, caller: u64) -> Result<Slot, Status> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.total >= self.limit {
            return Err(Status::resource_exhausted(format!(
                "the server is at its limit of {} {}; retry with backoff",
                self.limit, self.name
            )));
        }
        let mine = held.by_caller.get(&caller).copied().unwrap_or(0);
        if mine >= self.per_caller {
            return Err(Status::resource_exhausted(format!(
                "this caller holds its share of {} of the server's {} {}; retry with backoff",
                self.per_caller, self.limit, self.name
            )));
        }
        held.total += 1;
        held.by_caller.insert(caller, mine + 1);
        Ok(Slot {
            budget: Arc::clone(self),
            caller,
        })
    }
}

/// A call's place in a budget, given back when dropped.
struct Slot {
    budget: Arc<Budget>,
    caller: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .budget
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.total = held.total.saturating_sub(1);
        if let Some(count) = held.by_caller.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                held.by_caller.remove(&self.caller);
            }
        }
    }
}

/// Admits calls within separate budgets for unary calls, client streams and server streams,
/// each also shared out per caller, and refuses the rest at once with RESOURCE_EXHAUSTED
/// (never a queue). So idle streams cannot starve unary calls, nor one caller everyone else.
#[derive(Debug, Clone)]
pub struct LoadShedMiddleware {
    unary: Arc<Budget>,
    client_streams: Arc<Budget>,
    server_streams: Arc<Budget>,
    idle_timeout: Duration,
    refused: opentelemetry::metrics::Counter<u64>,
}

impl LoadShedMiddleware {
    /// Budgets as given (each at least 1).
    pub fn new(budgets: CallBudgets) -> Self {
        let share = budgets.caller_share_percent;
        Self {
            unary: Budget::new("concurrent unary calls", budgets.unary, share),
            client_streams: Budget::new("open client streams", budgets.client_streams, share),
            server_streams: Budget::new("open server streams", budgets.server_streams, share),
            idle_timeout: budgets.client_stream_idle_timeout,
            refused: metrics::RPC_SERVER_REFUSED.counter(),
        }
    }
}

/// Who a budget share belongs to, as a hash: the authenticated service, else (auth disabled)
/// the peer's IP address.
fn budget_caller(request: &Request<Body>) -> u64 {
    use std::hash::{Hash, Hasher};
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    if let Some(caller) = request.extensions().get::<Caller>()
        && caller.service != crate::auth::ANONYMOUS_SERVICE
    {
        ("service", caller.service.as_str()).hash(&mut hasher);
        return hasher.finish();
    }
    let extensions = request.extensions();
    let ip = extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
        .map(|addr| addr.ip());
    ("ip", ip).hash(&mut hasher);
    hasher.finish()
}

impl Middleware for LoadShedMiddleware {
    fn handle<S>(
        &self,
        mut inner: S,
        request: Request<Body>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let path = request.uri().path();
        if is_open_path(path) {
            return Box::pin(inner.call(request));
        }
        let kind = CallKind::of(path);
        let budget = match kind {
            CallKind::Unary => &self.unary,
            CallKind::ClientStream => &self.client_streams,
            CallKind::ServerStream => &self.server_streams,
        };
        let slot = match budget.take(budget_caller(&request)) {
            Ok(slot) => slot,
            Err(status) => {
                // Counted, not logged per call: under overload a log line per refusal would
                // itself be the overload.
                let rpc = RpcName::of(path);
                self.refused.add(
                    1,
                    &[
                        KeyValue::new("budget", budget.name),
                        KeyValue::new("rpc.service", rpc.service),
                        KeyValue::new("rpc.method", rpc.method),
                    ],
                );
                tracing::debug!(budget = budget.name, "over budget: call shed");
                return refuse(status);
            }
        };
        let request = match kind {
            CallKind::ClientStream => {
                let timeout = self.idle_timeout;
                request.map(|body| Body::new(IdleTimeoutBody::new(body, timeout)))
            }
            CallKind::Unary | CallKind::ServerStream => request,
        };
        let call = inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            Ok(match kind {
                // A server stream keeps its slot until the stream ends or is dropped.
                CallKind::ServerStream => response.map(|body| {
                    Body::new(SlotBody {
                        inner: body,
                        _slot: slot,
                    })
                }),
                // Unary calls and client streams are done once the handler has answered.
                CallKind::Unary | CallKind::ClientStream => {
                    drop(slot);
                    response
                }
            })
        })
    }
}

/// A response body that holds its call's budget slot for as long as it lives.
struct SlotBody {
    inner: Body,
    _slot: Slot,
}

impl http_body::Body for SlotBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails with DEADLINE_EXCEEDED when no frame arrives for `timeout`, so a
/// client stream that goes quiet ends and frees its slot, while one that keeps sending may
/// run as long as it sends.
struct IdleTimeoutBody {
    inner: Body,
    timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimeoutBody {
    fn new(inner: Body, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            idle: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl http_body::Body for IdleTimeoutBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                        "the request stream sent nothing for {:?}; it was ended",
                        this.timeout
                    )))));
                }
                Poll::Pending
            }
            ready => {
                let deadline = tokio::time::Instant::now() + this.timeout;
                this.idle.as_mut().reset(deadline);
                ready
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// See the module docs, layer 6.
pub type CatchPanicLayer = MiddlewareLayer<CatchPanicMiddleware>;

/// Answers INTERNAL for a call whose handler panicked; the server and other calls go on.
#[derive(Debug, Clone, Default)]
pub struct CatchPanicMiddleware;

impl Middleware for CatchPanicMiddleware {
    fn handle<S>(
        &self,
        mut inner: S,
        request: Request<Body>,
    ) -> BoxFuture<Result<Response<Body>, S::Error>>
    where
        S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
    {
        let call = match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
            Ok(call) => call,
            Err(panic) => return refuse(panic_status(&*panic)),
        };
        Box::pin(async move {
            match AssertUnwindSafe(call).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => Ok(panic_status(&*panic).into_http()),
            }
        })
    }
}

fn panic_status(panic: &(dyn std::any::Any + Send)) -> Status {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    let trace_id = trace_context::current_trace_id();
    tracing::error!(panic = %message, trace_id = %trace_id.as_deref().unwrap_or("-"), "handler panicked");
    Status::internal(match trace_id {
        Some(id) => format!("internal error (trace id {id})"),
        None => "internal error".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_uuidv7s() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(10) {
            let parsed = uuid::Uuid::parse_str(id).ok();
            assert_eq!(parsed.map(|u| u.get_version_num()), Some(7), "{id}");
        }
    }

    #[test]
    fn rpc_names_come_from_the_path() {
        let known = RpcName::of("/custops.loyalty.v1.LoyaltyService/EarnPoints");
        assert_eq!(&*known.full, "custops.loyalty.v1.LoyaltyService/EarnPoints");
        assert_eq!(&*known.service, "custops.loyalty.v1.LoyaltyService");
        assert_eq!(&*known.method, "EarnPoints");
        let unknown = RpcName::of("/some.Other/Thing");
        assert_eq!(
            (&*unknown.service, &*unknown.method),
            ("some.Other", "Thing")
        );
    }

    #[test]
    fn grpc_timeouts_parse_per_the_spec() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
