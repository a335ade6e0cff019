//! Invitations and responses: rows and queries.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::parse_col;
use crate::domain::response::{
    Invitation, InvitationStatus, NewInvitation, RewardDelivery, RewardStatus, ScoreSlot, Scores,
    SurveyResponse,
};
use crate::domain::survey::{Touchpoint, TouchpointKind};
use crate::error::Error;

macro_rules! invitation_columns {
    () => {
        "invitation_id, survey_id, customer_id, touchpoint_kind, touchpoint_id, channel, \
         expire_time, status, response_id, create_time, respond_time"
    };
}

macro_rules! response_columns {
    () => {
        "response_id, invitation_id, survey_id, customer_id, touchpoint_kind, touchpoint_id, \
         channel, answers::text AS answers, completed, nps_score, nps_omitted, csat_score, \
         csat_omitted, ces_score, ces_omitted, follow_up_ticket_id, submit_time, reward_status, \
         reward_points, reward_program_id, reward_attempt_count, reward_last_attempt, \
         reward_next_attempt, reward_last_error, reward_ledger_entry_id, reward_deliver_time, erase_time, \
         segment_ids"
    };
}

fn touchpoint(row: &PgRow) -> Result<Touchpoint, Error> {
    Ok(Touchpoint {
        kind: parse_col(row, "touchpoint_kind", TouchpointKind::parse)?,
        id: row.try_get("touchpoint_id")?,
    })
}

fn invitation_from_row(row: &PgRow) -> Result<Invitation, Error> {
    Ok(Invitation {
        id: row.try_get("invitation_id")?,
        new: NewInvitation {
            survey_id: row.try_get("survey_id")?,
            customer_id: row.try_get("customer_id")?,
            touchpoint: touchpoint(row)?,
            channel: row.try_get("channel")?,
            expire_time: row.try_get("expire_time")?,
        },
        status: parse_col(row, "status", InvitationStatus::parse)?,
        response_id: row.try_get("response_id")?,
        create_time: row.try_get("create_time")?,
        respond_time: row.try_get("respond_time")?,
    })
}

fn slot(row: &PgRow, score: &str, omitted: &str) -> Result<ScoreSlot, Error> {
    let value: Option<i16> = row.try_get(score)?;
    Ok(ScoreSlot {
        score: value.map(i32::from),
        omitted: row.try_get(omitted)?,
    })
}

fn response_from_row(row: &PgRow) -> Result<SurveyResponse, Error> {
    let answers: String = row.try_get("answers")?;
    let reward_status: Option<String> = row.try_get("reward_status")?;
    let reward = match reward_status {
        None => None,
        Some(status) => Some(RewardDelivery {
            status: RewardStatus::parse(&status)
                .ok_or_else(|| super::corrupt("reward_status", &status))?,
            points: row.try_get::<Option<i64>, _>("reward_points")?.unwrap_or(0),
            program_id: row
                .try_get::<Option<String>, _>("reward_program_id")?
                .unwrap_or_default(),
            attempt_count: row.try_get("reward_attempt_count")?,
            last_attempt_time: row.try_get("reward_last_attempt")?,
            next_attempt_time: row.try_get("reward_next_attempt")?,
            last_error_reason: row.try_get("reward_last_error")?,
            ledger_entry_id: row.try_get("reward_ledger_entry_id")?,
            deliver_time: row.try_get("reward_deliver_time")?,
        }),
    };
    Ok(SurveyResponse {
        id: row.try_get("response_id")?,
        invitation_id: row.try_get("invitation_id")?,
        survey_id: row.try_get("survey_id")?,
        customer_id: row.try_get("customer_id")?,
        touchpoint: touchpoint(row)?,
        channel: row.try_get("channel")?,
        answers: serde_json::from_str(&answers).map_err(Error::internal)?,
        scores: Scores {
            nps: slot(row, "nps_score", "nps_omitted")?,
            csat: slot(row, "csat_score", "csat_omitted")?,
            ces: slot(row, "ces_score", "ces_omitted")?,
        },
        completed: row.try_get("completed")?,
        follow_up_ticket_id: row.try_get("follow_up_ticket_id")?,
        reward,
        submit_time: row.try_get("submit_time")?,
        erase_time: row.try_get("erase_time")?,
        segment_ids: row.try_get("segment_ids")?,
    })
}

