//! The contract's shared wire values for domain values, both ways: timestamps, the enums
//! (question and touchpoint kinds, ticket status, kind and severity, follow-up triggers and
//! outcomes, resolution codes, NPS categories), touchpoints, scores, money and review
//! subjects. Used by `api` (requests and replies) and by `events` (outbox payloads), so
//! neither imports the other and each mapping is written once.

use chrono::{DateTime, Utc};
use custops_contracts::custops::common::v1 as common_pb;
use custops_contracts::custops::feedback::v1 as pb;
use prost_types::Timestamp;

use crate::domain::response::{FollowUpTrigger, NpsCategory, Scores};
use crate::domain::review::{Subject, SubjectKind};
use crate::domain::survey::{QuestionKind, Touchpoint, TouchpointKind};
use crate::domain::ticket::{FollowUpOutcome, Kind, Money, ResolutionCode, Severity, Status};

pub(crate) use custops_common::time::to_timestamp as ts;

/// A timestamp from the wire, truncated to Postgres' microseconds; `None` when out of range.
pub(crate) fn from_ts(t: &Timestamp) -> Option<DateTime<Utc>> {
    custops_common::time::from_timestamp(t)
        .and_then(|t| DateTime::from_timestamp_micros(t.timestamp_micros()))
}

pub(crate) fn question_kind(kind: QuestionKind) -> pb::QuestionKind {
    match kind {
        QuestionKind::Nps => pb::QuestionKind::Nps,
        QuestionKind::Csat => pb::QuestionKind::Csat,
        QuestionKind::Ces => pb::QuestionKind::Ces,
        QuestionKind::SingleChoice => pb::QuestionKind::SingleChoice,
        QuestionKind::MultipleChoice => pb::QuestionKind::MultipleChoice,
        QuestionKind::FreeText => pb::QuestionKind::FreeText,
    }
}

pub(crate) fn touchpoint_kind(kind: TouchpointKind) -> pb::TouchpointKind {
    match kind {
        TouchpointKind::Order => pb::TouchpointKind::Order,
        TouchpointKind::SupportContact => pb::TouchpointKind::SupportContact,
        TouchpointKind::Channel => pb::TouchpointKind::Channel,
        TouchpointKind::Relationship => pb::TouchpointKind::Relationship,
    }
}

/// A wire touchpoint kind; `None` for UNSPECIFIED or unknown numbers.
pub(crate) fn touchpoint_kind_from(value: i32) -> Option<TouchpointKind> {
    match pb::TouchpointKind::try_from(value).ok()? {
        pb::TouchpointKind::Unspecified => None,
        pb::TouchpointKind::Order => Some(TouchpointKind::Order),
        pb::TouchpointKind::SupportContact => Some(TouchpointKind::SupportContact),
        pb::TouchpointKind::Channel => Some(TouchpointKind::Channel),
        pb::TouchpointKind::Relationship => Some(TouchpointKind::Relationship),
    }
}

pub(crate) fn severity(s: Severity) -> pb::TicketSeverity {
    match s {
        Severity::Low => pb::TicketSeverity::Low,
        Severity::Medium => pb::TicketSeverity::Medium,
        Severity::High => pb::TicketSeverity::High,
        Severity::Critical => pb::TicketSeverity::Critical,
    }
}

/// A wire severity; `None` for UNSPECIFIED or unknown numbers.
pub(crate) fn severity_from(value: i32) -> Option<Severity> {
    match pb::TicketSeverity::try_from(value).ok()? {
        pb::TicketSeverity::Unspecified => None,
        pb::TicketSeverity::Low => Some(Severity::Low),
        pb::TicketSeverity::Medium => Some(Severity::Medium),
        pb::TicketSeverity::High => Some(Severity::High),
        pb::TicketSeverity::Critical => Some(Severity::Critical),
    }
}

pub(crate) fn ticket_status(s: Status) -> pb::TicketStatus {
    match s {
        Status::Open => pb::TicketStatus::Open,
        Status::InProgress => pb::TicketStatus::InProgress,
        Status::Resolved => pb::TicketStatus::Resolved,
        Status::Closed => pb::TicketStatus::Closed,
    }
}

pub(crate) fn ticket_kind(k: Kind) -> pb::TicketKind {
    match k {
        Kind::Complaint => pb::TicketKind::Complaint,
        Kind::FollowUp => pb::TicketKind::FollowUp,
    }
}

pub(crate) fn trigger(t: FollowUpTrigger) -> pb::FollowUpTrigger {
    match t {
        FollowUpTrigger::NpsDetractor => pb::FollowUpTrigger::NpsDetractor,
        FollowUpTrigger::LowCsat => pb::FollowUpTrigger::LowCsat,
    }
}

pub(crate) fn outcome(o: FollowUpOutcome) -> pb::FollowUpOutcome {
    match o {
        FollowUpOutcome::Contacted => pb::FollowUpOutcome::Contacted,
        FollowUpOutcome::Resolved => pb::FollowUpOutcome::Resolved,
        FollowUpOutcome::NoAnswer => pb::FollowUpOutcome::NoAnswer,
    }
}

pub(crate) fn resolution_code(c: ResolutionCode) -> pb::ResolutionCode {
    match c {
        ResolutionCode::Fixed => pb::ResolutionCode::Fixed,
        ResolutionCode::Compensated => pb::ResolutionCode::Compensated,
        ResolutionCode::Explained => pb::ResolutionCode::Explained,
        ResolutionCode::Duplicate => pb::ResolutionCode::Duplicate,
        ResolutionCode::NotActionable => pb::ResolutionCode::NotActionable,
    }
}

pub(crate) fn nps_category(scores: &Scores) -> pb::NpsCategory {
    match scores.nps.score.map(NpsCategory::of) {
        None => pb::NpsCategory::Unspecified,
        Some(NpsCategory::Promoter) => pb::NpsCategory::Promoter,
        Some(NpsCategory::Passive) => pb::NpsCategory::Passive,
        Some(NpsCategory::Detractor) => pb::NpsCategory::Detractor,
    }
}

impl From<&Touchpoint> for pb::TouchpointRef {
    fn from(t: &Touchpoint) -> Self {
        pb::TouchpointRef {
            kind: touchpoint_kind(t.kind).into(),
            touchpoint_id: t.id.clone(),
        }
    }
}

impl From<&Scores> for pb::ResponseScores {
    fn from(s: &Scores) -> Self {
        pb::ResponseScores {
            nps_score: s.nps.score,
            nps_category: nps_category(s).into(),
            csat_score: s.csat.score,
            ces_score: s.ces.score,
        }
    }
}

/// Money on the wire.
pub(crate) fn money(m: &Money) -> common_pb::Money {
    common_pb::Money {
        amount_minor: m.amount_minor,
        currency: m.currency.clone(),
    }
}

pub(crate) fn subject(s: &Subject) -> pb::ReviewSubject {
    pb::ReviewSubject {
        kind: match s.kind {
            SubjectKind::Product => pb::ReviewSubjectKind::Product,
            SubjectKind::Service => pb::ReviewSubjectKind::Service,
        }
        .into(),
        subject_id: s.id.clone(),
    }
}
