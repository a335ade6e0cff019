//! Request parsing and the checks that need no database, shared by the segmentation
//! handlers: ids, request ids, pages, and segment requests turned into the commands of
//! `workflow::segments`, every bad field collected into one INVALID_ARGUMENT.

use std::collections::{BTreeMap, BTreeSet};

use custops_common::error::{FieldViolation, ServiceError, Violations};
use custops_common::idempotency::RequestKey;
use custops_common::paging::{Page, PageTokens, PagedRequest};
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::{
    CreateSegmentRequest, ListSegmentsRequest, PreviewSegmentRequest, UpdateSegmentRequest,
    UploadStaticMembersRequest,
};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use tonic::{Status, Streaming};
use uuid::Uuid;

use crate::error::{Error, Result, field_violations};
use crate::store::segments::SegmentFilter;
use crate::workflow::segments::{NewSegment, PreviewRequest, SegmentChange, Upload};

/// Most ids in one upload, and in one message of it.
const MAX_UPLOAD_IDS: usize = 1_000_000;
const MAX_UPLOAD_IDS_PER_MESSAGE: usize = 10_000;

/// A required UUID field.
pub(super) fn parse_id(field: &str, value: &str) -> Result<Uuid> {
    if value.is_empty() {
        return Err(Error::invalid(field, "required"));
    }
    Uuid::parse_str(value).map_err(|_| Error::invalid(field, "not a valid UUID"))
}

/// The customer id of a read that answers NOT_FOUND for a customer segmentation does not hold
/// (facts, RFM, lifecycle, explanations) or an empty answer (the export): a profiles id, which
/// is a UUID. Anything else could never be found, so it is INVALID_ARGUMENT naming `field`
/// rather than a NOT_FOUND that reads like "not seen yet". Returned in the canonical form the
/// feeds carry (lower-case, hyphenated), so `{…}` or upper-case spellings find the customer.
pub(super) fn parse_customer_id(field: &str, value: &str) -> Result<String> {
    if value.is_empty() {
        return Err(Error::invalid(field, "required"));
    }
    Uuid::parse_str(value)
        .map(|id| id.hyphenated().to_string())
        .map_err(|_| Error::invalid(field, "must be a profiles customer id (a UUID)"))
}

/// One INVALID_ARGUMENT holding the violations of every error given (`None`s skipped), so a
/// request with several bad ids names them all.
pub(super) fn join_invalid(errors: impl IntoIterator<Item = Option<Error>>) -> Error {
    let mut violations = Vec::new();
    for error in errors.into_iter().flatten() {
        match error {
            Error::InvalidArgument(v) => violations.extend(v),
            other => return other,
        }
    }
    Error::InvalidArgument(violations)
}

/// A customer id of a lookup: 1–128 printable ASCII characters without spaces. Lookups take
/// any such key and answer "no segments" for one never seen (the contract's rule for unknown
/// customers), so callers holding ids in another spelling are not broken; see ARCHITECTURE.md.
pub(super) fn check_customer_id(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("required".to_owned());
    }
    if value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 1-128 printable ASCII characters without spaces".to_owned());
    }
    Ok(())
}

/// An optional request id: empty, or 1–128 printable ASCII characters.
pub(super) fn check_request_id(violations: &mut Violations, field: &str, value: &str) {
    violations.check(
        value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic()),
        field,
        "must be 1-128 printable ASCII characters",
    );
}

/// The page `request` asks for (`custops_common::paging`): INVALID_ARGUMENT on `page_size` or
/// `page_token`.
pub(super) fn page<'t, R: PagedRequest, C: DeserializeOwned>(
    tokens: &'t PageTokens,
    request: &R,
) -> Result<Page<'t, C>> {
    tokens.page(request).map_err(|error| match error {
        ServiceError::InvalidArgument(violations) => Error::InvalidArgument(violations),
        other => Error::internal(other),
    })
}

/// Both values, or one INVALID_ARGUMENT naming the bad fields of both.
pub(super) fn both<A, B>(a: Result<A>, b: Result<B>) -> Result<(A, B)> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(join_invalid([a.err(), b.err()])),
    }
}

/// Whether `view` asks for the rule (unset: `default_full`).
pub(super) fn full_view(view: i32, default_full: bool) -> bool {
    match pb::SegmentView::try_from(view) {
        Ok(pb::SegmentView::Full) => true,
        Ok(pb::SegmentView::Basic) => false,
        _ => default_full,
    }
}

/// Labels: at most 64, keys 1–63 of `[a-z0-9_-]` starting with a letter, values ≤ 63.
fn check_labels(violations: &mut Violations, field: &str, labels: &BTreeMap<String, String>) {
    if labels.len() > 64 {
        violations.add(field, "at most 64 labels");
    }
    for (key, value) in labels {
        let key_ok = (1..=63).contains(&key.len())
            && key.starts_with(|c: char| c.is_ascii_lowercase())
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !key_ok {
            violations.add(
                format!("{field}[{key}]"),
                "keys are 1-63 lower-case letters, digits, `_` or `-`, starting with a letter",
            );
        }
        if value.chars().count() > 63 {
            violations.add(
                format!("{field}[{key}]"),
                "values are at most 63 characters",
            );
        }
    }
}

