//! Tickets: complaints and closed-loop follow-ups, their status workflow and SLA state.
//!
//! Workflow: OPEN → IN_PROGRESS → RESOLVED → CLOSED, with RESOLVED or CLOSED → OPEN (reopen);
//! a RESOLVED follow-up outcome also resolves an OPEN follow-up. Anything else is refused
//! with INVALID_TICKET_TRANSITION.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Rejection;
use super::response::{FollowUpTrigger, Scores};
use super::survey::Touchpoint;

/// Ticket status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Opened, not worked on yet.
    Open,
    /// Being worked on.
    InProgress,
    /// Resolved.
    Resolved,
    /// Closed.
    Closed,
}

impl Status {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::InProgress => "in_progress",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => Status::Open,
            "in_progress" => Status::InProgress,
            "resolved" => Status::Resolved,
            "closed" => Status::Closed,
            _ => return None,
        })
    }

    /// Whether SLA clocks run (OPEN or IN_PROGRESS).
    pub fn is_active(self) -> bool {
        matches!(self, Status::Open | Status::InProgress)
    }
}

/// Severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Minor.
    Low,
    /// Ordinary.
    Medium,
    /// Serious.
    High,
    /// Safety, legal or PR risk.
    Critical,
}

impl Severity {
    /// Every severity, in order.
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// Complaint or follow-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Opened by OpenTicket.
    Complaint,
    /// Opened by a detractor or low-CSAT response.
    FollowUp,
}

impl Kind {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Complaint => "complaint",
            Kind::FollowUp => "follow_up",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "complaint" => Some(Kind::Complaint),
            "follow_up" => Some(Kind::FollowUp),
            _ => None,
        }
    }
}

/// A status-changing action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// OPEN → IN_PROGRESS.
    Start,
    /// IN_PROGRESS → RESOLVED.
    Resolve,
    /// RESOLVED → CLOSED.
    Close,
    /// RESOLVED or CLOSED → OPEN.
    Reopen,
}

impl Transition {
    /// The status after the transition from `from`, or the refusal.
    pub fn apply(self, from: Status) -> Result<Status, Rejection> {
        let to = match (self, from) {
            (Transition::Start, Status::Open) => Status::InProgress,
            (Transition::Resolve, Status::InProgress) => Status::Resolved,
            (Transition::Close, Status::Resolved) => Status::Closed,
            (Transition::Reopen, Status::Resolved | Status::Closed) => Status::Open,
            (transition, from) => {
                return Err(Rejection::InvalidTicketTransition { transition, from });
            }
        };
        Ok(to)
    }
}

/// How a ticket was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolutionCode {
    /// Fixed.
    Fixed,
    /// Compensated.
    Compensated,
    /// Explained.
    Explained,
    /// Duplicate.
    Duplicate,
    /// Not actionable.
    NotActionable,
}

impl ResolutionCode {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolutionCode::Fixed => "fixed",
            ResolutionCode::Compensated => "compensated",
            ResolutionCode::Explained => "explained",
            ResolutionCode::Duplicate => "duplicate",
            ResolutionCode::NotActionable => "not_actionable",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "fixed" => ResolutionCode::Fixed,
            "compensated" => ResolutionCode::Compensated,
            "explained" => ResolutionCode::Explained,
            "duplicate" => ResolutionCode::Duplicate,
            "not_actionable" => ResolutionCode::NotActionable,
            _ => return None,
        })
    }
}

/// Largest compensation amount, in minor units: 10^15, the bound every custops service puts
/// on money a request carries (`custops.common.v1.Money`), so any total of them fits int64.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;

/// Money in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Amount in minor units, 0 to [`MAX_AMOUNT_MINOR`].
    pub amount_minor: i64,
    /// ISO-4217 code.
    pub currency: String,
}

/// A resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// Code.
    pub code: ResolutionCode,
    /// Note.
    pub note: String,
    /// Compensation, if any.
    pub compensation: Option<Money>,
}

/// Outcome of a follow-up attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FollowUpOutcome {
    /// Reached the customer.
    Contacted,
    /// Resolved the customer's problem.
    Resolved,
    /// Could not reach the customer.
    NoAnswer,
}

impl FollowUpOutcome {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            FollowUpOutcome::Contacted => "contacted",
            FollowUpOutcome::Resolved => "resolved",
            FollowUpOutcome::NoAnswer => "no_answer",
        }
    }

    /// The status a follow-up ticket in `from` moves to with this outcome.
    pub fn next_status(self, from: Status) -> Result<Status, Rejection> {
        if !from.is_active() {
            return Err(Rejection::OutcomeOnInactiveTicket { from });
        }
        Ok(match self {
            FollowUpOutcome::Contacted => Status::InProgress,
            FollowUpOutcome::Resolved => Status::Resolved,
            FollowUpOutcome::NoAnswer => from,
        })
    }
}

