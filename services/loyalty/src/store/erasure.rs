//! The SQL of erasure (right to be forgotten): erased customers (`erased_customers`, so they
//! cannot enrol again) and their memberships, unlinked from them. The use case is in
//! `workflow::customers`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::StoreResult;

/// Records that the customer was erased at `now` (once).
pub(crate) async fn record(
    conn: &mut PgConnection,
    customer_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO erased_customers (customer_id, erase_time) VALUES ($1, $2) \
         ON CONFLICT (customer_id) DO NOTHING",
    )
    .bind(customer_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Whether the customer was erased.
pub(crate) async fn is_erased(conn: &mut PgConnection, customer_id: Uuid) -> StoreResult<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM erased_customers WHERE customer_id = $1)")
            .bind(customer_id)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// The memberships of the customers (member id, status code), by member id.
pub(crate) async fn memberships(
    conn: &mut PgConnection,
    customer_ids: &[Uuid],
) -> StoreResult<Vec<(Uuid, i16)>> {
    Ok(sqlx::query_as(
        "SELECT member_id, status FROM members WHERE customer_id = ANY($1) ORDER BY member_id",
    )
    .bind(customer_ids)
    .fetch_all(&mut *conn)
    .await?)
}

/// Unlinks the membership from its customer, for good.
pub(crate) async fn anonymise(conn: &mut PgConnection, member_id: Uuid) -> StoreResult<()> {
    sqlx::query("UPDATE members SET customer_id = NULL, anonymized = true WHERE member_id = $1")
        .bind(member_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