/// A display name: 1–200 characters, not blank.
fn check_display_name(violations: &mut Violations, field: &str, name: &str) {
    let len = name.chars().count();
    violations.check(
        (1..=200).contains(&len) && !name.trim().is_empty(),
        field,
        "required, 1-200 characters",
    );
}

/// A description: at most 2,000 characters.
fn check_description(violations: &mut Violations, field: &str, description: &str) {
    violations.check(
        description.chars().count() <= 2_000,
        field,
        "at most 2,000 characters",
    );
}

/// The idempotency key of a CreateSegment request (its labels are a `BTreeMap`, so one
/// request always encodes, and fingerprints, the same).
fn create_key(caller: &str, request: &CreateSegmentRequest) -> RequestKey {
    RequestKey::new(caller, request.request_id.clone(), "CreateSegment", request)
}

/// A CreateSegment request as its command, its idempotency key (none without a request id or
/// with `validate_only`) and the violations found so far; the rule is checked by the use case.
pub(super) fn new_segment(
    caller: &str,
    request: &CreateSegmentRequest,
) -> Result<(NewSegment, Option<RequestKey>, Vec<FieldViolation>)> {
    let mut violations = Violations::new();
    check_request_id(&mut violations, "request_id", &request.request_id);
    let Some(segment) = request.segment.as_ref() else {
        violations.add("segment", "required");
        Error::check(violations)?;
        return Err(Error::invalid("segment", "required"));
    };
    check_display_name(
        &mut violations,
        "segment.display_name",
        &segment.display_name,
    );
    check_description(&mut violations, "segment.description", &segment.description);
    check_labels(&mut violations, "segment.labels", &segment.labels);
    let kind = pb::SegmentKind::try_from(segment.kind).unwrap_or(pb::SegmentKind::Unspecified);
    match kind {
        pb::SegmentKind::Unspecified => violations.add("segment.kind", "required: RULE or STATIC"),
        pb::SegmentKind::Rule if segment.rule.is_none() => {
            violations.add("segment.rule", "required for a RULE segment");
        }
        pb::SegmentKind::Static if segment.rule.is_some() => {
            violations.add("segment.rule", "must be unset for a STATIC segment");
        }
        _ => {}
    }
    let key = (!request.request_id.is_empty() && !request.validate_only)
        .then(|| create_key(caller, request));
    let is_rule = kind == pb::SegmentKind::Rule;
    let segment = NewSegment {
        display_name: segment.display_name.clone(),
        description: segment.description.clone(),
        labels: segment.labels.clone().into_iter().collect(),
        rule_kind: is_rule,
        rule: segment.rule.clone().filter(|_| is_rule),
        validate_only: request.validate_only,
    };
    Ok((segment, key, field_violations(violations)))
}

/// An UpdateSegment request as its command: the masked fields only.
pub(super) fn segment_change(request: UpdateSegmentRequest) -> Result<SegmentChange> {
    let segment = request
        .segment
        .as_ref()
        .ok_or_else(|| Error::invalid("segment", "required"))?;
    let id = parse_id("segment.segment_id", &segment.segment_id)?;
    let paths: Vec<String> = request
        .update_mask
        .as_ref()
        .map(|m| m.paths.clone())
        .unwrap_or_default();
    let mut violations = Violations::new();
    if paths.is_empty() {
        violations.add(
            "update_mask",
            "required: any of display_name, description, labels, rule",
        );
    }
    for path in &paths {
        if !matches!(
            path.as_str(),
            "display_name" | "description" | "labels" | "rule"
        ) {
            violations.add(
                "update_mask",
                format!("`{path}` cannot be updated (display_name, description, labels, rule)"),
            );
        }
    }
    let has = |p: &str| paths.iter().any(|x| x == p);
    if has("display_name") {
        check_display_name(
            &mut violations,
            "segment.display_name",
            &segment.display_name,
        );
    }
    if has("description") {
        check_description(&mut violations, "segment.description", &segment.description);
    }
    if has("labels") {
        check_labels(&mut violations, "segment.labels", &segment.labels);
    }
    Error::check(violations)?;
    let segment = segment.clone();
    Ok(SegmentChange {
        segment_id: id,
        etag: segment.etag,
        display_name: has("display_name").then_some(segment.display_name),
        description: has("description").then_some(segment.description),
        labels: has("labels").then(|| segment.labels.into_iter().collect::<BTreeMap<_, _>>()),
        rule: has("rule").then_some(segment.rule),
        validate_only: request.validate_only,
    })
}

