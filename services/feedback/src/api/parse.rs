//! Wire → domain: the field parsers the API areas share (ids, request ids, time ranges,
//! touchpoints, survey content, answers, SLA targets, resolutions, subjects). Every bad field
//! becomes one field violation named by its path in the request; [`finish`] turns a request's
//! violations into one INVALID_ARGUMENT.

use chrono::{DateTime, Utc};
use custops_common::error::Violations;
use custops_common::idempotency::RequestKey;
use custops_contracts::custops::common::v1 as common_pb;
use custops_contracts::custops::feedback::v1 as pb;
use prost::Message;
use uuid::Uuid;

use crate::domain::response::{Answer, AnswerValue, Omission};
use crate::domain::review::{Subject, SubjectKind};
use crate::domain::sla::{self, SeverityTarget};
use crate::domain::survey::{
    self, ChoiceOption, Question, QuestionKind, Reward, SurveyContent, SurveyTarget, Touchpoint,
    TouchpointKind,
};
use crate::domain::text;
use crate::domain::ticket::{self, Money, Resolution, ResolutionCode, Severity};
use crate::error::Error;
use crate::wire::{from_ts, severity_from, touchpoint_kind_from};
use crate::workflow::Actor;

/// The parsed request once `v` holds no violation: INVALID_ARGUMENT with every violation
/// otherwise. `parsed` gathers the values the parsers returned; each is `Some` when its
/// parser recorded no violation, so a `None` here is a defect of a parser (INTERNAL, logged).
pub fn finish<T>(v: Violations, parsed: impl FnOnce() -> Option<T>) -> Result<T, Error> {
    crate::error::invalid_fields(v)?;
    parsed().ok_or_else(|| {
        Error::internal(anyhow::anyhow!(
            "a request parsed without violations left a required value unset"
        ))
    })
}

/// A required id field: a UUID.
pub fn id(v: &mut Violations, field: &str, value: &str) -> Option<Uuid> {
    if value.is_empty() {
        v.add(field, "required");
        return None;
    }
    v.take(
        field,
        Uuid::parse_str(value).map_err(|_| "must be a UUID".to_owned()),
    )
}

/// A request whose one field is a required id (GetSurvey, GetTicket, …).
pub fn required_id(field: &str, value: &str) -> Result<Uuid, Error> {
    let mut v = Violations::new();
    let parsed = id(&mut v, field, value);
    finish(v, || parsed)
}

/// A request whose one field is a required customer id.
pub fn required_customer_id(field: &str, value: &str) -> Result<String, Error> {
    let mut v = Violations::new();
    let parsed = customer_id(&mut v, field, value);
    finish(v, || parsed)
}

/// Who acts: the calling service and the optional agent id (printable when given).
pub fn actor(v: &mut Violations, service: &str, actor_id: &str) -> Actor {
    if !actor_id.is_empty() {
        check(v, "actor_id", text::printable_id(actor_id));
    }
    Actor {
        service: service.to_owned(),
        actor_id: actor_id.to_owned(),
    }
}

/// A filter on touchpoint kinds (`touchpoint_kinds[i]`).
pub fn touchpoint_kinds(v: &mut Violations, values: &[i32]) -> Vec<TouchpointKind> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let kind = touchpoint_kind_from(*k);
            if kind.is_none() {
                v.add(format!("touchpoint_kinds[{i}]"), "not a touchpoint kind");
            }
            kind
        })
        .collect()
}

/// Up to 100 survey ids (`survey_ids[i]`).
pub fn survey_ids(v: &mut Violations, values: &[String]) -> Vec<Uuid> {
    if values.len() > 100 {
        v.add("survey_ids", "at most 100");
    }
    values
        .iter()
        .enumerate()
        .filter_map(|(i, s)| id(v, &format!("survey_ids[{i}]"), s))
        .collect()
}

/// Channel slugs to filter on (`channels[i]`).
pub fn channels(v: &mut Violations, values: &[String]) {
    for (i, c) in values.iter().enumerate() {
        check(v, &format!("channels[{i}]"), text::slug(c));
    }
}

/// A required customer id (a profiles `customer_id`, a UUID), in its canonical form (lower-case
/// hyphenated, as profiles writes it), so that the id stored and the id looked up always match.
pub fn customer_id(v: &mut Violations, field: &str, value: &str) -> Option<String> {
    id(v, field, value).map(|id| id.to_string())
}

