//! The load generator: N HTTP/2 connections used round-robin, and two ways of loading them.
//!
//! - **Closed loop** ([`closed_loop`]): C workers, each sending its next call when the previous
//!   one returns. Measures the most a server answers at that concurrency.
//! - **Open loop** ([`open_loop`]): calls sent on a fixed schedule whatever the server does,
//!   each call's latency counted from its *scheduled* send time, so a server (or generator)
//!   that falls behind shows as latency instead of silently sending fewer calls (coordinated
//!   omission). The schedule is kept by a plain thread sleeping to each send time, because the
//!   runtime's timer ticks in whole milliseconds, longer than the latencies measured here.
//!
//! Both warm up first and count only calls that end (closed loop) or are scheduled (open
//! loop) inside the measured window.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

/// One call in flight.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>>;

/// Makes one call over the channel; the number is random, for choosing what to ask.
pub type MakeCall = Arc<dyn Fn(Channel, u64) -> CallFuture + Send + Sync>;

/// Connections to one server, handed out round-robin call by call.
#[derive(Debug)]
pub struct Connections {
    channels: Vec<Channel>,
    next: AtomicUsize,
}

impl Connections {
    /// Opens `count` connections to `addr` (each `Endpoint::connect` is its own TCP
    /// connection), with Nagle off like the servers.
    pub async fn open(addr: SocketAddr, count: usize) -> anyhow::Result<Arc<Self>> {
        Self::spread(&[addr], count).await
    }

    /// Opens `count` connections over the servers at `addrs` in turn (connection `i` to
    /// `addrs[i % len]`), so calls handed out round-robin go to each server evenly: replicas
    /// of one service behind a client-side balancer.
    pub async fn spread(addrs: &[SocketAddr], count: usize) -> anyhow::Result<Arc<Self>> {
        anyhow::ensure!(!addrs.is_empty(), "no server to connect to");
        let mut channels = Vec::with_capacity(count);
        for i in 0..count.max(1) {
            let addr = addrs[i % addrs.len()];
            let channel = Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("Failed to connect to {addr}"))?;
            channels.push(channel);
        }
        Ok(Arc::new(Self {
            channels,
            next: AtomicUsize::new(0),
        }))
    }

    /// How many connections there are.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether there are none (never: `open` makes at least one).
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The next connection in turn.
    pub fn pick(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }
}

/// Warm-up, then the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Load before measuring.
    pub warmup: Duration,
    /// The measured time.
    pub measure: Duration,
}

/// Latencies, in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    nanos: Vec<u64>,
    sorted: bool,
}

