//! Domain values as their wire messages (`custops.profiles.v1`): API answers, the outbox
//! events and the merge snapshots carry the same `Customer`, `ConsentChange`, `Activity`, …, so
//! all of them build them here, and `api`, `events` and `workflow` share one conversion.
//! Also the one place a customer is turned into what events may carry (`traits_to_pb`, no
//! personal data) and the merge snapshots' encoding (a `Customer` message: the contract's own
//! stable form) and its exact inverse.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use custops_common::time::{from_timestamp as from_ts, to_timestamp as ts};
use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::profiles::v1 as pb;
use prost::Message;
use prost_types::Timestamp;

use crate::domain::{
    Activity, ActivityDetails, Actor, AttributeDefinition, AttributeValue, ChannelPreferences,
    Consent, ConsentChange, CustomEvent, Customer, EventType, Identity, MergeRecord,
    PropertyDefinition, PropertyValue, Traits,
};

fn opt_ts(t: Option<DateTime<Utc>>) -> Option<Timestamp> {
    t.map(ts)
}

impl From<&Identity> for pb::Identity {
    fn from(i: &Identity) -> Self {
        pb::Identity {
            identity_type: i32::from(i.kind.number()),
            namespace: i.namespace.clone(),
            value: i.value.clone(),
            create_time: opt_ts(i.create_time),
        }
    }
}

impl From<&Actor> for pb::Actor {
    fn from(a: &Actor) -> Self {
        pb::Actor {
            actor_kind: i32::from(a.kind),
            actor_id: a.id.clone(),
            service: a.service.clone(),
        }
    }
}

impl From<&Consent> for pb::Consent {
    fn from(c: &Consent) -> Self {
        pb::Consent {
            channel: i32::from(c.channel),
            status: i32::from(c.status),
            source: c.source.clone(),
            actor: Some((&c.actor).into()),
            change_time: Some(ts(c.change_time)),
            record_time: Some(ts(c.record_time)),
        }
    }
}

impl From<&ConsentChange> for pb::ConsentChange {
    fn from(c: &ConsentChange) -> Self {
        pb::ConsentChange {
            consent_change_id: c.id.to_string(),
            customer_id: c.customer_id.to_string(),
            channel: i32::from(c.channel),
            old_status: i32::from(c.old_status),
            new_status: i32::from(c.new_status),
            source: c.source.clone(),
            actor: Some((&c.actor).into()),
            change_time: Some(ts(c.change_time)),
            record_time: Some(ts(c.record_time)),
            merge_id: c.merge_id.map(|m| m.to_string()).unwrap_or_default(),
            superseded: c.superseded,
        }
    }
}

fn attribute_to_pb(value: &AttributeValue) -> pb::CustomAttributeValue {
    use pb::custom_attribute_value::Value;
    let value = match value {
        AttributeValue::String(s) => Value::StringValue(s.clone()),
        AttributeValue::Number(n) => Value::NumberValue(*n),
        AttributeValue::Bool(b) => Value::BoolValue(*b),
        AttributeValue::Time(micros) => Value::TimeValue(
            DateTime::from_timestamp_micros(*micros)
                .map(ts)
                .unwrap_or_default(),
        ),
    };
    pb::CustomAttributeValue { value: Some(value) }
}

fn preferences_to_pb(p: &ChannelPreferences) -> pb::ChannelPreferences {
    pb::ChannelPreferences {
        preferred_channels: p.preferred_channels.iter().map(|c| i32::from(*c)).collect(),
        language_code: p.language_code.clone(),
        time_zone: p.time_zone.clone(),
        quiet_hours: p
            .quiet_hours
            .map(|(start_minute, end_minute)| pb::QuietHours {
                start_minute,
                end_minute,
            }),
    }
}

fn demographics(t: &Traits) -> pb::Demographics {
    pb::Demographics {
        birth_date: t.birth_date.map(|d| common::Date {
            year: d.year(),
            month: i32::try_from(d.month()).unwrap_or(0),
            day: i32::try_from(d.day()).unwrap_or(0),
        }),
        gender: i32::from(t.gender),
        income_band: i32::from(t.income_band),
        occupation: t.occupation.clone(),
        education_level: i32::from(t.education_level),
    }
}

