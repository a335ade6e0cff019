//! One customer's facts: the `customer_facts` row with its activities, loyalty memberships and
//! the memberships of segments a rule may reference. The in-process evaluator reads exactly
//! this; the SQL compiler reads the same tables, so the two see the same data.
//!
//! Unset values: empty strings, `None`, empty lists. Activity aggregates are never stored:
//! they are computed from `activities` at evaluation time.
//!
//! Net spend: a purchase carries what its refunds add up to (`Activity::refunded_minor`, kept
//! on the purchase row by the store), so every reader of purchases asks the same two questions
//! of it: [`Activity::counts_as_purchase`] and [`Activity::net_amount`].

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::computed::ComputedValue;

/// Everything a rule can test about one customer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub customer_id: String,
    pub customer_create_time: Option<DateTime<Utc>>,
    pub country: String,
    pub region: String,
    pub city: String,
    pub birth_date: Option<NaiveDate>,
    /// Enum slugs as profiles' value names without prefix, lower case ("female").
    pub gender: String,
    pub income_band: String,
    pub occupation: String,
    pub education: String,
    pub interests: Vec<String>,
    pub lifestyle_tags: Vec<String>,
    pub tags: Vec<String>,
    /// Typed custom attributes by name; absent names are unset.
    pub attributes: BTreeMap<String, AttributeValue>,
    pub consents: Consents,
    /// Purchases and interactions within the retained history.
    pub activities: Vec<Activity>,
    /// One entry per loyalty program the customer is enrolled in.
    pub loyalty: Vec<LoyaltyMembership>,
    pub feedback: FeedbackFacts,
    pub rfm: RfmFacts,
    pub lifecycle: LifecycleFacts,
    /// The customer's predictions from the current model (`predicted.*`); `None` before a
    /// fit, or when they had no purchase by then.
    pub prediction: Option<PredictionFacts>,
    /// Segments the customer is currently a member of (for segment references).
    pub segments: BTreeSet<Uuid>,
    /// Custom events within the retained history; loaded only for rules that read them
    /// (`Rule::event_types`, `store::custom_events::load_into`), of the types they read.
    pub events: Vec<CustomEvent>,
    /// Stored computed trait values by trait name (`customer_computed_traits`); a trait
    /// absent here reads its value over nothing (`domain::computed::value_over_nothing`).
    pub computed: BTreeMap<String, ComputedValue>,
}

/// One custom event (profiles `CustomEvent`), with the property values the feed carries.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomEvent {
    pub activity_id: String,
    pub event_type: String,
    pub occur_time: DateTime<Utc>,
    pub properties: BTreeMap<String, PropertyValue>,
}

/// A custom event's property value. An empty string reads as unset.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    String(String),
    Number(f64),
    Bool(bool),
    /// Whole microseconds (as Postgres stores them).
    Time(DateTime<Utc>),
    Money(Money),
}

/// A customer's stored predictions (prediction.proto `CustomerPrediction`), as rules read them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PredictionFacts {
    pub probability_alive: f64,
    pub expected_purchases_90d: f64,
    /// Minor units of the model's currency.
    pub expected_value_minor: i64,
    /// Minor units of the model's currency.
    pub clv_minor: i64,
    pub churn_risk: bool,
}

/// A custom attribute's value, typed as its profiles definition says.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    String(String),
    Integer(i64),
    Double(f64),
    Bool(bool),
    Timestamp(DateTime<Utc>),
    Date(NaiveDate),
}

/// Marketing consent currently granted per contact channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Consents {
    pub sms: bool,
    pub email: bool,
    pub app_push: bool,
    pub wechat: bool,
}

/// What kind of activity a row is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ActivityKind {
    Purchase,
    /// An interaction: "visit", "browse", "support_contact" or "campaign_response".
    Interaction(String),
}

impl ActivityKind {
    /// The `customer_activities.kind` column value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Purchase => "purchase",
            Self::Interaction(kind) => kind,
        }
    }

    /// The kind stored as `value` in `customer_activities.kind`.
    pub fn from_column(value: &str) -> Self {
        if value == "purchase" {
            Self::Purchase
        } else {
            Self::Interaction(value.to_owned())
        }
    }
}

