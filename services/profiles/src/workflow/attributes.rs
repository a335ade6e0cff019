//! Attribute catalog use cases: declare (at most 500), read one, list.

use custops_common::outbox;

use super::Context;
use crate::domain::AttributeDefinition;
use crate::error::{ProfilesError, Result};
use crate::events;
use crate::store::attributes;

/// Most declared attributes.
const MAX_ATTRIBUTES: i64 = 500;

/// Declares an attribute (created now, by the service clock); an identical re-declaration
/// returns the existing one.
#[tracing::instrument(skip_all)]
pub async fn create(ctx: &Context, def: AttributeDefinition) -> Result<AttributeDefinition> {
    let mut tx = ctx.pool.begin().await?;
    attributes::lock(&mut tx).await?;
    if let Some(existing) = attributes::get(&mut tx, &def.name).await? {
        let same = existing.value_type == def.value_type
            && existing.description == def.description
            && existing.contains_pii == def.contains_pii;
        return if same {
            Ok(existing)
        } else {
            Err(ProfilesError::AttributeExists)
        };
    }
    if attributes::count(&mut tx).await? >= MAX_ATTRIBUTES {
        return Err(ProfilesError::AttributeCatalogFull);
    }
    let def = AttributeDefinition {
        create_time: ctx.now(),
        ..def
    };
    attributes::insert(&mut tx, &def).await?;
    outbox::append(&mut tx, events::attribute_created(&def)).await?;
    tx.commit().await?;
    Ok(def)
}

/// One attribute definition.
pub async fn get(ctx: &Context, name: &str) -> Result<AttributeDefinition> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    attributes::get(&mut conn, name)
        .await?
        .ok_or(ProfilesError::NotFound {
            resource: "attribute definition",
            id: name.to_owned(),
        })
}

/// Up to `limit` definitions named after `after`, by name.
pub async fn list(
    ctx: &Context,
    after: Option<String>,
    limit: i64,
) -> Result<Vec<AttributeDefinition>> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    attributes::list(&mut conn, after, limit).await
}
