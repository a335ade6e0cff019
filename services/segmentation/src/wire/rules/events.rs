//! [`EventCondition`] → its wire message (`custops.segmentation.v1.EventCondition`).

use custops_contracts::custops::common::v1 as common_pb;
use custops_contracts::custops::segmentation::v1 as pb;
use pb::activity_window::Span;

use crate::domain::rule::{
    Aggregate, EventCondition, EventStep, PropertyFilter, SequenceCondition, Window,
};

use super::{operator_to_proto, timestamp_to_proto, value_to_proto};

fn aggregate_to_proto(aggregate: Aggregate) -> pb::EventAggregate {
    use pb::EventAggregate as A;
    match aggregate {
        Aggregate::Count => A::Count,
        Aggregate::Sum => A::Sum,
        Aggregate::Min => A::Min,
        Aggregate::Max => A::Max,
        Aggregate::Average => A::Average,
        Aggregate::FirstTime => A::FirstTime,
        Aggregate::LastTime => A::LastTime,
        Aggregate::MostFrequent => A::MostFrequent,
    }
}

/// The condition as its wire message.
pub(super) fn event_to_proto(event: &EventCondition) -> pb::EventCondition {
    let measure = &event.measure;
    pb::EventCondition {
        event_type: measure.event_type.clone(),
        aggregate: aggregate_to_proto(measure.aggregate) as i32,
        property: measure.property.clone(),
        window: measure.window.map(window_to_proto),
        r#where: filters_to_proto(&measure.filters),
        operator: operator_to_proto(event.operator) as i32,
        values: event.values.iter().map(value_to_proto).collect(),
    }
}

fn window_to_proto(window: Window) -> pb::ActivityWindow {
    pb::ActivityWindow {
        span: Some(match window {
            Window::LastDays(days) => Span::LastDays(days),
            Window::Range { start, end } => Span::TimeRange(common_pb::TimeRange {
                start_time: Some(timestamp_to_proto(start)),
                end_time: Some(timestamp_to_proto(end)),
            }),
        }),
    }
}

fn filters_to_proto(filters: &[PropertyFilter]) -> Vec<pb::EventPropertyFilter> {
    filters
        .iter()
        .map(|f| pb::EventPropertyFilter {
            property: f.property.clone(),
            operator: operator_to_proto(f.operator) as i32,
            values: f.values.iter().map(value_to_proto).collect(),
        })
        .collect()
}

fn step_to_proto(step: &EventStep) -> pb::EventStep {
    pb::EventStep {
        event_type: step.event_type.clone(),
        r#where: filters_to_proto(&step.filters),
    }
}

/// The sequence condition as its wire message.
pub(super) fn sequence_to_proto(sequence: &SequenceCondition) -> pb::SequenceCondition {
    pb::SequenceCondition {
        first: Some(step_to_proto(&sequence.first)),
        then: Some(step_to_proto(&sequence.then)),
        within_days: sequence.within_days,
        not_between: sequence.not_between.as_ref().map(step_to_proto),
        window: sequence.window.map(window_to_proto),
    }
}
