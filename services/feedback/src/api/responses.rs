//! Invitations and responses: CreateInvitation, GetInvitation, ListInvitations,
//! SubmitResponse, GetResponse, RetryReward, ListResponses. Each handler parses (below the
//! handlers), calls one use case in `workflow::responses` and converts the result.

use custops_common::auth::Caller;
use custops_common::error::Violations;
use custops_common::idempotency::RequestKey;
use custops_contracts::custops::feedback::v1 as pb;
use tonic::Request;

use super::{FeedbackApi, Keyset, Rpc, next_page_token, ok, parse};
use crate::domain::response::{NewInvitation, Submission};
use crate::error::Error;
use crate::store::responses::{InvitationFilter, ResponseFilter};
use crate::workflow::{self, Actor};

#[tracing::instrument(skip_all)]
pub(super) async fn create_invitation(
    api: &FeedbackApi,
    request: Request<pb::CreateInvitationRequest>,
) -> Rpc<pb::CreateInvitationResponse> {
    let caller = Caller::service_of(&request);
    let (key, new) = invitation_request(&caller, request.into_inner())?;
    let reply = workflow::responses::invite(&api.ctx, key, new, |i| pb::CreateInvitationResponse {
        invitation: Some(i.into()),
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_invitation(
    api: &FeedbackApi,
    request: Request<pb::GetInvitationRequest>,
) -> Rpc<pb::GetInvitationResponse> {
    let id = parse::required_id("invitation_id", &request.get_ref().invitation_id)?;
    let i = workflow::responses::get_invitation(&api.ctx, id).await?;
    ok(pb::GetInvitationResponse {
        invitation: Some((&i).into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn list_invitations(
    api: &FeedbackApi,
    request: Request<pb::ListInvitationsRequest>,
) -> Rpc<pb::ListInvitationsResponse> {
    let req = request.into_inner();
    let filter = invitation_filter(&req)?;
    let page = api.page::<_, Keyset>(&req)?;
    let mut list =
        workflow::responses::list_invitations(&api.ctx, &filter, page.after, page.fetch()).await?;
    let next_page_token = next_page_token(&page, &mut list, |i| (i.create_time, i.id))?;
    ok(pb::ListInvitationsResponse {
        invitations: list.iter().map(Into::into).collect(),
        next_page_token,
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn submit_response(
    api: &FeedbackApi,
    request: Request<pb::SubmitResponseRequest>,
) -> Rpc<pb::SubmitResponseResponse> {
    let caller = Caller::service_of(&request);
    let (key, submission) = submit_request(&caller, request.into_inner())?;
    let actor = Actor {
        service: caller,
        actor_id: String::new(),
    };
    let reply = workflow::responses::submit(&api.ctx, key, &actor, submission, |r| {
        pb::SubmitResponseResponse {
            survey_response: Some(r.into()),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_response(
    api: &FeedbackApi,
    request: Request<pb::GetResponseRequest>,
) -> Rpc<pb::GetResponseResponse> {
    let id = parse::required_id("response_id", &request.get_ref().response_id)?;
    let r = workflow::responses::get_response(&api.ctx, id).await?;
    ok(pb::GetResponseResponse {
        survey_response: Some((&r).into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn retry_reward(
    api: &FeedbackApi,
    request: Request<pb::RetryRewardRequest>,
) -> Rpc<pb::RetryRewardResponse> {
    let id = parse::required_id("response_id", &request.get_ref().response_id)?;
    let r = workflow::responses::retry_reward(&api.ctx, id).await?;
    ok(pb::RetryRewardResponse {
        survey_response: Some((&r).into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn list_responses(
    api: &FeedbackApi,
    request: Request<pb::ListResponsesRequest>,
) -> Rpc<pb::ListResponsesResponse> {
    let req = request.into_inner();
    let filter = response_filter(&req)?;
    let page = api.page::<_, Keyset>(&req)?;
    let mut list =
        workflow::responses::list_responses(&api.ctx, &filter, page.after, page.fetch()).await?;
    let next_page_token = next_page_token(&page, &mut list, |r| (r.submit_time, r.id))?;
    ok(pb::ListResponsesResponse {
        survey_responses: list.iter().map(Into::into).collect(),
        next_page_token,
    })
}

// Parsing: each request into the values its use case takes, every bad field a violation.

fn invitation_request(
    caller: &str,
    req: pb::CreateInvitationRequest,
) -> Result<(RequestKey, NewInvitation), Error> {
    let mut v = Violations::new();
    let key = parse::key(&mut v, &req.request_id, caller, "CreateInvitation", &req);
    let inv = req.invitation.unwrap_or_default();
    let survey_id = parse::id(&mut v, "invitation.survey_id", &inv.survey_id);
    let customer_id = parse::customer_id(&mut v, "invitation.customer_id", &inv.customer_id);
    let touchpoint = parse::touchpoint(&mut v, "invitation.touchpoint", inv.touchpoint.as_ref());
    parse::optional_slug(&mut v, "invitation.channel", &inv.channel);
    let expire_time = inv.expire_time.as_ref().and_then(|t| {
        let parsed = crate::wire::from_ts(t);
        if parsed.is_none() {
            v.add("invitation.expire_time", "not a valid timestamp");
        }
        parsed
    });
    parse::finish(v, || {
        Some((
            key?,
            NewInvitation {
                survey_id: survey_id?,
                customer_id: customer_id?,
                touchpoint: touchpoint?,
                channel: inv.channel,
                expire_time,
            },
        ))
    })
}

fn invitation_filter(req: &pb::ListInvitationsRequest) -> Result<InvitationFilter, Error> {
    let mut v = Violations::new();
    let survey_id = (!req.survey_id.is_empty())
        .then(|| parse::id(&mut v, "survey_id", &req.survey_id))
        .flatten();
    let customer_id = parse::customer_filter(&mut v, "customer_id", &req.customer_id);
    let touchpoint = req
        .touchpoint
        .as_ref()
        .and_then(|t| parse::touchpoint(&mut v, "touchpoint", Some(t)));
    let statuses = req
        .statuses
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match pb::InvitationStatus::try_from(*s).ok() {
            Some(pb::InvitationStatus::Pending) => Some("pending"),
            Some(pb::InvitationStatus::Responded) => Some("responded"),
            Some(pb::InvitationStatus::Expired) => Some("expired"),
            _ => {
                v.add(format!("statuses[{i}]"), "not an invitation status");
                None
            }
        })
        .collect();
    parse::finish(v, || {
        Some(InvitationFilter {
            survey_id,
            customer_id,
            statuses,
            touchpoint,
        })
    })
}

fn submit_request(
    caller: &str,
    req: pb::SubmitResponseRequest,
) -> Result<(RequestKey, Submission), Error> {
    let mut v = Violations::new();
    let key = parse::key(&mut v, &req.request_id, caller, "SubmitResponse", &req);
    let invitation_id = parse::id(&mut v, "invitation_id", &req.invitation_id);
    parse::optional_slug(&mut v, "channel", &req.channel);
    let answers = parse::answers(&mut v, &req.answers);
    parse::finish(v, || {
        Some((
            key?,
            Submission {
                invitation_id: invitation_id?,
                answers,
                channel: req.channel,
            },
        ))
    })
}

fn response_filter(req: &pb::ListResponsesRequest) -> Result<ResponseFilter, Error> {
    let mut v = Violations::new();
    let survey_ids = parse::survey_ids(&mut v, &req.survey_ids);
    let customer_id = parse::customer_filter(&mut v, "customer_id", &req.customer_id);
    parse::channels(&mut v, &req.channels);
    let (from, to) = parse::time_range(&mut v, "submit_time_range", req.submit_time_range.as_ref());
    let touchpoint = req
        .touchpoint
        .as_ref()
        .and_then(|t| parse::touchpoint(&mut v, "touchpoint", Some(t)));
    let nps_categories = req
        .nps_categories
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match pb::NpsCategory::try_from(*c).ok() {
            Some(pb::NpsCategory::Promoter) => Some("promoter"),
            Some(pb::NpsCategory::Passive) => Some("passive"),
            Some(pb::NpsCategory::Detractor) => Some("detractor"),
            _ => {
                v.add(
                    format!("nps_categories[{i}]"),
                    "PROMOTER, PASSIVE or DETRACTOR",
                );
                None
            }
        })
        .collect();
    let reward_statuses = req
        .reward_statuses
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match pb::RewardStatus::try_from(*r).ok() {
            Some(pb::RewardStatus::Pending) => Some("pending"),
            Some(pb::RewardStatus::Retrying) => Some("retrying"),
            Some(pb::RewardStatus::Delivered) => Some("delivered"),
            Some(pb::RewardStatus::Rejected) => Some("rejected"),
            _ => {
                v.add(format!("reward_statuses[{i}]"), "not a reward status");
                None
            }
        })
        .collect();
    parse::finish(v, || {
        Some(ResponseFilter {
            survey_ids,
            customer_id,
            channels: req.channels.clone(),
            from,
            to,
            touchpoint,
            nps_categories,
            reward_statuses,
        })
    })
}
