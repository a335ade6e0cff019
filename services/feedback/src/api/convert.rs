//! Domain → wire conversions of the API's replies (`impl From<&domain> for pb`, tickets with
//! their breach flags, metrics groups, the customer summary and export). The shared value
//! mappings (enums, timestamps, touchpoints, scores) are in `crate::wire`. Prost types stop
//! here: the domain never sees them.

use chrono::{DateTime, Utc};
use custops_contracts::custops::common::v1 as common_pb;
use custops_contracts::custops::feedback::v1 as pb;

use crate::domain::metrics::{self, GroupCounts, GroupKey, ScoreCounts};
use crate::domain::response::{
    Answer, AnswerValue, Invitation, InvitationStatus, NpsCategory, Omission, RewardDelivery,
    RewardStatus, SurveyResponse,
};
use crate::domain::review::{Review, ReviewSummary};
use crate::domain::sla::SlaPolicy;
use crate::domain::survey::{Question, Survey, SurveyStatus};
use crate::domain::ticket::{
    Action, FollowUpCounts, FollowUpOutcome, HistoryDetail, HistoryEntry, Resolution, Ticket,
};
use crate::store::responses::{CustomerSummary, LatestScore};
use crate::wire::{
    money, outcome, question_kind, resolution_code, severity, subject, ticket_kind, ticket_status,
    touchpoint_kind, trigger, ts,
};
use crate::workflow::export::CustomerData;

impl From<&Question> for pb::Question {
    fn from(q: &Question) -> Self {
        pb::Question {
            question_id: q.id.clone(),
            text: q.text.clone(),
            kind: question_kind(q.kind).into(),
            required: q.required,
            options: q
                .options
                .iter()
                .map(|o| pb::ChoiceOption {
                    option_id: o.id.clone(),
                    label: o.label.clone(),
                })
                .collect(),
            max_selections: i32::try_from(q.max_selections).unwrap_or(i32::MAX),
        }
    }
}

impl From<&Survey> for pb::Survey {
    fn from(s: &Survey) -> Self {
        let c = &s.content;
        pb::Survey {
            survey_id: s.id.to_string(),
            display_name: c.display_name.clone(),
            description: c.description.clone(),
            questions: c.questions.iter().map(Into::into).collect(),
            target: Some(pb::SurveyTarget {
                touchpoint_kind: touchpoint_kind(c.target.touchpoint_kind).into(),
                segment_id: c.target.segment_id.clone(),
            }),
            reward: c.reward.as_ref().map(|r| pb::SurveyReward {
                points: r.points,
                program_id: r.program_id.clone(),
            }),
            status: match s.status {
                SurveyStatus::Draft => pb::SurveyStatus::Draft,
                SurveyStatus::Active => pb::SurveyStatus::Active,
                SurveyStatus::Closed => pb::SurveyStatus::Closed,
            }
            .into(),
            create_time: Some(ts(s.create_time)),
            update_time: Some(ts(s.update_time)),
            activate_time: s.activate_time.map(ts),
            close_time: s.close_time.map(ts),
            etag: s.etag(),
        }
    }
}

impl From<&Invitation> for pb::Invitation {
    fn from(i: &Invitation) -> Self {
        pb::Invitation {
            invitation_id: i.id.to_string(),
            survey_id: i.new.survey_id.to_string(),
            customer_id: i.new.customer_id.clone(),
            touchpoint: Some((&i.new.touchpoint).into()),
            channel: i.new.channel.clone(),
            expire_time: i.new.expire_time.map(ts),
            status: match i.status {
                InvitationStatus::Pending => pb::InvitationStatus::Pending,
                InvitationStatus::Responded => pb::InvitationStatus::Responded,
                InvitationStatus::Expired => pb::InvitationStatus::Expired,
            }
            .into(),
            response_id: i.response_id.map(|r| r.to_string()).unwrap_or_default(),
            create_time: Some(ts(i.create_time)),
            respond_time: i.respond_time.map(ts),
        }
    }
}

impl From<&Answer> for pb::Answer {
    fn from(a: &Answer) -> Self {
        use pb::answer::Value;
        let value = match &a.value {
            AnswerValue::Score(s) => Value::Score(*s),
            AnswerValue::Choice(ids) => Value::Choice(pb::ChoiceSelection {
                option_ids: ids.clone(),
            }),
            AnswerValue::Text(t) => Value::Text(t.clone()),
            AnswerValue::Omitted(Omission::Skipped) => {
                Value::Omission(pb::AnswerOmission::Skipped.into())
            }
            AnswerValue::Omitted(Omission::Dismissed) => {
                Value::Omission(pb::AnswerOmission::Dismissed.into())
            }
        };
        pb::Answer {
            question_id: a.question_id.clone(),
            value: Some(value),
        }
    }
}

