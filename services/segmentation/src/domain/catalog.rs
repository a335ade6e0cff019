//! The field catalog: every field a rule may test, its value type, operators, allowed values,
//! window and filter support. Built-in fields are fixed here; custom attributes and loyalty
//! tiers are added from what the feeds taught (`store::catalog::load_catalog`).
//!
//! `time_dependent` marks fields whose value moves with the clock alone: age and days until
//! birthday (from today), and every stored RFM and lifecycle value (recency grows, windows
//! roll and stages decay without any event). Timestamps compared with WITHIN_LAST and windowed
//! aggregates make a rule time-dependent through the operator or window instead
//! (`Rule::time_dependent`).

use std::collections::BTreeMap;

use super::computed::TraitField;
use super::rule::Aggregate;

mod events;

pub use events::{EventTypeDef, PropertyType};

/// The kind of value a field holds (field_catalog.proto `ValueType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    String,
    Integer,
    Double,
    Bool,
    Timestamp,
    Date,
    Money,
    Enum,
    StringList,
}

/// A comparison operator (rule.proto `Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    Equals,
    NotEquals,
    LessThan,
    LessOrEqual,
    GreaterThan,
    GreaterOrEqual,
    In,
    NotIn,
    Between,
    StartsWith,
    /// String field ends with the value (case-sensitive).
    EndsWith,
    /// String field matches a `LIKE` pattern (`domain::pattern`).
    MatchesPattern,
    Contains,
    NotContains,
    ContainsAny,
    ContainsAll,
    IsSet,
    IsNotSet,
    WithinLast,
    NotWithinLast,
    Before,
    After,
}

/// A dimension a predicate filter may narrow (field_catalog.proto `FilterDimension`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterDimension {
    Category,
    Channel,
    InteractionKind,
    LoyaltyProgram,
}

/// Where a field's value comes from (field_catalog.proto `FieldSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldSource {
    Profiles,
    Loyalty,
    Feedback,
    Derived,
}

/// What a field reads in the facts; both evaluators dispatch on it, never on the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldKey {
    CustomerCreateTime,
    Country,
    Region,
    City,
    BirthDate,
    Age,
    DaysUntilBirthday,
    Gender,
    IncomeBand,
    Occupation,
    Education,
    Interests,
    LifestyleTags,
    Tags,
    /// `attributes.<name>`, typed by its definition.
    Attribute(String),
    ConsentSms,
    ConsentEmail,
    ConsentAppPush,
    ConsentWechat,
    PurchaseCount,
    PurchaseAmount,
    PurchaseFirstTime,
    PurchaseLastTime,
    PurchaseCategories,
    PurchaseChannels,
    InteractionCount,
    InteractionLastTime,
    RfmGroup,
    RfmRecencyScore,
    RfmFrequencyScore,
    RfmMonetaryScore,
    RfmRecencyDays,
    RfmFrequency,
    RfmMonetary,
    LifecycleStage,
    LifecycleStageStartTime,
    LifecycleChurnRisk,
    LifecycleChurnRiskScore,
    PredictedProbabilityAlive,
    PredictedPurchases90d,
    PredictedTransactionValue,
    PredictedClv,
    PredictedChurnRisk,
    /// `computed.<name>`: the stored value of a computed trait whose measure is `aggregate`
    /// (which says its type and whether a customer without a value reads 0).
    Computed {
        name: String,
        aggregate: Aggregate,
    },
    LoyaltyTier,
    LoyaltyPoints,
    LoyaltyQualifyingPoints,
    LoyaltyEnrollTime,
    FeedbackLastNpsScore,
    FeedbackLastNpsCategory,
    FeedbackLastNpsTime,
    FeedbackLastCsatScore,
    FeedbackOpenTicketCount,
}

