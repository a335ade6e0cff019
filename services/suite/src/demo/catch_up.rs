//! How far segmentation has followed the profiles feed, reported while it is behind: after a
//! bulk load (the demo's 2,000 customers and their activities) it takes minutes to apply
//! everything, and segments, RFM and lifecycle look empty or wrong until it has.
//!
//! The position of each side is what the runtime already keeps: profiles' feed head
//! (`EventFeedService/GetFeedPosition`) and segmentation's cursor in that feed
//! (`feed_cursors`, feed `profiles`, in segmentation's schema). Segmentation counts as behind
//! when it has not yet applied what profiles had committed a whole interval earlier, so the
//! milliseconds any event takes to travel never show.

use std::time::Duration;

use anyhow::Context;
use custops_common::auth::AuthSettings;
use custops_common::client::{ClientBuilder, ServiceChannel};
use custops_common::config::DatabaseSettings;
use custops_contracts::custops::common::v1::GetFeedPositionRequest;
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The feed segmentation's cursor follows (its consumer's name).
const PROFILES_FEED: &str = "profiles";

/// How often `custops dev` looks.
pub const WATCH_EVERY: Duration = Duration::from_secs(5);

/// Where the two sides are, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions {
    /// The last profiles event segmentation has applied.
    pub applied: i64,
    /// The last event profiles has committed.
    pub head: i64,
}

/// Reads both positions.
#[derive(Debug, Clone)]
pub struct Follower {
    profiles: EventFeedServiceClient<ServiceChannel>,
    segmentation: PgPool,
}

impl Follower {
    /// Reaches profiles' feed at `profiles_url` (with a token when `auth` is on) and
    /// segmentation's database (one connection).
    pub async fn connect(
        profiles_url: &str,
        auth: &AuthSettings,
        segmentation: &DatabaseSettings,
    ) -> anyhow::Result<Self> {
        let channel = ClientBuilder::new(profiles_url.to_owned(), "custops-dev")
            .auth(auth, &["profiles.events.read"])
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut database = segmentation.clone();
        database.max_connections = 1;
        let segmentation = custops_common::db::connect(&database)
            .await
            .context("Failed to reach segmentation's database")?;
        Ok(Self {
            profiles: EventFeedServiceClient::new(channel),
            segmentation,
        })
    }

    /// Both positions now.
    pub async fn positions(&mut self) -> anyhow::Result<Positions> {
        let head = self
            .profiles
            .get_feed_position(GetFeedPositionRequest {})
            .await
            .context("Failed to read profiles' feed position")?
            .into_inner()
            .latest_sequence;
        let applied = custops_common::consumer::load_cursor(&self.segmentation, PROFILES_FEED)
            .await
            .context("Failed to read segmentation's cursor")?;
        Ok(Positions { applied, head })
    }
}

/// What a look found worth saying.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// Segmentation is behind: where it is, how fast it goes, and how long it will take.
    Behind {
        /// Where both sides are.
        positions: Positions,
        /// Events applied per second since the last look.
        per_second: f64,
        /// At that pace, how long until it has applied the head (`None` while it stands).
        left: Option<Duration>,
    },
    /// Segmentation has applied everything profiles had committed an interval ago.
    CaughtUp {
        /// Its position.
        applied: i64,
    },
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Report::Behind {
                positions,
                per_second,
                left,
            } => {
                let Positions { applied, head } = positions;
                let percent = if *head > 0 {
                    applied.saturating_mul(100) / head
                } else {
                    100
                };
                write!(
                    f,
                    "segmentation is catching up with the profiles feed: at {applied} of \
                     {head} ({percent}%), {per_second:.0} events/s"
                )?;
                match left {
                    Some(left) => write!(f, ", about {} s left", left.as_secs().max(1)),
                    None => write!(f, ", not moving since the last look"),
                }
            }
            Report::CaughtUp { applied } => write!(
                f,
                "segmentation has caught up with the profiles feed (at {applied})"
            ),
        }
    }
}

/// Turns looks taken an interval apart into reports: quiet while segmentation keeps up, a
/// report at every look while it is behind, and one when it has caught up.
#[derive(Debug, Default)]
pub struct Watch {
    last: Option<Positions>,
    behind: bool,
}

impl Watch {
    /// Takes the positions seen now, `since` after the last look.
    pub fn look(&mut self, now: Positions, since: Duration) -> Option<Report> {
        let last = self.last.replace(now)?;
        if now.applied < last.head {
            self.behind = true;
            let per_second = (now.applied - last.applied).max(0) as f64 / since.as_secs_f64();
            let left = (per_second > 0.0)
                .then(|| Duration::from_secs_f64((now.head - now.applied) as f64 / per_second));
            Some(Report::Behind {
                positions: now,
                per_second,
                left,
            })
        } else if self.behind {
            self.behind = false;
            Some(Report::CaughtUp {
                applied: now.applied,
            })
        } else {
            None
        }
    }
}

/// Logs segmentation's progress through the profiles feed every `every` until `stop`; a look
/// that fails (profiles or the database not reachable yet) is logged at debug and skipped.
pub async fn watch(mut follower: Follower, every: Duration, stop: CancellationToken) {
    let mut watch = Watch::default();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match follower.positions().await {
            Ok(positions) => {
                if let Some(report) = watch.look(positions, every) {
                    tracing::info!(
                        applied = positions.applied,
                        head = positions.head,
                        "{report}"
                    );
                }
            }
            Err(error) => tracing::debug!(
                error = format!("{error:#}"),
                "could not see how far segmentation is"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(5);

    fn at(applied: i64, head: i64) -> Positions {
        Positions { applied, head }
    }

    /// The reports of looks at these positions, in order, rendered.
    fn check(looks: &[Positions], expected: &[Option<&str>]) {
        let mut watch = Watch::default();
        let reports: Vec<Option<String>> = looks
            .iter()
            .map(|now| watch.look(*now, EVERY).map(|report| report.to_string()))
            .collect();
        let expected: Vec<Option<String>> = expected
            .iter()
            .map(|line| line.map(str::to_owned))
            .collect();
        assert_eq!(reports, expected, "{looks:?}");
    }

    #[test]
    fn a_feed_kept_up_with_says_nothing() {
        // Events in flight at a look (applied < head) are applied by the next one.
        check(
            &[at(0, 0), at(10, 12), at(12, 30), at(30, 31), at(31, 31)],
            &[None, None, None, None, None],
        );
    }

    #[test]
    fn a_backlog_is_reported_at_every_look_until_it_is_applied() {
        check(
            &[
                at(0, 0),
                at(100, 17_000),
                at(1_100, 17_000),
                at(1_100, 17_000),
                at(16_990, 17_010),
                at(17_010, 17_010),
                at(17_020, 17_020),
            ],
            &[
                None,
                // A load that arrived within the last interval is not a backlog yet.
                None,
                Some(
                    "segmentation is catching up with the profiles feed: at 1100 of 17000 \
                     (6%), 200 events/s, about 79 s left",
                ),
                Some(
                    "segmentation is catching up with the profiles feed: at 1100 of 17000 \
                     (6%), 0 events/s, not moving since the last look",
                ),
                Some(
                    "segmentation is catching up with the profiles feed: at 16990 of 17010 \
                     (99%), 3178 events/s, about 1 s left",
                ),
                Some("segmentation has caught up with the profiles feed (at 17010)"),
                None,
            ],
        );
    }
}
