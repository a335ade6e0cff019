//! The rewards catalog and reward redemptions. Stock is taken with a conditional UPDATE
//! (`available_stock >= quantity`), so concurrent redemptions can never oversell.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use super::ledger::{self, Applied, NewEntry, Origin};
use super::{StoreError, StoreResult, decode, programs};
use crate::domain::Rejection;
use crate::domain::event::Event;
use crate::domain::ledger::{EntryContext, ReverseAmount, ReverseCommand, ReverseTarget};
use crate::domain::ledger::{EntryDetails, EntryKind, check_sufficient};
use crate::domain::limits::MAX_STOCK;
use crate::domain::member::MemberRef;
use crate::domain::program::ProgramState;
use crate::domain::reward::{
    AdjustStockCommand, RedeemRewardCommand, ReverseRedemptionCommand, Reward, RewardPatch,
    RewardRedemption, RewardState,
};

const COLUMNS: &str = "reward_id, program_id, display_name, description, state, points_cost, \
    unlimited_stock, available_stock, redeemed_quantity, available_from, available_until, \
    min_tier_code, max_quantity_per_member, etag, create_time, update_time";

fn state_code(state: RewardState) -> i16 {
    match state {
        RewardState::Active => 1,
        RewardState::Inactive => 2,
    }
}

fn from_row(row: &PgRow) -> StoreResult<Reward> {
    let state: i16 = row.try_get("state")?;
    Ok(Reward {
        reward_id: row.try_get("reward_id")?,
        program_id: row.try_get("program_id")?,
        display_name: row.try_get("display_name")?,
        description: row.try_get("description")?,
        state: decode(
            match state {
                1 => Some(RewardState::Active),
                2 => Some(RewardState::Inactive),
                _ => None,
            },
            "reward state",
        )?,
        points_cost: row.try_get("points_cost")?,
        unlimited_stock: row.try_get("unlimited_stock")?,
        available_stock: row.try_get("available_stock")?,
        redeemed_quantity: row.try_get("redeemed_quantity")?,
        available_from: row.try_get("available_from")?,
        available_until: row.try_get("available_until")?,
        min_tier_code: row.try_get("min_tier_code")?,
        max_quantity_per_member: row.try_get("max_quantity_per_member")?,
        etag: row.try_get("etag")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
    })
}

/// Adds a reward to its program's catalog.
pub async fn create(
    conn: &mut PgConnection,
    new: Reward,
    now: DateTime<Utc>,
) -> StoreResult<Reward> {
    let program = programs::get(conn, new.program_id).await?;
    if !new.min_tier_code.is_empty() && program.rules.tier(&new.min_tier_code).is_none() {
        return Err(Rejection::InvalidField {
            field: "reward.min_tier_code",
            description: format!("`{}` is not a tier of the program", new.min_tier_code),
        }
        .into());
    }
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO rewards (reward_id, program_id, display_name, description, state, \
         points_cost, unlimited_stock, available_stock, available_from, available_until, \
         min_tier_code, max_quantity_per_member, create_time, update_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(new.program_id)
    .bind(&new.display_name)
    .bind(&new.description)
    .bind(state_code(new.state))
    .bind(new.points_cost)
    .bind(new.unlimited_stock)
    .bind(new.available_stock)
    .bind(new.available_from)
    .bind(new.available_until)
    .bind(&new.min_tier_code)
    .bind(new.max_quantity_per_member)
    .bind(now)
    .fetch_one(conn)
    .await?;
    from_row(&row)
}

/// One reward.
pub async fn get(conn: &mut PgConnection, reward_id: Uuid) -> StoreResult<Reward> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rewards WHERE reward_id = $1"
    )))
    .bind(reward_id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| Rejection::not_found("reward", reward_id))?;
    from_row(&row)
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

