//! Survey use cases: create (idempotent), update, activate, close, delete, read, list.

use custops_common::idempotency::RequestKey;
use prost::Message;
use uuid::Uuid;

use super::Context;
use crate::domain::Rejection;
use crate::domain::survey::{self, Survey, SurveyContent, SurveyMask, SurveyStatus};
use crate::error::Error;
use crate::store::surveys as rows;

/// Creates a DRAFT survey and answers `reply` of it; a replay of the key answers the first
/// reply.
pub async fn create<R: Message + Default>(
    ctx: &Context,
    key: RequestKey,
    content: SurveyContent,
    reply: impl FnOnce(&Survey) -> R + Send + 'static,
) -> Result<R, Error> {
    let now = ctx.now();
    let survey = Survey {
        id: Uuid::now_v7(),
        content,
        status: SurveyStatus::Draft,
        create_time: now,
        update_time: now,
        activate_time: None,
        close_time: None,
        version: 1,
    };
    super::once(ctx, Some(&key), reply, move |conn| {
        Box::pin(async move {
            rows::insert(conn, &survey).await?;
            Ok((survey, Vec::new()))
        })
    })
    .await
}

/// One survey.
pub async fn get(ctx: &Context, id: Uuid) -> Result<Survey, Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    rows::get(&mut conn, id, false).await
}

fn check_etag(s: &Survey, etag: &str) -> Result<(), Error> {
    if etag.is_empty() || etag == s.etag() {
        Ok(())
    } else {
        Err(Rejection::StaleEtag { resource: "survey" }.into())
    }
}

/// Updates the masked fields.
pub async fn update(
    ctx: &Context,
    id: Uuid,
    etag: &str,
    mask: SurveyMask,
    new: SurveyContent,
) -> Result<Survey, Error> {
    let mut tx = ctx.store.pool.begin().await?;
    let mut s = rows::get(&mut tx, id, true).await?;
    check_etag(&s, etag)?;
    let before = s.content.clone();
    survey::apply_update(&mut s, mask, new)?;
    if s.content == before {
        // Same input, same result: nothing to write.
        return Ok(s);
    }
    s.update_time = ctx.now();
    rows::save(&mut tx, &mut s).await?;
    tx.commit().await?;
    Ok(s)
}

/// DRAFT → ACTIVE (ACTIVE stays).
pub async fn activate(ctx: &Context, id: Uuid, etag: &str) -> Result<Survey, Error> {
    let mut tx = ctx.store.pool.begin().await?;
    let mut s = rows::get(&mut tx, id, true).await?;
    check_etag(&s, etag)?;
    match s.status {
        SurveyStatus::Active => return Ok(s),
        SurveyStatus::Closed => {
            return Err(Rejection::SurveyClosed.into());
        }
        SurveyStatus::Draft => {}
    }
    if s.content.questions.is_empty() {
        return Err(Error::invalid(
            "survey.questions",
            "a survey needs at least one question to be activated",
        ));
    }
    let now = ctx.now();
    s.status = SurveyStatus::Active;
    s.activate_time = Some(now);
    s.update_time = now;
    rows::save(&mut tx, &mut s).await?;
    tx.commit().await?;
    Ok(s)
}

/// DRAFT or ACTIVE → CLOSED (CLOSED stays); pending invitations expire.
pub async fn close(ctx: &Context, id: Uuid, etag: &str) -> Result<Survey, Error> {
    let mut tx = ctx.store.pool.begin().await?;
    let mut s = rows::get(&mut tx, id, true).await?;
    check_etag(&s, etag)?;
    if s.status == SurveyStatus::Closed {
        return Ok(s);
    }
    let now = ctx.now();
    s.status = SurveyStatus::Closed;
    s.close_time = Some(now);
    s.update_time = now;
    rows::save(&mut tx, &mut s).await?;
    rows::expire_invitations(&mut tx, id).await?;
    tx.commit().await?;
    Ok(s)
}

/// Deletes a DRAFT survey.
pub async fn delete(ctx: &Context, id: Uuid, etag: &str) -> Result<(), Error> {
    let mut tx = ctx.store.pool.begin().await?;
    let s = rows::get(&mut tx, id, true).await?;
    check_etag(&s, etag)?;
    if s.status != SurveyStatus::Draft {
        return Err(Rejection::SurveyNotDeletable.into());
    }
    rows::delete(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

/// Up to `limit` surveys after `after`, newest first.
pub async fn list(
    ctx: &Context,
    filter: &rows::SurveyFilter,
    after: Option<(chrono::DateTime<chrono::Utc>, Uuid)>,
    limit: usize,
) -> Result<Vec<Survey>, Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    rows::list(&mut conn, filter, after, limit).await
}
