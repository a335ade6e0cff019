//! The profiles feed's events, built from domain values. Every payload is a message of
//! `events.proto` and holds no personal data: customers travel as `CustomerTraits`, custom
//! events without their `contains_pii` properties.

use std::collections::HashSet;

use custops_common::outbox::OutboxEvent;
use custops_contracts::custops::profiles::v1 as pb;
use uuid::Uuid;

use custops_common::time::to_timestamp as ts;

use crate::domain::event_type::without_pii;
use crate::domain::{
    Activity, ActivityDetails, AttributeDefinition, ConsentChange, Customer, EventType, MergeRecord,
};
use crate::wire::traits_to_pb;

const CUSTOMER: &str = "customer";

/// CustomerCreated.
pub fn customer_created(c: &Customer, pii: &HashSet<String>) -> OutboxEvent {
    OutboxEvent::new(
        CUSTOMER,
        c.id,
        &pb::CustomerCreated {
            traits: Some(traits_to_pb(c, pii)),
        },
    )
}

/// CustomerUpdated with the changed paths.
pub fn customer_updated(
    c: &Customer,
    pii: &HashSet<String>,
    changed_paths: Vec<String>,
) -> OutboxEvent {
    OutboxEvent::new(
        CUSTOMER,
        c.id,
        &pb::CustomerUpdated {
            traits: Some(traits_to_pb(c, pii)),
            changed_paths,
        },
    )
}

/// CustomerDeleted.
pub fn customer_deleted(c: &Customer) -> OutboxEvent {
    OutboxEvent::new(
        CUSTOMER,
        c.id,
        &pb::CustomerDeleted {
            customer_id: c.id.to_string(),
            delete_time: c.delete_time.map(ts),
        },
    )
}

/// CustomerUndeleted.
pub fn customer_undeleted(c: &Customer, pii: &HashSet<String>) -> OutboxEvent {
    OutboxEvent::new(
        CUSTOMER,
        c.id,
        &pb::CustomerUndeleted {
            traits: Some(traits_to_pb(c, pii)),
        },
    )
}

/// ConsentChanged, keyed by the customer so a customer's events stay in order.
pub fn consent_changed(change: &ConsentChange) -> OutboxEvent {
    OutboxEvent::new(
        CUSTOMER,
        change.customer_id,
        &pb::ConsentChanged {
            consent_change: Some(change.into()),
        },
    )
}

/// ActivityRecorded. A custom event travels without the values of its properties that
/// `event_type` (its declared type) marks `contains_pii`, or does not declare at all.
pub fn activity_recorded(a: &Activity, event_type: Option<&EventType>) -> OutboxEvent {
    let activity = match &a.details {
        ActivityDetails::CustomEvent(event) => pb::Activity::from(&Activity {
            details: ActivityDetails::CustomEvent(without_pii(event_type, event)),
            ..a.clone()
        }),
        _ => a.into(),
    };
    OutboxEvent::new(
        CUSTOMER,
        a.customer_id,
        &pb::ActivityRecorded {
            activity: Some(activity),
        },
    )
}

/// EventTypeDefined: the whole type after its creation or an addition.
pub fn event_type_defined(t: &EventType) -> OutboxEvent {
    OutboxEvent::new(
        "event_type",
        &t.name,
        &pb::EventTypeDefined {
            event_type: Some(t.into()),
        },
    )
}

/// AttributeDefinitionCreated.
pub fn attribute_created(d: &AttributeDefinition) -> OutboxEvent {
    OutboxEvent::new(
        "attribute_definition",
        &d.name,
        &pb::AttributeDefinitionCreated {
            attribute_definition: Some(d.into()),
        },
    )
}

/// CustomerMerged, keyed by the target.
pub fn customer_merged(m: &MergeRecord, target: &Customer, pii: &HashSet<String>) -> OutboxEvent {
    OutboxEvent::new(
        CUSTOMER,
        m.target_customer_id,
        &pb::CustomerMerged {
            merge_id: m.id.to_string(),
            source_customer_id: m.source_customer_id.to_string(),
            target_customer_id: m.target_customer_id.to_string(),
            merge_time: Some(ts(m.merge_time)),
            target_traits: Some(traits_to_pb(target, pii)),
            moved_activity_count: m.moved_activity_count,
        },
    )
}

/// CustomerErased.
pub fn customer_erased(c: &Customer, merged: &[Uuid]) -> OutboxEvent {
    OutboxEvent::new(
        CUSTOMER,
        c.id,
        &pb::CustomerErased {
            customer_id: c.id.to_string(),
            erase_time: c.erase_time.map(ts),
            merged_customer_ids: merged.iter().map(Uuid::to_string).collect(),
        },
    )
}

/// CustomerUnmerged, keyed by the former target.
pub fn customer_unmerged(
    m: &MergeRecord,
    source: &Customer,
    target: &Customer,
    pii: &HashSet<String>,
    moved_activity_count: i64,
) -> OutboxEvent {
    OutboxEvent::new(
        CUSTOMER,
        m.target_customer_id,
        &pb::CustomerUnmerged {
            merge_id: m.id.to_string(),
            source_customer_id: m.source_customer_id.to_string(),
            target_customer_id: m.target_customer_id.to_string(),
            unmerge_time: m.unmerge.as_ref().map(|u| ts(u.0)),
            source_traits: Some(traits_to_pb(source, pii)),
            target_traits: Some(traits_to_pb(target, pii)),
            moved_activity_count,
        },
    )
}