/// RedeemReward: spends the points and takes the stock in the caller's transaction.
#[tracing::instrument(skip_all, fields(reward_id = %cmd.reward_id))]
pub async fn redeem(
    conn: &mut PgConnection,
    origin: Origin,
    cmd: RedeemRewardCommand,
    now: DateTime<Utc>,
) -> StoreResult<RewardRedeemed> {
    let mut events = Vec::new();
    let mut locked = ledger::lock_member(conn, &cmd.member, now, &mut events).await?;
    locked.member.status.check_can_spend()?;
    if locked.program.state != ProgramState::Active {
        return Err(Rejection::ProgramNotActive.into());
    }
    let reward = get(conn, cmd.reward_id).await?;
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
        let held: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(quantity), 0)::bigint FROM reward_redemptions \
             WHERE member_id = $1 AND reward_id = $2 AND state = 1",
        )
        .bind(locked.member.member_id)
        .bind(reward.reward_id)
        .fetch_one(&mut *conn)
        .await?;
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
    sqlx::query(
        "INSERT INTO reward_redemptions (reward_redemption_id, reward_id, reward_display_name, \
         member_id, program_id, quantity, points_spent, state, ledger_entry_id, reason, \
         external_reference, redeem_time) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $11)",
    )
    .bind(redemption_id)
    .bind(reward.reward_id)
    .bind(&reward.display_name)
    .bind(locked.member.member_id)
    .bind(locked.member.program_id)
    .bind(cmd.quantity)
    .bind(cost)
    .bind(entry.ledger_entry_id)
    .bind(&reason)
    .bind(&cmd.external_reference)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let reward = take_stock(conn, reward.reward_id, cmd.quantity).await?;
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

/// Takes `quantity` of the reward's stock, the last write of a redemption. The conditional
/// update is the guard against overselling: it takes the reward's row lock, re-reads the
/// stock and changes nothing when too little is left. Every redemption of a reward queues
/// for that one lock, so it is taken last (held only until the commit) and waited for up to
/// the statement timeout rather than the shorter lock timeout: a popular reward is meant to
/// be contended, and a redemption behind a few others is not stuck. (Taken first and waited
/// for under the lock timeout, fifty members redeeming a stock of ten on a loaded machine
/// got ABORTED where they should have got their reward or OUT_OF_STOCK.)
async fn take_stock(
    conn: &mut PgConnection,
    reward_id: Uuid,
    quantity: i32,
) -> StoreResult<Reward> {
    sqlx::query("SET LOCAL lock_timeout = 0")
        .execute(&mut *conn)
        .await?;
    let taken = sqlx::query(AssertSqlSafe(format!(
        "UPDATE rewards SET available_stock = CASE WHEN unlimited_stock THEN available_stock \
         ELSE available_stock - $2 END, redeemed_quantity = redeemed_quantity + $2 \
         WHERE reward_id = $1 AND (unlimited_stock OR available_stock >= $2) RETURNING {COLUMNS}"
    )))
    .bind(reward_id)
    .bind(i64::from(quantity))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = taken else {
        let left: i64 =
            sqlx::query_scalar("SELECT available_stock FROM rewards WHERE reward_id = $1")
                .bind(reward_id)
                .fetch_one(&mut *conn)
                .await?;
        return Err(Rejection::RewardOutOfStock {
            available_stock: left,
        }
        .into());
    };
    from_row(&row)
}

const REDEMPTION_COLUMNS: &str = "r.reward_redemption_id, r.reward_id, r.reward_display_name, \
    r.member_id, m.customer_id, r.program_id, r.quantity, r.points_spent, r.state, \
    r.ledger_entry_id, r.reversal_ledger_entry_id, r.restocked, r.reason, r.reversal_reason, \
    r.external_reference, r.redeem_time, r.reverse_time";

fn redemption_from_row(row: &PgRow) -> StoreResult<RewardRedemption> {
    let state: i16 = row.try_get("state")?;
    Ok(RewardRedemption {
        reward_redemption_id: row.try_get("reward_redemption_id")?,
        reward_id: row.try_get("reward_id")?,
        reward_display_name: row.try_get("reward_display_name")?,
        member_id: row.try_get("member_id")?,
        customer_id: row
            .try_get::<Option<Uuid>, _>("customer_id")?
            .unwrap_or_default(),
        program_id: row.try_get("program_id")?,
        quantity: row.try_get("quantity")?,
        points_spent: row.try_get("points_spent")?,
        reversed: state == 2,
        reversal_ledger_entry_id: row.try_get("reversal_ledger_entry_id")?,
        restocked: row.try_get("restocked")?,
        reversal_reason: row.try_get("reversal_reason")?,
        reverse_time: row.try_get("reverse_time")?,
        ledger_entry_id: row.try_get("ledger_entry_id")?,
        reason: row.try_get("reason")?,
        external_reference: row.try_get("external_reference")?,
        redeem_time: row.try_get("redeem_time")?,
    })
}