/// One catalog entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDef {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub value_type: ValueType,
    pub operators: Vec<Operator>,
    pub allowed_values: Vec<String>,
    pub windowed: bool,
    pub filter_dimensions: Vec<FilterDimension>,
    pub source: FieldSource,
    pub time_dependent: bool,
    /// What the field reads.
    pub key: FieldKey,
    /// True for counts, sums, booleans and other values every customer has (IS_SET and
    /// IS_NOT_SET are not offered).
    pub always_set: bool,
}

/// The custom attribute types profiles defines (`attribute_definitions.value_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeType {
    String,
    Integer,
    Double,
    Bool,
    Timestamp,
    Date,
}

impl AttributeType {
    /// The type stored as `value` in `attribute_definitions.value_type`.
    pub fn from_column(value: &str) -> Option<Self> {
        Some(match value {
            "string" => Self::String,
            "integer" => Self::Integer,
            "double" => Self::Double,
            "bool" => Self::Bool,
            "timestamp" => Self::Timestamp,
            "date" => Self::Date,
            _ => return None,
        })
    }

    /// The key of the typed JSON object in `customer_facts.attributes`.
    pub fn json_key(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Double => "double",
            Self::Bool => "bool",
            Self::Timestamp => "timestamp",
            Self::Date => "date",
        }
    }

    fn value_type(self) -> ValueType {
        match self {
            Self::String => ValueType::String,
            Self::Integer => ValueType::Integer,
            Self::Double => ValueType::Double,
            Self::Bool => ValueType::Bool,
            Self::Timestamp => ValueType::Timestamp,
            Self::Date => ValueType::Date,
        }
    }
}

/// A custom attribute definition as the profiles feed taught it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeDefinition {
    pub name: String,
    pub value_type: AttributeType,
    pub display_name: String,
    pub description: String,
}

/// Prefix of custom attribute fields.
pub const ATTRIBUTE_PREFIX: &str = "attributes.";

/// Interaction kinds profiles records (`PredicateFilter.interaction_kinds`).
pub const INTERACTION_KINDS: [&str; 4] =
    ["visit", "browse", "support_contact", "campaign_response"];

/// `rfm.group` slugs (rfm.proto `RfmGroup`).
pub const RFM_GROUPS: [&str; 11] = [
    "champions",
    "loyal",
    "potential_loyalist",
    "new_customers",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cannot_lose",
    "hibernating",
    "lost",
];

/// `lifecycle.stage` slugs (lifecycle.proto `LifecycleStage`).
pub const LIFECYCLE_STAGES: [&str; 7] = [
    "prospect",
    "new",
    "active",
    "at_risk",
    "dormant",
    "churned",
    "reactivated",
];

/// `feedback.last_nps_category` slugs.
pub const NPS_CATEGORIES: [&str; 3] = ["promoter", "passive", "detractor"];

/// `demographics.gender` slugs (profiles `Gender`).
pub const GENDERS: [&str; 4] = ["female", "male", "non_binary", "prefer_not_to_say"];

/// `demographics.income_band` slugs (profiles `IncomeBand`).
pub const INCOME_BANDS: [&str; 6] = [
    "low",
    "lower_middle",
    "middle",
    "upper_middle",
    "high",
    "prefer_not_to_say",
];

/// `demographics.education` slugs (profiles `EducationLevel`).
pub const EDUCATION_LEVELS: [&str; 8] = [
    "primary",
    "secondary",
    "vocational",
    "associate",
    "bachelor",
    "master",
    "doctorate",
    "prefer_not_to_say",
];

