//! The lookup caches' listener: follows the membership notifications Postgres delivers after
//! each commit that changed memberships (`store::memberships::notify_*`) into this replica's
//! caches ([`Lookups::apply`]), and moves every replica to fresh keys when notifications may
//! have been lost (a reconnect) or Redis comes back after a missed write-through.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use crate::lookups::Lookups;
use crate::store::memberships;

/// Wait before reconnecting a failed listener.
const LISTEN_RETRY: Duration = Duration::from_secs(1);
/// How often a dirty Redis is checked for being back.
const HEAL_EVERY: Duration = Duration::from_millis(250);

/// Follows membership notifications until `shutdown`, applying each to `lookups`. Started
/// once per process; `ready` is cancelled once the first LISTEN is in place (tests wait for it).
pub async fn listen(
    lookups: Arc<Lookups>,
    pool: PgPool,
    listen_options: PgConnectOptions,
    shutdown: CancellationToken,
    ready: CancellationToken,
) {
    // The LISTEN connection is its own, straight to Postgres (`db::direct_options`): it
    // needs a session for good, which neither the requests' pool nor a pooler would give.
    let listen_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(listen_options);
    let mut first = true;
    while !shutdown.is_cancelled() {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = follow(&lookups, &pool, &listen_pool, &shutdown, &ready, first) => outcome,
        };
        first = false;
        if let Err(error) = outcome {
            tracing::warn!(error = %error, "membership listener failed; reconnecting");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(LISTEN_RETRY) => {}
        }
    }
}

/// One listener connection's life: LISTEN, catch up, then apply notifications until the
/// connection drops.
async fn follow(
    lookups: &Lookups,
    pool: &PgPool,
    listen_pool: &PgPool,
    shutdown: &CancellationToken,
    ready: &CancellationToken,
    first: bool,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(listen_pool).await?;
    listener.listen(memberships::CHANNEL).await?;
    if first {
        lookups.refresh_epoch(pool).await?;
    } else {
        // Notifications may have been lost while disconnected: move every replica to fresh
        // keys rather than risk serving a stale membership.
        let mut tx = pool.begin().await?;
        memberships::bump_epoch(&mut tx).await?;
        tx.commit().await?;
        lookups.refresh_epoch(pool).await?;
    }
    ready.cancel();
    let mut heal = tokio::time::interval(HEAL_EVERY);
    loop {
        // `try_recv` reports a dropped connection as `None` instead of reconnecting silently.
        let notification = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = heal.tick() => {
                if let Err(error) = lookups.heal(pool).await {
                    tracing::warn!(error = %error, "failed to move the cache epoch");
                }
                continue;
            }
            n = listener.try_recv() => n?,
        };
        let Some(notification) = notification else {
            return Err(sqlx::Error::Protocol(
                "listener connection closed".to_owned(),
            ));
        };
        if let Err(error) = lookups.apply(pool, notification.payload()).await {
            tracing::warn!(error = %error, "failed to refresh a cached membership");
        }
    }
}
