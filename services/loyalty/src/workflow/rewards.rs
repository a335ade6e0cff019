//! Reward use cases: CreateReward, AdjustRewardStock, RedeemReward and
//! ReverseRewardRedemption (each once per request id), UpdateReward (under the reward's row
//! lock and its etag), and the reads of rewards and redemptions. A redemption spends the
//! member's points under its lock, like every change of a member (`workflow::ledger`), and
//! takes the stock last (`store::rewards::take_stock`).

use chrono::{DateTime, Utc};
use custops_common::idempotency::RequestKey;
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Context;
use super::ledger::{Applied, lock_member};
use super::reversals::reverse_redeem;
use crate::domain::event::Event;
use crate::domain::ledger::{
    EntryContext, EntryDetails, EntryKind, ReverseAmount, ReverseCommand, ReverseTarget,
    check_sufficient,
};
use crate::domain::limits::MAX_STOCK;
use crate::domain::member::{MemberRef, MemberStatus};
use crate::domain::program::ProgramState;
use crate::domain::reward::{
    AdjustStockCommand, RedeemRewardCommand, ReverseRedemptionCommand, Reward, RewardPatch,
    RewardRedemption, RewardState,
};
use crate::domain::{Keyed, Rejection};
use crate::events;
use crate::store::ledger::{self, NewEntry, Origin};
use crate::store::rewards::{self, NewRedemption, RedemptionFilter, RewardFilter};
use crate::store::{StoreError, StoreResult, programs, reversals};

/// CreateReward, once per request id: the reward created at the service clock's now and
/// `reply` of it recorded with the key (`Context::once`); a replay answers the first
/// call's reply.
pub async fn create_reward<R, F>(
    ctx: &Context,
    key: &RequestKey,
    reward: Reward,
    reply: F,
) -> StoreResult<R>
where
    R: Message + Default,
    F: FnOnce(Reward) -> R + Send + 'static,
{
    ctx.once(
        key,
        move |conn, now| {
            Box::pin(async move {
                let reward = create(conn, reward, now).await?;
                Ok((reward, Vec::new()).into())
            })
        },
        reply,
    )
    .await
}

/// AdjustRewardStock, once per request id: `reply` of the reward after the change recorded
/// with the key (`Context::once`); a replay answers the first call's reply.
pub async fn adjust_reward_stock<R, F>(
    ctx: &Context,
    key: &RequestKey,
    cmd: AdjustStockCommand,
    reply: F,
) -> StoreResult<R>
where
    R: Message + Default,
    F: FnOnce(Reward) -> R + Send + 'static,
{
    ctx.once(
        key,
        move |conn, _now| {
            Box::pin(async move {
                let reward = adjust_stock(conn, cmd).await?;
                Ok((reward, Vec::new()).into())
            })
        },
        reply,
    )
    .await
}

/// RedeemReward, once per request id: the redemption at the service clock's now, its
/// events appended and `reply` of its outcome recorded with the key
/// (`Context::once`); a replay answers the first call's reply.
pub async fn redeem_reward<R, F>(
    ctx: &Context,
    key: &RequestKey,
    cmd: Keyed<RedeemRewardCommand>,
    reply: F,
) -> StoreResult<R>
where
    R: Message + Default,
    F: FnOnce(RewardRedeemed) -> R + Send + 'static,
{
    let origin = Origin {
        caller: key.caller.clone(),
        request_id: cmd.request_id,
    };
    ctx.once(
        key,
        move |conn, now| {
            Box::pin(async move {
                let out = redeem(conn, origin, cmd.command, now).await?;
                let events = events::outbox_events(&out.applied.events);
                Ok((out, events).into())
            })
        },
        reply,
    )
    .await
}

/// ReverseRewardRedemption, once per request id: the reversal at the service clock's now, its
/// events appended and `reply` of its outcome recorded with the key
/// (`Context::once`); a replay answers the first call's reply.
pub async fn reverse_reward_redemption<R, F>(
    ctx: &Context,
    key: &RequestKey,
    cmd: Keyed<ReverseRedemptionCommand>,
    reply: F,
) -> StoreResult<R>
where
    R: Message + Default,
    F: FnOnce(RedemptionReversed) -> R + Send + 'static,
{
    let origin = Origin {
        caller: key.caller.clone(),
        request_id: cmd.request_id,
    };
    ctx.once(
        key,
        move |conn, now| {
            Box::pin(async move {
                let out = reverse_redemption(conn, origin, cmd.command, now).await?;
                let events = events::outbox_events(&out.applied.events);
                Ok((out, events).into())
            })
        },
        reply,
    )
    .await
}