/// The operators that fit a value type; `always_set` drops IS_SET / IS_NOT_SET.
pub fn operators_for(value_type: ValueType, always_set: bool) -> Vec<Operator> {
    use Operator as O;
    let mut operators = match value_type {
        ValueType::String => vec![
            O::Equals,
            O::NotEquals,
            O::In,
            O::NotIn,
            O::StartsWith,
            O::EndsWith,
            O::MatchesPattern,
        ],
        ValueType::Integer | ValueType::Double => vec![
            O::Equals,
            O::NotEquals,
            O::LessThan,
            O::LessOrEqual,
            O::GreaterThan,
            O::GreaterOrEqual,
            O::In,
            O::NotIn,
            O::Between,
        ],
        ValueType::Bool => vec![O::Equals, O::NotEquals],
        ValueType::Timestamp => vec![
            O::Before,
            O::After,
            O::Between,
            O::WithinLast,
            O::NotWithinLast,
        ],
        ValueType::Date => vec![O::Equals, O::NotEquals, O::Before, O::After, O::Between],
        ValueType::Money => vec![
            O::Equals,
            O::NotEquals,
            O::LessThan,
            O::LessOrEqual,
            O::GreaterThan,
            O::GreaterOrEqual,
            O::Between,
        ],
        ValueType::Enum => vec![O::Equals, O::NotEquals, O::In, O::NotIn],
        ValueType::StringList => vec![O::Contains, O::NotContains, O::ContainsAny, O::ContainsAll],
    };
    if !always_set {
        operators.extend([O::IsSet, O::IsNotSet]);
    }
    operators
}

/// The fields a rule may use, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    fields: BTreeMap<String, FieldDef>,
    /// Custom event types by name (`catalog/events.rs`).
    event_types: BTreeMap<String, EventTypeDef>,
}

struct Spec {
    name: &'static str,
    display_name: &'static str,
    description: &'static str,
    value_type: ValueType,
    key: FieldKey,
    source: FieldSource,
    allowed: &'static [&'static str],
    windowed: bool,
    filters: &'static [FilterDimension],
    time_dependent: bool,
    always_set: bool,
}

impl Spec {
    fn new(
        name: &'static str,
        display_name: &'static str,
        description: &'static str,
        value_type: ValueType,
        key: FieldKey,
        source: FieldSource,
    ) -> Self {
        Self {
            name,
            display_name,
            description,
            value_type,
            key,
            source,
            allowed: &[],
            windowed: false,
            filters: &[],
            time_dependent: false,
            always_set: false,
        }
    }
    fn allowed(mut self, allowed: &'static [&'static str]) -> Self {
        self.allowed = allowed;
        self
    }
    fn activity(mut self, filters: &'static [FilterDimension]) -> Self {
        self.windowed = true;
        self.filters = filters;
        self
    }
    fn filters(mut self, filters: &'static [FilterDimension]) -> Self {
        self.filters = filters;
        self
    }
    fn time_dependent(mut self) -> Self {
        self.time_dependent = true;
        self
    }
    fn always_set(mut self) -> Self {
        self.always_set = true;
        self
    }
    fn build(self) -> FieldDef {
        FieldDef {
            name: self.name.to_owned(),
            display_name: self.display_name.to_owned(),
            description: self.description.to_owned(),
            value_type: self.value_type,
            operators: operators_for(self.value_type, self.always_set),
            allowed_values: self.allowed.iter().map(|s| (*s).to_owned()).collect(),
            windowed: self.windowed,
            filter_dimensions: self.filters.to_vec(),
            source: self.source,
            time_dependent: self.time_dependent,
            key: self.key,
            always_set: self.always_set,
        }
    }
}

