//! Memberships (the truth behind lookups), member counts, and the notifications that tell every
//! replica's lookup cache what changed once a transaction commits.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use custops_contracts::custops::segmentation::v1::ChangeReason;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

/// The LISTEN/NOTIFY channel of membership changes. Payloads: `c:<customer id>` (that
/// customer's memberships changed), `s:<segment id>` (that segment's size or existence
/// changed), `e` (the cache epoch moved: every customer may have changed).
pub const CHANNEL: &str = "segmentation_membership";

/// One of a customer's current memberships.
#[derive(Debug, Clone)]
pub struct CurrentMembership {
    pub segment_id: Uuid,
    pub rule: bool,
    /// The segment's current version.
    pub segment_version: i64,
    pub enter_time: DateTime<Utc>,
}

/// The column value of `enter_reason`.
pub fn reason_slug(reason: ChangeReason) -> &'static str {
    match reason {
        ChangeReason::Unspecified | ChangeReason::Event => "event",
        ChangeReason::Schedule => "schedule",
        ChangeReason::Recompute => "recompute",
        ChangeReason::StaticUpload => "static_upload",
        ChangeReason::Erasure => "erasure",
        ChangeReason::Merge => "merge",
    }
}

/// The reason an `enter_reason` column holds.
pub fn reason_from_slug(slug: &str) -> ChangeReason {
    match slug {
        "event" => ChangeReason::Event,
        "schedule" => ChangeReason::Schedule,
        "recompute" => ChangeReason::Recompute,
        "static_upload" => ChangeReason::StaticUpload,
        "erasure" => ChangeReason::Erasure,
        "merge" => ChangeReason::Merge,
        _ => ChangeReason::Unspecified,
    }
}

/// Every current membership of `customer_id`, with its segment's kind and version.
pub async fn customer_memberships(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<Vec<CurrentMembership>, sqlx::Error> {
    let mut many = customers_memberships(conn, &[customer_id.to_owned()]).await?;
    Ok(many.remove(customer_id).unwrap_or_default())
}

/// [`customer_memberships`] of several customers in one statement, by customer (those without
/// any are absent), each in segment id order.
pub async fn customers_memberships(
    conn: &mut PgConnection,
    customer_ids: &[String],
) -> Result<HashMap<String, Vec<CurrentMembership>>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT m.customer_id, m.segment_id, s.kind = 'rule' AS rule, s.version, m.enter_time \
         FROM memberships m JOIN segments s USING (segment_id) \
         WHERE m.customer_id = ANY($1) ORDER BY m.customer_id, m.segment_id",
    )
    .bind(customer_ids)
    .fetch_all(conn)
    .await?;
    let mut by_customer: HashMap<String, Vec<CurrentMembership>> = HashMap::new();
    for row in &rows {
        by_customer
            .entry(row.try_get("customer_id")?)
            .or_default()
            .push(CurrentMembership {
                segment_id: row.try_get("segment_id")?,
                rule: row.try_get("rule")?,
                segment_version: row.try_get("version")?,
                enter_time: row.try_get("enter_time")?,
            });
    }
    Ok(by_customer)
}

/// Records, for merge `merge_id`, the static segments `source_segments` the merged-away customer
/// held; for those among `passed` (which the merge just gave `target`) also the enter time of
/// the target's new membership.
pub async fn record_merge_statics(
    conn: &mut PgConnection,
    merge_id: &str,
    target: &str,
    source_segments: &[Uuid],
    passed: &[Uuid],
) -> Result<(), sqlx::Error> {
    if source_segments.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO merge_static_memberships (merge_id, segment_id, passed_enter_time) \
         SELECT $1, s.segment_id, m.enter_time FROM unnest($3::uuid[]) AS s (segment_id) \
         LEFT JOIN memberships m ON m.segment_id = s.segment_id AND m.customer_id = $2 \
           AND s.segment_id = ANY($4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(merge_id)
    .bind(target)
    .bind(source_segments)
    .bind(passed)
    .execute(conn)
    .await?;
    Ok(())
}

/// A static membership merge `merge_id` took from its source, as the unmerge gives it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedStatic {
    pub segment_id: Uuid,
    pub segment_version: i64,
    /// The target still holds the membership the merge gave it: it ends.
    pub target_leaves: bool,
}

