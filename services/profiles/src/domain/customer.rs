//! The customer record: traits, lifecycle state, update-mask paths and merge survivorship.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{Consent, Identity};

/// Lifecycle state (`CustomerState` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerState {
    /// Live.
    Active = 1,
    /// Soft-deleted.
    Deleted = 2,
    /// Merged into another customer (tombstone).
    Merged = 3,
    /// Erased (tombstone without personal data).
    Erased = 4,
}

impl CustomerState {
    /// From the proto / stored number.
    pub fn from_number(n: i32) -> Option<Self> {
        Some(match n {
            1 => Self::Active,
            2 => Self::Deleted,
            3 => Self::Merged,
            4 => Self::Erased,
            _ => return None,
        })
    }

    /// The number.
    pub fn number(self) -> i16 {
        self as i16
    }
}

/// A typed custom attribute value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum AttributeValue {
    /// STRING.
    String(String),
    /// NUMBER (finite).
    Number(f64),
    /// BOOL.
    Bool(bool),
    /// TIME, as microseconds since the epoch.
    Time(i64),
}

impl AttributeValue {
    /// The `AttributeValueType` number this value has.
    pub fn value_type(&self) -> i16 {
        match self {
            AttributeValue::String(_) => 1,
            AttributeValue::Number(_) => 2,
            AttributeValue::Bool(_) => 3,
            AttributeValue::Time(_) => 4,
        }
    }
}

/// How the customer prefers to be contacted.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ChannelPreferences {
    /// Channel numbers, most preferred first.
    pub preferred_channels: Vec<i16>,
    /// BCP-47 tag.
    pub language_code: String,
    /// IANA zone.
    pub time_zone: String,
    /// Quiet hours (start minute, end minute).
    pub quiet_hours: Option<(i32, i32)>,
}

/// Everything about a customer that callers set directly (UpdateCustomer's fields).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Traits {
    /// Personal data.
    pub display_name: String,
    /// Personal data.
    pub given_name: String,
    /// Personal data.
    pub family_name: String,
    /// Date of birth.
    pub birth_date: Option<NaiveDate>,
    /// `Gender` number.
    pub gender: i16,
    /// `IncomeBand` number.
    pub income_band: i16,
    /// Free text.
    pub occupation: String,
    /// `EducationLevel` number.
    pub education_level: i16,
    /// ISO 3166-1 alpha-2, upper case.
    pub country_code: String,
    /// Region.
    pub region: String,
    /// City.
    pub city: String,
    /// Personal data.
    pub postal_code: String,
    /// Sorted, de-duplicated slugs.
    pub interests: Vec<String>,
    /// Sorted, de-duplicated slugs.
    pub lifestyle_tags: Vec<String>,
    /// Sorted, de-duplicated slugs.
    pub tags: Vec<String>,
    /// Declared attributes.
    pub custom_attributes: BTreeMap<String, AttributeValue>,
    /// Contact preferences.
    pub channel_preferences: ChannelPreferences,
}

/// The stored customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    /// Id (UUIDv7).
    pub id: Uuid,
    /// Incremented by every change; the etag.
    pub version: i64,
    /// Lifecycle state.
    pub state: CustomerState,
    /// For MERGED: the customer it went into.
    pub merged_into: Option<Uuid>,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last modified.
    pub update_time: DateTime<Utc>,
    /// Soft-deleted at.
    pub delete_time: Option<DateTime<Utc>>,
    /// Erased at.
    pub erase_time: Option<DateTime<Utc>>,
    /// Traits.
    pub traits: Traits,
    /// Identities, ordered by type, namespace, value.
    pub identities: Vec<Identity>,
    /// Consents in force, by channel.
    pub consents: Vec<Consent>,
}

impl Customer {
    /// The etag callers send back.
    pub fn etag(&self) -> String {
        self.version.to_string()
    }

