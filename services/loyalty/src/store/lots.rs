//! Reads of a member's point lots: the lot list in spending order and the points expiring
//! within a horizon, by day in the program's time zone.
//!
//! Reads show lots as they stand *now*: a due release or expiry that no change of the member
//! and no scheduled job has applied yet is applied in the read's view ([`lots_now`]), never
//! written by it. The stored lots keep the ledger invariants; the view is what the next
//! settlement (`workflow::ledger::settle_due`) will make of them.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{AssertSqlSafe, PgConnection, PgExecutor, Row};
use uuid::Uuid;

use super::StoreResult;

/// SQL of a subquery: the lots matching `lot_filter` (a condition on `l`, the `point_lots`
/// row) as they stand at `now` (an SQL expression, usually a bind parameter) once the
/// member's due releases and then its due expiries are applied, exactly as
/// `workflow::ledger::settle_due` applies them: a pending lot whose release time has passed is
/// available, repaying a negative balance (ALLOW_NEGATIVE_BALANCE) first, earliest earned
/// first; then every lot whose expiry time has passed has expired what it had left.
///
/// Columns: the lot's own (`pending`, `remaining_points`, `expired_points` as they stand now)
/// plus `stored_remaining`, `due_release`, `due_expire` and `cut` (points of a released lot
/// that repay the debt), from which [`super::members`] derives the balances now.
///
/// `lot_filter` may narrow the lots to the due ones: the debt is shared out over the due
/// releases only, so leaving other lots out changes nothing.
pub(crate) fn lots_now(lot_filter: &str, now: &str) -> String {
    format!(
        "SELECT w.point_lot_id, w.member_id, w.ledger_entry_id, w.original_points, w.earn_time, \
                w.expire_time, w.release_time, w.remaining_points AS stored_remaining, \
                w.due_release, w.due_expire, w.cut, \
                w.pending AND NOT w.due_release AS pending, \
                CASE WHEN w.due_expire THEN 0 ELSE w.remaining_points - w.cut END \
                  AS remaining_points, \
                w.expired_points + CASE WHEN w.due_expire THEN w.remaining_points - w.cut ELSE 0 END \
                  AS expired_points \
         FROM ( \
           SELECT l.*, \
             coalesce(l.pending AND l.release_time <= {now}, false) AS due_release, \
             coalesce(l.remaining_points > 0 AND l.expire_time <= {now}, false) AS due_expire, \
             CASE WHEN l.pending AND l.release_time <= {now} AND l.remaining_points > 0 THEN \
               LEAST(l.remaining_points, GREATEST(0, GREATEST(-lb.available_points, 0) - ( \
                 (sum(l.remaining_points) FILTER ( \
                   WHERE l.pending AND l.release_time <= {now} AND l.remaining_points > 0) \
                 OVER (PARTITION BY l.member_id ORDER BY l.earn_time, l.point_lot_id))::bigint \
                 - l.remaining_points))) \
             ELSE 0 END AS cut \
           FROM point_lots l JOIN balances lb ON lb.member_id = l.member_id \
           WHERE {lot_filter}) w"
    )
}

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

/// A page of the member's lots in `states`, in spending order, after the lot `after`, as
/// they stand at `now` ([`lots_now`]).
pub async fn list(
    executor: impl PgExecutor<'_>,
    member_id: Uuid,
    states: &[LotState],
    after: Option<Uuid>,
    limit: usize,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Lot>> {
    let want = |s| states.contains(&s);
    let rows = sqlx::query(AssertSqlSafe(format!(
        "WITH lots AS ( \
           SELECT *, CASE WHEN remaining_points > 0 AND pending THEN 'pending' \
                          WHEN remaining_points > 0 THEN 'available' \
                          WHEN expired_points > 0 THEN 'expired' ELSE 'exhausted' END AS state, \
                  (coalesce(expire_time, 'infinity'::timestamptz), earn_time, point_lot_id) AS pos \
           FROM ({}) now_lots) \
         SELECT point_lot_id, member_id, ledger_entry_id, original_points, remaining_points, \
                expired_points, earn_time, expire_time, release_time, state \
         FROM lots WHERE (($2 AND state = 'available') OR ($3 AND state = 'exhausted') \
                          OR ($4 AND state = 'expired') OR ($7 AND state = 'pending')) \
           AND ($5::uuid IS NULL OR pos > (SELECT pos FROM lots WHERE point_lot_id = $5)) \
         ORDER BY pos LIMIT $6",
        lots_now("l.member_id = $1", "$8")
    )))
    .bind(member_id)
    .bind(want(LotState::Available))
    .bind(want(LotState::Exhausted))
    .bind(want(LotState::Expired))
    .bind(after)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(want(LotState::Pending))
    .bind(now)
    .fetch_all(executor)
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
/// `time_zone` (the program's), between `now` and `until`, earliest first; lots as they stand
/// at `now` ([`lots_now`]), so points already past their expiry are not counted.
pub async fn expiring_by_day(
    executor: impl PgExecutor<'_>,
    member_id: Uuid,
    time_zone: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> StoreResult<Vec<(NaiveDate, i64)>> {
    let rows: Vec<(NaiveDate, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT (expire_time AT TIME ZONE $4)::date AS day, sum(remaining_points)::bigint \
         FROM ({}) now_lots WHERE remaining_points > 0 \
           AND expire_time > $2 AND expire_time <= $3 \
         GROUP BY day ORDER BY day",
        lots_now("l.member_id = $1", "$2")
    )))
    .bind(member_id)
    .bind(now)
    .bind(until)
    .bind(time_zone)
    .fetch_all(executor)
    .await?;
    Ok(rows)
}

/// Clears the `pending` flag of the member's lots whose release time has passed at `now`
/// (under the member's lock, so a lot is released once); returns those with points left (id,
/// remaining points), earliest earned first.
pub(crate) async fn release_due(
    conn: &mut PgConnection,
    member_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Vec<(Uuid, i64)>> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "WITH due AS ( \
           UPDATE point_lots SET pending = false \
           WHERE member_id = $1 AND pending AND release_time <= $2 \
           RETURNING point_lot_id, remaining_points, earn_time) \
         SELECT point_lot_id, remaining_points FROM due WHERE remaining_points > 0 \
         ORDER BY earn_time, point_lot_id",
    )
    .bind(member_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows)
}

/// Takes `points` out of the lot without recording a spend (a released lot repaying a
/// negative balance).
pub(crate) async fn cut(conn: &mut PgConnection, lot: Uuid, points: i64) -> StoreResult<()> {
    sqlx::query(
        "UPDATE point_lots SET remaining_points = remaining_points - $2 WHERE point_lot_id = $1",
    )
    .bind(lot)
    .bind(points)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Expires what is left in the member's lots whose expiry time has passed at `now`; returns,
/// per lot expired, its expired points and whether it was pending.
pub(crate) async fn expire_due(
    conn: &mut PgConnection,
    member_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Vec<(i64, bool)>> {
    let rows = sqlx::query(
        "UPDATE point_lots SET expired_points = expired_points + remaining_points, \
         remaining_points = 0 \
         WHERE member_id = $1 AND remaining_points > 0 AND expire_time <= $2 \
         RETURNING expired_points, pending",
    )
    .bind(member_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let mut expired = Vec::with_capacity(rows.len());
    for row in &rows {
        expired.push((
            row.try_get::<i64, _>("expired_points")?,
            row.try_get::<bool, _>("pending")?,
        ));
    }
    Ok(expired)
}
