//! prost → domain conversion of requests: every field validated, every violation collected
//! under its request path. The way back (domain → prost, shared with the events and merge
//! snapshots) is `crate::wire`. Prost types stop at these two: `domain`, `store` and
//! `workflow` never see them.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use custops_common::error::{FieldViolation, Violations};
use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::profiles::v1 as pb;
use uuid::Uuid;

use crate::domain::activity::{
    CustomerRef, MAX_AMOUNT_MINOR, MAX_ITEM_COUNT, NewActivity, is_currency,
};
use crate::domain::customer::is_country_code;
use crate::domain::event_type::{
    self, CustomEvent, EventType, PropertyDefinition, PropertyType, PropertyValue,
};
use crate::domain::{
    ActivityDetails, Actor, AttributeValue, ChannelPreferences, ConsentDecision, Identity, Traits,
    is_plain_text, is_printable_ascii, is_slug,
};
use crate::error::ProfilesError;

/// How far in the future a reported time may be (clock skew of the reporter).
const FUTURE_SKEW: chrono::Duration = chrono::Duration::minutes(5);

pub use custops_common::time::{from_timestamp as from_ts, to_timestamp as ts};

/// A UUID field; records a violation when malformed or empty.
pub fn parse_id(v: &mut Violations, field: &str, value: &str) -> Option<Uuid> {
    if value.is_empty() {
        v.add(field, "is required");
        return None;
    }
    v.take(
        field,
        Uuid::parse_str(value).map_err(|_| "must be a UUID".to_owned()),
    )
}

/// A time range; both bounds optional, start before end.
pub fn parse_range(
    v: &mut Violations,
    field: &str,
    range: Option<&common::TimeRange>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let Some(range) = range else {
        return (None, None);
    };
    let start = range.start_time.as_ref().and_then(|t| {
        let parsed = from_ts(t);
        v.check(
            parsed.is_some(),
            &format!("{field}.start_time"),
            "must be a valid time",
        );
        parsed
    });
    let end = range.end_time.as_ref().and_then(|t| {
        let parsed = from_ts(t);
        v.check(
            parsed.is_some(),
            &format!("{field}.end_time"),
            "must be a valid time",
        );
        parsed
    });
    if let (Some(s), Some(e)) = (start, end) {
        v.check(s < e, field, "start_time must be before end_time");
    }
    (start, end)
}

fn enum_ok<E: TryFrom<i32>>(n: i32) -> bool {
    E::try_from(n).is_ok()
}

fn small(n: i32) -> i16 {
    i16::try_from(n).unwrap_or(0)
}

