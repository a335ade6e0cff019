//! Rewards: CreateReward, GetReward, ListRewards, UpdateReward, AdjustRewardStock,
//! RedeemReward, ReverseRewardRedemption, GetRewardRedemption, ListRewardRedemptions. Each
//! handler parses its request (the commands' `TryFrom`s below the handlers), calls one use
//! case in `workflow::rewards` and converts the answer (`wire::rewards`).

use chrono::{DateTime, Utc};
use custops_common::error::{ServiceError, Violations};
use custops_common::paging::page_size;
use custops_contracts::custops::loyalty::v1 as pb;
use tonic::Request;
use uuid::Uuid;

use super::parse::{
    check_len, check_range, from_timestamp, grouped, parse_member, parse_uuid, request_id,
    request_key,
};
use super::{LoyaltyApi, Rpc, ok};
use crate::domain::Keyed;
use crate::domain::limits::{MAX_REQUEST_POINTS, MAX_STOCK};
use crate::domain::reward::{
    AdjustStockCommand, RedeemRewardCommand, ReverseRedemptionCommand, Reward, RewardPatch,
    RewardState,
};
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
    let cmd = UpdateReward::try_from(request.into_inner())?;
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
        .and_then(|t| v.take("redeem_time_range.start_time", from_timestamp(t)));
    let until = range
        .end_time
        .as_ref()
        .and_then(|t| v.take("redeem_time_range.end_time", from_timestamp(t)));
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

impl TryFrom<pb::CreateRewardRequest> for Keyed<Reward> {
    type Error = ServiceError;

    fn try_from(req: pb::CreateRewardRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let r = req.reward.unwrap_or_else(|| {
            v.add("reward", "required");
            pb::Reward::default()
        });
        let program_id = v.take("reward.program_id", parse_uuid(&r.program_id));
        check_len(&mut v, "reward.display_name", &r.display_name, 1, 100);
        check_len(&mut v, "reward.description", &r.description, 0, 2000);
        check_range(
            &mut v,
            "reward.points_cost",
            r.points_cost,
            1,
            MAX_REQUEST_POINTS,
        );
        check_range(
            &mut v,
            "reward.available_stock",
            r.available_stock,
            0,
            MAX_STOCK,
        );
        if !(0..=1_000_000).contains(&r.max_quantity_per_member) {
            v.add("reward.max_quantity_per_member", "must be 0-1,000,000");
        }
        let state = match pb::RewardState::try_from(r.state) {
            Ok(pb::RewardState::Inactive) => RewardState::Inactive,
            Ok(pb::RewardState::Active | pb::RewardState::Unspecified) => RewardState::Active,
            Err(_) => {
                v.add("reward.state", "unknown value");
                RewardState::Active
            }
        };
        let period = r.availability_period.unwrap_or_default();
        let from = period
            .start_time
            .as_ref()
            .and_then(|t| v.take("reward.availability_period.start_time", from_timestamp(t)));
        let until = period
            .end_time
            .as_ref()
            .and_then(|t| v.take("reward.availability_period.end_time", from_timestamp(t)));
        if let (Some(f), Some(u)) = (from, until) {
            v.check(
                f < u,
                "reward.availability_period",
                "start must be before end",
            );
        }
        v.into_result()?;
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        Ok(Self {
            request_id,
            command: Reward {
                reward_id: Uuid::nil(),
                program_id: program_id.unwrap_or_default(),
                display_name: r.display_name,
                description: r.description,
                state,
                points_cost: r.points_cost,
                unlimited_stock: r.unlimited_stock,
                available_stock: r.available_stock,
                redeemed_quantity: 0,
                available_from: from,
                available_until: until,
                min_tier_code: r.min_tier_code,
                max_quantity_per_member: r.max_quantity_per_member,
                etag: 0,
                create_time: epoch,
                update_time: epoch,
            },
        })
    }
}

impl TryFrom<pb::RedeemRewardRequest> for Keyed<RedeemRewardCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::RedeemRewardRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let member = parse_member(&mut v, "member", req.member);
        let reward_id = v.take("reward_id", parse_uuid(&req.reward_id));
        if !(0..=100).contains(&req.quantity) {
            v.add("quantity", "must be 1-100 (0 means 1)");
        }
        check_len(&mut v, "reason", &req.reason, 0, 500);
        check_len(
            &mut v,
            "external_reference",
            &req.external_reference,
            0,
            128,
        );
        check_len(&mut v, "operator_id", &req.operator_id, 0, 128);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: RedeemRewardCommand {
                member,
                reward_id: reward_id.unwrap_or_default(),
                quantity: req.quantity.max(1),
                reason: req.reason,
                external_reference: req.external_reference,
                operator_id: req.operator_id,
            },
        })
    }
}

