//! Birth months from the profiles feed (the birthday-month earning bonus).

use std::sync::LazyLock;

use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use super::StoreResult;

/// The customer's birth month (1–12), when profiles told us.
pub async fn month(conn: &mut PgConnection, customer_id: Uuid) -> StoreResult<Option<u32>> {
    let month: Option<i16> = sqlx::query_scalar(AssertSqlSafe(MONTH_OF.as_str()))
        .bind(customer_id)
        .fetch_optional(conn)
        .await?;
    Ok(month_from(month))
}

/// The query of the birth month of the customer `customer` (an SQL expression), as a
/// scalar subquery can read it too (`members::lock_group`).
pub(crate) fn month_of(customer: &str) -> String {
    format!("SELECT birth_month FROM customer_birthdays WHERE customer_id = {customer}")
}

/// [`month_of`] over `$1`, made once.
static MONTH_OF: LazyLock<String> = LazyLock::new(|| month_of("$1"));

/// A stored birth month, as [`month`] answers it.
pub(crate) fn month_from(stored: Option<i16>) -> Option<u32> {
    stored.and_then(|m| u32::try_from(m).ok())
}

/// Records (or, with `None`, forgets) the customer's birth month.
pub async fn set(
    conn: &mut PgConnection,
    customer_id: Uuid,
    month: Option<u32>,
) -> StoreResult<()> {
    match month
        .and_then(|m| i16::try_from(m).ok())
        .filter(|m| (1..=12).contains(m))
    {
        Some(m) => {
            sqlx::query(
                "INSERT INTO customer_birthdays (customer_id, birth_month) VALUES ($1, $2) \
                 ON CONFLICT (customer_id) DO UPDATE SET birth_month = EXCLUDED.birth_month",
            )
            .bind(customer_id)
            .bind(m)
            .execute(conn)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM customer_birthdays WHERE customer_id = $1")
                .bind(customer_id)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

/// Forgets the customers' birth months.
pub(crate) async fn forget(conn: &mut PgConnection, customer_ids: &[Uuid]) -> StoreResult<()> {
    sqlx::query("DELETE FROM customer_birthdays WHERE customer_id = ANY($1)")
        .bind(customer_ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
