//! Writing domain events to the service's transactional outbox, in the caller's transaction.
//!
//! A service reports a change by appending an event in the same transaction that makes the
//! change, so the event exists exactly when the change does: a rolled-back transaction leaves
//! no event, a committed one always has its event. The row is written without a feed position
//! (`sequence` is NULL); the [`sequencer`](crate::sequencer) gives it one after commit, which
//! is what lets consumers resume "after sequence N" without ever skipping a late commit.
//!
//! ```ignore
//! let mut tx = pool.begin().await?;
//! store::insert_customer(&mut tx, &customer).await?;
//! outbox::append(&mut tx, OutboxEvent::new("customer", customer.id, &pb::CustomerCreated { .. })).await?;
//! tx.commit().await?;
//! ```

use sqlx::PgConnection;
use uuid::Uuid;

/// Prefix of the channel the sequencer notifies after giving events a position, followed by the
/// schema: every replica's feed listens on it to wake its `Subscribe` streams.
const FEED_CHANNEL_PREFIX: &str = "custops_feed_";

/// The LISTEN/NOTIFY channel on which the sequencer announces newly sequenced events of
/// `schema`. The sequencer builds the same name inside Postgres from `current_schema()`,
/// which is the service's schema because every pool sets `search_path` to it.
pub fn feed_channel(schema: &str) -> String {
    format!("{FEED_CHANNEL_PREFIX}{schema}")
}

/// One domain event, ready to be appended to the outbox.
///
/// Its fields are the Debezium outbox-router columns: aggregate type, aggregate id, type (the
/// payload's fully qualified protobuf name) and payload (the protobuf encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    id: Uuid,
    aggregate_type: String,
    aggregate_id: String,
    event_type: String,
    payload: Vec<u8>,
    /// The trace the row records, when not the one current at its append ([`Self::traced`]).
    traceparent: Option<String>,
}

impl OutboxEvent {
    /// An event about the entity `aggregate_type`/`aggregate_id` (e.g. `"customer"`, its id)
    /// carrying `payload`, one of the messages of the service's `events.proto`. It gets a fresh
    /// UUIDv7 as its event id.
    pub fn new<M>(
        aggregate_type: impl Into<String>,
        aggregate_id: impl ToString,
        payload: &M,
    ) -> Self
    where
        M: prost::Message + prost::Name,
    {
        Self {
            id: Uuid::now_v7(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.to_string(),
            event_type: M::full_name(),
            payload: payload.encode_to_vec(),
            traceparent: None,
        }
    }

    /// The same event recording `traceparent` (the trace of the call that made it) instead
    /// of the trace current when it is appended: for events that one task appends for
    /// several callers, as loyalty's grouped earns (`workflow::earn_group`) are.
    #[must_use]
    pub fn traced(mut self, traceparent: String) -> Self {
        self.traceparent = Some(traceparent);
        self
    }

    /// The event id consumers see (and may de-duplicate on).
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Fully qualified protobuf name of the payload, e.g. `custops.profiles.v1.CustomerCreated`.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }
}

/// Appends `event` to the outbox of the connection's schema, inside the caller's transaction
/// (pass `&mut tx`), and returns its event id.
///
/// The row records the `traceparent` of the current span (or the event's own,
/// [`OutboxEvent::traced`]), so the consumer's work joins the
/// producer's trace, and `occurred_at` is the transaction's start time. Nothing is notified:
/// the sequencer polls for committed rows (see [`crate::sequencer`] for why a `NOTIFY` per
/// writing transaction is too dear). Called outside a transaction, the row is committed at
/// once, which is correct but rarely what a caller wants.
pub async fn append(conn: &mut PgConnection, event: OutboxEvent) -> Result<Uuid, sqlx::Error> {
    let traceparent = event
        .traceparent
        .clone()
        .unwrap_or_else(crate::trace_context::current_traceparent);
    sqlx::query(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, traceparent) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.id)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(&event.event_type)
    .bind(&event.payload)
    .bind(&traceparent)
    .execute(conn)
    .await?;
    Ok(event.id)
}

