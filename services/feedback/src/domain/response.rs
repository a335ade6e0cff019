//! Invitations and responses: validating answers against their survey, deriving the NPS /
//! CSAT / CES scores, and deciding whether the closed loop opens a follow-up.

use chrono::{DateTime, Utc};
use custops_common::error::Violations;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::survey::{QuestionKind, Survey, Touchpoint};
use super::text;

/// Why an answer has no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Omission {
    /// Passed over (optional questions only).
    Skipped,
    /// Explicitly declined; allowed on required questions, makes the response incomplete.
    Dismissed,
}

/// The value of one answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerValue {
    /// NPS, CSAT or CES score.
    Score(i32),
    /// Selected option ids.
    Choice(Vec<String>),
    /// Free text.
    Text(String),
    /// No answer.
    Omitted(Omission),
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The question answered.
    pub question_id: String,
    /// The value.
    pub value: AnswerValue,
}

/// One metric's slot in a response: the score, or whether the question was omitted.
/// `score: None, omitted: false` means the survey has no such question.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScoreSlot {
    /// The score given.
    pub score: Option<i32>,
    /// The survey asks it but the answer was skipped or dismissed.
    pub omitted: bool,
}

/// The scores a response feeds into metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scores {
    /// NPS, 0–10.
    pub nps: ScoreSlot,
    /// CSAT, 1–5.
    pub csat: ScoreSlot,
    /// CES, 1–7.
    pub ces: ScoreSlot,
}

/// NPS category of a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpsCategory {
    /// 9–10.
    Promoter,
    /// 7–8.
    Passive,
    /// 0–6.
    Detractor,
}

impl NpsCategory {
    /// The category of an NPS score 0–10.
    pub fn of(score: i32) -> Self {
        match score {
            9.. => NpsCategory::Promoter,
            7..=8 => NpsCategory::Passive,
            _ => NpsCategory::Detractor,
        }
    }
}

/// What makes a response open a follow-up ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUpTrigger {
    /// NPS 0–6.
    NpsDetractor,
    /// CSAT 1–2.
    LowCsat,
}

impl FollowUpTrigger {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            FollowUpTrigger::NpsDetractor => "nps_detractor",
            FollowUpTrigger::LowCsat => "low_csat",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "nps_detractor" => Some(FollowUpTrigger::NpsDetractor),
            "low_csat" => Some(FollowUpTrigger::LowCsat),
            _ => None,
        }
    }
}

impl Scores {
    /// The closed-loop triggers these scores fire, in a fixed order.
    pub fn follow_up_triggers(&self) -> Vec<FollowUpTrigger> {
        let mut triggers = Vec::new();
        if self.nps.score.is_some_and(|s| s <= 6) {
            triggers.push(FollowUpTrigger::NpsDetractor);
        }
        if self.csat.score.is_some_and(|s| s <= 2) {
            triggers.push(FollowUpTrigger::LowCsat);
        }
        triggers
    }
}

/// Answers checked against their survey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluatedAnswers {
    /// The answers, in the order given, with optional questions left out recorded as
    /// skipped.
    pub answers: Vec<Answer>,
    /// Derived scores.
    pub scores: Scores,
    /// No required question was dismissed.
    pub completed: bool,
}