/// One redemption; with `lock`, its row stays locked until the transaction ends.
pub async fn get_redemption(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> StoreResult<RewardRedemption> {
    let suffix = if lock { " FOR UPDATE OF r" } else { "" };
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {REDEMPTION_COLUMNS} FROM reward_redemptions r JOIN members m USING (member_id) \
         WHERE r.reward_redemption_id = $1{suffix}"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| Rejection::not_found("reward redemption", id))?;
    redemption_from_row(&row)
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
pub async fn reverse_redemption(
    conn: &mut PgConnection,
    origin: Origin,
    cmd: ReverseRedemptionCommand,
    now: DateTime<Utc>,
) -> StoreResult<RedemptionReversed> {
    let found = get_redemption(conn, cmd.reward_redemption_id, false).await?;
    let mut events = Vec::new();
    // Member first, then the redemption row: the order every spend of the member follows.
    let mut locked =
        ledger::lock_member(conn, &MemberRef::Id(found.member_id), now, &mut events).await?;
    if locked.member.status == crate::domain::member::MemberStatus::Closed {
        return Err(Rejection::MemberNotActive { status: "CLOSED" }.into());
    }
    let redemption = get_redemption(conn, cmd.reward_redemption_id, true).await?;
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
    let target = ledger::target_entry(conn, &origin.caller, &reverse.target).await?;
    let prior = ledger::reversed_so_far(conn, target.ledger_entry_id).await?;
    let entry =
        ledger::reverse_redeem(conn, &mut locked, origin, &reverse, &target, prior, now).await?;
    let quantity = i64::from(redemption.quantity);
    let restock = if cmd.skip_restock { 0 } else { quantity };
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE rewards SET available_stock = CASE WHEN unlimited_stock THEN available_stock \
         ELSE available_stock + $2 END, redeemed_quantity = redeemed_quantity - $3 \
         WHERE reward_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(redemption.reward_id)
    .bind(restock)
    .bind(quantity)
    .fetch_one(&mut *conn)
    .await?;
    let reward = from_row(&row)?;
    sqlx::query(
        "UPDATE reward_redemptions SET state = 2, reversal_ledger_entry_id = $2, restocked = $3, \
         reversal_reason = $4, reverse_time = $5 WHERE reward_redemption_id = $1",
    )
    .bind(redemption.reward_redemption_id)
    .bind(entry.ledger_entry_id)
    .bind(!cmd.skip_restock)
    .bind(&reason)
    .bind(now)
    .execute(&mut *conn)
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

/// AdjustRewardStock: one conditional UPDATE, so concurrent redemptions are never lost. The
/// stock stays within 0 and `MAX_STOCK` (the delta is bounded too, so the SQL sum cannot
/// leave bigint).
pub async fn adjust_stock(conn: &mut PgConnection, cmd: AdjustStockCommand) -> StoreResult<Reward> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE rewards SET available_stock = available_stock + $2 \
         WHERE reward_id = $1 AND NOT unlimited_stock \
           AND available_stock + $2 BETWEEN 0 AND $3 \
         RETURNING {COLUMNS}"
    )))
    .bind(cmd.reward_id)
    .bind(cmd.delta)
    .bind(MAX_STOCK)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        return from_row(&row);
    }
    let reward = get(conn, cmd.reward_id).await?;
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

/// Filters of ListRewards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewardFilter {
    /// Program.
    pub program_id: Uuid,
    /// States; empty = all.
    pub states: Vec<RewardState>,
    /// Only rewards this tier (rank) may redeem: no minimum, or a minimum at or below it.
    pub tier_codes_allowed: Option<Vec<String>>,
    /// Only rewards redeemable at this time.
    pub redeemable_at: Option<DateTime<Utc>>,
}