/// An optional customer id filter: empty means any, otherwise as [`customer_id`].
pub fn customer_filter(v: &mut Violations, field: &str, value: &str) -> String {
    if value.is_empty() {
        return String::new();
    }
    customer_id(v, field, value).unwrap_or_default()
}

/// A required text field checked by `rule`.
pub fn check(v: &mut Violations, field: &str, result: Result<(), String>) {
    if let Err(e) = result {
        v.add(field, e);
    }
}

/// An optional channel slug (empty allowed).
pub fn optional_slug(v: &mut Violations, field: &str, value: &str) {
    if !value.is_empty() {
        check(v, field, text::slug(value));
    }
}

/// A required request id, as the idempotency key of `request` sent by `caller` to `method`
/// (the RPC's name; the key's fingerprint is the request's encoding).
pub fn key<M: Message>(
    v: &mut Violations,
    request_id: &str,
    caller: &str,
    method: &'static str,
    request: &M,
) -> Option<RequestKey> {
    if let Err(e) = text::printable_id(request_id) {
        v.add("request_id", e);
        return None;
    }
    Some(RequestKey::new(caller, request_id, method, request))
}

/// An optional request id.
pub fn optional_key<M: Message>(
    v: &mut Violations,
    request_id: &str,
    caller: &str,
    method: &'static str,
    request: &M,
) -> Option<RequestKey> {
    if request_id.is_empty() {
        None
    } else {
        key(v, request_id, caller, method, request)
    }
}

/// A half-open time range; both bounds optional, start before end.
pub fn time_range(
    v: &mut Violations,
    field: &str,
    range: Option<&common_pb::TimeRange>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let Some(range) = range else {
        return (None, None);
    };
    let bound = |v: &mut Violations, name: &str, t: Option<&prost_types::Timestamp>| match t {
        None => None,
        Some(t) => {
            let parsed = from_ts(t);
            if parsed.is_none() {
                v.add(format!("{field}.{name}"), "not a valid timestamp");
            }
            parsed
        }
    };
    let start = bound(v, "start_time", range.start_time.as_ref());
    let end = bound(v, "end_time", range.end_time.as_ref());
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        v.add(field, "start_time must be before end_time");
    }
    (start, end)
}

fn question_kind(value: i32) -> Option<QuestionKind> {
    match pb::QuestionKind::try_from(value).ok()? {
        pb::QuestionKind::Unspecified => None,
        pb::QuestionKind::Nps => Some(QuestionKind::Nps),
        pb::QuestionKind::Csat => Some(QuestionKind::Csat),
        pb::QuestionKind::Ces => Some(QuestionKind::Ces),
        pb::QuestionKind::SingleChoice => Some(QuestionKind::SingleChoice),
        pb::QuestionKind::MultipleChoice => Some(QuestionKind::MultipleChoice),
        pb::QuestionKind::FreeText => Some(QuestionKind::FreeText),
    }
}

