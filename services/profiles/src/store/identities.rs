//! The `identities` table: who holds which (type, namespace, value).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::Identity;
use crate::error::Result;

/// Attaches `identity` to `customer_id`; `false` when another customer holds it (then ask
/// [`holder`] in the same transaction: the insert waited for a concurrent holder's commit).
/// The conflict is not an error, so the transaction stays usable.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    customer_id: Uuid,
    identity: &Identity,
    now: DateTime<Utc>,
) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO identities (identity_type, namespace, value, customer_id, create_time) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (identity_type, namespace, value) DO NOTHING",
    )
    .bind(identity.kind.number())
    .bind(&identity.namespace)
    .bind(&identity.value)
    .bind(customer_id)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Detaches `identity` from whoever holds it.
pub(crate) async fn delete(conn: &mut PgConnection, identity: &Identity) -> Result<()> {
    sqlx::query(
        "DELETE FROM identities WHERE identity_type = $1 AND namespace = $2 AND value = $3",
    )
    .bind(identity.kind.number())
    .bind(&identity.namespace)
    .bind(&identity.value)
    .execute(conn)
    .await?;
    Ok(())
}

/// The customer holding an identity, if any.
pub(crate) async fn holder(conn: &mut PgConnection, identity: &Identity) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT customer_id FROM identities WHERE identity_type = $1 AND namespace = $2 AND value = $3",
    )
    .bind(identity.kind.number())
    .bind(&identity.namespace)
    .bind(&identity.value)
    .fetch_optional(conn)
    .await?)
}

/// Moves every identity of `from` to `to` (a merge).
pub(crate) async fn move_all(conn: &mut PgConnection, from: Uuid, to: Uuid) -> Result<()> {
    sqlx::query("UPDATE identities SET customer_id = $2 WHERE customer_id = $1")
        .bind(from)
        .bind(to)
        .execute(conn)
        .await?;
    Ok(())
}

/// Gives `identity` back to `to` if `from` still holds it (an unmerge).
pub(crate) async fn move_back(
    conn: &mut PgConnection,
    identity: &Identity,
    to: Uuid,
    from: Uuid,
) -> Result<()> {
    sqlx::query(
        "UPDATE identities SET customer_id = $4 WHERE identity_type = $1 AND namespace = $2 \
         AND value = $3 AND customer_id = $5",
    )
    .bind(identity.kind.number())
    .bind(&identity.namespace)
    .bind(&identity.value)
    .bind(to)
    .bind(from)
    .execute(conn)
    .await?;
    Ok(())
}
