//! The domain events feedback writes to its outbox (`custops.feedback.v1` events.proto), built
//! from domain values in the transaction that makes the change.

use chrono::{DateTime, Utc};
use custops_common::outbox::OutboxEvent;
use custops_contracts::custops::feedback::v1 as pb;

use crate::domain::response::{DueReward, SurveyResponse};
use crate::domain::review::Review;
use crate::domain::ticket::{FollowUpOutcome, Status, Ticket};
use crate::wire::{
    money, outcome, resolution_code, severity, subject, ticket_kind, ticket_status, trigger, ts,
};

fn actor(service: &str, actor_id: &str) -> pb::Actor {
    pb::Actor {
        service_name: service.to_owned(),
        actor_id: actor_id.to_owned(),
    }
}

/// ResponseSubmitted.
pub fn response_submitted(r: &SurveyResponse) -> OutboxEvent {
    OutboxEvent::new(
        "survey_response",
        r.id,
        &pb::ResponseSubmitted {
            response_id: r.id.to_string(),
            survey_id: r.survey_id.to_string(),
            invitation_id: r.invitation_id.to_string(),
            customer_id: r.customer_id.clone(),
            touchpoint: Some((&r.touchpoint).into()),
            channel: r.channel.clone(),
            scores: Some((&r.scores).into()),
            completed: r.completed,
            follow_up_ticket_id: r
                .follow_up_ticket_id
                .map(|t| t.to_string())
                .unwrap_or_default(),
            reward_points: r.reward.as_ref().map(|w| w.points).unwrap_or(0),
            submit_time: Some(ts(r.submit_time)),
        },
    )
}

/// TicketOpened.
pub fn ticket_opened(t: &Ticket) -> OutboxEvent {
    OutboxEvent::new(
        "ticket",
        t.id,
        &pb::TicketOpened {
            ticket_id: t.id.to_string(),
            kind: ticket_kind(t.kind).into(),
            customer_id: t.customer_id.clone(),
            category: t.category.clone(),
            severity: severity(t.severity).into(),
            channel: t.channel.clone(),
            touchpoint: t.touchpoint.as_ref().map(Into::into),
            source_response_id: t
                .source_response_id
                .map(|r| r.to_string())
                .unwrap_or_default(),
            follow_up_triggers: t
                .follow_up
                .as_ref()
                .map(|f| f.triggers.iter().map(|x| trigger(*x).into()).collect())
                .unwrap_or_default(),
            assignee_id: t.assignee_id.clone(),
            respond_due_time: Some(ts(t.sla.respond_due_time)),
            resolve_due_time: Some(ts(t.sla.resolve_due_time)),
            open_time: Some(ts(t.create_time)),
        },
    )
}

/// TicketAssigned.
pub fn ticket_assigned(
    t: &Ticket,
    previous: &str,
    service: &str,
    actor_id: &str,
    now: DateTime<Utc>,
) -> OutboxEvent {
    OutboxEvent::new(
        "ticket",
        t.id,
        &pb::TicketAssigned {
            ticket_id: t.id.to_string(),
            customer_id: t.customer_id.clone(),
            assignee_id: t.assignee_id.clone(),
            previous_assignee_id: previous.to_owned(),
            actor: Some(actor(service, actor_id)),
            assign_time: Some(ts(now)),
        },
    )
}

/// TicketStatusChanged.
pub fn ticket_status_changed(
    t: &Ticket,
    from: Status,
    service: &str,
    actor_id: &str,
    now: DateTime<Utc>,
) -> OutboxEvent {
    OutboxEvent::new(
        "ticket",
        t.id,
        &pb::TicketStatusChanged {
            ticket_id: t.id.to_string(),
            kind: ticket_kind(t.kind).into(),
            customer_id: t.customer_id.clone(),
            from_status: ticket_status(from).into(),
            to_status: ticket_status(t.status).into(),
            actor: Some(actor(service, actor_id)),
            change_time: Some(ts(now)),
        },
    )
}

/// TicketResolved.
pub fn ticket_resolved(
    t: &Ticket,
    service: &str,
    actor_id: &str,
    now: DateTime<Utc>,
) -> OutboxEvent {
    let resolution = t.resolution.as_ref();
    OutboxEvent::new(
        "ticket",
        t.id,
        &pb::TicketResolved {
            ticket_id: t.id.to_string(),
            kind: ticket_kind(t.kind).into(),
            customer_id: t.customer_id.clone(),
            category: t.category.clone(),
            severity: severity(t.severity).into(),
            resolution_code: resolution
                .map(|r| resolution_code(r.code).into())
                .unwrap_or(0),
            compensation: resolution.and_then(|r| r.compensation.as_ref()).map(money),
            source_response_id: t
                .source_response_id
                .map(|r| r.to_string())
                .unwrap_or_default(),
            within_sla: now <= t.sla.resolve_due_time,
            actor: Some(actor(service, actor_id)),
            resolve_time: Some(ts(now)),
        },
    )
}

/// FollowUpOutcomeRecorded.
pub fn follow_up_outcome_recorded(
    t: &Ticket,
    o: FollowUpOutcome,
    first: bool,
    service: &str,
    actor_id: &str,
    now: DateTime<Utc>,
) -> OutboxEvent {
    OutboxEvent::new(
        "ticket",
        t.id,
        &pb::FollowUpOutcomeRecorded {
            ticket_id: t.id.to_string(),
            source_response_id: t
                .source_response_id
                .map(|r| r.to_string())
                .unwrap_or_default(),
            customer_id: t.customer_id.clone(),
            outcome: outcome(o).into(),
            first_outcome: first,
            within_sla: t
                .follow_up
                .as_ref()
                .and_then(|f| f.first_outcome_time)
                .is_some_and(|first| first <= t.sla.respond_due_time),
            actor: Some(actor(service, actor_id)),
            record_time: Some(ts(now)),
        },
    )
}

/// ReviewSubmitted.
pub fn review_submitted(r: &Review) -> OutboxEvent {
    OutboxEvent::new(
        "review",
        r.id,
        &pb::ReviewSubmitted {
            review_id: r.id.to_string(),
            customer_id: r.new.customer_id.clone(),
            subject: Some(subject(&r.new.subject)),
            rating: r.new.rating,
            channel: r.new.channel.clone(),
            create_time: Some(ts(r.create_time)),
        },
    )
}

/// SurveyRewardGranted: loyalty paid `due` as ledger entry `ledger_entry_id`.
pub fn survey_reward_granted(
    due: &DueReward,
    ledger_entry_id: &str,
    now: DateTime<Utc>,
) -> OutboxEvent {
    OutboxEvent::new(
        "survey_response",
        due.response_id,
        &pb::SurveyRewardGranted {
            response_id: due.response_id.to_string(),
            survey_id: due.survey_id.to_string(),
            customer_id: due.customer_id.clone(),
            program_id: due.program_id.clone(),
            points: due.points,
            ledger_entry_id: ledger_entry_id.to_owned(),
            attempt_count: due.attempt,
            grant_time: Some(ts(now)),
        },
    )
}

/// SurveyRewardRejected: loyalty refused `due` for `reason`.
pub fn survey_reward_rejected(due: &DueReward, reason: &str, now: DateTime<Utc>) -> OutboxEvent {
    OutboxEvent::new(
        "survey_response",
        due.response_id,
        &pb::SurveyRewardRejected {
            response_id: due.response_id.to_string(),
            survey_id: due.survey_id.to_string(),
            customer_id: due.customer_id.clone(),
            program_id: due.program_id.clone(),
            points: due.points,
            reason: reason.to_owned(),
            reject_time: Some(ts(now)),
        },
    )
}