/// GetReward.
pub async fn get(ctx: &Context, reward_id: Uuid) -> StoreResult<Reward> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    rewards::get(&mut conn, reward_id).await
}

/// ListRewards: a page of the program's rewards in `states` (all when empty), oldest first,
/// after `after`; with a `tier_code`, only those that tier may redeem (no minimum tier, or one
/// at or below it); with `redeemable_only`, only those redeemable now.
pub async fn list(
    ctx: &Context,
    program_id: Uuid,
    states: Vec<RewardState>,
    tier_code: &str,
    redeemable_only: bool,
    after: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<Reward>> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let program = programs::get(&mut conn, program_id).await?;
    drop(conn);
    // A tier may redeem rewards whose minimum tier is at or below it.
    let tier_codes_allowed = if tier_code.is_empty() {
        None
    } else {
        let Some((rank, _)) = program.rules.tier(tier_code) else {
            return Err(Rejection::InvalidField {
                field: "tier_code",
                description: "not a tier of the program".to_owned(),
            }
            .into());
        };
        Some(
            program.rules.tiers[..=usize::try_from(rank).unwrap_or(0)]
                .iter()
                .map(|t| t.code.clone())
                .collect(),
        )
    };
    let filter = RewardFilter {
        program_id,
        states,
        tier_codes_allowed,
        redeemable_at: redeemable_only.then(|| ctx.now()),
    };
    rewards::list(&ctx.pool, &filter, after, limit).await
}

/// GetRewardRedemption.
pub async fn get_redemption(ctx: &Context, id: Uuid) -> StoreResult<RewardRedemption> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    rewards::get_redemption(&mut conn, id, false).await
}

