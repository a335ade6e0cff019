//! Feed retention and lag: pruning keeps what a registered consumer has not acknowledged and
//! what is younger than the retention period, always a prefix of the feed and never its
//! newest event, also with several replicas pruning at once; a consumer whose position was
//! pruned resyncs; the lag reads over gRPC.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use custops_common::clock::{Clock, ManualClock};
use custops_common::consumer::{Consumer, ConsumerOptions, EventHandler, load_cursor};
use custops_common::feed::FeedOptions;
use custops_common::retention;
use custops_common::sequencer;
use custops_contracts::custops::common::v1::{
    AcknowledgeEventsRequest, Event, GetFeedPositionRequest, ListFeedConsumersRequest,
};
use custops_testkit::eventually;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{FeedServer, PATIENCE, assert_position_expired, commit, deleted, schema_pool};

/// Seven days, the default retention.
const RETENTION: Duration = retention::DEFAULT_RETENTION;

/// A feed whose clock the test sets, pruning only when the test says so.
async fn feed_at(now: DateTime<Utc>) -> anyhow::Result<(FeedServer, Arc<ManualClock>)> {
    let clock = Arc::new(ManualClock::new(now));
    let feed = FeedServer::start(FeedOptions {
        clock: clock.clone(),
        prune_interval: Duration::from_secs(3600),
        poll_interval: Duration::from_millis(50),
        ..FeedOptions::default()
    })
    .await?;
    Ok((feed, clock))
}

/// Commits `n` events and gives them their positions; each occurred `age` before `now`.
async fn events(
    feed: &FeedServer,
    n: usize,
    now: DateTime<Utc>,
    age: Duration,
) -> anyhow::Result<()> {
    for _ in 0..n {
        commit(&feed.pool, deleted()).await?;
    }
    sequencer::sequence_pending(&feed.pool, 1000).await?;
    sqlx::query("UPDATE outbox SET occurred_at = $1 WHERE occurred_at > $1")
        .bind(now - chrono::Duration::from_std(age)?)
        .execute(&feed.pool)
        .await?;
    Ok(())
}

/// The sequences still in the outbox.
async fn retained(pool: &PgPool) -> anyhow::Result<Vec<i64>> {
    Ok(
        sqlx::query_scalar("SELECT sequence FROM outbox WHERE sequence IS NOT NULL ORDER BY 1")
            .fetch_all(pool)
            .await?,
    )
}

async fn acknowledge(feed: &FeedServer, consumer: &str, sequence: i64) -> anyhow::Result<i64> {
    Ok(feed
        .client()
        .await?
        .acknowledge_events(AcknowledgeEventsRequest {
            consumer: consumer.to_owned(),
            sequence,
        })
        .await?
        .into_inner()
        .acked_sequence)
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}

#[tokio::test]
async fn pruning_keeps_what_a_registered_consumer_has_not_acknowledged() -> anyhow::Result<()> {
    // Arrange: five events eight days old; two consumers, at 2 and at 4.
    let now = Utc::now();
    let (feed, clock) = feed_at(now).await?;
    events(&feed, 5, now, days(8)).await?;
    acknowledge(&feed, "segmentation", 2).await?;
    acknowledge(&feed, "loyalty", 4).await?;

    // Act / Assert: the slower consumer holds everything after 2.
    assert_eq!(
        retention::prune(&feed.pool, clock.as_ref(), RETENTION).await?,
        2
    );
    assert_eq!(retained(&feed.pool).await?, [3, 4, 5]);
    let position = feed
        .client()
        .await?
        .get_feed_position(GetFeedPositionRequest {})
        .await?
        .into_inner();
    assert_eq!((position.oldest_sequence, position.latest_sequence), (3, 5));

    // Both pass 5: everything but the newest event goes (the sequencer numbers after it).
    acknowledge(&feed, "segmentation", 5).await?;
    acknowledge(&feed, "loyalty", 5).await?;
    assert_eq!(
        retention::prune(&feed.pool, clock.as_ref(), RETENTION).await?,
        2
    );
    assert_eq!(retained(&feed.pool).await?, [5]);

    // A sixth event is numbered after the newest, not from 1 again.
    events(&feed, 1, now, Duration::ZERO).await?;
    assert_eq!(retained(&feed.pool).await?, [5, 6]);
    Ok(())
}