fn slugs(v: &mut Violations, field: &str, values: &[String], max: usize) -> Vec<String> {
    if values.len() > max {
        v.add(field, format!("at most {max} values"));
    }
    let mut out: Vec<String> = values
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let s = s.trim().to_lowercase();
            if is_slug(&s, true) {
                Some(s)
            } else {
                v.add(
                    format!("{field}[{i}]"),
                    "must be 1-64 characters of [a-z0-9_-]",
                );
                None
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The traits a request's `Customer` carries, validated (paths under `prefix`, e.g.
/// "customer."; a birth date must not be after `now`'s day). Custom attributes are checked
/// against the catalog later, by the store.
pub fn traits_from_pb(
    v: &mut Violations,
    prefix: &str,
    c: &pb::Customer,
    now: DateTime<Utc>,
) -> Traits {
    let p = |f: &str| format!("{prefix}{f}");
    for (field, value) in [
        ("display_name", &c.display_name),
        ("given_name", &c.given_name),
        ("family_name", &c.family_name),
    ] {
        v.check(
            is_plain_text(value, 200),
            &p(field),
            "at most 200 characters, no control characters",
        );
    }
    let d = c.demographics.clone().unwrap_or_default();
    let birth_date = d.birth_date.as_ref().and_then(|date| {
        let field = p("demographics.birth_date");
        let parsed = u32::try_from(date.month)
            .ok()
            .zip(u32::try_from(date.day).ok())
            .and_then(|(m, day)| NaiveDate::from_ymd_opt(date.year, m, day));
        match parsed {
            None => {
                v.add(field, "must be a valid calendar date");
                None
            }
            Some(date) if date > now.date_naive() => {
                v.add(field, "must not be in the future");
                None
            }
            Some(date) if date.year() < 1900 => {
                v.add(field, "must not be before 1900-01-01");
                None
            }
            Some(date) => Some(date),
        }
    });
    v.check(
        enum_ok::<pb::Gender>(d.gender),
        &p("demographics.gender"),
        "unknown gender",
    );
    v.check(
        enum_ok::<pb::IncomeBand>(d.income_band),
        &p("demographics.income_band"),
        "unknown income band",
    );
    v.check(
        enum_ok::<pb::EducationLevel>(d.education_level),
        &p("demographics.education_level"),
        "unknown education level",
    );
    v.check(
        is_plain_text(&d.occupation, 100),
        &p("demographics.occupation"),
        "at most 100 characters",
    );
    let g = c.geography.clone().unwrap_or_default();
    let country_code = g.country_code.trim().to_uppercase();
    v.check(
        country_code.is_empty() || is_country_code(&country_code),
        &p("geography.country_code"),
        "must be an ISO 3166-1 alpha-2 country code",
    );
    v.check(
        is_plain_text(&g.region, 100),
        &p("geography.region"),
        "at most 100 characters",
    );
    v.check(
        is_plain_text(&g.city, 100),
        &p("geography.city"),
        "at most 100 characters",
    );
    v.check(
        is_plain_text(&g.postal_code, 20),
        &p("geography.postal_code"),
        "at most 20 characters",
    );
    let psy = c.psychographics.clone().unwrap_or_default();
    let interests = slugs(v, &p("psychographics.interests"), &psy.interests, 50);
    let lifestyle_tags = slugs(
        v,
        &p("psychographics.lifestyle_tags"),
        &psy.lifestyle_tags,
        50,
    );
    let tags = slugs(v, &p("tags"), &c.tags, 100);
    if c.custom_attributes.len() > 100 {
        v.add(p("custom_attributes"), "at most 100 attributes");
    }
    let mut custom_attributes = BTreeMap::new();
    for (name, value) in &c.custom_attributes {
        let field = p(&format!("custom_attributes[{name}]"));
        if let Some(value) = attribute_from_pb(v, &field, value) {
            custom_attributes.insert(name.clone(), value);
        }
    }
    let channel_preferences = c
        .channel_preferences
        .as_ref()
        .map(|prefs| preferences_from_pb(v, &p("channel_preferences"), prefs))
        .unwrap_or_default();
    Traits {
        display_name: c.display_name.clone(),
        given_name: c.given_name.clone(),
        family_name: c.family_name.clone(),
        birth_date,
        gender: small(d.gender),
        income_band: small(d.income_band),
        occupation: d.occupation.clone(),
        education_level: small(d.education_level),
        country_code,
        region: g.region.clone(),
        city: g.city.clone(),
        postal_code: g.postal_code.clone(),
        interests,
        lifestyle_tags,
        tags,
        custom_attributes,
        channel_preferences,
    }
}

fn attribute_from_pb(
    v: &mut Violations,
    field: &str,
    value: &pb::CustomAttributeValue,
) -> Option<AttributeValue> {
    use pb::custom_attribute_value::Value;
    match &value.value {
        None => {
            v.add(field, "a value must be set");
            None
        }
        Some(Value::StringValue(s)) if s.chars().count() > 1024 => {
            v.add(field, "at most 1,024 characters");
            None
        }
        Some(Value::StringValue(s)) => Some(AttributeValue::String(s.clone())),
        Some(Value::NumberValue(n)) if !n.is_finite() => {
            v.add(field, "must be a finite number");
            None
        }
        Some(Value::NumberValue(n)) => Some(AttributeValue::Number(*n)),
        Some(Value::BoolValue(b)) => Some(AttributeValue::Bool(*b)),
        Some(Value::TimeValue(t)) => match from_ts(t) {
            Some(t) => Some(AttributeValue::Time(t.timestamp_micros())),
            None => {
                v.add(field, "must be a valid time");
                None
            }
        },
    }
}

/// Channel preferences, validated under `field`.
pub fn preferences_from_pb(
    v: &mut Violations,
    field: &str,
    p: &pb::ChannelPreferences,
) -> ChannelPreferences {
    let mut seen = HashSet::new();
    for (i, ch) in p.preferred_channels.iter().enumerate() {
        let ok = (1..=4).contains(ch) && seen.insert(*ch);
        v.check(
            ok,
            &format!("{field}.preferred_channels[{i}]"),
            "must be a contact channel, listed once",
        );
    }
    let lang_ok = p.language_code.len() <= 35
        && p.language_code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    v.check(
        lang_ok,
        &format!("{field}.language_code"),
        "must be a BCP-47 language tag",
    );
    let tz_ok = p.time_zone.is_empty()
        || p.time_zone == "UTC"
        || (p.time_zone.contains('/')
            && p.time_zone.len() <= 64
            && p.time_zone
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+')));
    v.check(
        tz_ok,
        &format!("{field}.time_zone"),
        "must be an IANA time zone, e.g. Asia/Shanghai",
    );
    let quiet_hours = p.quiet_hours.as_ref().map(|q| {
        let ok = (0..1440).contains(&q.start_minute)
            && (0..1440).contains(&q.end_minute)
            && q.start_minute != q.end_minute;
        v.check(
            ok,
            &format!("{field}.quiet_hours"),
            "minutes 0-1439, start different from end",
        );
        (q.start_minute, q.end_minute)
    });
    ChannelPreferences {
        preferred_channels: p.preferred_channels.iter().map(|c| small(*c)).collect(),
        language_code: p.language_code.clone(),
        time_zone: p.time_zone.clone(),
        quiet_hours,
    }
}

/// An identity, normalised, with violations under `field` (e.g. "identity").
pub fn identity_from_pb(
    v: &mut Violations,
    field: &str,
    identity: Option<&pb::Identity>,
) -> Option<Identity> {
    let Some(identity) = identity else {
        v.add(field, "is required");
        return None;
    };
    match Identity::parse(identity.identity_type, &identity.namespace, &identity.value) {
        Ok(identity) => Some(identity),
        Err(errors) => {
            for e in errors {
                v.add(format!("{field}.{}", e.field), e.description);
            }
            None
        }
    }
}

/// The actor of a change: the request's, with the authenticated service.
pub fn actor_from_pb(
    v: &mut Violations,
    field: &str,
    actor: Option<&pb::Actor>,
    service: &str,
) -> Actor {
    let actor = actor.cloned().unwrap_or_default();
    v.check(
        enum_ok::<pb::ActorKind>(actor.actor_kind),
        &format!("{field}.actor_kind"),
        "unknown actor kind",
    );
    v.check(
        actor.actor_id.is_empty() || is_printable_ascii(&actor.actor_id, 128),
        &format!("{field}.actor_id"),
        "at most 128 printable characters",
    );
    Actor {
        kind: if actor.actor_kind == 0 {
            3
        } else {
            small(actor.actor_kind)
        },
        id: actor.actor_id,
        service: service.to_owned(),
    }
}

/// Consent decisions of a request, at most one per channel, none decided more than the
/// allowed skew after `now`.
pub fn consents_from_pb(
    v: &mut Violations,
    field: &str,
    consents: &[pb::Consent],
    service: &str,
    now: DateTime<Utc>,
) -> Vec<ConsentDecision> {
    let mut seen = HashSet::new();
    consents
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = |s: &str| format!("{field}[{i}].{s}");
            let channel_ok = (1..=4).contains(&c.channel);
            v.check(channel_ok, &f("channel"), "must be a contact channel");
            if channel_ok && !seen.insert(c.channel) {
                v.add(f("channel"), "each channel at most once");
            }
            v.check(
                matches!(c.status, 1 | 2),
                &f("status"),
                "must be GRANTED or WITHDRAWN",
            );
            v.check(
                is_slug(&c.source, false),
                &f("source"),
                "must be 1-64 characters of [a-z0-9_]",
            );
            let change_time = c.change_time.as_ref().and_then(|t| match from_ts(t) {
                Some(t) if t <= now + FUTURE_SKEW => Some(t),
                Some(_) => {
                    v.add(
                        f("change_time"),
                        "must not be more than 5 minutes in the future",
                    );
                    None
                }
                None => {
                    v.add(f("change_time"), "must be a valid time");
                    None
                }
            });
            ConsentDecision {
                channel: small(c.channel),
                status: small(c.status),
                source: c.source.clone(),
                actor: actor_from_pb(v, &f("actor"), c.actor.as_ref(), service),
                change_time,
            }
        })
        .collect()
}

/// An activity to record, validated with paths relative to the item ("activity.…"); it may
/// not occur more than the allowed skew after `now`.
pub fn activity_from_pb(
    activity: Option<&pb::Activity>,
    customer_identity: Option<&pb::Identity>,
    now: DateTime<Utc>,
) -> Result<NewActivity, Vec<FieldViolation>> {
    let mut v = Violations::new();
    let Some(a) = activity else {
        return Err(vec![FieldViolation {
            field: "activity".into(),
            description: "is required".into(),
        }]);
    };
    let customer = match (a.customer_id.is_empty(), customer_identity) {
        (false, None) => {
            parse_id(&mut v, "activity.customer_id", &a.customer_id).map(CustomerRef::Id)
        }
        (true, Some(identity)) => {
            identity_from_pb(&mut v, "customer_identity", Some(identity)).map(CustomerRef::Identity)
        }
        _ => {
            v.add(
                "activity.customer_id",
                "exactly one of activity.customer_id and customer_identity must be set",
            );
            None
        }
    };
    v.check(
        is_slug(&a.source, true),
        "activity.source",
        "must be 1-64 characters of [a-z0-9_-]",
    );
    v.check(
        is_printable_ascii(&a.event_id, 128),
        "activity.event_id",
        "must be 1-128 printable ASCII characters",
    );
    v.check(
        is_slug(&a.channel, true),
        "activity.channel",
        "must be 1-64 characters of [a-z0-9_-]",
    );
    let occur_time = match a.occur_time.as_ref().map(from_ts) {
        None => {
            v.add("activity.occur_time", "is required");
            None
        }
        Some(None) => {
            v.add("activity.occur_time", "must be a valid time");
            None
        }
        Some(Some(t)) if t > now + FUTURE_SKEW => {
            v.add(
                "activity.occur_time",
                "must not be more than 5 minutes in the future",
            );
            None
        }
        Some(Some(t)) => Some(t),
    };
    let details = details_from_pb(&mut v, a.details.as_ref());
    let problems = ProfilesError::check(v);
    match (problems, customer, occur_time, details) {
        (Ok(()), Some(customer), Some(occur_time), Some(details)) => Ok(NewActivity {
            customer,
            source: a.source.clone(),
            event_id: a.event_id.clone(),
            occur_time,
            channel: a.channel.clone(),
            details,
        }),
        (Err(ProfilesError::Invalid(list)), ..) => Err(list),
        _ => Err(vec![FieldViolation {
            field: "activity".into(),
            description: "is invalid".into(),
        }]),
    }
}

fn money(
    v: &mut Violations,
    field: &str,
    m: Option<&common::Money>,
    positive: bool,
) -> (i64, String) {
    let Some(m) = m else {
        v.add(format!("{field}.amount"), "is required");
        return (0, String::new());
    };
    let (min, range) = if positive {
        (1, "must be 1-1,000,000,000,000,000 (10^15)")
    } else {
        (0, "must be 0-1,000,000,000,000,000 (10^15)")
    };
    v.check(
        (min..=MAX_AMOUNT_MINOR).contains(&m.amount_minor),
        &format!("{field}.amount.amount_minor"),
        range,
    );
    v.check(
        is_currency(&m.currency),
        &format!("{field}.amount.currency"),
        "must be an ISO-4217 currency code in upper case",
    );
    (m.amount_minor, m.currency.clone())
}

fn categories(v: &mut Violations, field: &str, values: &[String]) -> Vec<String> {
    if values.len() > 50 {
        v.add(format!("{field}.categories"), "at most 50 categories");
    }
    let mut out = Vec::new();
    for (i, c) in values.iter().enumerate() {
        if is_plain_text(c, 128) && !c.is_empty() {
            if !out.contains(c) {
                out.push(c.clone());
            }
        } else {
            v.add(
                format!("{field}.categories[{i}]"),
                "1-128 printable characters",
            );
        }
    }
    out
}

fn details_from_pb(
    v: &mut Violations,
    details: Option<&pb::activity::Details>,
) -> Option<ActivityDetails> {
    use pb::activity::Details;
    match details {
        None => {
            v.add(
                "activity.details",
                "exactly one of purchase, refund, interaction or custom_event is required",
            );
            None
        }
        Some(Details::Purchase(p)) => {
            v.check(
                is_plain_text(&p.order_id, 128) && !p.order_id.is_empty(),
                "activity.purchase.order_id",
                "1-128 printable characters",
            );
            v.check(
                (0..=MAX_ITEM_COUNT).contains(&p.item_count),
                "activity.purchase.item_count",
                "must be 0-1,000,000",
            );
            let (amount_minor, currency) = money(v, "activity.purchase", p.amount.as_ref(), false);
            Some(ActivityDetails::Purchase {
                order_id: p.order_id.clone(),
                amount_minor,
                currency,
                categories: categories(v, "activity.purchase", &p.categories),
                item_count: p.item_count,
            })
        }
        Some(Details::Refund(r)) => {
            v.check(
                is_plain_text(&r.order_id, 128) && !r.order_id.is_empty(),
                "activity.refund.order_id",
                "1-128 printable characters",
            );
            let (amount_minor, currency) = money(v, "activity.refund", r.amount.as_ref(), true);
            Some(ActivityDetails::Refund {
                order_id: r.order_id.clone(),
                amount_minor,
                currency,
                categories: categories(v, "activity.refund", &r.categories),
            })
        }
        Some(Details::Interaction(i)) => {
            let kind_ok =
                i.interaction_kind != 0 && enum_ok::<pb::InteractionKind>(i.interaction_kind);
            v.check(
                kind_ok,
                "activity.interaction.interaction_kind",
                "must be a known interaction kind",
            );
            let other = i.interaction_kind == pb::InteractionKind::Other as i32;
            v.check(
                if other {
                    is_slug(&i.other_kind, false)
                } else {
                    i.other_kind.is_empty()
                },
                "activity.interaction.other_kind",
                "a [a-z0-9_] slug for INTERACTION_KIND_OTHER, empty otherwise",
            );
            for (field, value, max) in [
                ("campaign_id", &i.campaign_id, 128),
                ("page", &i.page, 2048),
                ("product_id", &i.product_id, 128),
                ("category", &i.category, 128),
                ("reference_id", &i.reference_id, 128),
            ] {
                v.check(
                    is_plain_text(value, max),
                    &format!("activity.interaction.{field}"),
                    "too long or has control characters",
                );
            }
            Some(ActivityDetails::Interaction {
                kind: small(i.interaction_kind),
                other_kind: i.other_kind.clone(),
                campaign_id: i.campaign_id.clone(),
                page: i.page.clone(),
                product_id: i.product_id.clone(),
                category: i.category.clone(),
                reference_id: i.reference_id.clone(),
            })
        }
        Some(Details::CustomEvent(e)) => Some(ActivityDetails::CustomEvent(custom_event_from_pb(
            v,
            "activity.custom_event",
            e,
        ))),
    }
}

/// A custom event validated in itself (a name of the catalog's form, at most 50 properties,
/// each a well-formed value); whether its type allows it is checked against the catalog by
/// the use case.
fn custom_event_from_pb(v: &mut Violations, field: &str, e: &pb::CustomEvent) -> CustomEvent {
    v.check(
        event_type::is_name(&e.event_type),
        &format!("{field}.event_type"),
        "must name a declared event type: ^[a-z][a-z0-9_]{0,63}$",
    );
    if e.properties.len() > event_type::MAX_PROPERTIES {
        v.add(format!("{field}.properties"), "at most 50 properties");
    }
    let mut properties = BTreeMap::new();
    for (name, value) in &e.properties {
        let path = format!("{field}.properties[{name}]");
        if let Some(value) = property_value_from_pb(v, &path, value) {
            properties.insert(name.clone(), value);
        }
    }
    CustomEvent {
        event_type: e.event_type.clone(),
        properties,
    }
}

fn property_value_from_pb(
    v: &mut Violations,
    field: &str,
    value: &pb::EventPropertyValue,
) -> Option<PropertyValue> {
    use pb::event_property_value::Value;
    match &value.value {
        None => {
            v.add(field, "a value must be set");
            None
        }
        Some(Value::StringValue(s)) => {
            let ok = is_plain_text(s, event_type::MAX_STRING_CHARS);
            v.check(ok, field, "at most 1,024 characters, no control characters");
            ok.then(|| PropertyValue::String(s.clone()))
        }
        Some(Value::NumberValue(n)) => {
            v.check(n.is_finite(), field, "must be a finite number");
            n.is_finite().then_some(PropertyValue::Number(*n))
        }
        Some(Value::BoolValue(b)) => Some(PropertyValue::Bool(*b)),
        Some(Value::TimeValue(t)) => match from_ts(t) {
            Some(t) => Some(PropertyValue::Time(t.timestamp_micros())),
            None => {
                v.add(field, "must be a valid time");
                None
            }
        },
        Some(Value::MoneyValue(m)) => {
            let amount_ok =
                m.amount_minor.unsigned_abs() <= event_type::MAX_MONEY_MINOR.unsigned_abs();
            v.check(
                amount_ok,
                &format!("{field}.money_value.amount_minor"),
                "must be from -10^15 to 10^15",
            );
            let currency_ok = is_currency(&m.currency);
            v.check(
                currency_ok,
                &format!("{field}.money_value.currency"),
                "must be an ISO-4217 currency code in upper case",
            );
            (amount_ok && currency_ok).then(|| PropertyValue::Money {
                amount_minor: m.amount_minor,
                currency: m.currency.clone(),
            })
        }
    }
}

/// The properties of a CreateEventType or AddEventTypeProperties request under `field` (e.g.
/// "event_type.properties"): each name of the catalog's form and unique, a known type, a
/// short description; `required` refused when `allow_required` is false.
pub fn property_definitions_from_pb(
    v: &mut Violations,
    field: &str,
    properties: &[pb::EventPropertyDefinition],
    allow_required: bool,
) -> Vec<PropertyDefinition> {
    if properties.len() > event_type::MAX_PROPERTIES {
        v.add(field, "at most 50 properties");
    }
    let mut seen = HashSet::new();
    properties
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let f = |s: &str| format!("{field}[{i}].{s}");
            let name_ok = event_type::is_name(&p.property_name);
            v.check(
                name_ok,
                &f("property_name"),
                "must match ^[a-z][a-z0-9_]{0,63}$",
            );
            if name_ok && !seen.insert(p.property_name.as_str()) {
                v.add(f("property_name"), "each property name at most once");
            }
            let property_type = PropertyType::from_number(p.property_type);
            v.check(
                property_type.is_some(),
                &f("property_type"),
                "must be STRING, NUMBER, BOOL, TIME or MONEY",
            );
            v.check(
                is_plain_text(&p.description, event_type::MAX_PROPERTY_DESCRIPTION),
                &f("description"),
                "at most 500 characters, no control characters",
            );
            v.check(
                allow_required || !p.required,
                &f("required"),
                "properties added to an existing event type are optional",
            );
            Some(PropertyDefinition {
                name: p.property_name.clone(),
                property_type: property_type?,
                description: p.description.clone(),
                contains_pii: p.contains_pii,
                required: p.required,
            })
        })
        .collect()
}

/// A CreateEventType's event type, validated (paths under `event_type.`), created at `now`
/// until the use case reads its clock.
pub fn event_type_from_pb(
    requested: Option<pb::EventType>,
    now: DateTime<Utc>,
) -> Result<EventType, ProfilesError> {
    let t = requested.unwrap_or_default();
    let mut v = Violations::new();
    v.check(
        event_type::is_name(&t.event_type_name),
        "event_type.event_type_name",
        "must match ^[a-z][a-z0-9_]{0,63}$",
    );
    v.check(
        is_plain_text(&t.description, event_type::MAX_TYPE_DESCRIPTION),
        "event_type.description",
        "at most 1,000 characters, no control characters",
    );
    let properties =
        property_definitions_from_pb(&mut v, "event_type.properties", &t.properties, true);
    ProfilesError::check(v)?;
    Ok(EventType {
        name: t.event_type_name,
        description: t.description,
        properties,
        create_time: now,
        update_time: now,
    })
}
