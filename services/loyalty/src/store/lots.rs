//! Reads of a member's point lots: the lot list in spending order and the points expiring
//! within a horizon, by day in the program's time zone.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::StoreResult;

/// State of a lot, as the contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LotState {
    /// Inside the return window: counted, not spendable.
    Pending,
    /// Has spendable points left.
    Available,
    /// Fully spent or reversed.
    Exhausted,
    /// Its remaining points expired.
    Expired,
}

/// A lot as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    /// Id.
    pub point_lot_id: Uuid,
    /// Member holding it.
    pub member_id: Uuid,
    /// Entry that created it.
    pub ledger_entry_id: Uuid,
    /// State.
    pub state: LotState,
    /// Points it started with.
    pub original_points: i64,
    /// Points left.
    pub remaining_points: i64,
    /// Points expired.
    pub expired_points: i64,
    /// Created.
    pub earn_time: DateTime<Utc>,
    /// Expires.
    pub expire_time: Option<DateTime<Utc>>,
    /// Released (or to be released) from pending; `None` for lots never pending.
    pub release_time: Option<DateTime<Utc>>,
}

/// A page of the member's lots in `states`, in spending order, after the lot `after`.
pub async fn list(
    pool: &PgPool,
    member_id: Uuid,
    states: &[LotState],
    after: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<Lot>> {
    let want = |s| states.contains(&s);
    let rows = sqlx::query(
        "WITH lots AS ( \
           SELECT *, CASE WHEN remaining_points > 0 AND pending THEN 'pending' \
                          WHEN remaining_points > 0 THEN 'available' \
                          WHEN expired_points > 0 THEN 'expired' ELSE 'exhausted' END AS state, \
                  (coalesce(expire_time, 'infinity'::timestamptz), earn_time, point_lot_id) AS pos \
           FROM point_lots WHERE member_id = $1) \
         SELECT point_lot_id, member_id, ledger_entry_id, original_points, remaining_points, \
                expired_points, earn_time, expire_time, release_time, state \
         FROM lots WHERE (($2 AND state = 'available') OR ($3 AND state = 'exhausted') \
                          OR ($4 AND state = 'expired') OR ($7 AND state = 'pending')) \
           AND ($5::uuid IS NULL OR pos > (SELECT pos FROM lots WHERE point_lot_id = $5)) \
         ORDER BY pos LIMIT $6",
    )
    .bind(member_id)
    .bind(want(LotState::Available))
    .bind(want(LotState::Exhausted))
    .bind(want(LotState::Expired))
    .bind(after)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(want(LotState::Pending))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let state: String = r.try_get("state")?;
            Ok(Lot {
                point_lot_id: r.try_get("point_lot_id")?,
                member_id: r.try_get("member_id")?,
                ledger_entry_id: r.try_get("ledger_entry_id")?,
                state: match state.as_str() {
                    "pending" => LotState::Pending,
                    "available" => LotState::Available,
                    "expired" => LotState::Expired,
                    _ => LotState::Exhausted,
                },
                original_points: r.try_get("original_points")?,
                remaining_points: r.try_get("remaining_points")?,
                expired_points: r.try_get("expired_points")?,
                earn_time: r.try_get("earn_time")?,
                expire_time: r.try_get("expire_time")?,
                release_time: r.try_get("release_time")?,
            })
        })
        .collect()
}

/// Points (available and pending) expiring per calendar day in the IANA time zone
/// `time_zone` (the program's), between `now` and `until`, earliest first.
pub async fn expiring_by_day(
    pool: &PgPool,
    member_id: Uuid,
    time_zone: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> StoreResult<Vec<(NaiveDate, i64)>> {
    let rows: Vec<(NaiveDate, i64)> = sqlx::query_as(
        "SELECT (expire_time AT TIME ZONE $4)::date AS day, sum(remaining_points)::bigint \
         FROM point_lots WHERE member_id = $1 AND remaining_points > 0 \
           AND expire_time > $2 AND expire_time <= $3 \
         GROUP BY day ORDER BY day",
    )
    .bind(member_id)
    .bind(now)
    .bind(until)
    .bind(time_zone)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