impl From<&RewardDelivery> for pb::RewardDelivery {
    fn from(r: &RewardDelivery) -> Self {
        pb::RewardDelivery {
            status: match r.status {
                RewardStatus::Pending => pb::RewardStatus::Pending,
                RewardStatus::Retrying => pb::RewardStatus::Retrying,
                RewardStatus::Delivered => pb::RewardStatus::Delivered,
                RewardStatus::Rejected => pb::RewardStatus::Rejected,
            }
            .into(),
            points: r.points,
            program_id: r.program_id.clone(),
            attempt_count: r.attempt_count,
            last_attempt_time: r.last_attempt_time.map(ts),
            next_attempt_time: r.next_attempt_time.map(ts),
            last_error_reason: r.last_error_reason.clone(),
            ledger_entry_id: r.ledger_entry_id.clone(),
            deliver_time: r.deliver_time.map(ts),
        }
    }
}

impl From<&SurveyResponse> for pb::SurveyResponse {
    fn from(r: &SurveyResponse) -> Self {
        pb::SurveyResponse {
            response_id: r.id.to_string(),
            invitation_id: r.invitation_id.to_string(),
            survey_id: r.survey_id.to_string(),
            customer_id: r.customer_id.clone(),
            touchpoint: Some((&r.touchpoint).into()),
            channel: r.channel.clone(),
            answers: r.answers.iter().map(Into::into).collect(),
            scores: Some((&r.scores).into()),
            completed: r.completed,
            segment_ids: r.segment_ids.clone(),
            follow_up_ticket_id: r
                .follow_up_ticket_id
                .map(|t| t.to_string())
                .unwrap_or_default(),
            reward: r.reward.as_ref().map(Into::into),
            submit_time: Some(ts(r.submit_time)),
            erase_time: r.erase_time.map(ts),
        }
    }
}

impl From<&Resolution> for pb::TicketResolution {
    fn from(r: &Resolution) -> Self {
        pb::TicketResolution {
            code: resolution_code(r.code).into(),
            note: r.note.clone(),
            compensation: r.compensation.as_ref().map(money),
        }
    }
}

/// A ticket on the wire, with breach flags evaluated at `now` and its follow-up outcomes.
pub fn ticket(t: &Ticket, now: DateTime<Utc>, history: &[HistoryEntry]) -> pb::Ticket {
    pb::Ticket {
        ticket_id: t.id.to_string(),
        kind: ticket_kind(t.kind).into(),
        status: ticket_status(t.status).into(),
        customer_id: t.customer_id.clone(),
        category: t.category.clone(),
        severity: severity(t.severity).into(),
        channel: t.channel.clone(),
        subject: t.subject.clone(),
        description: t.description.clone(),
        touchpoint: t.touchpoint.as_ref().map(Into::into),
        source_response_id: t
            .source_response_id
            .map(|r| r.to_string())
            .unwrap_or_default(),
        assignee_id: t.assignee_id.clone(),
        resolution: t.resolution.as_ref().map(Into::into),
        sla: Some(pb::TicketSla {
            respond_due_time: Some(ts(t.sla.respond_due_time)),
            resolve_due_time: Some(ts(t.sla.resolve_due_time)),
            first_respond_time: t.sla.first_respond_time.map(ts),
            response_breached: t.sla.response_breached_at(now),
            resolution_breached: t.sla.resolution_breached_at(t.status, now),
        }),
        follow_up: t.follow_up.as_ref().map(|f| pb::FollowUp {
            triggers: f.triggers.iter().map(|x| trigger(*x).into()).collect(),
            survey_id: f.survey_id.to_string(),
            scores: Some((&f.scores).into()),
            outcomes: history
                .iter()
                .filter_map(|e| match &e.detail {
                    Some(HistoryDetail::FollowUpOutcome(o)) => Some(outcome_record(e, *o)),
                    _ => None,
                })
                .collect(),
            first_outcome_time: f.first_outcome_time.map(ts),
        }),
        create_time: Some(ts(t.create_time)),
        update_time: Some(ts(t.update_time)),
        resolve_time: t.resolve_time.map(ts),
        close_time: t.close_time.map(ts),
        erase_time: t.erase_time.map(ts),
        etag: t.etag(),
    }
}

fn actor(e: &HistoryEntry) -> pb::Actor {
    pb::Actor {
        service_name: e.actor_service.clone(),
        actor_id: e.actor_id.clone(),
    }
}