impl Samples {
    /// Adds one latency.
    pub fn push(&mut self, latency: Duration) {
        self.nanos
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    /// Adds another run's latencies (rows made of several runs).
    pub fn extend(&mut self, other: Samples) {
        self.nanos.extend(other.nanos);
        self.sorted = false;
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.nanos.is_empty()
    }

    /// The `p` quantile (0–1) in milliseconds, nearest rank; `None` without samples.
    pub fn quantile_ms(&mut self, p: f64) -> Option<f64> {
        if self.nanos.is_empty() {
            return None;
        }
        if !self.sorted {
            self.nanos.sort_unstable();
            self.sorted = true;
        }
        let rank = (p.clamp(0.0, 1.0) * self.nanos.len() as f64).ceil() as usize;
        let index = rank.saturating_sub(1).min(self.nanos.len() - 1);
        Some(self.nanos[index] as f64 / 1e6)
    }
}

/// What the calls of one run came back with.
#[derive(Debug, Default, Clone)]
pub struct Measured {
    /// The measured window.
    pub window: Duration,
    /// Latencies of the calls answered OK.
    pub ok: Samples,
    /// Latencies of the calls refused with RESOURCE_EXHAUSTED (load shedding).
    pub refused: Samples,
    /// Other failures by gRPC code.
    pub errors: BTreeMap<String, u64>,
    /// The message of one of those failures, to show.
    pub first_error: Option<String>,
    /// Open loop: calls the schedule asked for in the window.
    pub offered: u64,
    /// Open loop: calls actually sent in the window (fewer than scheduled when the generator
    /// or its in-flight limit cannot keep the schedule).
    pub sent: u64,
    /// Open loop: how late each call was sent after its scheduled time (the generator's own
    /// lag: a busy machine or a full in-flight limit).
    pub lag: Samples,
}

impl Measured {
    fn record(&mut self, latency: Duration, result: Result<(), tonic::Status>) {
        match result {
            Ok(()) => self.ok.push(latency),
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                self.refused.push(latency);
            }
            Err(status) => {
                *self
                    .errors
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{:?}: {}", status.code(), status.message()));
                }
            }
        }
    }

    fn merge(&mut self, other: Measured) {
        self.ok.extend(other.ok);
        self.refused.extend(other.refused);
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.offered += other.offered;
        self.sent += other.sent;
        self.lag.extend(other.lag);
    }

    /// Calls answered OK per second of the window.
    pub fn ok_per_sec(&self) -> f64 {
        self.ok.len() as f64 / self.window.as_secs_f64()
    }

    /// Open loop: calls actually sent per second of the window.
    pub fn sent_per_sec(&self) -> f64 {
        self.sent as f64 / self.window.as_secs_f64()
    }

    /// Calls refused per second of the window.
    pub fn refused_per_sec(&self) -> f64 {
        self.refused.len() as f64 / self.window.as_secs_f64()
    }

    /// Failures other than refusals.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Fails when any call failed or was refused: a run meant to be clean that was not is a
    /// broken benchmark, not a figure.
    pub fn expect_clean(&self, what: &str) -> anyhow::Result<()> {
        if self.error_count() > 0 || !self.refused.is_empty() {
            anyhow::bail!(
                "{what}: {} calls failed ({:?}) and {} were refused; first failure: {}",
                self.error_count(),
                self.errors,
                self.refused.len(),
                self.first_error.as_deref().unwrap_or("RESOURCE_EXHAUSTED"),
            );
        }
        if self.ok.is_empty() {
            anyhow::bail!("{what}: no call completed in the measured window");
        }
        Ok(())
    }
}

/// A small, fast pseudo-random generator (SplitMix64): the load needs spread, not secrecy,
/// and no crate for it.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `bound` (which must be positive).
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound.max(1) as u64) as usize
    }
}

/// `concurrency` workers each send a call as soon as their previous one returns, for the
/// warm-up and the window; the calls that end inside the window are counted.
pub async fn closed_loop(
    connections: &Arc<Connections>,
    concurrency: usize,
    window: Window,
    call: &MakeCall,
) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let measure_until = measure_from + window.measure;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency.max(1) {
        let (connections, call) = (connections.clone(), call.clone());
        let mut rng = Rng::new(0x5EED ^ ((worker as u64) << 32));
        workers.spawn(async move {
            let mut measured = Measured::default();
            loop {
                let sent = Instant::now();
                if sent >= measure_until {
                    break;
                }
                let result = call(connections.pick(), rng.next_u64()).await;
                let done = Instant::now();
                if done >= measure_from && done <= measure_until {
                    measured.record(done - sent, result);
                }
            }
            measured
        });
    }
    let mut total = Measured {
        window: window.measure,
        ..Measured::default()
    };
    while let Some(worker) = workers.join_next().await {
        total.merge(worker.context("a load worker panicked")?);
    }
    Ok(total)
}

/// Where an open-loop call's latency starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyFrom {
    /// Its scheduled send time: what a caller on that schedule waits, queueing included
    /// (the generator's own lag too).
    Schedule,
    /// Its actual send time: the server's answer time alone, when the generator cannot keep
    /// the schedule (overload on a machine the server shares).
    Send,
}

