//! The events segmentation writes to its outbox about memberships, segments and recompute
//! jobs, always in the transaction of the change they report.
//!
//! Single events go through `custops_common::outbox::append`. A recompute's SegmentEntered /
//! SegmentExited, which may be millions, never leave Postgres: [`append_entered_from`] and
//! [`append_exited_from`] write one per row of a temporary table with one `INSERT … SELECT`
//! (`outbox::append_selected`), the payload assembled in SQL from parts prost encoded once.
//! Other events about many customers (a full RFM run's group changes, a feed batch's
//! membership changes, a static upload's) are built here, gathered in [`CustomerEvents`] and
//! written with `outbox::append_all`: one statement per chunk and one notification of the
//! sequencer.

use chrono::{DateTime, Utc};
use custops_common::outbox::{self, OutboxEvent};
use custops_contracts::custops::segmentation::v1 as pb;
use prost::{Message, Name};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::wire::timestamp;

/// Rows per bulk insert: keeps each statement's arrays to a few megabytes.
const BULK_CHUNK: usize = 5_000;

/// Why a membership changed, and what caused it, as the events carry it.
#[derive(Debug, Clone)]
pub struct ChangeCause {
    pub reason: pb::ChangeReason,
    /// For reason EVENT: the upstream event id.
    pub event_id: String,
    /// For reason RECOMPUTE: the job.
    pub recompute_job_id: Option<Uuid>,
}

/// A membership that began.
pub fn segment_entered(
    segment_id: Uuid,
    segment_version: i64,
    customer_id: &str,
    enter_time: DateTime<Utc>,
    cause: &ChangeCause,
) -> pb::SegmentEntered {
    pb::SegmentEntered {
        segment_id: segment_id.to_string(),
        segment_version,
        customer_id: customer_id.to_owned(),
        reason: cause.reason.into(),
        enter_time: Some(timestamp(enter_time)),
        cause_event_id: cause.event_id.clone(),
        recompute_job_id: cause
            .recompute_job_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
    }
}

/// A membership that ended.
pub fn segment_exited(
    segment_id: Uuid,
    segment_version: i64,
    customer_id: &str,
    enter_time: DateTime<Utc>,
    exit_time: DateTime<Utc>,
    cause: &ChangeCause,
) -> pb::SegmentExited {
    pb::SegmentExited {
        segment_id: segment_id.to_string(),
        segment_version,
        customer_id: customer_id.to_owned(),
        reason: cause.reason.into(),
        exit_time: Some(timestamp(exit_time)),
        enter_time: Some(timestamp(enter_time)),
        cause_event_id: cause.event_id.clone(),
        recompute_job_id: cause
            .recompute_job_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
    }
}

/// Appends a SegmentEntered (aggregate "customer") for every customer of `table`, a temporary
/// table with a `customer_id` column (fixed names, never input), in customer id order: one
/// `INSERT … SELECT` whatever their number. The payloads are the bytes [`segment_entered`]
/// encodes: the fields every row shares are encoded here once, the customer id in SQL.
pub async fn append_entered_from(
    conn: &mut PgConnection,
    table: &'static str,
    segment_id: Uuid,
    segment_version: i64,
    enter_time: DateTime<Utc>,
    cause: &ChangeCause,
) -> Result<u64, sqlx::Error> {
    let full = segment_entered(segment_id, segment_version, "", enter_time, cause);
    // Fields 1–2, then 3 (the customer id) per row, then 4–7: prost writes fields in number
    // order, and a message's encoding is the concatenation of its fields'.
    let head = pb::SegmentEntered {
        segment_id: full.segment_id.clone(),
        segment_version: full.segment_version,
        ..Default::default()
    };
    let tail = pb::SegmentEntered {
        segment_id: String::new(),
        segment_version: 0,
        ..full
    };
    let source = format!(
        "SELECT t.customer_id AS aggregate_id, \
                $4 || pb_string(3, t.customer_id) || $5 AS payload \
         FROM {table} t ORDER BY t.customer_id"
    );
    outbox::append_selected(
        conn,
        "customer",
        &pb::SegmentEntered::full_name(),
        &source,
        |query| query.bind(head.encode_to_vec()).bind(tail.encode_to_vec()),
    )
    .await
}