fn outcome_record(e: &HistoryEntry, o: FollowUpOutcome) -> pb::FollowUpOutcomeRecord {
    pb::FollowUpOutcomeRecord {
        outcome: outcome(o).into(),
        note: e.note.clone(),
        actor: Some(actor(e)),
        record_time: Some(ts(e.occur_time)),
    }
}

impl From<&HistoryEntry> for pb::TicketHistoryEntry {
    fn from(e: &HistoryEntry) -> Self {
        use pb::ticket_history_entry::Detail;
        let action = match e.action {
            Action::Opened => pb::TicketAction::Opened,
            Action::Updated => pb::TicketAction::Updated,
            Action::Assigned => pb::TicketAction::Assigned,
            Action::Started => pb::TicketAction::Started,
            Action::Resolved => pb::TicketAction::Resolved,
            Action::Closed => pb::TicketAction::Closed,
            Action::Reopened => pb::TicketAction::Reopened,
            Action::NoteAdded => pb::TicketAction::NoteAdded,
            Action::FollowUpOutcomeRecorded => pb::TicketAction::FollowUpOutcomeRecorded,
        };
        let detail = e.detail.as_ref().map(|d| match d {
            HistoryDetail::Assignment {
                assignee_id,
                previous_assignee_id,
            } => Detail::Assignment(pb::TicketAssignment {
                assignee_id: assignee_id.clone(),
                previous_assignee_id: previous_assignee_id.clone(),
            }),
            HistoryDetail::Resolution(r) => Detail::Resolution(r.into()),
            HistoryDetail::FollowUpOutcome(o) => Detail::FollowUpOutcome(outcome_record(e, *o)),
            HistoryDetail::FieldsChange {
                changed_fields,
                previous_severity,
                severity: after,
                previous_category,
                category,
            } => Detail::FieldsChange(pb::TicketFieldsChange {
                changed_fields: changed_fields.clone(),
                previous_severity: severity(*previous_severity).into(),
                severity: severity(*after).into(),
                previous_category: previous_category.clone(),
                category: category.clone(),
            }),
        });
        pb::TicketHistoryEntry {
            entry_id: e.id.to_string(),
            ticket_id: e.ticket_id.to_string(),
            action: action.into(),
            occur_time: Some(ts(e.occur_time)),
            actor: Some(actor(e)),
            from_status: e.from_status.map(|s| ticket_status(s).into()).unwrap_or(0),
            to_status: e.to_status.map(|s| ticket_status(s).into()).unwrap_or(0),
            note: e.note.clone(),
            detail,
        }
    }
}

impl From<&SlaPolicy> for pb::SlaPolicy {
    fn from(p: &SlaPolicy) -> Self {
        pb::SlaPolicy {
            targets: p
                .targets
                .iter()
                .map(|t| pb::SeveritySlaTarget {
                    severity: severity(t.severity).into(),
                    first_response: Some(prost_types::Duration {
                        seconds: t.first_response_secs,
                        nanos: 0,
                    }),
                    resolution: Some(prost_types::Duration {
                        seconds: t.resolution_secs,
                        nanos: 0,
                    }),
                })
                .collect(),
            follow_up_severity: severity(p.follow_up_severity).into(),
            update_time: p.update_time.map(ts),
            etag: p.etag(),
        }
    }
}

impl From<&Review> for pb::Review {
    fn from(r: &Review) -> Self {
        pb::Review {
            review_id: r.id.to_string(),
            customer_id: r.new.customer_id.clone(),
            subject: Some(subject(&r.new.subject)),
            rating: r.new.rating,
            title: r.new.title.clone(),
            text: r.new.text.clone(),
            channel: r.new.channel.clone(),
            create_time: Some(ts(r.create_time)),
            erase_time: r.erase_time.map(ts),
        }
    }
}

impl From<&ReviewSummary> for pb::ReviewSummary {
    fn from(s: &ReviewSummary) -> Self {
        pb::ReviewSummary {
            subject: Some(subject(&s.subject)),
            review_count: s.count,
            average_rating: s.average,
            distribution: s
                .distribution
                .iter()
                .zip(1..)
                .map(|(count, rating)| pb::RatingCount {
                    rating,
                    count: *count,
                })
                .collect(),
        }
    }
}

/// The data-subject export; each ticket carries the follow-up outcomes of its own history,
/// breaches judged at the export time.
pub fn customer_export(data: &CustomerData) -> pb::CustomerDataExport {
    pb::CustomerDataExport {
        customer_id: data.customer_id.clone(),
        invitations: data.invitations.iter().map(Into::into).collect(),
        responses: data.responses.iter().map(Into::into).collect(),
        tickets: data
            .tickets
            .iter()
            .map(|t| {
                let history: Vec<HistoryEntry> = data
                    .ticket_history
                    .iter()
                    .filter(|e| e.ticket_id == t.id)
                    .cloned()
                    .collect();
                ticket(t, data.export_time, &history)
            })
            .collect(),
        ticket_history: data.ticket_history.iter().map(Into::into).collect(),
        reviews: data.reviews.iter().map(Into::into).collect(),
        export_time: Some(ts(data.export_time)),
    }
}

