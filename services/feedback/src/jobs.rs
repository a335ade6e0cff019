//! Feedback's background work: the survey reward worker (`rewards`), which pays rewards
//! through loyalty from the durable queue in `responses`, the pruning of idempotency keys
//! older than `custops_common::idempotency::RETENTION`, and the metrics sampler (`gauges`).

pub mod gauges;
pub mod rewards;

use std::sync::Arc;
use std::time::Duration;

use custops_common::client::ClientBuilder;
use custops_common::config::ServiceSettings;
use custops_common::idempotency;
use custops_common::service::ServiceKind;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::domain::Clock;

/// Scope feedback asks for on its calls to loyalty.
const LOYALTY_SCOPES: &[&str] = &["loyalty.points.write"];

/// How often expired idempotency keys are pruned in production.
pub const PRUNE_KEYS_EVERY: Duration = Duration::from_secs(60 * 60);

/// Starts the key pruner, every `prune_keys_every` on `clock`'s time, and the reward worker
/// when loyalty's address is configured; without it rewards stay PENDING (durably queued)
/// until a feedback instance that can reach loyalty runs. Both stop with `stop`.
pub fn start(
    settings: &ServiceSettings,
    pool: PgPool,
    clock: Arc<dyn Clock>,
    options: rewards::WorkerOptions,
    prune_keys_every: Duration,
    stop: CancellationToken,
) {
    idempotency::spawn_pruner(
        pool.clone(),
        clock.clone(),
        idempotency::RETENTION,
        prune_keys_every,
        stop.clone(),
    );
    gauges::start(pool.clone(), clock.clone(), stop.clone());
    match ClientBuilder::for_peer(&settings.clients, ServiceKind::Loyalty, LOYALTY_SCOPES)
        .and_then(ClientBuilder::build)
    {
        Ok(channel) => {
            // Marked as feedback's work: in a process hosting several services (`custops
            // dev`) its spans still carry feedback's service.name.
            tokio::spawn(custops_common::telemetry::in_service(
                ServiceKind::Feedback,
                rewards::run(pool, channel, clock, options, stop),
            ));
        }
        Err(error) => {
            tracing::warn!(%error, "survey rewards will queue until loyalty is reachable");
        }
    }
}
