//! The `custops.feedback.v1.FeedbackService` API: transport only. Each handler parses its
//! request (`parse`), calls one use case in `workflow`, and converts the result (`convert`).
//! RPCs not listed here still answer UNIMPLEMENTED through the generated default stubs.

pub mod convert;
mod error;
pub mod parse;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use custops_common::auth::Caller;
use custops_common::error::{ServiceError, Violations};
use custops_common::paging::{self, PageTokens};
use custops_common::server::MAX_MESSAGE_BYTES;
use custops_contracts::custops::feedback::v1 as pb;
use custops_contracts::custops::feedback::v1::feedback_service_server::{
    FeedbackService, FeedbackServiceServer,
};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::clock::Clock;
use crate::domain::metrics::{self, GroupKey, Grouping, MetricsQuery, ScoreCounts};
use crate::domain::response::{NewInvitation, Submission};
use crate::domain::review::NewReview;
use crate::domain::survey::{SurveyMask, SurveyStatus};
use crate::domain::text;
use crate::domain::ticket::{
    FollowUpOutcome, Kind, NewTicket, Severity, Status as TicketStatus, Transition,
};
use crate::error::Error;
use crate::segments::SegmentDirectory;
use crate::store::{
    PgStore,
    responses::{InvitationFilter, ResponseFilter},
    reviews::ReviewFilter,
    surveys::SurveyFilter,
    tickets::{FollowUpFilter, TicketFilter},
};
use crate::workflow::{self, Actor, Context};

type Rpc<T> = Result<Response<T>, Status>;

/// The gRPC handlers of the feedback service.
#[derive(Debug, Clone)]
pub struct FeedbackApi {
    ctx: Context,
    pages: PageTokens,
}

impl FeedbackApi {
    /// Handlers over `store`, reading time from `clock`, signing page tokens with `pages`,
    /// asking `segments` about segment membership.
    pub fn new(
        store: PgStore,
        clock: Arc<dyn Clock>,
        pages: PageTokens,
        segments: Option<Arc<dyn SegmentDirectory>>,
    ) -> Self {
        Self {
            ctx: Context {
                store,
                clock,
                segments,
            },
            pages,
        }
    }
}

/// The API wrapped for serving, with explicit message size limits.
pub fn server(api: FeedbackApi) -> FeedbackServiceServer<FeedbackApi> {
    FeedbackServiceServer::new(api)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

fn actor(service: &str, actor_id: &str, v: &mut Violations) -> Actor {
    if !actor_id.is_empty() {
        parse::check(v, "actor_id", text::printable_id(actor_id));
    }
    Actor {
        service: service.to_owned(),
        actor_id: actor_id.to_owned(),
    }
}

fn done(v: Violations) -> Result<(), Error> {
    crate::error::invalid_fields(v)
}

fn ok<T>(value: T) -> Rpc<T> {
    Ok(Response::new(value))
}

/// A position in a list: the sort time and the id of the last item returned.
type Keyset = (DateTime<Utc>, Uuid);

/// A keyset position on the wire (inside a signed page token): time in microseconds and id.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    t: i64,
    id: String,
}

impl FeedbackApi {
    fn page_in(
        &self,
        fingerprint: &str,
        token: &str,
        size: i32,
    ) -> Result<(Option<Keyset>, usize), Status> {
        let size = paging::page_size(size)?;
        if token.is_empty() {
            return Ok((None, size));
        }
        let c: Cursor = self.pages.decode(fingerprint, token)?;
        let t = DateTime::from_timestamp_micros(c.t);
        let id = Uuid::parse_str(&c.id).ok();
        match t.zip(id) {
            Some(after) => Ok((Some(after), size)),
            None => Err(ServiceError::from(paging::PageTokenError::Malformed).into()),
        }
    }