/// ListRewardRedemptions: a page of redemptions, newest first, after `after`.
pub async fn list_redemptions(
    ctx: &Context,
    filter: &RedemptionFilter,
    after: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<RewardRedemption>> {
    rewards::list_redemptions(
        &mut *custops_common::db::read(&ctx.pool).await?,
        filter,
        after,
        limit,
    )
    .await
}

/// UpdateReward under its etag; the reward row is locked meanwhile. Stock changes do not move
/// the etag (they go through redemptions and AdjustRewardStock).
pub async fn update(ctx: &Context, reward_id: Uuid, patch: RewardPatch) -> StoreResult<Reward> {
    let now = ctx.now();
    let mut tx = ctx.pool.begin().await?;
    let mut reward = rewards::lock(&mut tx, reward_id).await?;
    if reward.etag != patch.etag {
        return Err(Rejection::StaleEtag { resource: "reward" }.into());
    }
    patch.apply(&mut reward);
    if !reward.min_tier_code.is_empty() {
        let program = programs::get(&mut tx, reward.program_id).await?;
        if program.rules.tier(&reward.min_tier_code).is_none() {
            return Err(Rejection::InvalidField {
                field: "reward.min_tier_code",
                description: format!("`{}` is not a tier of the program", reward.min_tier_code),
            }
            .into());
        }
    }
    let reward = rewards::save(&mut tx, &reward, now).await?;
    tx.commit().await?;
    Ok(reward)
}

/// Adds a reward to its program's catalog, in the call's transaction.
async fn create(conn: &mut PgConnection, new: Reward, now: DateTime<Utc>) -> StoreResult<Reward> {
    let program = programs::get(conn, new.program_id).await?;
    if !new.min_tier_code.is_empty() && program.rules.tier(&new.min_tier_code).is_none() {
        return Err(Rejection::InvalidField {
            field: "reward.min_tier_code",
            description: format!("`{}` is not a tier of the program", new.min_tier_code),
        }
        .into());
    }
    rewards::insert(conn, &new, now).await
}

/// AdjustRewardStock: one conditional UPDATE (`store::rewards::add_stock`), so concurrent
/// redemptions are never lost; when it changed nothing, the reward says why. The stock stays
/// within 0 and `MAX_STOCK`.
async fn adjust_stock(conn: &mut PgConnection, cmd: AdjustStockCommand) -> StoreResult<Reward> {
    if let Some(reward) = rewards::add_stock(conn, cmd.reward_id, cmd.delta).await? {
        return Ok(reward);
    }
    let reward = rewards::get(conn, cmd.reward_id).await?;
    if reward.unlimited_stock {
        Err(Rejection::StockUnlimited.into())
    } else if cmd.delta > 0 {
        Err(Rejection::StockLimit {
            available_stock: reward.available_stock,
            limit: MAX_STOCK,
        }
        .into())
    } else {
        Err(Rejection::StockWouldBeNegative {
            available_stock: reward.available_stock,
        }
        .into())
    }
}

/// What RedeemReward made.
#[derive(Debug, Clone)]
pub struct RewardRedeemed {
    /// Entry, member and events.
    pub applied: Applied,
    /// The redemption.
    pub redemption: RewardRedemption,
    /// The reward after it.
    pub reward: Reward,
}

/// RedeemReward: spends the points and takes the stock in the call's transaction.
#[tracing::instrument(skip_all, fields(reward_id = %cmd.reward_id))]
async fn redeem(
    conn: &mut PgConnection,
    origin: Origin,
    cmd: RedeemRewardCommand,
    now: DateTime<Utc>,
) -> StoreResult<RewardRedeemed> {
    let mut events = Vec::new();
    let mut locked = lock_member(conn, &cmd.member, now, &mut events).await?;
    locked.member.status.check_can_spend()?;
    if locked.program.state != ProgramState::Active {
        return Err(Rejection::ProgramNotActive.into());
    }
    let reward = rewards::get(conn, cmd.reward_id).await?;
    if reward.program_id != locked.member.program_id {
        return Err(Rejection::not_found("reward", cmd.reward_id).into());
    }
    if !reward.is_available(now) {
        return Err(Rejection::RewardNotAvailable.into());
    }
    if !reward.min_tier_code.is_empty() {
        let min_rank = locked
            .program
            .rules
            .tier(&reward.min_tier_code)
            .map(|(r, _)| r);
        if min_rank.is_some_and(|rank| locked.member.tier.rank < rank) {
            return Err(Rejection::RewardTierNotEligible {
                min_tier_code: reward.min_tier_code.clone(),
            }
            .into());
        }
    }
    if reward.max_quantity_per_member > 0 {
        let held = rewards::held_by(conn, locked.member.member_id, reward.reward_id).await?;
        if held.saturating_add(i64::from(cmd.quantity)) > i64::from(reward.max_quantity_per_member)
        {
            return Err(Rejection::RewardMemberLimitReached {
                max_quantity_per_member: reward.max_quantity_per_member,
            }
            .into());
        }
    }
    // At most 10^9 points × 100 units, as the contract bounds both; a stored cost that does
    // not multiply is corrupt data, not a price.
    let cost = reward
        .points_cost
        .checked_mul(i64::from(cmd.quantity))
        .ok_or_else(|| {
            StoreError::Corrupt(format!("reward {} costs too much", reward.reward_id))
        })?;
    check_sufficient(locked.member.balances.available, cost)?;
    // What is committed already says whether stock is left: once a reward runs out, a
    // redemption answers OUT_OF_STOCK without queueing for its row lock.
    if !reward.unlimited_stock && reward.available_stock < i64::from(cmd.quantity) {
        return Err(Rejection::RewardOutOfStock {
            available_stock: reward.available_stock,
        }
        .into());
    }
    let redemption_id = Uuid::now_v7();
    let reason = if cmd.reason.is_empty() {
        format!("Redeemed: {}", reward.display_name)
    } else {
        cmd.reason
    };
    let mut new = NewEntry::new(EntryKind::Redeem, origin, reason.clone());
    new.operator_id = cmd.operator_id;
    new.external_reference = cmd.external_reference.clone();
    new.available_delta = -cost;
    new.lifetime_redeemed_delta = cost;
    new.details = Some(EntryDetails::RewardRedemption {
        reward_redemption_id: redemption_id,
        reward_id: reward.reward_id,
        reward_display_name: reward.display_name.clone(),
        quantity: cmd.quantity,
    });
    let entry = ledger::append(conn, &mut locked, new, now).await?;
    ledger::spend_for(conn, entry.member_id, entry.ledger_entry_id, cost).await?;
    let new_redemption = NewRedemption {
        reward_redemption_id: redemption_id,
        reward: &reward,
        member_id: locked.member.member_id,
        program_id: locked.member.program_id,
        quantity: cmd.quantity,
        points_spent: cost,
        ledger_entry_id: entry.ledger_entry_id,
        reason: &reason,
        external_reference: &cmd.external_reference,
        redeem_time: now,
    };
    rewards::insert_redemption(conn, new_redemption).await?;
    let reward = rewards::take_stock(conn, reward.reward_id, cmd.quantity).await?;
    let redemption = RewardRedemption {
        reward_redemption_id: redemption_id,
        reward_id: reward.reward_id,
        reward_display_name: reward.display_name.clone(),
        member_id: locked.member.member_id,
        customer_id: locked.member.customer_id,
        program_id: locked.member.program_id,
        quantity: cmd.quantity,
        points_spent: cost,
        reversed: false,
        reversal_ledger_entry_id: None,
        restocked: false,
        reversal_reason: String::new(),
        reverse_time: None,
        ledger_entry_id: entry.ledger_entry_id,
        reason,
        external_reference: cmd.external_reference,
        redeem_time: now,
    };
    events.push(Event::RewardRedeemed(
        locked.member.clone(),
        redemption.clone(),
        entry.clone(),
    ));
    Ok(RewardRedeemed {
        applied: Applied {
            entry,
            member: locked.member,
            tier_change: None,
            events,
        },
        redemption,
        reward,
    })
}

/// What ReverseRewardRedemption made.
#[derive(Debug, Clone)]
pub struct RedemptionReversed {
    /// Entry, member and events.
    pub applied: Applied,
    /// The redemption, now reversed.
    pub redemption: RewardRedemption,
    /// The reward after it.
    pub reward: Reward,
}

/// ReverseRewardRedemption: points back to their lots, units back in stock unless told not to.
#[tracing::instrument(skip_all, fields(reward_redemption_id = %cmd.reward_redemption_id))]
async fn reverse_redemption(
    conn: &mut PgConnection,
    origin: Origin,
    cmd: ReverseRedemptionCommand,
    now: DateTime<Utc>,
) -> StoreResult<RedemptionReversed> {
    let found = rewards::get_redemption(conn, cmd.reward_redemption_id, false).await?;
    let mut events = Vec::new();
    // Member first, then the redemption row: the order every spend of the member follows.
    let mut locked = lock_member(conn, &MemberRef::Id(found.member_id), now, &mut events).await?;
    if locked.member.status == MemberStatus::Closed {
        return Err(Rejection::MemberNotActive { status: "CLOSED" }.into());
    }
    let redemption = rewards::get_redemption(conn, cmd.reward_redemption_id, true).await?;
    if redemption.reversed {
        return Err(Rejection::AlreadyReversed.into());
    }
    let reason = if cmd.reason.is_empty() {
        "Reward returned".to_owned()
    } else {
        cmd.reason
    };
    let reverse = ReverseCommand {
        target: ReverseTarget::Entry(redemption.ledger_entry_id),
        amount: ReverseAmount::AllRemaining,
        context: EntryContext {
            reason: reason.clone(),
            reason_code: String::new(),
            operator_id: cmd.operator_id,
        },
    };
    let target = reversals::target_entry(conn, &origin.caller, &reverse.target).await?;
    let prior = reversals::reversed_so_far(conn, target.ledger_entry_id).await?;
    let entry = reverse_redeem(conn, &mut locked, origin, &reverse, &target, prior, now).await?;
    let quantity = i64::from(redemption.quantity);
    let restock = if cmd.skip_restock { 0 } else { quantity };
    let reward = rewards::restock(conn, redemption.reward_id, restock, quantity).await?;
    rewards::mark_reversed(
        conn,
        redemption.reward_redemption_id,
        entry.ledger_entry_id,
        !cmd.skip_restock,
        &reason,
        now,
    )
    .await?;
    let redemption = RewardRedemption {
        reversed: true,
        reversal_ledger_entry_id: Some(entry.ledger_entry_id),
        restocked: !cmd.skip_restock,
        reversal_reason: reason,
        reverse_time: Some(now),
        ..redemption
    };
    events.push(Event::RewardRedemptionReversed(
        locked.member.clone(),
        redemption.clone(),
        entry.clone(),
    ));
    Ok(RedemptionReversed {
        applied: Applied {
            entry,
            member: locked.member,
            tier_change: None,
            events,
        },
        redemption,
        reward,
    })
}
