//! The `consents` table (the decision in force per channel) and `consent_changes` (the audit
//! trail of every decision).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{Actor, Consent, ConsentChange, ConsentDecision, consent_status};
use crate::error::Result;

/// Cursor of ListConsentChanges: (record time µs, id) of the last entry.
pub type ConsentCursor = (i64, Uuid);

/// Where the audit trail goes on after `c` (the keyset of [`list`]'s order).
pub fn change_cursor(c: &ConsentChange) -> ConsentCursor {
    (c.record_time.timestamp_micros(), c.id)
}

/// Puts a decision in force and records it in the audit trail.
pub(crate) async fn apply(
    conn: &mut PgConnection,
    customer_id: Uuid,
    decision: &ConsentDecision,
    current: Option<&Consent>,
    change_time: DateTime<Utc>,
    now: DateTime<Utc>,
    merge_id: Option<Uuid>,
) -> Result<ConsentChange> {
    sqlx::query(
        "INSERT INTO consents (customer_id, channel, status, source, actor_kind, actor_id, actor_service, change_time, record_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (customer_id, channel) DO UPDATE SET \
         status = excluded.status, source = excluded.source, actor_kind = excluded.actor_kind, \
         actor_id = excluded.actor_id, actor_service = excluded.actor_service, \
         change_time = excluded.change_time, record_time = excluded.record_time",
    )
    .bind(customer_id)
    .bind(decision.channel)
    .bind(decision.status)
    .bind(&decision.source)
    .bind(decision.actor.kind)
    .bind(&decision.actor.id)
    .bind(&decision.actor.service)
    .bind(change_time)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let old = current.map_or(consent_status::NONE, |c| c.status);
    record_change(
        conn,
        customer_id,
        decision,
        old,
        change_time,
        now,
        merge_id,
        false,
    )
    .await
}