/// Takes (deletes and returns) what merge `merge_id` recorded about static memberships, so an
/// unmerge applies it once.
pub async fn take_merge_statics(
    conn: &mut PgConnection,
    merge_id: &str,
    target: &str,
) -> Result<Vec<MergedStatic>, sqlx::Error> {
    let rows = sqlx::query(
        "WITH taken AS (DELETE FROM merge_static_memberships WHERE merge_id = $1 \
           RETURNING segment_id, passed_enter_time) \
         SELECT t.segment_id, s.version, \
           COALESCE(m.enter_time = t.passed_enter_time, false) AS target_leaves \
         FROM taken t JOIN segments s USING (segment_id) \
         LEFT JOIN memberships m ON m.segment_id = t.segment_id AND m.customer_id = $2 \
         ORDER BY t.segment_id",
    )
    .bind(merge_id)
    .bind(target)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(MergedStatic {
                segment_id: row.try_get("segment_id")?,
                segment_version: row.try_get("version")?,
                target_leaves: row.try_get("target_leaves")?,
            })
        })
        .collect()
}

/// Adds a membership; false when it already existed.
pub async fn insert(
    conn: &mut PgConnection,
    segment_id: Uuid,
    customer_id: &str,
    segment_version: i64,
    enter_time: DateTime<Utc>,
    reason: ChangeReason,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO memberships (segment_id, customer_id, segment_version, enter_time, enter_reason) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(segment_id)
    .bind(customer_id)
    .bind(segment_version)
    .bind(enter_time)
    .bind(reason_slug(reason))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends a membership; its enter time, or `None` when there was none.
pub async fn delete(
    conn: &mut PgConnection,
    segment_id: Uuid,
    customer_id: &str,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "DELETE FROM memberships WHERE segment_id = $1 AND customer_id = $2 RETURNING enter_time",
    )
    .bind(segment_id)
    .bind(customer_id)
    .fetch_optional(conn)
    .await
}

/// Moves a segment's member count by `delta`.
pub async fn add_to_count(
    conn: &mut PgConnection,
    segment_id: Uuid,
    delta: i64,
) -> Result<(), sqlx::Error> {
    if delta == 0 {
        return Ok(());
    }
    sqlx::query("UPDATE segments SET member_count = member_count + $2 WHERE segment_id = $1")
        .bind(segment_id)
        .bind(delta)
        .execute(conn)
        .await?;
    Ok(())
}

/// Tells every replica, once the transaction commits, that these customers' memberships
/// changed. Postgres drops a notification of a rolled-back transaction and folds duplicates.
pub async fn notify_customers(
    conn: &mut PgConnection,
    customer_ids: &[String],
) -> Result<(), sqlx::Error> {
    if customer_ids.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, 'c:' || c) FROM unnest($2::text[]) AS c")
        .bind(CHANNEL)
        .bind(customer_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Tells every replica, once the transaction commits, that these segments' sizes or
/// existence changed.
pub async fn notify_segments(
    conn: &mut PgConnection,
    segment_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    if segment_ids.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, 's:' || s::text) FROM unnest($2::uuid[]) AS s")
        .bind(CHANNEL)
        .bind(segment_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves the cache epoch (every cached customer list becomes unreachable) and tells every
/// replica after commit.
pub async fn bump_epoch(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT nextval('membership_cache_epoch'), pg_notify($1, 'e')")
        .bind(CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

/// The current cache epoch.
pub async fn epoch<'e>(executor: impl PgExecutor<'e>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM membership_cache_epoch",
    )
    .fetch_one(executor)
    .await
}

/// Ids of the segments `customer_id` is a member of, ascending.
pub async fn customer_segment_ids<'e>(
    executor: impl PgExecutor<'e>,
    customer_id: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT segment_id FROM memberships WHERE customer_id = $1 ORDER BY segment_id",
    )
    .bind(customer_id)
    .fetch_all(executor)
    .await
}

