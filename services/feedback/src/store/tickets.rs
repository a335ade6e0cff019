//! Tickets, their history and the SLA policy: rows, and the transactional operations
//! (open, assign, transitions, notes, follow-up outcomes) with their outbox events.

use chrono::{DateTime, Utc};
use custops_common::outbox;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::parse_col;
use crate::domain::response::{FollowUpTrigger, ScoreSlot, Scores};
use crate::domain::sla::{SeverityTarget, SlaPolicy};
use crate::domain::survey::{Touchpoint, TouchpointKind};
use crate::domain::ticket::{
    Action, FollowUp, HistoryDetail, HistoryEntry, Kind, Money, Resolution, ResolutionCode,
    Severity, SlaState, Status, Ticket,
};
use crate::error::Error;

macro_rules! columns {
    () => {
        "ticket_id, kind, status, customer_id, category, severity, channel, subject, \
         description, touchpoint_kind, touchpoint_id, source_response_id, assignee_id, \
         resolution_code, resolution_note, compensation_minor, compensation_currency, \
         respond_due_time, resolve_due_time, first_respond_time, response_breached, \
         resolution_breached, follow_up_triggers, follow_up_survey_id, follow_up_nps, \
         follow_up_csat, follow_up_ces, first_outcome_time, create_time, update_time, \
         resolve_time, close_time, erase_time, version"
    };
}

fn slot(row: &PgRow, column: &str) -> Result<ScoreSlot, Error> {
    let score: Option<i16> = row.try_get(column)?;
    Ok(ScoreSlot {
        score: score.map(i32::from),
        omitted: false,
    })
}

fn from_row(row: &PgRow) -> Result<Ticket, Error> {
    let kind = parse_col(row, "kind", Kind::parse)?;
    let touchpoint_kind: Option<String> = row.try_get("touchpoint_kind")?;
    let touchpoint_id: Option<String> = row.try_get("touchpoint_id")?;
    let touchpoint = match (touchpoint_kind, touchpoint_id) {
        (Some(kind), Some(id)) => Some(Touchpoint {
            kind: TouchpointKind::parse(&kind)
                .ok_or_else(|| super::corrupt("touchpoint_kind", &kind))?,
            id,
        }),
        _ => None,
    };
    let code: Option<String> = row.try_get("resolution_code")?;
    let resolution = match code {
        None => None,
        Some(code) => {
            let amount: Option<i64> = row.try_get("compensation_minor")?;
            let currency: Option<String> = row.try_get("compensation_currency")?;
            Some(Resolution {
                code: ResolutionCode::parse(&code)
                    .ok_or_else(|| super::corrupt("resolution_code", &code))?,
                note: row.try_get("resolution_note")?,
                compensation: amount.zip(currency).map(|(amount_minor, currency)| Money {
                    amount_minor,
                    currency,
                }),
            })
        }
    };
    let follow_up = if kind == Kind::FollowUp {
        let triggers: Vec<String> = row.try_get("follow_up_triggers")?;
        Some(FollowUp {
            triggers: triggers
                .iter()
                .filter_map(|t| FollowUpTrigger::parse(t))
                .collect(),
            survey_id: row
                .try_get::<Option<Uuid>, _>("follow_up_survey_id")?
                .unwrap_or_default(),
            scores: Scores {
                nps: slot(row, "follow_up_nps")?,
                csat: slot(row, "follow_up_csat")?,
                ces: slot(row, "follow_up_ces")?,
            },
            first_outcome_time: row.try_get("first_outcome_time")?,
        })
    } else {
        None
    };
    Ok(Ticket {
        id: row.try_get("ticket_id")?,
        kind,
        status: parse_col(row, "status", Status::parse)?,
        customer_id: row.try_get("customer_id")?,
        category: row.try_get("category")?,
        severity: parse_col(row, "severity", Severity::parse)?,
        channel: row.try_get("channel")?,
        subject: row.try_get("subject")?,
        description: row.try_get("description")?,
        touchpoint,
        source_response_id: row.try_get("source_response_id")?,
        assignee_id: row.try_get("assignee_id")?,
        resolution,
        sla: SlaState {
            respond_due_time: row.try_get("respond_due_time")?,
            resolve_due_time: row.try_get("resolve_due_time")?,
            first_respond_time: row.try_get("first_respond_time")?,
            response_breached: row.try_get("response_breached")?,
            resolution_breached: row.try_get("resolution_breached")?,
        },
        follow_up,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        resolve_time: row.try_get("resolve_time")?,
        close_time: row.try_get("close_time")?,
        erase_time: row.try_get("erase_time")?,
        version: row.try_get("version")?,
    })
}

