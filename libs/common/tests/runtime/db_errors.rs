//! Database errors become the canonical codes, against a real Postgres.

use std::time::Duration;

use custops_common::db;
use custops_common::error::ServiceError;
use custops_testkit::TestDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use tonic::{Code, Status};

async fn pool(db: &TestDatabase) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(4)
        .connect(db.url())
        .await?)
}

fn code_of(error: sqlx::Error) -> Code {
    Status::from(ServiceError::from(error)).code()
}

#[tokio::test]
async fn unique_violations_are_already_exists_and_hide_the_sql() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let pool = pool(&db).await?;
    pool.execute("CREATE TABLE things (email text PRIMARY KEY)")
        .await?;
    pool.execute("INSERT INTO things VALUES ('a@example.com')")
        .await?;
    let error = sqlx::query("INSERT INTO things VALUES ('a@example.com')")
        .execute(&pool)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("duplicate accepted"))?;
    let status = Status::from(ServiceError::from(error));
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(!status.message().contains("things_pkey"), "{status:?}");
    assert!(!status.message().contains("a@example.com"), "{status:?}");
    Ok(())
}

#[tokio::test]
async fn serialization_failures_are_aborted() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let pool = pool(&db).await?;
    pool.execute("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)")
        .await?;
    pool.execute("INSERT INTO counters VALUES (1, 0)").await?;

    let mut first = pool.begin().await?;
    let mut second = pool.begin().await?;
    for tx in [&mut first, &mut second] {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            .execute(&mut **tx)
            .await?;
        sqlx::query("SELECT n FROM counters WHERE id = 1")
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("UPDATE counters SET n = n + 1 WHERE id = 1")
        .execute(&mut *first)
        .await?;
    first.commit().await?;
    let error = sqlx::query("UPDATE counters SET n = n + 1 WHERE id = 1")
        .execute(&mut *second)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("the lost update was accepted"))?;
    assert_eq!(code_of(error), Code::Aborted);
    Ok(())
}

#[tokio::test]
async fn statement_timeouts_are_deadline_exceeded_and_no_database_is_unavailable()
-> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let pool = pool(&db).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL statement_timeout = '50ms'")
        .execute(&mut *tx)
        .await?;
    let error = sqlx::query("SELECT pg_sleep(1)")
        .execute(&mut *tx)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("the sleep outlived its timeout"))?;
    assert_eq!(code_of(error), Code::DeadlineExceeded);

    // Nothing listens on port 1.
    let nowhere = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/custops")?;
    let error = sqlx::query("SELECT 1")
        .execute(&nowhere)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("connected to nothing"))?;
    assert_eq!(code_of(error), Code::Unavailable);
    Ok(())
}

#[tokio::test]
async fn a_locked_row_costs_waiters_a_lock_timeout_and_a_dry_pool_is_unavailable_at_once()
-> anyhow::Result<()> {
    use custops_common::config::DatabaseSettings;
    use custops_common::service::ServiceKind;
    // Arrange: the service pool as services open it (2 connections, a 600 ms lock timeout, a
    // 200 ms acquire timeout) and a row another session holds.
    let db = TestDatabase::create().await?;
    let admin = pool(&db).await?;
    admin.execute("CREATE SCHEMA profiles").await?;
    admin
        .execute("CREATE TABLE profiles.members (id int PRIMARY KEY, points bigint)")
        .await?;
    admin
        .execute("INSERT INTO profiles.members VALUES (1, 0), (2, 0)")
        .await?;
    let mut settings = DatabaseSettings::new(ServiceKind::Profiles, db.url());
    settings.max_connections = 2;
    settings.lock_timeout = Duration::from_millis(600);
    settings.acquire_timeout = Duration::from_millis(200);
    let service = custops_common::db::connect(&settings).await?;
    let mut holder = admin.begin().await?;
    sqlx::query("SELECT * FROM profiles.members WHERE id = 1 FOR UPDATE")
        .execute(&mut *holder)
        .await?;

    // Act: two calls wait on the held row, taking both pooled connections; a third call
    // wants an unrelated row.
    let waiter = |pool: PgPool| async move {
        sqlx::query("UPDATE members SET points = points + 1 WHERE id = 1")
            .execute(&pool)
            .await
    };
    let first = tokio::spawn(waiter(service.clone()));
    let second = tokio::spawn(waiter(service.clone()));
    // Both are waiting on the lock (so both connections are taken) before the third call.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'custops-profiles' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&admin)
        .await?;
        if waiting == 2 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the waiters never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    let unrelated = sqlx::query("UPDATE members SET points = points + 1 WHERE id = 2")
        .execute(&service)
        .await;
    let unrelated_took = started.elapsed();

    // Assert: the waiters give up with ABORTED after the lock timeout, the unrelated call is
    // UNAVAILABLE after the acquire timeout rather than hanging, and all within a second.
    for waiter in [first, second] {
        let error = waiter
            .await?
            .err()
            .ok_or_else(|| anyhow::anyhow!("updated a locked row"))?;
        assert_eq!(code_of(error), Code::Aborted);
    }
    let error = unrelated
        .err()
        .ok_or_else(|| anyhow::anyhow!("the pool had a free connection"))?;
    assert_eq!(code_of(error), Code::Unavailable);
    assert!(
        unrelated_took < Duration::from_secs(1),
        "the unrelated call hung {unrelated_took:?}"
    );
    // Once the waiters gave up, the pool serves again at once.
    sqlx::query("UPDATE members SET points = points + 1 WHERE id = 2")
        .execute(&service)
        .await?;
    holder.rollback().await?;
    Ok(())
}

