//! Sample data for a newcomer's first look: `custops demo`, and `custops dev` loading it into
//! an empty database. The data itself is `custops_profiles::demo`; this module runs it and
//! says how far it is, because a load takes tens of seconds and segmentation takes minutes
//! more to follow it ([`catch_up`]).
//!
//! Progress is written as plain lines every few seconds, not as a redrawn bar (`indicatif`):
//! under `custops dev` they share stderr with four services' logs, which would tear a bar
//! apart, and off a terminal (`make run | tee`, CI, a container's log) a bar draws nothing, so
//! lines would be needed anyway. One kind of output serves both.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use custops_common::auth::AuthSettings;
use custops_common::client::{ClientBuilder, ServiceChannel};
use custops_contracts::custops::profiles::v1::profiles_service_client::ProfilesServiceClient;
use custops_contracts::custops::profiles::v1::{CustomerFilter, ListCustomersRequest};
use custops_profiles::demo::DemoSummary;
use http_body::{Frame, SizeHint};
use tonic::body::Body;
use tower::ServiceExt as _;

pub mod catch_up;

/// How many customers `custops dev` loads into an empty database.
pub const DEV_CUSTOMERS: usize = 2000;

/// How often a load in progress is reported.
pub const REPORT_EVERY: Duration = Duration::from_secs(3);

/// How far a load has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadProgress {
    /// Customers sent to profiles so far (each is answered before the next is sent).
    pub customers: usize,
    /// Customers the load will create.
    pub of: usize,
    /// Activities sent to profiles so far (imported in batches of up to 5,000).
    pub activities: u64,
}

impl std::fmt::Display for LoadProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sample data: {} of {} customers, {} activities sent",
            self.customers, self.of, self.activities
        )
    }
}

/// What the load has sent, counted as it passes through the channel.
#[derive(Debug, Default)]
struct Sent {
    customers: AtomicUsize,
    activities: AtomicU64,
}

/// Loads `customers` sample customers into profiles through `channel`, calling `report` with
/// the progress every `every`, and once more with the whole load when it is done.
pub async fn load(
    channel: ServiceChannel,
    customers: usize,
    every: Duration,
    mut report: impl FnMut(LoadProgress),
) -> anyhow::Result<DemoSummary> {
    let sent = Arc::new(Sent::default());
    let mut client = ProfilesServiceClient::new(counting(channel, Arc::clone(&sent)));
    let load = custops_profiles::demo::load(&mut client, customers);
    tokio::pin!(load);
    let progress = || LoadProgress {
        customers: sent.customers.load(Ordering::Relaxed),
        of: customers,
        activities: sent.activities.load(Ordering::Relaxed),
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            summary = &mut load => {
                if summary.is_ok() {
                    report(progress());
                }
                return summary;
            }
            _ = ticks.tick() => report(progress()),
        }
    }
}

/// `channel`, counting the customers created and the activities imported through it. The
/// loader is another crate's and reports only when done; its calls are the one place its
/// progress shows.
fn counting(channel: ServiceChannel, sent: Arc<Sent>) -> ServiceChannel {
    ServiceChannel::new(channel.map_request(move |request: http::Request<Body>| {
        let path = request.uri().path();
        if path.ends_with("/CreateCustomer") {
            sent.customers.fetch_add(1, Ordering::Relaxed);
            request
        } else if path.ends_with("/ImportActivities") {
            let sent = Arc::clone(&sent);
            request.map(|body| Body::new(CountMessages::new(body, sent)))
        } else {
            request
        }
    }))
}

/// A request body that counts the gRPC messages passing through it: each is framed as a
/// flag byte and a 4-byte big-endian length, then the message.
struct CountMessages {
    inner: Body,
    sent: Arc<Sent>,
    header: [u8; 5],
    header_filled: usize,
    /// Bytes of the current message still to pass.
    message_left: u64,
}

impl CountMessages {
    fn new(inner: Body, sent: Arc<Sent>) -> Self {
        Self {
            inner,
            sent,
            header: [0; 5],
            header_filled: 0,
            message_left: 0,
        }
    }