/// Inserts an invitation. A second one for the same (survey, customer, touchpoint) fails
/// with a unique violation.
pub async fn insert_invitation(conn: &mut PgConnection, i: &Invitation) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO invitations (invitation_id, survey_id, customer_id, touchpoint_kind, \
         touchpoint_id, channel, expire_time, status, create_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(i.id)
    .bind(i.new.survey_id)
    .bind(&i.new.customer_id)
    .bind(i.new.touchpoint.kind.as_str())
    .bind(&i.new.touchpoint.id)
    .bind(&i.new.channel)
    .bind(i.new.expire_time)
    .bind(i.status.as_str())
    .bind(i.create_time)
    .execute(conn)
    .await?;
    Ok(())
}

/// The existing invitation for (survey, customer, touchpoint), if any.
pub async fn find_invitation(
    conn: &mut PgConnection,
    new: &NewInvitation,
) -> Result<Option<Uuid>, Error> {
    let id = sqlx::query_scalar(
        "SELECT invitation_id FROM invitations WHERE survey_id = $1 AND customer_id = $2 \
         AND touchpoint_kind = $3 AND touchpoint_id = $4",
    )
    .bind(new.survey_id)
    .bind(&new.customer_id)
    .bind(new.touchpoint.kind.as_str())
    .bind(&new.touchpoint.id)
    .fetch_optional(conn)
    .await?;
    Ok(id)
}

/// The invitation `id`, locked for update when `lock`.
pub async fn get_invitation(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Invitation, Error> {
    let sql = if lock {
        concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM invitations WHERE invitation_id = $1 FOR UPDATE"
        )
    } else {
        concat!(
            "SELECT ",
            invitation_columns!(),
            " FROM invitations WHERE invitation_id = $1"
        )
    };
    let row = sqlx::query(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| Error::not_found("invitation", id))?;
    invitation_from_row(&row)
}