/// Sends `rate` calls per second on a fixed schedule for the warm-up and the window, at most
/// `max_in_flight` at once (a call over that waits for a slot, which counts in its lag).
/// Counts, like the closed loop, the calls that end inside the window, latency measured
/// `from` where asked; calls still waiting to be sent when the window closes are dropped.
pub async fn open_loop(
    connections: &Arc<Connections>,
    rate: f64,
    window: Window,
    max_in_flight: usize,
    from: LatencyFrom,
    call: &MakeCall,
) -> anyhow::Result<Measured> {
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "open loop rate must be positive, not {rate}"
    );
    // The schedule starts a moment from now so the first sends are not already late.
    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + window.warmup;
    let measure_until = measure_from + window.measure;
    let (schedule, mut due) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".to_owned())
        .spawn(move || {
            let mut scheduled_in_window = 0u64;
            for k in 0u64.. {
                let at = start + Duration::from_secs_f64(k as f64 / rate);
                if at >= measure_until {
                    break;
                }
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                if schedule.send(at).is_err() {
                    break;
                }
                scheduled_in_window += u64::from(at >= measure_from);
            }
            scheduled_in_window
        })
        .context("Failed to start the pacing thread")?;

    let measured = Arc::new(Mutex::new(Measured {
        window: window.measure,
        ..Measured::default()
    }));
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut rng = Rng::new(0x0BE7_100B);
    while let Some(at) = due.recv().await {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .context("the in-flight limit closed")?;
        if Instant::now() >= measure_until {
            // A backlog the generator could not send in time: nothing of it would be counted.
            break;
        }
        let (connections, call, measured) = (connections.clone(), call.clone(), measured.clone());
        let pick = rng.next_u64();
        tokio::spawn(async move {
            let sent = Instant::now();
            let result = call(connections.pick(), pick).await;
            let done = Instant::now();
            drop(slot);
            let origin = match from {
                LatencyFrom::Schedule => at,
                LatencyFrom::Send => sent,
            };
            let sent_in_window = sent >= measure_from && sent <= measure_until;
            let done_in_window = done >= measure_from && done <= measure_until;
            if (sent_in_window || done_in_window)
                && let Ok(mut measured) = measured.lock()
            {
                measured.sent += u64::from(sent_in_window);
                if done_in_window {
                    measured.lag.push(sent.saturating_duration_since(at));
                    measured.record(done - origin, result);
                }
            }
        });
    }
    drop(due);
    let scheduled_in_window = pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    // Every slot back means every call has ended.
    let all = u32::try_from(max_in_flight.max(1)).unwrap_or(u32::MAX);
    tokio::time::timeout(Duration::from_secs(60), slots.acquire_many(all))
        .await
        .context("calls still in flight a minute after the window")?
        .context("the in-flight limit closed")?
        .forget();
    let mut measured = measured
        .lock()
        .map_err(|_| anyhow::anyhow!("a call task panicked while recording"))?
        .clone();
    measured.offered = scheduled_in_window;
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(millis: &[u64]) -> Samples {
        let mut samples = Samples::default();
        for ms in millis {
            samples.push(Duration::from_millis(*ms));
        }
        samples
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut hundred = samples(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(hundred.quantile_ms(0.5), Some(50.0));
        assert_eq!(hundred.quantile_ms(0.99), Some(99.0));
        assert_eq!(hundred.quantile_ms(1.0), Some(100.0));
        assert_eq!(samples(&[7]).quantile_ms(0.99), Some(7.0));
        assert_eq!(Samples::default().quantile_ms(0.5), None);
    }

    #[test]
    fn refusals_and_errors_are_kept_apart() {
        let mut measured = Measured {
            window: Duration::from_secs(2),
            ..Measured::default()
        };
        measured.record(Duration::from_millis(1), Ok(()));
        measured.record(Duration::from_millis(1), Ok(()));
        measured.record(
            Duration::from_millis(1),
            Err(tonic::Status::resource_exhausted("busy")),
        );
        measured.record(
            Duration::from_millis(1),
            Err(tonic::Status::unavailable("gone")),
        );
        assert_eq!(measured.ok_per_sec(), 1.0);
        assert_eq!(measured.refused.len(), 1);
        assert_eq!(measured.error_count(), 1);
        assert!(measured.expect_clean("test").is_err());
    }

    #[test]
    fn the_generator_spreads() {
        let mut rng = Rng::new(1);
        let mut seen = [0usize; 10];
        for _ in 0..10_000 {
            seen[rng.below(10)] += 1;
        }
        assert!(seen.iter().all(|n| (800..1200).contains(n)), "{seen:?}");
    }
}
