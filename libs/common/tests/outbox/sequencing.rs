//! The sequencing guarantee: only committed events are delivered, each once, and a
//! transaction that commits late is delivered after what was already delivered, never skipped.

use std::collections::BTreeSet;
use std::time::Duration;

use custops_common::feed::FeedOptions;
use custops_common::outbox;
use custops_common::sequencer;
use custops_contracts::custops::common::v1::GetFeedPositionRequest;
use custops_contracts::custops::profiles::v1::CustomerDeleted;
use prost::Message;
use uuid::Uuid;

use crate::support::{FeedServer, commit, consent_changed, deleted, next, read_until};

#[tokio::test]
async fn an_event_written_in_a_rolled_back_transaction_is_never_delivered() -> anyhow::Result<()> {
    // Arrange
    let feed = FeedServer::start(FeedOptions {
        heartbeat_interval: Duration::from_millis(300),
        ..FeedOptions::default()
    })
    .await?;
    let mut stream = feed.subscribe(0, &[], 0).await?;

    // Act: one event rolled back, then one committed.
    let mut tx = feed.pool.begin().await?;
    let rolled_back = outbox::append(&mut tx, deleted()).await?;
    tx.rollback().await?;
    let committed = commit(&feed.pool, deleted()).await?;

    // Assert: the committed event arrives alone, and the following heartbeats stay at its
    // position, both on the open stream and on a fresh one from the start.
    let delivered = read_until(&mut stream, 1).await?;
    assert_eq!(delivered, [(1, committed)]);
    for _ in 0..2 {
        let heartbeat = next(&mut stream).await?;
        assert!(heartbeat.events.is_empty(), "{heartbeat:?}");
        assert_eq!(heartbeat.last_sequence, 1);
    }
    let mut replay = feed.subscribe(0, &[], 0).await?;
    let first = next(&mut replay).await?;
    let ids: Vec<String> = first.events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids, [committed.to_string()]);
    assert!(!ids.contains(&rolled_back.to_string()));
    let position = feed
        .client()
        .await?
        .get_feed_position(GetFeedPositionRequest {})
        .await?
        .into_inner();
    assert_eq!((position.oldest_sequence, position.latest_sequence), (1, 1));
    Ok(())
}

#[tokio::test]
async fn transactions_committing_out_of_order_are_both_delivered_in_visibility_order()
-> anyhow::Result<()> {
    // Arrange
    let feed = FeedServer::start(FeedOptions::default()).await?;
    let mut stream = feed.subscribe(0, &[], 0).await?;

    // Act: A begins and inserts first; B inserts and commits first; only then A commits.
    let mut tx_a = feed.pool.begin().await?;
    let a = outbox::append(&mut tx_a, deleted()).await?;
    let mut tx_b = feed.pool.begin().await?;
    let b = outbox::append(&mut tx_b, deleted()).await?;
    tx_b.commit().await?;
    let first = read_until(&mut stream, 1).await?;
    // A consumer now stores cursor 1. With an insert-time sequence, A would hold a number
    // below it and be skipped forever.
    tx_a.commit().await?;
    let second = read_until(&mut stream, 2).await?;

    // Assert
    assert_eq!(first, [(1, b)]);
    assert_eq!(second, [(2, a)]);
    let mut resumed = feed.subscribe(1, &[], 0).await?;
    assert_eq!(read_until(&mut resumed, 2).await?, [(2, a)]);
    Ok(())
}

