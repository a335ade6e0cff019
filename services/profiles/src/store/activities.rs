//! Activities: single and bulk ingestion, idempotent on (source, event id), and the timeline.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use custops_common::outbox;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Page, PgStore, fetch_limit, identity_holder, page, resolve};
use crate::domain::activity::{CustomerRef, NewActivity};
use crate::domain::{Activity, ActivityDetails, ActivityFilter, CustomerState};
use crate::error::{ProfilesError, Result};
use crate::events;

/// What RecordActivity did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordOutcome {
    /// The stored activity (the first one, for a duplicate).
    pub activity: Activity,
    /// True when nothing was stored.
    pub duplicate: bool,
}

/// One valid item of an import stream with its position.
#[derive(Debug, Clone)]
pub struct ImportItem {
    /// Position in the stream.
    pub index: i64,
    /// The activity.
    pub activity: NewActivity,
}

/// What happened to one import item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportOutcome {
    /// Stored.
    Accepted,
    /// Already recorded with the same content.
    Duplicate,
    /// No such customer.
    CustomerNotFound,
    /// Customer DELETED or ERASED.
    CustomerNotActive,
    /// (source, event id) recorded with other content.
    EventIdReused,
}

/// Cursor of ListActivities: (occur time µs, id) of the last activity.
pub type ActivityCursor = (i64, Uuid);

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

/// Resolves who an activity is about: ACTIVE customer id (merges followed), or why not.
async fn resolve_customer(
    conn: &mut PgConnection,
    customer: &CustomerRef,
) -> Result<std::result::Result<Uuid, ImportOutcome>> {
    let id = match customer {
        CustomerRef::Id(id) => *id,
        CustomerRef::Identity(identity) => match identity_holder(conn, identity).await? {
            Some(id) => id,
            None => return Ok(Err(ImportOutcome::CustomerNotFound)),
        },
    };
    match resolve(conn, id, false).await {
        Ok((customer, _)) if customer.state == CustomerState::Active => Ok(Ok(customer.id)),
        Ok(_) => Ok(Err(ImportOutcome::CustomerNotActive)),
        Err(ProfilesError::NotFound { .. }) => Ok(Err(ImportOutcome::CustomerNotFound)),
        Err(other) => Err(other),
    }
}

impl PgStore {
    /// Records one activity, or answers the one recorded first under its key.
    #[tracing::instrument(skip_all, fields(source = %activity.source))]
    pub async fn record_activity(&self, activity: NewActivity) -> Result<RecordOutcome> {
        let mut tx = self.pool.begin().await?;
        let hash = activity.content_hash();
        if let Some(existing) = existing(&mut tx, &activity.source, &activity.event_id).await? {
            return if existing.1 == hash {
                Ok(RecordOutcome {
                    activity: existing.0,
                    duplicate: true,
                })
            } else {
                Err(ProfilesError::EventIdReused)
            };
        }
        let customer_id = match resolve_customer(&mut tx, &activity.customer).await? {
            Ok(id) => id,
            Err(ImportOutcome::CustomerNotActive) => {
                let (customer, _) = match &activity.customer {
                    CustomerRef::Id(id) => resolve(&mut tx, *id, false).await?,
                    CustomerRef::Identity(_) => return Err(ProfilesError::CustomerDeleted),
                };
                return Err(match customer.state {
                    CustomerState::Erased => ProfilesError::CustomerErased,
                    _ => ProfilesError::CustomerDeleted,
                });
            }
            Err(_) => {
                return Err(match &activity.customer {
                    CustomerRef::Id(id) => ProfilesError::customer_not_found(*id),
                    CustomerRef::Identity(_) => ProfilesError::NotFound {
                        resource: "identity",
                        id: "(customer_identity)".to_owned(),
                    },
                });
            }
        };
        let stored = insert(
            &mut tx,
            &[(customer_id, &activity, hash.clone())],
            self.now(),
        )
        .await?;
        match stored.into_iter().next() {
            Some(activity) => {
                outbox::append(&mut tx, events::activity_recorded(&activity)).await?;
                tx.commit().await?;
                Ok(RecordOutcome {
                    activity,
                    duplicate: false,
                })
            }
            None => {
                // A concurrent call stored the same key first.
                drop(tx);
                let mut conn = self.pool.acquire().await?;
                let (first, first_hash) = existing(&mut conn, &activity.source, &activity.event_id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("activity vanished after a conflict"))?;
                if first_hash == hash {
                    Ok(RecordOutcome {
                        activity: first,
                        duplicate: true,
                    })
                } else {
                    Err(ProfilesError::EventIdReused)
                }
            }
        }
    }

