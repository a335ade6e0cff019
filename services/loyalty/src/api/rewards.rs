//! Rewards: CreateReward, GetReward, ListRewards, UpdateReward, AdjustRewardStock,
//! RedeemReward, ReverseRewardRedemption, GetRewardRedemption, ListRewardRedemptions. Each
//! handler parses its request (`convert`), calls one use case in `workflow::rewards` and
//! converts the answer (`wire::rewards`).

use custops_common::error::{ServiceError, Violations};
use custops_common::paging::page_size;
use custops_contracts::custops::loyalty::v1 as pb;
use tonic::Request;
use uuid::Uuid;

use super::convert::{self, parse_uuid};
use super::parse::request_key;
use super::{LoyaltyApi, Rpc, ok};
use crate::domain::Keyed;
use crate::domain::reward::{AdjustStockCommand, Reward, RewardState};
use crate::store::rewards::RedemptionFilter;
use crate::workflow::rewards;

#[tracing::instrument(skip_all)]
pub(super) async fn create_reward(
    api: &LoyaltyApi,
    request: Request<pb::CreateRewardRequest>,
) -> Rpc<pb::CreateRewardResponse> {
    let key = request_key(&request, "CreateReward", &request.get_ref().request_id);
    let cmd = Keyed::<Reward>::try_from(request.into_inner())?;
    let reply = rewards::create_reward(&api.ctx, &key, cmd.command, |reward| {
        pb::CreateRewardResponse {
            reward: Some(reward.into()),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_reward(
    api: &LoyaltyApi,
    request: Request<pb::GetRewardRequest>,
) -> Rpc<pb::GetRewardResponse> {
    let id = parse_uuid(&request.get_ref().reward_id)
        .map_err(|d| ServiceError::invalid_argument("reward_id", d))?;
    let reward = rewards::get(&api.ctx, id).await?;
    ok(pb::GetRewardResponse {
        reward: Some(reward.into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn list_rewards(
    api: &LoyaltyApi,
    request: Request<pb::ListRewardsRequest>,
) -> Rpc<pb::ListRewardsResponse> {
    let req = request.into_inner();
    let program_id =
        parse_uuid(&req.program_id).map_err(|d| ServiceError::invalid_argument("program_id", d))?;
    let page = api.page_tokens.page::<_, Uuid>(&req)?;
    let mut states = Vec::new();
    for s in &req.states {
        states.push(match pb::RewardState::try_from(*s) {
            Ok(pb::RewardState::Active) => RewardState::Active,
            Ok(pb::RewardState::Inactive) => RewardState::Inactive,
            _ => {
                return Err(ServiceError::invalid_argument("states", "ACTIVE or INACTIVE").into());
            }
        });
    }
    let mut rows = rewards::list(
        &api.ctx,
        program_id,
        states,
        &req.tier_code,
        req.redeemable_only,
        page.after,
        page.fetch(),
    )
    .await?;
    let next_page_token = page.finish(&mut rows, |r| r.reward_id)?;
    ok(pb::ListRewardsResponse {
        rewards: rows.into_iter().map(Into::into).collect(),
        next_page_token,
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn update_reward(
    api: &LoyaltyApi,
    request: Request<pb::UpdateRewardRequest>,
) -> Rpc<pb::UpdateRewardResponse> {
    let cmd = convert::UpdateReward::try_from(request.into_inner())?;
    let reward = rewards::update(&api.ctx, cmd.reward_id, cmd.patch).await?;
    ok(pb::UpdateRewardResponse {
        reward: Some(reward.into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn adjust_reward_stock(
    api: &LoyaltyApi,
    request: Request<pb::AdjustRewardStockRequest>,
) -> Rpc<pb::AdjustRewardStockResponse> {
    let key = request_key(&request, "AdjustRewardStock", &request.get_ref().request_id);
    let cmd = Keyed::<AdjustStockCommand>::try_from(request.into_inner())?;
    let reply = rewards::adjust_reward_stock(&api.ctx, &key, cmd.command, |reward| {
        pb::AdjustRewardStockResponse {
            reward: Some(reward.into()),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn redeem_reward(
    api: &LoyaltyApi,
    request: Request<pb::RedeemRewardRequest>,
) -> Rpc<pb::RedeemRewardResponse> {
    let key = request_key(&request, "RedeemReward", &request.get_ref().request_id);
    let cmd = Keyed::try_from(request.into_inner())?;
    let reply = rewards::redeem_reward(&api.ctx, &key, cmd, |out| pb::RedeemRewardResponse {
        reward_redemption: Some(out.redemption.into()),
        ledger_entry: Some(out.applied.entry.into()),
        member: Some(out.applied.member.into()),
        reward: Some(out.reward.into()),
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn reverse_reward_redemption(
    api: &LoyaltyApi,
    request: Request<pb::ReverseRewardRedemptionRequest>,
) -> Rpc<pb::ReverseRewardRedemptionResponse> {
    let key = request_key(
        &request,
        "ReverseRewardRedemption",
        &request.get_ref().request_id,
    );
    let cmd = Keyed::try_from(request.into_inner())?;
    let reply = rewards::reverse_reward_redemption(&api.ctx, &key, cmd, |out| {
        pb::ReverseRewardRedemptionResponse {
            reward_redemption: Some(out.redemption.into()),
            ledger_entry: Some(out.applied.entry.into()),
            member: Some(out.applied.member.into()),
            reward: Some(out.reward.into()),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_reward_redemption(
    api: &LoyaltyApi,
    request: Request<pb::GetRewardRedemptionRequest>,
) -> Rpc<pb::GetRewardRedemptionResponse> {
    let id = parse_uuid(&request.get_ref().reward_redemption_id)
        .map_err(|d| ServiceError::invalid_argument("reward_redemption_id", d))?;
    let redemption = rewards::get_redemption(&api.ctx, id).await?;
    ok(pb::GetRewardRedemptionResponse {
        reward_redemption: Some(redemption.into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn list_reward_redemptions(
    api: &LoyaltyApi,
    request: Request<pb::ListRewardRedemptionsRequest>,
) -> Rpc<pb::ListRewardRedemptionsResponse> {
    let req = request.into_inner();
    let page = api.page_tokens.page::<_, Uuid>(&req);
    let mut v = Violations::new();
    let mut id = |field: &str, value: &str| {
        (!value.is_empty())
            .then(|| v.take(field, parse_uuid(value)))
            .flatten()
    };
    let program_id = id("program_id", &req.program_id);
    let member_id = id("member_id", &req.member_id);
    let reward_id = id("reward_id", &req.reward_id);
    if req.program_id.is_empty() && req.member_id.is_empty() && req.reward_id.is_empty() {
        v.add(
            "program_id",
            "one of program_id, member_id and reward_id is required",
        );
    }
    let mut states = Vec::new();
    for s in &req.states {
        match pb::RewardRedemptionState::try_from(*s) {
            Ok(pb::RewardRedemptionState::Unspecified) | Err(_) => {
                v.add("states", "COMPLETED or REVERSED");
            }
            Ok(s) => states.push(s as i16),
        }
    }
    let range = req.redeem_time_range.unwrap_or_default();
    let from = range
        .start_time
        .as_ref()
        .and_then(|t| v.take("redeem_time_range.start_time", convert::from_timestamp(t)));
    let until = range
        .end_time
        .as_ref()
        .and_then(|t| v.take("redeem_time_range.end_time", convert::from_timestamp(t)));
    v.take(
        "page_size",
        page_size(req.page_size).map_err(|e| e.message()),
    );
    v.into_result()?;
    let page = page?;
    let filter = RedemptionFilter {
        program_id,
        member_id,
        reward_id,
        states,
        from,
        until,
    };
    let mut rows = rewards::list_redemptions(&api.ctx, &filter, page.after, page.fetch()).await?;
    let next_page_token = page.finish(&mut rows, |r| r.reward_redemption_id)?;
    ok(pb::ListRewardRedemptionsResponse {
        reward_redemptions: rows.into_iter().map(Into::into).collect(),
        next_page_token,
    })
}