/// The designer content of a wire survey, fields under `prefix` (`survey`). Only the fields
/// in `only` are checked when given (updates check the masked fields).
pub fn survey_content(
    v: &mut Violations,
    prefix: &str,
    s: &pb::Survey,
    only: Option<&survey::SurveyMask>,
) -> SurveyContent {
    let all = survey::SurveyMask {
        display_name: true,
        description: true,
        questions: true,
        target: true,
        reward: true,
    };
    let m = only.copied().unwrap_or(all);
    if m.display_name {
        check(
            v,
            &format!("{prefix}.display_name"),
            text::length(&s.display_name, 1, 200),
        );
    }
    if m.description {
        check(
            v,
            &format!("{prefix}.description"),
            text::length(&s.description, 0, 2000),
        );
    }
    let mut questions = Vec::new();
    if m.questions {
        for (i, q) in s.questions.iter().enumerate() {
            let kind = question_kind(q.kind);
            if kind.is_none() {
                v.add(
                    format!("{prefix}.questions[{i}].kind"),
                    "required: one of the question kinds",
                );
            }
            questions.push(Question {
                id: q.question_id.clone(),
                text: q.text.clone(),
                kind: kind.unwrap_or(QuestionKind::FreeText),
                required: q.required,
                options: q
                    .options
                    .iter()
                    .map(|o| ChoiceOption {
                        id: o.option_id.clone(),
                        label: o.label.clone(),
                    })
                    .collect(),
                max_selections: u32::try_from(q.max_selections).unwrap_or(u32::MAX),
            });
        }
        survey::check_questions(&questions, &format!("{prefix}.questions"), v);
    }
    let mut target = SurveyTarget {
        touchpoint_kind: survey::TouchpointKind::Order,
        segment_id: String::new(),
    };
    if m.target {
        match &s.target {
            None => v.add(format!("{prefix}.target"), "required"),
            Some(t) => {
                match touchpoint_kind_from(t.touchpoint_kind) {
                    Some(kind) => target.touchpoint_kind = kind,
                    None => v.add(
                        format!("{prefix}.target.touchpoint_kind"),
                        "required: one of the touchpoint kinds",
                    ),
                }
                if !t.segment_id.is_empty() && Uuid::parse_str(&t.segment_id).is_err() {
                    v.add(format!("{prefix}.target.segment_id"), "must be a UUID");
                }
                target.segment_id = t.segment_id.clone();
            }
        }
    }
    let reward = if m.reward {
        s.reward.as_ref().map(|r| {
            let reward = Reward {
                points: r.points,
                program_id: r.program_id.clone(),
            };
            survey::check_reward(&reward, &format!("{prefix}.reward"), v);
            reward
        })
    } else {
        None
    };
    SurveyContent {
        display_name: s.display_name.clone(),
        description: s.description.clone(),
        questions,
        target,
        reward,
    }
}

/// A required touchpoint under `field`.
pub fn touchpoint(
    v: &mut Violations,
    field: &str,
    t: Option<&pb::TouchpointRef>,
) -> Option<Touchpoint> {
    let Some(t) = t else {
        v.add(field, "required");
        return None;
    };
    let kind = touchpoint_kind_from(t.kind);
    if kind.is_none() {
        v.add(
            format!("{field}.kind"),
            "required: one of the touchpoint kinds",
        );
    }
    if let Err(e) = text::printable_id(&t.touchpoint_id) {
        v.add(format!("{field}.touchpoint_id"), e);
    }
    kind.map(|kind| Touchpoint {
        kind,
        id: t.touchpoint_id.clone(),
    })
}

/// Wire answers into domain answers (shape only; the survey checks the rest).
pub fn answers(v: &mut Violations, answers: &[pb::Answer]) -> Vec<Answer> {
    use pb::answer::Value;
    let mut out = Vec::with_capacity(answers.len());
    for (i, a) in answers.iter().enumerate() {
        let value = match &a.value {
            None => {
                v.add(
                    format!("answers[{i}]"),
                    "needs a score, choice, text or omission",
                );
                continue;
            }
            Some(Value::Score(s)) => AnswerValue::Score(*s),
            Some(Value::Choice(c)) => AnswerValue::Choice(c.option_ids.clone()),
            Some(Value::Text(t)) => AnswerValue::Text(t.clone()),
            Some(Value::Omission(o)) => match pb::AnswerOmission::try_from(*o) {
                Ok(pb::AnswerOmission::Skipped) => AnswerValue::Omitted(Omission::Skipped),
                Ok(pb::AnswerOmission::Dismissed) => AnswerValue::Omitted(Omission::Dismissed),
                _ => {
                    v.add(
                        format!("answers[{i}].omission"),
                        "must be SKIPPED or DISMISSED",
                    );
                    continue;
                }
            },
        };
        out.push(Answer {
            question_id: a.question_id.clone(),
            value,
        });
    }
    out
}

/// A required severity.
pub fn severity(v: &mut Violations, field: &str, value: i32) -> Severity {
    severity_from(value).unwrap_or_else(|| {
        v.add(field, "required: LOW, MEDIUM, HIGH or CRITICAL");
        Severity::Medium
    })
}

