//! Reviews: create (idempotent, with ReviewSubmitted), read, list, summaries.

use custops_common::idempotency::RequestKey;
use prost::Message;
use uuid::Uuid;

use super::Context;
use crate::domain::review::{NewReview, Review, ReviewSummary, Subject};
use crate::error::Error;
use crate::store::reviews as rows;

/// Creates a review (with ReviewSubmitted) and answers `reply` of it; a replay of the key
/// answers the first reply.
pub async fn create<R: Message + Default>(
    ctx: &Context,
    key: RequestKey,
    new: NewReview,
    reply: impl FnOnce(&Review) -> R + Send + 'static,
) -> Result<R, Error> {
    let review = Review {
        id: Uuid::now_v7(),
        new,
        create_time: ctx.now(),
        erase_time: None,
    };
    super::once(ctx, Some(&key), reply, move |conn| {
        Box::pin(async move {
            rows::insert(conn, &review).await?;
            let submitted = crate::events::review_submitted(&review);
            Ok((review, vec![submitted]))
        })
    })
    .await
}

/// One review.
pub async fn get(ctx: &Context, id: Uuid) -> Result<Review, Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    rows::get(&mut conn, id).await
}

/// Up to `limit` reviews after `after`, newest first.
pub async fn list(
    ctx: &Context,
    filter: &rows::ReviewFilter,
    after: Option<(chrono::DateTime<chrono::Utc>, Uuid)>,
    limit: usize,
) -> Result<Vec<Review>, Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    rows::list(&mut conn, filter, after, limit).await
}

/// Summaries of `subjects`, in order.
pub async fn summaries(
    ctx: &Context,
    subjects: &[Subject],
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<ReviewSummary>, Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    let mut out = Vec::with_capacity(subjects.len());
    for s in subjects {
        out.push(rows::summary(&mut conn, s, from, to).await?);
    }
    Ok(out)
}
