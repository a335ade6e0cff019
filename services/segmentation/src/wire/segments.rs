//! Stored segments as their wire messages: API responses and the outbox events the segment
//! use cases write carry the same `Segment`, so both build it here; a customer's memberships
//! as people see them (ListCustomerSegments FULL, the data-subject export).

use custops_contracts::custops::segmentation::v1 as pb;
use uuid::Uuid;

use crate::store::memberships::SegmentMembership;
use crate::store::segments::{self as store, SegmentRecord, VersionRecord};
use crate::wire::timestamp as ts;

/// A stored segment on the wire; the rule only with `full`.
pub fn segment_to_proto(s: &SegmentRecord, full: bool) -> pb::Segment {
    let rule = if full {
        s.rule.as_deref().and_then(|b| store::decode_rule(b).ok())
    } else {
        None
    };
    pb::Segment {
        segment_id: s.segment_id.to_string(),
        display_name: s.display_name.clone(),
        description: s.description.clone(),
        kind: if s.rule_kind {
            pb::SegmentKind::Rule
        } else {
            pb::SegmentKind::Static
        }
        .into(),
        rule,
        version: s.version,
        membership_version: s.membership_version,
        member_count: s.member_count,
        time_dependent: s.time_dependent,
        referenced_segment_ids: s
            .referenced_segment_ids
            .iter()
            .map(Uuid::to_string)
            .collect(),
        labels: s.labels.clone().into_iter().collect(),
        latest_recompute_job_id: s
            .latest_recompute_job_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        create_time: Some(ts(s.create_time)),
        update_time: Some(ts(s.update_time)),
        etag: s.etag.clone(),
    }
}

/// A stored rule version on the wire.
pub fn version_to_proto(v: &VersionRecord) -> pb::SegmentVersion {
    pb::SegmentVersion {
        segment_id: v.segment_id.to_string(),
        version: v.version,
        rule: store::decode_rule(&v.rule).ok(),
        create_time: Some(ts(v.create_time)),
        creator: v.creator.clone(),
    }
}

/// One of a customer's memberships with its segment's name and kind.
pub fn membership_to_proto(m: &SegmentMembership) -> pb::CustomerSegmentMembership {
    pb::CustomerSegmentMembership {
        segment_id: m.segment_id.to_string(),
        display_name: m.display_name.clone(),
        kind: if m.rule_kind {
            pb::SegmentKind::Rule
        } else {
            pb::SegmentKind::Static
        }
        .into(),
        enter_time: Some(ts(m.enter_time)),
    }
}
