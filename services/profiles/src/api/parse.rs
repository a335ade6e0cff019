//! Request fields shared by several handlers or too long to sit in one: ids, enum lists and
//! the list filters, each bad field recorded under its request path.

use custops_common::error::Violations;
use custops_contracts::custops::profiles::v1 as pb;
use uuid::Uuid;

use super::convert::{parse_id, parse_range};
use crate::domain::{ActivityFilter, CustomerFilter};
use crate::error::ProfilesError;

/// `Ok` unless `v` recorded a violation (then INVALID_ARGUMENT with all of them).
pub(super) fn invalid(v: Violations) -> Result<(), ProfilesError> {
    ProfilesError::check(v)
}

/// A required UUID field on its own.
pub(super) fn one_id(field: &str, value: &str) -> Result<Uuid, ProfilesError> {
    let mut v = Violations::new();
    let id = parse_id(&mut v, field, value);
    invalid(v)?;
    ProfilesError::required(field, id)
}

/// Enum values as the `smallint` codes the store filters on (validated beforehand).
pub(super) fn enum_codes(values: &[i32]) -> Vec<i16> {
    values
        .iter()
        .map(|v| i16::try_from(*v).unwrap_or(0))
        .collect()
}

/// ListCustomers' filter, every bad field under `filter.`.
pub(super) fn customer_filter(
    v: &mut Violations,
    f: Option<&pb::CustomerFilter>,
) -> CustomerFilter {
    let f = f.cloned().unwrap_or_default();
    let mut filter = CustomerFilter {
        states: vec![1],
        ..CustomerFilter::default()
    };
    if !f.states.is_empty() {
        for (i, s) in f.states.iter().enumerate() {
            v.check(
                (1..=4).contains(s),
                &format!("filter.states[{i}]"),
                "must be a customer state",
            );
        }
        filter.states = enum_codes(&f.states);
    }
    if !f.country_code.is_empty() {
        let code = f.country_code.to_uppercase();
        v.check(
            crate::domain::customer::is_country_code(&code),
            "filter.country_code",
            "must be an ISO 3166-1 alpha-2 code",
        );
        filter.country_code = Some(code);
    }
    filter.region = (!f.region.is_empty()).then(|| f.region.clone());
    filter.city = (!f.city.is_empty()).then(|| f.city.clone());
    v.check(f.tags.len() <= 20, "filter.tags", "at most 20 tags");
    filter.tags = f.tags.iter().map(|t| t.to_lowercase()).collect();
    v.check(
        f.genders.len() <= 10,
        "filter.genders",
        "at most 10 genders",
    );
    for (i, g) in f.genders.iter().enumerate() {
        v.check(
            pb::Gender::try_from(*g).is_ok(),
            &format!("filter.genders[{i}]"),
            "unknown gender",
        );
    }
    filter.genders = enum_codes(&f.genders);
    if let Some(age) = &f.age_range {
        let ok = (0..=150).contains(&age.min_age)
            && (0..=150).contains(&age.max_age)
            && !(age.min_age == 0 && age.max_age == 0)
            && (age.max_age == 0 || age.min_age <= age.max_age);
        v.check(
            ok,
            "filter.age_range",
            "ages 0-150, not both 0, minimum not above maximum",
        );
        filter.min_age = (age.min_age > 0).then_some(age.min_age);
        filter.max_age = (age.max_age > 0).then_some(age.max_age);
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in f.consents.iter().enumerate() {
        let ok = (1..=4).contains(&c.channel) && seen.insert(c.channel);
        v.check(
            ok,
            &format!("filter.consents[{i}].channel"),
            "a contact channel, at most once",
        );
        let channel = i16::try_from(c.channel).unwrap_or(0);
        if c.granted {
            filter.granted.push(channel)
        } else {
            filter.not_granted.push(channel)
        }
    }
    filter.create_range = parse_range(v, "filter.create_time_range", f.create_time_range.as_ref());
    filter.update_range = parse_range(v, "filter.update_time_range", f.update_time_range.as_ref());
    filter
}

/// ListActivities' filter, every bad field under `filter.`.
pub(super) fn activity_filter(
    v: &mut Violations,
    f: Option<&pb::ActivityFilter>,
) -> ActivityFilter {
    let f = f.cloned().unwrap_or_default();
    for (i, k) in f.activity_kinds.iter().enumerate() {
        v.check(
            (1..=4).contains(k),
            &format!("filter.activity_kinds[{i}]"),
            "must be an activity kind",
        );
    }
    for (i, k) in f.interaction_kinds.iter().enumerate() {
        let ok = *k != 0 && pb::InteractionKind::try_from(*k).is_ok();
        v.check(
            ok,
            &format!("filter.interaction_kinds[{i}]"),
            "must be an interaction kind",
        );
    }
    ActivityFilter {
        kinds: enum_codes(&f.activity_kinds),
        interaction_kinds: enum_codes(&f.interaction_kinds),
        channel: (!f.channel.is_empty()).then(|| f.channel.clone()),
        source: (!f.source.is_empty()).then(|| f.source.clone()),
        occur_range: parse_range(v, "filter.occur_time_range", f.occur_time_range.as_ref()),
    }
}