/// `sla_policy.targets` of UpdateSlaPolicy: exactly one target per severity, each duration
/// whole seconds within the contract's bounds (first response 1 minute – 90 days, resolution
/// 1 minute – 365 days and not shorter than the first response). In severity order.
pub fn sla_targets(v: &mut Violations, targets: &[pb::SeveritySlaTarget]) -> Vec<SeverityTarget> {
    let mut out: Vec<SeverityTarget> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let field = |name: &str| format!("sla_policy.targets[{i}].{name}");
            let severity = severity(v, &field("severity"), t.severity);
            let first_response = sla_duration(
                v,
                &field("first_response"),
                t.first_response.as_ref(),
                sla::MAX_FIRST_RESPONSE_SECS,
                "90 days",
            );
            let resolution = sla_duration(
                v,
                &field("resolution"),
                t.resolution.as_ref(),
                sla::MAX_RESOLUTION_SECS,
                "365 days",
            );
            if let (Some(first), Some(resolve)) = (first_response, resolution)
                && resolve < first
            {
                v.add(
                    field("resolution"),
                    "must not be shorter than first_response",
                );
            }
            SeverityTarget {
                severity,
                first_response_secs: first_response.unwrap_or_default(),
                resolution_secs: resolution.unwrap_or_default(),
            }
        })
        .collect();
    let mut severities: Vec<Severity> = out.iter().map(|t| t.severity).collect();
    severities.sort();
    severities.dedup();
    if severities.len() != out.len() || severities.len() != Severity::ALL.len() {
        v.add(
            "sla_policy.targets",
            "needs exactly one target per severity",
        );
    }
    out.sort_by_key(|t| t.severity);
    out
}

/// A required SLA duration: whole seconds, 1 minute to `max_secs` (`max_text` in words).
fn sla_duration(
    v: &mut Violations,
    field: &str,
    duration: Option<&prost_types::Duration>,
    max_secs: i64,
    max_text: &str,
) -> Option<i64> {
    match duration {
        None => {
            v.add(field, format!("required: 1 minute to {max_text}"));
            None
        }
        Some(d) if d.nanos != 0 => {
            v.add(field, "must be whole seconds");
            None
        }
        Some(d) if !(sla::MIN_TARGET_SECS..=max_secs).contains(&d.seconds) => {
            v.add(field, format!("must be 1 minute to {max_text}"));
            None
        }
        Some(d) => Some(d.seconds),
    }
}

/// A resolution (code required).
pub fn resolution(v: &mut Violations, r: Option<&pb::TicketResolution>) -> Option<Resolution> {
    let Some(r) = r else {
        v.add("resolution.code", "required");
        return None;
    };
    let code = match pb::ResolutionCode::try_from(r.code).ok() {
        Some(pb::ResolutionCode::Fixed) => Some(ResolutionCode::Fixed),
        Some(pb::ResolutionCode::Compensated) => Some(ResolutionCode::Compensated),
        Some(pb::ResolutionCode::Explained) => Some(ResolutionCode::Explained),
        Some(pb::ResolutionCode::Duplicate) => Some(ResolutionCode::Duplicate),
        Some(pb::ResolutionCode::NotActionable) => Some(ResolutionCode::NotActionable),
        Some(pb::ResolutionCode::Unspecified) | None => {
            v.add("resolution.code", "required: one of the resolution codes");
            None
        }
    };
    check(v, "resolution.note", text::length(&r.note, 0, 5000));
    let compensation = r.compensation.as_ref().map(|m| {
        if !(0..=ticket::MAX_AMOUNT_MINOR).contains(&m.amount_minor) {
            v.add(
                "resolution.compensation.amount_minor",
                "must be 0-1,000,000,000,000,000 (10^15)",
            );
        }
        if m.currency.len() != 3 || !m.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            v.add(
                "resolution.compensation.currency",
                "must be an ISO-4217 code such as CNY",
            );
        }
        Money {
            amount_minor: m.amount_minor,
            currency: m.currency.clone(),
        }
    });
    code.map(|code| Resolution {
        code,
        note: r.note.clone(),
        compensation,
    })
}

/// A required review subject under `field`.
pub fn subject(v: &mut Violations, field: &str, s: Option<&pb::ReviewSubject>) -> Option<Subject> {
    let Some(s) = s else {
        v.add(field, "required");
        return None;
    };
    let kind = match pb::ReviewSubjectKind::try_from(s.kind).ok() {
        Some(pb::ReviewSubjectKind::Product) => Some(SubjectKind::Product),
        Some(pb::ReviewSubjectKind::Service) => Some(SubjectKind::Service),
        _ => {
            v.add(format!("{field}.kind"), "required: PRODUCT or SERVICE");
            None
        }
    };
    if let Err(e) = text::printable_id(&s.subject_id) {
        v.add(format!("{field}.subject_id"), e);
    }
    kind.map(|kind| Subject {
        kind,
        id: s.subject_id.clone(),
    })
}