    fn count(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.message_left > 0 {
                let skipped = usize::try_from(self.message_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                data = &data[skipped..];
                self.message_left -= skipped as u64;
                continue;
            }
            let taken = (self.header.len() - self.header_filled).min(data.len());
            self.header[self.header_filled..self.header_filled + taken]
                .copy_from_slice(&data[..taken]);
            self.header_filled += taken;
            data = &data[taken..];
            if self.header_filled == self.header.len() {
                let [_, a, b, c, d] = self.header;
                self.message_left = u64::from(u32::from_be_bytes([a, b, c, d]));
                self.header_filled = 0;
                self.sent.activities.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl http_body::Body for CountMessages {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count(data);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A channel to profiles at `url` for the loader, with a token for its calls when `auth` is on.
fn profiles_channel(
    url: &str,
    caller: &str,
    auth: &AuthSettings,
) -> anyhow::Result<ServiceChannel> {
    Ok(ClientBuilder::new(url.to_owned(), caller)
        .auth(auth, &["profiles.read", "profiles.write"])
        .timeout(Duration::from_secs(120))
        .build()?)
}

/// `custops demo`: loads `customers` sample customers into the profiles service at `url`,
/// printing its progress and what it stored.
#[allow(clippy::print_stdout, reason = "CLI output")]
pub async fn run(url: &str, auth: &AuthSettings, customers: usize) -> anyhow::Result<()> {
    let channel = profiles_channel(url, "custops-demo", auth)?;
    println!("loading {customers} sample customers into {url} …");
    let summary = load(channel, customers, REPORT_EVERY, |progress| {
        println!("{progress}");
    })
    .await?;
    println!(
        "{} customers; {} activities stored, {} already there. Segmentation follows them \
         through the profiles feed in the background (`custops dev` logs how far it is)",
        summary.customers, summary.activities_accepted, summary.activities_duplicate
    );
    Ok(())
}

/// Loads the demo data when the profiles service at `url` holds no customer at all, so a
/// newcomer's first `make run` has something to look at; logs its progress.
pub async fn seed_if_empty(url: String, auth: AuthSettings) {
    let seeded = async {
        let channel = profiles_channel(&url, "custops-dev", &auth)?;
        let mut client = ProfilesServiceClient::new(channel.clone());
        let any = client
            .list_customers(ListCustomersRequest {
                filter: Some(CustomerFilter {
                    // Every state, merged and erased customers included.
                    states: (1..=4).collect(),
                    ..Default::default()
                }),
                page_size: 1,
                page_token: String::new(),
            })
            .await
            .context("Failed to look for customers")?
            .into_inner();
        if !any.customers.is_empty() {
            return anyhow::Ok(None);
        }
        tracing::info!(
            customers = DEV_CUSTOMERS,
            "empty database: loading sample data (custops demo; --no-sample-data skips it)"
        );
        let summary = load(channel, DEV_CUSTOMERS, REPORT_EVERY, |progress| {
            tracing::info!(
                customers = progress.customers,
                activities = progress.activities,
                "{progress}"
            );
        })
        .await?;
        Ok(Some(summary))
    };
    match seeded.await {
        Ok(Some(summary)) => tracing::info!(
            customers = summary.customers,
            activities = summary.activities_accepted,
            "sample data loaded: {} customers, {} activities; segmentation follows them \
             through the profiles feed (progress below)",
            summary.customers,
            summary.activities_accepted
        ),
        Ok(None) => {}
        Err(error) => tracing::warn!(error = format!("{error:#}"), "could not load sample data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gRPC frames of messages with these lengths.
    fn frames(lengths: &[u32]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (index, length) in lengths.iter().enumerate() {
            bytes.push(0);
            bytes.extend_from_slice(&length.to_be_bytes());
            bytes.extend(std::iter::repeat_n(
                u8::try_from(index % 250).unwrap_or(0),
                usize::try_from(*length).unwrap_or(0),
            ));
        }
        bytes
    }

    /// Messages counted when `bytes` arrive in chunks of `chunk` bytes.
    fn counted(bytes: &[u8], chunk: usize) -> u64 {
        let sent = Arc::new(Sent::default());
        let mut body = CountMessages::new(Body::empty(), Arc::clone(&sent));
        for piece in bytes.chunks(chunk) {
            body.count(piece);
        }
        sent.activities.load(Ordering::Relaxed)
    }

    #[test]
    fn messages_are_counted_however_the_frames_are_cut() {
        // Lengths that look like headers (0, and bytes of value 0 inside a message) must not
        // count twice.
        let bytes = frames(&[0, 7, 300, 0, 1, 70_000, 5]);
        for chunk in [1, 2, 4, 5, 6, 7, 64, 1000, bytes.len()] {
            assert_eq!(counted(&bytes, chunk), 7, "chunks of {chunk}");
        }
        // A header cut before its end counts once it is whole.
        assert_eq!(counted(&bytes[..4], 1), 0);
        assert_eq!(counted(&frames(&[3])[..5], 5), 1);
    }

    #[test]
    fn progress_reads_as_a_line() {
        let progress = LoadProgress {
            customers: 640,
            of: 2000,
            activities: 4812,
        };
        assert_eq!(
            progress.to_string(),
            "sample data: 640 of 2000 customers, 4812 activities sent"
        );
    }
}
