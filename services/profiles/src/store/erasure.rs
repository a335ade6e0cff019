//! What an erasure does to every table of the schema, in one place: activities folded into
//! anonymous daily aggregates (no customer id), identities, consents and the consent trail
//! deleted, merge records stripped of snapshots and free text, customers left as tombstones.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Result;

/// Erases every customer of `family` at `now`.
pub(crate) async fn erase_family(
    conn: &mut PgConnection,
    family: &[Uuid],
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO erased_activity_aggregates (day, kind, channel, currency, activity_count, amount_minor) \
         SELECT date_trunc('day', occur_time)::date, kind, channel, coalesce(currency, ''), count(*), coalesce(sum(amount_minor), 0) \
         FROM activities WHERE customer_id = ANY($1) GROUP BY 1, 2, 3, 4 \
         ON CONFLICT (day, kind, channel, currency) DO UPDATE SET \
         activity_count = erased_activity_aggregates.activity_count + excluded.activity_count, \
         amount_minor = erased_activity_aggregates.amount_minor + excluded.amount_minor",
    )
    .bind(family)
    .execute(&mut *conn)
    .await?;
    for statement in [
        "DELETE FROM activities WHERE customer_id = ANY($1)",
        "DELETE FROM identities WHERE customer_id = ANY($1)",
        "DELETE FROM consents WHERE customer_id = ANY($1)",
        "DELETE FROM consent_changes WHERE customer_id = ANY($1)",
        "UPDATE merges SET snapshot = NULL, source_before = NULL, target_before = NULL, target_after = NULL, \
         merge_reason = '', unmerge_reason = '' WHERE source_customer_id = ANY($1) OR target_customer_id = ANY($1)",
    ] {
        sqlx::query(statement)
            .bind(family)
            .execute(&mut *conn)
            .await?;
    }
    // The tombstones keep only id, state and times.
    sqlx::query(
        "UPDATE customers SET state = 4, erase_time = $2, update_time = $2, delete_time = NULL, \
         version = version + 1, display_name = '', given_name = '', family_name = '', birth_date = NULL, \
         gender = 0, income_band = 0, occupation = '', education_level = 0, country_code = '', \
         region = '', city = '', postal_code = '', interests = '{}', lifestyle_tags = '{}', tags = '{}', \
         custom_attributes = '{}', channel_preferences = '{}' WHERE customer_id = ANY($1)",
    )
    .bind(family)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
