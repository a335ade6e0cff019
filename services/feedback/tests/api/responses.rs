//! Invitations and responses: validation against the survey, one response per invitation,
//! idempotent replays, and the closed loop's follow-up ticket in the same transaction.

use custops_contracts::custops::feedback::v1 as pb;
use tonic::Code;

use crate::helpers::{
    active_survey, fields, full_survey, invite, metadata, omitted, reason, respond, score,
    spawn_app, submit_request,
};

#[tokio::test]
async fn a_valid_response_is_stored_with_its_scores() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let invitation_id = invite(&mut app.client, &survey_id, "email").await?;
    let mut request = submit_request(
        &invitation_id,
        vec![
            score("nps", 9),
            score("csat", 4),
            pb::Answer {
                question_id: "reason".to_owned(),
                value: Some(pb::answer::Value::Choice(pb::ChoiceSelection {
                    option_ids: vec!["price".to_owned()],
                })),
            },
        ],
    );
    request.channel = "app".to_owned();
    let r = app
        .client
        .submit_response(request)
        .await?
        .into_inner()
        .survey_response
        .unwrap_or_default();
    let scores = r.scores.unwrap_or_default();
    assert_eq!(scores.nps_score, Some(9));
    assert_eq!(scores.nps_category(), pb::NpsCategory::Promoter);
    assert_eq!(scores.csat_score, Some(4));
    assert_eq!(scores.ces_score, None);
    assert!(r.completed);
    assert_eq!(r.channel, "app");
    assert!(r.follow_up_ticket_id.is_empty());
    // Optional questions left out are recorded as skipped.
    assert_eq!(r.answers.len(), 5);

    let got = app
        .client
        .get_response(pb::GetResponseRequest {
            response_id: r.response_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(got.survey_response, Some(r.clone()));
    let invitation = app
        .client
        .get_invitation(pb::GetInvitationRequest { invitation_id })
        .await?
        .into_inner()
        .invitation
        .unwrap_or_default();
    assert_eq!(invitation.status(), pb::InvitationStatus::Responded);
    assert_eq!(invitation.response_id, r.response_id);
    Ok(())
}

#[tokio::test]
async fn bad_answers_are_refused_naming_the_field() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let invitation_id = invite(&mut app.client, &survey_id, "email").await?;
    let cases: Vec<(Vec<pb::Answer>, Vec<&str>)> = vec![
        (vec![score("nps", 11)], vec!["answers[0].score"]),
        (
            vec![score("nps", 5), score("csat", 0)],
            vec!["answers[1].score"],
        ),
        (
            vec![score("nps", 5), score("ces", 8)],
            vec!["answers[1].score"],
        ),
        (vec![score("csat", 3)], vec!["answers"]),
        (
            vec![score("nps", 5), score("unknown", 3)],
            vec!["answers[1].question_id"],
        ),
        (
            vec![score("nps", 5), score("nps", 6)],
            vec!["answers[1].question_id"],
        ),
        (
            vec![omitted("nps", pb::AnswerOmission::Skipped)],
            vec!["answers[0].omission"],
        ),
        (
            vec![
                score("nps", 5),
                pb::Answer {
                    question_id: "comment".to_owned(),
                    value: Some(pb::answer::Value::Score(3)),
                },
            ],
            vec!["answers[1].score"],
        ),
        (
            vec![
                score("nps", 5),
                pb::Answer {
                    question_id: "reason".to_owned(),
                    value: Some(pb::answer::Value::Choice(pb::ChoiceSelection {
                        option_ids: vec!["nope".to_owned()],
                    })),
                },
            ],
            vec!["answers[1].choice.option_ids[0]"],
        ),
    ];
    for (answers, expected) in cases {
        let status = app
            .client
            .submit_response(submit_request(&invitation_id, answers.clone()))
            .await
            .err()
            .unwrap_or_else(|| tonic::Status::ok(""));
        assert_eq!(fields(&status), expected, "{answers:?}");
    }
    // Nothing was stored: the invitation still takes a valid response.
    let ok = app
        .client
        .submit_response(submit_request(&invitation_id, vec![score("nps", 10)]))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    Ok(())
}

#[tokio::test]
async fn a_closed_survey_takes_no_response() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let invitation_id = invite(&mut app.client, &survey_id, "email").await?;
    app.client
        .close_survey(pb::CloseSurveyRequest {
            survey_id: survey_id.clone(),
            etag: String::new(),
        })
        .await?;
    let status = app
        .client
        .submit_response(submit_request(&invitation_id, vec![score("nps", 8)]))
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status), "SURVEY_CLOSED");
    let invite_again = app
        .client
        .create_invitation(pb::CreateInvitationRequest {
            invitation: Some(pb::Invitation {
                survey_id,
                customer_id: uuid::Uuid::now_v7().to_string(),
                touchpoint: Some(pb::TouchpointRef {
                    kind: pb::TouchpointKind::Order.into(),
                    touchpoint_id: "o".to_owned(),
                }),
                ..Default::default()
            }),
            request_id: "r-closed".to_owned(),
        })
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(reason(&invite_again), "SURVEY_NOT_ACTIVE");
    Ok(())
}

