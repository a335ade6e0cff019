//! Invitations and responses: invite (idempotent, one per survey/customer/touchpoint), and
//! submit, which in one transaction validates the answers, stores the response, marks the
//! invitation, opens the follow-up ticket of a detractor / low CSAT, queues the reward and
//! writes ResponseSubmitted.

use custops_common::error::Violations;
use custops_common::idempotency::RequestKey;
use custops_common::trace_context;
use prost::Message;
use uuid::Uuid;

use super::{Actor, Context, tickets};
use crate::domain::Rejection;
use crate::domain::response::{
    self, Invitation, InvitationStatus, NewInvitation, RewardDelivery, RewardStatus, Submission,
    SurveyResponse,
};
use crate::domain::survey::SurveyStatus;
use crate::error::{self, Error};
use crate::store::{self, responses as rows, surveys};

/// Invites a customer to an ACTIVE survey and answers `reply` of the invitation; a replay of
/// the key answers the first reply, without asking segmentation again.
pub async fn invite<R: Message + Default>(
    ctx: &Context,
    key: RequestKey,
    new: NewInvitation,
    reply: impl FnOnce(&Invitation) -> R + Send + 'static,
) -> Result<R, Error> {
    // A replay never depends on today's segment membership.
    if let Some(first) = super::replayed(ctx, &key).await? {
        return Ok(first);
    }
    let ctx2 = ctx.clone();
    super::once(ctx, Some(&key), reply, move |tx| {
        Box::pin(async move {
            let ctx = ctx2;
            // Shared lock: the survey cannot close while the invitation is being created.
            let survey = surveys::get_shared(&mut *tx, new.survey_id).await?;
            if survey.status != SurveyStatus::Active {
                return Err(Rejection::SurveyNotActive {
                    status: survey.status,
                }
                .into());
            }
            // Asked inside the transaction (bounded by the directory's deadline), under the
            // survey's lock.
            let segment_id = &survey.content.target.segment_id;
            if !segment_id.is_empty() {
                let Some(segments) = &ctx.segments else {
                    return Err(Error::SegmentationNotConfigured);
                };
                if !segments.is_member(segment_id, &new.customer_id).await? {
                    return Err(Rejection::CustomerNotInSegment.into());
                }
            }
            if new.touchpoint.kind != survey.content.target.touchpoint_kind {
                return Err(Error::invalid(
                    "invitation.touchpoint.kind",
                    format!(
                        "the survey targets {} touchpoints",
                        survey.content.target.touchpoint_kind.as_str()
                    ),
                ));
            }
            let now = ctx.now();
            if new.expire_time.is_some_and(|t| t <= now) {
                return Err(Error::invalid(
                    "invitation.expire_time",
                    "must be in the future",
                ));
            }
            if let Some(existing) = rows::find_invitation(&mut *tx, &new).await? {
                return Err(Rejection::InvitationExists {
                    invitation_id: existing,
                }
                .into());
            }
            let invitation = Invitation {
                id: Uuid::now_v7(),
                new,
                status: InvitationStatus::Pending,
                response_id: None,
                create_time: now,
                respond_time: None,
            };
            rows::insert_invitation(&mut *tx, &invitation).await?;
            Ok((invitation, Vec::new()))
        })
    })
    .await
}

/// One invitation (EXPIRED once its expiry passed).
pub async fn get_invitation(ctx: &Context, id: Uuid) -> Result<Invitation, Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    let mut invitation = rows::get_invitation(&mut conn, id, false).await?;
    if invitation.status == InvitationStatus::Pending
        && invitation.new.expire_time.is_some_and(|t| t <= ctx.now())
    {
        invitation.status = InvitationStatus::Expired;
    }
    Ok(invitation)
}