#[tokio::test]
async fn concurrent_producers_with_open_transactions_lose_nothing_and_duplicate_nothing()
-> anyhow::Result<()> {
    // Arrange: a subscriber following from the start while producers run.
    let feed = FeedServer::start(FeedOptions {
        poll_interval: Duration::from_millis(50),
        ..FeedOptions::default()
    })
    .await?;
    let mut stream = feed.subscribe(0, &[], 7).await?;

    // Act: 8 producers, 25 transactions each, held open for a random while; every fifth
    // rolled back.
    let mut producers = Vec::new();
    for producer in 0..8_u64 {
        let pool = feed.pool.clone();
        producers.push(tokio::spawn(async move {
            let mut committed = Vec::new();
            for round in 0..25_u64 {
                let mut tx = pool.begin().await?;
                let id = outbox::append(&mut tx, deleted()).await?;
                let pause = Uuid::new_v4().as_u128() % 15;
                tokio::time::sleep(Duration::from_millis(u64::try_from(pause)?)).await;
                if (producer + round) % 5 == 0 {
                    tx.rollback().await?;
                } else {
                    tx.commit().await?;
                    committed.push(id);
                }
            }
            anyhow::Ok(committed)
        }));
    }
    let mut committed = BTreeSet::new();
    for producer in producers {
        committed.extend(producer.await??);
    }
    let total = i64::try_from(committed.len())?;
    let delivered = read_until(&mut stream, total).await?;

    // Assert: exactly the committed events, numbered 1..=total in delivery order.
    let sequences: Vec<i64> = delivered.iter().map(|(sequence, _)| *sequence).collect();
    assert_eq!(sequences, (1..=total).collect::<Vec<_>>());
    let ids: BTreeSet<Uuid> = delivered.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), delivered.len(), "an event was delivered twice");
    assert_eq!(ids, committed);
    Ok(())
}