#[tokio::test]
async fn one_response_per_invitation_and_replays_return_the_first() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let invitation_id = invite(&mut app.client, &survey_id, "email").await?;
    let request = submit_request(&invitation_id, vec![score("nps", 7)]);
    let first = app
        .client
        .submit_response(request.clone())
        .await?
        .into_inner()
        .survey_response
        .unwrap_or_default();
    let replay = app
        .client
        .submit_response(request)
        .await?
        .into_inner()
        .survey_response
        .unwrap_or_default();
    assert_eq!(first, replay);
    let second = app
        .client
        .submit_response(submit_request(&invitation_id, vec![score("nps", 3)]))
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(second.code(), Code::AlreadyExists);
    assert_eq!(reason(&second), "RESPONSE_ALREADY_SUBMITTED");
    assert_eq!(metadata(&second, "response_id"), first.response_id);
    Ok(())
}

#[tokio::test]
async fn twenty_concurrent_submits_store_exactly_one_response() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let invitation_id = invite(&mut app.client, &survey_id, "email").await?;
    let calls = (0..20).map(|i| {
        let mut client = app.client.clone();
        let request = submit_request(&invitation_id, vec![score("nps", i % 11)]);
        tokio::spawn(async move { client.submit_response(request).await })
    });
    let results = futures_util::future::join_all(calls).await;
    let mut ok = 0;
    let mut exists = 0;
    for result in results {
        match result? {
            Ok(_) => ok += 1,
            Err(status) if status.code() == Code::AlreadyExists => exists += 1,
            Err(status) => anyhow::bail!("unexpected {status:?}"),
        }
    }
    assert_eq!((ok, exists), (1, 19));
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM feedback.responses")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(stored, 1);
    Ok(())
}

#[tokio::test]
async fn a_detractor_response_opens_its_follow_up_ticket() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let r = respond(
        &mut app.client,
        &survey_id,
        "email",
        vec![score("nps", 4), score("csat", 2)],
    )
    .await?;
    assert!(!r.follow_up_ticket_id.is_empty());
    let ticket = app
        .client
        .get_ticket(pb::GetTicketRequest {
            ticket_id: r.follow_up_ticket_id.clone(),
        })
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    assert_eq!(ticket.kind(), pb::TicketKind::FollowUp);
    assert_eq!(ticket.status(), pb::TicketStatus::Open);
    assert_eq!(ticket.source_response_id, r.response_id);
    let follow_up = ticket.follow_up.unwrap_or_default();
    assert_eq!(
        follow_up.triggers,
        [
            i32::from(pb::FollowUpTrigger::NpsDetractor),
            i32::from(pb::FollowUpTrigger::LowCsat)
        ]
    );
    // Passives and satisfied customers open none.
    let passive = respond(
        &mut app.client,
        &survey_id,
        "email",
        vec![score("nps", 7), score("csat", 3)],
    )
    .await?;
    assert!(passive.follow_up_ticket_id.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_failure_opening_the_follow_up_leaves_no_response_either() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let invitation_id = invite(&mut app.client, &survey_id, "email").await?;
    // Sabotage: the ticket insert fails inside the response's transaction.
    sqlx::raw_sql(
        "CREATE FUNCTION feedback.sabotage() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'sabotaged'; END $$; \
         CREATE TRIGGER sabotage BEFORE INSERT ON feedback.tickets \
         FOR EACH ROW EXECUTE FUNCTION feedback.sabotage();",
    )
    .execute(&app.pool)
    .await?;
    let status = app
        .client
        .submit_response(submit_request(&invitation_id, vec![score("nps", 2)]))
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(status.code(), Code::Internal);
    assert!(!status.message().contains("sabotaged"), "{status:?}");
    let responses: i64 = sqlx::query_scalar("SELECT count(*) FROM feedback.responses")
        .fetch_one(&app.pool)
        .await?;
    let tickets: i64 = sqlx::query_scalar("SELECT count(*) FROM feedback.tickets")
        .fetch_one(&app.pool)
        .await?;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM feedback.outbox")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!((responses, tickets, events), (0, 0, 0));
    let invitation = app
        .client
        .get_invitation(pb::GetInvitationRequest {
            invitation_id: invitation_id.clone(),
        })
        .await?
        .into_inner()
        .invitation
        .unwrap_or_default();
    assert_eq!(invitation.status(), pb::InvitationStatus::Pending);

    // Repaired, the same response goes through with its ticket.
    sqlx::raw_sql("DROP TRIGGER sabotage ON feedback.tickets")
        .execute(&app.pool)
        .await?;
    let r = app
        .client
        .submit_response(submit_request(&invitation_id, vec![score("nps", 2)]))
        .await?
        .into_inner()
        .survey_response
        .unwrap_or_default();
    assert!(!r.follow_up_ticket_id.is_empty());
    let events: Vec<String> =
        sqlx::query_scalar("SELECT type FROM feedback.outbox ORDER BY appended_at, id")
            .fetch_all(&app.pool)
            .await?;
    assert!(
        events.contains(&"custops.feedback.v1.TicketOpened".to_owned()),
        "{events:?}"
    );
    assert!(
        events.contains(&"custops.feedback.v1.ResponseSubmitted".to_owned()),
        "{events:?}"
    );
    Ok(())
}