/// A page of a program's rewards, oldest first, after `after`.
pub async fn list(
    pool: &sqlx::PgPool,
    filter: &RewardFilter,
    after: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<Reward>> {
    let states: Vec<i16> = filter.states.iter().map(|s| state_code(*s)).collect();
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rewards WHERE program_id = $1 \
           AND (cardinality($2::smallint[]) = 0 OR state = ANY($2)) \
           AND ($3::text[] IS NULL OR min_tier_code = '' OR min_tier_code = ANY($3)) \
           AND ($4::timestamptz IS NULL OR (state = 1 \
                AND (available_from IS NULL OR available_from <= $4) \
                AND (available_until IS NULL OR $4 < available_until) \
                AND (unlimited_stock OR available_stock > 0))) \
           AND ($5::uuid IS NULL OR reward_id > $5) \
         ORDER BY reward_id LIMIT $6"
    )))
    .bind(filter.program_id)
    .bind(&states)
    .bind(&filter.tier_codes_allowed)
    .bind(filter.redeemable_at)
    .bind(after)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// UpdateReward under its etag; the reward row is locked meanwhile. Stock changes do not move
/// the etag (they go through redemptions and AdjustRewardStock).
pub async fn update(
    pool: &sqlx::PgPool,
    reward_id: Uuid,
    patch: RewardPatch,
    now: DateTime<Utc>,
) -> StoreResult<Reward> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rewards WHERE reward_id = $1 FOR UPDATE"
    )))
    .bind(reward_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Rejection::not_found("reward", reward_id))?;
    let mut reward = from_row(&row)?;
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
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE rewards SET display_name = $2, description = $3, state = $4, points_cost = $5, \
         unlimited_stock = $6, available_from = $7, available_until = $8, min_tier_code = $9, \
         max_quantity_per_member = $10, etag = etag + 1, update_time = $11 \
         WHERE reward_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(reward_id)
    .bind(&reward.display_name)
    .bind(&reward.description)
    .bind(state_code(reward.state))
    .bind(reward.points_cost)
    .bind(reward.unlimited_stock)
    .bind(reward.available_from)
    .bind(reward.available_until)
    .bind(&reward.min_tier_code)
    .bind(reward.max_quantity_per_member)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let reward = from_row(&row)?;
    tx.commit().await?;
    Ok(reward)
}

/// Filters of ListRewardRedemptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedemptionFilter {
    /// Program.
    pub program_id: Option<Uuid>,
    /// Member.
    pub member_id: Option<Uuid>,
    /// Reward.
    pub reward_id: Option<Uuid>,
    /// State codes (1 completed, 2 reversed); empty = all.
    pub states: Vec<i16>,
    /// Redeemed at or after.
    pub from: Option<DateTime<Utc>>,
    /// Redeemed before.
    pub until: Option<DateTime<Utc>>,
}

/// A page of redemptions, newest first, after `after`.
pub async fn list_redemptions(
    executor: impl sqlx::PgExecutor<'_>,
    filter: &RedemptionFilter,
    after: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<RewardRedemption>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {REDEMPTION_COLUMNS} FROM reward_redemptions r JOIN members m USING (member_id) \
         WHERE ($1::uuid IS NULL OR r.program_id = $1) \
           AND ($2::uuid IS NULL OR r.member_id = $2) \
           AND ($3::uuid IS NULL OR r.reward_id = $3) \
           AND (cardinality($4::smallint[]) = 0 OR r.state = ANY($4)) \
           AND ($5::timestamptz IS NULL OR r.redeem_time >= $5) \
           AND ($6::timestamptz IS NULL OR r.redeem_time < $6) \
           AND ($7::uuid IS NULL OR r.reward_redemption_id < $7) \
         ORDER BY r.reward_redemption_id DESC LIMIT $8"
    )))
    .bind(filter.program_id)
    .bind(filter.member_id)
    .bind(filter.reward_id)
    .bind(&filter.states)
    .bind(filter.from)
    .bind(filter.until)
    .bind(after)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(executor)
    .await?;
    rows.iter().map(redemption_from_row).collect()
}