/// Appends a SegmentExited (aggregate "customer") for every row of `table`, a temporary table
/// with `customer_id` and `enter_time` columns, as [`append_entered_from`] does: the bytes
/// [`segment_exited`] encodes, the customer id and the enter time encoded in SQL.
pub async fn append_exited_from(
    conn: &mut PgConnection,
    table: &'static str,
    segment_id: Uuid,
    segment_version: i64,
    exit_time: DateTime<Utc>,
    cause: &ChangeCause,
) -> Result<u64, sqlx::Error> {
    let full = segment_exited(segment_id, segment_version, "", exit_time, exit_time, cause);
    // Fields 1–2, 3 (customer id) per row, 4–5, 6 (enter time) per row, 7–8.
    let head = pb::SegmentExited {
        segment_id: full.segment_id.clone(),
        segment_version: full.segment_version,
        ..Default::default()
    };
    let middle = pb::SegmentExited {
        reason: full.reason,
        exit_time: full.exit_time,
        ..Default::default()
    };
    let tail = pb::SegmentExited {
        cause_event_id: full.cause_event_id,
        recompute_job_id: full.recompute_job_id,
        ..Default::default()
    };
    let source = format!(
        "SELECT t.customer_id AS aggregate_id, \
                $4 || pb_string(3, t.customer_id) || $5 || pb_timestamp(6, t.enter_time) || $6 \
                  AS payload \
         FROM {table} t ORDER BY t.customer_id"
    );
    outbox::append_selected(
        conn,
        "customer",
        &pb::SegmentExited::full_name(),
        &source,
        |query| {
            query
                .bind(head.encode_to_vec())
                .bind(middle.encode_to_vec())
                .bind(tail.encode_to_vec())
        },
    )
    .await
}

/// Appends one membership event (aggregate "customer").
pub async fn append_customer_event<M: Message + Name>(
    conn: &mut PgConnection,
    customer_id: &str,
    payload: &M,
) -> Result<(), sqlx::Error> {
    outbox::append(conn, OutboxEvent::new("customer", customer_id, payload)).await?;
    Ok(())
}

/// Appends one segment event (aggregate "segment").
pub async fn append_segment_event<M: Message + Name>(
    conn: &mut PgConnection,
    segment_id: Uuid,
    payload: &M,
) -> Result<(), sqlx::Error> {
    outbox::append(conn, segment_event(segment_id, payload)).await?;
    Ok(())
}

/// A segment event (aggregate "segment"), for a change that returns its events
/// (`custops_common::idempotency::Completed`).
pub fn segment_event<M: Message + Name>(segment_id: Uuid, payload: &M) -> OutboxEvent {
    OutboxEvent::new("segment", segment_id, payload)
}

/// Appends RecomputeJobFinished (aggregate "recompute_job").
pub async fn append_job_finished(
    conn: &mut PgConnection,
    job: pb::RecomputeJob,
) -> Result<(), sqlx::Error> {
    let id = job.recompute_job_id.clone();
    let payload = pb::RecomputeJobFinished { job: Some(job) };
    outbox::append(conn, OutboxEvent::new("recompute_job", id, &payload)).await?;
    Ok(())
}

/// Appends many events about customers (aggregate "customer") set-based, in the caller's
/// transaction: `(customer_id, payload)` pairs, all of type `M`.
pub async fn append_many<M: Message + Name>(
    conn: &mut PgConnection,
    events: &[(String, M)],
) -> Result<(), sqlx::Error> {
    let mut rows = CustomerEvents::default();
    for chunk in events.chunks(BULK_CHUNK) {
        for (customer_id, payload) in chunk {
            rows.push(customer_id, payload);
        }
        rows.append(&mut *conn).await?;
    }
    Ok(())
}

/// Events about customers (aggregate "customer"), of any types, gathered to be appended
/// together in the order pushed: one statement and one notification of the sequencer,
/// however many (`outbox::append_all`).
#[derive(Debug, Default)]
pub struct CustomerEvents {
    events: Vec<OutboxEvent>,
}

impl CustomerEvents {
    /// Adds one event about `customer_id`.
    pub fn push<M: Message + Name>(&mut self, customer_id: &str, payload: &M) {
        self.events
            .push(OutboxEvent::new("customer", customer_id, payload));
    }

    /// Writes the events gathered (and forgets them), in the caller's transaction.
    pub async fn append(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        outbox::append_all(conn, &self.events).await?;
        self.events.clear();
        Ok(())
    }
}
