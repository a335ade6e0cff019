//! Reviews: rows, lists and per-subject summaries (count, average, distribution) computed in
//! SQL over `reviews_by_subject`.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::parse_col;
use crate::domain::review::{NewReview, Review, ReviewSummary, Subject, SubjectKind};
use crate::error::Error;

fn from_row(row: &PgRow) -> Result<Review, Error> {
    let rating: i16 = row.try_get("rating")?;
    Ok(Review {
        id: row.try_get("review_id")?,
        new: NewReview {
            customer_id: row.try_get("customer_id")?,
            subject: Subject {
                kind: parse_col(row, "subject_kind", SubjectKind::parse)?,
                id: row.try_get("subject_id")?,
            },
            rating: i32::from(rating),
            title: row.try_get("title")?,
            text: row.try_get("body")?,
            channel: row.try_get("channel")?,
        },
        create_time: row.try_get("create_time")?,
        erase_time: row.try_get("erase_time")?,
    })
}

/// Inserts a review.
pub async fn insert(conn: &mut PgConnection, r: &Review) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO reviews (review_id, customer_id, subject_kind, subject_id, rating, title, \
         body, channel, create_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(r.id)
    .bind(&r.new.customer_id)
    .bind(r.new.subject.kind.as_str())
    .bind(&r.new.subject.id)
    .bind(i16::try_from(r.new.rating).unwrap_or(0))
    .bind(&r.new.title)
    .bind(&r.new.text)
    .bind(&r.new.channel)
    .bind(r.create_time)
    .execute(conn)
    .await?;
    Ok(())
}

/// The review `id`.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Review, Error> {
    let row = sqlx::query("SELECT * FROM reviews WHERE review_id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| Error::not_found("review", id))?;
    from_row(&row)
}

/// Filters of ListReviews.
#[derive(Debug, Clone, Default)]
pub struct ReviewFilter {
    /// Subject, if any.
    pub subject: Option<Subject>,
    /// Reviewer; empty means any.
    pub customer_id: String,
    /// Ratings; empty means any.
    pub ratings: Vec<i16>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
}

/// One page of reviews, newest first.
pub async fn list(
    conn: &mut PgConnection,
    f: &ReviewFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: usize,
) -> Result<Vec<Review>, Error> {
    let rows = sqlx::query(
        "SELECT * FROM reviews \
         WHERE ($1::text IS NULL OR (subject_kind = $1 AND subject_id = $2)) \
           AND ($3 = '' OR customer_id = $3) \
           AND (cardinality($4::smallint[]) = 0 OR rating = ANY($4)) \
           AND ($5::timestamptz IS NULL OR create_time >= $5) \
           AND ($6::timestamptz IS NULL OR create_time < $6) \
           AND ($7::timestamptz IS NULL OR (create_time, review_id) < ($7, $8)) \
         ORDER BY create_time DESC, review_id DESC LIMIT $9",
    )
    .bind(f.subject.as_ref().map(|s| s.kind.as_str()))
    .bind(f.subject.as_ref().map(|s| s.id.clone()))
    .bind(&f.customer_id)
    .bind(&f.ratings)
    .bind(f.from)
    .bind(f.to)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Count, average and distribution of one subject's reviews in the optional range.
pub async fn summary(
    conn: &mut PgConnection,
    subject: &Subject,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<ReviewSummary, Error> {
    let row = sqlx::query(
        "SELECT count(*) AS n, avg(rating)::float8 AS average, \
           count(*) FILTER (WHERE rating = 1) AS r1, count(*) FILTER (WHERE rating = 2) AS r2, \
           count(*) FILTER (WHERE rating = 3) AS r3, count(*) FILTER (WHERE rating = 4) AS r4, \
           count(*) FILTER (WHERE rating = 5) AS r5 \
         FROM reviews WHERE subject_kind = $1 AND subject_id = $2 \
           AND ($3::timestamptz IS NULL OR create_time >= $3) \
           AND ($4::timestamptz IS NULL OR create_time < $4)",
    )
    .bind(subject.kind.as_str())
    .bind(&subject.id)
    .bind(from)
    .bind(to)
    .fetch_one(conn)
    .await?;
    Ok(ReviewSummary {
        subject: subject.clone(),
        count: row.try_get("n")?,
        average: row.try_get("average")?,
        distribution: [
            row.try_get("r1")?,
            row.try_get("r2")?,
            row.try_get("r3")?,
            row.try_get("r4")?,
            row.try_get("r5")?,
        ],
    })
}

/// Every review of `customer_id`, oldest first (a data-subject export).
pub async fn of_customer(conn: &mut PgConnection, customer_id: &str) -> Result<Vec<Review>, Error> {
    let rows =
        sqlx::query("SELECT * FROM reviews WHERE customer_id = $1 ORDER BY create_time, review_id")
            .bind(customer_id)
            .fetch_all(conn)
            .await?;
    rows.iter().map(from_row).collect()
}
