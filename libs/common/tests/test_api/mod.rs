//! A stand-in API for testing the server runtime: it implements the shared
//! `EventFeedService` contract (so the real generated server, scope table and layers apply),
//! and its `GetFeedPosition` does what the `x-test` metadata asks: sleep, hold until the test
//! releases it (telling the test it has started, see [`Held`]), panic, report the caller, or
//! call the next server (one service-to-service hop). Its `Subscribe` sends one empty response,
//! then stays open until the client goes away.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses part of it"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use custops_common::auth::Caller;
use custops_common::client::ServiceChannel;
use custops_common::config::ServerSettings;
use custops_common::server::Application;
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use custops_contracts::custops::common::v1::event_feed_service_server::{
    EventFeedService, EventFeedServiceServer,
};
use custops_contracts::custops::common::v1::{
    GetFeedPositionRequest, GetFeedPositionResponse, SubscribeRequest, SubscribeResponse,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// The full path the auth layer sees for the test RPC.
pub const POSITION_PATH: &str = "/custops.common.v1.EventFeedService/GetFeedPosition";

/// How long a test waits for the server side to reach a state before it fails (it never
/// waits that long unless the behaviour under test is broken).
pub const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct TestApi {
    /// Answered in the `x-server` response metadata, to tell replicas apart.
    pub name: String,
    /// Where "hop" calls go.
    pub peer: Option<ServiceChannel>,
    /// The `hold` calls of this API (and of every clone the server makes of it).
    pub held: Held,
}

impl TestApi {
    /// An API answering as `name`, with no peer.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            peer: None,
            held: Held::default(),
        }
    }

    /// The same API, sending its "hop" calls to `peer`.
    pub fn calling(self, peer: ServiceChannel) -> Self {
        Self {
            peer: Some(peer),
            ..self
        }
    }
}

/// The calls doing `hold`: each counts as in flight from the moment its handler starts until
/// it answers or the server drops it, and answers once the test calls [`Held::release`]. So a
/// test knows its slow calls have started, and decides when they end, instead of sleeping.
#[derive(Debug, Clone)]
pub struct Held {
    in_flight: Arc<tokio::sync::watch::Sender<usize>>,
    release: CancellationToken,
}

impl Default for Held {
    fn default() -> Self {
        Self {
            in_flight: Arc::new(tokio::sync::watch::Sender::new(0)),
            release: CancellationToken::new(),
        }
    }
}

impl Held {
    /// How many held calls are in their handler now.
    pub fn in_flight(&self) -> usize {
        *self.in_flight.borrow()
    }

    /// Waits until exactly `count` held calls are in their handler; fails after [`PATIENCE`].
    pub async fn wait_for_in_flight(&self, count: usize) -> anyhow::Result<()> {
        let mut seen = self.in_flight.subscribe();
        match tokio::time::timeout(PATIENCE, seen.wait_for(|n| *n == count)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => anyhow::bail!("the held calls' counter is gone"),
            Err(_) => anyhow::bail!(
                "{} held calls in flight after {PATIENCE:?}, expected {count}",
                self.in_flight()
            ),
        }
    }

    /// Lets every held call, now and later, answer.
    pub fn release(&self) {
        self.release.cancel();
    }

    async fn hold(&self) {
        let _in_flight = InFlight::enter(&self.in_flight);
        self.release.cancelled().await;
    }
}

/// One held call in its handler; counted out when it answers or is dropped.
struct InFlight(Arc<tokio::sync::watch::Sender<usize>>);

impl InFlight {
    fn enter(counter: &Arc<tokio::sync::watch::Sender<usize>>) -> Self {
        counter.send_modify(|n| *n += 1);
        Self(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// The stream the test `Subscribe` answers with.
pub type OpenStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventFeedService for TestApi {
    async fn subscribe(
        &self,
        _request: Request<SubscribeRequest>,
    ) -> Result<Response<OpenStream>, Status> {
        use futures_util::StreamExt;
        let first = futures_util::stream::once(async { Ok(SubscribeResponse::default()) });
        Ok(Response::new(Box::pin(
            first.chain(futures_util::stream::pending()),
        )))
    }

    async fn get_feed_position(
        &self,
        request: Request<GetFeedPositionRequest>,
    ) -> Result<Response<GetFeedPositionResponse>, Status> {
        let action = request
            .metadata()
            .get("x-test")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let caller = request
            .extensions()
            .get::<Caller>()
            .map(|c| c.service.clone())
            .unwrap_or_else(|| "<none>".to_owned());
        if let Some(ms) = action.strip_prefix("sleep:") {
            let ms: u64 = ms.parse().map_err(|_| Status::invalid_argument("x-test"))?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        } else if action == "hold" {
            self.held.hold().await;
        } else if action == "panic" {
            panic!("the test handler panics on purpose");
        } else if action == "hop" {
            let peer = self
                .peer
                .clone()
                .ok_or_else(|| Status::failed_precondition("no peer"))?;
            EventFeedServiceClient::new(peer)
                .get_feed_position(GetFeedPositionRequest {})
                .await?;
        }
        let mut response = Response::new(GetFeedPositionResponse {
            oldest_sequence: 0,
            latest_sequence: 7,
        });
        if let Ok(value) = caller.parse() {
            response.metadata_mut().insert("x-caller", value);
        }
        if let Ok(value) = self.name.parse() {
            response.metadata_mut().insert("x-server", value);
        }
        Ok(response)
    }
}

/// A running test server.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    /// Serves `api` with `settings` (the real layers, auth and TLS) until `stop`.
    pub async fn start(settings: &ServerSettings, api: TestApi) -> anyhow::Result<Self> {
        let app = Application::bind(settings)
            .await?
            .add_api(EventFeedServiceServer::new(api));
        let addr = app.local_addr();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                app.run_until_stopped(stop.cancelled_owned()).await?;
                Ok(())
            }
        });
        Ok(Self { addr, stop, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

/// A request for the test RPC doing `action`.
pub fn request(action: &str) -> Request<GetFeedPositionRequest> {
    let mut request = Request::new(GetFeedPositionRequest {});
    if let Ok(value) = action.parse() {
        request.metadata_mut().insert("x-test", value);
    }
    request
}

/// A plain channel to `addr`.
pub async fn plain_client(
    addr: SocketAddr,
) -> anyhow::Result<EventFeedServiceClient<tonic::transport::Channel>> {
    Ok(EventFeedServiceClient::connect(format!("http://{addr}")).await?)
}