/// Validates `answers` against `survey` and derives the scores. Violations are recorded in `v`
/// under the field of the SubmitResponse request (`answers[i].score`, `answers[i].question_id`,
/// …); the answers evaluated are meaningful only when none was recorded.
pub fn evaluate(survey: &Survey, answers: Vec<Answer>, v: &mut Violations) -> EvaluatedAnswers {
    let mut seen = std::collections::HashSet::new();
    let mut scores = Scores::default();
    let mut completed = true;
    for (i, answer) in answers.iter().enumerate() {
        let at = format!("answers[{i}]");
        let Some(question) = survey.question(&answer.question_id) else {
            v.add(
                format!("{at}.question_id"),
                format!("`{}` is not a question of this survey", answer.question_id),
            );
            continue;
        };
        if !seen.insert(question.id.as_str()) {
            v.add(
                format!("{at}.question_id"),
                "answers the same question twice",
            );
            continue;
        }
        let slot = match question.kind {
            QuestionKind::Nps => Some(&mut scores.nps),
            QuestionKind::Csat => Some(&mut scores.csat),
            QuestionKind::Ces => Some(&mut scores.ces),
            QuestionKind::SingleChoice | QuestionKind::MultipleChoice | QuestionKind::FreeText => {
                None
            }
        };
        match (&answer.value, question.kind.score_range()) {
            (AnswerValue::Omitted(omission), _) => {
                if question.required && *omission == Omission::Skipped {
                    v.add(
                        format!("{at}.omission"),
                        "a required question cannot be skipped (dismiss it instead)",
                    );
                }
                if question.required {
                    completed = false;
                }
                if let Some(slot) = slot {
                    slot.omitted = true;
                }
            }
            (AnswerValue::Score(score), Some((low, high))) => {
                if (low..=high).contains(score) {
                    if let Some(slot) = slot {
                        slot.score = Some(*score);
                    }
                } else {
                    v.add(
                        format!("{at}.score"),
                        format!("must be {low}-{high} for this question, got {score}"),
                    );
                }
            }
            (AnswerValue::Choice(ids), None) if question.kind != QuestionKind::FreeText => {
                check_choice(question, ids, &at, v);
            }
            (AnswerValue::Text(body), None) if question.kind == QuestionKind::FreeText => {
                if let Err(e) = text::length(body, 1, 5000) {
                    v.add(format!("{at}.text"), e);
                }
            }
            (value, _) => {
                let field = match value {
                    AnswerValue::Score(_) => "score",
                    AnswerValue::Choice(_) => "choice",
                    AnswerValue::Text(_) => "text",
                    AnswerValue::Omitted(_) => "omission",
                };
                v.add(
                    format!("{at}.{field}"),
                    format!("wrong kind of answer for a {:?} question", question.kind),
                );
            }
        }
    }
    let mut all = answers;
    for question in &survey.content.questions {
        if seen.contains(question.id.as_str()) {
            continue;
        }
        if question.required {
            v.add(
                "answers",
                format!("required question `{}` is missing", question.id),
            );
        } else {
            let slot = match question.kind {
                QuestionKind::Nps => Some(&mut scores.nps),
                QuestionKind::Csat => Some(&mut scores.csat),
                QuestionKind::Ces => Some(&mut scores.ces),
                QuestionKind::SingleChoice
                | QuestionKind::MultipleChoice
                | QuestionKind::FreeText => None,
            };
            if let Some(slot) = slot {
                slot.omitted = true;
            }
            all.push(Answer {
                question_id: question.id.clone(),
                value: AnswerValue::Omitted(Omission::Skipped),
            });
        }
    }
    EvaluatedAnswers {
        answers: all,
        scores,
        completed,
    }
}

fn check_choice(question: &super::survey::Question, ids: &[String], at: &str, v: &mut Violations) {
    if ids.is_empty() {
        v.add(
            format!("{at}.choice.option_ids"),
            "select at least one option",
        );
        return;
    }
    if question.kind == QuestionKind::SingleChoice && ids.len() > 1 {
        v.add(
            format!("{at}.choice.option_ids"),
            "select exactly one option",
        );
    }
    if question.kind == QuestionKind::MultipleChoice
        && question.max_selections > 0
        && ids.len() > question.max_selections as usize
    {
        v.add(
            format!("{at}.choice.option_ids"),
            format!("select at most {} options", question.max_selections),
        );
    }
    let mut seen = std::collections::HashSet::new();
    for (j, id) in ids.iter().enumerate() {
        if !question.options.iter().any(|o| &o.id == id) {
            v.add(
                format!("{at}.choice.option_ids[{j}]"),
                format!("`{id}` is not an option of this question"),
            );
        } else if !seen.insert(id.as_str()) {
            v.add(format!("{at}.choice.option_ids[{j}]"), "selected twice");
        }
    }
}

/// Invitation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationStatus {
    /// Awaiting a response.
    Pending,
    /// Answered.
    Responded,
    /// Expired or its survey closed.
    Expired,
}

impl InvitationStatus {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationStatus::Pending => "pending",
            InvitationStatus::Responded => "responded",
            InvitationStatus::Expired => "expired",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => InvitationStatus::Pending,
            "responded" => InvitationStatus::Responded,
            "expired" => InvitationStatus::Expired,
            _ => return None,
        })
    }
}

