//! Database errors become the canonical codes, against a real Postgres.

use std::time::Duration;

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