/// The segment ids of each of `customer_ids` that is a member of any, ascending per customer.
pub async fn customers_segment_ids<'e>(
    executor: impl PgExecutor<'e>,
    customer_ids: &[String],
) -> Result<std::collections::HashMap<String, Vec<Uuid>>, sqlx::Error> {
    let rows: Vec<(String, Vec<Uuid>)> = sqlx::query_as(
        "SELECT customer_id, array_agg(segment_id ORDER BY segment_id) FROM memberships \
         WHERE customer_id = ANY($1) GROUP BY customer_id",
    )
    .bind(customer_ids)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().collect())
}

/// One of a customer's memberships as shown to people: the segment's name and kind and when
/// the current, unbroken membership began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMembership {
    pub segment_id: Uuid,
    pub display_name: String,
    pub rule_kind: bool,
    pub enter_time: DateTime<Utc>,
}

/// Every membership of `customer_id` with its segment's name and kind, by segment id.
pub async fn customer_segment_memberships<'e>(
    executor: impl PgExecutor<'e>,
    customer_id: &str,
) -> Result<Vec<SegmentMembership>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT m.segment_id, s.display_name, s.kind = 'rule' AS rule_kind, m.enter_time \
         FROM memberships m JOIN segments s USING (segment_id) \
         WHERE m.customer_id = $1 ORDER BY m.segment_id",
    )
    .bind(customer_id)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(SegmentMembership {
                segment_id: row.try_get("segment_id")?,
                display_name: row.try_get("display_name")?,
                rule_kind: row.try_get("rule_kind")?,
                enter_time: row.try_get("enter_time")?,
            })
        })
        .collect()
}

/// Which of `customer_ids` are members of `segment_id`.
pub async fn members_among<'e>(
    executor: impl PgExecutor<'e>,
    segment_id: Uuid,
    customer_ids: &[String],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT customer_id FROM memberships WHERE segment_id = $1 AND customer_id = ANY($2)",
    )
    .bind(segment_id)
    .bind(customer_ids)
    .fetch_all(executor)
    .await
}

/// Up to `limit` members of `segment_id` after `after`, ascending.
pub async fn members_page<'e>(
    executor: impl PgExecutor<'e>,
    segment_id: Uuid,
    after: &str,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT customer_id FROM memberships WHERE segment_id = $1 AND customer_id > $2 \
         ORDER BY customer_id LIMIT $3",
    )
    .bind(segment_id)
    .bind(after)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// A customer's membership in one segment: enter time and reason.
pub async fn membership<'e>(
    executor: impl PgExecutor<'e>,
    segment_id: Uuid,
    customer_id: &str,
) -> Result<Option<(DateTime<Utc>, String)>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT enter_time, enter_reason FROM memberships WHERE segment_id = $1 AND customer_id = $2",
    )
    .bind(segment_id)
    .bind(customer_id)
    .fetch_optional(executor)
    .await?;
    row.map(|r| Ok((r.try_get("enter_time")?, r.try_get("enter_reason")?)))
        .transpose()
}

/// The segment's member count, `None` when it does not exist.
pub async fn segment_size<'e>(
    executor: impl PgExecutor<'e>,
    segment_id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT member_count FROM segments WHERE segment_id = $1")
        .bind(segment_id)
        .fetch_optional(executor)
        .await
}

/// Advisory lock key shared by incremental evaluation (shared mode) and set-based recomputes
/// (exclusive mode).
const RECOMPUTE_LOCK: i64 = 0x5345_474d_454e_5401;

/// Taken (shared, until the transaction ends) by every incremental membership change before
/// it reads memberships. A set-based recompute takes the lock exclusively, so an incremental
/// change either commits before the recompute reads the facts, or evaluates after the
/// recompute committed: it never acts on memberships the recompute is about to replace with
/// a decision made on older facts.
pub async fn lock_for_incremental(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(RECOMPUTE_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Taken (exclusive, until the transaction ends) by a set-based recompute before it locks the
/// segment row; see [`lock_for_incremental`].
pub async fn lock_for_recompute(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(RECOMPUTE_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}
