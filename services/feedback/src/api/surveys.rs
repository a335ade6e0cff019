//! Survey design and lifecycle: CreateSurvey, GetSurvey, ListSurveys, UpdateSurvey,
//! DeleteSurvey, ActivateSurvey, CloseSurvey. Each handler parses (below the handlers),
//! calls one use case in `workflow::surveys` and converts the survey.

use custops_common::auth::Caller;
use custops_common::error::Violations;
use custops_common::idempotency::RequestKey;
use custops_contracts::custops::feedback::v1 as pb;
use tonic::Request;
use uuid::Uuid;

use super::{FeedbackApi, Keyset, Rpc, next_page_token, ok, parse};
use crate::domain::survey::{SurveyContent, SurveyMask, SurveyStatus};
use crate::error::Error;
use crate::store::surveys::SurveyFilter;
use crate::workflow;

#[tracing::instrument(skip_all)]
pub(super) async fn create_survey(
    api: &FeedbackApi,
    request: Request<pb::CreateSurveyRequest>,
) -> Rpc<pb::CreateSurveyResponse> {
    let caller = Caller::service_of(&request);
    let (key, content) = create_request(&caller, &request.into_inner())?;
    let reply = workflow::surveys::create(&api.ctx, key, content, |s| pb::CreateSurveyResponse {
        survey: Some(s.into()),
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_survey(
    api: &FeedbackApi,
    request: Request<pb::GetSurveyRequest>,
) -> Rpc<pb::GetSurveyResponse> {
    let id = parse::required_id("survey_id", &request.get_ref().survey_id)?;
    let s = workflow::surveys::get(&api.ctx, id).await?;
    ok(pb::GetSurveyResponse {
        survey: Some((&s).into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn list_surveys(
    api: &FeedbackApi,
    request: Request<pb::ListSurveysRequest>,
) -> Rpc<pb::ListSurveysResponse> {
    let req = request.into_inner();
    let filter = list_filter(&req)?;
    let page = api.page::<_, Keyset>(&req)?;
    let mut surveys = workflow::surveys::list(&api.ctx, &filter, page.after, page.fetch()).await?;
    let next_page_token = next_page_token(&page, &mut surveys, |s| (s.create_time, s.id))?;
    ok(pb::ListSurveysResponse {
        surveys: surveys.iter().map(Into::into).collect(),
        next_page_token,
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn update_survey(
    api: &FeedbackApi,
    request: Request<pb::UpdateSurveyRequest>,
) -> Rpc<pb::UpdateSurveyResponse> {
    let u = update_request(request.into_inner())?;
    let s = workflow::surveys::update(&api.ctx, u.id, &u.etag, u.mask, u.content).await?;
    ok(pb::UpdateSurveyResponse {
        survey: Some((&s).into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn delete_survey(
    api: &FeedbackApi,
    request: Request<pb::DeleteSurveyRequest>,
) -> Rpc<pb::DeleteSurveyResponse> {
    let req = request.into_inner();
    let id = parse::required_id("survey_id", &req.survey_id)?;
    workflow::surveys::delete(&api.ctx, id, &req.etag).await?;
    ok(pb::DeleteSurveyResponse {})
}

#[tracing::instrument(skip_all)]
pub(super) async fn activate_survey(
    api: &FeedbackApi,
    request: Request<pb::ActivateSurveyRequest>,
) -> Rpc<pb::ActivateSurveyResponse> {
    let req = request.into_inner();
    let id = parse::required_id("survey_id", &req.survey_id)?;
    let s = workflow::surveys::activate(&api.ctx, id, &req.etag).await?;
    ok(pb::ActivateSurveyResponse {
        survey: Some((&s).into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn close_survey(
    api: &FeedbackApi,
    request: Request<pb::CloseSurveyRequest>,
) -> Rpc<pb::CloseSurveyResponse> {
    let req = request.into_inner();
    let id = parse::required_id("survey_id", &req.survey_id)?;
    let s = workflow::surveys::close(&api.ctx, id, &req.etag).await?;
    ok(pb::CloseSurveyResponse {
        survey: Some((&s).into()),
    })
}

// Parsing: each request into the values its use case takes, every bad field a violation.

fn create_request(
    caller: &str,
    req: &pb::CreateSurveyRequest,
) -> Result<(RequestKey, SurveyContent), Error> {
    let mut v = Violations::new();
    let key = parse::key(&mut v, &req.request_id, caller, "CreateSurvey", req);
    let content = match &req.survey {
        Some(s) => Some(parse::survey_content(&mut v, "survey", s, None)),
        None => {
            v.add("survey", "required");
            None
        }
    };
    parse::finish(v, || Some((key?, content?)))
}

fn list_filter(req: &pb::ListSurveysRequest) -> Result<SurveyFilter, Error> {
    let mut v = Violations::new();
    let statuses = status_filter(&mut v, &req.statuses);
    let touchpoint_kinds = parse::touchpoint_kinds(&mut v, &req.touchpoint_kinds);
    parse::finish(v, || {
        Some(SurveyFilter {
            statuses,
            touchpoint_kinds,
            segment_id: req.segment_id.clone(),
        })
    })
}

fn status_filter(v: &mut Violations, values: &[i32]) -> Vec<SurveyStatus> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match pb::SurveyStatus::try_from(*s).ok() {
            Some(pb::SurveyStatus::Draft) => Some(SurveyStatus::Draft),
            Some(pb::SurveyStatus::Active) => Some(SurveyStatus::Active),
            Some(pb::SurveyStatus::Closed) => Some(SurveyStatus::Closed),
            _ => {
                v.add(format!("statuses[{i}]"), "not a survey status");
                None
            }
        })
        .collect()
}

/// An UpdateSurvey request, parsed.
struct Update {
    id: Uuid,
    etag: String,
    mask: SurveyMask,
    content: SurveyContent,
}

fn update_request(req: pb::UpdateSurveyRequest) -> Result<Update, Error> {
    let mut v = Violations::new();
    let mask = survey_mask(&mut v, req.update_mask.as_ref());
    let survey = req.survey.unwrap_or_default();
    let id = parse::id(&mut v, "survey.survey_id", &survey.survey_id);
    let content = parse::survey_content(&mut v, "survey", &survey, Some(&mask));
    parse::finish(v, || {
        Some(Update {
            id: id?,
            etag: survey.etag,
            mask,
            content,
        })
    })
}

fn survey_mask(v: &mut Violations, mask: Option<&prost_types::FieldMask>) -> SurveyMask {
    let mut m = SurveyMask::default();
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        v.add("update_mask", "required: name the fields to update");
    }
    for p in paths {
        match p.as_str() {
            "display_name" => m.display_name = true,
            "description" => m.description = true,
            "questions" => m.questions = true,
            "target" => m.target = true,
            "reward" => m.reward = true,
            other => v.add("update_mask", format!("`{other}` cannot be updated")),
        }
    }
    m
}