impl From<&Customer> for pb::Customer {
    fn from(c: &Customer) -> Self {
        let t = &c.traits;
        pb::Customer {
            customer_id: c.id.to_string(),
            etag: c.etag(),
            create_time: Some(ts(c.create_time)),
            update_time: Some(ts(c.update_time)),
            delete_time: opt_ts(c.delete_time),
            erase_time: opt_ts(c.erase_time),
            state: i32::from(c.state.number()),
            merged_into_customer_id: c.merged_into.map(|m| m.to_string()).unwrap_or_default(),
            display_name: t.display_name.clone(),
            given_name: t.given_name.clone(),
            family_name: t.family_name.clone(),
            identities: c.identities.iter().map(Into::into).collect(),
            demographics: Some(demographics(t)),
            geography: Some(pb::Geography {
                country_code: t.country_code.clone(),
                region: t.region.clone(),
                city: t.city.clone(),
                postal_code: t.postal_code.clone(),
            }),
            psychographics: Some(pb::Psychographics {
                interests: t.interests.clone(),
                lifestyle_tags: t.lifestyle_tags.clone(),
            }),
            tags: t.tags.clone(),
            custom_attributes: t
                .custom_attributes
                .iter()
                .map(|(k, v)| (k.clone(), attribute_to_pb(v)))
                .collect::<BTreeMap<_, _>>(),
            channel_preferences: Some(preferences_to_pb(&t.channel_preferences)),
            consents: c.consents.iter().map(Into::into).collect(),
        }
    }
}

/// The non-identifying projection carried in events: no names, identity values, postal
/// code or PII attributes.
pub fn traits_to_pb(c: &Customer, pii_attributes: &HashSet<String>) -> pb::CustomerTraits {
    let t = &c.traits;
    let mut identity_types: Vec<i32> = c
        .identities
        .iter()
        .map(|i| i32::from(i.kind.number()))
        .collect();
    identity_types.sort_unstable();
    identity_types.dedup();
    pb::CustomerTraits {
        customer_id: c.id.to_string(),
        state: i32::from(c.state.number()),
        create_time: Some(ts(c.create_time)),
        update_time: Some(ts(c.update_time)),
        demographics: Some(demographics(t)),
        geography: Some(pb::Geography {
            country_code: t.country_code.clone(),
            region: t.region.clone(),
            city: t.city.clone(),
            postal_code: String::new(),
        }),
        psychographics: Some(pb::Psychographics {
            interests: t.interests.clone(),
            lifestyle_tags: t.lifestyle_tags.clone(),
        }),
        tags: t.tags.clone(),
        custom_attributes: t
            .custom_attributes
            .iter()
            .filter(|(k, _)| !pii_attributes.contains(*k))
            .map(|(k, v)| (k.clone(), attribute_to_pb(v)))
            .collect(),
        consents: c.consents.iter().map(Into::into).collect(),
        channel_preferences: Some(preferences_to_pb(&t.channel_preferences)),
        identity_types,
    }
}

impl From<&Activity> for pb::Activity {
    fn from(a: &Activity) -> Self {
        use pb::activity::Details;
        let details = match &a.details {
            ActivityDetails::Purchase {
                order_id,
                amount_minor,
                currency,
                categories,
                item_count,
            } => Details::Purchase(pb::Purchase {
                order_id: order_id.clone(),
                amount: Some(common::Money {
                    amount_minor: *amount_minor,
                    currency: currency.clone(),
                }),
                categories: categories.clone(),
                item_count: *item_count,
            }),
            ActivityDetails::Refund {
                order_id,
                amount_minor,
                currency,
                categories,
            } => Details::Refund(pb::Refund {
                order_id: order_id.clone(),
                amount: Some(common::Money {
                    amount_minor: *amount_minor,
                    currency: currency.clone(),
                }),
                categories: categories.clone(),
            }),
            ActivityDetails::Interaction {
                kind,
                other_kind,
                campaign_id,
                page,
                product_id,
                category,
                reference_id,
            } => Details::Interaction(pb::Interaction {
                interaction_kind: i32::from(*kind),
                other_kind: other_kind.clone(),
                campaign_id: campaign_id.clone(),
                page: page.clone(),
                product_id: product_id.clone(),
                category: category.clone(),
                reference_id: reference_id.clone(),
            }),
            ActivityDetails::CustomEvent(event) => Details::CustomEvent(custom_event_to_pb(event)),
        };
        pb::Activity {
            activity_id: a.id.to_string(),
            customer_id: a.customer_id.to_string(),
            source: a.source.clone(),
            event_id: a.event_id.clone(),
            occur_time: Some(ts(a.occur_time)),
            record_time: Some(ts(a.record_time)),
            channel: a.channel.clone(),
            details: Some(details),
        }
    }
}

