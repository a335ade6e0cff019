//! The queries of static member uploads (UploadStaticMembers): which ids are known
//! customers, and the membership changes of ADD, REMOVE and REPLACE, each returning what it
//! changed so the use case can write one event per customer.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::store::memberships::reason_slug;
use custops_contracts::custops::segmentation::v1::ChangeReason;

/// The ids among `ids` that are known customers, sorted.
pub async fn known_customers(
    conn: &mut PgConnection,
    ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT customer_id FROM customer_facts WHERE customer_id = ANY($1) ORDER BY customer_id",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// Removes `customers` from the segment; returns each removed customer with its enter time.
pub async fn remove_members(
    conn: &mut PgConnection,
    segment_id: Uuid,
    customers: &[String],
) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    let rows = sqlx::query(
        "DELETE FROM memberships WHERE segment_id = $1 AND customer_id = ANY($2) \
         RETURNING customer_id, enter_time",
    )
    .bind(segment_id)
    .bind(customers)
    .fetch_all(conn)
    .await?;
    removed(&rows)
}

/// Removes every member not in `customers`; returns each removed customer with its enter
/// time.
pub async fn keep_only_members(
    conn: &mut PgConnection,
    segment_id: Uuid,
    customers: &[String],
) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    let rows = sqlx::query(
        "DELETE FROM memberships WHERE segment_id = $1 AND NOT (customer_id = ANY($2)) \
         RETURNING customer_id, enter_time",
    )
    .bind(segment_id)
    .bind(customers)
    .fetch_all(conn)
    .await?;
    removed(&rows)
}

fn removed(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    rows.iter()
        .map(|row| Ok((row.try_get("customer_id")?, row.try_get("enter_time")?)))
        .collect()
}

/// Adds `customers` not yet in the segment (version 1, entered at `now` for `reason`);
/// returns the ones added.
pub async fn add_members(
    conn: &mut PgConnection,
    segment_id: Uuid,
    customers: &[String],
    now: DateTime<Utc>,
    reason: ChangeReason,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO memberships (segment_id, customer_id, segment_version, enter_time, enter_reason) \
         SELECT $1, c, 1, $3, $4 FROM unnest($2::text[]) AS c \
         ON CONFLICT DO NOTHING RETURNING customer_id",
    )
    .bind(segment_id)
    .bind(customers)
    .bind(now)
    .bind(reason_slug(reason))
    .fetch_all(conn)
    .await
}

/// Sets the segment's `member_count` from its memberships; returns it.
pub async fn recount_members(
    conn: &mut PgConnection,
    segment_id: Uuid,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE segments SET member_count = (SELECT count(*) FROM memberships WHERE segment_id = $1) \
         WHERE segment_id = $1 RETURNING member_count",
    )
    .bind(segment_id)
    .fetch_one(conn)
    .await
}