/// Marks an invitation responded.
pub async fn mark_responded(
    conn: &mut PgConnection,
    invitation_id: Uuid,
    response_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE invitations SET status = 'responded', response_id = $2, respond_time = $3 \
         WHERE invitation_id = $1",
    )
    .bind(invitation_id)
    .bind(response_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts a response. The unique invitation id makes a second response impossible.
pub async fn insert_response(conn: &mut PgConnection, r: &SurveyResponse) -> Result<(), Error> {
    let score = |s: ScoreSlot| s.score.and_then(|v| i16::try_from(v).ok());
    let reward = r.reward.as_ref();
    sqlx::query(
        "INSERT INTO responses (response_id, invitation_id, survey_id, customer_id, \
         touchpoint_kind, touchpoint_id, channel, answers, completed, nps_score, nps_omitted, \
         csat_score, csat_omitted, ces_score, ces_omitted, follow_up_ticket_id, submit_time, \
         reward_status, reward_points, reward_program_id, reward_next_attempt, segment_ids, \
         reward_traceparent) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14, $15, $16, \
         $17, $18, $19, $20, $21, $22, $23)",
    )
    .bind(r.id)
    .bind(r.invitation_id)
    .bind(r.survey_id)
    .bind(&r.customer_id)
    .bind(r.touchpoint.kind.as_str())
    .bind(&r.touchpoint.id)
    .bind(&r.channel)
    .bind(serde_json::to_string(&r.answers).map_err(Error::internal)?)
    .bind(r.completed)
    .bind(score(r.scores.nps))
    .bind(r.scores.nps.omitted)
    .bind(score(r.scores.csat))
    .bind(r.scores.csat.omitted)
    .bind(score(r.scores.ces))
    .bind(r.scores.ces.omitted)
    .bind(r.follow_up_ticket_id)
    .bind(r.submit_time)
    .bind(reward.map(|w| w.status.as_str()))
    .bind(reward.map(|w| w.points))
    .bind(reward.map(|w| w.program_id.clone()))
    .bind(reward.and_then(|w| w.next_attempt_time))
    .bind(&r.segment_ids)
    // The reward worker continues the submitting call's trace from here.
    .bind(if reward.is_some() {
        custops_common::trace_context::current_traceparent()
    } else {
        String::new()
    })
    .execute(conn)
    .await?;
    Ok(())
}

/// Links a response to its follow-up ticket.
pub async fn set_follow_up(
    conn: &mut PgConnection,
    response_id: Uuid,
    ticket_id: Uuid,
) -> Result<(), Error> {
    sqlx::query("UPDATE responses SET follow_up_ticket_id = $2 WHERE response_id = $1")
        .bind(response_id)
        .bind(ticket_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The response `id`.
pub async fn get_response(conn: &mut PgConnection, id: Uuid) -> Result<SurveyResponse, Error> {
    let row = sqlx::query(concat!(
        "SELECT ",
        response_columns!(),
        " FROM responses WHERE response_id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| Error::not_found("response", id))?;
    response_from_row(&row)
}

/// Filters of ListResponses.
#[derive(Debug, Clone, Default)]
pub struct ResponseFilter {
    /// Surveys; empty means any.
    pub survey_ids: Vec<Uuid>,
    /// Customer; empty means any.
    pub customer_id: String,
    /// Channels; empty means any.
    pub channels: Vec<String>,
    /// Submitted at or after.
    pub from: Option<DateTime<Utc>>,
    /// Submitted before.
    pub to: Option<DateTime<Utc>>,
    /// Touchpoint, if any.
    pub touchpoint: Option<Touchpoint>,
    /// NPS categories ("promoter", "passive", "detractor"); empty means any.
    pub nps_categories: Vec<&'static str>,
    /// Reward statuses (stored form); empty means any.
    pub reward_statuses: Vec<&'static str>,
}

/// One page of responses, newest first, after the keyset `after`.
pub async fn list_responses(
    conn: &mut PgConnection,
    f: &ResponseFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: usize,
) -> Result<Vec<SurveyResponse>, Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        response_columns!(),
        " FROM responses \
         WHERE (cardinality($1::uuid[]) = 0 OR survey_id = ANY($1)) \
           AND ($2 = '' OR customer_id = $2) \
           AND (cardinality($3::text[]) = 0 OR channel = ANY($3)) \
           AND ($4::timestamptz IS NULL OR submit_time >= $4) \
           AND ($5::timestamptz IS NULL OR submit_time < $5) \
           AND ($6::timestamptz IS NULL OR (submit_time, response_id) < ($6, $7)) \
           AND ($9::text IS NULL OR (touchpoint_kind = $9 AND touchpoint_id = $10)) \
           AND (cardinality($11::text[]) = 0 OR \
                CASE WHEN nps_score >= 9 THEN 'promoter' WHEN nps_score >= 7 THEN 'passive' \
                     WHEN nps_score >= 0 THEN 'detractor' END = ANY($11)) \
           AND (cardinality($12::text[]) = 0 OR reward_status = ANY($12)) \
         ORDER BY submit_time DESC, response_id DESC LIMIT $8"
    ))
    .bind(&f.survey_ids)
    .bind(&f.customer_id)
    .bind(&f.channels)
    .bind(f.from)
    .bind(f.to)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(f.touchpoint.as_ref().map(|t| t.kind.as_str()))
    .bind(f.touchpoint.as_ref().map(|t| t.id.clone()))
    .bind(&f.nps_categories)
    .bind(&f.reward_statuses)
    .fetch_all(conn)
    .await?;
    rows.iter().map(response_from_row).collect()
}

/// Filters of ListInvitations.
#[derive(Debug, Clone, Default)]
pub struct InvitationFilter {
    /// Survey, if any.
    pub survey_id: Option<Uuid>,
    /// Customer; empty means any.
    pub customer_id: String,
    /// Statuses (stored form); empty means any.
    pub statuses: Vec<&'static str>,
    /// Touchpoint, if any.
    pub touchpoint: Option<Touchpoint>,
}

/// One page of invitations, newest first.
pub async fn list_invitations(
    conn: &mut PgConnection,
    f: &InvitationFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: usize,
) -> Result<Vec<Invitation>, Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        invitation_columns!(),
        " FROM invitations \
         WHERE ($1::uuid IS NULL OR survey_id = $1) \
           AND ($2 = '' OR customer_id = $2) \
           AND (cardinality($3::text[]) = 0 OR status = ANY($3)) \
           AND ($4::text IS NULL OR (touchpoint_kind = $4 AND touchpoint_id = $5)) \
           AND ($6::timestamptz IS NULL OR (create_time, invitation_id) < ($6, $7)) \
         ORDER BY create_time DESC, invitation_id DESC LIMIT $8"
    ))
    .bind(f.survey_id)
    .bind(&f.customer_id)
    .bind(&f.statuses)
    .bind(f.touchpoint.as_ref().map(|t| t.kind.as_str()))
    .bind(f.touchpoint.as_ref().map(|t| t.id.clone()))
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await?;
    rows.iter().map(invitation_from_row).collect()
}

/// The latest score of one kind: (score, response id, survey id, submit time).
pub type LatestScore = (i32, Uuid, Uuid, DateTime<Utc>);

