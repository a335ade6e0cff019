//! The SQL of reversals: the entry a reversal targets, what earlier reversals took from it,
//! the lots an earn or a redemption moved, and giving points back to the lots a redemption
//! spent. The rules (how much, from which lot, under which clawback policy) are in
//! `workflow::reversals`.

use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use super::StoreResult;
use super::ledger::{ENTRY_COLUMNS, entry_from_row};
use crate::domain::Rejection;
use crate::domain::ledger::{LedgerEntry, ReverseTarget};

/// What earlier reversals took from one entry.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reversed {
    /// Points requested.
    pub(crate) requested: i64,
    /// Qualifying points taken back.
    pub(crate) qualifying: i64,
    /// Qualifying spend taken back, minor units.
    pub(crate) spend_minor: i64,
    /// Amount refunded, minor units.
    pub(crate) refund_minor: i64,
}

/// What earlier reversals of the entry `entry_id` took from it.
pub(crate) async fn reversed_so_far(
    conn: &mut PgConnection,
    entry_id: Uuid,
) -> StoreResult<Reversed> {
    let row = sqlx::query(
        "SELECT coalesce(sum(requested_points), 0)::bigint AS requested, \
                coalesce(sum(-qualifying_delta), 0)::bigint AS qualifying, \
                coalesce(sum(-spend_delta_minor), 0)::bigint AS spend, \
                coalesce(sum(refund_amount_minor), 0)::bigint AS refund \
         FROM ledger_entries WHERE reversed_entry_id = $1",
    )
    .bind(entry_id)
    .fetch_one(conn)
    .await?;
    Ok(Reversed {
        requested: row.try_get("requested")?,
        qualifying: row.try_get("qualifying")?,
        spend_minor: row.try_get("spend")?,
        refund_minor: row.try_get("refund")?,
    })
}

