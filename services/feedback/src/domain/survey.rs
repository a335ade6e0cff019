//! Surveys: questions of six kinds, a touchpoint target, an optional reward, and the
//! DRAFT → ACTIVE → CLOSED lifecycle.

use chrono::{DateTime, Utc};
use custops_common::error::Violations;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Rejection;
use super::text;

/// Most questions one survey may have.
pub const MAX_QUESTIONS: usize = 50;

/// What kind of answer a question takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuestionKind {
    /// Net Promoter Score, 0–10.
    Nps,
    /// Customer satisfaction, 1–5.
    Csat,
    /// Customer effort, 1–7.
    Ces,
    /// One option.
    SingleChoice,
    /// One or more options.
    MultipleChoice,
    /// Free text.
    FreeText,
}

impl QuestionKind {
    /// The valid score range of a score question.
    pub fn score_range(self) -> Option<(i32, i32)> {
        match self {
            QuestionKind::Nps => Some((0, 10)),
            QuestionKind::Csat => Some((1, 5)),
            QuestionKind::Ces => Some((1, 7)),
            QuestionKind::SingleChoice | QuestionKind::MultipleChoice | QuestionKind::FreeText => {
                None
            }
        }
    }

    fn is_choice(self) -> bool {
        matches!(
            self,
            QuestionKind::SingleChoice | QuestionKind::MultipleChoice
        )
    }
}

/// One option of a choice question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChoiceOption {
    /// Stable key within the question.
    pub id: String,
    /// As shown to the customer.
    pub label: String,
}

/// One question of a survey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    /// Stable key within the survey.
    pub id: String,
    /// As shown to the customer.
    pub text: String,
    /// Kind of answer.
    pub kind: QuestionKind,
    /// Whether every response must answer it (or dismiss it).
    pub required: bool,
    /// Options of a choice question.
    pub options: Vec<ChoiceOption>,
    /// Most options one MULTIPLE_CHOICE answer may select; 0 means no limit.
    pub max_selections: u32,
}

/// Kinds of touchpoint a survey may target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TouchpointKind {
    /// An order.
    Order,
    /// A support contact.
    SupportContact,
    /// A channel visit.
    Channel,
    /// The relationship as a whole.
    Relationship,
}

impl TouchpointKind {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            TouchpointKind::Order => "order",
            TouchpointKind::SupportContact => "support_contact",
            TouchpointKind::Channel => "channel",
            TouchpointKind::Relationship => "relationship",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "order" => TouchpointKind::Order,
            "support_contact" => TouchpointKind::SupportContact,
            "channel" => TouchpointKind::Channel,
            "relationship" => TouchpointKind::Relationship,
            _ => return None,
        })
    }
}

/// A touchpoint: its kind and the caller's id for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touchpoint {
    /// Kind.
    pub kind: TouchpointKind,
    /// The caller's id (order id, contact id, channel slug).
    pub id: String,
}

/// Whom a survey is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurveyTarget {
    /// Kind of touchpoint every invitation must be about.
    pub touchpoint_kind: TouchpointKind,
    /// Segment restriction; empty means every customer.
    pub segment_id: String,
}

/// Points granted through loyalty for a completed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reward {
    /// Points per completed response, 1–1,000,000.
    pub points: i64,
    /// The loyalty program.
    pub program_id: String,
}

/// Lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SurveyStatus {
    /// Being designed.
    Draft,
    /// Accepting invitations and responses.
    Active,
    /// Finished, terminal.
    Closed,
}

impl SurveyStatus {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            SurveyStatus::Draft => "draft",
            SurveyStatus::Active => "active",
            SurveyStatus::Closed => "closed",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "draft" => SurveyStatus::Draft,
            "active" => SurveyStatus::Active,
            "closed" => SurveyStatus::Closed,
            _ => return None,
        })
    }
}

/// The designer-controlled content of a survey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurveyContent {
    /// Operator-facing name.
    pub display_name: String,
    /// Operator-facing description.
    pub description: String,
    /// Questions in presentation order.
    pub questions: Vec<Question>,
    /// Target.
    pub target: SurveyTarget,
    /// Reward, if any.
    pub reward: Option<Reward>,
}

/// A stored survey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Content.
    pub content: SurveyContent,
    /// Status.
    pub status: SurveyStatus,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
    /// Activated.
    pub activate_time: Option<DateTime<Utc>>,
    /// Closed.
    pub close_time: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version; the etag is derived from it.
    pub version: i64,
}

impl Survey {
    /// The question with `id`.
    pub fn question(&self, id: &str) -> Option<&Question> {
        self.content.questions.iter().find(|q| q.id == id)
    }

    /// The opaque etag of this version.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// Which parts of a survey an update changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SurveyMask {
    /// `display_name`.
    pub display_name: bool,
    /// `description`.
    pub description: bool,
    /// `questions`.
    pub questions: bool,
    /// `target`.
    pub target: bool,
    /// `reward`.
    pub reward: bool,
}

