//! The SQL of the scheduled jobs: the next batch of members with work due, each locked with
//! `FOR UPDATE OF balances SKIP LOCKED` so that overlapping runs (on several replicas) never
//! take one member twice. The runs are in `workflow::jobs`.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::StoreResult;

/// Locks up to `limit` members (of `program_id`, or all programs) with lots to expire at
/// `now`, skipping members another run holds.
pub(crate) async fn lock_due_for_expiry(
    conn: &mut PgConnection,
    program_id: Option<Uuid>,
    now: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT b.member_id FROM balances b JOIN members m USING (member_id) \
         WHERE ($1::uuid IS NULL OR m.program_id = $1) AND EXISTS ( \
           SELECT 1 FROM point_lots l WHERE l.member_id = b.member_id \
             AND l.remaining_points > 0 AND l.expire_time <= $2) \
         ORDER BY b.member_id LIMIT $3 FOR UPDATE OF b SKIP LOCKED",
    )
    .bind(program_id)
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// Whether any lot (of `program_id`, or all programs) has points to expire at `now`.
pub(crate) async fn expiry_due(
    pool: &PgPool,
    program_id: Option<Uuid>,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM point_lots l JOIN members m USING (member_id) \
         WHERE ($1::uuid IS NULL OR m.program_id = $1) AND l.remaining_points > 0 \
           AND l.expire_time <= $2)",
    )
    .bind(program_id)
    .bind(now)
    .fetch_one(&mut *custops_common::db::read(pool).await?)
    .await?)
}

/// Locks up to `limit` members (of `program_id`, or all programs) with pending points to
/// release at `now`, skipping members another run holds.
pub(crate) async fn lock_due_for_release(
    conn: &mut PgConnection,
    program_id: Option<Uuid>,
    now: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT b.member_id FROM balances b JOIN members m USING (member_id) \
         WHERE ($1::uuid IS NULL OR m.program_id = $1) AND EXISTS ( \
           SELECT 1 FROM point_lots l WHERE l.member_id = b.member_id \
             AND l.pending AND l.remaining_points > 0 AND l.release_time <= $2) \
         ORDER BY b.member_id LIMIT $3 FOR UPDATE OF b SKIP LOCKED",
    )
    .bind(program_id)
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}

/// Locks up to `limit` ACTIVE or SUSPENDED members (of `program_id`, or all programs) whose
/// review or pending downgrade is due at `now`, skipping members another run holds.
pub(crate) async fn lock_due_for_review(
    conn: &mut PgConnection,
    program_id: Option<Uuid>,
    now: DateTime<Utc>,
    limit: i64,
) -> StoreResult<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT b.member_id FROM balances b JOIN members m USING (member_id) \
         WHERE ($1::uuid IS NULL OR m.program_id = $1) AND m.status IN (1, 2) \
           AND (m.next_review_time <= $2 OR m.pending_downgrade_time <= $2) \
         ORDER BY b.member_id LIMIT $3 FOR UPDATE OF b SKIP LOCKED",
    )
    .bind(program_id)
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?)
}