#[allow(
    clippy::too_many_arguments,
    reason = "one column each; a struct would only rename them"
)]
pub(crate) async fn record_change(
    conn: &mut PgConnection,
    customer_id: Uuid,
    decision: &ConsentDecision,
    old_status: i16,
    change_time: DateTime<Utc>,
    now: DateTime<Utc>,
    merge_id: Option<Uuid>,
    superseded: bool,
) -> Result<ConsentChange> {
    let change = ConsentChange {
        id: Uuid::now_v7(),
        customer_id,
        channel: decision.channel,
        old_status,
        new_status: decision.status,
        source: decision.source.clone(),
        actor: decision.actor.clone(),
        change_time,
        record_time: now,
        merge_id,
        superseded,
    };
    sqlx::query(
        "INSERT INTO consent_changes (consent_change_id, customer_id, channel, old_status, new_status, source, \
         actor_kind, actor_id, actor_service, change_time, record_time, merge_id, superseded) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(change.id)
    .bind(customer_id)
    .bind(change.channel)
    .bind(change.old_status)
    .bind(change.new_status)
    .bind(&change.source)
    .bind(change.actor.kind)
    .bind(&change.actor.id)
    .bind(&change.actor.service)
    .bind(change.change_time)
    .bind(change.record_time)
    .bind(change.merge_id)
    .bind(change.superseded)
    .execute(conn)
    .await?;
    Ok(change)
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ConsentChangeRow {
    consent_change_id: Uuid,
    customer_id: Uuid,
    channel: i16,
    old_status: i16,
    new_status: i16,
    source: String,
    actor_kind: i16,
    actor_id: String,
    actor_service: String,
    change_time: DateTime<Utc>,
    record_time: DateTime<Utc>,
    merge_id: Option<Uuid>,
    superseded: bool,
}

impl ConsentChangeRow {
    pub(crate) fn into_change(self) -> ConsentChange {
        ConsentChange {
            id: self.consent_change_id,
            customer_id: self.customer_id,
            channel: self.channel,
            old_status: self.old_status,
            new_status: self.new_status,
            source: self.source,
            actor: Actor {
                kind: self.actor_kind,
                id: self.actor_id,
                service: self.actor_service,
            },
            change_time: self.change_time,
            record_time: self.record_time,
            merge_id: self.merge_id,
            superseded: self.superseded,
        }
    }
}

/// Up to `limit` entries of the audit trail of `customers` (all customers when `None`) after
/// the cursor `after`, newest first.
pub(crate) async fn list(
    conn: &mut PgConnection,
    customers: Option<Vec<Uuid>>,
    channels: &[i16],
    range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    after: Option<ConsentCursor>,
    limit: i64,
) -> Result<Vec<ConsentChange>> {
    let (after_time, after_id) = match after {
        Some((micros, id)) => (DateTime::from_timestamp_micros(micros), Some(id)),
        None => (None, None),
    };
    let rows: Vec<ConsentChangeRow> = sqlx::query_as(
        "SELECT consent_change_id, customer_id, channel, old_status, new_status, source, actor_kind, \
         actor_id, actor_service, change_time, record_time, merge_id, superseded FROM consent_changes \
         WHERE ($1::uuid[] IS NULL OR customer_id = ANY($1)) \
         AND (cardinality($2::smallint[]) = 0 OR channel = ANY($2)) \
         AND ($3::timestamptz IS NULL OR record_time >= $3) \
         AND ($4::timestamptz IS NULL OR record_time < $4) \
         AND ($5::timestamptz IS NULL OR (record_time, consent_change_id) < ($5, $6)) \
         ORDER BY record_time DESC, consent_change_id DESC LIMIT $7",
    )
    .bind(customers)
    .bind(channels)
    .bind(range.0)
    .bind(range.1)
    .bind(after_time)
    .bind(after_id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(ConsentChangeRow::into_change)
        .collect())
}

/// The whole audit trail of `customers`, oldest first (the data-subject export).
pub(crate) async fn changes_of(
    conn: &mut PgConnection,
    customers: &[Uuid],
) -> Result<Vec<ConsentChange>> {
    let changes: Vec<ConsentChangeRow> = sqlx::query_as(
        "SELECT consent_change_id, customer_id, channel, old_status, new_status, source, actor_kind, \
         actor_id, actor_service, change_time, record_time, merge_id, superseded FROM consent_changes \
         WHERE customer_id = ANY($1) ORDER BY record_time, consent_change_id",
    )
    .bind(customers)
    .fetch_all(conn)
    .await?;
    Ok(changes
        .into_iter()
        .map(ConsentChangeRow::into_change)
        .collect())
}

/// Removes every consent in force of `customer_id` (its audit trail stays).
pub(crate) async fn delete_all(conn: &mut PgConnection, customer_id: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM consents WHERE customer_id = $1")
        .bind(customer_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes the consent in force of `customer_id` on `channel`.
pub(crate) async fn delete_channel(
    conn: &mut PgConnection,
    customer_id: Uuid,
    channel: i16,
) -> Result<()> {
    sqlx::query("DELETE FROM consents WHERE customer_id = $1 AND channel = $2")
        .bind(customer_id)
        .bind(channel)
        .execute(conn)
        .await?;
    Ok(())
}

/// Puts `consent` back in force on `customer_id` as it was, unless the channel has one.
pub(crate) async fn restore(
    conn: &mut PgConnection,
    customer_id: Uuid,
    consent: &Consent,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO consents (customer_id, channel, status, source, actor_kind, actor_id, actor_service, change_time, record_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (customer_id, channel) DO NOTHING",
    )
    .bind(customer_id)
    .bind(consent.channel)
    .bind(consent.status)
    .bind(&consent.source)
    .bind(consent.actor.kind)
    .bind(&consent.actor.id)
    .bind(&consent.actor.service)
    .bind(consent.change_time)
    .bind(consent.record_time)
    .execute(conn)
    .await?;
    Ok(())
}