/// Applies an update to `survey`, refusing changes its status forbids.
pub fn apply_update(
    survey: &mut Survey,
    mask: SurveyMask,
    new: SurveyContent,
) -> Result<(), Rejection> {
    match survey.status {
        SurveyStatus::Closed => {
            return Err(Rejection::SurveyClosed);
        }
        SurveyStatus::Active if mask.questions || mask.target => {
            return Err(Rejection::SurveyDesignFrozen);
        }
        SurveyStatus::Active | SurveyStatus::Draft => {}
    }
    let content = &mut survey.content;
    if mask.display_name {
        content.display_name = new.display_name;
    }
    if mask.description {
        content.description = new.description;
    }
    if mask.questions {
        content.questions = new.questions;
    }
    if mask.target {
        content.target = new.target;
    }
    if mask.reward {
        content.reward = new.reward;
    }
    Ok(())
}

/// Checks the questions of a survey, recording violations under `prefix`
/// (e.g. `survey.questions`).
pub fn check_questions(questions: &[Question], prefix: &str, v: &mut Violations) {
    if questions.len() > MAX_QUESTIONS {
        v.add(prefix, format!("at most {MAX_QUESTIONS} questions"));
    }
    let mut seen_ids = std::collections::HashSet::new();
    let mut seen_metric_kinds = std::collections::HashSet::new();
    for (i, q) in questions.iter().enumerate() {
        let at = format!("{prefix}[{i}]");
        if let Err(e) = text::key(&q.id) {
            v.add(format!("{at}.question_id"), e);
        } else if !seen_ids.insert(q.id.as_str()) {
            v.add(
                format!("{at}.question_id"),
                "repeats an earlier question_id",
            );
        }
        if let Err(e) = text::length(&q.text, 1, 1000) {
            v.add(format!("{at}.text"), e);
        }
        if q.kind.score_range().is_some() && !seen_metric_kinds.insert(q.kind) {
            v.add(
                format!("{at}.kind"),
                "at most one NPS, one CSAT and one CES question per survey",
            );
        }
        if q.kind.is_choice() {
            if q.options.len() < 2 || q.options.len() > 50 {
                v.add(
                    format!("{at}.options"),
                    "a choice question needs 2-50 options",
                );
            }
            let mut option_ids = std::collections::HashSet::new();
            for (j, o) in q.options.iter().enumerate() {
                if let Err(e) = text::key(&o.id) {
                    v.add(format!("{at}.options[{j}].option_id"), e);
                } else if !option_ids.insert(o.id.as_str()) {
                    v.add(
                        format!("{at}.options[{j}].option_id"),
                        "repeats an earlier option_id",
                    );
                }
                if let Err(e) = text::length(&o.label, 1, 500) {
                    v.add(format!("{at}.options[{j}].label"), e);
                }
            }
        } else if !q.options.is_empty() {
            v.add(
                format!("{at}.options"),
                "only choice questions have options",
            );
        }
        let max_ok = match q.kind {
            QuestionKind::MultipleChoice => q.max_selections as usize <= q.options.len(),
            _ => q.max_selections == 0,
        };
        if !max_ok {
            v.add(
                format!("{at}.max_selections"),
                "must be 0 (no limit) or at most the number of options, and 0 for other kinds",
            );
        }
    }
}

/// Checks the reward, recording violations under `prefix` (e.g. `survey.reward`).
pub fn check_reward(reward: &Reward, prefix: &str, v: &mut Violations) {
    if !(1..=1_000_000).contains(&reward.points) {
        v.add(format!("{prefix}.points"), "must be 1-1000000");
    }
    if Uuid::parse_str(&reward.program_id).is_err() {
        v.add(format!("{prefix}.program_id"), "must be a UUID");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: &str, kind: QuestionKind) -> Question {
        Question {
            id: id.to_owned(),
            text: "How?".to_owned(),
            kind,
            required: true,
            options: Vec::new(),
            max_selections: 0,
        }
    }

    fn fields(questions: &[Question]) -> Vec<String> {
        let mut v = Violations::new();
        check_questions(questions, "survey.questions", &mut v);
        match crate::error::invalid_fields(v) {
            Ok(()) => Vec::new(),
            Err(crate::error::Error::InvalidArgument(list)) => {
                list.into_iter().map(|f| f.field).collect()
            }
            Err(other) => vec![other.to_string()],
        }
    }

    #[test]
    fn question_rules_name_the_field() {
        assert!(fields(&[q("nps", QuestionKind::Nps), q("csat", QuestionKind::Csat)]).is_empty());
        assert_eq!(
            fields(&[
                q("nps", QuestionKind::Nps),
                q("nps", QuestionKind::FreeText)
            ]),
            ["survey.questions[1].question_id"]
        );
        assert_eq!(
            fields(&[q("a", QuestionKind::Nps), q("b", QuestionKind::Nps)]),
            ["survey.questions[1].kind"]
        );
        assert_eq!(
            fields(&[q("pick", QuestionKind::SingleChoice)]),
            ["survey.questions[0].options"]
        );
    }
}
