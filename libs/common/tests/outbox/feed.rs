//! The `EventFeedService` contract: batches, heartbeats, the type filter, argument checks,
//! the feed position, low-latency follow and shutdown.

use std::time::Duration;

use custops_common::feed::FeedOptions;
use custops_common::outbox;
use custops_common::sequencer;
use custops_contracts::custops::common::v1::{GetFeedPositionRequest, SubscribeRequest};
use custops_contracts::custops::profiles::v1::CustomerDeleted;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{
    FeedServer, PATIENCE, assert_position_expired, commit, consent_changed, deleted, next,
    next_within, read_until,
};

const DELETED: &str = "custops.profiles.v1.CustomerDeleted";

#[tokio::test]
async fn the_backlog_comes_in_batches_of_the_asked_size() -> anyhow::Result<()> {
    // Arrange: 250 sequenced events.
    let feed = FeedServer::start(FeedOptions::default()).await?;
    for _ in 0..250 {
        commit(&feed.pool, deleted()).await?;
    }
    sequencer::sequence_pending(&feed.pool, 1000).await?;

    // Act / Assert: batches of 100 (the asked size), then of 100 (the default for 0).
    for max_batch_size in [100, 0] {
        let mut stream = feed.subscribe(0, &[], max_batch_size).await?;
        let mut shape = Vec::new();
        for _ in 0..3 {
            let response = next(&mut stream).await?;
            shape.push((response.events.len(), response.last_sequence));
        }
        assert_eq!(
            shape,
            [(100, 100), (100, 200), (50, 250)],
            "max_batch_size {max_batch_size}"
        );
    }
    let mut stream = feed.subscribe(240, &[], 1).await?;
    let response = next(&mut stream).await?;
    assert_eq!(response.events.len(), 1);
    assert_eq!(response.events[0].sequence, 241);
    Ok(())
}

#[tokio::test]
async fn a_delivered_event_carries_its_envelope_and_typed_payload() -> anyhow::Result<()> {
    // Arrange
    let feed = FeedServer::start(FeedOptions::default()).await?;
    let payload = CustomerDeleted {
        customer_id: "c-42".to_owned(),
        delete_time: None,
    };
    let id = commit(
        &feed.pool,
        outbox::OutboxEvent::new("customer", "c-42", &payload),
    )
    .await?;

    // Act
    let mut stream = feed.subscribe(0, &[], 0).await?;
    let response = next(&mut stream).await?;

    // Assert
    let event = &response.events[0];
    assert_eq!(event.event_id, id.to_string());
    assert_eq!(
        (event.aggregate_type.as_str(), event.aggregate_id.as_str()),
        ("customer", "c-42")
    );
    assert_eq!(event.event_type, DELETED);
    assert!(event.occur_time.is_some());
    let any = event.payload.clone().unwrap_or_default();
    assert_eq!(any.type_url, format!("type.googleapis.com/{DELETED}"));
    assert_eq!(any.to_msg::<CustomerDeleted>()?, payload);
    Ok(())
}

#[tokio::test]
async fn an_idle_feed_sends_heartbeats_at_its_position() -> anyhow::Result<()> {
    // Arrange
    let feed = FeedServer::start(FeedOptions {
        heartbeat_interval: Duration::from_millis(200),
        ..FeedOptions::default()
    })
    .await?;
    let mut stream = feed.subscribe(0, &[], 0).await?;

    // Act / Assert: a heartbeat at 0, then the event, then heartbeats at 1.
    let heartbeat = next_within(&mut stream, Duration::from_secs(2)).await?;
    assert!(heartbeat.events.is_empty());
    assert_eq!(heartbeat.last_sequence, 0);
    let id = commit(&feed.pool, deleted()).await?;
    assert_eq!(read_until(&mut stream, 1).await?, [(1, id)]);
    let heartbeat = next_within(&mut stream, Duration::from_secs(2)).await?;
    assert!(heartbeat.events.is_empty());
    assert_eq!(heartbeat.last_sequence, 1);
    Ok(())
}

