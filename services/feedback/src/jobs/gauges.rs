//! Samples feedback's gauges while metrics are exported (`custops_common::metrics`): survey
//! rewards waiting for delivery by state and the age of the oldest, and open tickets past
//! their SLA by severity. Every known state and severity is recorded each time, zero included,
//! so a backlog that drains reads zero rather than its last value.

use std::sync::Arc;

use custops_common::metrics::{self, Gauge, KeyValue};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::domain::Clock;
use crate::store::gauges;

/// Ticket severities, as stored.
const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// Starts the sampler (nothing happens when metrics are not exported).
pub fn start(pool: PgPool, clock: Arc<dyn Clock>, stop: CancellationToken) {
    metrics::spawn_sampler(
        stop,
        FeedbackGauges {
            pool,
            clock,
            waiting: metrics::SURVEY_REWARDS_WAITING.gauge(),
            oldest: metrics::SURVEY_REWARDS_OLDEST_WAITING_AGE.gauge(),
            breached: metrics::TICKETS_SLA_BREACHED.gauge(),
        },
    );
}

struct FeedbackGauges {
    pool: PgPool,
    clock: Arc<dyn Clock>,
    waiting: Gauge<f64>,
    oldest: Gauge<f64>,
    breached: Gauge<f64>,
}

impl metrics::Sampler for FeedbackGauges {
    async fn sample(&self) -> anyhow::Result<()> {
        let mut conn = custops_common::db::read(&self.pool).await?;
        let now = self.clock.now();
        let rewards = gauges::waiting_rewards(&mut conn).await?;
        for (state, count) in [("pending", rewards.pending), ("retrying", rewards.retrying)] {
            self.waiting.record(
                count as f64,
                &[KeyValue::new("custops.reward.state", state)],
            );
        }
        let age = rewards
            .oldest_submit_time
            .map_or(0.0, |submitted| (now - submitted).as_seconds_f64().max(0.0));
        self.oldest.record(age, &[]);
        let by_severity = gauges::breached_tickets(&mut conn, now).await?;
        for severity in SEVERITIES {
            let count = by_severity
                .iter()
                .find(|(s, _)| s == severity)
                .map_or(0, |(_, n)| *n);
            self.breached.record(
                count as f64,
                &[KeyValue::new("custops.ticket.severity", severity)],
            );
        }
        Ok(())
    }
}