#[tokio::test]
async fn with_no_consumer_pruning_goes_by_retention_alone_and_takes_a_prefix() -> anyhow::Result<()>
{
    // Arrange: events 1–2 and 4–5 eight days old, 3 one day old (a transaction that started
    // late can sit among old ones); no consumer registered.
    let now = Utc::now();
    let (feed, clock) = feed_at(now).await?;
    events(&feed, 5, now, days(8)).await?;
    sqlx::query("UPDATE outbox SET occurred_at = $1 WHERE sequence = 3")
        .bind(now - chrono::Duration::days(1))
        .execute(&feed.pool)
        .await?;

    // Act / Assert: only 1 and 2 go: 3 is young and a hole after it would go unnoticed.
    assert_eq!(
        retention::prune(&feed.pool, clock.as_ref(), RETENTION).await?,
        2
    );
    assert_eq!(retained(&feed.pool).await?, [3, 4, 5]);

    // Seven more days: all but the newest.
    clock.advance(chrono::Duration::days(7));
    assert_eq!(
        retention::prune(&feed.pool, clock.as_ref(), RETENTION).await?,
        2
    );
    assert_eq!(retained(&feed.pool).await?, [5]);

    // Young events stay whatever the consumers say; the old one they passed goes.
    events(&feed, 3, clock.now(), Duration::ZERO).await?;
    sqlx::query("UPDATE outbox SET occurred_at = $1 WHERE sequence > 5")
        .bind(clock.now())
        .execute(&feed.pool)
        .await?;
    acknowledge(&feed, "segmentation", 8).await?;
    assert_eq!(
        retention::prune(&feed.pool, clock.as_ref(), RETENTION).await?,
        1
    );
    assert_eq!(retained(&feed.pool).await?, [6, 7, 8]);
    Ok(())
}

