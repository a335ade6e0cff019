//! The rewards catalog and reward redemptions. Stock is taken with a conditional UPDATE
//! (`available_stock >= quantity`), so concurrent redemptions can never oversell. The use
//! cases (RedeemReward, ReverseRewardRedemption, …) are in `workflow::rewards`.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use super::{StoreResult, decode};
use crate::domain::Rejection;
use crate::domain::limits::MAX_STOCK;
use crate::domain::reward::{Reward, RewardRedemption, RewardState};

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

/// Adds `new` to its program's catalog at `now`.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    new: &Reward,
    now: DateTime<Utc>,
) -> StoreResult<Reward> {
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

/// Takes `quantity` of the reward's stock, the last write of a redemption. The conditional
/// update is the guard against overselling: it takes the reward's row lock, re-reads the
/// stock and changes nothing when too little is left. Every redemption of a reward queues
/// for that one lock, so it is taken last (held only until the commit) and waited for up to
/// the statement timeout rather than the shorter lock timeout: a popular reward is meant to
/// be contended, and a redemption behind a few others is not stuck. (Taken first and waited
/// for under the lock timeout, fifty members redeeming a stock of ten on a loaded machine
/// got ABORTED where they should have got their reward or OUT_OF_STOCK.)
pub(crate) async fn take_stock(
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

/// Units of the reward the member holds through completed redemptions.
pub(crate) async fn held_by(
    conn: &mut PgConnection,
    member_id: Uuid,
    reward_id: Uuid,
) -> StoreResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(quantity), 0)::bigint FROM reward_redemptions \
         WHERE member_id = $1 AND reward_id = $2 AND state = 1",
    )
    .bind(member_id)
    .bind(reward_id)
    .fetch_one(&mut *conn)
    .await?)
}

/// A completed redemption about to be recorded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRedemption<'a> {
    pub(crate) reward_redemption_id: Uuid,
    pub(crate) reward: &'a Reward,
    pub(crate) member_id: Uuid,
    pub(crate) program_id: Uuid,
    pub(crate) quantity: i32,
    pub(crate) points_spent: i64,
    pub(crate) ledger_entry_id: Uuid,
    pub(crate) reason: &'a str,
    pub(crate) external_reference: &'a str,
    pub(crate) redeem_time: DateTime<Utc>,
}

/// Records a completed redemption.
pub(crate) async fn insert_redemption(
    conn: &mut PgConnection,
    new: NewRedemption<'_>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO reward_redemptions (reward_redemption_id, reward_id, reward_display_name, \
         member_id, program_id, quantity, points_spent, state, ledger_entry_id, reason, \
         external_reference, redeem_time) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $10, $11)",
    )
    .bind(new.reward_redemption_id)
    .bind(new.reward.reward_id)
    .bind(&new.reward.display_name)
    .bind(new.member_id)
    .bind(new.program_id)
    .bind(new.quantity)
    .bind(new.points_spent)
    .bind(new.ledger_entry_id)
    .bind(new.reason)
    .bind(new.external_reference)
    .bind(new.redeem_time)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Puts `restock` units back in the reward's stock (unless unlimited) and takes `quantity` off
/// its redeemed count, for a reversed redemption; answers the reward after it.
pub(crate) async fn restock(
    conn: &mut PgConnection,
    reward_id: Uuid,
    restock: i64,
    quantity: i64,
) -> StoreResult<Reward> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE rewards SET available_stock = CASE WHEN unlimited_stock THEN available_stock \
         ELSE available_stock + $2 END, redeemed_quantity = redeemed_quantity - $3 \
         WHERE reward_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(reward_id)
    .bind(restock)
    .bind(quantity)
    .fetch_one(&mut *conn)
    .await?;
    from_row(&row)
}

/// Marks the redemption reversed by the entry `entry_id` at `now`.
pub(crate) async fn mark_reversed(
    conn: &mut PgConnection,
    reward_redemption_id: Uuid,
    entry_id: Uuid,
    restocked: bool,
    reason: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE reward_redemptions SET state = 2, reversal_ledger_entry_id = $2, restocked = $3, \
         reversal_reason = $4, reverse_time = $5 WHERE reward_redemption_id = $1",
    )
    .bind(reward_redemption_id)
    .bind(entry_id)
    .bind(restocked)
    .bind(reason)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Moves the reward's stock by `delta` in one conditional UPDATE, so concurrent redemptions
/// are never lost; `None` (nothing changed) when the reward has unlimited stock or the stock
/// would leave 0..=`MAX_STOCK` (the delta is bounded too, so the SQL sum cannot leave bigint).
pub(crate) async fn add_stock(
    conn: &mut PgConnection,
    reward_id: Uuid,
    delta: i64,
) -> StoreResult<Option<Reward>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE rewards SET available_stock = available_stock + $2 \
         WHERE reward_id = $1 AND NOT unlimited_stock \
           AND available_stock + $2 BETWEEN 0 AND $3 \
         RETURNING {COLUMNS}"
    )))
    .bind(reward_id)
    .bind(delta)
    .bind(MAX_STOCK)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// The reward, its row locked until the transaction ends.
pub(crate) async fn lock(conn: &mut PgConnection, reward_id: Uuid) -> StoreResult<Reward> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rewards WHERE reward_id = $1 FOR UPDATE"
    )))
    .bind(reward_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Rejection::not_found("reward", reward_id))?;
    from_row(&row)
}

/// Writes `reward`'s changeable fields at `now`, moving its etag on (stock changes do not: they
/// go through redemptions and AdjustRewardStock); answers it as stored.
pub(crate) async fn save(
    conn: &mut PgConnection,
    reward: &Reward,
    now: DateTime<Utc>,
) -> StoreResult<Reward> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE rewards SET display_name = $2, description = $3, state = $4, points_cost = $5, \
         unlimited_stock = $6, available_from = $7, available_until = $8, min_tier_code = $9, \
         max_quantity_per_member = $10, etag = etag + 1, update_time = $11 \
         WHERE reward_id = $1 RETURNING {COLUMNS}"
    )))
    .bind(reward.reward_id)
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
    .fetch_one(&mut *conn)
    .await?;
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
    .fetch_all(&mut *custops_common::db::read(pool).await?)
    .await?;
    rows.iter().map(from_row).collect()
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