fn builtin_specs() -> Vec<Spec> {
    use FieldKey as K;
    use FieldSource::{Derived, Feedback, Loyalty, Profiles};
    use FilterDimension::{Category, Channel, InteractionKind, LoyaltyProgram};
    use ValueType as T;
    const PURCHASE: &[FilterDimension] = &[Category, Channel];
    const INTERACTION: &[FilterDimension] = &[Channel, InteractionKind];
    const PROGRAM: &[FilterDimension] = &[LoyaltyProgram];
    vec![
        Spec::new("customer.create_time", "Customer since", "When the customer record was created in profiles.", T::Timestamp, K::CustomerCreateTime, Profiles),
        Spec::new("geo.country", "Country", "ISO 3166-1 alpha-2 country code, e.g. \"CN\".", T::String, K::Country, Profiles),
        Spec::new("geo.region", "Region", "Region, state or province.", T::String, K::Region, Profiles),
        Spec::new("geo.city", "City", "City.", T::String, K::City, Profiles),
        Spec::new("demographics.birth_date", "Birth date", "Calendar date of birth.", T::Date, K::BirthDate, Profiles),
        Spec::new("demographics.age", "Age", "Whole years since the birth date, as of today in the deployment's time zone (29 February birthdays count on 28 February in other years); unset without a birth date.", T::Integer, K::Age, Derived).time_dependent(),
        Spec::new("demographics.days_until_birthday", "Days until birthday", "Days from today to the next birthday, 0 on the day (29 February birthdays fall on 28 February in other years); unset without a birth date.", T::Integer, K::DaysUntilBirthday, Derived).time_dependent(),
        Spec::new("demographics.gender", "Gender", "Gender as recorded in profiles.", T::Enum, K::Gender, Profiles).allowed(&GENDERS),
        Spec::new("demographics.income_band", "Income band", "Income band as recorded in profiles.", T::Enum, K::IncomeBand, Profiles).allowed(&INCOME_BANDS),
        Spec::new("demographics.occupation", "Occupation", "Occupation, free text.", T::String, K::Occupation, Profiles),
        Spec::new("demographics.education", "Education", "Highest education level.", T::Enum, K::Education, Profiles).allowed(&EDUCATION_LEVELS),
        Spec::new("psychographics.interests", "Interests", "Interest slugs.", T::StringList, K::Interests, Profiles),
        Spec::new("psychographics.lifestyle_tags", "Lifestyle tags", "Lifestyle tag slugs.", T::StringList, K::LifestyleTags, Profiles),
        Spec::new("tags", "Tags", "Tags on the customer record.", T::StringList, K::Tags, Profiles),
        Spec::new("consent.sms", "SMS consent", "Marketing consent currently granted for SMS.", T::Bool, K::ConsentSms, Profiles).always_set(),
        Spec::new("consent.email", "Email consent", "Marketing consent currently granted for email.", T::Bool, K::ConsentEmail, Profiles).always_set(),
        Spec::new("consent.app_push", "App push consent", "Marketing consent currently granted for app push.", T::Bool, K::ConsentAppPush, Profiles).always_set(),
        Spec::new("consent.wechat", "WeChat consent", "Marketing consent currently granted for WeChat.", T::Bool, K::ConsentWechat, Profiles).always_set(),
        Spec::new("purchase.count", "Number of purchases", "Purchases in the window matching the filter, an order refunded in full not counted; 0 when none.", T::Integer, K::PurchaseCount, Profiles).activity(PURCHASE).always_set(),
        Spec::new("purchase.amount", "Purchase amount", "Net spend: sum of the amounts of purchases in the window matching the filter less their refunds (a refund counts at its purchase's time, takes back at most the purchase's amount, and only in the purchase's currency), in the compared value's currency (other currencies do not count); 0 when none.", T::Money, K::PurchaseAmount, Profiles).activity(PURCHASE).always_set(),
        Spec::new("purchase.first_time", "First purchase", "Time of the earliest purchase in the window matching the filter, orders refunded in full left out; unset when none.", T::Timestamp, K::PurchaseFirstTime, Profiles).activity(PURCHASE),
        Spec::new("purchase.last_time", "Last purchase", "Time of the latest purchase in the window matching the filter, orders refunded in full left out; unset when none.", T::Timestamp, K::PurchaseLastTime, Profiles).activity(PURCHASE),
        Spec::new("purchase.categories", "Purchased categories", "Product categories of the purchases in the window matching the filter, orders refunded in full left out.", T::StringList, K::PurchaseCategories, Profiles).activity(PURCHASE),
        Spec::new("purchase.channels", "Purchase channels", "Sales channels of the purchases in the window matching the filter, orders refunded in full left out.", T::StringList, K::PurchaseChannels, Profiles).activity(PURCHASE),
        Spec::new("interaction.count", "Number of interactions", "Interactions (visits, browsing, support contacts, campaign responses) in the window matching the filter; 0 when none.", T::Integer, K::InteractionCount, Profiles).activity(INTERACTION).always_set(),
        Spec::new("interaction.last_time", "Last interaction", "Time of the latest interaction in the window matching the filter; unset when none.", T::Timestamp, K::InteractionLastTime, Profiles).activity(INTERACTION),
        Spec::new("rfm.group", "RFM group", "Named RFM group; unset when not scored (never purchased).", T::Enum, K::RfmGroup, Derived).allowed(&RFM_GROUPS).time_dependent(),
        Spec::new("rfm.recency_score", "RFM recency score", "1–5, 5 = most recent; unset when not scored.", T::Integer, K::RfmRecencyScore, Derived).time_dependent(),
        Spec::new("rfm.frequency_score", "RFM frequency score", "1–5, 5 = most frequent; unset when not scored.", T::Integer, K::RfmFrequencyScore, Derived).time_dependent(),
        Spec::new("rfm.monetary_score", "RFM monetary score", "1–5, 5 = highest spend; unset when not scored.", T::Integer, K::RfmMonetaryScore, Derived).time_dependent(),
        Spec::new("rfm.recency_days", "RFM recency", "Whole days since the last purchase at the last scoring; unset when never purchased.", T::Integer, K::RfmRecencyDays, Derived).time_dependent(),
        Spec::new("rfm.frequency", "RFM frequency", "Purchases in the RFM window at the last scoring, orders refunded in full not counted; 0 when none.", T::Integer, K::RfmFrequency, Derived).time_dependent().always_set(),
        Spec::new("rfm.monetary", "RFM monetary value", "Net spend (purchases less their refunds) in the RFM window at the last scoring, in minor units of the RFM config's currency: other currencies at the config's currency_rates, currencies without a rate not counted; 0 when none.", T::Integer, K::RfmMonetary, Derived).time_dependent().always_set(),
        Spec::new("lifecycle.stage", "Lifecycle stage", "Current lifecycle stage.", T::Enum, K::LifecycleStage, Derived).allowed(&LIFECYCLE_STAGES).time_dependent(),
        Spec::new("lifecycle.stage_start_time", "Stage since", "When the customer entered the current lifecycle stage.", T::Timestamp, K::LifecycleStageStartTime, Derived).time_dependent(),
        Spec::new("lifecycle.churn_risk", "Churn risk", "True when the customer is flagged as at risk of churning.", T::Bool, K::LifecycleChurnRisk, Derived).time_dependent().always_set(),
        Spec::new("lifecycle.churn_risk_score", "Churn risk score", "Churn risk, 0–1.", T::Double, K::LifecycleChurnRiskScore, Derived).time_dependent().always_set(),
        Spec::new("predicted.p_alive", "Probability alive", "BG/NBD probability that the customer is still a customer, 0–1, from the current prediction model (prediction.proto); unset before a fit or without a purchase.", T::Double, K::PredictedProbabilityAlive, Derived),
        Spec::new("predicted.purchases_90d", "Expected purchases, 90 days", "BG/NBD expected purchases (transaction days) in the next 90 days; unset before a fit or without a purchase.", T::Double, K::PredictedPurchases90d, Derived),
        Spec::new("predicted.transaction_value", "Expected transaction value", "Gamma-Gamma expected value of a future transaction, in minor units of the model's currency (the RFM currency at fit time); unset before a fit or without a purchase.", T::Integer, K::PredictedTransactionValue, Derived),
        Spec::new("predicted.clv", "Predicted CLV", "Customer lifetime value over the prediction config's horizon, discounted, in minor units of the model's currency; unset before a fit or without a purchase.", T::Integer, K::PredictedClv, Derived),
        Spec::new("predicted.churn_risk", "Predicted churn risk", "True when the probability alive is below the prediction config's churn threshold; unset before a fit or without a purchase.", T::Bool, K::PredictedChurnRisk, Derived),
        Spec::new("loyalty.tier", "Loyalty tier", "Tier code in a loyalty program; with no program filter, any of the customer's memberships may match; unset when not enrolled.", T::Enum, K::LoyaltyTier, Loyalty).filters(PROGRAM),
        Spec::new("loyalty.points", "Loyalty points", "Spendable points balance in a loyalty program; unset when not enrolled.", T::Integer, K::LoyaltyPoints, Loyalty).filters(PROGRAM),
        Spec::new("loyalty.qualifying_points", "Qualifying points", "Tier-qualifying points in a loyalty program; unset when not enrolled.", T::Integer, K::LoyaltyQualifyingPoints, Loyalty).filters(PROGRAM),
        Spec::new("loyalty.enroll_time", "Enrolled", "When the customer enrolled in a loyalty program; unset when not enrolled.", T::Timestamp, K::LoyaltyEnrollTime, Loyalty).filters(PROGRAM),
        Spec::new("feedback.last_nps_score", "Last NPS score", "0–10 answer of the latest NPS survey; unset when never answered.", T::Integer, K::FeedbackLastNpsScore, Feedback),
        Spec::new("feedback.last_nps_category", "Last NPS category", "promoter (9–10), passive (7–8) or detractor (0–6) by the latest NPS answer; unset when never answered.", T::Enum, K::FeedbackLastNpsCategory, Feedback).allowed(&NPS_CATEGORIES),
        Spec::new("feedback.last_nps_time", "Last NPS answer", "When the latest NPS answer was given.", T::Timestamp, K::FeedbackLastNpsTime, Feedback),
        Spec::new("feedback.last_csat_score", "Last CSAT score", "Score of the latest CSAT answer; unset when never answered.", T::Integer, K::FeedbackLastCsatScore, Feedback),
        Spec::new("feedback.open_ticket_count", "Open tickets", "Support tickets currently open; 0 when none.", T::Integer, K::FeedbackOpenTicketCount, Feedback).always_set(),
    ]
}

