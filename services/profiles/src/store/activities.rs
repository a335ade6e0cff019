//! The `activities` table: idempotent inserts on (source, event id), the timeline, the
//! Customer 360 aggregates, and the moves of a merge and an unmerge.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::json;
use crate::domain::activity::{ActivitySummary, NewActivity};
use crate::domain::{Activity, ActivityDetails, ActivityFilter};
use crate::error::Result;

/// Cursor of ListActivities: (occur time µs, id) of the last activity.
pub type ActivityCursor = (i64, Uuid);

/// Where the timeline goes on after `a` (the keyset of [`list`]'s order).
pub fn activity_cursor(a: &Activity) -> ActivityCursor {
    (a.occur_time.timestamp_micros(), a.id)
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ActivityRow {
    activity_id: Uuid,
    customer_id: Uuid,
    source: String,
    event_id: String,
    occur_time: DateTime<Utc>,
    record_time: DateTime<Utc>,
    channel: String,
    details: String,
}

impl ActivityRow {
    pub(crate) fn into_activity(self) -> Result<Activity> {
        let details: ActivityDetails =
            serde_json::from_str(&self.details).map_err(anyhow::Error::from)?;
        Ok(Activity {
            id: self.activity_id,
            customer_id: self.customer_id,
            source: self.source,
            event_id: self.event_id,
            occur_time: self.occur_time,
            record_time: self.record_time,
            channel: self.channel,
            details,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
struct StoredActivityRow {
    #[sqlx(flatten)]
    row: ActivityRow,
    content_hash: String,
}

/// The activity stored under (source, event id) with its content hash.
pub(crate) async fn existing(
    conn: &mut PgConnection,
    source: &str,
    event_id: &str,
) -> Result<Option<(Activity, String)>> {
    let row: Option<StoredActivityRow> = sqlx::query_as(
        "SELECT activity_id, customer_id, source, event_id, occur_time, record_time, channel, \
         details::text AS details, content_hash FROM activities WHERE source = $1 AND event_id = $2",
    )
    .bind(source)
    .bind(event_id)
    .fetch_optional(conn)
    .await?;
    match row {
        Some(stored) => Ok(Some((stored.row.into_activity()?, stored.content_hash))),
        None => Ok(None),
    }
}

/// Inserts activities in one statement, skipping keys already recorded; answers the stored
/// ones.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    rows: &[(Uuid, &NewActivity, String)],
    now: DateTime<Utc>,
) -> Result<Vec<Activity>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::new();
    let mut customers = Vec::new();
    let mut sources = Vec::new();
    let mut event_ids = Vec::new();
    let mut occur_times = Vec::new();
    let mut channels = Vec::new();
    let mut kinds = Vec::new();
    let mut interaction_kinds = Vec::new();
    let mut amounts: Vec<Option<i64>> = Vec::new();
    let mut currencies: Vec<Option<String>> = Vec::new();
    let mut details = Vec::new();
    let mut hashes = Vec::new();
    for (customer_id, a, hash) in rows {
        ids.push(Uuid::now_v7());
        customers.push(*customer_id);
        sources.push(a.source.clone());
        event_ids.push(a.event_id.clone());
        occur_times.push(a.occur_time);
        channels.push(a.channel.clone());
        kinds.push(a.details.kind());
        interaction_kinds.push(a.details.interaction_kind());
        amounts.push(a.details.amount().map(|(m, _)| m));
        currencies.push(a.details.amount().map(|(_, c)| c.to_owned()));
        details.push(json(&a.details)?);
        hashes.push(hash.clone());
    }
    let stored: Vec<ActivityRow> = sqlx::query_as(
        "INSERT INTO activities (activity_id, customer_id, source, event_id, occur_time, record_time, \
         channel, kind, interaction_kind, amount_minor, currency, details, content_hash) \
         SELECT id, customer_id, source, event_id, occur_time, $13::timestamptz, channel, kind, interaction_kind, \
         amount_minor, currency, details::jsonb, content_hash FROM unnest($1::uuid[], $2::uuid[], \
         $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::smallint[], $8::smallint[], \
         $9::bigint[], $10::text[], $11::text[], $12::text[]) AS t(id, customer_id, source, event_id, \
         occur_time, channel, kind, interaction_kind, amount_minor, currency, details, content_hash) \
         ON CONFLICT (source, event_id) DO NOTHING \
         RETURNING activity_id, customer_id, source, event_id, occur_time, record_time, channel, details::text AS details",
    )
    .bind(&ids)
    .bind(&customers)
    .bind(&sources)
    .bind(&event_ids)
    .bind(&occur_times)
    .bind(&channels)
    .bind(&kinds)
    .bind(&interaction_kinds)
    .bind(&amounts)
    .bind(&currencies)
    .bind(&details)
    .bind(&hashes)
    .bind(now)
    .fetch_all(conn)
    .await?;
    let mut stored = stored
        .into_iter()
        .map(ActivityRow::into_activity)
        .collect::<Result<Vec<_>>>()?;
    // Events in stream order.
    let order: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    stored.sort_by_key(|a| order.get(&a.id).copied().unwrap_or(usize::MAX));
    Ok(stored)
}

/// The state of each of `ids` that exists.
pub(crate) async fn customer_states(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, i16>> {
    Ok(sqlx::query_as::<_, (Uuid, i16)>(
        "SELECT customer_id, state FROM customers WHERE customer_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(conn)
    .await?
    .into_iter()
    .collect())
}

/// The content hashes stored under the keys (`sources[i]`, `event_ids[i]`) that exist.
pub(crate) async fn content_hashes(
    conn: &mut PgConnection,
    sources: &[&str],
    event_ids: &[&str],
) -> Result<HashMap<(String, String), String>> {
    Ok(sqlx::query_as::<_, (String, String, String)>(
        "SELECT a.source, a.event_id, a.content_hash FROM activities a \
                 JOIN unnest($1::text[], $2::text[]) AS k(source, event_id) \
                 ON a.source = k.source AND a.event_id = k.event_id",
    )
    .bind(sources)
    .bind(event_ids)
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|(s, e, h)| ((s, e), h))
    .collect())
}

/// Up to `limit` activities of a customer's timeline after the cursor `after`, newest first.
pub(crate) async fn list(
    conn: &mut PgConnection,
    customer_id: Uuid,
    filter: &ActivityFilter,
    after: Option<ActivityCursor>,
    limit: i64,
) -> Result<Vec<Activity>> {
    let (after_time, after_id) = match after {
        Some((micros, id)) => (DateTime::from_timestamp_micros(micros), Some(id)),
        None => (None, None),
    };
    let rows: Vec<ActivityRow> = sqlx::query_as(
        "SELECT activity_id, customer_id, source, event_id, occur_time, record_time, channel, \
         details::text AS details FROM activities WHERE customer_id = $1 \
         AND (cardinality($2::smallint[]) = 0 OR kind = ANY($2)) \
         AND (cardinality($3::smallint[]) = 0 OR interaction_kind = ANY($3)) \
         AND ($4::text IS NULL OR channel = $4) AND ($5::text IS NULL OR source = $5) \
         AND ($6::timestamptz IS NULL OR occur_time >= $6) AND ($7::timestamptz IS NULL OR occur_time < $7) \
         AND ($8::timestamptz IS NULL OR (occur_time, activity_id) < ($8, $9)) \
         ORDER BY occur_time DESC, activity_id DESC LIMIT $10",
    )
    .bind(customer_id)
    .bind(&filter.kinds)
    .bind(&filter.interaction_kinds)
    .bind(&filter.channel)
    .bind(&filter.source)
    .bind(filter.occur_range.0)
    .bind(filter.occur_range.1)
    .bind(after_time)
    .bind(after_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(ActivityRow::into_activity).collect()
}

/// Every activity of `customer_id`, oldest first (the data-subject export).
pub(crate) async fn of_customer(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Vec<Activity>> {
    let activities: Vec<ActivityRow> = sqlx::query_as(
        "SELECT activity_id, customer_id, source, event_id, occur_time, record_time, channel, details::text AS details \
         FROM activities WHERE customer_id = $1 ORDER BY occur_time, activity_id",
    )
    .bind(customer_id)
    .fetch_all(conn)
    .await?;
    activities
        .into_iter()
        .map(ActivityRow::into_activity)
        .collect()
}

/// Moves every activity of `from` to `to`, tagged with the merge that moved it; answers how
/// many moved.
pub(crate) async fn move_to(
    conn: &mut PgConnection,
    from: Uuid,
    to: Uuid,
    merge_id: Uuid,
) -> Result<i64> {
    let moved =
        sqlx::query("UPDATE activities SET customer_id = $2, merge_id = $3 WHERE customer_id = $1")
            .bind(from)
            .bind(to)
            .bind(merge_id)
            .execute(conn)
            .await?
            .rows_affected();
    Ok(i64::try_from(moved).unwrap_or(i64::MAX))
}

/// Moves back to `to` exactly the activities merge `merge_id` moved that `from` still has;
/// answers how many moved.
pub(crate) async fn move_back(
    conn: &mut PgConnection,
    merge_id: Uuid,
    to: Uuid,
    from: Uuid,
) -> Result<i64> {
    let moved = sqlx::query("UPDATE activities SET customer_id = $2, merge_id = NULL WHERE merge_id = $1 AND customer_id = $3")
        .bind(merge_id)
        .bind(to)
        .bind(from)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(i64::try_from(moved).unwrap_or(i64::MAX))
}

#[derive(Debug, sqlx::FromRow)]
struct SummaryRow {
    purchase_count: i64,
    interaction_count: i64,
    first_purchase_time: Option<DateTime<Utc>>,
    last_purchase_time: Option<DateTime<Utc>>,
    last_activity_time: Option<DateTime<Utc>>,
}

/// The activity aggregates of a customer.
pub(crate) async fn summary(conn: &mut PgConnection, customer_id: Uuid) -> Result<ActivitySummary> {
    let totals: SummaryRow = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind = 1) AS purchase_count, \
         count(*) FILTER (WHERE kind = 3) AS interaction_count, \
         min(occur_time) FILTER (WHERE kind = 1) AS first_purchase_time, \
         max(occur_time) FILTER (WHERE kind = 1) AS last_purchase_time, max(occur_time) AS last_activity_time \
         FROM activities WHERE customer_id = $1",
    )
    .bind(customer_id)
    .fetch_one(&mut *conn)
    .await?;
    // `sum(bigint)` is numeric: each amount is at most 10^15, but a customer with thousands
    // of maximal orders in one currency would pass int64, and a plain cast would then fail
    // every Customer 360 of that customer. The total saturates at the int64 limits instead
    // (the contract says so).
    let net_spend: Vec<(String, i64)> = sqlx::query_as(
        "SELECT currency, LEAST(GREATEST( \
           sum(CASE kind WHEN 2 THEN -amount_minor ELSE amount_minor END), \
           -9223372036854775808), 9223372036854775807)::bigint \
         FROM activities WHERE customer_id = $1 AND currency IS NOT NULL GROUP BY currency ORDER BY currency",
    )
    .bind(customer_id)
    .fetch_all(conn)
    .await?;
    Ok(ActivitySummary {
        purchase_count: totals.purchase_count,
        interaction_count: totals.interaction_count,
        net_spend,
        first_purchase_time: totals.first_purchase_time,
        last_purchase_time: totals.last_purchase_time,
        last_activity_time: totals.last_activity_time,
    })
}
