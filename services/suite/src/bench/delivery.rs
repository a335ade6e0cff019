//! Whether every write a benchmark had answered reached a subscriber of its service's feed,
//! once, and how long after its answer: the feed rows' "commit → subscriber" delay and their
//! exactly-once check.
//!
//! A write's delay runs from its answer (which leaves after the commit) to its event's arrival
//! at a `Subscribe` stream opened at the feed's end before the writes began; it is zero when the
//! event came first. Writes and events are matched by an id both carry (a ledger entry, an
//! activity, a response), unique across services.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use custops_contracts::custops::common::v1::{GetFeedPositionRequest, SubscribeRequest};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::load::Samples;
use super::report::Row;

/// The goal of every feed-delay row: p99 under this many milliseconds.
const DELAY_GOAL_MS: f64 = 100.0;

/// How long [`finish`] waits for the events of the writes answered.
const PATIENCE: Duration = Duration::from_secs(10);

/// The writes answered and the events delivered, matched by id.
#[derive(Debug, Default)]
pub struct Deliveries {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Ids with one side seen: `true` when answered (event awaited), `false` when delivered
    /// (answer awaited), with the instant.
    waiting: HashMap<String, (bool, Instant)>,
    /// Ids with both sides seen.
    matched: HashSet<String>,
    delays: Samples,
    /// Events of an id already delivered.
    duplicates: usize,
}

impl Deliveries {
    /// A write with this id was answered.
    pub fn answered(&self, id: String) {
        self.seen(id, true);
    }

    /// An event with this id arrived.
    fn delivered(&self, id: String) {
        self.seen(id, false);
    }

    fn seen(&self, id: String, answered: bool) {
        let now = Instant::now();
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.matched.contains(&id) {
            state.duplicates += 1;
            return;
        }
        match state.waiting.remove(&id) {
            Some((other_answered, at)) if other_answered != answered => {
                let (answer, arrival) = if answered { (now, at) } else { (at, now) };
                state.delays.push(arrival.saturating_duration_since(answer));
                state.matched.insert(id);
            }
            // The same side twice: an event delivered twice before its answer came.
            Some(first) => {
                state.duplicates += 1;
                state.waiting.insert(id, first);
            }
            None => {
                state.waiting.insert(id, (answered, now));
            }
        }
    }

    /// Writes answered whose event has not arrived.
    fn awaited(&self) -> usize {
        self.state.lock().map_or(0, |state| {
            state
                .waiting
                .values()
                .filter(|(answered, _)| *answered)
                .count()
        })
    }
}

/// A subscriber reporting one event type of one feed to [`Deliveries`].
#[derive(Debug)]
pub struct Follower {
    what: String,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Subscribes to the feed served at `channel` from its current end, for events of
/// `event_type`, and reports the id `id_of` finds in each payload to `deliveries`.
pub async fn follow(
    channel: Channel,
    event_type: String,
    id_of: fn(&[u8]) -> anyhow::Result<Option<String>>,
    deliveries: Arc<Deliveries>,
) -> anyhow::Result<Follower> {
    let mut feed = EventFeedServiceClient::new(channel);
    let after = feed
        .get_feed_position(GetFeedPositionRequest {})
        .await
        .with_context(|| format!("GetFeedPosition before following {event_type} failed"))?
        .into_inner()
        .latest_sequence;
    let mut stream = feed
        .subscribe(SubscribeRequest {
            after_sequence: after,
            event_types: vec![event_type.clone()],
            max_batch_size: 0,
            consumer: String::new(),
        })
        .await
        .with_context(|| format!("Subscribe to {event_type} failed"))?
        .into_inner();
    let what = event_type.clone();
    let task = tokio::spawn(async move {
        while let Some(response) = stream
            .message()
            .await
            .with_context(|| format!("the feed of {event_type} failed"))?
        {
            for event in response.events {
                let payload = event.payload.map(|any| any.value).unwrap_or_default();
                if let Some(id) = id_of(&payload)? {
                    deliveries.delivered(id);
                }
            }
        }
        anyhow::Ok(())
    });
    Ok(Follower { what, task })
}

/// Waits up to 10 s for the events of every write answered, stops the followers and returns
/// the delays; fails when an event is missing, came twice, or a feed ended.
pub async fn finish(
    followers: Vec<Follower>,
    deliveries: &Deliveries,
    what: &str,
) -> anyhow::Result<Samples> {
    let started = Instant::now();
    while deliveries.awaited() > 0
        && started.elapsed() < PATIENCE
        && !followers.iter().any(|f| f.task.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for follower in followers {
        if follower.task.is_finished() {
            follower.task.await.context("a feed follower panicked")??;
            anyhow::bail!("{what}: the feed of {} ended", follower.what);
        }
        follower.task.abort();
    }
    let awaited = deliveries.awaited();
    let state = deliveries
        .state
        .lock()
        .map_err(|_| anyhow::anyhow!("a delivery recorder panicked"))?;
    anyhow::ensure!(
        awaited == 0 && state.duplicates == 0,
        "{what}: {awaited} writes answered never reached the feed's subscriber within \
         {PATIENCE:?}, {} events arrived twice",
        state.duplicates
    );
    Ok(state.delays.clone())
}

/// A feed-delay row `name`: the p99 of `loaded` (the delays under load) against that of
/// `idle` (writes sent one at a time), goal under 100 ms; `params` gains how many delays each
/// side has and the idle p50.
pub fn delay_row(
    name: &str,
    loaded: &mut Samples,
    idle: &mut Samples,
    mut params: serde_json::Value,
) -> Row {
    let p99 = loaded.quantile_ms(0.99).unwrap_or(f64::NAN);
    if let Some(params) = params.as_object_mut() {
        params.insert("delays".to_owned(), loaded.len().into());
        params.insert("baseline_delays".to_owned(), idle.len().into());
        params.insert("baseline_p50_ms".to_owned(), idle.quantile_ms(0.5).into());
    }
    Row::new(
        name,
        "ms (p99)",
        p99,
        idle.quantile_ms(0.99).unwrap_or(f64::NAN),
    )
    .custops_below(DELAY_GOAL_MS)
    .latency(loaded.quantile_ms(0.5), Some(p99))
    .params(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_doubled_event_is_found_and_delays_are_matched() -> anyhow::Result<()> {
        let deliveries = Deliveries::default();
        deliveries.answered("a".to_owned());
        deliveries.delivered("a".to_owned());
        // The event before the answer: delay zero.
        deliveries.delivered("b".to_owned());
        deliveries.answered("b".to_owned());
        // Delivered twice.
        deliveries.delivered("a".to_owned());
        // Never delivered.
        deliveries.answered("c".to_owned());

        let state = deliveries
            .state
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        assert_eq!(state.delays.len(), 2);
        assert_eq!(state.duplicates, 1);
        drop(state);
        assert_eq!(deliveries.awaited(), 1);
        Ok(())
    }
}