    /// Records a batch of import items in one transaction; answers each item's outcome in
    /// order. Items are independent: expected conflicts never fail the batch.
    #[tracing::instrument(skip_all, fields(items = items.len()))]
    pub async fn import_batch(&self, items: &[ImportItem]) -> Result<Vec<ImportOutcome>> {
        let mut tx = self.pool.begin().await?;
        let hashes: Vec<String> = items.iter().map(|i| i.activity.content_hash()).collect();
        let mut outcomes: Vec<Option<ImportOutcome>> = vec![None; items.len()];
        // Within the batch, later items with a key seen earlier compare with the first.
        let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
        let mut later: Vec<(usize, usize)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let key = (
                item.activity.source.as_str(),
                item.activity.event_id.as_str(),
            );
            match first_of.get(&key) {
                Some(&first) => later.push((i, first)),
                None => {
                    first_of.insert(key, i);
                }
            }
        }
        // Customers by id in one query; identities and merged ids one by one (rare).
        let ids: Vec<Uuid> = items
            .iter()
            .filter_map(|i| match i.activity.customer {
                CustomerRef::Id(id) => Some(id),
                CustomerRef::Identity(_) => None,
            })
            .collect();
        let states: HashMap<Uuid, i16> = sqlx::query_as::<_, (Uuid, i16)>(
            "SELECT customer_id, state FROM customers WHERE customer_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut to_insert: Vec<(usize, Uuid)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if later.iter().any(|(l, _)| *l == i) {
                continue;
            }
            let resolved = match &item.activity.customer {
                CustomerRef::Id(id) => match states.get(id) {
                    Some(1) => Ok(*id),
                    Some(3) => resolve_customer(&mut tx, &item.activity.customer).await?,
                    Some(_) => Err(ImportOutcome::CustomerNotActive),
                    None => Err(ImportOutcome::CustomerNotFound),
                },
                CustomerRef::Identity(_) => {
                    resolve_customer(&mut tx, &item.activity.customer).await?
                }
            };
            match resolved {
                Ok(customer_id) => to_insert.push((i, customer_id)),
                Err(outcome) => outcomes[i] = Some(outcome),
            }
        }
        let rows: Vec<(Uuid, &NewActivity, String)> = to_insert
            .iter()
            .map(|(i, customer_id)| (*customer_id, &items[*i].activity, hashes[*i].clone()))
            .collect();
        let stored = insert(&mut tx, &rows, self.now()).await?;
        // One statement for the batch's events, in the order the activities were stored.
        let recorded: Vec<_> = stored.iter().map(events::activity_recorded).collect();
        outbox::append_all(&mut tx, &recorded).await?;
        let mut stored_keys: HashMap<(String, String), ()> = HashMap::new();
        for activity in &stored {
            stored_keys.insert((activity.source.clone(), activity.event_id.clone()), ());
        }
        // Items not stored: their key was recorded before; compare content.
        let conflicted: Vec<usize> = to_insert
            .iter()
            .map(|(i, _)| *i)
            .filter(|i| {
                let a = &items[*i].activity;
                !stored_keys.contains_key(&(a.source.clone(), a.event_id.clone()))
            })
            .collect();
        for i in &to_insert {
            if !conflicted.contains(&i.0) {
                outcomes[i.0] = Some(ImportOutcome::Accepted);
            }
        }
        if !conflicted.is_empty() {
            let sources: Vec<&str> = conflicted
                .iter()
                .map(|i| items[*i].activity.source.as_str())
                .collect();
            let event_ids: Vec<&str> = conflicted
                .iter()
                .map(|i| items[*i].activity.event_id.as_str())
                .collect();
            let known: HashMap<(String, String), String> =
                sqlx::query_as::<_, (String, String, String)>(
                    "SELECT a.source, a.event_id, a.content_hash FROM activities a \
                 JOIN unnest($1::text[], $2::text[]) AS k(source, event_id) \
                 ON a.source = k.source AND a.event_id = k.event_id",
                )
                .bind(&sources)
                .bind(&event_ids)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|(s, e, h)| ((s, e), h))
                .collect();
            for i in conflicted {
                let a = &items[i].activity;
                let same = known.get(&(a.source.clone(), a.event_id.clone())) == Some(&hashes[i]);
                outcomes[i] = Some(if same {
                    ImportOutcome::Duplicate
                } else {
                    ImportOutcome::EventIdReused
                });
            }
        }
        for (i, first) in later {
            outcomes[i] = Some(match outcomes[first] {
                Some(ImportOutcome::Accepted | ImportOutcome::Duplicate)
                    if hashes[i] == hashes[first] =>
                {
                    ImportOutcome::Duplicate
                }
                Some(
                    ImportOutcome::Accepted
                    | ImportOutcome::Duplicate
                    | ImportOutcome::EventIdReused,
                ) => ImportOutcome::EventIdReused,
                Some(other) => other,
                None => ImportOutcome::CustomerNotFound,
            });
        }
        tx.commit().await?;
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(ImportOutcome::CustomerNotFound))
            .collect())
    }

    /// A page of a customer's timeline, newest first.
    #[tracing::instrument(skip_all, fields(customer_id = %customer_id))]
    pub async fn list_activities(
        &self,
        customer_id: Uuid,
        filter: &ActivityFilter,
        after: Option<ActivityCursor>,
        limit: usize,
    ) -> Result<Page<Activity, ActivityCursor>> {
        let mut conn = self.pool.acquire().await?;
        let (customer, _) = resolve(&mut conn, customer_id, false).await?;
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
        .bind(customer.id)
        .bind(&filter.kinds)
        .bind(&filter.interaction_kinds)
        .bind(&filter.channel)
        .bind(&filter.source)
        .bind(filter.occur_range.0)
        .bind(filter.occur_range.1)
        .bind(after_time)
        .bind(after_id)
        .bind(fetch_limit(limit))
        .fetch_all(&mut *conn)
        .await?;
        let activities = rows
            .into_iter()
            .map(ActivityRow::into_activity)
            .collect::<Result<Vec<_>>>()?;
        Ok(page(activities, limit, |a: &Activity| {
            (a.occur_time.timestamp_micros(), a.id)
        }))
    }
}