/// A PreviewSegment request and the violations found so far; the rule is checked by the use
/// case.
pub(super) fn preview_request(
    request: PreviewSegmentRequest,
) -> (PreviewRequest, Vec<FieldViolation>) {
    let mut violations = Violations::new();
    violations.check(
        (0..=100).contains(&request.sample_size),
        "sample_size",
        "must be 0-100",
    );
    let compare = if request.compare_segment_id.is_empty() {
        None
    } else {
        violations.take(
            "compare_segment_id",
            Uuid::parse_str(&request.compare_segment_id).map_err(|_| "not a valid UUID".to_owned()),
        )
    };
    let condition = request.rule.as_ref();
    if condition.is_none() {
        violations.add("rule", "required");
    }
    let sample_size = if request.sample_size == 0 {
        20
    } else {
        i64::from(request.sample_size)
    };
    let preview = PreviewRequest {
        rule: request.rule,
        compare_segment_id: compare,
        sample_size,
    };
    (preview, field_violations(violations))
}

/// Reads a whole UploadStaticMembers stream: the first message sets segment, mode and
/// request id, later ones may only repeat them.
pub(super) async fn upload(
    caller: &str,
    mut stream: Streaming<UploadStaticMembersRequest>,
) -> Result<(Upload, Option<RequestKey>), Status> {
    let mut segment_id = String::new();
    let mut mode = pb::StaticUploadMode::Unspecified;
    let mut request_id = String::new();
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut index = 0_usize;
    let mut first = true;
    while let Some(message) = stream.next().await {
        let message = message?;
        let mut violations = Violations::new();
        if first {
            segment_id = message.segment_id.clone();
            mode = pb::StaticUploadMode::try_from(message.mode)
                .unwrap_or(pb::StaticUploadMode::Unspecified);
            request_id = message.request_id.clone();
            check_request_id(&mut violations, "request_id", &request_id);
            first = false;
        } else {
            violations.check(
                message.segment_id.is_empty() || message.segment_id == segment_id,
                "segment_id",
                "differs from the first message",
            );
            violations.check(
                message.mode == 0 || message.mode == i32::from(mode),
                "mode",
                "differs from the first message",
            );
        }
        violations.check(
            message.customer_ids.len() <= MAX_UPLOAD_IDS_PER_MESSAGE,
            "customer_ids",
            "at most 10,000 ids per message",
        );
        for id in message.customer_ids {
            if let Err(description) = check_customer_id(&id) {
                violations.add(format!("customer_ids[{index}]"), description);
            }
            index += 1;
            ids.insert(id);
        }
        Error::check(violations)?;
        if index > MAX_UPLOAD_IDS {
            return Err(Error::UploadTooLarge.into());
        }
    }
    let id = parse_id("segment_id", &segment_id)?;
    if mode == pb::StaticUploadMode::Unspecified {
        return Err(Error::invalid("mode", "required: ADD, REMOVE or REPLACE").into());
    }
    let ids: Vec<String> = ids.into_iter().collect();
    // The whole upload as one request (its ids deduplicated and sorted), so a retry that
    // splits the same ids into other messages replays.
    let key = (!request_id.is_empty()).then(|| {
        let whole = UploadStaticMembersRequest {
            segment_id: id.to_string(),
            mode: mode.into(),
            request_id: request_id.clone(),
            customer_ids: ids.clone(),
        };
        RequestKey::new(caller, &request_id, "UploadStaticMembers", &whole)
    });
    let upload = Upload {
        segment_id: id,
        mode,
        customer_ids: ids,
    };
    Ok((upload, key))
}

/// BatchGetSegments ids: 1–1,000 UUIDs.
pub(super) fn segment_ids(raw_ids: &[String]) -> Result<Vec<Uuid>> {
    let mut violations = Violations::new();
    violations.check(
        (1..=1_000).contains(&raw_ids.len()),
        "segment_ids",
        "1-1,000 ids required",
    );
    let mut ids = Vec::new();
    for (i, raw) in raw_ids.iter().enumerate() {
        match Uuid::parse_str(raw) {
            Ok(id) => ids.push(id),
            Err(_) => violations.add(format!("segment_ids[{i}]"), "not a valid UUID"),
        }
    }
    Error::check(violations)?;
    Ok(ids)
}

/// The filter of a ListSegments request.
pub(super) fn segment_filter(request: &ListSegmentsRequest) -> Result<SegmentFilter> {
    let mut violations = Violations::new();
    let rule_kind = match pb::SegmentKind::try_from(request.kind) {
        Ok(pb::SegmentKind::Rule) => Some(true),
        Ok(pb::SegmentKind::Static) => Some(false),
        Ok(pb::SegmentKind::Unspecified) => None,
        Err(_) => {
            violations.add("kind", "unknown kind");
            None
        }
    };
    let referenced = if request.referenced_segment_id.is_empty() {
        None
    } else {
        violations.take(
            "referenced_segment_id",
            Uuid::parse_str(&request.referenced_segment_id)
                .map_err(|_| "not a valid UUID".to_owned()),
        )
    };
    violations.check(
        request.field.len() <= 256,
        "field",
        "at most 256 characters",
    );
    Error::check(violations)?;
    Ok(SegmentFilter {
        rule_kind,
        labels: request.labels.clone().into_iter().collect(),
        referenced_segment_id: referenced,
        field: (!request.field.is_empty()).then(|| request.field.clone()),
    })
}