#[tokio::test]
async fn responses_and_invitations_list_with_filters_and_summaries_add_up() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    for nps in [10, 3, 8] {
        app.clock.advance(chrono::Duration::seconds(1));
        respond(
            &mut app.client,
            &survey_id,
            "email",
            vec![score("nps", nps)],
        )
        .await?;
    }
    let pending = invite(&mut app.client, &survey_id, "sms").await?;
    let all = app
        .client
        .list_responses(pb::ListResponsesRequest::default())
        .await?
        .into_inner()
        .survey_responses;
    let scores: Vec<Option<i32>> = all
        .iter()
        .map(|r| r.scores.and_then(|s| s.nps_score))
        .collect();
    assert_eq!(scores, [Some(8), Some(3), Some(10)]);
    let detractors = app
        .client
        .list_responses(pb::ListResponsesRequest {
            nps_categories: vec![pb::NpsCategory::Detractor.into()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .survey_responses;
    assert_eq!(detractors.len(), 1);
    let waiting = app
        .client
        .list_invitations(pb::ListInvitationsRequest {
            statuses: vec![pb::InvitationStatus::Pending.into()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .invitations;
    assert_eq!(
        waiting
            .iter()
            .map(|i| i.invitation_id.clone())
            .collect::<Vec<_>>(),
        [pending]
    );

    let customer_id = all[1].customer_id.clone();
    let summary = app
        .client
        .get_customer_feedback_summary(pb::GetCustomerFeedbackSummaryRequest { customer_id })
        .await?
        .into_inner()
        .summary
        .unwrap_or_default();
    assert_eq!(summary.response_count, 1);
    assert_eq!(summary.last_nps.as_ref().map(|l| l.score), Some(3));
    assert_eq!(summary.last_nps_category(), pb::NpsCategory::Detractor);
    assert_eq!((summary.open_ticket_count, summary.ticket_count), (1, 1));
    let stranger = app
        .client
        .get_customer_feedback_summary(pb::GetCustomerFeedbackSummaryRequest {
            customer_id: uuid::Uuid::now_v7().to_string(),
        })
        .await?
        .into_inner()
        .summary
        .unwrap_or_default();
    assert_eq!(
        (
            stranger.response_count,
            stranger.ticket_count,
            stranger.average_review_rating
        ),
        (0, 0, None)
    );
    Ok(())
}

#[tokio::test]
async fn expired_invitations_take_no_response_and_duplicates_are_named() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let customer_id = uuid::Uuid::now_v7().to_string();
    let invitation = |request_id: &str, expire_in: Option<i64>| pb::CreateInvitationRequest {
        invitation: Some(pb::Invitation {
            survey_id: survey_id.clone(),
            customer_id: customer_id.clone(),
            touchpoint: Some(pb::TouchpointRef {
                kind: pb::TouchpointKind::Order.into(),
                touchpoint_id: "o-1".to_owned(),
            }),
            expire_time: expire_in.map(|s| prost_types::Timestamp {
                seconds: crate::helpers::t0().timestamp() + s,
                nanos: 0,
            }),
            ..Default::default()
        }),
        request_id: request_id.to_owned(),
    };
    let first = app
        .client
        .create_invitation(invitation("inv-1", Some(3600)))
        .await?
        .into_inner()
        .invitation
        .unwrap_or_default();
    // The same key replays; another key for the same (survey, customer, touchpoint) is refused.
    let replay = app
        .client
        .create_invitation(invitation("inv-1", Some(3600)))
        .await?
        .into_inner()
        .invitation
        .unwrap_or_default();
    assert_eq!(replay.invitation_id, first.invitation_id);
    let duplicate = app
        .client
        .create_invitation(invitation("inv-2", Some(3600)))
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(reason(&duplicate), "INVITATION_EXISTS");
    assert_eq!(metadata(&duplicate, "invitation_id"), first.invitation_id);
    // A touchpoint of another kind than the survey's target is refused on its field.
    let mut wrong_kind = invitation("inv-3", None);
    if let Some(i) = wrong_kind.invitation.as_mut() {
        i.touchpoint = Some(pb::TouchpointRef {
            kind: pb::TouchpointKind::SupportContact.into(),
            touchpoint_id: "s-1".to_owned(),
        });
    }
    let status = app
        .client
        .create_invitation(wrong_kind)
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(fields(&status), ["invitation.touchpoint.kind"]);

    app.clock.advance(chrono::Duration::hours(2));
    let late = app
        .client
        .submit_response(submit_request(&first.invitation_id, vec![score("nps", 9)]))
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(reason(&late), "INVITATION_EXPIRED");
    let got = app
        .client
        .get_invitation(pb::GetInvitationRequest {
            invitation_id: first.invitation_id,
        })
        .await?
        .into_inner()
        .invitation
        .unwrap_or_default();
    assert_eq!(got.status(), pb::InvitationStatus::Expired);
    Ok(())
}
