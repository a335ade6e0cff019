//! Tier history: the changes recorded (at enrolment, by a qualifying change, by a review) and
//! read back.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use super::StoreResult;
use crate::domain::member::{Member, TierChange};
use crate::domain::program::Threshold;

/// One row of tier history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierChangeRow {
    /// Id.
    pub tier_change_id: Uuid,
    /// Member.
    pub member_id: Uuid,
    /// Member's customer.
    pub customer_id: Uuid,
    /// Program.
    pub program_id: Uuid,
    /// Program currency.
    pub currency: String,
    /// From (empty for the initial tier).
    pub from_code: String,
    /// From rank.
    pub from_rank: i32,
    /// To.
    pub to_code: String,
    /// To rank.
    pub to_rank: i32,
    /// 1 initial, 2 upgrade, 3 downgrade (the contract's numbers).
    pub direction: i16,
    /// 1 enrolment, 2 qualifying activity, 3 review (the contract's numbers).
    pub cause: i16,
    /// Qualifying amount at the change, on the program's metric.
    pub qualifying: i64,
    /// Whether the program qualifies tiers on spend (then `qualifying` is minor units).
    pub spend_metric: bool,
    /// The entry that caused an upgrade by qualifying activity.
    pub ledger_entry_id: Option<Uuid>,
    /// When.
    pub change_time: DateTime<Utc>,
}

/// Filters of ListTierChanges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierChangeFilter {
    /// The member (and, with `merged_members`, members merged into it).
    pub member_id: Option<Uuid>,
    /// With `member_id`: also the changes of members merged into it (ListTierChanges), rather
    /// than the member's own alone (a data export, which lists merged members separately).
    pub merged_members: bool,
    /// The program.
    pub program_id: Option<Uuid>,
    /// Directions; empty = all.
    pub directions: Vec<i16>,
    /// From (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Until (exclusive).
    pub until: Option<DateTime<Utc>>,
}

/// A page of tier changes, newest first, after `after`.
pub async fn list(
    executor: impl PgExecutor<'_>,
    filter: &TierChangeFilter,
    after: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<TierChangeRow>> {
    let rows = sqlx::query(
        "SELECT t.tier_change_id, t.member_id, m.customer_id, t.program_id, p.currency, \
                t.from_tier_code, t.from_rank, t.to_tier_code, t.to_rank, t.direction, t.cause, \
                t.qualifying_points, t.change_time, t.ledger_entry_id, \
                jsonb_path_exists(p.rules, '$.tiers[*].threshold.SpendMinor') AS spend_metric \
         FROM tier_changes t JOIN members m USING (member_id) JOIN programs p ON p.program_id = t.program_id \
         WHERE ($1::uuid IS NULL OR t.member_id = $1 OR ($8 AND m.merged_into_member_id = $1)) \
           AND ($2::uuid IS NULL OR t.program_id = $2) \
           AND (cardinality($3::smallint[]) = 0 OR t.direction = ANY($3)) \
           AND ($4::timestamptz IS NULL OR t.change_time >= $4) \
           AND ($5::timestamptz IS NULL OR t.change_time < $5) \
           AND ($6::uuid IS NULL OR t.tier_change_id < $6) \
         ORDER BY t.tier_change_id DESC LIMIT $7",
    )
    .bind(filter.member_id)
    .bind(filter.program_id)
    .bind(&filter.directions)
    .bind(filter.from)
    .bind(filter.until)
    .bind(after)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(filter.merged_members)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TierChangeRow {
                tier_change_id: r.try_get("tier_change_id")?,
                member_id: r.try_get("member_id")?,
                customer_id: r
                    .try_get::<Option<Uuid>, _>("customer_id")?
                    .unwrap_or_default(),
                program_id: r.try_get("program_id")?,
                currency: r.try_get("currency")?,
                from_code: r.try_get("from_tier_code")?,
                from_rank: r.try_get("from_rank")?,
                to_code: r.try_get("to_tier_code")?,
                to_rank: r.try_get("to_rank")?,
                direction: r.try_get("direction")?,
                cause: r.try_get("cause")?,
                qualifying: r.try_get("qualifying_points")?,
                spend_metric: r.try_get("spend_metric")?,
                ledger_entry_id: r.try_get("ledger_entry_id")?,
                change_time: r.try_get("change_time")?,
            })
        })
        .collect()
}

/// Records the INITIAL tier change of the member `member_id` enrolled at `now` in `base`
/// (cause ENROLMENT).
pub(crate) async fn insert_initial(
    conn: &mut PgConnection,
    member_id: Uuid,
    program_id: Uuid,
    base: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tier_changes (tier_change_id, member_id, program_id, from_tier_code, \
         from_rank, to_tier_code, to_rank, direction, cause, qualifying_points, change_time) \
         VALUES ($1, $2, $3, '', 0, $4, 0, 1, 1, 0, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(member_id)
    .bind(program_id)
    .bind(base)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records the member's upgrade `change` with the qualifying `amount` it reached. Cause 2 is
/// QUALIFYING_ACTIVITY (naming the entry), 3 is REVIEW (no entry).
pub(crate) async fn insert_upgrade(
    conn: &mut PgConnection,
    member: &Member,
    change: &TierChange,
    amount: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tier_changes (tier_change_id, member_id, program_id, from_tier_code, \
         from_rank, to_tier_code, to_rank, direction, cause, qualifying_points, change_time, \
         ledger_entry_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 2, CASE WHEN $10::uuid IS NULL THEN 3 ELSE 2 END, \
         $8, $9, $10)",
    )
    .bind(change.tier_change_id)
    .bind(member.member_id)
    .bind(member.program_id)
    .bind(&change.from_code)
    .bind(change.from_rank)
    .bind(&change.to_code)
    .bind(change.to_rank)
    .bind(amount)
    .bind(change.change_time)
    .bind(change.ledger_entry_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records the member's downgrade `change`, applied by a review (direction DOWNGRADE, cause
/// REVIEW).
pub(crate) async fn insert_downgrade(
    conn: &mut PgConnection,
    member: &Member,
    change: &TierChange,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO tier_changes (tier_change_id, member_id, program_id, from_tier_code, \
         from_rank, to_tier_code, to_rank, direction, cause, qualifying_points, change_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 3, 3, $8, $9)",
    )
    .bind(change.tier_change_id)
    .bind(member.member_id)
    .bind(member.program_id)
    .bind(&change.from_code)
    .bind(change.from_rank)
    .bind(&change.to_code)
    .bind(change.to_rank)
    .bind(match change.qualifying {
        Threshold::Points(amount) | Threshold::SpendMinor(amount) => amount,
    })
    .bind(change.change_time)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
