//! The `merges` table: the merge trail, with the snapshots an unmerge works from.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::json;
use crate::domain::{Actor, MergeRecord};
use crate::error::{ProfilesError, Result};

/// Cursor of ListMerges: (merge time µs, id) of the last record.
pub type MergeCursor = (i64, Uuid);

/// Where the merge trail goes on after `m` (the keyset of [`list`]'s order).
pub fn merge_cursor(m: &MergeRecord) -> MergeCursor {
    (m.merge_time.timestamp_micros(), m.id)
}

#[derive(Debug, sqlx::FromRow)]
struct MergeRow {
    merge_id: Uuid,
    source_customer_id: Uuid,
    target_customer_id: Uuid,
    state: i16,
    survivorship: String,
    source_value_paths: Vec<String>,
    moved_identity_count: i32,
    moved_activity_count: i64,
    actor_kind: i16,
    actor_id: String,
    actor_service: String,
    merge_reason: String,
    merge_time: DateTime<Utc>,
    unmerge_expire_time: DateTime<Utc>,
    unmerge_time: Option<DateTime<Utc>>,
    unmerge_actor_kind: Option<i16>,
    unmerge_actor_id: Option<String>,
    unmerge_actor_service: Option<String>,
    unmerge_reason: String,
}

impl MergeRow {
    fn into_record(self) -> Result<MergeRecord> {
        let unmerge = self.unmerge_time.map(|time| {
            let actor = Actor {
                kind: self.unmerge_actor_kind.unwrap_or(3),
                id: self.unmerge_actor_id.clone().unwrap_or_default(),
                service: self.unmerge_actor_service.clone().unwrap_or_default(),
            };
            (time, actor, self.unmerge_reason.clone())
        });
        Ok(MergeRecord {
            id: self.merge_id,
            source_customer_id: self.source_customer_id,
            target_customer_id: self.target_customer_id,
            state: self.state,
            choices: serde_json::from_str(&self.survivorship).map_err(anyhow::Error::from)?,
            source_value_paths: self.source_value_paths,
            moved_identity_count: self.moved_identity_count,
            moved_activity_count: self.moved_activity_count,
            actor: Actor {
                kind: self.actor_kind,
                id: self.actor_id,
                service: self.actor_service,
            },
            reason: self.merge_reason,
            merge_time: self.merge_time,
            unmerge_expire_time: self.unmerge_expire_time,
            unmerge,
        })
    }
}

macro_rules! merge_columns {
    () => {
        "merge_id, source_customer_id, target_customer_id, state, survivorship::text AS survivorship, \
         source_value_paths, moved_identity_count, moved_activity_count, actor_kind, actor_id, actor_service, \
         merge_reason, merge_time, unmerge_expire_time, unmerge_time, unmerge_actor_kind, unmerge_actor_id, \
         unmerge_actor_service, unmerge_reason"
    };
}

