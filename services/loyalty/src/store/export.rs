//! The SQL of a data-subject export: which memberships hold a customer's data. The export
//! itself (one consistent snapshot of everything) is `workflow::export`.

use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreResult;

/// The memberships linked to `customer_id` (whatever their status: a merged-away customer's
/// MERGED membership still names it) and the memberships merged into those (through any chain
/// of merges), by member id; none for an erased customer (its memberships are anonymised).
pub(crate) async fn memberships(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> StoreResult<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "WITH RECURSIVE linked AS ( \
           SELECT member_id FROM members \
           WHERE customer_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM erased_customers WHERE customer_id = $1) \
           UNION \
           SELECT m.member_id FROM members m JOIN linked l ON m.merged_into_member_id = l.member_id \
           WHERE m.status = 4) \
         SELECT member_id FROM linked ORDER BY member_id",
    )
    .bind(customer_id)
    .fetch_all(&mut *conn)
    .await?)
}
