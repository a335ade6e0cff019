//! The queries of PreviewSegment: a rule's members gathered into a temporary table inside the
//! caller's transaction, then sampled, counted and compared. Nothing is saved: the table is
//! dropped with the transaction (the use case rolls it back).

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::store::compile::CompiledRule;

/// Entering, exiting and unchanged counts of a preview against a stored segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    pub entering: i64,
    pub exiting: i64,
    pub unchanged: i64,
}

/// Fills `preview_members` with the customers matching `compiled` (best compiled grouped: it
/// reads everyone) at `now` / `today`; returns how many match.
pub async fn gather_members(
    conn: &mut PgConnection,
    compiled: &CompiledRule,
    now: DateTime<Utc>,
    today: NaiveDate,
) -> Result<u64, sqlx::Error> {
    sqlx::query("CREATE TEMP TABLE preview_members (customer_id text PRIMARY KEY) ON COMMIT DROP")
        .execute(&mut *conn)
        .await?;
    let select = format!(
        "INSERT INTO preview_members SELECT f.customer_id FROM {} WHERE {}",
        compiled.from_clause(),
        compiled.sql
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(select))
        .bind(now)
        .bind(today);
    Ok(compiled
        .bind(query)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// Up to `size` gathered members, pseudo-random: ordered by a hash salted per call.
pub async fn sample(conn: &mut PgConnection, size: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT customer_id FROM preview_members ORDER BY md5(customer_id || $1) LIMIT $2",
    )
    .bind(Uuid::new_v4().to_string())
    .bind(size)
    .fetch_all(conn)
    .await
}

/// The gathered members against the stored members of `segment_id`.
pub async fn compare(conn: &mut PgConnection, segment_id: Uuid) -> Result<Comparison, sqlx::Error> {
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE m.customer_id IS NULL) AS entering, \
                count(*) FILTER (WHERE p.customer_id IS NULL) AS exiting, \
                count(*) FILTER (WHERE p.customer_id IS NOT NULL \
                                   AND m.customer_id IS NOT NULL) AS unchanged \
         FROM preview_members p \
         FULL JOIN (SELECT customer_id FROM memberships WHERE segment_id = $1) m \
           ON p.customer_id = m.customer_id",
    )
    .bind(segment_id)
    .fetch_one(conn)
    .await?;
    Ok(Comparison {
        entering: row.try_get("entering")?,
        exiting: row.try_get("exiting")?,
        unchanged: row.try_get("unchanged")?,
    })
}
