//! Every feed consumer of the suite registers with its producer, so the producer's retention
//! keeps what it has not applied, and reads its lag there over gRPC; and each one's handler
//! resyncs when its position has been pruned.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use custops_common::client;
use custops_common::clock::{Clock, SystemClock};
use custops_common::consumer::{Consumer, ConsumerOptions, EventHandler, load_cursor};
use custops_common::retention;
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use custops_contracts::custops::common::v1::{GetFeedPositionRequest, ListFeedConsumersRequest};
use custops_e2e::{PROPAGATION, TestSuite, eventually};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn every_consumer_of_the_suite_registers_with_its_producer_and_acknowledges()
-> anyhow::Result<()> {
    // Arrange: the suite, and an event on the profiles feed, which three services follow.
    let suite = TestSuite::start().await?;
    let mut clients = suite.clients().await?;
    clients.create_customer("feeds@example.com").await?;
    let profiles = EventFeedServiceClient::new(suite.channel(ServiceKind::Profiles).await?);
    let sequenced = eventually(PROPAGATION, || {
        let mut profiles = profiles.clone();
        async move {
            let position = profiles
                .get_feed_position(GetFeedPositionRequest {})
                .await?;
            Ok(position.into_inner().latest_sequence >= 1)
        }
    })
    .await;
    assert!(sequenced, "the customer's event never got a feed position");

    // Act / Assert: each producer lists its consumers by name, and they catch up to its newest
    // event, the customer's on profiles (they acknowledge within seconds of applying it).
    let expected: [(ServiceKind, &[&str]); 3] = [
        (
            ServiceKind::Profiles,
            &["feedback", "loyalty", "segmentation"],
        ),
        (ServiceKind::Loyalty, &["segmentation"]),
        (ServiceKind::Feedback, &["segmentation"]),
    ];
    for (producer, consumers) in expected {
        let feed = EventFeedServiceClient::new(suite.channel(producer).await?);
        let caught_up = eventually(PROPAGATION, || {
            let mut feed = feed.clone();
            async move {
                let listed = feed
                    .list_feed_consumers(ListFeedConsumersRequest::default())
                    .await?
                    .into_inner();
                let names: Vec<&str> = listed
                    .consumers
                    .iter()
                    .map(|c| c.consumer.as_str())
                    .collect();
                Ok(names == consumers
                    && (producer != ServiceKind::Profiles || listed.latest_sequence >= 1)
                    && listed.consumers.iter().all(|c| {
                        c.acked_sequence == listed.latest_sequence
                            && c.events_behind == 0
                            && c.seconds_behind == 0.0
                    }))
            }
        })
        .await;
        assert!(
            caught_up,
            "{producer}'s feed should list {consumers:?}, caught up"
        );
    }
    suite.stop().await
}

/// Follows profiles' feed with `handler` in `schema`, under a cursor of its own (at 0) and
/// unregistered, until its cursor reaches `latest`; the cursor it reached.
async fn follow_to<H: EventHandler + 'static>(
    suite: &TestSuite,
    schema: &str,
    handler: H,
    latest: i64,
) -> anyhow::Result<i64> {
    let options =
        PgConnectOptions::from_str(suite.database.url())?.options([("search_path", schema)]);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await?;
    let channel = client::plain(suite.channel(ServiceKind::Profiles).await?);
    let consumer = Consumer::new(
        pool.clone(),
        channel,
        handler,
        ConsumerOptions {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            ..ConsumerOptions::new(RESYNC_FEED)
        },
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer.run(stop.clone()));
    let reached = eventually(PROPAGATION, || {
        let pool = pool.clone();
        async move { Ok(load_cursor(&pool, RESYNC_FEED).await? == latest) }
    })
    .await;
    stop.cancel();
    task.await?;
    let cursor = load_cursor(&pool, RESYNC_FEED).await?;
    anyhow::ensure!(reached, "{schema} stopped at {cursor}, short of {latest}");
    Ok(cursor)
}

/// The cursor row of the consumers [`follow_to`] starts, apart from the services' own.
const RESYNC_FEED: &str = "profiles-resync-test";

#[tokio::test]
async fn every_consumer_of_the_suite_resyncs_past_pruned_events_and_follows_on()
-> anyhow::Result<()> {
    // Arrange: three customers on profiles' feed, applied and acknowledged by its registered
    // consumers; then a week passes (the events backdated) and retention prunes all but the
    // newest.
    let suite = TestSuite::start().await?;
    let mut clients = suite.clients().await?;
    for n in 0..3 {
        clients
            .create_customer(&format!("resync{n}@example.com"))
            .await?;
    }
    let feed = EventFeedServiceClient::new(suite.channel(ServiceKind::Profiles).await?);
    let caught_up = eventually(PROPAGATION, || {
        let mut feed = feed.clone();
        async move {
            let listed = feed
                .list_feed_consumers(ListFeedConsumersRequest::default())
                .await?
                .into_inner();
            Ok(listed.latest_sequence >= 3
                && listed.consumers.len() == 3
                && listed
                    .consumers
                    .iter()
                    .all(|c| c.acked_sequence == listed.latest_sequence))
        }
    })
    .await;
    assert!(caught_up, "profiles' consumers never caught up");
    let options =
        PgConnectOptions::from_str(suite.database.url())?.options([("search_path", "profiles")]);
    let profiles = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await?;
    sqlx::query("UPDATE outbox SET occurred_at = occurred_at - interval '8 days'")
        .execute(&profiles)
        .await?;
    let pruned = retention::prune(&profiles, &SystemClock, retention::DEFAULT_RETENTION).await?;
    let position = feed
        .clone()
        .get_feed_position(GetFeedPositionRequest {})
        .await?
        .into_inner();
    assert!(pruned >= 2, "pruned {pruned}");
    assert_eq!(position.oldest_sequence, position.latest_sequence);
    let latest = position.latest_sequence;

    // Act / Assert: each service's handler of profiles' events, from cursor 0, is told its
    // position expired, resyncs (the default would refuse and stall at 0), and applies the
    // newest event.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let segmentation = custops_segmentation::feeds::profiles::ProfilesFeed::new(clock.clone());
    assert_eq!(
        follow_to(&suite, "segmentation", segmentation, latest).await?,
        latest
    );
    let loyalty = custops_loyalty::feeds::profiles::ProfilesFeed::new(clock.clone());
    assert_eq!(follow_to(&suite, "loyalty", loyalty, latest).await?, latest);
    let feedback = custops_feedback::feeds::profiles::ProfilesFeed {
        clock: clock.clone(),
    };
    assert_eq!(
        follow_to(&suite, "feedback", feedback, latest).await?,
        latest
    );

    // Segmentation's handlers of the loyalty and feedback feeds resync the same way.
    let mut segmentation_db = sqlx::PgConnection::connect(suite.database.url()).await?;
    sqlx::query("SET search_path TO segmentation")
        .execute(&mut segmentation_db)
        .await?;
    custops_segmentation::feeds::loyalty::LoyaltyFeed::new(clock.clone())
        .resync(&mut segmentation_db, 1)
        .await?;
    custops_segmentation::feeds::feedback::FeedbackFeed::new(clock)
        .resync(&mut segmentation_db, 1)
        .await?;
    suite.stop().await
}