impl Catalog {
    /// The built-in fields (no custom attributes, no known loyalty tiers).
    pub fn builtin() -> Catalog {
        let fields = builtin_specs()
            .into_iter()
            .map(|spec| (spec.name.to_owned(), spec.build()))
            .collect();
        Catalog {
            fields,
            ..Catalog::default()
        }
    }

    /// Adds `attributes.<name>` for each definition (a later definition of a name wins).
    pub fn with_attributes(
        mut self,
        definitions: impl IntoIterator<Item = AttributeDefinition>,
    ) -> Self {
        for definition in definitions {
            let name = format!("{ATTRIBUTE_PREFIX}{}", definition.name);
            let value_type = definition.value_type.value_type();
            let display_name = if definition.display_name.is_empty() {
                definition.name.clone()
            } else {
                definition.display_name
            };
            let description = if definition.description.is_empty() {
                format!("Custom attribute \"{}\" from profiles.", definition.name)
            } else {
                definition.description
            };
            let def = FieldDef {
                name: name.clone(),
                display_name,
                description,
                value_type,
                operators: operators_for(value_type, false),
                allowed_values: Vec::new(),
                windowed: false,
                filter_dimensions: Vec::new(),
                source: FieldSource::Profiles,
                time_dependent: false,
                key: FieldKey::Attribute(definition.name),
                always_set: false,
            };
            self.fields.insert(name, def);
        }
        self
    }