/// The SLA policy in force (the defaults until first updated).
pub async fn policy(conn: &mut PgConnection) -> Result<SlaPolicy, Error> {
    let row = sqlx::query(
        "SELECT targets::text AS targets, follow_up_severity, update_time, version FROM sla_policy",
    )
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        return Ok(SlaPolicy::default());
    };
    let targets: String = row.try_get("targets")?;
    Ok(SlaPolicy {
        targets: serde_json::from_str::<Vec<SeverityTarget>>(&targets).map_err(Error::internal)?,
        follow_up_severity: parse_col(&row, "follow_up_severity", Severity::parse)?,
        update_time: row.try_get("update_time")?,
        version: row.try_get("version")?,
    })
}

/// Replaces the SLA policy (caller holds the policy lock through `lock_policy`).
pub async fn save_policy(conn: &mut PgConnection, policy: &SlaPolicy) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO sla_policy (singleton, targets, follow_up_severity, update_time, version) \
         VALUES (true, $1::jsonb, $2, $3, $4) \
         ON CONFLICT (singleton) DO UPDATE SET targets = EXCLUDED.targets, \
         follow_up_severity = EXCLUDED.follow_up_severity, update_time = EXCLUDED.update_time, \
         version = EXCLUDED.version",
    )
    .bind(serde_json::to_string(&policy.targets).map_err(Error::internal)?)
    .bind(policy.follow_up_severity.as_str())
    .bind(policy.update_time)
    .bind(policy.version)
    .execute(conn)
    .await?;
    Ok(())
}

/// Serialises policy updates.
pub async fn lock_policy(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("LOCK TABLE sla_policy IN SHARE ROW EXCLUSIVE MODE")
        .execute(conn)
        .await?;
    Ok(())
}