/// A custom event as the contract carries it, every property it holds included (the feed's
/// copy is made from the event `without_pii`, see `events::activity_recorded`).
fn custom_event_to_pb(event: &CustomEvent) -> pb::CustomEvent {
    use pb::event_property_value::Value;
    let properties = event
        .properties
        .iter()
        .map(|(name, value)| {
            let value = match value {
                PropertyValue::String(s) => Value::StringValue(s.clone()),
                PropertyValue::Number(n) => Value::NumberValue(*n),
                PropertyValue::Bool(b) => Value::BoolValue(*b),
                PropertyValue::Time(micros) => Value::TimeValue(
                    DateTime::from_timestamp_micros(*micros)
                        .map(ts)
                        .unwrap_or_default(),
                ),
                PropertyValue::Money {
                    amount_minor,
                    currency,
                } => Value::MoneyValue(common::Money {
                    amount_minor: *amount_minor,
                    currency: currency.clone(),
                }),
            };
            (name.clone(), pb::EventPropertyValue { value: Some(value) })
        })
        .collect();
    pb::CustomEvent {
        event_type: event.event_type.clone(),
        properties,
    }
}

impl From<&PropertyDefinition> for pb::EventPropertyDefinition {
    fn from(p: &PropertyDefinition) -> Self {
        pb::EventPropertyDefinition {
            property_name: p.name.clone(),
            property_type: p.property_type.number(),
            description: p.description.clone(),
            contains_pii: p.contains_pii,
            required: p.required,
        }
    }
}

impl From<&EventType> for pb::EventType {
    fn from(t: &EventType) -> Self {
        pb::EventType {
            event_type_name: t.name.clone(),
            description: t.description.clone(),
            properties: t.properties.iter().map(Into::into).collect(),
            create_time: Some(ts(t.create_time)),
            update_time: Some(ts(t.update_time)),
        }
    }
}

impl From<&AttributeDefinition> for pb::AttributeDefinition {
    fn from(d: &AttributeDefinition) -> Self {
        pb::AttributeDefinition {
            attribute_name: d.name.clone(),
            value_type: i32::from(d.value_type),
            description: d.description.clone(),
            contains_pii: d.contains_pii,
            create_time: Some(ts(d.create_time)),
        }
    }
}

impl From<&MergeRecord> for pb::MergeRecord {
    fn from(m: &MergeRecord) -> Self {
        pb::MergeRecord {
            merge_id: if m.id.is_nil() {
                String::new()
            } else {
                m.id.to_string()
            },
            source_customer_id: m.source_customer_id.to_string(),
            target_customer_id: m.target_customer_id.to_string(),
            state: i32::from(m.state),
            survivorship_choices: m
                .choices
                .iter()
                .map(|(p, w)| pb::SurvivorshipChoice {
                    field_path: p.clone(),
                    winner: i32::from(*w),
                })
                .collect(),
            source_value_paths: m.source_value_paths.clone(),
            moved_identity_count: m.moved_identity_count,
            moved_activity_count: m.moved_activity_count,
            merge_actor: Some((&m.actor).into()),
            merge_reason: m.reason.clone(),
            merge_time: Some(ts(m.merge_time)),
            unmerge_expire_time: Some(ts(m.unmerge_expire_time)),
            unmerge_time: m.unmerge.as_ref().map(|u| ts(u.0)),
            unmerge_actor: m.unmerge.as_ref().map(|u| (&u.1).into()),
            unmerge_reason: m.unmerge.as_ref().map(|u| u.2.clone()).unwrap_or_default(),
        }
    }
}

