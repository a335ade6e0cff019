//! `group_commit`: calls waiting together commit in one transaction; a call that fails, finds
//! its key taken or shares a lock with another is answered as it would be alone while the
//! rest still commit together; racing groups lose and double nothing.
//!
//! Each test first holds the only runner busy with a gate call, queues its calls, then opens
//! the gate, so which calls wait together is known rather than left to timing.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use custops_common::group_commit::{Call, GroupCommit, shared_work};
use custops_common::idempotency::{Completed, RequestKey};
use custops_common::trace_context;
use futures_util::FutureExt;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::idempotency::{TestError, count, key, pool};
use crate::support::deleted;

type Group = GroupCommit<TestError>;

/// A call that creates a thing named `name` under `key` (a second thing of one name fails on
/// the unique name), answering its id, with one event; `refuse` makes the work write and then
/// fail.
fn create(key: RequestKey, name: &str, lock: &str, refuse: bool) -> Call<TestError> {
    let name = name.to_owned();
    Call {
        key,
        now: Utc::now(),
        lock: lock.to_owned(),
        work: shared_work(move |conn: &mut PgConnection| {
            let name = name.clone();
            async move {
                let id = Uuid::now_v7();
                sqlx::query("INSERT INTO things (name, thing_id) VALUES ($1, $2)")
                    .bind(&name)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                if refuse {
                    return Err(TestError::Refused);
                }
                Ok(Completed::with_events(
                    id.as_bytes().to_vec(),
                    vec![deleted()],
                ))
            }
            .boxed()
        }),
    }
}

/// Sends `call` to `group` from a task of its own.
fn send(group: &Group, call: Call<TestError>) -> JoinHandle<Result<Vec<u8>, TestError>> {
    let group = group.clone();
    tokio::spawn(async move { group.run(call).await })
}

/// A call that holds the runner until the returned gate is opened; returns once it runs.
async fn hold_the_runner(
    group: &Group,
) -> anyhow::Result<(Arc<Notify>, JoinHandle<Result<Vec<u8>, TestError>>)> {
    let gate = Arc::new(Notify::new());
    let (started, running) = oneshot::channel::<()>();
    let started = Arc::new(std::sync::Mutex::new(Some(started)));
    let work_gate = gate.clone();
    let call = Call {
        key: key("gate", "gate"),
        now: Utc::now(),
        lock: "gate".to_owned(),
        work: shared_work(move |_conn: &mut PgConnection| {
            let gate = work_gate.clone();
            let started = started.lock().ok().and_then(|mut s| s.take());
            async move {
                if let Some(started) = started {
                    let _ = started.send(());
                }
                gate.notified().await;
                Ok(Completed::response(b"gate".to_vec()))
            }
            .boxed()
        }),
    };
    let held = send(group, call);
    running.await?;
    Ok((gate, held))
}