/// One purchase or interaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub activity_id: String,
    pub kind: ActivityKind,
    pub occur_time: DateTime<Utc>,
    /// Purchases only: the amount in minor units and its ISO-4217 currency.
    pub amount: Option<Money>,
    pub categories: Vec<String>,
    pub channel: String,
    /// Purchases only: the minor units refunded against this purchase's order in its currency
    /// (the sum of the refunds the store matched to it); 0 when none, and for interactions.
    pub refunded_minor: i64,
}

impl Activity {
    /// Whether the activity is a purchase that still counts: a purchase refunded in full
    /// (something refunded, and at least its amount) is as if it never happened for counts,
    /// first and last purchase times, categories, channels, RFM, lifecycle and predictions.
    pub fn counts_as_purchase(&self) -> bool {
        self.kind == ActivityKind::Purchase && !self.refunded_in_full()
    }

    /// Whether refunds took back the whole purchase. SQL: `store::facts::COUNTS_AS_PURCHASE`.
    pub fn refunded_in_full(&self) -> bool {
        self.refunded_minor > 0
            && self
                .amount
                .as_ref()
                .is_none_or(|m| self.refunded_minor >= m.amount_minor)
    }

    /// The purchase's amount less its refunds, which take back at most what was paid (so a
    /// net amount is never below 0, and an amount below 0, which only an older feed could
    /// have recorded, stays as it was); `None` without an amount. SQL: `store::facts::NET_AMOUNT`.
    pub fn net_amount(&self) -> Option<Money> {
        self.amount.as_ref().map(|m| Money {
            amount_minor: m.amount_minor - self.refunded_minor.min(m.amount_minor.max(0)),
            currency: m.currency.clone(),
        })
    }
}

/// An amount in minor units of a currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}

/// A membership in one loyalty program.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoyaltyMembership {
    pub loyalty_program_id: String,
    pub tier: String,
    pub points: i64,
    pub qualifying_points: i64,
    pub enroll_time: Option<DateTime<Utc>>,
}

/// Latest survey answers and open tickets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedbackFacts {
    pub last_nps_score: Option<i32>,
    pub last_nps_time: Option<DateTime<Utc>>,
    pub last_csat_score: Option<i32>,
    pub last_csat_time: Option<DateTime<Utc>>,
    pub open_ticket_count: i32,
}

impl FeedbackFacts {
    /// "promoter" (9–10), "passive" (7–8), "detractor" (0–6), or "" when never answered.
    pub fn last_nps_category(&self) -> &'static str {
        match self.last_nps_score {
            Some(9..) => "promoter",
            Some(7..=8) => "passive",
            Some(_) => "detractor",
            None => "",
        }
    }
}

/// Stored RFM values (see rfm.proto); scores 0 and group "" when not scored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RfmFacts {
    pub recency_days: Option<i32>,
    pub frequency: i64,
    pub monetary_minor: i64,
    pub recency_score: i32,
    pub frequency_score: i32,
    pub monetary_score: i32,
    /// Group slug, e.g. "champions"; "" when not scored.
    pub group: String,
    pub score_time: Option<DateTime<Utc>>,
}

/// Stored lifecycle values (see lifecycle.proto).
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleFacts {
    /// Stage slug, e.g. "at_risk".
    pub stage: String,
    pub stage_start_time: DateTime<Utc>,
    pub previous_stage: String,
    pub churn_risk: bool,
    pub churn_risk_score: f64,
}

impl Default for LifecycleFacts {
    fn default() -> Self {
        Self {
            stage: "prospect".to_owned(),
            stage_start_time: DateTime::<Utc>::UNIX_EPOCH,
            previous_stage: String::new(),
            churn_risk: false,
            churn_risk_score: 0.0,
        }
    }
}

/// The moment a rule is evaluated at: the instant T and the calendar date of T in the
/// deployment's time zone (for age and birthdays). Both evaluators receive the same pair; the
/// date is computed by Postgres (`(T AT TIME ZONE zone)::date`), so no zone database is needed
/// in-process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalContext {
    pub now: DateTime<Utc>,
    pub today: NaiveDate,
}