impl TryFrom<pb::ReverseRewardRedemptionRequest> for Keyed<ReverseRedemptionCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::ReverseRewardRedemptionRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let id = v.take(
            "reward_redemption_id",
            parse_uuid(&req.reward_redemption_id),
        );
        check_len(&mut v, "reason", &req.reason, 0, 500);
        check_len(&mut v, "operator_id", &req.operator_id, 0, 128);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: ReverseRedemptionCommand {
                reward_redemption_id: id.unwrap_or_default(),
                reason: req.reason,
                skip_restock: req.skip_restock,
                operator_id: req.operator_id,
            },
        })
    }
}

impl TryFrom<pb::AdjustRewardStockRequest> for Keyed<AdjustStockCommand> {
    type Error = ServiceError;

    fn try_from(req: pb::AdjustRewardStockRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let request_id = request_id(&mut v, &req.request_id);
        let reward_id = v.take("reward_id", parse_uuid(&req.reward_id));
        // A range test, not `abs()`: i64::MIN has no absolute value.
        if req.delta == 0 || !(-MAX_STOCK..=MAX_STOCK).contains(&req.delta) {
            v.add(
                "delta",
                format!(
                    "must be non-zero, between {} and {}",
                    grouped(-MAX_STOCK),
                    grouped(MAX_STOCK)
                ),
            );
        }
        check_len(&mut v, "reason", &req.reason, 1, 500);
        v.into_result()?;
        Ok(Self {
            request_id,
            command: AdjustStockCommand {
                reward_id: reward_id.unwrap_or_default(),
                delta: req.delta,
            },
        })
    }
}

/// UpdateReward: which reward and what changes.
#[derive(Debug)]
struct UpdateReward {
    /// The reward.
    reward_id: Uuid,
    /// The changes.
    patch: RewardPatch,
}

impl TryFrom<pb::UpdateRewardRequest> for UpdateReward {
    type Error = ServiceError;

    fn try_from(req: pb::UpdateRewardRequest) -> Result<Self, ServiceError> {
        let mut v = Violations::new();
        let r = req.reward.unwrap_or_default();
        let reward_id = v.take("reward.reward_id", parse_uuid(&r.reward_id));
        let etag = v.take(
            "reward.etag",
            r.etag
                .parse::<i64>()
                .map_err(|_| "the current etag is required".to_owned()),
        );
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        if paths.is_empty() {
            v.add("update_mask", "required and non-empty");
        }
        let mut patch = RewardPatch::default();
        for path in &paths {
            match path.as_str() {
                "display_name" => {
                    check_len(&mut v, "reward.display_name", &r.display_name, 1, 100);
                    patch.display_name = Some(r.display_name.clone());
                }
                "description" => {
                    check_len(&mut v, "reward.description", &r.description, 0, 2000);
                    patch.description = Some(r.description.clone());
                }
                "state" => {
                    patch.state = Some(match pb::RewardState::try_from(r.state) {
                        Ok(pb::RewardState::Inactive) => RewardState::Inactive,
                        Ok(pb::RewardState::Active) => RewardState::Active,
                        _ => {
                            v.add("reward.state", "ACTIVE or INACTIVE");
                            RewardState::Active
                        }
                    })
                }
                "points_cost" => {
                    check_range(
                        &mut v,
                        "reward.points_cost",
                        r.points_cost,
                        1,
                        MAX_REQUEST_POINTS,
                    );
                    patch.points_cost = Some(r.points_cost);
                }
                "unlimited_stock" => patch.unlimited_stock = Some(r.unlimited_stock),
                "availability_period" => {
                    let period = r.availability_period.unwrap_or_default();
                    let from = period.start_time.as_ref().and_then(|t| {
                        v.take("reward.availability_period.start_time", from_timestamp(t))
                    });
                    let until = period.end_time.as_ref().and_then(|t| {
                        v.take("reward.availability_period.end_time", from_timestamp(t))
                    });
                    patch.availability = Some((from, until));
                }
                "min_tier_code" => patch.min_tier_code = Some(r.min_tier_code.clone()),
                "max_quantity_per_member" => {
                    if !(0..=1_000_000).contains(&r.max_quantity_per_member) {
                        v.add("reward.max_quantity_per_member", "must be 0-1,000,000");
                    }
                    patch.max_quantity_per_member = Some(r.max_quantity_per_member);
                }
                other => v.add("update_mask", format!("`{other}` is not an updatable path")),
            }
        }
        v.into_result()?;
        patch.etag = etag.unwrap_or_default();
        Ok(Self {
            reward_id: reward_id.unwrap_or_default(),
            patch,
        })
    }
}