/// One customer's feedback at a glance.
#[derive(Debug, Clone, Default)]
pub struct CustomerSummary {
    /// Responses.
    pub response_count: i64,
    /// Latest response.
    pub last_response_time: Option<DateTime<Utc>>,
    /// Latest NPS.
    pub last_nps: Option<LatestScore>,
    /// Latest CSAT.
    pub last_csat: Option<LatestScore>,
    /// Latest CES.
    pub last_ces: Option<LatestScore>,
    /// OPEN or IN_PROGRESS tickets.
    pub open_tickets: i64,
    /// Of those, follow-ups (the closed loop of a detractor or a low CSAT).
    pub open_follow_ups: i64,
    /// Of those, breached now.
    pub breached_open_tickets: i64,
    /// All tickets.
    pub tickets: i64,
    /// Reviews.
    pub reviews: i64,
    /// Average review rating.
    pub average_rating: Option<f64>,
}

async fn latest(
    conn: &mut PgConnection,
    customer_id: &str,
    sql: &'static str,
) -> Result<Option<LatestScore>, Error> {
    let row = sqlx::query(sql)
        .bind(customer_id)
        .fetch_optional(conn)
        .await?;
    row.map(|row| {
        let score: i16 = row.try_get("score")?;
        Ok((
            i32::from(score),
            row.try_get("response_id")?,
            row.try_get("survey_id")?,
            row.try_get("submit_time")?,
        ))
    })
    .transpose()
}

/// The summary of `customer_id`, breaches judged at `now`.
pub async fn customer_summary(
    conn: &mut PgConnection,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<CustomerSummary, Error> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM responses WHERE customer_id = $1) AS responses, \
           (SELECT max(submit_time) FROM responses WHERE customer_id = $1) AS last_response, \
           (SELECT count(*) FROM tickets WHERE customer_id = $1 AND status IN ('open', 'in_progress')) AS open_tickets, \
           (SELECT count(*) FROM tickets WHERE customer_id = $1 AND status IN ('open', 'in_progress') \
              AND kind = 'follow_up') AS open_follow_ups, \
           (SELECT count(*) FROM tickets WHERE customer_id = $1 AND status IN ('open', 'in_progress') \
              AND (response_breached OR resolution_breached OR resolve_due_time < $2 \
                   OR (first_respond_time IS NULL AND respond_due_time < $2))) AS breached, \
           (SELECT count(*) FROM tickets WHERE customer_id = $1) AS tickets, \
           (SELECT count(*) FROM reviews WHERE customer_id = $1) AS reviews, \
           (SELECT avg(rating)::float8 FROM reviews WHERE customer_id = $1) AS average_rating",
    )
    .bind(customer_id)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(CustomerSummary {
        response_count: row.try_get("responses")?,
        last_response_time: row.try_get("last_response")?,
        last_nps: latest(&mut *conn, customer_id, "SELECT nps_score AS score, response_id, survey_id, submit_time FROM responses WHERE customer_id = $1 AND nps_score IS NOT NULL ORDER BY submit_time DESC, response_id DESC LIMIT 1").await?,
        last_csat: latest(&mut *conn, customer_id, "SELECT csat_score AS score, response_id, survey_id, submit_time FROM responses WHERE customer_id = $1 AND csat_score IS NOT NULL ORDER BY submit_time DESC, response_id DESC LIMIT 1").await?,
        last_ces: latest(&mut *conn, customer_id, "SELECT ces_score AS score, response_id, survey_id, submit_time FROM responses WHERE customer_id = $1 AND ces_score IS NOT NULL ORDER BY submit_time DESC, response_id DESC LIMIT 1").await?,
        open_tickets: row.try_get("open_tickets")?,
        open_follow_ups: row.try_get("open_follow_ups")?,
        breached_open_tickets: row.try_get("breached")?,
        tickets: row.try_get("tickets")?,
        reviews: row.try_get("reviews")?,
        average_rating: row.try_get("average_rating")?,
    })
}

/// Every invitation of `customer_id`, oldest first (a data-subject export).
pub async fn invitations_of(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<Vec<Invitation>, Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        invitation_columns!(),
        " FROM invitations WHERE customer_id = $1 ORDER BY create_time, invitation_id"
    ))
    .bind(customer_id)
    .fetch_all(conn)
    .await?;
    rows.iter().map(invitation_from_row).collect()
}

/// Every response of `customer_id` with its answers, oldest first (a data-subject export).
pub async fn responses_of(
    conn: &mut PgConnection,
    customer_id: &str,
) -> Result<Vec<SurveyResponse>, Error> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        response_columns!(),
        " FROM responses WHERE customer_id = $1 ORDER BY submit_time, response_id"
    ))
    .bind(customer_id)
    .fetch_all(conn)
    .await?;
    rows.iter().map(response_from_row).collect()
}