/// A new invitation as requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvitation {
    /// Survey.
    pub survey_id: Uuid,
    /// Customer.
    pub customer_id: String,
    /// Touchpoint.
    pub touchpoint: Touchpoint,
    /// Channel slug, may be empty.
    pub channel: String,
    /// Expiry, if any.
    pub expire_time: Option<DateTime<Utc>>,
}

/// A stored invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Id.
    pub id: Uuid,
    /// What was requested.
    pub new: NewInvitation,
    /// Status (EXPIRED also when `expire_time` has passed).
    pub status: InvitationStatus,
    /// The response, once responded.
    pub response_id: Option<Uuid>,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Responded.
    pub respond_time: Option<DateTime<Utc>>,
}

/// A response as submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// The invitation answered.
    pub invitation_id: Uuid,
    /// Answers as given.
    pub answers: Vec<Answer>,
    /// Channel slug; empty means the invitation's.
    pub channel: String,
}

/// Reward delivery status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewardStatus {
    /// Queued.
    Pending,
    /// Failed at least once, will be retried.
    Retrying,
    /// Paid.
    Delivered,
    /// Refused by loyalty for good.
    Rejected,
}

impl RewardStatus {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            RewardStatus::Pending => "pending",
            RewardStatus::Retrying => "retrying",
            RewardStatus::Delivered => "delivered",
            RewardStatus::Rejected => "rejected",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => RewardStatus::Pending,
            "retrying" => RewardStatus::Retrying,
            "delivered" => RewardStatus::Delivered,
            "rejected" => RewardStatus::Rejected,
            _ => return None,
        })
    }
}

/// The reward of a response and its delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardDelivery {
    /// Status.
    pub status: RewardStatus,
    /// Points.
    pub points: i64,
    /// Loyalty program.
    pub program_id: String,
    /// Attempts so far.
    pub attempt_count: i32,
    /// Last attempt.
    pub last_attempt_time: Option<DateTime<Utc>>,
    /// Next attempt.
    pub next_attempt_time: Option<DateTime<Utc>>,
    /// Reason of the last failure.
    pub last_error_reason: String,
    /// Loyalty ledger entry, once delivered.
    pub ledger_entry_id: String,
    /// Delivered.
    pub deliver_time: Option<DateTime<Utc>>,
}

/// A reward leased for delivery: what the earn call and its outcome event need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueReward {
    /// The rewarded response.
    pub response_id: Uuid,
    /// Its survey.
    pub survey_id: Uuid,
    /// The customer to reward.
    pub customer_id: String,
    /// Points to grant.
    pub points: i64,
    /// Loyalty program.
    pub program_id: String,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
    /// The W3C `traceparent` of the call that queued the reward, continued by its delivery
    /// (empty: none).
    pub traceparent: String,
}

/// The request id feedback uses for loyalty's earn: derived from the response id, so every
/// retry of one reward carries the same key and loyalty pays it once.
pub fn reward_request_id(response_id: Uuid) -> String {
    format!("feedback-survey-reward-{response_id}")
}

/// A stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurveyResponse {
    /// Id.
    pub id: Uuid,
    /// Invitation.
    pub invitation_id: Uuid,
    /// Survey.
    pub survey_id: Uuid,
    /// Customer.
    pub customer_id: String,
    /// Touchpoint.
    pub touchpoint: Touchpoint,
    /// Channel.
    pub channel: String,
    /// Answers (optional questions not answered appear as skipped).
    pub answers: Vec<Answer>,
    /// Scores.
    pub scores: Scores,
    /// No required question dismissed.
    pub completed: bool,
    /// Follow-up ticket opened with it.
    pub follow_up_ticket_id: Option<Uuid>,
    /// Reward, if any.
    pub reward: Option<RewardDelivery>,
    /// Accepted.
    pub submit_time: DateTime<Utc>,
    /// When the customer's personal data was erased (profiles erasure).
    pub erase_time: Option<DateTime<Utc>>,
    /// Segments the customer belonged to at submission, as segmentation reported them.
    pub segment_ids: Vec<String>,
}
