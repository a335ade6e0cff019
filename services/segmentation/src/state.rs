//! What every handler and background task of the service shares.

use std::sync::Arc;

use custops_common::clock::Clock;
use custops_common::paging::PageTokens;
use sqlx::PgPool;

/// The service's shared state.
#[derive(Debug)]
pub struct AppState {
    pub pool: PgPool,
    pub clock: Arc<dyn Clock>,
    pub page_tokens: PageTokens,
    /// The membership lookup caches.
    pub lookups: Arc<crate::lookups::Lookups>,
}