/// A customer's feedback summary on the wire.
pub fn customer_summary(customer_id: String, s: &CustomerSummary) -> pb::CustomerFeedbackSummary {
    let latest = |l: Option<LatestScore>| {
        l.map(|(score, response_id, survey_id, at)| pb::LatestScore {
            score,
            response_id: response_id.to_string(),
            survey_id: survey_id.to_string(),
            submit_time: Some(ts(at)),
        })
    };
    let category = match s.last_nps.map(|l| NpsCategory::of(l.0)) {
        None => pb::NpsCategory::Unspecified,
        Some(NpsCategory::Promoter) => pb::NpsCategory::Promoter,
        Some(NpsCategory::Passive) => pb::NpsCategory::Passive,
        Some(NpsCategory::Detractor) => pb::NpsCategory::Detractor,
    };
    pb::CustomerFeedbackSummary {
        customer_id,
        response_count: s.response_count,
        last_response_time: s.last_response_time.map(ts),
        last_nps: latest(s.last_nps),
        last_nps_category: category.into(),
        last_csat: latest(s.last_csat),
        last_ces: latest(s.last_ces),
        open_ticket_count: s.open_tickets,
        breached_open_ticket_count: s.breached_open_tickets,
        ticket_count: s.tickets,
        review_count: s.reviews,
        average_review_rating: s.average_rating,
        open_follow_up_count: s.open_follow_ups,
    }
}

impl From<&FollowUpCounts> for pb::FollowUpReport {
    fn from(c: &FollowUpCounts) -> Self {
        pb::FollowUpReport {
            follow_up_count: c.follow_ups,
            nps_detractor_count: c.nps_detractor,
            low_csat_count: c.low_csat,
            followed_up_count: c.followed_up,
            within_sla_count: c.within_sla,
            late_count: c.late,
            pending_count: c.pending,
            within_sla_percent: c.within_sla_percent(),
            contacted_count: c.contacted,
            resolved_count: c.resolved,
            no_answer_count: c.no_answer,
        }
    }
}

fn score_counts(c: &ScoreCounts, min: usize) -> Vec<pb::ScoreCount> {
    c.distribution
        .iter()
        .enumerate()
        .skip(min)
        .map(|(score, count)| pb::ScoreCount {
            score: i32::try_from(score).unwrap_or(0),
            count: *count,
        })
        .collect()
}

impl From<&GroupCounts> for pb::MetricsGroup {
    fn from(g: &GroupCounts) -> Self {
        use pb::metrics_group::Key;
        let key = g.key.as_ref().map(|k| match k {
            GroupKey::Period {
                start_date,
                start,
                end,
                label,
            } => {
                use chrono::Datelike;
                Key::Period(pb::MetricsPeriod {
                    start_date: Some(common_pb::Date {
                        year: start_date.year(),
                        month: i32::try_from(start_date.month()).unwrap_or(0),
                        day: i32::try_from(start_date.day()).unwrap_or(0),
                    }),
                    time_range: Some(common_pb::TimeRange {
                        start_time: Some(ts(*start)),
                        end_time: Some(ts(*end)),
                    }),
                    label: label.clone(),
                })
            }
            GroupKey::Channel(c) => Key::Channel(c.clone()),
            GroupKey::Survey(id) => Key::SurveyId(id.to_string()),
        });
        pb::MetricsGroup {
            key,
            response_count: g.responses,
            nps: Some(pb::NpsMetrics {
                score: metrics::nps(&g.nps),
                promoter_count: g.nps.count_in(9..=10),
                passive_count: g.nps.count_in(7..=8),
                detractor_count: g.nps.count_in(0..=6),
                answered_count: g.nps.answered,
                omitted_count: g.nps.omitted,
                distribution: score_counts(&g.nps, 0),
            }),
            csat: Some(pb::CsatMetrics {
                percent_satisfied: metrics::csat_percent(&g.csat),
                satisfied_count: g.csat.count_in(4..=5),
                answered_count: g.csat.answered,
                mean_score: g.csat.mean(),
                omitted_count: g.csat.omitted,
                distribution: score_counts(&g.csat, 1),
            }),
            ces: Some(pb::CesMetrics {
                mean_score: g.ces.mean(),
                answered_count: g.ces.answered,
                omitted_count: g.ces.omitted,
                distribution: score_counts(&g.ces, 1),
            }),
        }
    }
}