#[tokio::test]
async fn filtered_out_events_still_move_the_position() -> anyhow::Result<()> {
    // Arrange: deleted, consent, deleted, consent, consent.
    let feed = FeedServer::start(FeedOptions::default()).await?;
    let mut deleted_ids = Vec::new();
    for index in 0..5 {
        if index % 2 == 0 {
            deleted_ids.push(commit(&feed.pool, deleted()).await?);
        } else {
            commit(&feed.pool, consent_changed()).await?;
        }
    }
    sequencer::sequence_pending(&feed.pool, 1000).await?;

    // Act
    let mut stream = feed.subscribe(0, &[DELETED], 0).await?;
    let response = next(&mut stream).await?;

    // Assert: only the deletions, and a position past the trailing consents.
    let ids: Vec<String> = response.events.iter().map(|e| e.event_id.clone()).collect();
    let expected: Vec<String> = deleted_ids.iter().map(ToString::to_string).collect();
    assert_eq!(ids, expected);
    assert!(response.events.iter().all(|e| e.event_type == DELETED));
    assert_eq!(response.last_sequence, 5);

    // A batch that is entirely filtered out is still reported, as a position.
    commit(&feed.pool, consent_changed()).await?;
    let response = next(&mut stream).await?;
    assert!(response.events.is_empty());
    assert_eq!(response.last_sequence, 6);
    Ok(())
}

#[tokio::test]
async fn bad_subscribe_arguments_are_rejected_naming_the_field() -> anyhow::Result<()> {
    // Arrange
    let feed = FeedServer::start(FeedOptions::default()).await?;
    let mut client = feed.client().await?;
    let cases: [(i64, &[&str], i32, &[&str]); 5] = [
        (-1, &[], 0, &["after_sequence"]),
        (0, &[], 1001, &["max_batch_size"]),
        (0, &[], -1, &["max_batch_size"]),
        (
            0,
            &[DELETED, "custops.loyalty.v1.PointsEarned"],
            0,
            &["event_types[1]"],
        ),
        (
            -5,
            &["nonsense"],
            5000,
            &["after_sequence", "max_batch_size", "event_types[0]"],
        ),
    ];

    for (after_sequence, event_types, max_batch_size, fields) in cases {
        // Act
        let request = SubscribeRequest {
            after_sequence,
            event_types: event_types.iter().map(|t| (*t).to_owned()).collect(),
            max_batch_size,
            consumer: String::new(),
        };
        let status = match client.subscribe(request).await {
            Ok(_) => anyhow::bail!("accepted {fields:?}"),
            Err(status) => status,
        };

        // Assert
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let violations: Vec<String> = status
            .get_details_bad_request()
            .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        assert_eq!(violations, fields);
    }
    Ok(())
}

#[tokio::test]
async fn resuming_before_the_oldest_retained_event_is_a_failed_precondition_to_resync()
-> anyhow::Result<()> {
    // Arrange: five events, the first three pruned (as retention would).
    let feed = FeedServer::start(FeedOptions::default()).await?;
    for _ in 0..5 {
        commit(&feed.pool, deleted()).await?;
    }
    sequencer::sequence_pending(&feed.pool, 1000).await?;
    sqlx::query("DELETE FROM outbox WHERE sequence <= 3")
        .execute(&feed.pool)
        .await?;
    let mut client = feed.client().await?;

    // Act / Assert: after 1 would skip 2 and 3, after 0 (a new consumer) 1 to 3: both must
    // resync, told so with the reason and the oldest retained sequence; after 3 follows on.
    let request = |after_sequence| SubscribeRequest {
        after_sequence,
        ..SubscribeRequest::default()
    };
    for after in [0, 1, 2] {
        let Err(status) = client.subscribe(request(after)).await else {
            anyhow::bail!("a subscription after {after} was accepted");
        };
        assert_position_expired(&status, "4");
        assert!(status.message().contains("resync"), "{status:?}");
    }
    let mut stream = client.subscribe(request(3)).await?.into_inner();
    let first = next(&mut stream).await?;
    assert_eq!(first.events.first().map(|e| e.sequence), Some(4));
    Ok(())
}

#[tokio::test]
async fn the_feed_position_counts_only_committed_events() -> anyhow::Result<()> {
    // Arrange
    let feed = FeedServer::start(FeedOptions::default()).await?;
    let mut client = feed.client().await?;
    let position = client
        .get_feed_position(GetFeedPositionRequest {})
        .await?
        .into_inner();
    assert_eq!((position.oldest_sequence, position.latest_sequence), (0, 0));

    // Act: three committed, one still open.
    for _ in 0..3 {
        commit(&feed.pool, deleted()).await?;
    }
    let mut open = feed.pool.begin().await?;
    outbox::append(&mut open, deleted()).await?;
    sequencer::sequence_pending(&feed.pool, 1000).await?;

    // Assert
    let position = client
        .get_feed_position(GetFeedPositionRequest {})
        .await?
        .into_inner();
    assert_eq!((position.oldest_sequence, position.latest_sequence), (1, 3));
    open.rollback().await?;
    Ok(())
}