    /// Whether `etag` (empty: no precondition) matches.
    pub fn etag_matches(&self, etag: &str) -> bool {
        etag.is_empty() || etag == self.etag()
    }

    /// Marks a change at `now`: a new version (etag) and update time (the caller writes them).
    pub fn touch(&mut self, now: DateTime<Utc>) {
        self.version += 1;
        self.update_time = now;
    }
}

/// Most identities one customer holds (a merge may not pass it either).
pub const MAX_IDENTITIES: usize = 20;

/// Paths UpdateCustomer accepts (and merge survivorship names), in update_mask syntax.
pub const UPDATABLE_PATHS: &[&str] = &[
    "display_name",
    "given_name",
    "family_name",
    "demographics",
    "demographics.birth_date",
    "demographics.gender",
    "demographics.income_band",
    "demographics.occupation",
    "demographics.education_level",
    "geography",
    "geography.country_code",
    "geography.region",
    "geography.city",
    "geography.postal_code",
    "psychographics",
    "psychographics.interests",
    "psychographics.lifestyle_tags",
    "tags",
    "custom_attributes",
    "channel_preferences",
];

/// Output-only paths or paths changed through other methods.
pub const NOT_UPDATABLE_PATHS: &[&str] = &[
    "customer_id",
    "etag",
    "create_time",
    "update_time",
    "delete_time",
    "erase_time",
    "state",
    "merged_into_customer_id",
    "identities",
    "consents",
];

/// Whether `path` is an UpdateCustomer path (including `custom_attributes.<name>`).
pub fn is_updatable_path(path: &str) -> bool {
    UPDATABLE_PATHS.contains(&path)
        || path
            .strip_prefix("custom_attributes.")
            .is_some_and(|name| !name.is_empty())
}

/// Copies the field at `path` from `from` into `to`; answers whether the value changed.
/// `path` must satisfy [`is_updatable_path`].
pub fn copy_path(to: &mut Traits, from: &Traits, path: &str) -> bool {
    fn set<T: PartialEq + Clone>(to: &mut T, from: &T) -> bool {
        if to == from {
            false
        } else {
            *to = from.clone();
            true
        }
    }
    match path {
        "display_name" => set(&mut to.display_name, &from.display_name),
        "given_name" => set(&mut to.given_name, &from.given_name),
        "family_name" => set(&mut to.family_name, &from.family_name),
        "demographics" => {
            let paths = [
                "birth_date",
                "gender",
                "income_band",
                "occupation",
                "education_level",
            ];
            paths.iter().fold(false, |changed, p| {
                copy_path(to, from, &format!("demographics.{p}")) | changed
            })
        }
        "demographics.birth_date" => set(&mut to.birth_date, &from.birth_date),
        "demographics.gender" => set(&mut to.gender, &from.gender),
        "demographics.income_band" => set(&mut to.income_band, &from.income_band),
        "demographics.occupation" => set(&mut to.occupation, &from.occupation),
        "demographics.education_level" => set(&mut to.education_level, &from.education_level),
        "geography" => {
            let paths = ["country_code", "region", "city", "postal_code"];
            paths.iter().fold(false, |changed, p| {
                copy_path(to, from, &format!("geography.{p}")) | changed
            })
        }
        "geography.country_code" => set(&mut to.country_code, &from.country_code),
        "geography.region" => set(&mut to.region, &from.region),
        "geography.city" => set(&mut to.city, &from.city),
        "geography.postal_code" => set(&mut to.postal_code, &from.postal_code),
        "psychographics" => {
            let a = set(&mut to.interests, &from.interests);
            set(&mut to.lifestyle_tags, &from.lifestyle_tags) | a
        }
        "psychographics.interests" => set(&mut to.interests, &from.interests),
        "psychographics.lifestyle_tags" => set(&mut to.lifestyle_tags, &from.lifestyle_tags),
        "tags" => set(&mut to.tags, &from.tags),
        "custom_attributes" => set(&mut to.custom_attributes, &from.custom_attributes),
        "channel_preferences" => set(&mut to.channel_preferences, &from.channel_preferences),
        other => match other.strip_prefix("custom_attributes.") {
            Some(name) => {
                let new = from.custom_attributes.get(name);
                if to.custom_attributes.get(name) == new {
                    false
                } else {
                    match new {
                        Some(value) => to.custom_attributes.insert(name.to_owned(), value.clone()),
                        None => to.custom_attributes.remove(name),
                    };
                    true
                }
            }
            None => false,
        },
    }
}