#[derive(Debug, sqlx::FromRow)]
struct StoredActivityRow {
    #[sqlx(flatten)]
    row: ActivityRow,
    content_hash: String,
}

/// The activity stored under (source, event id) with its content hash.
async fn existing(
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
async fn insert(
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
        details.push(super::json(&a.details)?);
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

#[derive(Debug, sqlx::FromRow)]
struct SummaryRow {
    purchase_count: i64,
    interaction_count: i64,
    first_purchase_time: Option<DateTime<Utc>>,
    last_purchase_time: Option<DateTime<Utc>>,
    last_activity_time: Option<DateTime<Utc>>,
}

/// Aggregates of one customer's activities (Customer 360).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActivitySummary {
    /// Purchases.
    pub purchase_count: i64,
    /// Interactions.
    pub interaction_count: i64,
    /// Purchases minus refunds per currency, by currency code.
    pub net_spend: Vec<(String, i64)>,
    /// First purchase.
    pub first_purchase_time: Option<DateTime<Utc>>,
    /// Latest purchase.
    pub last_purchase_time: Option<DateTime<Utc>>,
    /// Latest activity of any kind.
    pub last_activity_time: Option<DateTime<Utc>>,
}

impl PgStore {
    /// The activity aggregates of a customer.
    #[tracing::instrument(skip_all, fields(customer_id = %customer_id))]
    pub async fn activity_summary(&self, customer_id: Uuid) -> Result<ActivitySummary> {
        let totals: SummaryRow = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE kind = 1) AS purchase_count, \
             count(*) FILTER (WHERE kind = 3) AS interaction_count, \
             min(occur_time) FILTER (WHERE kind = 1) AS first_purchase_time, \
             max(occur_time) FILTER (WHERE kind = 1) AS last_purchase_time, max(occur_time) AS last_activity_time \
             FROM activities WHERE customer_id = $1",
        )
        .bind(customer_id)
        .fetch_one(&self.pool)
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
        .fetch_all(&self.pool)
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
}