#[tokio::test]
async fn a_new_commit_reaches_an_open_stream_without_waiting_for_the_poll() -> anyhow::Result<()> {
    // Arrange: no stream polls within the test's lifetime: only the sequencer (which polls
    // the outbox, the writer notifies nothing) can wake them, through the feed channel.
    let feed = FeedServer::start(FeedOptions {
        poll_interval: Duration::from_secs(600),
        heartbeat_interval: Duration::from_secs(600),
        ..FeedOptions::default()
    })
    .await?;
    feed.until_listening().await?;
    let mut stream = feed.subscribe(0, &[], 0).await?;

    // Act / Assert, twice: the second proves the first wake-up left the stream waiting again.
    for sequence in 1..=2 {
        let id = commit(&feed.pool, deleted()).await?;
        let started = tokio::time::Instant::now();
        let response = next_within(&mut stream, Duration::from_secs(3)).await?;
        let ids: Vec<(i64, String)> = response
            .events
            .iter()
            .map(|e| (e.sequence, e.event_id.clone()))
            .collect();
        assert_eq!(ids, [(sequence, id.to_string())]);
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    Ok(())
}

#[tokio::test]
async fn shutdown_ends_open_streams_at_once_with_unavailable() -> anyhow::Result<()> {
    // Arrange: a server with a 30 s grace period and an open, idle stream.
    let feed = FeedServer::start(FeedOptions::default()).await?;
    let mut stream = feed.subscribe(0, &[], 0).await?;
    let mut client = feed.client().await?;

    // Act
    feed.stop.cancel();

    // Assert: the stream ends with UNAVAILABLE and the server stops well inside its grace.
    let ended = tokio::time::timeout(PATIENCE, stream.message()).await?;
    assert_eq!(ended.err().map(|s| s.code()), Some(Code::Unavailable));
    tokio::time::timeout(PATIENCE, feed.server).await???;
    let refused = client.subscribe(SubscribeRequest::default()).await;
    assert!(refused.is_err(), "a stopped server accepted a subscription");
    Ok(())
}

#[tokio::test]
async fn idle_streams_wait_for_a_wake_up_instead_of_reading_the_table_every_poll()
-> anyhow::Result<()> {
    // Arrange: a 100 ms poll interval, so polling streams would read the table ten times a
    // second each; the heartbeat is far away; the sequencer's own probes of an idle outbox
    // are at most 4 a second.
    let feed = FeedServer::start(FeedOptions {
        poll_interval: Duration::from_millis(100),
        sequencer_idle_poll: Duration::from_millis(250),
        heartbeat_interval: Duration::from_secs(600),
        ..FeedOptions::default()
    })
    .await?;
    feed.until_listening().await?;
    let mut streams = Vec::new();
    for _ in 0..30 {
        streams.push(feed.subscribe(0, &[], 0).await?);
    }
    let reads = || async {
        // Statistics reach the shared counters when a backend goes idle (at most every
        // second); the sleeps below leave time for that.
        let scans: i64 = sqlx::query_scalar(
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables \
             WHERE schemaname = 'profiles' AND relname = 'outbox'",
        )
        .fetch_one(&feed.pool)
        .await?;
        anyhow::Ok(scans)
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = reads().await?;

    // Act: two idle seconds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle_reads = reads().await? - before;

    // Assert: polling would be 30 streams × 20 polls = 600 reads (and more: the 3.5 s between
    // the two readings); waiting is the sequencer's own probes (about 14) plus, at worst, the
    // streams' first reads counted late: Postgres flushes a backend's statistics when it goes
    // idle, but one that flushed less than a second before waits up to 10 s, so under load
    // the 30 subscriptions' reads can land in the window (103 seen once in CI, 2026-12-06).
    assert!(
        idle_reads < 200,
        "{idle_reads} reads of the outbox while idle"
    );
    // And a commit still reaches every stream at once.
    commit(&feed.pool, deleted()).await?;
    for stream in &mut streams {
        let response = next_within(stream, Duration::from_secs(3)).await?;
        assert_eq!(response.events.len(), 1);
    }
    Ok(())
}