/// Applies an update mask: copies each path from `patch`; answers the paths that changed.
pub fn apply_update(current: &mut Traits, patch: &Traits, paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .filter(|path| copy_path(current, patch, path))
        .cloned()
        .collect()
}

/// Who wins a field in a merge (`MergeWinner` numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeWinner {
    /// The target's value, even when empty.
    Target = 1,
    /// The source's value, even when empty.
    Source = 2,
    /// Union of lists / maps.
    Union = 3,
}

/// Paths a survivorship choice may name, besides `custom_attributes.<name>`.
pub const SURVIVORSHIP_PATHS: &[&str] = &[
    "display_name",
    "given_name",
    "family_name",
    "demographics",
    "demographics.birth_date",
    "demographics.gender",
    "demographics.income_band",
    "demographics.occupation",
    "demographics.education_level",
    "geography",
    "geography.country_code",
    "geography.region",
    "geography.city",
    "geography.postal_code",
    "psychographics.interests",
    "psychographics.lifestyle_tags",
    "tags",
    "custom_attributes",
    "channel_preferences",
    "consents",
];

/// Paths whose default survivorship is "target unless empty".
const LEAF_PATHS: &[&str] = &[
    "display_name",
    "given_name",
    "family_name",
    "demographics.birth_date",
    "demographics.gender",
    "demographics.income_band",
    "demographics.occupation",
    "demographics.education_level",
    "geography.country_code",
    "geography.region",
    "geography.city",
    "geography.postal_code",
    "channel_preferences",
];

fn is_empty_at(traits: &Traits, path: &str) -> bool {
    // Copying from the empty record changes nothing exactly when the field is empty.
    let mut probe = traits.clone();
    !copy_path(&mut probe, &Traits::default(), path)
}

fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut all: Vec<String> = a.iter().chain(b).cloned().collect();
    all.sort();
    all.dedup();
    all
}

/// The target's traits after merging `source` into it: target wins conflicts, empty target
/// fields take the source's value, lists and attribute maps are united, unless `choices` say
/// otherwise. Answers the traits and the paths whose value came from the source.
pub fn merge_traits(
    target: &Traits,
    source: &Traits,
    choices: &[(String, MergeWinner)],
) -> (Traits, Vec<String>) {
    let mut merged = target.clone();
    let mut from_source = Vec::new();
    let choice = |path: &str| {
        choices
            .iter()
            .find(|(p, _)| p == path || path.starts_with(&format!("{p}.")))
            .map(|(_, w)| *w)
    };
    for path in LEAF_PATHS {
        let take_source = match choice(path) {
            Some(MergeWinner::Source) => true,
            Some(MergeWinner::Target | MergeWinner::Union) => false,
            None => is_empty_at(target, path) && !is_empty_at(source, path),
        };
        if take_source && copy_path(&mut merged, source, path) {
            from_source.push((*path).to_owned());
        }
    }
    for (path, pick) in [
        ("psychographics.interests", 0),
        ("psychographics.lifestyle_tags", 1),
        ("tags", 2),
    ] {
        let (t, s, out) = match pick {
            0 => (&target.interests, &source.interests, &mut merged.interests),
            1 => (
                &target.lifestyle_tags,
                &source.lifestyle_tags,
                &mut merged.lifestyle_tags,
            ),
            _ => (&target.tags, &source.tags, &mut merged.tags),
        };
        let value = match choice(path) {
            Some(MergeWinner::Target) => t.clone(),
            Some(MergeWinner::Source) => s.clone(),
            Some(MergeWinner::Union) | None => union(t, s),
        };
        if value != *t {
            from_source.push(path.to_owned());
        }
        *out = value;
    }
    let attributes = match choice("custom_attributes") {
        Some(MergeWinner::Target) => target.custom_attributes.clone(),
        Some(MergeWinner::Source) => source.custom_attributes.clone(),
        Some(MergeWinner::Union) | None => {
            let mut all = source.custom_attributes.clone();
            all.extend(target.custom_attributes.clone());
            all
        }
    };
    let mut attributes = attributes;
    for (name, value) in &source.custom_attributes {
        if choice(&format!("custom_attributes.{name}")) == Some(MergeWinner::Source)
            && choices
                .iter()
                .any(|(p, _)| *p == format!("custom_attributes.{name}"))
        {
            attributes.insert(name.clone(), value.clone());
        }
    }
    for (name, value) in &attributes {
        if target.custom_attributes.get(name) != Some(value) {
            from_source.push(format!("custom_attributes.{name}"));
        }
    }
    merged.custom_attributes = attributes;
    (merged, from_source)
}

