//! The merge snapshot round trip: decoding gives back exactly what was encoded, for every
//! trait, identity and consent field, so an unmerge restores the customer as it was.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{decode_snapshot, encode_snapshot};
use crate::domain::{
    Actor, AttributeValue, ChannelPreferences, Consent, Customer, CustomerState, Identity,
    IdentityType, Traits,
};

fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

fn identity(kind: IdentityType, namespace: &str, value: &str) -> Identity {
    Identity {
        kind,
        namespace: namespace.to_owned(),
        value: value.to_owned(),
        create_time: Some(time(1_700_000_000_000_001)),
    }
}

/// A customer with every field the snapshot carries set to something other than its default.
fn everything_set() -> Customer {
    let traits = Traits {
        display_name: "Wei Li".to_owned(),
        given_name: "Wei".to_owned(),
        family_name: "Li".to_owned(),
        birth_date: NaiveDate::from_ymd_opt(1990, 2, 28),
        gender: 2,
        income_band: 3,
        occupation: "engineer".to_owned(),
        education_level: 4,
        country_code: "CN".to_owned(),
        region: "CN-GD".to_owned(),
        city: "Shenzhen".to_owned(),
        postal_code: "518000".to_owned(),
        interests: vec!["cooking".to_owned(), "tech".to_owned()],
        lifestyle_tags: vec!["student".to_owned()],
        tags: vec!["b2b".to_owned(), "vip".to_owned()],
        custom_attributes: BTreeMap::from([
            (
                "colour".to_owned(),
                AttributeValue::String("teal".to_owned()),
            ),
            ("score".to_owned(), AttributeValue::Number(4.25)),
            ("member".to_owned(), AttributeValue::Bool(true)),
            (
                "since".to_owned(),
                AttributeValue::Time(1_600_000_000_123_456),
            ),
        ]),
        channel_preferences: ChannelPreferences {
            preferred_channels: vec![3, 1],
            language_code: "zh-CN".to_owned(),
            time_zone: "Asia/Shanghai".to_owned(),
            quiet_hours: Some((1320, 480)),
        },
    };
    Customer {
        id: Uuid::now_v7(),
        version: 7,
        state: CustomerState::Active,
        merged_into: None,
        create_time: time(1_700_000_000_000_001),
        update_time: time(1_700_000_000_000_002),
        delete_time: None,
        erase_time: None,
        traits,
        identities: vec![
            identity(IdentityType::Email, "", "wei.li@example.com"),
            identity(IdentityType::WechatOpenid, "wxapp", "o_123"),
        ],
        consents: vec![Consent {
            channel: 2,
            status: 1,
            source: "signup".to_owned(),
            actor: Actor {
                kind: 1,
                id: "agent-7".to_owned(),
                service: "crm".to_owned(),
            },
            change_time: time(1_700_000_000_000_003),
            record_time: time(1_700_000_000_000_004),
        }],
    }
}

#[test]
fn a_snapshot_decodes_to_exactly_what_was_encoded() -> Result<(), prost::DecodeError> {
    let customer = everything_set();

    let (traits, identities, consents) = decode_snapshot(&encode_snapshot(&customer))?;

    assert_eq!(traits, customer.traits);
    let keys = |list: &[Identity]| {
        list.iter()
            .map(|i| (i.kind, i.namespace.clone(), i.value.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&identities), keys(&customer.identities));
    assert_eq!(consents, customer.consents);
    Ok(())
}

#[test]
fn an_empty_customer_round_trips_too() -> Result<(), prost::DecodeError> {
    let mut customer = everything_set();
    customer.traits = Traits::default();
    customer.identities.clear();
    customer.consents.clear();

    let (traits, identities, consents) = decode_snapshot(&encode_snapshot(&customer))?;

    assert_eq!(traits, Traits::default());
    assert!(identities.is_empty());
    assert!(consents.is_empty());
    Ok(())
}
