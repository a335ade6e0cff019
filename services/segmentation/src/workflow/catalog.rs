//! The field catalog: the built-in fields with the attributes and loyalty tiers learnt from
//! the feeds.

use crate::domain::catalog::Catalog;
use crate::error::Result;
use crate::state::AppState;
use crate::store::catalog::load_catalog;

/// The catalog as it stands.
pub async fn catalog(state: &AppState) -> Result<Catalog> {
    let mut conn = custops_common::db::read(&state.pool).await?;
    Ok(load_catalog(&mut conn).await?)
}
