//! `idempotency::run`: one commit per key however many calls race, the first response to every
//! replay, REQUEST_ID_REUSED for another RPC or request, nothing kept of failed work, pruning.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use custops_common::idempotency::{self, Completed, KeyError, LastWrite, RequestKey};
use custops_common::outbox;
use custops_contracts::custops::profiles::v1::CustomerDeleted;
use custops_testkit::TestDatabase;
use futures_util::FutureExt;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::support::{PRODUCER, deleted, schema_pool};

/// A table like every service's `idempotency_keys`, and one the work writes to.
async fn pool() -> anyhow::Result<(PgPool, TestDatabase)> {
    let db = TestDatabase::create().await?;
    let pool = schema_pool(&db, PRODUCER.schema()).await?;
    sqlx::raw_sql(
        "CREATE TABLE idempotency_keys (caller text NOT NULL, request_id text NOT NULL, \
           method text NOT NULL, fingerprint bytea NOT NULL, response bytea NOT NULL, \
           create_time timestamptz NOT NULL, PRIMARY KEY (caller, request_id)); \
         CREATE TABLE things (name text PRIMARY KEY, thing_id uuid NOT NULL)",
    )
    .execute(&pool)
    .await?;
    Ok((pool, db))
}

#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("refused")]
    Refused,
}

fn key(request_id: &str, name: &str) -> RequestKey {
    let request = CustomerDeleted {
        customer_id: name.to_owned(),
        delete_time: None,
    };
    RequestKey::new("tests", request_id, "/test.v1.Things/Create", &request)
}

/// How a create writes its thing.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// In the work, a statement of its own.
    InTheWork,
    /// Left to the statement that records the key ([`LastWrite`]).
    Last,
}

/// Creates a thing named `name` (a unique name: a second create fails) with a new id, answers
/// the id and appends one event.
async fn create(pool: &PgPool, key: &RequestKey, name: &str) -> Result<Vec<u8>, TestError> {
    create_as(Write::InTheWork, pool, key, name).await
}

/// [`create`], its insert made `how`.
async fn create_as(
    how: Write,
    pool: &PgPool,
    key: &RequestKey,
    name: &str,
) -> Result<Vec<u8>, TestError> {
    let name = name.to_owned();
    idempotency::run(pool, key, Utc::now(), move |conn: &mut PgConnection| {
        async move {
            let id = Uuid::now_v7();
            let completed = Completed::with_events(id.as_bytes().to_vec(), vec![deleted()]);
            Ok(match how {
                Write::InTheWork => {
                    sqlx::query("INSERT INTO things (name, thing_id) VALUES ($1, $2)")
                        .bind(&name)
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                    completed
                }
                Write::Last => completed.with_last_write(Some(LastWrite::new(
                    "made AS (INSERT INTO things (name, thing_id) VALUES ($13, $14) RETURNING 1)",
                    move |query| query.bind(name).bind(id),
                ))),
            })
        }
        .boxed()
    })
    .await
}

async fn count(pool: &PgPool, table: &str) -> anyhow::Result<i64> {
    let sql = format!("SELECT count(*) FROM {table}");
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await?)
}

/// Twelve calls with one key at once (collected first, so they really race), then a replay:
/// one thing, one event, one key, and every answer the committed thing's id.
async fn racing_calls_commit_once_and_all_answer_the_first_response(
    how: Write,
) -> anyhow::Result<()> {
    // Arrange
    let (pool, _db) = pool().await?;
    let key = Arc::new(key("r-1", "alpha"));

    // Act
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let (pool, key) = (pool.clone(), Arc::clone(&key));
            tokio::spawn(async move { create_as(how, &pool, &key, "alpha").await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await??);
    }
    let replayed_later = create_as(how, &pool, &key, "alpha").await?;

    // Assert
    let stored: Uuid = sqlx::query_scalar("SELECT thing_id FROM things")
        .fetch_one(&pool)
        .await?;
    assert_eq!(count(&pool, "things").await?, 1);
    assert_eq!(count(&pool, "outbox").await?, 1);
    assert_eq!(count(&pool, "idempotency_keys").await?, 1);
    for answer in answers.iter().chain([&replayed_later]) {
        assert_eq!(answer.as_slice(), stored.as_bytes());
    }
    Ok(())
}

#[tokio::test]
async fn racing_calls_with_one_key_commit_once_and_all_answer_the_first_response()
-> anyhow::Result<()> {
    racing_calls_commit_once_and_all_answer_the_first_response(Write::InTheWork).await
}

#[tokio::test]
async fn racing_calls_whose_last_write_rides_with_the_key_commit_once_and_answer_the_first()
-> anyhow::Result<()> {
    // The later calls' last write runs into the first's thing (or they find the key taken):
    // they must answer the first response, not the unique violation.
    racing_calls_commit_once_and_all_answer_the_first_response(Write::Last).await
}