    fn page_out(
        &self,
        fingerprint: &str,
        last: Option<Keyset>,
        full: bool,
    ) -> Result<String, Status> {
        match last {
            Some((t, id)) if full => self
                .pages
                .encode(
                    fingerprint,
                    &Cursor {
                        t: t.timestamp_micros(),
                        id: id.to_string(),
                    },
                )
                .map_err(|e| Status::from(Error::internal(e))),
            _ => Ok(String::new()),
        }
    }
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

fn score_counts_pb(c: &ScoreCounts, min: usize) -> Vec<pb::ScoreCount> {
    c.distribution
        .iter()
        .enumerate()
        .skip(min)
        .map(|(score, count)| pb::ScoreCount {
            score: i32::try_from(score).unwrap_or(0),
            count: *count,
        })
        .collect()
}

fn metrics_group(g: &metrics::GroupCounts) -> pb::MetricsGroup {
    use pb::metrics_group::Key;
    let key = g.key.as_ref().map(|k| match k {
        GroupKey::Period {
            start_date,
            start,
            end,
            label,
        } => {
            use chrono::Datelike;
            Key::Period(pb::MetricsPeriod {
                start_date: Some(custops_contracts::custops::common::v1::Date {
                    year: start_date.year(),
                    month: i32::try_from(start_date.month()).unwrap_or(0),
                    day: i32::try_from(start_date.day()).unwrap_or(0),
                }),
                time_range: Some(custops_contracts::custops::common::v1::TimeRange {
                    start_time: Some(convert::ts(*start)),
                    end_time: Some(convert::ts(*end)),
                }),
                label: label.clone(),
            })
        }
        GroupKey::Channel(c) => Key::Channel(c.clone()),
        GroupKey::Survey(id) => Key::SurveyId(id.to_string()),
    });
    pb::MetricsGroup {
        key,
        response_count: g.responses,
        nps: Some(pb::NpsMetrics {
            score: metrics::nps(&g.nps),
            promoter_count: g.nps.count_in(9..=10),
            passive_count: g.nps.count_in(7..=8),
            detractor_count: g.nps.count_in(0..=6),
            answered_count: g.nps.answered,
            omitted_count: g.nps.omitted,
            distribution: score_counts_pb(&g.nps, 0),
        }),
        csat: Some(pb::CsatMetrics {
            percent_satisfied: metrics::csat_percent(&g.csat),
            satisfied_count: g.csat.count_in(4..=5),
            answered_count: g.csat.answered,
            mean_score: g.csat.mean(),
            omitted_count: g.csat.omitted,
            distribution: score_counts_pb(&g.csat, 1),
        }),
        ces: Some(pb::CesMetrics {
            mean_score: g.ces.mean(),
            answered_count: g.ces.answered,
            omitted_count: g.ces.omitted,
            distribution: score_counts_pb(&g.ces, 1),
        }),
    }
}

#[tonic::async_trait]
impl FeedbackService for FeedbackApi {
    #[tracing::instrument(skip_all)]
    async fn create_survey(
        &self,
        request: Request<pb::CreateSurveyRequest>,
    ) -> Rpc<pb::CreateSurveyResponse> {
        let caller = Caller::service_of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = parse::key(&mut v, &req.request_id, &caller, "CreateSurvey", &req);
        let content = match &req.survey {
            Some(s) => Some(parse::survey_content(&mut v, "survey", s, None)),
            None => {
                v.add("survey", "required");
                None
            }
        };
        let (key, content) = parse::finish(v, || Some((key?, content?)))?;
        let s = workflow::surveys::create(&self.ctx, key, content).await?;
        ok(pb::CreateSurveyResponse {
            survey: Some((&s).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn get_survey(
        &self,
        request: Request<pb::GetSurveyRequest>,
    ) -> Rpc<pb::GetSurveyResponse> {
        let mut v = Violations::new();
        let id = parse::id(&mut v, "survey_id", &request.get_ref().survey_id);
        done(v)?;
        let s = workflow::surveys::get(&self.ctx, id.unwrap_or_default()).await?;
        ok(pb::GetSurveyResponse {
            survey: Some((&s).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn list_surveys(
        &self,
        request: Request<pb::ListSurveysRequest>,
    ) -> Rpc<pb::ListSurveysResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let statuses = status_filter(&mut v, &req.statuses);
        let kinds: Vec<_> = req
            .touchpoint_kinds
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let kind = convert::touchpoint_kind_from(*k);
                if kind.is_none() {
                    v.add(format!("touchpoint_kinds[{i}]"), "not a touchpoint kind");
                }
                kind
            })
            .collect();
        done(v)?;
        let fp = parse::fingerprint(&pb::ListSurveysRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        });
        let (after, size) = self.page_in(&fp, &req.page_token, req.page_size)?;
        let filter = SurveyFilter {
            statuses,
            touchpoint_kinds: kinds,
            segment_id: req.segment_id.clone(),
        };
        let surveys = workflow::surveys::list(&self.ctx, &filter, after, size).await?;
        let last = surveys.last().map(|s| (s.create_time, s.id));
        let next_page_token = self.page_out(&fp, last, surveys.len() == size)?;
        ok(pb::ListSurveysResponse {
            surveys: surveys.iter().map(Into::into).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn update_survey(
        &self,
        request: Request<pb::UpdateSurveyRequest>,
    ) -> Rpc<pb::UpdateSurveyResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let mask = survey_mask(&mut v, req.update_mask.as_ref());
        let survey = req.survey.unwrap_or_default();
        let id = parse::id(&mut v, "survey.survey_id", &survey.survey_id);
        let content = parse::survey_content(&mut v, "survey", &survey, Some(&mask));
        done(v)?;
        let s = workflow::surveys::update(
            &self.ctx,
            id.unwrap_or_default(),
            &survey.etag,
            mask,
            content,
        )
        .await?;
        ok(pb::UpdateSurveyResponse {
            survey: Some((&s).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn delete_survey(
        &self,
        request: Request<pb::DeleteSurveyRequest>,
    ) -> Rpc<pb::DeleteSurveyResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse::id(&mut v, "survey_id", &req.survey_id);
        done(v)?;
        workflow::surveys::delete(&self.ctx, id.unwrap_or_default(), &req.etag).await?;
        ok(pb::DeleteSurveyResponse {})
    }

    #[tracing::instrument(skip_all)]
    async fn activate_survey(
        &self,
        request: Request<pb::ActivateSurveyRequest>,
    ) -> Rpc<pb::ActivateSurveyResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse::id(&mut v, "survey_id", &req.survey_id);
        done(v)?;
        let s = workflow::surveys::activate(&self.ctx, id.unwrap_or_default(), &req.etag).await?;
        ok(pb::ActivateSurveyResponse {
            survey: Some((&s).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn close_survey(
        &self,
        request: Request<pb::CloseSurveyRequest>,
    ) -> Rpc<pb::CloseSurveyResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse::id(&mut v, "survey_id", &req.survey_id);
        done(v)?;
        let s = workflow::surveys::close(&self.ctx, id.unwrap_or_default(), &req.etag).await?;
        ok(pb::CloseSurveyResponse {
            survey: Some((&s).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Rpc<pb::CreateInvitationResponse> {
        let caller = Caller::service_of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = parse::key(&mut v, &req.request_id, &caller, "CreateInvitation", &req);
        let inv = req.invitation.clone().unwrap_or_default();
        let survey_id = parse::id(&mut v, "invitation.survey_id", &inv.survey_id);
        let customer_id = parse::customer_id(&mut v, "invitation.customer_id", &inv.customer_id);
        let touchpoint =
            parse::touchpoint(&mut v, "invitation.touchpoint", inv.touchpoint.as_ref());
        parse::optional_slug(&mut v, "invitation.channel", &inv.channel);
        let expire_time = inv.expire_time.as_ref().and_then(|t| {
            let parsed = convert::from_ts(t);
            if parsed.is_none() {
                v.add("invitation.expire_time", "not a valid timestamp");
            }
            parsed
        });
        let (key, survey_id, customer_id, touchpoint) =
            parse::finish(v, || Some((key?, survey_id?, customer_id?, touchpoint?)))?;
        let new = NewInvitation {
            survey_id,
            customer_id,
            touchpoint,
            channel: inv.channel,
            expire_time,
        };
        let i = workflow::responses::invite(&self.ctx, key, new).await?;
        ok(pb::CreateInvitationResponse {
            invitation: Some((&i).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn get_invitation(
        &self,
        request: Request<pb::GetInvitationRequest>,
    ) -> Rpc<pb::GetInvitationResponse> {
        let mut v = Violations::new();
        let id = parse::id(&mut v, "invitation_id", &request.get_ref().invitation_id);
        done(v)?;
        let i = workflow::responses::get_invitation(&self.ctx, id.unwrap_or_default()).await?;
        ok(pb::GetInvitationResponse {
            invitation: Some((&i).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Rpc<pb::ListInvitationsResponse> {
        let req = request.into_inner();
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
        done(v)?;
        let fp = parse::fingerprint(&pb::ListInvitationsRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        });
        let (after, size) = self.page_in(&fp, &req.page_token, req.page_size)?;
        let filter = InvitationFilter {
            survey_id,
            customer_id,
            statuses,
            touchpoint,
        };
        let list = workflow::responses::list_invitations(&self.ctx, &filter, after, size).await?;
        let last = list.last().map(|i| (i.create_time, i.id));
        let next_page_token = self.page_out(&fp, last, list.len() == size)?;
        ok(pb::ListInvitationsResponse {
            invitations: list.iter().map(Into::into).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn get_customer_feedback_summary(
        &self,
        request: Request<pb::GetCustomerFeedbackSummaryRequest>,
    ) -> Rpc<pb::GetCustomerFeedbackSummaryResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let customer_id = parse::customer_id(&mut v, "customer_id", &req.customer_id);
        done(v)?;
        let customer_id = customer_id.unwrap_or_default();
        let s = workflow::responses::customer_summary(&self.ctx, &customer_id).await?;
        let latest = |l: Option<crate::store::responses::LatestScore>| {
            l.map(|(score, response_id, survey_id, at)| pb::LatestScore {
                score,
                response_id: response_id.to_string(),
                survey_id: survey_id.to_string(),
                submit_time: Some(convert::ts(at)),
            })
        };
        let category = match s
            .last_nps
            .map(|l| crate::domain::response::NpsCategory::of(l.0))
        {
            None => pb::NpsCategory::Unspecified,
            Some(crate::domain::response::NpsCategory::Promoter) => pb::NpsCategory::Promoter,
            Some(crate::domain::response::NpsCategory::Passive) => pb::NpsCategory::Passive,
            Some(crate::domain::response::NpsCategory::Detractor) => pb::NpsCategory::Detractor,
        };
        ok(pb::GetCustomerFeedbackSummaryResponse {
            summary: Some(pb::CustomerFeedbackSummary {
                customer_id,
                response_count: s.response_count,
                last_response_time: s.last_response_time.map(convert::ts),
                last_nps: latest(s.last_nps),
                last_nps_category: category.into(),
                last_csat: latest(s.last_csat),
                last_ces: latest(s.last_ces),
                open_ticket_count: s.open_tickets,
                breached_open_ticket_count: s.breached_open_tickets,
                ticket_count: s.tickets,
                review_count: s.reviews,
                average_review_rating: s.average_rating,
                open_follow_up_count: s.open_follow_ups,
            }),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn submit_response(
        &self,
        request: Request<pb::SubmitResponseRequest>,
    ) -> Rpc<pb::SubmitResponseResponse> {
        let caller = Caller::service_of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = parse::key(&mut v, &req.request_id, &caller, "SubmitResponse", &req);
        let invitation_id = parse::id(&mut v, "invitation_id", &req.invitation_id);
        parse::optional_slug(&mut v, "channel", &req.channel);
        let answers = parse::answers(&mut v, &req.answers);
        let (key, invitation_id) = parse::finish(v, || Some((key?, invitation_id?)))?;
        let actor = Actor {
            service: caller,
            actor_id: String::new(),
        };
        let submission = Submission {
            invitation_id,
            answers,
            channel: req.channel,
        };
        let r = workflow::responses::submit(&self.ctx, key, &actor, submission).await?;
        ok(pb::SubmitResponseResponse {
            survey_response: Some((&r).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn get_response(
        &self,
        request: Request<pb::GetResponseRequest>,
    ) -> Rpc<pb::GetResponseResponse> {
        let mut v = Violations::new();
        let id = parse::id(&mut v, "response_id", &request.get_ref().response_id);
        done(v)?;
        let r = workflow::responses::get_response(&self.ctx, id.unwrap_or_default()).await?;
        ok(pb::GetResponseResponse {
            survey_response: Some((&r).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn retry_reward(
        &self,
        request: Request<pb::RetryRewardRequest>,
    ) -> Rpc<pb::RetryRewardResponse> {
        let mut v = Violations::new();
        let id = parse::id(&mut v, "response_id", &request.get_ref().response_id);
        done(v)?;
        let r = workflow::responses::retry_reward(&self.ctx, id.unwrap_or_default()).await?;
        ok(pb::RetryRewardResponse {
            survey_response: Some((&r).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn list_responses(
        &self,
        request: Request<pb::ListResponsesRequest>,
    ) -> Rpc<pb::ListResponsesResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.survey_ids.len() > 100 {
            v.add("survey_ids", "at most 100");
        }
        let survey_ids: Vec<Uuid> = req
            .survey_ids
            .iter()
            .enumerate()
            .filter_map(|(i, s)| parse::id(&mut v, &format!("survey_ids[{i}]"), s))
            .collect();
        let customer_id = parse::customer_filter(&mut v, "customer_id", &req.customer_id);
        for (i, c) in req.channels.iter().enumerate() {
            parse::check(&mut v, &format!("channels[{i}]"), text::slug(c));
        }
        let (from, to) =
            parse::time_range(&mut v, "submit_time_range", req.submit_time_range.as_ref());
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
        done(v)?;
        let fp = parse::fingerprint(&pb::ListResponsesRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        });
        let (after, size) = self.page_in(&fp, &req.page_token, req.page_size)?;
        let filter = ResponseFilter {
            survey_ids,
            customer_id,
            channels: req.channels.clone(),
            from,
            to,
            touchpoint,
            nps_categories,
            reward_statuses,
        };
        let list = workflow::responses::list_responses(&self.ctx, &filter, after, size).await?;
        let last = list.last().map(|r| (r.submit_time, r.id));
        let next_page_token = self.page_out(&fp, last, list.len() == size)?;
        ok(pb::ListResponsesResponse {
            survey_responses: list.iter().map(Into::into).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn get_survey_metrics(
        &self,
        request: Request<pb::GetSurveyMetricsRequest>,
    ) -> Rpc<pb::GetSurveyMetricsResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.survey_ids.len() > 100 {
            v.add("survey_ids", "at most 100");
        }
        let survey_ids: Vec<Uuid> = req
            .survey_ids
            .iter()
            .enumerate()
            .filter_map(|(i, s)| parse::id(&mut v, &format!("survey_ids[{i}]"), s))
            .collect();
        let (start, end) =
            parse::time_range(&mut v, "submit_time_range", req.submit_time_range.as_ref());
        for (i, c) in req.channels.iter().enumerate() {
            parse::check(&mut v, &format!("channels[{i}]"), text::slug(c));
        }
        if !req.segment_id.is_empty() && Uuid::parse_str(&req.segment_id).is_err() {
            v.add("segment_id", "must be a UUID");
        }
        let touchpoint_kinds: Vec<_> = req
            .touchpoint_kinds
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let kind = convert::touchpoint_kind_from(*k);
                if kind.is_none() {
                    v.add(format!("touchpoint_kinds[{i}]"), "not a touchpoint kind");
                }
                kind
            })
            .collect();
        let grouping = match pb::MetricsGrouping::try_from(req.group_by).ok() {
            Some(pb::MetricsGrouping::Unspecified) => Grouping::None,
            Some(pb::MetricsGrouping::Day) => Grouping::Day,
            Some(pb::MetricsGrouping::Week) => Grouping::Week,
            Some(pb::MetricsGrouping::Month) => Grouping::Month,
            Some(pb::MetricsGrouping::Channel) => Grouping::Channel,
            Some(pb::MetricsGrouping::Survey) => Grouping::Survey,
            None => {
                v.add("group_by", "not a grouping");
                Grouping::None
            }
        };
        let time_zone = if req.time_zone.is_empty() {
            "UTC".to_owned()
        } else {
            req.time_zone.clone()
        };
        if time_zone.len() > 64 {
            v.add("time_zone", "not an IANA time zone name");
        }
        done(v)?;
        let q = MetricsQuery {
            survey_ids,
            start,
            end,
            channels: req.channels,
            touchpoint_kinds,
            grouping,
            time_zone: time_zone.clone(),
            segment_id: req.segment_id,
        };
        let groups = workflow::metrics::compute(&self.ctx, &q).await?;
        let mut iter = groups.iter();
        let total = iter.next().map(metrics_group);
        ok(pb::GetSurveyMetricsResponse {
            total,
            groups: iter.map(metrics_group).collect(),
            time_zone,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn open_ticket(
        &self,
        request: Request<pb::OpenTicketRequest>,
    ) -> Rpc<pb::OpenTicketResponse> {
        let caller = Caller::service_of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = parse::key(&mut v, &req.request_id, &caller, "OpenTicket", &req);
        let customer_id = parse::customer_id(&mut v, "customer_id", &req.customer_id);
        parse::check(&mut v, "category", text::slug(&req.category));
        let severity = parse::severity(&mut v, "severity", req.severity);
        parse::check(&mut v, "channel", text::slug(&req.channel));
        parse::check(&mut v, "subject", text::length(&req.subject, 1, 200));
        parse::check(
            &mut v,
            "description",
            text::length(&req.description, 0, 10_000),
        );
        let touchpoint = req
            .touchpoint
            .as_ref()
            .and_then(|t| parse::touchpoint(&mut v, "touchpoint", Some(t)));
        let source_response_id = (!req.source_response_id.is_empty())
            .then(|| parse::id(&mut v, "source_response_id", &req.source_response_id))
            .flatten();
        if !req.assignee_id.is_empty() {
            parse::check(&mut v, "assignee_id", text::printable_id(&req.assignee_id));
        }
        let actor = actor(&caller, &req.actor_id, &mut v);
        let (key, customer_id) = parse::finish(v, || Some((key?, customer_id?)))?;
        let n = NewTicket {
            customer_id,
            category: req.category,
            severity,
            channel: req.channel,
            subject: req.subject,
            description: req.description,
            touchpoint,
            source_response_id,
            assignee_id: req.assignee_id,
            actor_id: req.actor_id,
        };
        let t = workflow::tickets::open(&self.ctx, key, &actor, n).await?;
        ok(pb::OpenTicketResponse {
            ticket: Some(convert::ticket(&t, self.ctx.now(), &[])),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn get_ticket(
        &self,
        request: Request<pb::GetTicketRequest>,
    ) -> Rpc<pb::GetTicketResponse> {
        let mut v = Violations::new();
        let id = parse::id(&mut v, "ticket_id", &request.get_ref().ticket_id);
        done(v)?;
        let (t, history) = workflow::tickets::get(&self.ctx, id.unwrap_or_default()).await?;
        ok(pb::GetTicketResponse {
            ticket: Some(convert::ticket(&t, self.ctx.now(), &history)),
            history: history.iter().map(Into::into).collect(),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn list_tickets(
        &self,
        request: Request<pb::ListTicketsRequest>,
    ) -> Rpc<pb::ListTicketsResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let statuses = req
            .statuses
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let status = match pb::TicketStatus::try_from(*s).ok() {
                    Some(pb::TicketStatus::Open) => Some(TicketStatus::Open),
                    Some(pb::TicketStatus::InProgress) => Some(TicketStatus::InProgress),
                    Some(pb::TicketStatus::Resolved) => Some(TicketStatus::Resolved),
                    Some(pb::TicketStatus::Closed) => Some(TicketStatus::Closed),
                    _ => None,
                };
                if status.is_none() {
                    v.add(format!("statuses[{i}]"), "not a ticket status");
                }
                status
            })
            .collect();
        let kinds = req
            .kinds
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let kind = match pb::TicketKind::try_from(*k).ok() {
                    Some(pb::TicketKind::Complaint) => Some(Kind::Complaint),
                    Some(pb::TicketKind::FollowUp) => Some(Kind::FollowUp),
                    _ => None,
                };
                if kind.is_none() {
                    v.add(format!("kinds[{i}]"), "not a ticket kind");
                }
                kind
            })
            .collect();
        let severities: Vec<Severity> = req
            .severities
            .iter()
            .enumerate()
            .map(|(i, s)| parse::severity(&mut v, &format!("severities[{i}]"), *s))
            .collect();
        if req.unassigned_only && !req.assignee_id.is_empty() {
            v.add("unassigned_only", "cannot be combined with assignee_id");
        }
        let customer_id = parse::customer_filter(&mut v, "customer_id", &req.customer_id);
        let near = req.near_breach_within.as_ref().map(|d| d.seconds);
        if let Some(secs) = near {
            if !(1..=30 * 24 * 3600).contains(&secs) {
                v.add("near_breach_within", "must be 1 second to 30 days");
            }
            if req.breached_only {
                v.add(
                    "near_breach_within",
                    "cannot be combined with breached_only",
                );
            }
        }
        let (created_from, created_to) =
            parse::time_range(&mut v, "create_time_range", req.create_time_range.as_ref());
        let by_next_due = match pb::TicketOrderBy::try_from(req.order_by).ok() {
            Some(pb::TicketOrderBy::Unspecified) => false,
            Some(pb::TicketOrderBy::NextDueTime) => true,
            None => {
                v.add("order_by", "not an order");
                false
            }
        };
        done(v)?;
        let fp = parse::fingerprint(&pb::ListTicketsRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        });
        let (after, size) = self.page_in(&fp, &req.page_token, req.page_size)?;
        let filter = TicketFilter {
            statuses,
            kinds,
            severities,
            assignee_id: req.assignee_id.clone(),
            unassigned_only: req.unassigned_only,
            customer_id,
            category: req.category.clone(),
            breached_only: req.breached_only,
            near_breach_within_secs: near,
            created_from,
            created_to,
            by_next_due,
        };
        let (list, now) = workflow::tickets::list(&self.ctx, &filter, after, size).await?;
        let last = list.last().map(|(_, c)| *c);
        let next_page_token = self.page_out(&fp, last, list.len() == size)?;
        ok(pb::ListTicketsResponse {
            tickets: list
                .iter()
                .map(|(t, _)| convert::ticket(t, now, &[]))
                .collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn update_ticket(
        &self,
        request: Request<pb::UpdateTicketRequest>,
    ) -> Rpc<pb::UpdateTicketResponse> {
        let caller = Caller::service_of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let t = req.ticket.unwrap_or_default();
        let id = parse::id(&mut v, "ticket.ticket_id", &t.ticket_id);
        let mut mask = crate::domain::ticket::TicketMask::default();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "required: name the fields to update");
        }
        for p in &paths {
            match p.as_str() {
                "category" => mask.category = true,
                "severity" => mask.severity = true,
                "subject" => mask.subject = true,
                "description" => mask.description = true,
                "touchpoint" => mask.touchpoint = true,
                other => v.add("update_mask", format!("`{other}` cannot be updated")),
            }
        }
        if mask.category {
            parse::check(&mut v, "ticket.category", text::slug(&t.category));
        }
        let severity = if mask.severity {
            parse::severity(&mut v, "ticket.severity", t.severity)
        } else {
            Severity::Medium
        };
        if mask.subject {
            parse::check(&mut v, "ticket.subject", text::length(&t.subject, 1, 200));
        }
        if mask.description {
            parse::check(
                &mut v,
                "ticket.description",
                text::length(&t.description, 0, 10_000),
            );
        }
        let touchpoint = if mask.touchpoint {
            t.touchpoint
                .as_ref()
                .and_then(|tp| parse::touchpoint(&mut v, "ticket.touchpoint", Some(tp)))
        } else {
            None
        };
        let actor = actor(&caller, &req.actor_id, &mut v);
        done(v)?;
        let new = NewTicket {
            customer_id: String::new(),
            category: t.category,
            severity,
            channel: String::new(),
            subject: t.subject,
            description: t.description,
            touchpoint,
            source_response_id: None,
            assignee_id: String::new(),
            actor_id: req.actor_id,
        };
        let updated = workflow::tickets::update(
            &self.ctx,
            id.unwrap_or_default(),
            &actor,
            &t.etag,
            mask,
            new,
        )
        .await?;
        ok(pb::UpdateTicketResponse {
            ticket: Some(convert::ticket(&updated, self.ctx.now(), &[])),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn list_ticket_history(
        &self,
        request: Request<pb::ListTicketHistoryRequest>,
    ) -> Rpc<pb::ListTicketHistoryResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse::id(&mut v, "ticket_id", &req.ticket_id);
        done(v)?;
        let fp = parse::fingerprint(&pb::ListTicketHistoryRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        });
        let size = paging::page_size(req.page_size)?;
        let after = if req.page_token.is_empty() {
            0
        } else {
            self.pages.decode::<Cursor>(&fp, &req.page_token)?.t
        };
        let (entries, last) =
            workflow::tickets::history_page(&self.ctx, id.unwrap_or_default(), after, size).await?;
        let next_page_token = if entries.len() == size {
            self.pages
                .encode(
                    &fp,
                    &Cursor {
                        t: last,
                        id: String::new(),
                    },
                )
                .map_err(|e| Status::from(Error::internal(e)))?
        } else {
            String::new()
        };
        ok(pb::ListTicketHistoryResponse {
            entries: entries.iter().map(Into::into).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn assign_ticket(
        &self,
        request: Request<pb::AssignTicketRequest>,
    ) -> Rpc<pb::AssignTicketResponse> {
        let caller = Caller::service_of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse::id(&mut v, "ticket_id", &req.ticket_id);
        if !req.assignee_id.is_empty() {
            parse::check(&mut v, "assignee_id", text::printable_id(&req.assignee_id));
        }
        parse::check(&mut v, "note", text::length(&req.note, 0, 5000));
        let key = parse::optional_key(&mut v, &req.request_id, &caller, "AssignTicket", &req);
        let actor = actor(&caller, &req.actor_id, &mut v);
        done(v)?;
        let t = workflow::tickets::assign(
            &self.ctx,
            id.unwrap_or_default(),
            key,
            &actor,
            &req.etag,
            req.assignee_id,
            req.note,
        )
        .await?;
        ok(pb::AssignTicketResponse {
            ticket: Some(convert::ticket(&t, self.ctx.now(), &[])),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn start_ticket(
        &self,
        request: Request<pb::StartTicketRequest>,
    ) -> Rpc<pb::StartTicketResponse> {
        let caller = Caller::service_of(&request);
        let req = request.into_inner();
        let t = self
            .transition(
                &caller,
                &req.ticket_id,
                &req.request_id,
                "StartTicket",
                &req,
                &req.etag,
                &req.actor_id,
                Transition::Start,
                req.note.clone(),
                None,
            )
            .await?;
        ok(pb::StartTicketResponse { ticket: Some(t) })
    }

    #[tracing::instrument(skip_all)]
    async fn resolve_ticket(
        &self,
        request: Request<pb::ResolveTicketRequest>,
    ) -> Rpc<pb::ResolveTicketResponse> {
        let caller = Caller::service_of(&request);
        let req = request.into_inner();
        let t = self
            .transition(
                &caller,
                &req.ticket_id,
                &req.request_id,
                "ResolveTicket",
                &req,
                &req.etag,
                &req.actor_id,
                Transition::Resolve,
                String::new(),
                Some(req.resolution.clone()),
            )
            .await?;
        ok(pb::ResolveTicketResponse { ticket: Some(t) })
    }

    #[tracing::instrument(skip_all)]
    async fn close_ticket(
        &self,
        request: Request<pb::CloseTicketRequest>,
    ) -> Rpc<pb::CloseTicketResponse> {
        let caller = Caller::service_of(&request);
        let req = request.into_inner();
        let t = self
            .transition(
                &caller,
                &req.ticket_id,
                &req.request_id,
                "CloseTicket",
                &req,
                &req.etag,
                &req.actor_id,
                Transition::Close,
                req.note.clone(),
                None,
            )
            .await?;
        ok(pb::CloseTicketResponse { ticket: Some(t) })
    }

    #[tracing::instrument(skip_all)]
    async fn reopen_ticket(
        &self,
        request: Request<pb::ReopenTicketRequest>,
    ) -> Rpc<pb::ReopenTicketResponse> {
        let caller = Caller::service_of(&request);
        let req = request.into_inner();
        if let Err(e) = text::length(&req.reason, 1, 5000) {
            return Err(Error::invalid("reason", e).into());
        }
        let t = self
            .transition(
                &caller,
                &req.ticket_id,
                &req.request_id,
                "ReopenTicket",
                &req,
                &req.etag,
                &req.actor_id,
                Transition::Reopen,
                req.reason.clone(),
                None,
            )
            .await?;
        ok(pb::ReopenTicketResponse { ticket: Some(t) })
    }

    #[tracing::instrument(skip_all)]
    async fn add_ticket_note(
        &self,
        request: Request<pb::AddTicketNoteRequest>,
    ) -> Rpc<pb::AddTicketNoteResponse> {
        let caller = Caller::service_of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse::id(&mut v, "ticket_id", &req.ticket_id);
        parse::check(&mut v, "note", text::length(&req.note, 1, 5000));
        let key = parse::key(&mut v, &req.request_id, &caller, "AddTicketNote", &req);
        let actor = actor(&caller, &req.actor_id, &mut v);
        let key = parse::finish(v, || key)?;
        let (t, e) =
            workflow::tickets::add_note(&self.ctx, id.unwrap_or_default(), key, &actor, req.note)
                .await?;
        ok(pb::AddTicketNoteResponse {
            ticket: Some(convert::ticket(&t, self.ctx.now(), &[])),
            entry: Some((&e).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn get_sla_policy(
        &self,
        _request: Request<pb::GetSlaPolicyRequest>,
    ) -> Rpc<pb::GetSlaPolicyResponse> {
        let p = workflow::tickets::policy(&self.ctx).await?;
        ok(pb::GetSlaPolicyResponse {
            sla_policy: Some((&p).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn update_sla_policy(
        &self,
        request: Request<pb::UpdateSlaPolicyRequest>,
    ) -> Rpc<pb::UpdateSlaPolicyResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let policy = req.sla_policy.unwrap_or_default();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "required: name the fields to update");
        }
        let mut targets = None;
        let mut follow_up = None;
        for p in &paths {
            match p.as_str() {
                "targets" => targets = Some(parse::sla_targets(&mut v, &policy.targets)),
                "follow_up_severity" => {
                    follow_up = Some(parse::severity(
                        &mut v,
                        "sla_policy.follow_up_severity",
                        policy.follow_up_severity,
                    ));
                }
                other => v.add("update_mask", format!("`{other}` cannot be updated")),
            }
        }
        done(v)?;
        let p =
            workflow::tickets::update_policy(&self.ctx, &policy.etag, targets, follow_up).await?;
        ok(pb::UpdateSlaPolicyResponse {
            sla_policy: Some((&p).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn record_follow_up_outcome(
        &self,
        request: Request<pb::RecordFollowUpOutcomeRequest>,
    ) -> Rpc<pb::RecordFollowUpOutcomeResponse> {
        let caller = Caller::service_of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let id = parse::id(&mut v, "ticket_id", &req.ticket_id);
        let outcome = match pb::FollowUpOutcome::try_from(req.outcome).ok() {
            Some(pb::FollowUpOutcome::Contacted) => Some(FollowUpOutcome::Contacted),
            Some(pb::FollowUpOutcome::Resolved) => Some(FollowUpOutcome::Resolved),
            Some(pb::FollowUpOutcome::NoAnswer) => Some(FollowUpOutcome::NoAnswer),
            _ => {
                v.add("outcome", "required: CONTACTED, RESOLVED or NO_ANSWER");
                None
            }
        };
        parse::check(&mut v, "note", text::length(&req.note, 0, 5000));
        let key = parse::key(
            &mut v,
            &req.request_id,
            &caller,
            "RecordFollowUpOutcome",
            &req,
        );
        let actor = actor(&caller, &req.actor_id, &mut v);
        let (key, outcome) = parse::finish(v, || Some((key?, outcome?)))?;
        let t = workflow::tickets::record_outcome(
            &self.ctx,
            id.unwrap_or_default(),
            key,
            &actor,
            &req.etag,
            outcome,
            req.note,
        )
        .await?;
        let (t, history) = workflow::tickets::get(&self.ctx, t.id).await?;
        ok(pb::RecordFollowUpOutcomeResponse {
            ticket: Some(convert::ticket(&t, self.ctx.now(), &history)),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn get_follow_up_report(
        &self,
        request: Request<pb::GetFollowUpReportRequest>,
    ) -> Rpc<pb::GetFollowUpReportResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let (from, to) = parse::time_range(&mut v, "open_time_range", req.open_time_range.as_ref());
        if req.survey_ids.len() > 100 {
            v.add("survey_ids", "at most 100");
        }
        let survey_ids = req
            .survey_ids
            .iter()
            .enumerate()
            .filter_map(|(i, s)| parse::id(&mut v, &format!("survey_ids[{i}]"), s))
            .collect();
        for (i, c) in req.channels.iter().enumerate() {
            parse::check(&mut v, &format!("channels[{i}]"), text::slug(c));
        }
        let triggers = req
            .triggers
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match pb::FollowUpTrigger::try_from(*t).ok() {
                Some(pb::FollowUpTrigger::NpsDetractor) => Some("nps_detractor"),
                Some(pb::FollowUpTrigger::LowCsat) => Some("low_csat"),
                _ => {
                    v.add(format!("triggers[{i}]"), "not a follow-up trigger");
                    None
                }
            })
            .collect();
        done(v)?;
        let filter = FollowUpFilter {
            from,
            to,
            survey_ids,
            channels: req.channels,
            triggers,
        };
        let c = workflow::tickets::follow_up_report(&self.ctx, &filter).await?;
        ok(pb::GetFollowUpReportResponse {
            report: Some(pb::FollowUpReport {
                follow_up_count: c.follow_ups,
                nps_detractor_count: c.nps_detractor,
                low_csat_count: c.low_csat,
                followed_up_count: c.followed_up,
                within_sla_count: c.within_sla,
                late_count: c.late,
                pending_count: c.pending,
                within_sla_percent: c.within_sla_percent(),
                contacted_count: c.contacted,
                resolved_count: c.resolved,
                no_answer_count: c.no_answer,
            }),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn create_review(
        &self,
        request: Request<pb::CreateReviewRequest>,
    ) -> Rpc<pb::CreateReviewResponse> {
        let caller = Caller::service_of(&request);
        let req = request.into_inner();
        let mut v = Violations::new();
        let key = parse::key(&mut v, &req.request_id, &caller, "CreateReview", &req);
        let r = req.review.clone().unwrap_or_default();
        let customer_id = parse::customer_id(&mut v, "review.customer_id", &r.customer_id);
        let subject = parse::subject(&mut v, "review.subject", r.subject.as_ref());
        if !(1..=5).contains(&r.rating) {
            v.add("review.rating", "must be 1-5");
        }
        parse::check(&mut v, "review.title", text::length(&r.title, 0, 200));
        parse::check(&mut v, "review.text", text::length(&r.text, 0, 10_000));
        parse::optional_slug(&mut v, "review.channel", &r.channel);
        let (key, customer_id, subject) =
            parse::finish(v, || Some((key?, customer_id?, subject?)))?;
        let new = NewReview {
            customer_id,
            subject,
            rating: r.rating,
            title: r.title,
            text: r.text,
            channel: r.channel,
        };
        let review = workflow::reviews::create(&self.ctx, key, new).await?;
        ok(pb::CreateReviewResponse {
            review: Some((&review).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn get_review(
        &self,
        request: Request<pb::GetReviewRequest>,
    ) -> Rpc<pb::GetReviewResponse> {
        let mut v = Violations::new();
        let id = parse::id(&mut v, "review_id", &request.get_ref().review_id);
        done(v)?;
        let r = workflow::reviews::get(&self.ctx, id.unwrap_or_default()).await?;
        ok(pb::GetReviewResponse {
            review: Some((&r).into()),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn list_reviews(
        &self,
        request: Request<pb::ListReviewsRequest>,
    ) -> Rpc<pb::ListReviewsResponse> {
        let req = request.into_inner();
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
        let (from, to) =
            parse::time_range(&mut v, "create_time_range", req.create_time_range.as_ref());
        let customer_id = parse::customer_filter(&mut v, "customer_id", &req.customer_id);
        done(v)?;
        let fp = parse::fingerprint(&pb::ListReviewsRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        });
        let (after, size) = self.page_in(&fp, &req.page_token, req.page_size)?;
        let filter = ReviewFilter {
            subject,
            customer_id,
            ratings,
            from,
            to,
        };
        let list = workflow::reviews::list(&self.ctx, &filter, after, size).await?;
        let last = list.last().map(|r| (r.create_time, r.id));
        let next_page_token = self.page_out(&fp, last, list.len() == size)?;
        ok(pb::ListReviewsResponse {
            reviews: list.iter().map(Into::into).collect(),
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all)]
    async fn get_review_summary(
        &self,
        request: Request<pb::GetReviewSummaryRequest>,
    ) -> Rpc<pb::GetReviewSummaryResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        let subject = parse::subject(&mut v, "subject", req.subject.as_ref());
        let (from, to) =
            parse::time_range(&mut v, "create_time_range", req.create_time_range.as_ref());
        let subject = parse::finish(v, || subject)?;
        let summaries = workflow::reviews::summaries(&self.ctx, &[subject], from, to).await?;
        ok(pb::GetReviewSummaryResponse {
            summary: summaries.first().map(Into::into),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn batch_get_review_summaries(
        &self,
        request: Request<pb::BatchGetReviewSummariesRequest>,
    ) -> Rpc<pb::BatchGetReviewSummariesResponse> {
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.subjects.is_empty() || req.subjects.len() > 100 {
            v.add("subjects", "1-100 subjects");
        }
        let subjects: Vec<_> = req
            .subjects
            .iter()
            .enumerate()
            .filter_map(|(i, s)| parse::subject(&mut v, &format!("subjects[{i}]"), Some(s)))
            .collect();
        done(v)?;
        let summaries = workflow::reviews::summaries(&self.ctx, &subjects, None, None).await?;
        ok(pb::BatchGetReviewSummariesResponse {
            summaries: summaries.iter().map(Into::into).collect(),
        })
    }

    #[tracing::instrument(skip_all)]
    async fn export_customer_data(
        &self,
        request: Request<pb::ExportCustomerDataRequest>,
    ) -> Rpc<pb::ExportCustomerDataResponse> {
        let mut v = Violations::new();
        let customer_id = parse::customer_id(&mut v, "customer_id", &request.get_ref().customer_id);
        done(v)?;
        let data =
            workflow::export::customer_data(&self.ctx, &customer_id.unwrap_or_default()).await?;
        ok(pb::ExportCustomerDataResponse {
            customer_data_export: Some(convert::customer_export(&data)),
        })
    }
}

impl FeedbackApi {
    /// The shared parsing of the four transition RPCs.
    #[allow(clippy::too_many_arguments, reason = "one parameter per request field")]
    async fn transition<M: prost::Message>(
        &self,
        caller: &str,
        ticket_id: &str,
        request_id: &str,
        operation: &'static str,
        request: &M,
        etag: &str,
        actor_id: &str,
        transition: Transition,
        note: String,
        resolution: Option<Option<pb::TicketResolution>>,
    ) -> Result<pb::Ticket, Status> {
        let mut v = Violations::new();
        let id = parse::id(&mut v, "ticket_id", ticket_id);
        parse::check(&mut v, "note", text::length(&note, 0, 5000));
        let key = parse::optional_key(&mut v, request_id, caller, operation, request);
        let actor = actor(caller, actor_id, &mut v);
        let resolution = resolution.and_then(|r| parse::resolution(&mut v, r.as_ref()));
        done(v)?;
        let t = workflow::tickets::transition(
            &self.ctx,
            id.unwrap_or_default(),
            key,
            &actor,
            etag,
            transition,
            note,
            resolution,
        )
        .await?;
        Ok(convert::ticket(&t, self.ctx.now(), &[]))
    }
}
