//! Reviews: CreateReview, GetReview, ListReviews, GetReviewSummary,
//! BatchGetReviewSummaries. Each handler parses (below the handlers), calls one use case in
//! `workflow::reviews` and converts the result.

use chrono::{DateTime, Utc};
use custops_common::auth::Caller;
use custops_common::error::Violations;
use custops_common::idempotency::RequestKey;
use custops_contracts::custops::feedback::v1 as pb;
use tonic::Request;

use super::{FeedbackApi, Keyset, Rpc, next_page_token, ok, parse};
use crate::domain::review::{NewReview, Subject};
use crate::domain::text;
use crate::error::Error;
use crate::store::reviews::ReviewFilter;
use crate::workflow;

#[tracing::instrument(skip_all)]
pub(super) async fn create_review(
    api: &FeedbackApi,
    request: Request<pb::CreateReviewRequest>,
) -> Rpc<pb::CreateReviewResponse> {
    let caller = Caller::service_of(&request);
    let (key, new) = create_request(&caller, request.into_inner())?;
    let reply = workflow::reviews::create(&api.ctx, key, new, |r| pb::CreateReviewResponse {
        review: Some(r.into()),
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_review(
    api: &FeedbackApi,
    request: Request<pb::GetReviewRequest>,
) -> Rpc<pb::GetReviewResponse> {
    let id = parse::required_id("review_id", &request.get_ref().review_id)?;
    let r = workflow::reviews::get(&api.ctx, id).await?;
    ok(pb::GetReviewResponse {
        review: Some((&r).into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn list_reviews(
    api: &FeedbackApi,
    request: Request<pb::ListReviewsRequest>,
) -> Rpc<pb::ListReviewsResponse> {
    let req = request.into_inner();
    let filter = list_filter(&req)?;
    let page = api.page::<_, Keyset>(&req)?;
    let mut list = workflow::reviews::list(&api.ctx, &filter, page.after, page.fetch()).await?;
    let next_page_token = next_page_token(&page, &mut list, |r| (r.create_time, r.id))?;
    ok(pb::ListReviewsResponse {
        reviews: list.iter().map(Into::into).collect(),
        next_page_token,
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_review_summary(
    api: &FeedbackApi,
    request: Request<pb::GetReviewSummaryRequest>,
) -> Rpc<pb::GetReviewSummaryResponse> {
    let (subject, (from, to)) = summary_request(&request.into_inner())?;
    let summaries = workflow::reviews::summaries(&api.ctx, &[subject], from, to).await?;
    ok(pb::GetReviewSummaryResponse {
        summary: summaries.first().map(Into::into),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn batch_get_review_summaries(
    api: &FeedbackApi,
    request: Request<pb::BatchGetReviewSummariesRequest>,
) -> Rpc<pb::BatchGetReviewSummariesResponse> {
    let subjects = subjects_request(&request.into_inner())?;
    let summaries = workflow::reviews::summaries(&api.ctx, &subjects, None, None).await?;
    ok(pb::BatchGetReviewSummariesResponse {
        summaries: summaries.iter().map(Into::into).collect(),
    })
}

// Parsing: each request into the values its use case takes, every bad field a violation.

fn create_request(
    caller: &str,
    req: pb::CreateReviewRequest,
) -> Result<(RequestKey, NewReview), Error> {
    let mut v = Violations::new();
    let key = parse::key(&mut v, &req.request_id, caller, "CreateReview", &req);
    let r = req.review.unwrap_or_default();
    let customer_id = parse::customer_id(&mut v, "review.customer_id", &r.customer_id);
    let subject = parse::subject(&mut v, "review.subject", r.subject.as_ref());
    if !(1..=5).contains(&r.rating) {
        v.add("review.rating", "must be 1-5");
    }
    parse::check(&mut v, "review.title", text::length(&r.title, 0, 200));
    parse::check(&mut v, "review.text", text::length(&r.text, 0, 10_000));
    parse::optional_slug(&mut v, "review.channel", &r.channel);
    parse::finish(v, || {
        Some((
            key?,
            NewReview {
                customer_id: customer_id?,
                subject: subject?,
                rating: r.rating,
                title: r.title,
                text: r.text,
                channel: r.channel,
            },
        ))
    })
}

fn list_filter(req: &pb::ListReviewsRequest) -> Result<ReviewFilter, Error> {
    let mut v = Violations::new();
    let subject = req
        .subject
        .as_ref()
        .and_then(|s| parse::subject(&mut v, "subject", Some(s)));
    let mut ratings = Vec::new();
    for (i, r) in req.ratings.iter().enumerate() {
        match i16::try_from(*r) {
            Ok(r @ 1..=5) => ratings.push(r),
            _ => v.add(format!("ratings[{i}]"), "must be 1-5"),
        }
    }
    let (from, to) = parse::time_range(&mut v, "create_time_range", req.create_time_range.as_ref());
    let customer_id = parse::customer_filter(&mut v, "customer_id", &req.customer_id);
    parse::finish(v, || {
        Some(ReviewFilter {
            subject,
            customer_id,
            ratings,
            from,
            to,
        })
    })
}

type Range = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn summary_request(req: &pb::GetReviewSummaryRequest) -> Result<(Subject, Range), Error> {
    let mut v = Violations::new();
    let subject = parse::subject(&mut v, "subject", req.subject.as_ref());
    let range = parse::time_range(&mut v, "create_time_range", req.create_time_range.as_ref());
    parse::finish(v, || Some((subject?, range)))
}

fn subjects_request(req: &pb::BatchGetReviewSummariesRequest) -> Result<Vec<Subject>, Error> {
    let mut v = Violations::new();
    if req.subjects.is_empty() || req.subjects.len() > 100 {
        v.add("subjects", "1-100 subjects");
    }
    let subjects = req
        .subjects
        .iter()
        .enumerate()
        .filter_map(|(i, s)| parse::subject(&mut v, &format!("subjects[{i}]"), Some(s)))
        .collect();
    parse::finish(v, || Some(subjects))
}
