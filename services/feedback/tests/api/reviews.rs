//! Reviews: create, validation, per-subject summaries (average and count, none when empty).

use custops_contracts::custops::feedback::v1 as pb;

use crate::helpers::{fields, rid, spawn_app};

fn product(id: &str) -> pb::ReviewSubject {
    pb::ReviewSubject {
        kind: pb::ReviewSubjectKind::Product.into(),
        subject_id: id.to_owned(),
    }
}

#[tokio::test]
async fn reviews_summarise_per_subject() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let customer_id = uuid::Uuid::now_v7().to_string();
    for (subject, rating) in [("sku-1", 5), ("sku-1", 4), ("sku-1", 2), ("sku-2", 1)] {
        app.client
            .create_review(pb::CreateReviewRequest {
                review: Some(pb::Review {
                    customer_id: customer_id.clone(),
                    subject: Some(product(subject)),
                    rating,
                    text: "fine".to_owned(),
                    ..Default::default()
                }),
                request_id: rid(),
            })
            .await?;
    }
    let summary = app
        .client
        .get_review_summary(pb::GetReviewSummaryRequest {
            subject: Some(product("sku-1")),
            create_time_range: None,
        })
        .await?
        .into_inner()
        .summary
        .unwrap_or_default();
    assert_eq!(summary.review_count, 3);
    assert_eq!(
        summary.average_rating.map(|a| (a * 100.0).round() / 100.0),
        Some(3.67)
    );
    assert_eq!(
        summary
            .distribution
            .iter()
            .map(|d| d.count)
            .collect::<Vec<_>>(),
        [0, 1, 0, 1, 1]
    );

    let batch = app
        .client
        .batch_get_review_summaries(pb::BatchGetReviewSummariesRequest {
            subjects: vec![product("sku-2"), product("none")],
        })
        .await?
        .into_inner()
        .summaries;
    assert_eq!(batch[0].average_rating, Some(1.0));
    assert_eq!((batch[1].review_count, batch[1].average_rating), (0, None));

    let listed = app
        .client
        .list_reviews(pb::ListReviewsRequest {
            subject: Some(product("sku-1")),
            ..Default::default()
        })
        .await?
        .into_inner()
        .reviews;
    assert_eq!(
        listed.iter().map(|r| r.rating).collect::<Vec<_>>(),
        [2, 4, 5]
    );
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM feedback.outbox WHERE type = 'custops.feedback.v1.ReviewSubmitted'",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(events, 4);
    Ok(())
}

#[tokio::test]
async fn bad_reviews_name_the_field() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let status = app
        .client
        .create_review(pb::CreateReviewRequest {
            review: Some(pb::Review {
                customer_id: String::new(),
                subject: Some(pb::ReviewSubject {
                    kind: 0,
                    subject_id: "x".to_owned(),
                }),
                rating: 6,
                ..Default::default()
            }),
            request_id: rid(),
        })
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(
        fields(&status),
        ["review.customer_id", "review.subject.kind", "review.rating"]
    );
    Ok(())
}
