//! The SQL of customer merges and unmerges from the profiles feed: which merges and unmerges
//! were applied (`customer_merges`, `customer_unmerges`), what each merge did to memberships
//! (`member_merges`) and which lots it moved (`member_merge_lots`), and the member and lot
//! changes a merge or an unmerge makes. The rules are in `workflow::merges`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreResult;
use crate::domain::ledger::EntryKind;

/// Records that the merge `merge_id` is being applied at `now`; false when it was before.
pub(crate) async fn record_customer_merge(
    conn: &mut PgConnection,
    merge_id: &str,
    source_customer_id: Uuid,
    target_customer_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let first = sqlx::query(
        "INSERT INTO customer_merges (merge_id, source_customer_id, target_customer_id, apply_time) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (merge_id) DO NOTHING",
    )
    .bind(merge_id)
    .bind(source_customer_id)
    .bind(target_customer_id)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(first != 0)
}

/// The customer's memberships not merged away (member id, program id), by program.
pub(crate) async fn live_memberships(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> StoreResult<Vec<(Uuid, Uuid)>> {
    Ok(sqlx::query_as(
        "SELECT member_id, program_id FROM members WHERE customer_id = $1 AND status <> 4 \
         ORDER BY program_id",
    )
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?)
}

/// Hands the membership to the customer `customer_id`.
pub(crate) async fn relink(
    conn: &mut PgConnection,
    member_id: Uuid,
    customer_id: Uuid,
) -> StoreResult<()> {
    sqlx::query("UPDATE members SET customer_id = $2 WHERE member_id = $1")
        .bind(member_id)
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records that `merge_id` merged `source_id` into `target_id` (`None`: only re-linked it).
pub(crate) async fn record(
    conn: &mut PgConnection,
    merge_id: &str,
    source_id: Uuid,
    target_id: Option<Uuid>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO member_merges (merge_id, source_member_id, target_member_id) \
         VALUES ($1, $2, $3)",
    )
    .bind(merge_id)
    .bind(source_id)
    .bind(target_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the source's lots with points left to the target, recording them as moved by the
/// merge.
pub(crate) async fn move_lots(
    conn: &mut PgConnection,
    source_id: Uuid,
    target_id: Uuid,
    merge_id: &str,
) -> StoreResult<()> {
    sqlx::query(
        "WITH moved AS ( \
           UPDATE point_lots SET member_id = $2 WHERE member_id = $1 AND remaining_points > 0 \
           RETURNING point_lot_id) \
         INSERT INTO member_merge_lots (merge_id, point_lot_id) \
         SELECT $3, point_lot_id FROM moved",
    )
    .bind(source_id)
    .bind(target_id)
    .bind(merge_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Gives the survivor `member_id` the merged member's tier, reached at `now`.
pub(crate) async fn take_tier(
    conn: &mut PgConnection,
    member_id: Uuid,
    tier_code: &str,
    now: DateTime<Utc>,
    next_review: Option<DateTime<Utc>>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE members SET tier_code = $2, tier_achieve_time = $3, next_review_time = $4 \
         WHERE member_id = $1",
    )
    .bind(member_id)
    .bind(tier_code)
    .bind(now)
    .bind(next_review)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks `source_id` MERGED into `target_id`.
pub(crate) async fn mark_merged(
    conn: &mut PgConnection,
    source_id: Uuid,
    target_id: Uuid,
) -> StoreResult<()> {
    sqlx::query("UPDATE members SET status = 4, merged_into_member_id = $2 WHERE member_id = $1")
        .bind(source_id)
        .bind(target_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records that the unmerge of `merge_id` is being applied at `now`; false when it was before.
pub(crate) async fn record_customer_unmerge(
    conn: &mut PgConnection,
    merge_id: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let first = sqlx::query(
        "INSERT INTO customer_unmerges (merge_id, apply_time) VALUES ($1, $2) \
         ON CONFLICT (merge_id) DO NOTHING",
    )
    .bind(merge_id)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(first != 0)
}

/// What the merge `merge_id` did to memberships: each source member and the member it was
/// merged into (`None`: only re-linked), by source.
pub(crate) async fn members_of(
    conn: &mut PgConnection,
    merge_id: &str,
) -> StoreResult<Vec<(Uuid, Option<Uuid>)>> {
    Ok(sqlx::query_as(
        "SELECT source_member_id, target_member_id FROM member_merges WHERE merge_id = $1 \
         ORDER BY source_member_id",
    )
    .bind(merge_id)
    .fetch_all(&mut *conn)
    .await?)
}

/// Hands a re-linked membership back from `from` to `to`; false when it is no longer `from`'s
/// (erased or re-linked since).
pub(crate) async fn relink_back(
    conn: &mut PgConnection,
    member_id: Uuid,
    to: Uuid,
    from: Uuid,
) -> StoreResult<bool> {
    let changed = sqlx::query(
        "UPDATE members SET customer_id = $2 WHERE member_id = $1 AND customer_id = $3",
    )
    .bind(member_id)
    .bind(to)
    .bind(from)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(changed != 0)
}

/// The lots the merge `merge_id` moved that `holder` still holds: id, remaining points,
/// pending.
pub(crate) async fn moved_lots_held(
    conn: &mut PgConnection,
    merge_id: &str,
    holder: Uuid,
) -> StoreResult<Vec<(Uuid, i64, bool)>> {
    Ok(sqlx::query_as(
        "SELECT l.point_lot_id, l.remaining_points, l.pending \
         FROM member_merge_lots mm JOIN point_lots l USING (point_lot_id) \
         WHERE mm.merge_id = $1 AND l.member_id = $2",
    )
    .bind(merge_id)
    .bind(holder)
    .fetch_all(&mut *conn)
    .await?)
}

/// The qualifying points and spend the merge `merge_id` moved out of `source_id` (its
/// MERGE_OUT entry).
pub(crate) async fn merged_out_qualifying(
    conn: &mut PgConnection,
    source_id: Uuid,
    merge_id: &str,
) -> StoreResult<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT coalesce(sum(-qualifying_delta), 0)::bigint, \
                coalesce(sum(-spend_delta_minor), 0)::bigint \
         FROM ledger_entries WHERE member_id = $1 AND kind = $2 \
           AND details -> 'Merge' ->> 'merge_id' = $3",
    )
    .bind(source_id)
    .bind(EntryKind::MergeOut.code())
    .bind(merge_id)
    .fetch_one(&mut *conn)
    .await?)
}

/// Moves the lots the merge `merge_id` moved, as far as `from` still holds them, to `to`.
pub(crate) async fn move_lots_back(
    conn: &mut PgConnection,
    from: Uuid,
    to: Uuid,
    merge_id: &str,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE point_lots SET member_id = $2 \
         WHERE member_id = $1 AND point_lot_id IN ( \
           SELECT point_lot_id FROM member_merge_lots WHERE merge_id = $3)",
    )
    .bind(from)
    .bind(to)
    .bind(merge_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Makes the unmerged member ACTIVE again under its own customer.
pub(crate) async fn restore(
    conn: &mut PgConnection,
    member_id: Uuid,
    customer_id: Uuid,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE members SET status = 1, status_reason = '', merged_into_member_id = NULL, \
         customer_id = $2 WHERE member_id = $1",
    )
    .bind(member_id)
    .bind(customer_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