/// Filters of ListCustomers, already validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerFilter {
    /// State numbers; never empty (ACTIVE by default).
    pub states: Vec<i16>,
    /// Upper-case country code.
    pub country_code: Option<String>,
    /// Case-insensitive region.
    pub region: Option<String>,
    /// Case-insensitive city.
    pub city: Option<String>,
    /// Every tag required.
    pub tags: Vec<String>,
    /// Gender numbers, any of.
    pub genders: Vec<i16>,
    /// Minimum age in years.
    pub min_age: Option<i32>,
    /// Maximum age in years.
    pub max_age: Option<i32>,
    /// Channels whose consent must be granted.
    pub granted: Vec<i16>,
    /// Channels whose consent must not be granted.
    pub not_granted: Vec<i16>,
    /// Created in [start, end).
    pub create_range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    /// Updated in [start, end).
    pub update_range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
}

/// Whether `code` is an assigned ISO 3166-1 alpha-2 country code.
pub fn is_country_code(code: &str) -> bool {
    code.len() == 2 && COUNTRY_CODES.split(' ').any(|c| c == code)
}

const COUNTRY_CODES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

#[cfg(test)]
mod tests {
    use super::*;

    fn traits(city: &str, tags: &[&str]) -> Traits {
        Traits {
            city: city.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            ..Traits::default()
        }
    }

    #[test]
    fn an_update_copies_only_the_masked_paths() {
        let mut current = traits("Shenzhen", &["vip"]);
        let patch = traits("Beijing", &[]);
        let changed = apply_update(&mut current, &patch, &["geography.city".to_owned()]);
        assert_eq!(changed, ["geography.city"]);
        assert_eq!(current, traits("Beijing", &["vip"]));
        let unchanged = apply_update(&mut current, &patch, &["geography.city".to_owned()]);
        assert!(unchanged.is_empty());
    }

    #[test]
    fn a_merge_keeps_the_target_fills_gaps_and_unites_lists() {
        let target = traits("", &["vip"]);
        let mut source = traits("Shenzhen", &["b2b"]);
        source.given_name = "Wei".to_owned();
        let (merged, paths) = merge_traits(&target, &source, &[]);
        assert_eq!(merged.city, "Shenzhen");
        assert_eq!(merged.tags, ["b2b", "vip"]);
        assert!(paths.contains(&"geography.city".to_owned()));
        let (kept, _) = merge_traits(
            &target,
            &source,
            &[("geography".to_owned(), MergeWinner::Target)],
        );
        assert_eq!(kept.city, "");
    }

    #[test]
    fn country_codes_are_checked() {
        assert!(is_country_code("CN"));
        assert!(!is_country_code("XX"));
        assert!(!is_country_code("cn"));
    }
}
