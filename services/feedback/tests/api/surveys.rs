//! Surveys: create (idempotent), validation naming fields, lifecycle, update rules, list.

use custops_contracts::custops::feedback::v1 as pb;
use tonic::Code;

use crate::helpers::{fields, full_survey, question, reason, rid, spawn_app};

#[tokio::test]
async fn a_survey_goes_from_draft_to_active_to_closed() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let created = app
        .client
        .create_survey(pb::CreateSurveyRequest {
            survey: Some(full_survey()),
            request_id: rid(),
        })
        .await?
        .into_inner()
        .survey
        .unwrap_or_default();
    assert_eq!(created.status(), pb::SurveyStatus::Draft);
    assert_eq!(created.questions.len(), 5);

    let got = app
        .client
        .get_survey(pb::GetSurveyRequest {
            survey_id: created.survey_id.clone(),
        })
        .await?
        .into_inner()
        .survey
        .unwrap_or_default();
    assert_eq!(got, created);

    let active = app
        .client
        .activate_survey(pb::ActivateSurveyRequest {
            survey_id: created.survey_id.clone(),
            etag: created.etag.clone(),
        })
        .await?
        .into_inner()
        .survey
        .unwrap_or_default();
    assert_eq!(active.status(), pb::SurveyStatus::Active);

    // Questions are frozen once active; the display name is not.
    let mut edit = active.clone();
    edit.questions.pop();
    let refused = app
        .client
        .update_survey(pb::UpdateSurveyRequest {
            survey: Some(edit.clone()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["questions".to_owned()],
            }),
        })
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "SURVEY_NOT_DRAFT");
    edit.display_name = "Renamed".to_owned();
    let renamed = app
        .client
        .update_survey(pb::UpdateSurveyRequest {
            survey: Some(edit),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".to_owned()],
            }),
        })
        .await?
        .into_inner()
        .survey
        .unwrap_or_default();
    assert_eq!(renamed.display_name, "Renamed");
    assert_eq!(renamed.questions.len(), 5);

    // A stale etag is ABORTED.
    let stale = app
        .client
        .close_survey(pb::CloseSurveyRequest {
            survey_id: created.survey_id.clone(),
            etag: active.etag,
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(stale, Some(Code::Aborted));

    let closed = app
        .client
        .close_survey(pb::CloseSurveyRequest {
            survey_id: created.survey_id.clone(),
            etag: String::new(),
        })
        .await?
        .into_inner()
        .survey
        .unwrap_or_default();
    assert_eq!(closed.status(), pb::SurveyStatus::Closed);
    let reactivate = app
        .client
        .activate_survey(pb::ActivateSurveyRequest {
            survey_id: created.survey_id,
            etag: String::new(),
        })
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(reactivate.code(), Code::FailedPrecondition);
    assert_eq!(reason(&reactivate), "SURVEY_CLOSED");
    Ok(())
}

#[tokio::test]
async fn bad_surveys_are_refused_naming_every_field() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let mut survey = full_survey();
    survey.display_name = String::new();
    survey.questions[3].options.truncate(1);
    survey
        .questions
        .push(question("nps", pb::QuestionKind::FreeText, false));
    survey.target = Some(pb::SurveyTarget {
        touchpoint_kind: 0,
        segment_id: String::new(),
    });
    survey.reward = Some(pb::SurveyReward {
        points: 0,
        program_id: "not-a-uuid".to_owned(),
    });
    let status = app
        .client
        .create_survey(pb::CreateSurveyRequest {
            survey: Some(survey),
            request_id: String::new(),
        })
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    let mut got = fields(&status);
    got.sort();
    assert_eq!(
        got,
        [
            "request_id",
            "survey.display_name",
            "survey.questions[3].options",
            "survey.questions[5].question_id",
            "survey.reward.points",
            "survey.reward.program_id",
            "survey.target.touchpoint_kind",
        ]
    );
    Ok(())
}

#[tokio::test]
async fn create_is_idempotent_on_the_request_id() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let request = pb::CreateSurveyRequest {
        survey: Some(full_survey()),
        request_id: rid(),
    };
    let first = app
        .client
        .create_survey(request.clone())
        .await?
        .into_inner()
        .survey;
    let replay = app
        .client
        .create_survey(request.clone())
        .await?
        .into_inner()
        .survey;
    assert_eq!(first, replay);

    let mut other = request;
    if let Some(s) = other.survey.as_mut() {
        s.display_name = "Another".to_owned();
    }
    let reused = app
        .client
        .create_survey(other)
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(reused.code(), Code::AlreadyExists);
    assert_eq!(reason(&reused), "REQUEST_ID_REUSED");
    let listed = app
        .client
        .list_surveys(pb::ListSurveysRequest::default())
        .await?
        .into_inner();
    assert_eq!(listed.surveys.len(), 1);
    Ok(())
}

#[tokio::test]
async fn surveys_list_newest_first_page_by_page() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let mut ids = Vec::new();
    for _ in 0..5 {
        app.clock.advance(chrono::Duration::seconds(1));
        let s = app
            .client
            .create_survey(pb::CreateSurveyRequest {
                survey: Some(full_survey()),
                request_id: rid(),
            })
            .await?
            .into_inner()
            .survey
            .unwrap_or_default();
        ids.push(s.survey_id);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .client
            .list_surveys(pb::ListSurveysRequest {
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        seen.extend(page.surveys.into_iter().map(|s| s.survey_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids);

    // A token used with other filters is refused on page_token.
    let first = app
        .client
        .list_surveys(pb::ListSurveysRequest {
            page_size: 2,
            ..Default::default()
        })
        .await?
        .into_inner();
    let status = app
        .client
        .list_surveys(pb::ListSurveysRequest {
            page_size: 2,
            page_token: first.next_page_token,
            statuses: vec![pb::SurveyStatus::Active.into()],
            ..Default::default()
        })
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(fields(&status), ["page_token"]);
    Ok(())
}

#[tokio::test]
async fn only_drafts_can_be_deleted() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let draft = app
        .client
        .create_survey(pb::CreateSurveyRequest {
            survey: Some(full_survey()),
            request_id: rid(),
        })
        .await?
        .into_inner()
        .survey
        .unwrap_or_default();
    let active_id = crate::helpers::active_survey(&mut app.client, full_survey()).await?;
    let refused = app
        .client
        .delete_survey(pb::DeleteSurveyRequest {
            survey_id: active_id,
            etag: String::new(),
        })
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(reason(&refused), "SURVEY_NOT_DRAFT");
    app.client
        .delete_survey(pb::DeleteSurveyRequest {
            survey_id: draft.survey_id.clone(),
            etag: draft.etag,
        })
        .await?;
    let gone = app
        .client
        .get_survey(pb::GetSurveyRequest {
            survey_id: draft.survey_id.clone(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(gone, Some(Code::NotFound));
    let again = app
        .client
        .delete_survey(pb::DeleteSurveyRequest {
            survey_id: draft.survey_id,
            etag: String::new(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(again, Some(Code::NotFound));
    let malformed = app
        .client
        .get_survey(pb::GetSurveyRequest {
            survey_id: "nope".to_owned(),
        })
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(fields(&malformed), ["survey_id"]);
    Ok(())
}
