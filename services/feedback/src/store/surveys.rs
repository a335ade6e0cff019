//! Surveys: insert, read, list (keyset, newest first), update with optimistic versions.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::parse_col;
use crate::domain::survey::{
    Reward, Survey, SurveyContent, SurveyStatus, SurveyTarget, TouchpointKind,
};
use crate::error::Error;

/// The selected columns of a survey row, as a literal so queries stay `&'static str`.
macro_rules! columns {
    () => {
        "survey_id, display_name, description, questions::text AS questions, touchpoint_kind, \
         segment_id, reward_points, reward_program_id, status, create_time, update_time, \
         activate_time, close_time, version"
    };
}

fn from_row(row: &PgRow) -> Result<Survey, Error> {
    let questions: String = row.try_get("questions")?;
    let reward_points: Option<i64> = row.try_get("reward_points")?;
    let reward_program_id: Option<String> = row.try_get("reward_program_id")?;
    Ok(Survey {
        id: row.try_get("survey_id")?,
        content: SurveyContent {
            display_name: row.try_get("display_name")?,
            description: row.try_get("description")?,
            questions: serde_json::from_str(&questions).map_err(Error::internal)?,
            target: SurveyTarget {
                touchpoint_kind: parse_col(row, "touchpoint_kind", TouchpointKind::parse)?,
                segment_id: row.try_get("segment_id")?,
            },
            reward: reward_points
                .zip(reward_program_id)
                .map(|(points, program_id)| Reward { points, program_id }),
        },
        status: parse_col(row, "status", SurveyStatus::parse)?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        activate_time: row.try_get("activate_time")?,
        close_time: row.try_get("close_time")?,
        version: row.try_get("version")?,
    })
}

/// Inserts a new survey.
pub async fn insert(conn: &mut PgConnection, survey: &Survey) -> Result<(), Error> {
    let c = &survey.content;
    sqlx::query(
        "INSERT INTO surveys (survey_id, display_name, description, questions, touchpoint_kind, \
         segment_id, reward_points, reward_program_id, status, create_time, update_time, version) \
         VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $10, $11)",
    )
    .bind(survey.id)
    .bind(&c.display_name)
    .bind(&c.description)
    .bind(serde_json::to_string(&c.questions).map_err(Error::internal)?)
    .bind(c.target.touchpoint_kind.as_str())
    .bind(&c.target.segment_id)
    .bind(c.reward.as_ref().map(|r| r.points))
    .bind(c.reward.as_ref().map(|r| r.program_id.clone()))
    .bind(survey.status.as_str())
    .bind(survey.create_time)
    .bind(survey.version)
    .execute(conn)
    .await?;
    Ok(())
}

/// The survey `id`, locked for update when `lock`.
pub async fn get(conn: &mut PgConnection, id: Uuid, lock: bool) -> Result<Survey, Error> {
    let sql = if lock {
        concat!(
            "SELECT ",
            columns!(),
            " FROM surveys WHERE survey_id = $1 FOR UPDATE"
        )
    } else {
        concat!("SELECT ", columns!(), " FROM surveys WHERE survey_id = $1")
    };
    let row = sqlx::query(sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| Error::not_found("survey", id))?;
    from_row(&row)
}

/// The survey `id` under a share lock: concurrent readers proceed, a status change waits
/// (invitations lock it this way so the survey cannot close under them).
pub async fn get_shared(conn: &mut PgConnection, id: Uuid) -> Result<Survey, Error> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM surveys WHERE survey_id = $1 FOR SHARE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| Error::not_found("survey", id))?;
    from_row(&row)
}

/// Writes every mutable field of `survey` and bumps its version.
pub async fn save(conn: &mut PgConnection, survey: &mut Survey) -> Result<(), Error> {
    survey.version += 1;
    let c = &survey.content;
    sqlx::query(
        "UPDATE surveys SET display_name = $2, description = $3, questions = $4::jsonb, \
         touchpoint_kind = $5, segment_id = $6, reward_points = $7, reward_program_id = $8, \
         status = $9, update_time = $10, activate_time = $11, close_time = $12, version = $13 \
         WHERE survey_id = $1",
    )
    .bind(survey.id)
    .bind(&c.display_name)
    .bind(&c.description)
    .bind(serde_json::to_string(&c.questions).map_err(Error::internal)?)
    .bind(c.target.touchpoint_kind.as_str())
    .bind(&c.target.segment_id)
    .bind(c.reward.as_ref().map(|r| r.points))
    .bind(c.reward.as_ref().map(|r| r.program_id.clone()))
    .bind(survey.status.as_str())
    .bind(survey.update_time)
    .bind(survey.activate_time)
    .bind(survey.close_time)
    .bind(survey.version)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a survey.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<(), Error> {
    sqlx::query("DELETE FROM surveys WHERE survey_id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Expires the pending invitations of a survey being closed.
pub async fn expire_invitations(conn: &mut PgConnection, id: Uuid) -> Result<(), Error> {
    sqlx::query(
        "UPDATE invitations SET status = 'expired' WHERE survey_id = $1 AND status = 'pending'",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Filters of ListSurveys.
#[derive(Debug, Clone, Default)]
pub struct SurveyFilter {
    /// Statuses; empty means any.
    pub statuses: Vec<SurveyStatus>,
    /// Touchpoint kinds; empty means any.
    pub touchpoint_kinds: Vec<TouchpointKind>,
    /// Segment; empty means any.
    pub segment_id: String,
}

/// One page of surveys, newest first, after the keyset `after` (create time, id).
pub async fn list(
    conn: &mut PgConnection,
    filter: &SurveyFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: usize,
) -> Result<Vec<Survey>, Error> {
    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    let kinds: Vec<&str> = filter.touchpoint_kinds.iter().map(|k| k.as_str()).collect();
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM surveys \
         WHERE (cardinality($1::text[]) = 0 OR status = ANY($1)) \
           AND (cardinality($2::text[]) = 0 OR touchpoint_kind = ANY($2)) \
           AND ($3 = '' OR segment_id = $3) \
           AND ($4::timestamptz IS NULL OR (create_time, survey_id) < ($4, $5)) \
         ORDER BY create_time DESC, survey_id DESC LIMIT $6"
    ))
    .bind(&statuses)
    .bind(&kinds)
    .bind(&filter.segment_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}