    /// Adds `computed.<name>` for each computed trait (`domain::computed`), source DERIVED, of
    /// its measure's value type; COUNT and SUM are always set (0 without a value).
    pub fn with_computed_traits(mut self, traits: impl IntoIterator<Item = TraitField>) -> Self {
        for field in traits {
            let name = field.field_name();
            let value_type = field.aggregate.value_type();
            let always_set = field.aggregate.always_set();
            let description = if field.description.is_empty() {
                format!(
                    "Computed trait \"{}\", version {}.",
                    field.name, field.version
                )
            } else {
                format!(
                    "{} (computed trait, version {}.)",
                    field.description, field.version
                )
            };
            let def = FieldDef {
                name: name.clone(),
                display_name: field.name.clone(),
                description,
                value_type,
                operators: operators_for(value_type, always_set),
                allowed_values: Vec::new(),
                windowed: false,
                filter_dimensions: Vec::new(),
                source: FieldSource::Derived,
                time_dependent: false,
                key: FieldKey::Computed {
                    name: field.name,
                    aggregate: field.aggregate,
                },
                always_set,
            };
            self.fields.insert(name, def);
        }
        self
    }

    /// Sets the allowed values of `loyalty.tier` to `tiers` (every known program's codes).
    pub fn with_loyalty_tiers(mut self, tiers: impl IntoIterator<Item = String>) -> Self {
        if let Some(def) = self.fields.get_mut("loyalty.tier") {
            let mut tiers: Vec<String> = tiers.into_iter().filter(|t| !t.is_empty()).collect();
            tiers.sort();
            tiers.dedup();
            def.allowed_values = tiers;
        }
        self
    }