/// The merge `id`, optionally locked for the rest of the transaction, or NOT_FOUND.
pub(crate) async fn get(conn: &mut PgConnection, id: Uuid, lock: bool) -> Result<MergeRecord> {
    let row: Option<MergeRow> = if lock {
        sqlx::query_as(concat!(
            "SELECT ",
            merge_columns!(),
            " FROM merges WHERE merge_id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(conn)
        .await?
    } else {
        sqlx::query_as(concat!(
            "SELECT ",
            merge_columns!(),
            " FROM merges WHERE merge_id = $1"
        ))
        .bind(id)
        .fetch_optional(conn)
        .await?
    };
    row.ok_or(ProfilesError::NotFound {
        resource: "merge",
        id: id.to_string(),
    })?
    .into_record()
}

/// The snapshots a merge keeps until it is undone or purged (`None` once purged).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Snapshots {
    pub(crate) source_before: Option<Vec<u8>>,
    pub(crate) target_before: Option<Vec<u8>>,
    pub(crate) target_after: Option<Vec<u8>>,
}

/// The snapshots of merge `id`.
pub(crate) async fn snapshots(conn: &mut PgConnection, id: Uuid) -> Result<Snapshots> {
    Ok(sqlx::query_as(
        "SELECT source_before, target_before, target_after FROM merges WHERE merge_id = $1",
    )
    .bind(id)
    .fetch_one(conn)
    .await?)
}

/// Stores a new merge with the snapshots of both customers before it.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    record: &MergeRecord,
    source_before: Vec<u8>,
    target_before: Vec<u8>,
) -> Result<()> {
    let choices_json = json(&record.choices)?;
    sqlx::query(
        "INSERT INTO merges (merge_id, source_customer_id, target_customer_id, state, survivorship, \
         source_value_paths, moved_identity_count, moved_activity_count, actor_kind, actor_id, \
         actor_service, merge_reason, merge_time, unmerge_expire_time, source_before, target_before) \
         VALUES ($1, $2, $3, 1, $4::text::jsonb, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(record.id)
    .bind(record.source_customer_id)
    .bind(record.target_customer_id)
    .bind(choices_json)
    .bind(&record.source_value_paths)
    .bind(record.moved_identity_count)
    .bind(record.moved_activity_count)
    .bind(record.actor.kind)
    .bind(&record.actor.id)
    .bind(&record.actor.service)
    .bind(&record.reason)
    .bind(record.merge_time)
    .bind(record.unmerge_expire_time)
    .bind(source_before)
    .bind(target_before)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the snapshot of the target after merge `id`.
pub(crate) async fn set_target_after(
    conn: &mut PgConnection,
    id: Uuid,
    target_after: Vec<u8>,
) -> Result<()> {
    sqlx::query("UPDATE merges SET target_after = $2 WHERE merge_id = $1")
        .bind(id)
        .bind(target_after)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records merge `id` as undone at `now` by `actor` for `reason`, and drops its snapshots.
pub(crate) async fn mark_unmerged(
    conn: &mut PgConnection,
    id: Uuid,
    actor: &Actor,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "UPDATE merges SET state = 2, unmerge_time = $2, unmerge_actor_kind = $3, unmerge_actor_id = $4, \
         unmerge_actor_service = $5, unmerge_reason = $6, source_before = NULL, target_before = NULL, \
         target_after = NULL WHERE merge_id = $1",
    )
    .bind(id)
    .bind(now)
    .bind(actor.kind)
    .bind(&actor.id)
    .bind(&actor.service)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// Up to `limit` merges after the cursor `after`, newest first.
pub(crate) async fn list(
    conn: &mut PgConnection,
    customer_id: Option<Uuid>,
    states: &[i16],
    range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    after: Option<MergeCursor>,
    limit: i64,
) -> Result<Vec<MergeRecord>> {
    let (after_time, after_id) = match after {
        Some((micros, id)) => (DateTime::from_timestamp_micros(micros), Some(id)),
        None => (None, None),
    };
    let rows: Vec<MergeRow> = sqlx::query_as(concat!(
        "SELECT ", merge_columns!(), " FROM merges \
         WHERE ($1::uuid IS NULL OR source_customer_id = $1 OR target_customer_id = $1) \
         AND (cardinality($2::smallint[]) = 0 OR state = ANY($2)) \
         AND ($3::timestamptz IS NULL OR merge_time >= $3) AND ($4::timestamptz IS NULL OR merge_time < $4) \
         AND ($5::timestamptz IS NULL OR (merge_time, merge_id) < ($5, $6)) \
         ORDER BY merge_time DESC, merge_id DESC LIMIT $7"
    ))
    .bind(customer_id)
    .bind(states)
    .bind(range.0)
    .bind(range.1)
    .bind(after_time)
    .bind(after_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(MergeRow::into_record).collect()
}

/// Merges in which any of `ids` took part, oldest first.
pub(crate) async fn of_customers(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<MergeRecord>> {
    let rows: Vec<MergeRow> = sqlx::query_as(concat!(
        "SELECT ", merge_columns!(), " FROM merges \
         WHERE source_customer_id = ANY($1) OR target_customer_id = ANY($1) ORDER BY merge_time, merge_id"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(MergeRow::into_record).collect()
}