#[tokio::test]
async fn a_real_deadlock_is_a_lost_race_tried_again_and_other_errors_are_not() -> anyhow::Result<()>
{
    // Arrange: two rows, two transactions each holding one.
    let db = TestDatabase::create().await?;
    let pool = pool(&db).await?;
    pool.execute("CREATE TABLE pair (id int PRIMARY KEY); INSERT INTO pair VALUES (1), (2)")
        .await?;
    let lock = |id: i32| format!("SELECT id FROM pair WHERE id = {id} FOR UPDATE");
    let (mut one, mut two) = (pool.begin().await?, pool.begin().await?);
    (&mut *one).execute(sqlx::AssertSqlSafe(lock(1))).await?;
    (&mut *two).execute(sqlx::AssertSqlSafe(lock(2))).await?;

    // Act: each asks for the other's row, so Postgres makes one the victim; then a retried
    // attempt that loses once, and one that fails otherwise.
    let (first, second) = tokio::join!(
        (&mut *one).execute(sqlx::AssertSqlSafe(lock(2))),
        (&mut *two).execute(sqlx::AssertSqlSafe(lock(1)))
    );
    let lost: Vec<sqlx::Error> = [first.err(), second.err()].into_iter().flatten().collect();
    let other = pool.execute("SELECT no_such_column FROM pair").await.err();
    drop((one, two));
    let deadlock = lost
        .into_iter()
        .next()
        .map(anyhow::Error::from)
        .ok_or_else(|| anyhow::anyhow!("no transaction lost"))?;
    let recognised = db::lost_a_race(&deadlock);
    let mut pending = Some(deadlock.context("a job's step"));
    let mut calls = 0;
    let retried = db::retry_lost_races(3, || {
        calls += 1;
        let outcome = match pending.take() {
            Some(lost) => Err(lost),
            None => Ok(calls),
        };
        std::future::ready(outcome)
    })
    .await?;
    let other = anyhow::Error::from(other.ok_or_else(|| anyhow::anyhow!("no error"))?);
    let mut failing_calls = 0;
    let not_retried = db::retry_lost_races(3, || {
        failing_calls += 1;
        std::future::ready(anyhow::Result::<()>::Err(anyhow::anyhow!("{other}")))
    })
    .await;

    // Assert: the deadlock is recognised (also under context) and its work tried again;
    // another error is not, and fails at once.
    assert!(recognised);
    assert_eq!(retried, 2);
    assert!(!db::lost_a_race(&other), "{other:#}");
    assert!(not_retried.is_err());
    assert_eq!(failing_calls, 1);
    Ok(())
}

/// The server session behind the pool's only connection, ended from another session once the
/// connection is back in the pool (its return ping done, which would otherwise find the session
/// gone first); waits until the backend has exited.
async fn end_the_session_of(pool: &PgPool, admin: &PgPool) -> anyhow::Result<i32> {
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await?;
    let returned = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool.num_idle() == 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < returned,
            "the connection never came back to the pool"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
        .bind(pid)
        .fetch_one(admin)
        .await?;
    assert!(ended, "backend {pid} did not exit");
    Ok(pid)
}

#[tokio::test]
async fn a_connection_idle_past_the_window_is_pinged_and_a_dead_one_replaced() -> anyhow::Result<()>
{
    let db = TestDatabase::create().await?;
    let admin = pool(&db).await?;
    let pool = db::pool_options_pinging_after(1, Duration::ZERO)
        .connect(db.url())
        .await?;
    let ended = end_the_session_of(&pool, &admin).await?;
    // The ping on acquire finds the session gone and the pool opens another: the call never
    // sees the dead connection.
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await?;
    assert_ne!(pid, ended);
    Ok(())
}

#[tokio::test]
async fn a_connection_used_a_moment_ago_is_handed_out_unpinged() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let admin = pool(&db).await?;
    // A window no test outlasts: every acquire here is "a moment after" the last use.
    let pool = db::pool_options_pinging_after(1, Duration::from_secs(3600))
        .connect(db.url())
        .await?;
    let ended = end_the_session_of(&pool, &admin).await?;
    // No ping: the call gets the connection whose session ended, and fails as UNAVAILABLE
    // (with sqlx's default ping on acquire it would have succeeded on a new connection).
    let error = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a query on an ended session succeeded"))?;
    assert_eq!(code_of(error), Code::Unavailable);
    // The broken connection was closed on its return, not handed out again.
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await?;
    assert_ne!(pid, ended);
    Ok(())
}
