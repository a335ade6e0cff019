//! Computed traits on the wire (computed_trait.proto): a stored trait → `ComputedTrait`, a
//! customer's value → `ComputedTraitValue`, and the definition fields kept encoded in
//! `computed_traits.definition`.

use custops_contracts::custops::segmentation::v1 as pb;
use prost::Message;

use crate::domain::catalog::ValueType;
use crate::domain::computed::ComputedValue;
use crate::store::computed::TraitRecord;
use crate::wire::timestamp;
use crate::workflow::computed::TraitValue;

/// Only the definition fields of `wire` (event type, aggregate, property, window, filters):
/// what a version is made of and what is stored encoded.
pub fn definition_of(wire: &pb::ComputedTrait) -> pb::ComputedTrait {
    pb::ComputedTrait {
        event_type: wire.event_type.clone(),
        aggregate: wire.aggregate,
        property: wire.property.clone(),
        window: wire.window,
        r#where: wire.r#where.clone(),
        ..Default::default()
    }
}

/// The stored definition bytes.
pub fn decode_definition(bytes: &[u8]) -> Result<pb::ComputedTrait, prost::DecodeError> {
    pb::ComputedTrait::decode(bytes)
}

/// The trait on the wire, with `definition` (the current one, or an earlier version's).
pub fn trait_to_proto(record: &TraitRecord, definition: &pb::ComputedTrait) -> pb::ComputedTrait {
    pb::ComputedTrait {
        name: record.name.clone(),
        description: record.description.clone(),
        version: record.version,
        value_type: value_type_to_proto(record.aggregate.value_type()) as i32,
        time_dependent: record.time_dependent,
        create_time: Some(timestamp(record.create_time)),
        update_time: Some(timestamp(record.update_time)),
        etag: record.etag.clone(),
        latest_recompute_job_id: record
            .latest_recompute_job_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        ..definition_of(definition)
    }
}

fn value_type_to_proto(value_type: ValueType) -> pb::ValueType {
    match value_type {
        ValueType::Integer => pb::ValueType::Integer,
        ValueType::Double => pb::ValueType::Double,
        ValueType::Timestamp => pb::ValueType::Timestamp,
        _ => pb::ValueType::String,
    }
}

/// A customer's value of a trait on the wire.
pub fn trait_value_to_proto(value: &TraitValue) -> pb::ComputedTraitValue {
    use pb::computed_trait_value::Value as V;
    pb::ComputedTraitValue {
        name: value.name.clone(),
        version: value.version,
        value: value.value.as_ref().map(|v| match v {
            ComputedValue::Integer(v) => V::IntegerValue(*v),
            ComputedValue::Double(v) => V::DoubleValue(*v),
            ComputedValue::Time(v) => V::TimestampValue(timestamp(*v)),
            ComputedValue::Text(v) => V::StringValue(v.clone()),
        }),
        compute_time: value.compute_time.map(timestamp),
    }
}
