//! Consumers of other services' feeds: `profiles` applies the profiles feed's merges,
//! unmerges and erasures to feedback's rows.

pub mod profiles;

use std::sync::Arc;

use custops_common::client::ClientBuilder;
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::domain::Clock;

/// Follows profiles when its URL is configured (`CUSTOPS_PROFILES_URL`).
pub fn start(
    settings: &ServiceSettings,
    pool: PgPool,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    if !settings.clients.peers.contains_key(&ServiceKind::Profiles) {
        tracing::info!("CUSTOPS_PROFILES_URL not set: not following the profiles feed");
        return;
    }
    match ClientBuilder::for_peer(
        &settings.clients,
        ServiceKind::Profiles,
        &["profiles.events.read"],
    )
    .and_then(ClientBuilder::build)
    {
        Ok(channel) => profiles::follow(pool, channel, clock, shutdown),
        Err(error) => tracing::warn!(%error, "cannot follow the profiles feed"),
    }
}
