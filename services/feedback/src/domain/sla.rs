//! The SLA policy: first-response and resolution targets per severity (configurable through
//! UpdateSlaPolicy), and the severity of automatic follow-ups.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::ticket::Severity;

/// The shortest target the contract allows (`SeveritySlaTarget`), seconds.
pub const MIN_TARGET_SECS: i64 = 60;
/// The longest first-response target, seconds (90 days).
pub const MAX_FIRST_RESPONSE_SECS: i64 = 90 * 24 * 3600;
/// The longest resolution target, seconds (365 days).
pub const MAX_RESOLUTION_SECS: i64 = 365 * 24 * 3600;

/// Targets of one severity, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeverityTarget {
    /// The severity.
    pub severity: Severity,
    /// First-response target, seconds.
    pub first_response_secs: i64,
    /// Resolution target, seconds.
    pub resolution_secs: i64,
}

/// The policy in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaPolicy {
    /// One target per severity, in severity order.
    pub targets: Vec<SeverityTarget>,
    /// Severity of follow-up tickets.
    pub follow_up_severity: Severity,
    /// When it last changed (None: the defaults).
    pub update_time: Option<DateTime<Utc>>,
    /// Version (0: the defaults).
    pub version: i64,
}

impl Default for SlaPolicy {
    /// The defaults documented on `TicketSeverity`.
    fn default() -> Self {
        const H: i64 = 3600;
        let t = |severity, first_response_secs, resolution_secs| SeverityTarget {
            severity,
            first_response_secs,
            resolution_secs,
        };
        Self {
            targets: vec![
                t(Severity::Low, 24 * H, 7 * 24 * H),
                t(Severity::Medium, 4 * H, 72 * H),
                t(Severity::High, H, 24 * H),
                t(Severity::Critical, 15 * 60, 4 * H),
            ],
            follow_up_severity: Severity::Medium,
            update_time: None,
            version: 0,
        }
    }
}

/// Due times of a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueTimes {
    /// First response due.
    pub respond: DateTime<Utc>,
    /// Resolution due.
    pub resolve: DateTime<Utc>,
}

impl SlaPolicy {
    /// The target of `severity` (the defaults' if the policy lacks it, which validation
    /// prevents).
    pub fn target(&self, severity: Severity) -> SeverityTarget {
        self.targets
            .iter()
            .find(|t| t.severity == severity)
            .copied()
            .or_else(|| {
                SlaPolicy::default()
                    .targets
                    .into_iter()
                    .find(|t| t.severity == severity)
            })
            .unwrap_or(SeverityTarget {
                severity,
                first_response_secs: 3600,
                resolution_secs: 86400,
            })
    }

    /// Due times of a ticket of `severity` opened (or reopened) at `from`.
    pub fn due_times(&self, severity: Severity, from: DateTime<Utc>) -> DueTimes {
        let t = self.target(severity);
        DueTimes {
            respond: from + Duration::seconds(t.first_response_secs),
            resolve: from + Duration::seconds(t.resolution_secs),
        }
    }

    /// The opaque etag of this version.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}