/// Appends `events` to the outbox of the connection's schema in the order given, inside the
/// caller's transaction, with one statement however many there are (a batch's events, where
/// [`append`] would take a round trip each). The rows are what [`append`] writes for each, in
/// feed order: `appended_at` follows the order given. Nothing happens for none.
pub async fn append_all(
    conn: &mut PgConnection,
    events: &[OutboxEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    events_query(events, APPEND_EVENTS).execute(conn).await?;
    Ok(())
}

/// [`append_all`] and one more data-modifying statement in the same round trip: a change
/// that ends by recording something (an idempotent call its response) and appending its
/// events takes one statement for both. `also` is fixed SQL (never input), an `INSERT`,
/// `UPDATE` or `DELETE` with a `RETURNING` clause, whose parameters start at `$7` (`$1`–`$6`
/// are the events'). `steps` are more data-modifying `WITH` items run in the same statement
/// (`name AS (...)`, comma-separated, fixed SQL; empty for none), their parameters numbered
/// after `also`'s: a change whose last write needs nothing back
/// ([`crate::idempotency::LastWrite`]) makes it here, not in a round trip of its own. `bind`
/// binds `also`'s parameters, then the steps'. It all runs even when there are no events.
/// Returns how many rows `also` returned: whether it wrote, for an
/// `INSERT ... ON CONFLICT DO NOTHING RETURNING`.
pub async fn append_all_with<'q>(
    conn: &mut PgConnection,
    steps: &str,
    events: &'q [OutboxEvent],
    also: &str,
    bind: impl FnOnce(
        sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<u64, sqlx::Error> {
    let separator = if steps.is_empty() { "" } else { ", " };
    // A data-modifying WITH runs whether or not it is read.
    let statement = format!(
        "WITH {steps}{separator}also AS ({also}), appended AS ({APPEND_EVENTS}) \
         SELECT count(*) FROM also"
    );
    let row = bind(events_query(events, sqlx::AssertSqlSafe(statement)))
        .fetch_one(conn)
        .await?;
    let returned: i64 = sqlx::Row::try_get(&row, 0)?;
    Ok(u64::try_from(returned).unwrap_or_default())
}

/// The insert of `events` bound as `$1`–`$6`. WITH ORDINALITY and ORDER BY keep the rows in
/// the order given, so `appended_at` (the sequencer's order) follows it.
const APPEND_EVENTS: &str = "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, traceparent) \
     SELECT e.id, e.aggregatetype, e.aggregateid, e.type, e.payload, e.traceparent \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[]) \
          WITH ORDINALITY AS e(id, aggregatetype, aggregateid, type, payload, traceparent, n) \
     ORDER BY e.n";

/// `statement` with `events` bound as the arrays of [`APPEND_EVENTS`].
fn events_query<'q>(
    events: &'q [OutboxEvent],
    statement: impl sqlx::SqlSafeStr,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let current = crate::trace_context::current_traceparent();
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let aggregate_types: Vec<&str> = events.iter().map(|e| e.aggregate_type.as_str()).collect();
    let aggregate_ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
    let event_types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    let traceparents: Vec<String> = events
        .iter()
        .map(|e| e.traceparent.clone().unwrap_or_else(|| current.clone()))
        .collect();
    sqlx::query(statement)
        .bind(ids)
        .bind(aggregate_types)
        .bind(aggregate_ids)
        .bind(event_types)
        .bind(payloads)
        .bind(traceparents)
}

/// Appends one event per row of `source`, set-based, inside the caller's transaction, and
/// returns how many: the way to write thousands of events (a recompute's memberships) without
/// building each in the application and shipping it back.
///
/// `source` is a query of fixed SQL (never input) whose rows have the columns `aggregate_id`
/// (text) and `payload` (bytea, usually assembled with the `pb_*` functions of the shared
/// migration `0003_set_based_events.sql` from parts prost encoded once); its parameters start
/// at `$4` (`$1`–`$3` are the aggregate type, the event type and the traceparent) and `bind`
/// binds them in order. The rows are appended in the order `source` yields them, with ids
/// made in SQL (UUIDv7 with the row's rank after the time, `outbox_event_id(n)`, so rows
/// sharing a microsecond keep their order).
pub async fn append_selected<'q>(
    conn: &mut PgConnection,
    aggregate_type: &'q str,
    event_type: &'q str,
    source: &str,
    bind: impl FnOnce(
        sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<u64, sqlx::Error> {
    let traceparent = crate::trace_context::current_traceparent();
    let statement = format!(
        "INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload, traceparent) \
         SELECT outbox_event_id(s.n), $1, s.aggregate_id, $2, s.payload, $3 \
         FROM (SELECT q.aggregate_id, q.payload, row_number() OVER () AS n \
               FROM ({source}) AS q) AS s"
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(aggregate_type)
        .bind(event_type)
        .bind(traceparent);
    Ok(bind(query).execute(conn).await?.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use custops_contracts::custops::profiles::v1::CustomerDeleted;

    #[test]
    fn an_event_carries_its_payload_type_and_encoding() {
        let payload = CustomerDeleted {
            customer_id: "c-1".to_owned(),
            delete_time: None,
        };
        let event = OutboxEvent::new("customer", "c-1", &payload);
        assert_eq!(event.event_type(), "custops.profiles.v1.CustomerDeleted");
        assert_eq!(event.payload, prost::Message::encode_to_vec(&payload));
        assert_eq!(event.id().get_version_num(), 7);
    }

    #[test]
    fn the_feed_channel_is_named_after_the_schema() {
        assert_eq!(feed_channel("profiles"), "custops_feed_profiles");
    }
}

/// The outbox rows the sequencer has not given a feed position yet (see [`crate::sequencer`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    /// How many committed rows wait.
    pub events: i64,
    /// How long the oldest has waited (zero when none does).
    pub oldest_age: std::time::Duration,
}

/// The schema's outbox backlog now, read over the unsequenced-rows index (the metrics sampler's
/// question: a backlog that grows or ages says the sequencer is stuck or outpaced).
pub async fn backlog(conn: &mut PgConnection) -> Result<Backlog, sqlx::Error> {
    let (events, oldest_age): (i64, f64) = sqlx::query_as(
        "SELECT count(*), \
                COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(appended_at)), 0)::float8 \
         FROM outbox WHERE sequence IS NULL",
    )
    .fetch_one(conn)
    .await?;
    Ok(Backlog {
        events,
        oldest_age: std::time::Duration::from_secs_f64(oldest_age.max(0.0)),
    })
}