#[tokio::test]
async fn acknowledgements_register_consumers_never_move_back_and_report_lag() -> anyhow::Result<()>
{
    // Arrange: four events, the second 90 s old.
    let now = Utc::now();
    let (feed, _clock) = feed_at(now).await?;
    events(&feed, 4, now, Duration::from_secs(60)).await?;
    sqlx::query("UPDATE outbox SET occurred_at = $1 WHERE sequence = 2")
        .bind(now - chrono::Duration::seconds(90))
        .execute(&feed.pool)
        .await?;
    let mut client = feed.client().await?;

    // Act: "loyalty" acknowledges 4; "segmentation" 3, then 1 (a replica behind);
    // "feedback" registers by subscribing after 1.
    acknowledge(&feed, "loyalty", 4).await?;
    assert_eq!(acknowledge(&feed, "segmentation", 3).await?, 3);
    let lag = client
        .acknowledge_events(AcknowledgeEventsRequest {
            consumer: "segmentation".to_owned(),
            sequence: 1,
        })
        .await?
        .into_inner();
    let _stream = feed
        .client()
        .await?
        .subscribe(custops_contracts::custops::common::v1::SubscribeRequest {
            after_sequence: 1,
            consumer: "feedback".to_owned(),
            ..Default::default()
        })
        .await?;

    // Assert: the answer of the backward acknowledgement is the position kept, with its lag.
    assert_eq!(lag.acked_sequence, 3);
    assert_eq!((lag.latest_sequence, lag.events_behind), (4, 1));
    assert!((lag.seconds_behind - 60.0).abs() < 1.0, "{lag:?}");
    // Listed by name, a page at a time.
    let first = client
        .list_feed_consumers(ListFeedConsumersRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    let second = client
        .list_feed_consumers(ListFeedConsumersRequest {
            page_size: 2,
            page_token: first.next_page_token.clone(),
        })
        .await?
        .into_inner();
    assert!(second.next_page_token.is_empty());
    let rows: Vec<(String, i64, i64, i64)> = first
        .consumers
        .iter()
        .chain(&second.consumers)
        .map(|c| {
            (
                c.consumer.clone(),
                c.acked_sequence,
                c.events_behind,
                c.seconds_behind.round() as i64,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("feedback".to_owned(), 1, 3, 90),
            ("loyalty".to_owned(), 4, 0, 0),
            ("segmentation".to_owned(), 3, 1, 60),
        ]
    );
    assert_eq!(first.latest_sequence, 4);

    // Refusals: a name that is not a slug, a position beyond the feed's newest event.
    let bad_name = client
        .acknowledge_events(AcknowledgeEventsRequest {
            consumer: "Segmentation".to_owned(),
            sequence: -1,
        })
        .await
        .err();
    let fields: Vec<String> = bad_name
        .as_ref()
        .and_then(|status| status.get_details_bad_request())
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["consumer", "sequence"]);
    let beyond = client
        .acknowledge_events(AcknowledgeEventsRequest {
            consumer: "loyalty".to_owned(),
            sequence: 5,
        })
        .await
        .err();
    assert_eq!(beyond.map(|s| s.code()), Some(Code::FailedPrecondition));
    Ok(())
}

/// Records applied events and resyncs in the consumer's schema.
struct Resyncing;

#[tonic::async_trait]
impl EventHandler for Resyncing {
    async fn handle(&self, tx: &mut PgConnection, event: &Event) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO applied (sequence) VALUES ($1)")
            .bind(event.sequence)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    async fn resync(&self, tx: &mut PgConnection, oldest_retained: i64) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO resyncs (oldest) VALUES ($1)")
            .bind(oldest_retained)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// The consumer's schema with the tables of [`Resyncing`].
async fn resyncing_pool(feed: &FeedServer) -> anyhow::Result<PgPool> {
    let pool = schema_pool(&feed.db, "segmentation").await?;
    sqlx::raw_sql(
        "CREATE TABLE applied (sequence bigint PRIMARY KEY); \
         CREATE TABLE resyncs (oldest bigint NOT NULL);",
    )
    .execute(&pool)
    .await?;
    Ok(pool)
}

fn consumer_options() -> ConsumerOptions {
    ConsumerOptions {
        consumer: "segmentation".to_owned(),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        ack_interval: Duration::ZERO,
        ..ConsumerOptions::new("profiles")
    }
}

#[tokio::test]
async fn a_consumer_whose_position_was_pruned_resyncs_and_follows_on() -> anyhow::Result<()> {
    // Arrange: three old events pruned down to the newest before the consumer ever came.
    let now = Utc::now();
    let (feed, clock) = feed_at(now).await?;
    events(&feed, 3, now, days(8)).await?;
    retention::prune(&feed.pool, clock.as_ref(), RETENTION).await?;
    assert_eq!(retained(&feed.pool).await?, [3]);
    let pool = resyncing_pool(&feed).await?;
    let token = CancellationToken::new();

    // Act: it starts at 0, then a fourth event comes.
    let task = Consumer::new(
        pool.clone(),
        feed.channel().await?,
        Resyncing,
        consumer_options(),
    )
    .spawn(token.clone());
    let at_three = eventually(PATIENCE, || async {
        load_cursor(&pool, "profiles").await.is_ok_and(|c| c == 3)
    })
    .await;
    assert!(at_three, "the consumer never got past the pruned range");
    events(&feed, 1, now, Duration::ZERO).await?;
    let at_four = eventually(PATIENCE, || async {
        load_cursor(&pool, "profiles").await.is_ok_and(|c| c == 4)
    })
    .await;
    assert!(at_four, "the consumer did not follow on after its resync");

    // Assert: one resync at the oldest retained event, then 3 and 4 applied once each; the
    // producer knows where it is.
    let resyncs: Vec<i64> = sqlx::query_scalar("SELECT oldest FROM resyncs")
        .fetch_all(&pool)
        .await?;
    assert_eq!(resyncs, [3]);
    let applied: Vec<i64> = sqlx::query_scalar("SELECT sequence FROM applied ORDER BY 1")
        .fetch_all(&pool)
        .await?;
    assert_eq!(applied, [3, 4]);
    let acked = eventually(PATIENCE, || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT acked_sequence FROM feed_consumers WHERE consumer = 'segmentation'",
        )
        .fetch_one(&feed.pool)
        .await
        .is_ok_and(|acked| acked == 4)
    })
    .await;
    assert!(acked, "the consumer did not acknowledge its position");
    token.cancel();
    task.await?;
    Ok(())
}