    /// The entry named `field`.
    pub fn get(&self, field: &str) -> Option<&FieldDef> {
        self.fields.get(field)
    }

    /// Every entry, ordered by name.
    pub fn fields(&self) -> impl Iterator<Item = &FieldDef> {
        self.fields.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_lists_every_documented_field() {
        let catalog = Catalog::builtin();
        for name in [
            "customer.create_time",
            "geo.country",
            "geo.region",
            "geo.city",
            "demographics.birth_date",
            "demographics.age",
            "demographics.days_until_birthday",
            "demographics.gender",
            "demographics.income_band",
            "demographics.occupation",
            "demographics.education",
            "psychographics.interests",
            "psychographics.lifestyle_tags",
            "tags",
            "consent.sms",
            "consent.email",
            "consent.app_push",
            "consent.wechat",
            "purchase.count",
            "purchase.amount",
            "purchase.first_time",
            "purchase.last_time",
            "purchase.categories",
            "purchase.channels",
            "interaction.count",
            "interaction.last_time",
            "rfm.group",
            "rfm.recency_score",
            "rfm.frequency_score",
            "rfm.monetary_score",
            "rfm.recency_days",
            "rfm.frequency",
            "rfm.monetary",
            "lifecycle.stage",
            "lifecycle.stage_start_time",
            "lifecycle.churn_risk",
            "lifecycle.churn_risk_score",
            "predicted.p_alive",
            "predicted.purchases_90d",
            "predicted.transaction_value",
            "predicted.clv",
            "predicted.churn_risk",
            "loyalty.tier",
            "loyalty.points",
            "loyalty.qualifying_points",
            "loyalty.enroll_time",
            "feedback.last_nps_score",
            "feedback.last_nps_category",
            "feedback.last_nps_time",
            "feedback.last_csat_score",
            "feedback.open_ticket_count",
        ] {
            assert!(catalog.get(name).is_some(), "{name} missing");
        }
        assert_eq!(catalog.fields().count(), 51);
        let names: Vec<_> = catalog.fields().map(|f| f.name.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn attributes_and_tiers_extend_the_builtin_catalog() {
        let catalog = Catalog::builtin()
            .with_attributes([AttributeDefinition {
                name: "vip_level".to_owned(),
                value_type: AttributeType::Integer,
                display_name: String::new(),
                description: String::new(),
            }])
            .with_loyalty_tiers(["silver".to_owned(), "gold".to_owned(), "gold".to_owned()]);
        let Some(vip) = catalog.get("attributes.vip_level") else {
            panic!("attributes.vip_level missing");
        };
        assert_eq!(vip.value_type, ValueType::Integer);
        assert!(vip.operators.contains(&Operator::Between));
        let Some(tier) = catalog.get("loyalty.tier") else {
            panic!("loyalty.tier missing");
        };
        assert_eq!(tier.allowed_values, ["gold", "silver"]);
        assert_eq!(tier.filter_dimensions, [FilterDimension::LoyaltyProgram]);
    }
}
