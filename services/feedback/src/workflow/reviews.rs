//! Reviews: create (idempotent, with ReviewSubmitted), read, list, summaries.

use custops_common::outbox;
use uuid::Uuid;

use super::Context;
use crate::domain::review::{NewReview, Review, ReviewSummary, Subject};
use crate::error::Error;
use crate::store::{self, IdempotencyKey, reviews as rows};

/// Creates a review.
pub async fn create(ctx: &Context, key: IdempotencyKey, new: NewReview) -> Result<Review, Error> {
    let mut tx = ctx.store.pool.begin().await?;
    if let Some(id) = store::claim_key(&mut tx, &key).await? {
        return rows::get(&mut tx, id).await;
    }
    let now = ctx.now();
    let review = Review {
        id: Uuid::now_v7(),
        new,
        create_time: now,
        erase_time: None,
    };
    rows::insert(&mut tx, &review).await?;
    outbox::append(&mut tx, crate::events::review_submitted(&review)).await?;
    store::record_key(&mut tx, &key, review.id, now).await?;
    tx.commit().await?;
    Ok(review)
}

/// One review.
pub async fn get(ctx: &Context, id: Uuid) -> Result<Review, Error> {
    let mut conn = ctx.store.pool.acquire().await?;
    rows::get(&mut conn, id).await
}

/// A page of reviews.
pub async fn list(
    ctx: &Context,
    filter: &rows::ReviewFilter,
    after: Option<(chrono::DateTime<chrono::Utc>, Uuid)>,
    limit: usize,
) -> Result<Vec<Review>, Error> {
    let mut conn = ctx.store.pool.acquire().await?;
    rows::list(&mut conn, filter, after, limit).await
}

/// Summaries of `subjects`, in order.
pub async fn summaries(
    ctx: &Context,
    subjects: &[Subject],
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Vec<ReviewSummary>, Error> {
    let mut conn = ctx.store.pool.acquire().await?;
    let mut out = Vec::with_capacity(subjects.len());
    for s in subjects {
        out.push(rows::summary(&mut conn, s, from, to).await?);
    }
    Ok(out)
}