/// Inserts a new ticket with its OPENED history entry and TicketOpened event.
pub async fn insert(
    conn: &mut PgConnection,
    t: &Ticket,
    actor_service: &str,
    actor_id: &str,
) -> Result<(), Error> {
    let f = t.follow_up.as_ref();
    let triggers: Vec<&str> = f
        .map(|f| f.triggers.iter().map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let score = |pick: fn(&Scores) -> ScoreSlot| {
        f.and_then(|f| pick(&f.scores).score)
            .and_then(|s| i16::try_from(s).ok())
    };
    sqlx::query(
        "INSERT INTO tickets (ticket_id, kind, status, customer_id, category, severity, channel, \
         subject, description, touchpoint_kind, touchpoint_id, source_response_id, assignee_id, \
         open_time, respond_due_time, resolve_due_time, next_due_time, follow_up_triggers, \
         follow_up_survey_id, follow_up_nps, follow_up_csat, follow_up_ces, create_time, \
         update_time, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $15, \
         $17, $18, $19, $20, $21, $14, $14, $22)",
    )
    .bind(t.id)
    .bind(t.kind.as_str())
    .bind(t.status.as_str())
    .bind(&t.customer_id)
    .bind(&t.category)
    .bind(t.severity.as_str())
    .bind(&t.channel)
    .bind(&t.subject)
    .bind(&t.description)
    .bind(t.touchpoint.as_ref().map(|x| x.kind.as_str()))
    .bind(t.touchpoint.as_ref().map(|x| x.id.clone()))
    .bind(t.source_response_id)
    .bind(&t.assignee_id)
    .bind(t.create_time)
    .bind(t.sla.respond_due_time)
    .bind(t.sla.resolve_due_time)
    .bind(&triggers)
    .bind(f.map(|f| f.survey_id))
    .bind(score(|s| s.nps))
    .bind(score(|s| s.csat))
    .bind(score(|s| s.ces))
    .bind(t.version)
    .execute(&mut *conn)
    .await?;
    let entry = HistoryEntry {
        id: Uuid::now_v7(),
        ticket_id: t.id,
        action: Action::Opened,
        occur_time: t.create_time,
        actor_service: actor_service.to_owned(),
        actor_id: actor_id.to_owned(),
        from_status: None,
        to_status: Some(Status::Open),
        note: String::new(),
        detail: None,
    };
    insert_history(&mut *conn, &entry).await?;
    outbox::append(&mut *conn, crate::events::ticket_opened(t)).await?;
    Ok(())
}

/// Appends a history entry.
pub async fn insert_history(conn: &mut PgConnection, e: &HistoryEntry) -> Result<(), Error> {
    let detail = e
        .detail
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(Error::internal)?;
    sqlx::query(
        "INSERT INTO ticket_history (entry_id, ticket_id, action, occur_time, actor_service, \
         actor_id, from_status, to_status, note, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)",
    )
    .bind(e.id)
    .bind(e.ticket_id)
    .bind(e.action.as_str())
    .bind(e.occur_time)
    .bind(&e.actor_service)
    .bind(&e.actor_id)
    .bind(e.from_status.map(|s| s.as_str()))
    .bind(e.to_status.map(|s| s.as_str()))
    .bind(&e.note)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// The ticket `id`, locked for update when `lock`.
pub async fn get(conn: &mut PgConnection, id: Uuid, lock: bool) -> Result<Ticket, Error> {
    let sql = if lock {
        concat!(
            "SELECT ",
            columns!(),
            " FROM tickets WHERE ticket_id = $1 FOR UPDATE"
        )
    } else {
        concat!("SELECT ", columns!(), " FROM tickets WHERE ticket_id = $1")
    };
    let row = sqlx::query(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| Error::not_found("ticket", id))?;
    from_row(&row)
}

/// Writes every mutable field of `t` and bumps its version.
pub async fn save(
    conn: &mut PgConnection,
    t: &mut Ticket,
    open_time: Option<DateTime<Utc>>,
) -> Result<(), Error> {
    t.version += 1;
    let r = t.resolution.as_ref();
    sqlx::query(
        "UPDATE tickets SET status = $2, category = $3, severity = $4, subject = $5, \
         description = $6, assignee_id = $7, resolution_code = $8, resolution_note = $9, \
         compensation_minor = $10, compensation_currency = $11, respond_due_time = $12, \
         resolve_due_time = $13, first_respond_time = $14, response_breached = $15, \
         resolution_breached = $16, next_due_time = $17, first_outcome_time = $18, \
         update_time = $19, resolve_time = $20, close_time = $21, version = $22, \
         open_time = COALESCE($23, open_time) \
         WHERE ticket_id = $1",
    )
    .bind(t.id)
    .bind(t.status.as_str())
    .bind(&t.category)
    .bind(t.severity.as_str())
    .bind(&t.subject)
    .bind(&t.description)
    .bind(&t.assignee_id)
    .bind(r.map(|r| r.code.as_str()))
    .bind(r.map(|r| r.note.clone()).unwrap_or_default())
    .bind(
        r.and_then(|r| r.compensation.as_ref())
            .map(|m| m.amount_minor),
    )
    .bind(
        r.and_then(|r| r.compensation.as_ref())
            .map(|m| m.currency.clone()),
    )
    .bind(t.sla.respond_due_time)
    .bind(t.sla.resolve_due_time)
    .bind(t.sla.first_respond_time)
    .bind(t.sla.response_breached)
    .bind(t.sla.resolution_breached)
    .bind(t.sla.next_due(t.status))
    .bind(t.follow_up.as_ref().and_then(|f| f.first_outcome_time))
    .bind(t.update_time)
    .bind(t.resolve_time)
    .bind(t.close_time)
    .bind(t.version)
    .bind(open_time)
    .execute(conn)
    .await?;
    Ok(())
}

fn history_from_row(row: &PgRow) -> Result<HistoryEntry, Error> {
    let from: Option<String> = row.try_get("from_status")?;
    let to: Option<String> = row.try_get("to_status")?;
    let detail: Option<String> = row.try_get("detail")?;
    Ok(HistoryEntry {
        id: row.try_get("entry_id")?,
        ticket_id: row.try_get("ticket_id")?,
        action: parse_col(row, "action", Action::parse)?,
        occur_time: row.try_get("occur_time")?,
        actor_service: row.try_get("actor_service")?,
        actor_id: row.try_get("actor_id")?,
        from_status: from.as_deref().and_then(Status::parse),
        to_status: to.as_deref().and_then(Status::parse),
        note: row.try_get("note")?,
        detail: detail
            .map(|d| serde_json::from_str::<HistoryDetail>(&d))
            .transpose()
            .map_err(Error::internal)?,
    })
}

/// The full history of a ticket, oldest first.
pub async fn history(conn: &mut PgConnection, id: Uuid) -> Result<Vec<HistoryEntry>, Error> {
    let page = history_page(conn, id, None, i64::MAX).await?;
    Ok(page.into_iter().map(|(entry, _)| entry).collect())
}

/// At most `limit` history entries after the position `after` (from the first without),
/// oldest first, each with its position.
pub async fn history_page(
    conn: &mut PgConnection,
    id: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<(HistoryEntry, i64)>, Error> {
    let rows = sqlx::query(
        "SELECT position, entry_id, ticket_id, action, occur_time, actor_service, actor_id, \
         from_status, to_status, note, detail::text AS detail FROM ticket_history \
         WHERE ticket_id = $1 AND position > $2 ORDER BY position LIMIT $3",
    )
    .bind(id)
    .bind(after.unwrap_or(0))
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| Ok((history_from_row(row)?, row.try_get("position")?)))
        .collect()
}

/// Filters of ListTickets.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    /// Statuses; empty means any.
    pub statuses: Vec<Status>,
    /// Kinds; empty means any.
    pub kinds: Vec<Kind>,
    /// Severities; empty means any.
    pub severities: Vec<Severity>,
    /// Assignee; empty means any.
    pub assignee_id: String,
    /// Only unassigned.
    pub unassigned_only: bool,
    /// Customer; empty means any.
    pub customer_id: String,
    /// Category; empty means any.
    pub category: String,
    /// Only breached.
    pub breached_only: bool,
    /// Only active, not breached, next due within this many seconds.
    pub near_breach_within_secs: Option<i64>,
    /// Opened at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Opened before.
    pub created_to: Option<DateTime<Utc>>,
    /// Work-queue order (next due first) instead of newest first.
    pub by_next_due: bool,
}

/// Keyset position in a ticket list: (sort time, id).
pub type TicketCursor = (DateTime<Utc>, Uuid);

/// One page of tickets, breach evaluated at `now`. Returns the tickets with their sort keys.
pub async fn list(
    conn: &mut PgConnection,
    f: &TicketFilter,
    now: DateTime<Utc>,
    after: Option<TicketCursor>,
    limit: usize,
) -> Result<Vec<(Ticket, TicketCursor)>, Error> {
    let statuses: Vec<&str> = f.statuses.iter().map(|s| s.as_str()).collect();
    let kinds: Vec<&str> = f.kinds.iter().map(|s| s.as_str()).collect();
    let severities: Vec<&str> = f.severities.iter().map(|s| s.as_str()).collect();
    // The sort key: newest first by create time, or ascending next due time with
    // resolved/closed tickets last (year 9999).
    let rows = sqlx::query(concat!(
        "SELECT ", columns!(), ", sort_key FROM ( \
           SELECT *, CASE WHEN $13 THEN COALESCE(next_due_time, '9999-12-31T00:00:00Z'::timestamptz) \
                          ELSE create_time END AS sort_key FROM tickets) t \
         WHERE (cardinality($1::text[]) = 0 OR status = ANY($1)) \
           AND (cardinality($2::text[]) = 0 OR kind = ANY($2)) \
           AND (cardinality($3::text[]) = 0 OR severity = ANY($3)) \
           AND ($4 = '' OR assignee_id = $4) \
           AND (NOT $5 OR assignee_id = '') \
           AND ($6 = '' OR customer_id = $6) \
           AND ($7 = '' OR category = $7) \
           AND (NOT $8 OR response_breached OR resolution_breached \
                OR (first_respond_time IS NULL AND respond_due_time < $9) \
                OR (status IN ('open', 'in_progress') AND resolve_due_time < $9)) \
           AND ($10::bigint IS NULL OR (next_due_time IS NOT NULL \
                AND next_due_time >= $9 AND next_due_time <= $9 + make_interval(secs => $10) \
                AND NOT response_breached AND NOT resolution_breached \
                AND NOT (first_respond_time IS NULL AND respond_due_time < $9) \
                AND NOT (resolve_due_time < $9))) \
           AND ($11::timestamptz IS NULL OR create_time >= $11) \
           AND ($12::timestamptz IS NULL OR create_time < $12) \
           AND ($14::timestamptz IS NULL OR \
                (CASE WHEN $13 THEN (sort_key, ticket_id) > ($14, $15) \
                      ELSE (sort_key, ticket_id) < ($14, $15) END)) \
         ORDER BY CASE WHEN $13 THEN sort_key END ASC, CASE WHEN $13 THEN ticket_id END ASC, \
                  CASE WHEN NOT $13 THEN sort_key END DESC, CASE WHEN NOT $13 THEN ticket_id END DESC \
         LIMIT $16"
    ))
    .bind(&statuses)
    .bind(&kinds)
    .bind(&severities)
    .bind(&f.assignee_id)
    .bind(f.unassigned_only)
    .bind(&f.customer_id)
    .bind(&f.category)
    .bind(f.breached_only)
    .bind(now)
    .bind(f.near_breach_within_secs)
    .bind(f.created_from)
    .bind(f.created_to)
    .bind(f.by_next_due)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let t = from_row(row)?;
            let key: DateTime<Utc> = row.try_get("sort_key")?;
            let id = t.id;
            Ok((t, (key, id)))
        })
        .collect()
}