#[tokio::test]
async fn sequencers_racing_on_one_schema_hand_out_each_position_once() -> anyhow::Result<()> {
    // Arrange: committed rows and no feed running, so only the racers below sequence.
    let db = custops_testkit::TestDatabase::create().await?;
    let pool = crate::support::schema_pool(&db, "profiles").await?;
    for _ in 0..300 {
        commit(&pool, deleted()).await?;
    }

    // Act: six sequencers at once, in small batches.
    let mut racers = Vec::new();
    for _ in 0..6 {
        let pool = pool.clone();
        racers.push(tokio::spawn(async move {
            sequencer::sequence_pending(&pool, 17).await
        }));
    }
    let mut total = 0;
    for racer in racers {
        total += racer.await??;
    }

    // Assert
    assert_eq!(total, 300);
    let sequences: Vec<i64> = sqlx::query_scalar("SELECT sequence FROM outbox ORDER BY sequence")
        .fetch_all(&pool)
        .await?;
    assert_eq!(sequences, (1..=300).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn within_one_batch_events_keep_the_order_they_were_appended_in() -> anyhow::Result<()> {
    // Arrange: no feed running, so one sequencer run below takes both events in one batch.
    let db = custops_testkit::TestDatabase::create().await?;
    let pool = crate::support::schema_pool(&db, "profiles").await?;

    // Act: the first transaction begins first but appends last, as one that waited on the
    // aggregate's row lock would.
    let mut waited = pool.begin().await?;
    sqlx::query("SELECT 1").execute(&mut *waited).await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let first = commit(&pool, deleted()).await?;
    let second = outbox::append(&mut waited, deleted()).await?;
    waited.commit().await?;
    let sequenced = sequencer::sequence_pending(&pool, 1000).await?;

    // Assert
    assert_eq!(sequenced, 2);
    let order: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM outbox ORDER BY sequence")
        .fetch_all(&pool)
        .await?;
    assert_eq!(order, [first, second]);
    Ok(())
}

#[tokio::test]
async fn a_feed_position_is_unique_and_unsequenced_rows_stay_out_of_its_index() -> anyhow::Result<()>
{
    // Arrange: two events sequenced, one left pending.
    let db = custops_testkit::TestDatabase::create().await?;
    let pool = crate::support::schema_pool(&db, "profiles").await?;
    commit(&pool, deleted()).await?;
    commit(&pool, deleted()).await?;
    assert_eq!(sequencer::sequence_pending(&pool, 1000).await?, 2);
    commit(&pool, deleted()).await?;

    // Act: give the second event the first one's position.
    let duplicate = sqlx::query("UPDATE outbox SET sequence = 1 WHERE sequence = 2")
        .execute(&pool)
        .await;

    // Assert: refused as a unique violation, by an index over the sequenced rows only.
    let Err(error) = duplicate else {
        anyhow::bail!("two rows took feed position 1");
    };
    let code = error.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("23505"), "{error}");
    let (unique, predicate): (bool, Option<String>) = sqlx::query_as(
        "SELECT i.indisunique, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i \
         WHERE i.indexrelid = 'outbox_sequence'::regclass",
    )
    .fetch_one(&pool)
    .await?;
    assert!(unique);
    assert_eq!(predicate.as_deref(), Some("(sequence IS NOT NULL)"));
    Ok(())
}

/// `outbox::append_all`: events appended together, in one statement, are delivered in the
/// order given with their own ids, types and payloads; appending none writes nothing.
#[tokio::test]
async fn events_appended_together_are_delivered_in_the_order_given() -> anyhow::Result<()> {
    // Arrange: two kinds of events interleaved.
    let feed = FeedServer::start(FeedOptions::default()).await?;
    let mut stream = feed.subscribe(0, &[], 0).await?;
    let events: Vec<outbox::OutboxEvent> = (0..300)
        .map(|n| {
            if n % 3 == 0 {
                consent_changed()
            } else {
                deleted()
            }
        })
        .collect();

    // Act
    let mut tx = feed.pool.begin().await?;
    outbox::append_all(&mut tx, &[]).await?;
    outbox::append_all(&mut tx, &events).await?;
    tx.commit().await?;

    // Assert
    let delivered = read_until(&mut stream, 300).await?;
    let expected: Vec<(i64, Uuid)> = (1..)
        .zip(events.iter().map(outbox::OutboxEvent::id))
        .collect();
    assert_eq!(delivered, expected);
    let rows: Vec<(String, String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT aggregatetype, aggregateid, type, payload FROM outbox ORDER BY sequence",
    )
    .fetch_all(&feed.pool)
    .await?;
    assert_eq!(rows.len(), 300);
    for ((aggregate_type, aggregate_id, event_type, payload), event) in rows.iter().zip(&events) {
        assert_eq!(aggregate_type, "customer");
        assert_eq!(event_type, event.event_type());
        if event_type.ends_with("CustomerDeleted") {
            let deleted = CustomerDeleted::decode(payload.as_slice())?;
            assert_eq!(&deleted.customer_id, aggregate_id);
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_statement_appended_with_events_commits_and_rolls_back_with_them() -> anyhow::Result<()> {
    // Arrange: a table standing for what a change records beside its events (an idempotent
    // call's response).
    let feed = FeedServer::start(FeedOptions::default()).await?;
    sqlx::raw_sql("CREATE TABLE responses (key text PRIMARY KEY, response bytea)")
        .execute(&feed.pool)
        .await?;
    let record = "INSERT INTO responses (key, response) VALUES ($7, $8) \
                  ON CONFLICT (key) DO NOTHING RETURNING key";
    let kept = [deleted(), consent_changed()];
    let dropped = [deleted()];

    // Act: one change committed, one rolled back, one with no events committed, and one
    // whose record is refused (its key taken), rolled back.
    let mut tx = feed.pool.begin().await?;
    let kept_written = outbox::append_all_with(&mut tx, "", &kept, record, |q| {
        q.bind("kept").bind(vec![1_u8])
    })
    .await?;
    tx.commit().await?;
    let mut tx = feed.pool.begin().await?;
    outbox::append_all_with(&mut tx, "", &dropped, record, |q| {
        q.bind("dropped").bind(vec![2_u8])
    })
    .await?;
    tx.rollback().await?;
    let mut tx = feed.pool.begin().await?;
    let silent_written = outbox::append_all_with(&mut tx, "", &[], record, |q| {
        q.bind("silent").bind(vec![3_u8])
    })
    .await?;
    tx.commit().await?;
    let mut tx = feed.pool.begin().await?;
    let taken_written = outbox::append_all_with(&mut tx, "", &[deleted()], record, |q| {
        q.bind("kept").bind(vec![4_u8])
    })
    .await?;
    tx.rollback().await?;

    // Assert: each call says whether its record was written; the committed changes'
    // records, and only the committed events, in order.
    assert_eq!((kept_written, silent_written, taken_written), (1, 1, 0));
    let recorded: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT key, response FROM responses ORDER BY key")
            .fetch_all(&feed.pool)
            .await?;
    assert_eq!(
        recorded,
        [("kept".to_owned(), vec![1]), ("silent".to_owned(), vec![3])]
    );
    let mut stream = feed.subscribe(0, &[], 0).await?;
    let delivered = read_until(&mut stream, 2).await?;
    let expected: Vec<(i64, Uuid)> = (1..)
        .zip(kept.iter().map(outbox::OutboxEvent::id))
        .collect();
    assert_eq!(delivered, expected);
    let appended: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&feed.pool)
        .await?;
    assert_eq!(appended, 2, "the rolled-back event is not in the outbox");
    Ok(())
}