/// Closed-loop details of a follow-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUp {
    /// Why it was opened.
    pub triggers: Vec<FollowUpTrigger>,
    /// The survey.
    pub survey_id: Uuid,
    /// The response's scores.
    pub scores: Scores,
    /// When the first outcome was recorded.
    pub first_outcome_time: Option<DateTime<Utc>>,
}

/// Which ticket fields an update changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TicketMask {
    /// `category`.
    pub category: bool,
    /// `severity`.
    pub severity: bool,
    /// `subject`.
    pub subject: bool,
    /// `description`.
    pub description: bool,
    /// `touchpoint`.
    pub touchpoint: bool,
}

/// Counts of the closed-loop report (see `FollowUpReport` in follow_up_report.proto).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowUpCounts {
    /// Follow-ups in scope.
    pub follow_ups: i64,
    /// Opened for an NPS detractor.
    pub nps_detractor: i64,
    /// Opened for a CSAT of 1–2.
    pub low_csat: i64,
    /// With at least one outcome.
    pub followed_up: i64,
    /// First outcome within SLA.
    pub within_sla: i64,
    /// First outcome late, or none and overdue.
    pub late: i64,
    /// No outcome, not yet due.
    pub pending: i64,
    /// Latest outcome CONTACTED.
    pub contacted: i64,
    /// Latest outcome RESOLVED.
    pub resolved: i64,
    /// Latest outcome NO_ANSWER.
    pub no_answer: i64,
}

impl FollowUpCounts {
    /// 100 × within ÷ (within + late); None when both are 0.
    pub fn within_sla_percent(&self) -> Option<f64> {
        let decided = self.within_sla + self.late;
        (decided > 0).then(|| 100.0 * self.within_sla as f64 / decided as f64)
    }
}

/// What a new ticket is opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTicket {
    /// Customer.
    pub customer_id: String,
    /// Category slug.
    pub category: String,
    /// Severity.
    pub severity: Severity,
    /// Channel slug.
    pub channel: String,
    /// One-line summary.
    pub subject: String,
    /// Description.
    pub description: String,
    /// Touchpoint.
    pub touchpoint: Option<Touchpoint>,
    /// Source response.
    pub source_response_id: Option<Uuid>,
    /// Initial assignee ("" = none).
    pub assignee_id: String,
    /// Acting agent.
    pub actor_id: String,
}

/// SLA state of a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaState {
    /// First response due.
    pub respond_due_time: DateTime<Utc>,
    /// Resolution due.
    pub resolve_due_time: DateTime<Utc>,
    /// First response.
    pub first_respond_time: Option<DateTime<Utc>>,
    /// Stored flag: first response came late.
    pub response_breached: bool,
    /// Stored flag: a resolution came late.
    pub resolution_breached: bool,
}

impl SlaState {
    /// Whether the first-response target is breached as of `now`.
    pub fn response_breached_at(&self, now: DateTime<Utc>) -> bool {
        self.response_breached || (self.first_respond_time.is_none() && now > self.respond_due_time)
    }

    /// Whether the resolution target is breached as of `now`, for a ticket in `status`.
    pub fn resolution_breached_at(&self, status: Status, now: DateTime<Utc>) -> bool {
        self.resolution_breached || (status.is_active() && now > self.resolve_due_time)
    }

    /// The next due time of an active ticket.
    pub fn next_due(&self, status: Status) -> Option<DateTime<Utc>> {
        if !status.is_active() {
            None
        } else if self.first_respond_time.is_none() {
            Some(self.respond_due_time)
        } else {
            Some(self.resolve_due_time)
        }
    }
}

/// A stored ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Id.
    pub id: Uuid,
    /// Kind.
    pub kind: Kind,
    /// Status.
    pub status: Status,
    /// Customer.
    pub customer_id: String,
    /// Category.
    pub category: String,
    /// Severity.
    pub severity: Severity,
    /// Channel.
    pub channel: String,
    /// Subject.
    pub subject: String,
    /// Description.
    pub description: String,
    /// Touchpoint.
    pub touchpoint: Option<Touchpoint>,
    /// Source response.
    pub source_response_id: Option<Uuid>,
    /// Assignee ("" = none).
    pub assignee_id: String,
    /// Resolution while RESOLVED or CLOSED.
    pub resolution: Option<Resolution>,
    /// SLA.
    pub sla: SlaState,
    /// Follow-up details.
    pub follow_up: Option<FollowUp>,
    /// Opened.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
    /// Resolved.
    pub resolve_time: Option<DateTime<Utc>>,
    /// Closed.
    pub close_time: Option<DateTime<Utc>>,
    /// When the customer's personal data was erased (profiles erasure).
    pub erase_time: Option<DateTime<Utc>>,
    /// Version.
    pub version: i64,
}

