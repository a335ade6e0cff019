//! Loads the catalog: built-in fields plus what the feeds taught (custom attribute
//! definitions, loyalty tier codes and custom event types) and the computed traits defined.

use sqlx::PgConnection;

use crate::domain::catalog::{AttributeDefinition, AttributeType, Catalog};

/// The built-in catalog plus `attribute_definitions` and `loyalty_tiers`.
pub async fn load_catalog(conn: &mut PgConnection) -> Result<Catalog, sqlx::Error> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT name, value_type, display_name, description FROM attribute_definitions ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let definitions = rows
        .into_iter()
        .filter_map(|(name, value_type, display_name, description)| {
            // A type this build does not know cannot be compared safely: leave it out.
            let Some(value_type) = AttributeType::from_column(&value_type) else {
                tracing::warn!(attribute = %name, %value_type, "unknown attribute type; not in the catalog");
                return None;
            };
            Some(AttributeDefinition {
                name,
                value_type,
                display_name,
                description,
            })
        });
    let tiers: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT tier FROM loyalty_tiers ORDER BY tier")
            .fetch_all(&mut *conn)
            .await?;
    let event_types = crate::store::custom_events::event_types(&mut *conn).await?;
    let computed = crate::store::computed::all(&mut *conn).await?;
    Ok(Catalog::builtin()
        .with_attributes(definitions)
        .with_loyalty_tiers(tiers)
        .with_event_types(event_types)
        .with_computed_traits(computed.iter().map(|t| t.field())))
}