/// Records the latest follow-up outcome of a ticket.
pub async fn set_last_outcome(
    conn: &mut PgConnection,
    id: Uuid,
    outcome: crate::domain::ticket::FollowUpOutcome,
) -> Result<(), Error> {
    sqlx::query("UPDATE tickets SET last_outcome = $2 WHERE ticket_id = $1")
        .bind(id)
        .bind(outcome.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Filters of GetFollowUpReport.
#[derive(Debug, Clone, Default)]
pub struct FollowUpFilter {
    /// Opened at or after.
    pub from: Option<DateTime<Utc>>,
    /// Opened before.
    pub to: Option<DateTime<Utc>>,
    /// Surveys; empty means any.
    pub survey_ids: Vec<Uuid>,
    /// Channels; empty means any.
    pub channels: Vec<String>,
    /// Triggers (stored form); empty means any.
    pub triggers: Vec<&'static str>,
}

/// The closed-loop counts over the matching follow-ups, due times judged at `now`.
pub async fn follow_up_counts(
    conn: &mut PgConnection,
    f: &FollowUpFilter,
    now: DateTime<Utc>,
) -> Result<crate::domain::ticket::FollowUpCounts, Error> {
    let row = sqlx::query(
        "SELECT count(*) AS n, \
           count(*) FILTER (WHERE 'nps_detractor' = ANY(follow_up_triggers)) AS nps, \
           count(*) FILTER (WHERE 'low_csat' = ANY(follow_up_triggers)) AS low_csat, \
           count(*) FILTER (WHERE first_outcome_time IS NOT NULL) AS followed, \
           count(*) FILTER (WHERE first_outcome_time <= respond_due_time) AS within, \
           count(*) FILTER (WHERE first_outcome_time > respond_due_time \
                            OR (first_outcome_time IS NULL AND respond_due_time < $1)) AS late, \
           count(*) FILTER (WHERE first_outcome_time IS NULL AND respond_due_time >= $1) AS pending, \
           count(*) FILTER (WHERE last_outcome = 'contacted') AS contacted, \
           count(*) FILTER (WHERE last_outcome = 'resolved') AS resolved, \
           count(*) FILTER (WHERE last_outcome = 'no_answer') AS no_answer \
         FROM tickets WHERE kind = 'follow_up' \
           AND ($2::timestamptz IS NULL OR create_time >= $2) \
           AND ($3::timestamptz IS NULL OR create_time < $3) \
           AND (cardinality($4::uuid[]) = 0 OR follow_up_survey_id = ANY($4)) \
           AND (cardinality($5::text[]) = 0 OR channel = ANY($5)) \
           AND (cardinality($6::text[]) = 0 OR follow_up_triggers && $6)",
    )
    .bind(now)
    .bind(f.from)
    .bind(f.to)
    .bind(&f.survey_ids)
    .bind(&f.channels)
    .bind(&f.triggers)
    .fetch_one(conn)
    .await?;
    Ok(crate::domain::ticket::FollowUpCounts {
        follow_ups: row.try_get("n")?,
        nps_detractor: row.try_get("nps")?,
        low_csat: row.try_get("low_csat")?,
        followed_up: row.try_get("followed")?,
        within_sla: row.try_get("within")?,
        late: row.try_get("late")?,
        pending: row.try_get("pending")?,
        contacted: row.try_get("contacted")?,
        resolved: row.try_get("resolved")?,
        no_answer: row.try_get("no_answer")?,
    })
}

/// When the ticket was opened or last reopened (the base of its due times).
pub async fn open_time(conn: &mut PgConnection, id: Uuid) -> Result<DateTime<Utc>, Error> {
    let t = sqlx::query_scalar("SELECT open_time FROM tickets WHERE ticket_id = $1")
        .bind(id)
        .fetch_one(conn)
        .await?;
    Ok(t)
}

/// Replaces a ticket's touchpoint.
pub async fn set_touchpoint(
    conn: &mut PgConnection,
    id: Uuid,
    touchpoint: Option<&Touchpoint>,
) -> Result<(), Error> {
    sqlx::query("UPDATE tickets SET touchpoint_kind = $2, touchpoint_id = $3 WHERE ticket_id = $1")
        .bind(id)
        .bind(touchpoint.map(|t| t.kind.as_str()))
        .bind(touchpoint.map(|t| t.id.clone()))
        .execute(conn)
        .await?;
    Ok(())
}

/// Every ticket of `customer_id`, oldest first (a data-subject export).
pub async fn of_customer(conn: &mut PgConnection, customer_id: &str) -> Result<Vec<Ticket>, Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM tickets WHERE customer_id = $1 ORDER BY create_time, ticket_id"
    ))
    .bind(customer_id)
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The history of every ticket of `customer_id`, oldest first (a data-subject export).
pub async fn history_of_customer(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<Vec<HistoryEntry>, Error> {
    let rows = sqlx::query(
        "SELECT h.position, h.entry_id, h.ticket_id, h.action, h.occur_time, h.actor_service, \
         h.actor_id, h.from_status, h.to_status, h.note, h.detail::text AS detail \
         FROM ticket_history h JOIN tickets t USING (ticket_id) \
         WHERE t.customer_id = $1 ORDER BY h.occur_time, h.position",
    )
    .bind(customer_id)
    .fetch_all(conn)
    .await?;
    rows.iter().map(history_from_row).collect()
}
