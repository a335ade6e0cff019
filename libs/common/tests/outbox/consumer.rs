//! The consumer: cursor in its own schema, effects exactly once across kills and failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use custops_common::consumer::{Consumer, ConsumerOptions, EventHandler, load_cursor};
use custops_common::feed::FeedOptions;
use custops_contracts::custops::common::v1::Event;
use custops_testkit::eventually;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{FeedServer, commit, consent_changed, deleted, schema_pool};

/// Records each event in a table whose primary key is the event id (a second application
/// fails) and counts applications in a counter row (a lost one shows).
struct Recorder {
    /// Failures the handler saw, duplicates included.
    failures: Arc<AtomicUsize>,
    /// Fail this many times before applying the event with this sequence.
    fail_first: Option<(i64, AtomicUsize)>,
}

#[tonic::async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, tx: &mut PgConnection, event: &Event) -> anyhow::Result<()> {
        if let Some((sequence, remaining)) = &self.fail_first
            && event.sequence == *sequence
            && remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            self.failures.fetch_add(1, Ordering::SeqCst);
            anyhow::bail!("injected failure");
        }
        // Small pauses widen the window in which a kill lands mid-batch.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let id: Uuid = event.event_id.parse()?;
        let inserted = sqlx::query("INSERT INTO applied (event_id, sequence) VALUES ($1, $2)")
            .bind(id)
            .bind(event.sequence)
            .execute(&mut *tx)
            .await;
        if let Err(error) = inserted {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(error.into());
        }
        sqlx::query("UPDATE applied_count SET n = n + 1")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// The consumer's schema (segmentation) in the feed's database, with the recorder's tables.
async fn consumer_pool(feed: &FeedServer) -> anyhow::Result<PgPool> {
    let pool = schema_pool(&feed.db, "segmentation").await?;
    sqlx::raw_sql(
        "CREATE TABLE applied (event_id uuid PRIMARY KEY, sequence bigint NOT NULL); \
         CREATE TABLE applied_count (n bigint NOT NULL); \
         INSERT INTO applied_count VALUES (0);",
    )
    .execute(&pool)
    .await?;
    Ok(pool)
}

fn options() -> ConsumerOptions {
    ConsumerOptions {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        max_batch_size: 7,
        ..ConsumerOptions::new("profiles")
    }
}

async fn counts(pool: &PgPool) -> anyhow::Result<(i64, i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT (SELECT n FROM applied_count), (SELECT count(*) FROM applied), \
                COALESCE((SELECT last_sequence FROM feed_cursors WHERE feed = 'profiles'), 0)",
    )
    .fetch_one(pool)
    .await?)
}

async fn until_applied(pool: &PgPool, at_least: i64, within: Duration) -> bool {
    eventually(within, || async {
        counts(pool).await.is_ok_and(|(n, _, _)| n >= at_least)
    })
    .await
}

