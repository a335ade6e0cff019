//! Integers at their extremes (issue 14, point 5): every amount, score, count and duration
//! a request carries is refused outside its documented range with INVALID_ARGUMENT naming
//! the field, and nothing is stored.

use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::feedback::v1 as pb;
use tonic::Status;

use crate::helpers::{
    Client, active_survey, fields, full_survey, invite, rid, score, spawn_app, submit_request,
};

/// Largest money amount a request carries (10^15 minor units).
const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

/// One request to any of the RPCs under test.
enum Call {
    CreateSurvey(pb::Survey),
    Submit(pb::SubmitResponseRequest),
    Resolve(String, i64),
    CreateReview(i32),
    ListReviews(Vec<i32>),
    SlaPolicy(i64, i64),
    NearBreach(i64),
}

async fn send(client: &mut Client, call: Call) -> Result<(), Status> {
    match call {
        Call::CreateSurvey(survey) => client
            .create_survey(pb::CreateSurveyRequest {
                survey: Some(survey),
                request_id: rid(),
            })
            .await
            .map(drop),
        Call::Submit(request) => client.submit_response(request).await.map(drop),
        Call::Resolve(ticket_id, amount_minor) => client
            .resolve_ticket(pb::ResolveTicketRequest {
                ticket_id,
                resolution: Some(pb::TicketResolution {
                    code: pb::ResolutionCode::Compensated.into(),
                    note: "voucher".to_owned(),
                    compensation: Some(common::Money {
                        amount_minor,
                        currency: "CNY".to_owned(),
                    }),
                }),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .map(drop),
        Call::CreateReview(rating) => client
            .create_review(pb::CreateReviewRequest {
                review: Some(pb::Review {
                    customer_id: uuid::Uuid::now_v7().to_string(),
                    subject: Some(pb::ReviewSubject {
                        kind: pb::ReviewSubjectKind::Product.into(),
                        subject_id: "sku-1".to_owned(),
                    }),
                    rating,
                    ..Default::default()
                }),
                request_id: rid(),
            })
            .await
            .map(drop),
        Call::ListReviews(ratings) => client
            .list_reviews(pb::ListReviewsRequest {
                ratings,
                ..Default::default()
            })
            .await
            .map(drop),
        Call::SlaPolicy(first_response, resolution) => client
            .update_sla_policy(pb::UpdateSlaPolicyRequest {
                sla_policy: Some(pb::SlaPolicy {
                    // The first target carries the values under test, the others are valid.
                    targets: [
                        pb::TicketSeverity::Low,
                        pb::TicketSeverity::Medium,
                        pb::TicketSeverity::High,
                        pb::TicketSeverity::Critical,
                    ]
                    .into_iter()
                    .enumerate()
                    .map(|(i, severity)| {
                        let (first, resolve) = if i == 0 {
                            (first_response, resolution)
                        } else {
                            (3_600, 86_400)
                        };
                        pb::SeveritySlaTarget {
                            severity: severity.into(),
                            first_response: Some(prost_types::Duration {
                                seconds: first,
                                nanos: 0,
                            }),
                            resolution: Some(prost_types::Duration {
                                seconds: resolve,
                                nanos: 0,
                            }),
                        }
                    })
                    .collect(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["targets".to_owned()],
                }),
            })
            .await
            .map(drop),
        Call::NearBreach(seconds) => client
            .list_tickets(pb::ListTicketsRequest {
                near_breach_within: Some(prost_types::Duration { seconds, nanos: 0 }),
                ..Default::default()
            })
            .await
            .map(drop),
    }
}

/// Sends `call` and checks it is INVALID_ARGUMENT naming exactly `expected`.
async fn check(client: &mut Client, name: &str, call: Call, expected: &[&str]) {
    match send(client, call).await {
        Ok(()) => panic!("{name}: accepted"),
        Err(status) => assert_eq!(fields(&status), expected, "{name}: {status:?}"),
    }
}

fn rewarded(points: i64) -> pb::Survey {
    let mut survey = full_survey();
    survey.reward = Some(pb::SurveyReward {
        points,
        program_id: uuid::Uuid::now_v7().to_string(),
    });
    survey
}

fn multiple_choice(max_selections: i32) -> pb::Survey {
    let mut survey = full_survey();
    if let Some(q) = survey.questions.get_mut(3) {
        q.kind = pb::QuestionKind::MultipleChoice.into();
        q.max_selections = max_selections;
    }
    survey
}

#[tokio::test]
async fn every_integer_out_of_range_names_its_field() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let client = &mut app.client;
    for points in [i64::MAX, i64::MIN, 0, 1_000_001] {
        check(
            client,
            &format!("reward {points}"),
            Call::CreateSurvey(rewarded(points)),
            &["survey.reward.points"],
        )
        .await;
    }
    for max in [i32::MAX, i32::MIN, 3] {
        check(
            client,
            &format!("max_selections {max}"),
            Call::CreateSurvey(multiple_choice(max)),
            &["survey.questions[3].max_selections"],
        )
        .await;
    }

    let survey_id = active_survey(client, full_survey()).await?;
    let invitation_id = invite(client, &survey_id, "email").await?;
    for (question, value, field) in [
        ("nps", i32::MAX, "answers[0].score"),
        ("nps", i32::MIN, "answers[0].score"),
        ("nps", 11, "answers[0].score"),
        ("csat", i32::MAX, "answers[1].score"),
        ("ces", i32::MIN, "answers[1].score"),
    ] {
        let mut answers = vec![score("nps", 9)];
        if question == "nps" {
            answers[0] = score("nps", value);
        } else {
            answers.push(score(question, value));
        }
        check(
            client,
            &format!("{question} score {value}"),
            Call::Submit(submit_request(&invitation_id, answers)),
            &[field],
        )
        .await;
    }

    let ticket = client
        .open_ticket(pb::OpenTicketRequest {
            customer_id: uuid::Uuid::now_v7().to_string(),
            category: "delivery".to_owned(),
            severity: pb::TicketSeverity::Medium.into(),
            channel: "phone".to_owned(),
            subject: "Parcel late".to_owned(),
            request_id: rid(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    client
        .start_ticket(pb::StartTicketRequest {
            ticket_id: ticket.ticket_id.clone(),
            ..Default::default()
        })
        .await?;
    for amount in [i64::MAX, i64::MIN, MAX_AMOUNT + 1, -1] {
        check(
            client,
            &format!("compensation {amount}"),
            Call::Resolve(ticket.ticket_id.clone(), amount),
            &["resolution.compensation.amount_minor"],
        )
        .await;
    }
    for rating in [i32::MAX, i32::MIN, 0, 6] {
        check(
            client,
            &format!("rating {rating}"),
            Call::CreateReview(rating),
            &["review.rating"],
        )
        .await;
    }
    check(
        client,
        "rating filters",
        Call::ListReviews(vec![5, i32::MAX, i32::MIN]),
        &["ratings[1]", "ratings[2]"],
    )
    .await;
    // The largest duration protobuf allows (10,000 years) and one second past each target's
    // bound.
    check(
        client,
        "SLA of 10,000 years",
        Call::SlaPolicy(315_576_000_000, 315_576_000_000),
        &[
            "sla_policy.targets[0].first_response",
            "sla_policy.targets[0].resolution",
        ],
    )
    .await;
    check(
        client,
        "SLA one second too long",
        Call::SlaPolicy(90 * 86_400 + 1, 365 * 86_400 + 1),
        &[
            "sla_policy.targets[0].first_response",
            "sla_policy.targets[0].resolution",
        ],
    )
    .await;
    for seconds in [315_576_000_000, 30 * 86_400 + 1, 0] {
        check(
            client,
            &format!("near breach {seconds}"),
            Call::NearBreach(seconds),
            &["near_breach_within"],
        )
        .await;
    }

    // The largest compensation is taken, and nothing refused was stored.
    let resolved = client
        .resolve_ticket(pb::ResolveTicketRequest {
            ticket_id: ticket.ticket_id.clone(),
            resolution: Some(pb::TicketResolution {
                code: pb::ResolutionCode::Compensated.into(),
                note: "voucher".to_owned(),
                compensation: Some(common::Money {
                    amount_minor: MAX_AMOUNT,
                    currency: "CNY".to_owned(),
                }),
            }),
            request_id: rid(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .ticket
        .and_then(|t| t.resolution)
        .and_then(|r| r.compensation)
        .map(|m| m.amount_minor);
    assert_eq!(resolved, Some(MAX_AMOUNT));
    let responses: i64 = sqlx::query_scalar("SELECT count(*) FROM feedback.responses")
        .fetch_one(&app.pool)
        .await?;
    let reviews: i64 = sqlx::query_scalar("SELECT count(*) FROM feedback.reviews")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!((responses, reviews), (0, 0));
    Ok(())
}