#[tokio::test]
async fn a_key_reused_with_another_request_or_rpc_is_refused() -> anyhow::Result<()> {
    // Arrange
    let (pool, _db) = pool().await?;
    create(&pool, &key("r-1", "alpha"), "alpha").await?;
    let mut other_rpc = key("r-1", "alpha");
    other_rpc.method = "/test.v1.Things/Delete";

    // Act
    let other_request = create(&pool, &key("r-1", "beta"), "beta").await;
    let other_method = create(&pool, &other_rpc, "gamma").await;

    // Assert: both refused by name, and neither wrote anything.
    for refused in [other_request, other_method] {
        assert!(
            matches!(refused, Err(TestError::Key(KeyError::Reused { ref request_id })) if request_id == "r-1"),
            "{refused:?}"
        );
    }
    assert_eq!(count(&pool, "things").await?, 1);
    assert_eq!(count(&pool, "outbox").await?, 1);
    Ok(())
}

#[tokio::test]
async fn failed_work_records_nothing_so_the_same_key_can_be_retried() -> anyhow::Result<()> {
    // Arrange
    let (pool, _db) = pool().await?;
    let key = key("r-2", "alpha");

    // Act: the work writes, then fails; then the retry succeeds.
    let failed: Result<Vec<u8>, TestError> =
        idempotency::run(&pool, &key, Utc::now(), |conn: &mut PgConnection| {
            async move {
                sqlx::query("INSERT INTO things (name, thing_id) VALUES ('alpha', $1)")
                    .bind(Uuid::now_v7())
                    .execute(&mut *conn)
                    .await?;
                Err(TestError::Refused)
            }
            .boxed()
        })
        .await;
    let retried = create(&pool, &key, "alpha").await?;

    // Assert
    assert!(matches!(failed, Err(TestError::Refused)), "{failed:?}");
    let stored: Uuid = sqlx::query_scalar("SELECT thing_id FROM things")
        .fetch_one(&pool)
        .await?;
    assert_eq!(retried.as_slice(), stored.as_bytes());
    assert_eq!(count(&pool, "outbox").await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_replay_whose_work_now_fails_answers_the_first_response() -> anyhow::Result<()> {
    // Arrange: the first call created `alpha`; a replay's work fails on the unique name.
    let (pool, _db) = pool().await?;
    let key = key("r-3", "alpha");
    let first = create(&pool, &key, "alpha").await?;

    // Act
    let replay = create(&pool, &key, "alpha").await?;
    let fresh_key_same_work = create(&pool, &self::key("r-4", "alpha"), "alpha").await;

    // Assert: the replay answers the first response; a new key gets the work's own error.
    assert_eq!(replay, first);
    assert!(
        matches!(fresh_key_same_work, Err(TestError::Database(_))),
        "{fresh_key_same_work:?}"
    );
    Ok(())
}

#[tokio::test]
async fn keys_older_than_the_retention_are_pruned_and_newer_ones_kept() -> anyhow::Result<()> {
    // Arrange: keys recorded 40, 36 and 1 days ago (the retention is 35 days).
    let (pool, _db) = pool().await?;
    let now = Utc::now();
    for (id, days) in [("old", 40), ("just-old", 36), ("new", 1)] {
        let mut tx = pool.begin().await?;
        let recorded = idempotency::record(
            &mut tx,
            &key(id, id),
            now - chrono::Duration::days(days),
            &[1],
            &[],
        )
        .await?;
        tx.commit().await?;
        assert!(recorded);
    }

    // Act
    let deleted = idempotency::prune(&pool, now, idempotency::RETENTION).await?;
    let again = idempotency::prune(&pool, now, idempotency::RETENTION).await?;

    // Assert
    assert_eq!((deleted, again), (2, 0));
    let left: Vec<String> = sqlx::query_scalar("SELECT request_id FROM idempotency_keys")
        .fetch_all(&pool)
        .await?;
    assert_eq!(left, ["new"]);
    assert_eq!(idempotency::RETENTION, Duration::from_secs(35 * 86_400));
    Ok(())
}

#[test]
fn a_request_with_a_map_fingerprints_the_same_however_it_was_decoded() -> anyhow::Result<()> {
    use custops_contracts::custops::segmentation::v1::{CreateSegmentRequest, Segment};
    use prost::Message as _;

    // Arrange: a request with many labels, as a client would send it twice.
    let request = CreateSegmentRequest {
        request_id: "r-5".to_owned(),
        segment: Some(Segment {
            display_name: "labelled".to_owned(),
            labels: (0..32)
                .map(|i| (format!("key{i}"), format!("value{i}")))
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sent = request.encode_to_vec();

    // Act: decoded on two arrivals.
    let first = CreateSegmentRequest::decode(sent.as_slice())?;
    let retry = CreateSegmentRequest::decode(sent.as_slice())?;

    // Assert: maps are ordered (the contracts' build), so both encode, and fingerprint, alike.
    assert_eq!(first.encode_to_vec(), sent);
    assert_eq!(
        idempotency::fingerprint(&first),
        idempotency::fingerprint(&retry)
    );
    Ok(())
}

#[tokio::test]
async fn without_a_request_id_the_work_commits_with_its_events_and_nothing_is_recorded()
-> anyhow::Result<()> {
    // Arrange
    let (pool, _db) = pool().await?;

    // Act: the same work twice, with no key.
    for name in ["alpha", "beta"] {
        let name = name.to_owned();
        let _: Vec<u8> =
            idempotency::run_optional::<TestError, _>(&pool, None, Utc::now(), move |conn| {
                async move {
                    sqlx::query("INSERT INTO things (name, thing_id) VALUES ($1, $2)")
                        .bind(&name)
                        .bind(Uuid::now_v7())
                        .execute(&mut *conn)
                        .await?;
                    Ok(Completed::with_events(Vec::new(), vec![deleted()]))
                }
                .boxed()
            })
            .await?;
    }

    // Assert: both ran and appended their events; no key was kept.
    assert_eq!(count(&pool, "things").await?, 2);
    assert_eq!(count(&pool, "outbox").await?, 2);
    assert_eq!(count(&pool, "idempotency_keys").await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_last_write_that_fails_without_a_replay_to_answer_is_the_error_and_keeps_nothing()
-> anyhow::Result<()> {
    // Arrange
    let (pool, _db) = pool().await?;
    create_as(Write::Last, &pool, &key("r-1", "alpha"), "alpha").await?;

    // Act: another request id, the same unique name.
    let failed = create_as(Write::Last, &pool, &key("r-2", "alpha"), "alpha").await;

    // Assert: the unique violation, and neither its key nor its event kept.
    assert!(
        matches!(&failed, Err(TestError::Database(sqlx::Error::Database(db))) if db.is_unique_violation()),
        "{failed:?}"
    );
    assert_eq!(count(&pool, "idempotency_keys").await?, 1);
    assert_eq!(count(&pool, "outbox").await?, 1);
    assert_eq!(count(&pool, "things").await?, 1);
    Ok(())
}

/// `idempotency::record_all`: the calls of a group record every key with its own response,
/// the group's last write and its events (each with the trace of the call that made it) in
/// one statement; with one key taken it says so, and the caller rolls all of it back.
#[tokio::test]
async fn a_group_records_every_key_and_its_write_or_says_a_key_was_taken() -> anyhow::Result<()> {
    // Arrange: two calls of a group, and a third whose key a call alone already recorded.
    let (pool, _db) = pool().await?;
    let (a, b, taken) = (key("g-1", "a"), key("g-2", "b"), key("g-3", "c"));
    create(&pool, &taken, "c").await?;
    let traced = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let events = [deleted().traced(traced.to_owned()), deleted()];
    let group_write = |names: Vec<String>| {
        Some(LastWrite::new(
            "made AS (INSERT INTO things (name, thing_id) \
             SELECT n, gen_random_uuid() FROM unnest($13::text[]) AS n RETURNING 1)",
            move |query| query.bind(names),
        ))
    };

    // Act
    let mut tx = pool.begin().await?;
    let keys: [(&RequestKey, &[u8]); 2] = [(&a, &[1]), (&b, &[2])];
    let recorded = idempotency::record_all(
        &mut tx,
        group_write(vec!["a".to_owned(), "b".to_owned()]),
        &keys,
        Utc::now(),
        &events,
    )
    .await?;
    tx.commit().await?;
    let mut tx = pool.begin().await?;
    let (d, e) = (key("g-4", "d"), key("g-3", "c"));
    let keys: [(&RequestKey, &[u8]); 2] = [(&d, &[4]), (&e, &[5])];
    let with_a_taken_key = idempotency::record_all(
        &mut tx,
        group_write(vec!["d".to_owned()]),
        &keys,
        Utc::now(),
        &[deleted()],
    )
    .await?;
    tx.rollback().await?;

    // Assert
    assert_eq!((recorded, with_a_taken_key), (2, 1));
    let responses: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT request_id, response FROM idempotency_keys WHERE request_id <> 'g-3' \
         ORDER BY request_id",
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(
        responses,
        [("g-1".to_owned(), vec![1]), ("g-2".to_owned(), vec![2])]
    );
    let things: Vec<String> = sqlx::query_scalar("SELECT name FROM things ORDER BY name")
        .fetch_all(&pool)
        .await?;
    assert_eq!(things, ["a", "b", "c"]);
    let traces: Vec<String> = sqlx::query_scalar(
        "SELECT traceparent FROM outbox WHERE id = ANY($1) ORDER BY appended_at",
    )
    .bind(
        events
            .iter()
            .map(outbox::OutboxEvent::id)
            .collect::<Vec<_>>(),
    )
    .fetch_all(&pool)
    .await?;
    assert_eq!(traces, [traced.to_owned(), String::new()]);
    Ok(())
}