#[tokio::test]
async fn a_stream_overtaken_by_pruning_ends_with_failed_precondition() -> anyhow::Result<()> {
    // Arrange: an ad-hoc reader caught up at 3; the sequencer all but asleep.
    let now = Utc::now();
    let clock = Arc::new(ManualClock::new(now));
    let feed = FeedServer::start(FeedOptions {
        clock: clock.clone(),
        prune_interval: Duration::from_secs(3600),
        sequencer_idle_poll: Duration::from_secs(3600),
        ..FeedOptions::default()
    })
    .await?;
    feed.until_listening().await?;
    events(&feed, 3, now, Duration::ZERO).await?;
    let mut stream = feed.subscribe(3, &[], 0).await?;

    // Act: in one transaction, three events get positions 4–6 and 1–5 are pruned, so the
    // reader's next event (4) is gone when it next reads.
    let mut tx = feed.pool.begin().await?;
    for _ in 0..3 {
        custops_common::outbox::append(&mut tx, deleted()).await?;
    }
    sqlx::query(
        "UPDATE outbox SET sequence = 3 + n.n \
         FROM (SELECT id, row_number() OVER (ORDER BY appended_at, id) AS n \
               FROM outbox WHERE sequence IS NULL) n \
         WHERE outbox.id = n.id",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM outbox WHERE sequence <= 5")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT pg_notify('custops_feed_profiles', '')")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    // Assert: the stream ends with the resync error rather than skipping 4 and 5.
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.message().await {
                Ok(Some(response)) if response.events.is_empty() => continue,
                other => return other,
            }
        }
    })
    .await?;
    let status = match ended {
        Err(status) => status,
        Ok(other) => anyhow::bail!("the stream went on: {other:?}"),
    };
    assert_position_expired(&status, "6");
    Ok(())
}

#[tokio::test]
async fn replicas_pruning_at_once_delete_the_prefix_once_and_keep_the_rest() -> anyhow::Result<()> {
    // Arrange: 600 events eight days old, of which a registered consumer has acknowledged 500.
    let now = Utc::now();
    let (feed, clock) = feed_at(now).await?;
    events(&feed, 600, now, days(8)).await?;
    acknowledge(&feed, "segmentation", 500).await?;

    // Act: four pruners, as four replicas run them, in small batches at once; then one more
    // pass for what a pruner that saw only rows being deleted by another left.
    let pruners: Vec<_> = (0..4)
        .map(|_| {
            let (pool, clock) = (feed.pool.clone(), clock.clone());
            tokio::spawn(async move {
                let mut deleted = 0;
                loop {
                    match retention::prune_batch(&pool, clock.as_ref(), RETENTION, 25).await? {
                        0 => return anyhow::Ok(deleted),
                        n => deleted += n,
                    }
                }
            })
        })
        .collect();
    let mut deleted = 0;
    for pruner in pruners {
        deleted += pruner.await??;
    }
    deleted += retention::prune(&feed.pool, clock.as_ref(), RETENTION).await?;

    // Assert: each acknowledged event deleted once (the counts add up to exactly the
    // prefix), the unacknowledged ones kept, gap-free.
    assert_eq!(deleted, 500);
    assert_eq!(
        retained(&feed.pool).await?,
        (501..=600).collect::<Vec<i64>>()
    );
    Ok(())
}