/// Waits until `n` calls wait in the queue behind the gate (each `send` is a task of its own).
async fn queued(group: &Group, n: usize) {
    for _ in 0..500 {
        if group.waiting() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("{n} calls never queued (only {})", group.waiting());
}

/// The transaction (`xmin`) that wrote each named thing, in the order named.
async fn writers(pool: &PgPool, names: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut xids = Vec::new();
    for name in names {
        let xid: String = sqlx::query_scalar("SELECT xmin::text FROM things WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await?;
        xids.push(xid);
    }
    Ok(xids)
}

/// The id a call answered, as stored.
async fn stored_id(pool: &PgPool, name: &str) -> anyhow::Result<Vec<u8>> {
    let id: Uuid = sqlx::query_scalar("SELECT thing_id FROM things WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await?;
    Ok(id.as_bytes().to_vec())
}

#[tokio::test]
async fn calls_waiting_together_commit_in_one_transaction_each_answered_its_own_response()
-> anyhow::Result<()> {
    // Arrange
    let (pool, _db) = pool().await?;
    let group = Group::start(pool.clone(), 1, 8);
    let (gate, held) = hold_the_runner(&group).await?;
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let calls: Vec<_> = names
        .iter()
        .map(|name| send(&group, create(key(name, name), name, name, false)))
        .collect();
    queued(&group, names.len()).await;

    // Act
    gate.notify_one();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await??);
    }
    held.await??;

    // Assert: one transaction wrote all eight; each call got its own thing's id; one key and
    // one event each.
    let xids = writers(&pool, &names).await?;
    assert!(xids.iter().all(|x| x == &xids[0]), "{xids:?}");
    for (name, answer) in names.iter().zip(&answers) {
        assert_eq!(answer, &stored_id(&pool, name).await?, "{name}");
    }
    assert_eq!(count(&pool, "idempotency_keys").await?, 9);
    assert_eq!(count(&pool, "outbox").await?, 8);
    Ok(())
}

#[tokio::test]
async fn a_call_failing_in_a_group_gets_its_own_error_and_the_others_still_commit_together()
-> anyhow::Result<()> {
    // Arrange: `taken` exists already, so a second create of it fails on the unique name.
    let (pool, _db) = pool().await?;
    sqlx::query("INSERT INTO things (name, thing_id) VALUES ('taken', $1)")
        .bind(Uuid::now_v7())
        .execute(&pool)
        .await?;
    let group = Group::start(pool.clone(), 1, 8);
    let (gate, held) = hold_the_runner(&group).await?;
    let first = send(&group, create(key("r-1", "one"), "one", "one", false));
    let refused = send(&group, create(key("r-2", "bad"), "bad", "bad", true));
    let duplicate = send(&group, create(key("r-3", "taken"), "taken", "taken", false));
    let last = send(&group, create(key("r-4", "two"), "two", "two", false));
    queued(&group, 4).await;

    // Act
    gate.notify_one();
    let (first, refused, duplicate, last) =
        (first.await?, refused.await?, duplicate.await?, last.await?);
    held.await??;

    // Assert: each failure answered as alone, nothing of it kept; the two others committed,
    // together.
    assert!(matches!(refused, Err(TestError::Refused)), "{refused:?}");
    assert!(
        matches!(duplicate, Err(TestError::Database(_))),
        "{duplicate:?}"
    );
    assert_eq!(first?, stored_id(&pool, "one").await?);
    assert_eq!(last?, stored_id(&pool, "two").await?);
    let xids = writers(&pool, &["one", "two"]).await?;
    assert_eq!(xids[0], xids[1]);
    assert_eq!(count(&pool, "things").await?, 3);
    assert_eq!(count(&pool, "idempotency_keys").await?, 3);
    assert_eq!(count(&pool, "outbox").await?, 2);
    Ok(())
}

#[tokio::test]
async fn a_replay_in_a_group_is_answered_the_first_response() -> anyhow::Result<()> {
    // Arrange: `alpha` was created under r-1 before; its replay's work now fails on the name.
    let (pool, _db) = pool().await?;
    let group = Group::start(pool.clone(), 1, 8);
    let first = group
        .run(create(key("r-1", "alpha"), "alpha", "alpha", false))
        .await?;
    let (gate, held) = hold_the_runner(&group).await?;
    let replay = send(&group, create(key("r-1", "alpha"), "alpha", "alpha", false));
    let beta = send(&group, create(key("r-2", "beta"), "beta", "beta", false));
    let gamma = send(&group, create(key("r-3", "gamma"), "gamma", "gamma", false));
    queued(&group, 3).await;

    // Act
    gate.notify_one();
    let (replay, beta, gamma) = (replay.await??, beta.await??, gamma.await??);
    held.await??;

    // Assert
    assert_eq!(replay, first);
    assert_eq!(beta, stored_id(&pool, "beta").await?);
    assert_eq!(gamma, stored_id(&pool, "gamma").await?);
    assert_eq!(count(&pool, "things").await?, 3);
    assert_eq!(count(&pool, "outbox").await?, 3);
    Ok(())
}

#[tokio::test]
async fn calls_naming_one_lock_or_one_key_never_share_a_transaction() -> anyhow::Result<()> {
    // Arrange: two calls lock `L`; two carry one key (the later is a replay).
    let (pool, _db) = pool().await?;
    let group = Group::start(pool.clone(), 1, 8);
    let (gate, held) = hold_the_runner(&group).await?;
    let l1 = send(&group, create(key("r-1", "l1"), "l1", "L", false));
    let l2 = send(&group, create(key("r-2", "l2"), "l2", "L", false));
    let k1 = send(&group, create(key("r-3", "k"), "k", "K1", false));
    let k2 = send(&group, create(key("r-3", "k"), "k", "K2", false));
    queued(&group, 4).await;

    // Act
    gate.notify_one();
    let (_l1, _l2, k1, k2) = (l1.await??, l2.await??, k1.await??, k2.await??);
    held.await??;

    // Assert: the second of each pair ran apart from the first; one key, one `k`.
    let xids = writers(&pool, &["l1", "l2", "k"]).await?;
    assert_ne!(xids[0], xids[1], "two calls locking L shared a transaction");
    assert_eq!(k1, k2);
    assert_eq!(count(&pool, "things").await?, 3);
    assert_eq!(count(&pool, "idempotency_keys").await?, 4);
    Ok(())
}

#[tokio::test]
async fn racing_groups_over_shared_rows_lose_and_double_nothing() -> anyhow::Result<()> {
    // Arrange: five counters, 200 calls each adding one to a counter and creating a thing,
    // from 40 tasks at once, two runners.
    let (pool, _db) = pool().await?;
    sqlx::raw_sql(
        "CREATE TABLE counters (name text PRIMARY KEY, n bigint NOT NULL); \
         INSERT INTO counters SELECT 'c' || i, 0 FROM generate_series(0, 4) i",
    )
    .execute(&pool)
    .await?;
    let group = Group::start(pool.clone(), 2, 8);
    let add = |i: usize| {
        let counter = format!("c{}", i % 5);
        let name = format!("t{i}");
        Call {
            key: key(&name, &name),
            now: Utc::now(),
            lock: counter.clone(),
            work: shared_work(move |conn: &mut PgConnection| {
                let (counter, name) = (counter.clone(), name.clone());
                async move {
                    sqlx::query("UPDATE counters SET n = n + 1 WHERE name = $1")
                        .bind(&counter)
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("INSERT INTO things (name, thing_id) VALUES ($1, $2)")
                        .bind(&name)
                        .bind(Uuid::now_v7())
                        .execute(&mut *conn)
                        .await?;
                    Ok(Completed::response(name.into_bytes()))
                }
                .boxed()
            }),
        }
    };

    // Act
    let tasks: Vec<_> = (0..40)
        .map(|t| {
            let group = group.clone();
            let calls: Vec<_> = (0..5).map(|j| add(t * 5 + j)).collect();
            tokio::spawn(async move {
                for call in calls {
                    group.run(call).await?;
                }
                Ok::<_, TestError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }

    // Assert: every call counted once, and calls did share transactions.
    let total: i64 = sqlx::query_scalar("SELECT sum(n)::bigint FROM counters")
        .fetch_one(&pool)
        .await?;
    assert_eq!(total, 200);
    assert_eq!(count(&pool, "things").await?, 200);
    assert_eq!(count(&pool, "idempotency_keys").await?, 200);
    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM things")
        .fetch_one(&pool)
        .await?;
    assert!(transactions < 200, "no two calls shared a transaction");
    Ok(())
}

#[tokio::test]
async fn each_calls_events_carry_its_own_callers_trace_though_another_task_runs_them()
-> anyhow::Result<()> {
    use opentelemetry::context::FutureExt as _;

    // Arrange: two callers in two traces, queued behind the gate so they share a group.
    let (pool, _db) = pool().await?;
    let group = Group::start(pool.clone(), 1, 8);
    let (gate, held) = hold_the_runner(&group).await?;
    let traces = [
        (
            "one",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        (
            "two",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ];
    let calls: Vec<_> = traces
        .iter()
        .map(|(name, traceparent)| {
            let group = group.clone();
            let call = create(key(name, name), name, name, false);
            let context = trace_context::context_from_traceparent(traceparent);
            tokio::spawn(async move { group.run(call).await }.with_context(context))
        })
        .collect();
    queued(&group, 2).await;

    // Act
    gate.notify_one();
    for call in calls {
        call.await??;
    }
    held.await??;

    // Assert: one transaction, and each event in its caller's trace.
    assert_eq!(
        writers(&pool, &["one", "two"])
            .await?
            .iter()
            .collect::<HashSet<_>>()
            .len(),
        1
    );
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT traceparent FROM outbox ORDER BY appended_at, id")
            .fetch_all(&pool)
            .await?;
    assert_eq!(stored.len(), 2);
    for (_, traceparent) in traces {
        let trace_id = &traceparent[3..35];
        assert!(
            stored.iter().any(|s| s.contains(trace_id)),
            "no event in trace {trace_id}: {stored:?}"
        );
    }
    Ok(())
}