#[tokio::test]
async fn a_consumer_killed_mid_stream_and_restarted_applies_every_event_exactly_once()
-> anyhow::Result<()> {
    // Arrange
    let feed = FeedServer::start(FeedOptions {
        poll_interval: Duration::from_millis(50),
        ..FeedOptions::default()
    })
    .await?;
    let pool = consumer_pool(&feed).await?;
    let failures = Arc::new(AtomicUsize::new(0));
    let consumer = |channel| {
        Consumer::new(
            pool.clone(),
            channel,
            Recorder {
                failures: Arc::clone(&failures),
                fail_first: None,
            },
            options(),
        )
    };

    // Act: four producers write 100 events each while the consumer is killed twenty times
    // (task aborted at a random moment, often mid-batch), then stopped and started again
    // through its token.
    let mut producers = Vec::new();
    for _ in 0..4 {
        let producer_pool = feed.pool.clone();
        producers.push(tokio::spawn(async move {
            for _ in 0..100 {
                commit(&producer_pool, deleted()).await?;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            anyhow::Ok(())
        }));
    }
    // At least 20 kills at random moments, and on until some were mid-stream with progress
    // made (on a loaded CI machine a short-lived consumer may not get that far at first).
    let mut kills = 0_u64;
    loop {
        let task = consumer(feed.channel().await?).spawn(CancellationToken::new());
        let lifetime = 5 + kills.min(20) * 5 + u64::try_from(Uuid::new_v4().as_u128() % 40)?;
        tokio::time::sleep(Duration::from_millis(lifetime)).await;
        task.abort();
        let _ = task.await;
        kills += 1;
        let (applied, _, _) = counts(&pool).await?;
        if kills >= 20 && applied > 0 {
            break;
        }
        assert!(kills < 200, "the killed consumers never made progress");
    }
    let token = CancellationToken::new();
    let task = consumer(feed.channel().await?).spawn(token.clone());
    tokio::time::sleep(Duration::from_millis(30)).await;
    token.cancel();
    task.await?;
    let token = CancellationToken::new();
    let task = consumer(feed.channel().await?).spawn(token.clone());
    for producer in producers {
        producer.await??;
    }

    // Assert: 400 produced, 400 applied, none twice, cursor at the end of the feed.
    let done = until_applied(&pool, 400, Duration::from_secs(30)).await;
    assert!(
        done,
        "not every event was applied once: (count, rows, cursor) = {:?}, handler failures {}",
        counts(&pool).await?,
        failures.load(Ordering::SeqCst)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (n, rows, cursor) = counts(&pool).await?;
    assert_eq!((n, rows), (400, 400));
    assert_eq!(cursor, 400);
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "an event was applied twice"
    );
    token.cancel();
    task.await?;
    Ok(())
}

#[tokio::test]
async fn a_failing_handler_rolls_its_batch_back_and_retries() -> anyhow::Result<()> {
    // Arrange: ten events; the handler fails three times on the sixth.
    let feed = FeedServer::start(FeedOptions::default()).await?;
    let pool = consumer_pool(&feed).await?;
    for _ in 0..10 {
        commit(&feed.pool, deleted()).await?;
    }
    let failures = Arc::new(AtomicUsize::new(0));
    let handler = Recorder {
        failures: Arc::clone(&failures),
        fail_first: Some((6, AtomicUsize::new(3))),
    };
    let token = CancellationToken::new();

    // Act
    let task =
        Consumer::new(pool.clone(), feed.channel().await?, handler, options()).spawn(token.clone());

    // Assert: all ten applied once, after exactly the three injected failures (events 1–5,
    // rolled back with the failing batch, were not applied twice).
    assert!(until_applied(&pool, 10, Duration::from_secs(30)).await);
    assert_eq!(counts(&pool).await?, (10, 10, 10));
    assert_eq!(failures.load(Ordering::SeqCst), 3);
    token.cancel();
    task.await?;
    Ok(())
}

#[tokio::test]
async fn a_consumer_filtering_every_event_out_still_advances_its_cursor() -> anyhow::Result<()> {
    // Arrange: events of a type the consumer does not ask for.
    let feed = FeedServer::start(FeedOptions::default()).await?;
    let pool = consumer_pool(&feed).await?;
    for _ in 0..5 {
        commit(&feed.pool, consent_changed()).await?;
    }
    let token = CancellationToken::new();
    let options = ConsumerOptions {
        event_types: vec!["custops.profiles.v1.CustomerDeleted".to_owned()],
        ..options()
    };
    let handler = Recorder {
        failures: Arc::new(AtomicUsize::new(0)),
        fail_first: None,
    };

    // Act
    let task =
        Consumer::new(pool.clone(), feed.channel().await?, handler, options).spawn(token.clone());

    // Assert
    let advanced = eventually(Duration::from_secs(10), || async {
        load_cursor(&pool, "profiles")
            .await
            .is_ok_and(|cursor| cursor == 5)
    })
    .await;
    assert!(advanced, "the cursor did not move past filtered-out events");
    assert_eq!(counts(&pool).await?, (0, 0, 5));
    token.cancel();
    task.await?;
    Ok(())
}

/// Applies like [`Recorder`] and notes the size of each batch it is given; the first batch
/// is slow, so the responses behind it are waiting when it ends.
struct BatchSizes {
    recorder: Recorder,
    sizes: Arc<std::sync::Mutex<Vec<usize>>>,
}

#[tonic::async_trait]
impl EventHandler for BatchSizes {
    async fn handle(&self, tx: &mut PgConnection, event: &Event) -> anyhow::Result<()> {
        self.recorder.handle(tx, event).await
    }

    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        events: &[Event],
    ) -> Result<(), custops_common::consumer::BatchError> {
        let first = {
            let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
            sizes.push(events.len());
            sizes.len() == 1
        };
        if first {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        for (index, event) in events.iter().enumerate() {
            self.handle(tx, event)
                .await
                .map_err(|source| custops_common::consumer::BatchError { index, source })?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn responses_waiting_behind_a_batch_are_applied_together_up_to_the_limit()
-> anyhow::Result<()> {
    // Arrange: a backlog of 60 events, served 7 to a response.
    let feed = FeedServer::start(FeedOptions::default()).await?;
    let pool = consumer_pool(&feed).await?;
    for _ in 0..60 {
        commit(&feed.pool, deleted()).await?;
    }
    let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handler = BatchSizes {
        recorder: Recorder {
            failures: Arc::new(AtomicUsize::new(0)),
            fail_first: None,
        },
        sizes: Arc::clone(&sizes),
    };
    let options = ConsumerOptions {
        max_events_per_transaction: 20,
        ..options()
    };
    let token = CancellationToken::new();

    // Act
    let task =
        Consumer::new(pool.clone(), feed.channel().await?, handler, options).spawn(token.clone());

    // Assert: every event once; after the slow first batch, waiting responses were joined
    // (more than one response's 7 events), never past the limit by more than one response.
    assert!(until_applied(&pool, 60, Duration::from_secs(30)).await);
    let (n, rows, cursor) = counts(&pool).await?;
    assert_eq!((n, rows, cursor), (60, 60, 60));
    let sizes = sizes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(sizes.iter().sum::<usize>(), 60, "{sizes:?}");
    assert!(
        sizes.iter().skip(1).any(|&s| s > 7),
        "no batch joined: {sizes:?}"
    );
    assert!(
        sizes.iter().all(|&s| s < 20 + 7),
        "a batch past the limit: {sizes:?}"
    );
    token.cancel();
    task.await?;
    Ok(())
}