impl Ticket {
    /// The opaque etag of this version.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    /// Refuses a change when `etag` is given and stale.
    pub fn check_etag(&self, etag: &str) -> Result<(), Rejection> {
        if etag.is_empty() || etag == self.etag() {
            Ok(())
        } else {
            Err(Rejection::StaleEtag { resource: "ticket" })
        }
    }
}

/// History actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Opened.
    Opened,
    /// Fields updated.
    Updated,
    /// Assigned.
    Assigned,
    /// Started.
    Started,
    /// Resolved.
    Resolved,
    /// Closed.
    Closed,
    /// Reopened.
    Reopened,
    /// Note added.
    NoteAdded,
    /// Follow-up outcome recorded.
    FollowUpOutcomeRecorded,
}

impl Action {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Opened => "opened",
            Action::Updated => "updated",
            Action::Assigned => "assigned",
            Action::Started => "started",
            Action::Resolved => "resolved",
            Action::Closed => "closed",
            Action::Reopened => "reopened",
            Action::NoteAdded => "note_added",
            Action::FollowUpOutcomeRecorded => "follow_up_outcome_recorded",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "opened" => Action::Opened,
            "updated" => Action::Updated,
            "assigned" => Action::Assigned,
            "started" => Action::Started,
            "resolved" => Action::Resolved,
            "closed" => Action::Closed,
            "reopened" => Action::Reopened,
            "note_added" => Action::NoteAdded,
            "follow_up_outcome_recorded" => Action::FollowUpOutcomeRecorded,
            _ => return None,
        })
    }

    /// The history action of a transition.
    pub fn of(transition: Transition) -> Self {
        match transition {
            Transition::Start => Action::Started,
            Transition::Resolve => Action::Resolved,
            Transition::Close => Action::Closed,
            Transition::Reopen => Action::Reopened,
        }
    }
}

/// Action-specific detail of a history entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryDetail {
    /// Assignment change.
    Assignment {
        /// New assignee.
        assignee_id: String,
        /// Previous assignee.
        previous_assignee_id: String,
    },
    /// Resolution.
    Resolution(Resolution),
    /// Follow-up outcome.
    FollowUpOutcome(FollowUpOutcome),
    /// Fields changed by UpdateTicket.
    FieldsChange {
        /// Paths changed.
        changed_fields: Vec<String>,
        /// Severity before.
        previous_severity: Severity,
        /// Severity after.
        severity: Severity,
        /// Category before.
        previous_category: String,
        /// Category after.
        category: String,
    },
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Id.
    pub id: Uuid,
    /// Ticket.
    pub ticket_id: Uuid,
    /// Action.
    pub action: Action,
    /// When.
    pub occur_time: DateTime<Utc>,
    /// Calling service.
    pub actor_service: String,
    /// Acting agent.
    pub actor_id: String,
    /// Status before.
    pub from_status: Option<Status>,
    /// Status after.
    pub to_status: Option<Status>,
    /// Note.
    pub note: String,
    /// Detail.
    pub detail: Option<HistoryDetail>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workflow_allows_exactly_the_documented_transitions() {
        use Status::*;
        use Transition::*;
        let cases = [
            (Start, Open, Some(InProgress)),
            (Start, InProgress, None),
            (Start, Resolved, None),
            (Start, Closed, None),
            (Resolve, Open, None),
            (Resolve, InProgress, Some(Resolved)),
            (Resolve, Resolved, None),
            (Resolve, Closed, None),
            (Close, Open, None),
            (Close, InProgress, None),
            (Close, Resolved, Some(Closed)),
            (Close, Closed, None),
            (Reopen, Open, None),
            (Reopen, InProgress, None),
            (Reopen, Resolved, Some(Open)),
            (Reopen, Closed, Some(Open)),
        ];
        for (transition, from, expected) in cases {
            assert_eq!(
                transition.apply(from).ok(),
                expected,
                "{transition:?} from {from:?}"
            );
        }
    }
}