/// A customer as a merge snapshot: the `Customer` message, encoded.
pub fn encode_snapshot(c: &Customer) -> Vec<u8> {
    pb::Customer::from(c).encode_to_vec()
}

/// A merge snapshot back into the traits, identities and consents it was taken of: the exact
/// inverse of [`encode_snapshot`] (snapshots are written by this service from valid values,
/// so nothing is validated again).
pub fn decode_snapshot(
    bytes: &[u8],
) -> Result<(Traits, Vec<Identity>, Vec<Consent>), prost::DecodeError> {
    let c = pb::Customer::decode(bytes)?;
    let identities = c
        .identities
        .iter()
        .filter_map(|i| Identity::parse(i.identity_type, &i.namespace, &i.value).ok())
        .collect();
    let consents = c
        .consents
        .iter()
        .map(|k| Consent {
            channel: small(k.channel),
            status: small(k.status),
            source: k.source.clone(),
            actor: k
                .actor
                .as_ref()
                .map(|a| Actor {
                    kind: small(a.actor_kind),
                    id: a.actor_id.clone(),
                    service: a.service.clone(),
                })
                .unwrap_or_default(),
            change_time: k.change_time.as_ref().and_then(from_ts).unwrap_or_default(),
            record_time: k.record_time.as_ref().and_then(from_ts).unwrap_or_default(),
        })
        .collect();
    Ok((traits_from_snapshot(&c), identities, consents))
}

fn small(n: i32) -> i16 {
    i16::try_from(n).unwrap_or(0)
}

/// The inverse of the traits part of `From<&Customer> for pb::Customer`.
fn traits_from_snapshot(c: &pb::Customer) -> Traits {
    let d = c.demographics.clone().unwrap_or_default();
    let g = c.geography.clone().unwrap_or_default();
    let psy = c.psychographics.clone().unwrap_or_default();
    let birth_date = d.birth_date.as_ref().and_then(|date| {
        let month = u32::try_from(date.month).ok()?;
        let day = u32::try_from(date.day).ok()?;
        NaiveDate::from_ymd_opt(date.year, month, day)
    });
    Traits {
        display_name: c.display_name.clone(),
        given_name: c.given_name.clone(),
        family_name: c.family_name.clone(),
        birth_date,
        gender: small(d.gender),
        income_band: small(d.income_band),
        occupation: d.occupation,
        education_level: small(d.education_level),
        country_code: g.country_code,
        region: g.region,
        city: g.city,
        postal_code: g.postal_code,
        interests: psy.interests,
        lifestyle_tags: psy.lifestyle_tags,
        tags: c.tags.clone(),
        custom_attributes: c
            .custom_attributes
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), attribute_from_snapshot(value)?)))
            .collect(),
        channel_preferences: c
            .channel_preferences
            .as_ref()
            .map(|p| ChannelPreferences {
                preferred_channels: p.preferred_channels.iter().map(|c| small(*c)).collect(),
                language_code: p.language_code.clone(),
                time_zone: p.time_zone.clone(),
                quiet_hours: p
                    .quiet_hours
                    .as_ref()
                    .map(|q| (q.start_minute, q.end_minute)),
            })
            .unwrap_or_default(),
    }
}

fn attribute_from_snapshot(value: &pb::CustomAttributeValue) -> Option<AttributeValue> {
    use pb::custom_attribute_value::Value;
    Some(match value.value.as_ref()? {
        Value::StringValue(s) => AttributeValue::String(s.clone()),
        Value::NumberValue(n) => AttributeValue::Number(*n),
        Value::BoolValue(b) => AttributeValue::Bool(*b),
        Value::TimeValue(t) => AttributeValue::Time(from_ts(t)?.timestamp_micros()),
    })
}

#[cfg(test)]
mod tests;