/// Submits the response to an invitation (see the module comment) and answers `reply` of
/// it; a replay of the key answers the first reply, without asking segmentation again.
pub async fn submit<R: Message + Default>(
    ctx: &Context,
    key: RequestKey,
    actor: &Actor,
    submission: Submission,
    reply: impl FnOnce(&SurveyResponse) -> R + Send + 'static,
) -> Result<R, Error> {
    if let Some(first) = super::replayed(ctx, &key).await? {
        return Ok(first);
    }
    let (ctx2, actor) = (ctx.clone(), actor.clone());
    super::once(ctx, Some(&key), reply, move |tx| {
        Box::pin(async move {
            let ctx = ctx2;
            // The invitation's row lock serialises every submit to it: of concurrent submits
            // exactly one finds it PENDING (a replay racing its first call is refused here, and
            // answered the first call's reply).
            let invitation = rows::get_invitation(&mut *tx, submission.invitation_id, true).await?;
            if let Some(existing) = invitation.response_id {
                return Err(Rejection::ResponseAlreadySubmitted {
                    response_id: existing,
                }
                .into());
            }
            let survey = surveys::get(&mut *tx, invitation.new.survey_id, false).await?;
            if survey.status == SurveyStatus::Closed {
                return Err(Rejection::SurveyClosed.into());
            }
            let now = ctx.now();
            if invitation.status == InvitationStatus::Expired
                || invitation.new.expire_time.is_some_and(|t| t <= now)
            {
                return Err(Rejection::InvitationExpired.into());
            }
            let mut v = Violations::new();
            let evaluated = response::evaluate(&survey, submission.answers, &mut v);
            error::invalid_fields(v)?;
            let channel = if submission.channel.is_empty() {
                invitation.new.channel.clone()
            } else {
                submission.channel
            };
            let segment_ids = segments_at_submission(&ctx, &invitation.new.customer_id).await;
            let mut r = SurveyResponse {
                id: Uuid::now_v7(),
                invitation_id: invitation.id,
                survey_id: survey.id,
                customer_id: invitation.new.customer_id.clone(),
                touchpoint: invitation.new.touchpoint.clone(),
                channel,
                answers: evaluated.answers,
                scores: evaluated.scores,
                completed: evaluated.completed,
                follow_up_ticket_id: None,
                reward: survey
                    .content
                    .reward
                    .as_ref()
                    .filter(|_| evaluated.completed)
                    .map(|w| RewardDelivery {
                        status: RewardStatus::Pending,
                        points: w.points,
                        program_id: w.program_id.clone(),
                        attempt_count: 0,
                        last_attempt_time: None,
                        next_attempt_time: Some(now),
                        last_error_reason: String::new(),
                        ledger_entry_id: String::new(),
                        deliver_time: None,
                    }),
                submit_time: now,
                erase_time: None,
                segment_ids,
            };
            // The response row goes first: the follow-up ticket refers to it.
            rows::insert_response(&mut *tx, &r).await?;
            let triggers = r.scores.follow_up_triggers();
            if !triggers.is_empty() {
                let ticket = tickets::open_follow_up(&mut *tx, &actor, &r, triggers).await?;
                r.follow_up_ticket_id = Some(ticket);
                rows::set_follow_up(&mut *tx, r.id, ticket).await?;
            }
            store::metrics::add_to_rollup(&mut *tx, r.id).await?;
            rows::mark_responded(&mut *tx, invitation.id, r.id, now).await?;
            // After the follow-up's TicketOpened, appended with its ticket.
            let submitted = crate::events::response_submitted(&r);
            Ok((r, vec![submitted]))
        })
    })
    .await
}

/// The customer's segments for the response. The submission does not fail when segmentation
/// cannot answer (the response matters more than its segment tag): it records none, and the
/// response is then left out of segment-filtered metrics.
async fn segments_at_submission(ctx: &Context, customer_id: &str) -> Vec<String> {
    let Some(segments) = &ctx.segments else {
        return Vec::new();
    };
    match segments.segments_of(customer_id).await {
        Ok(ids) => ids,
        Err(error) => {
            tracing::warn!(%error, "response recorded without segments");
            Vec::new()
        }
    }
}

/// One response.
pub async fn get_response(ctx: &Context, id: Uuid) -> Result<SurveyResponse, Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    rows::get_response(&mut conn, id).await
}

/// Up to `limit` responses after `after`, newest first.
pub async fn list_responses(
    ctx: &Context,
    filter: &rows::ResponseFilter,
    after: Option<(chrono::DateTime<chrono::Utc>, Uuid)>,
    limit: usize,
) -> Result<Vec<SurveyResponse>, Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    rows::list_responses(&mut conn, filter, after, limit).await
}

/// Re-queues a REJECTED reward; NO_REWARD when the response has none.
pub async fn retry_reward(ctx: &Context, id: Uuid) -> Result<SurveyResponse, Error> {
    let mut tx = ctx.store.pool.begin().await?;
    let r = rows::get_response(&mut tx, id).await?;
    if r.reward.is_none() {
        return Err(Rejection::NoReward.into());
    }
    // The retried delivery continues this call's trace: that is where someone looks for its
    // outcome.
    let traceparent = trace_context::current_traceparent();
    store::rewards::requeue(&mut tx, id, ctx.now(), &traceparent).await?;
    let r = rows::get_response(&mut tx, id).await?;
    tx.commit().await?;
    Ok(r)
}

/// Up to `limit` invitations after `after`, newest first.
pub async fn list_invitations(
    ctx: &Context,
    filter: &rows::InvitationFilter,
    after: Option<(chrono::DateTime<chrono::Utc>, Uuid)>,
    limit: usize,
) -> Result<Vec<Invitation>, Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    rows::list_invitations(&mut conn, filter, after, limit).await
}

/// One customer's feedback summary (zero counts for a customer never heard of).
pub async fn customer_summary(
    ctx: &Context,
    customer_id: &str,
) -> Result<rows::CustomerSummary, Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    rows::customer_summary(&mut conn, customer_id, ctx.now()).await
}
