//! Serving a service: bind first (so tests can ask for port 0 and learn the port), then run the
//! service's APIs next to gRPC health and reflection until a shutdown signal, then drain.
//! Every call passes the shared tower layers of [`crate::layers`] (request id, span and
//! metrics, auth, deadline, load shedding, panic catching), and TLS / mTLS when configured.
//!
//! Shutdown order: the signal flips every health status to NOT_SERVING (so load balancers and
//! Kubernetes stop sending new calls), tonic stops accepting connections and lets in-flight
//! calls finish, and after the grace period whatever is still running is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{Authenticator, ScopePolicy};
use crate::config::ServerSettings;
use crate::handshake::with_handshake_deadline;
use crate::layers::{
    AuthMiddleware, CallBudgets, CatchPanicMiddleware, DeadlineMiddleware, LoadShedMiddleware,
    MiddlewareLayer, ObserveMiddleware, RequestIdMiddleware,
};
use crate::request_check::RequestCheckMiddleware;
use crate::service::ServiceKind;

/// Largest request or response message a service accepts or sends, set explicitly on every
/// server so a big batch fails with RESOURCE_EXHAUSTED instead of an unbounded allocation.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Failure while serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("could not bind the gRPC listener on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The reflection service could not read the descriptor set (a build defect).
    #[error("could not build the reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The TLS settings were refused (bad certificate or key).
    #[error("the TLS configuration is invalid")]
    Tls(#[source] tonic::transport::Error),
    /// The transport failed while serving.
    #[error("the gRPC server failed")]
    Transport(#[source] tonic::transport::Error),
}

/// A service ready to run: its listener is bound and its APIs registered, but nothing is
/// served until [`Application::run_until_stopped`].
pub struct Application {
    settings: ServerSettings,
    listener: tokio::net::TcpListener,
    health_listener: Option<tokio::net::TcpListener>,
    local_addr: SocketAddr,
    routes: RoutesBuilder,
    api_names: Vec<&'static str>,
    draining: CancellationToken,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("service", &self.settings.service)
            .field("local_addr", &self.local_addr)
            .field("api_names", &self.api_names)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Binds `addr` now, so the port is known (and taken) before the service starts serving.
    pub async fn bind(settings: &ServerSettings) -> Result<Self, ServeError> {
        let addr = settings.listen_addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let health_listener = match settings.health_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Bind { addr, source })?,
            ),
            None => None,
        };
        Ok(Self {
            settings: settings.clone(),
            listener,
            health_listener,
            local_addr,
            routes: RoutesBuilder::default(),
            api_names: Vec::new(),
            draining: CancellationToken::new(),
        })
    }

    /// Registers one gRPC API. Health reports it and reflection describes it.
    pub fn add_api<S>(mut self, api: S) -> Self
    where
        S: tower_service::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.routes.add_service(api);
        self.api_names.push(S::NAME);
        self
    }

    /// The address actually bound (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the plaintext health-only listener, when there is one.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// Which service this is.
    pub fn service(&self) -> ServiceKind {
        self.settings.service
    }

    /// Cancelled the moment draining starts. Long-lived work tied to the server (event feed
    /// streams) ends on it, so it does not hold the drain until the grace period runs out.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// Serves until `shutdown` completes, then drains as described in the module docs.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let (health, health_api) = tonic_health::server::health_reporter();
        // Only now, with pools connected and migrations applied by `build`, do we report
        // SERVING; the empty name is the whole server's status.
        set_status(&health, &self.api_names, ServingStatus::Serving).await;

        let mut routes = self.routes;
        routes.add_service(health_api.clone());
        // Probes that cannot speak TLS get health alone, in plaintext, on its own port. It
        // keeps answering (NOT_SERVING) while the main server drains, and stops after it.
        let health_stop = CancellationToken::new();
        let _stop_health_when_done = health_stop.clone().drop_guard();
        if let Some(listener) = self.health_listener {
            let stopped = health_stop.clone();
            let service = self.settings.service;
            tokio::spawn(async move {
                let incoming = TcpIncoming::from(listener);
                let served = tonic::transport::Server::builder()
                    .add_service(health_api)
                    .serve_with_incoming_shutdown(incoming, stopped.cancelled_owned())
                    .await;
                if let Err(error) = served {
                    tracing::error!(%service, %error, "the health listener failed");
                }
            });
        }
        add_reflection(&mut routes, &self.api_names)?;

        let service = self.settings.service;
        let draining = self.draining.clone();
        let signal = {
            let draining = draining.clone();
            let health = health.clone();
            let api_names = self.api_names.clone();
            async move {
                shutdown.await;
                tracing::info!(%service, "shutdown requested: draining in-flight calls");
                set_status(&health, &api_names, ServingStatus::NotServing).await;
                draining.cancel();
            }
        };

        if !self.settings.auth.is_enabled() {
            tracing::warn!(
                %service,
                "AUTHENTICATION IS DISABLED: every caller may call every RPC (CUSTOPS_AUTH_MODE=disabled). Never run like this outside a laptop or test."
            );
        }
        let policy = ScopePolicy::for_service(service, &self.api_names);
        // Outermost first; see crate::layers for why this order.
        let layers = tower::ServiceBuilder::new()
            .layer(MiddlewareLayer(RequestIdMiddleware))
            .layer(MiddlewareLayer(ObserveMiddleware::new()))
            .layer(MiddlewareLayer(AuthMiddleware::new(Authenticator::new(
                &self.settings.auth,
                policy,
            ))))
            .layer(MiddlewareLayer(DeadlineMiddleware::new(
                self.settings.max_call_timeout,
            )))
            .layer(MiddlewareLayer(LoadShedMiddleware::new(CallBudgets {
                unary: self.settings.max_concurrent_calls,
                client_streams: self.settings.max_client_streams,
                server_streams: self.settings.max_server_streams,
                caller_share_percent: self.settings.caller_share_percent,
                client_stream_idle_timeout: self.settings.client_stream_idle_timeout,
            })))
            .layer(MiddlewareLayer(RequestCheckMiddleware))
            .layer(MiddlewareLayer(CatchPanicMiddleware))
            .into_inner();

        let mut server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(self.settings.keepalive_interval))
            .http2_keepalive_timeout(Some(self.settings.keepalive_timeout))
            .tcp_keepalive(Some(Duration::from_secs(60)));
        if let Some(tls) = &self.settings.tls {
            server = server
                .tls_config(tls.to_config())
                .map_err(ServeError::Tls)?;
        }
        // A socket that never starts HTTP/2 is closed after the handshake timeout.
        let incoming = with_handshake_deadline(
            TcpIncoming::from(self.listener).with_nodelay(Some(true)),
            self.settings.handshake_timeout,
        );
        tracing::info!(
            %service,
            addr = %self.local_addr,
            tls = self.settings.tls.is_some(),
            mtls = self.settings.tls.as_ref().is_some_and(|tls| tls.client_ca.is_some()),
            "serving gRPC"
        );
        let serve = server
            .layer(layers)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, signal);

        let grace = self.settings.shutdown_grace;
        tokio::select! {
            result = serve => result.map_err(ServeError::Transport),
            () = async { draining.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(%service, ?grace, "grace period over: dropping unfinished calls");
                Ok(())
            }
        }
    }
}

/// Serves reflection in both protocol versions (grpcurl and `buf curl` speak v1, older tools
/// v1alpha), describing health and this server's own APIs.
fn add_reflection(
    routes: &mut RoutesBuilder,
    api_names: &[&'static str],
) -> Result<(), ServeError> {
    let configure = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(custops_contracts::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        // The descriptor set holds every custops service; list only the ones served here.
        api_names
            .iter()
            .fold(builder, |builder, name| builder.with_service_name(*name))
    };
    routes
        .add_service(configure().build_v1().map_err(ServeError::Reflection)?)
        .add_service(
            configure()
                .build_v1alpha()
                .map_err(ServeError::Reflection)?,
        );
    Ok(())
}

async fn set_status(health: &HealthReporter, api_names: &[&'static str], status: ServingStatus) {
    health.set_service_status("", status).await;
    for name in api_names {
        health.set_service_status(*name, status).await;
    }
}