/// The member holding the entry a reversal targets (read before the member's lock).
pub(crate) async fn resolve_target(
    conn: &mut PgConnection,
    caller: &str,
    target: &ReverseTarget,
) -> StoreResult<Uuid> {
    let found: Option<Uuid> = match target {
        ReverseTarget::Entry(id) => {
            sqlx::query_scalar("SELECT member_id FROM ledger_entries WHERE ledger_entry_id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
        }
        ReverseTarget::OriginalRequest(request_id) => {
            sqlx::query_scalar(
                "SELECT member_id FROM ledger_entries WHERE caller = $1 AND request_id = $2",
            )
            .bind(caller)
            .bind(request_id)
            .fetch_optional(&mut *conn)
            .await?
        }
        ReverseTarget::Order {
            program_id,
            order_id,
        } => {
            sqlx::query_scalar(
                "SELECT member_id FROM ledger_entries \
                 WHERE program_id = $1 AND order_id = $2 AND kind = 1",
            )
            .bind(program_id)
            .bind(order_id)
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    found.ok_or_else(|| {
        let id = match target {
            ReverseTarget::Entry(id) => id.to_string(),
            ReverseTarget::OriginalRequest(r) => r.clone(),
            ReverseTarget::Order { order_id, .. } => order_id.clone(),
        };
        Rejection::not_found("ledger entry", id).into()
    })
}

/// The entry a reversal targets, read after the member's lock.
pub(crate) async fn target_entry(
    conn: &mut PgConnection,
    caller: &str,
    target: &ReverseTarget,
) -> StoreResult<LedgerEntry> {
    let condition = match target {
        ReverseTarget::Entry(_) => "e.ledger_entry_id = $1::uuid",
        ReverseTarget::OriginalRequest(_) => "e.caller = $2 AND e.request_id = $1::text",
        ReverseTarget::Order { .. } => {
            "e.program_id = $2::uuid AND e.order_id = $1::text AND e.kind = 1"
        }
    };
    let query = format!(
        "SELECT {ENTRY_COLUMNS} FROM ledger_entries e JOIN programs p USING (program_id) JOIN members m USING (member_id) WHERE {condition}"
    );
    let row = match target {
        ReverseTarget::Entry(id) => {
            sqlx::query(AssertSqlSafe(query.clone()))
                .bind(id)
                .fetch_one(&mut *conn)
                .await?
        }
        ReverseTarget::OriginalRequest(r) => {
            sqlx::query(AssertSqlSafe(query.clone()))
                .bind(r)
                .bind(caller)
                .fetch_one(&mut *conn)
                .await?
        }
        ReverseTarget::Order {
            program_id,
            order_id,
        } => {
            sqlx::query(AssertSqlSafe(query.clone()))
                .bind(order_id)
                .bind(program_id)
                .fetch_one(&mut *conn)
                .await?
        }
    };
    entry_from_row(&row)
}

/// The earn `entry_id`'s own lot, when the member `member_id` holds it (a merge moves lots,
/// an unmerge moves them back): its id, remaining points and whether it is pending. A
/// reversed redemption may have restored its points into a second lot of the same earn on
/// another member, which an unmerge can bring together: the fuller one counts.
pub(crate) async fn own_lot(
    conn: &mut PgConnection,
    entry_id: Uuid,
    member_id: Uuid,
) -> StoreResult<Option<(Uuid, i64, bool)>> {
    let own_lot: Option<(Uuid, i64, bool)> = sqlx::query_as(
        "SELECT point_lot_id, remaining_points, pending FROM point_lots \
         WHERE ledger_entry_id = $1 AND member_id = $2 \
         ORDER BY remaining_points DESC, point_lot_id LIMIT 1",
    )
    .bind(entry_id)
    .bind(member_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(own_lot)
}

/// A lot a redemption spent, as a reversal of it sees it at `now`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpentLot {
    /// The lot.
    pub(crate) point_lot_id: Uuid,
    /// The member holding it now.
    pub(crate) holder: Uuid,
    /// What the redemption took from it, less what earlier reversals gave back.
    pub(crate) returnable: i64,
    /// Whether it has expired.
    pub(crate) expired: bool,
}

/// The lots the redemption `entry_id` spent, in the order points go back to them:
/// latest-expiring first.
pub(crate) async fn spent_lots(
    conn: &mut PgConnection,
    entry_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Vec<SpentLot>> {
    let rows = sqlx::query(
        "SELECT s.point_lot_id, l.member_id, s.points - coalesce(( \
             SELECT sum(r.points) FROM lot_returns r JOIN ledger_entries e \
               ON e.ledger_entry_id = r.ledger_entry_id \
             WHERE r.point_lot_id = s.point_lot_id AND e.reversed_entry_id = s.ledger_entry_id \
           ), 0)::bigint AS returnable, \
           (l.expire_time IS NOT NULL AND l.expire_time <= $2) AS expired \
         FROM lot_spends s JOIN point_lots l USING (point_lot_id) \
         WHERE s.ledger_entry_id = $1 \
         ORDER BY l.expire_time DESC NULLS FIRST, l.earn_time DESC",
    )
    .bind(entry_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(SpentLot {
                point_lot_id: row.try_get("point_lot_id")?,
                holder: row.try_get("member_id")?,
                returnable: row.try_get("returnable")?,
                expired: row.try_get("expired")?,
            })
        })
        .collect()
}

/// Points a reversal gives back from one lot a redemption spent.
pub(crate) struct LotReturn {
    /// The lot the redemption spent.
    pub(crate) spent_lot: Uuid,
    /// The member holding the spent lot now.
    pub(crate) holder: Uuid,
    /// Points given back.
    pub(crate) points: i64,
    /// The spent lot has expired: the points count as expired, not available.
    pub(crate) expired: bool,
}

/// Gives `back.points` back to the lot they were spent from, or to `restored` (the reversing
/// member's own lot standing in for one another member holds, see [`restored_lot`]), and
/// records the return under the reversal entry `entry_id`.
pub(crate) async fn return_points(
    conn: &mut PgConnection,
    entry_id: Uuid,
    back: &LotReturn,
    restored: Option<Uuid>,
) -> StoreResult<()> {
    let column = if back.expired {
        "expired_points"
    } else {
        "remaining_points"
    };
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE point_lots SET {column} = {column} + $2, \
         original_points = original_points + CASE WHEN $3 THEN $2 ELSE 0 END \
         WHERE point_lot_id = $1"
    )))
    .bind(restored.unwrap_or(back.spent_lot))
    .bind(back.points)
    .bind(restored.is_some())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO lot_returns (ledger_entry_id, point_lot_id, points, restored_lot_id) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(entry_id)
    .bind(back.spent_lot)
    .bind(back.points)
    .bind(restored)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The lot of `member_id` that takes back points of `back.spent_lot`, a lot another member
/// holds: the one an earlier reversal restored the same spent lot into, else a new lot (empty,
/// the caller fills it) with the spent lot's earn entry, earn, release and expiry times, so its
/// points are spent and expire as the original's would have. When the holder was merged into
/// `member_id` by a merge not undone since, the new lot is recorded as one that merge moved:
/// the points were the holder's, and an unmerge gives them back with its other lots.
pub(crate) async fn restored_lot(
    conn: &mut PgConnection,
    member_id: Uuid,
    back: &LotReturn,
) -> StoreResult<Uuid> {
    let earlier: Option<Uuid> = sqlx::query_scalar(
        "SELECT r.restored_lot_id FROM lot_returns r \
         JOIN point_lots l ON l.point_lot_id = r.restored_lot_id \
         WHERE r.point_lot_id = $1 AND l.member_id = $2 \
         ORDER BY r.restored_lot_id LIMIT 1",
    )
    .bind(back.spent_lot)
    .bind(member_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(lot) = earlier {
        return Ok(lot);
    }
    let lot = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO point_lots (point_lot_id, member_id, ledger_entry_id, original_points, \
           remaining_points, earn_time, expire_time, release_time, pending) \
         SELECT $1, $2, ledger_entry_id, 0, 0, earn_time, expire_time, release_time, false \
         FROM point_lots WHERE point_lot_id = $3",
    )
    .bind(lot)
    .bind(member_id)
    .bind(back.spent_lot)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO member_merge_lots (merge_id, point_lot_id) \
         SELECT mm.merge_id, $1 FROM member_merges mm \
         JOIN members s ON s.member_id = mm.source_member_id \
         WHERE mm.source_member_id = $2 AND mm.target_member_id = $3 \
           AND s.status = 4 AND s.merged_into_member_id = $3 \
           AND NOT EXISTS (SELECT 1 FROM customer_unmerges u WHERE u.merge_id = mm.merge_id) \
         ON CONFLICT DO NOTHING",
    )
    .bind(lot)
    .bind(back.holder)
    .bind(member_id)
    .execute(&mut *conn)
    .await?;
    Ok(lot)
}
