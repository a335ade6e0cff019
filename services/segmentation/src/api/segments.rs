//! Segment CRUD, versions, preview and static uploads: requests are parsed and checked here
//! (rules against the catalog and the reference graph), then applied in one transaction with
//! their outbox events and cache notifications.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use custops_common::auth::Caller;
use custops_common::error::{FieldViolation, ServiceError, Violations};
use custops_common::paging;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::{
    BatchGetSegmentsRequest, BatchGetSegmentsResponse, CreateSegmentRequest, CreateSegmentResponse,
    DeleteSegmentRequest, DeleteSegmentResponse, GetSegmentRequest, GetSegmentResponse,
    ListSegmentVersionsRequest, ListSegmentVersionsResponse, ListSegmentsRequest,
    ListSegmentsResponse, PreviewSegmentRequest, PreviewSegmentResponse, UpdateSegmentRequest,
    UpdateSegmentResponse, UploadStaticMembersRequest, UploadStaticMembersResponse,
};
use futures_util::StreamExt;
use prost::Message;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, Row};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

use super::SegmentationApi;
use crate::domain::rule::Rule;
use crate::events::{self, ChangeCause};
use crate::jobs::job_id_string;
use crate::rules_wire::parse_rule;
use crate::store::catalog::load_catalog;
use crate::store::jobs::{self as job_store, JobRecord};
use crate::store::segments::{self as store, SegmentRecord};
use crate::store::settings::{self as keys, IdempotencyKey, KeyLookup};
use crate::store::{compile, memberships};

/// Most segments a deployment holds.
const MAX_SEGMENTS: i64 = 10_000;
/// Longest chain of segment references (A → B → C → D → E is 4).
const MAX_REFERENCE_DEPTH: usize = 4;
/// Most segment references in one rule.
const MAX_REFERENCES: usize = 20;
/// Most ids in one upload, and in one message of it.
const MAX_UPLOAD_IDS: usize = 1_000_000;
const MAX_UPLOAD_IDS_PER_MESSAGE: usize = 10_000;
/// Unknown ids reported back.
const MAX_REPORTED_UNKNOWN: usize = 1_000;
/// Above this many changed customers an upload moves the cache epoch instead of notifying
/// each customer.
const NOTIFY_EACH_MAX: usize = 1_000;
/// Previews scan the whole customer base: at most this many run at once per replica.
const MAX_CONCURRENT_PREVIEWS: usize = 4;

static PREVIEWS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(MAX_CONCURRENT_PREVIEWS);

// ---------- shared helpers of the segmentation handlers ----------

/// The calling service's name (anonymous when auth is off).
pub(super) fn caller<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Caller>()
        .map(|c| c.service.clone())
        .unwrap_or_else(|| Caller::anonymous().service)
}

/// A required UUID field.
pub(super) fn parse_id(field: &str, value: &str) -> Result<Uuid, ServiceError> {
    if value.is_empty() {
        return Err(ServiceError::invalid_argument(field, "required"));
    }
    Uuid::parse_str(value).map_err(|_| ServiceError::invalid_argument(field, "not a valid UUID"))
}

/// A customer id: 1–128 printable ASCII characters without spaces.
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
fn check_request_id(violations: &mut Violations, field: &str, value: &str) {
    violations.check(
        value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic()),
        field,
        "must be 1-128 printable ASCII characters",
    );
}

/// The violations inside an INVALID_ARGUMENT (empty for any other error).
fn into_violations(violations: Violations) -> Vec<FieldViolation> {
    match violations.into_result() {
        Err(ServiceError::InvalidArgument(v)) => v,
        _ => Vec::new(),
    }
}

fn internal(error: impl Into<anyhow::Error>) -> ServiceError {
    ServiceError::internal(error)
}

fn db(error: sqlx::Error) -> ServiceError {
    ServiceError::from(error)
}

fn reused() -> ServiceError {
    ServiceError::AlreadyExists {
        message: "request_id was already used with a different request".to_owned(),
        reason: Some("REQUEST_ID_REUSED"),
    }
}

/// A keyset cursor `(time in µs, id)` back in typed form.
pub(super) fn decode_cursor(cursor: (i64, String)) -> Result<(DateTime<Utc>, Uuid), ServiceError> {
    let bad = || ServiceError::invalid_argument("page_token", "malformed");
    let time = DateTime::<Utc>::from_timestamp_micros(cursor.0).ok_or_else(bad)?;
    let id = Uuid::parse_str(&cursor.1).map_err(|_| bad())?;
    Ok((time, id))
}

/// A timestamp on the wire.
pub(super) fn ts(time: DateTime<Utc>) -> prost_types::Timestamp {
    events::timestamp(time)
}

/// A stored segment on the wire; the rule only with `full`.
pub(crate) fn segment_to_proto(s: &SegmentRecord, full: bool) -> pb::Segment {
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

fn full_view(view: i32, default_full: bool) -> bool {
    match pb::SegmentView::try_from(view) {
        Ok(pb::SegmentView::Full) => true,
        Ok(pb::SegmentView::Basic) => false,
        _ => default_full,
    }
}

fn check_labels(violations: &mut Violations, field: &str, labels: &HashMap<String, String>) {
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

fn check_display_name(violations: &mut Violations, field: &str, name: &str) {
    let len = name.chars().count();
    violations.check(
        (1..=200).contains(&len) && !name.trim().is_empty(),
        field,
        "required, 1-200 characters",
    );
}

fn check_description(violations: &mut Violations, field: &str, description: &str) {
    violations.check(
        description.chars().count() <= 2_000,
        field,
        "at most 2,000 characters",
    );
}

/// A rule that passed the catalog and the reference-graph checks.
struct CheckedRule {
    rule: Rule,
    bytes: Vec<u8>,
    references: Vec<Uuid>,
}

/// Parses `condition` against the catalog (violations named under `path`) and checks its
/// segment references: they exist, are not `defining` itself, make no cycle, no chain longer
/// than 4, and at most 20 of them.
async fn check_rule(
    conn: &mut PgConnection,
    condition: &pb::Condition,
    path: &str,
    defining: Option<Uuid>,
) -> Result<Result<CheckedRule, Vec<FieldViolation>>, ServiceError> {
    let catalog = load_catalog(&mut *conn).await.map_err(db)?;
    let rule = match parse_rule(condition, path, &catalog) {
        Ok(rule) => rule,
        Err(violations) => return Ok(Err(into_violations(violations))),
    };
    let references = rule.referenced_segments();
    let mut violations = Problems::default();
    if references.len() > MAX_REFERENCES {
        violations.add(path, format!("at most {MAX_REFERENCES} segment references"));
    }
    let mut graph = store::reference_graph(&mut *conn).await.map_err(db)?;
    let ids: Vec<Uuid> = references.iter().map(|(_, id)| *id).collect();
    if let Some(me) = defining {
        graph.insert(me, ids.clone());
    }
    for (field, id) in &references {
        if Some(*id) == defining {
            violations.add(field.as_str(), "a segment cannot reference itself");
        } else if !graph.contains_key(id) {
            violations.add(field.as_str(), "no such segment");
        } else if let Some(me) = defining
            && reaches(&graph, *id, me)
        {
            violations.add(
                field.as_str(),
                "the referenced segment references this segment (a cycle)",
            );
        } else if depth(&graph, *id, 0) + 1 > MAX_REFERENCE_DEPTH {
            violations.add(
                field.as_str(),
                format!("segment references may chain at most {MAX_REFERENCE_DEPTH} deep"),
            );
        }
    }
    // Segments referencing the one being updated get deeper chains too.
    if let Some(me) = defining
        && violations.0.is_empty()
    {
        let below = ids
            .iter()
            .map(|id| depth(&graph, *id, 0) + 1)
            .max()
            .unwrap_or(0);
        let above = height(&graph, me, 0);
        if below + above > MAX_REFERENCE_DEPTH {
            violations.add(
                path,
                format!(
                    "segments referencing this one would chain more than {MAX_REFERENCE_DEPTH} deep"
                ),
            );
        }
    }
    if !violations.0.is_empty() {
        return Ok(Err(violations.0));
    }
    let mut unique = ids;
    unique.sort();
    unique.dedup();
    Ok(Ok(CheckedRule {
        rule,
        bytes: condition.encode_to_vec(),
        references: unique,
    }))
}

/// Violations found while checking references.
#[derive(Default)]
struct Problems(Vec<FieldViolation>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }
}

/// Whether `from` reaches `to` through references.
fn reaches(graph: &HashMap<Uuid, Vec<Uuid>>, from: Uuid, to: Uuid) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(node) = stack.pop() {
        if node == to {
            return true;
        }
        if seen.insert(node)
            && let Some(next) = graph.get(&node)
        {
            stack.extend(next.iter().copied());
        }
    }
    false
}

/// Longest reference chain below `node` (0 when it references nothing).
fn depth(graph: &HashMap<Uuid, Vec<Uuid>>, node: Uuid, guard: usize) -> usize {
    if guard > 64 {
        return guard;
    }
    graph
        .get(&node)
        .map(|refs| {
            refs.iter()
                .map(|r| depth(graph, *r, guard + 1) + 1)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Longest chain of segments referencing `node` (0 when none does).
fn height(graph: &HashMap<Uuid, Vec<Uuid>>, node: Uuid, guard: usize) -> usize {
    if guard > 64 {
        return guard;
    }
    graph
        .iter()
        .filter(|(_, refs)| refs.contains(&node))
        .map(|(id, _)| height(graph, *id, guard + 1) + 1)
        .max()
        .unwrap_or(0)
}

/// Hash of a create request, independent of label order.
fn create_hash(request: &CreateSegmentRequest) -> Vec<u8> {
    let mut hasher = Sha256::new();
    let mut segment = request.segment.clone().unwrap_or_default();
    let labels: BTreeMap<String, String> =
        std::mem::take(&mut segment.labels).into_iter().collect();
    hasher.update(segment.encode_to_vec());
    for (k, v) in labels {
        hasher.update((k.len() as u64).to_be_bytes());
        hasher.update(k.as_bytes());
        hasher.update((v.len() as u64).to_be_bytes());
        hasher.update(v.as_bytes());
    }
    hasher.update([u8::from(request.validate_only)]);
    hasher.finalize().to_vec()
}

// ---------- handlers ----------

/// CreateSegment.
pub(super) async fn create_segment(
    api: &SegmentationApi,
    request: Request<CreateSegmentRequest>,
) -> Result<Response<CreateSegmentResponse>, Status> {
    let caller = caller(&request);
    let request = request.into_inner();
    Ok(Response::new(create(api, &caller, request).await?))
}

async fn create(
    api: &SegmentationApi,
    caller: &str,
    request: CreateSegmentRequest,
) -> Result<CreateSegmentResponse, ServiceError> {
    let state = api.state();
    let mut violations = Violations::new();
    check_request_id(&mut violations, "request_id", &request.request_id);
    let Some(segment) = request.segment.as_ref() else {
        violations.add("segment", "required");
        violations.into_result()?;
        return Err(ServiceError::invalid_argument("segment", "required"));
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
    let mut all = into_violations(violations);
    let mut tx = state.pool.begin().await.map_err(db)?;
    let checked = match (&segment.rule, kind) {
        (Some(condition), pb::SegmentKind::Rule) => {
            match check_rule(&mut tx, condition, "segment.rule", None).await? {
                Ok(checked) => Some(checked),
                Err(v) => {
                    all.extend(v);
                    None
                }
            }
        }
        _ => None,
    };
    if !all.is_empty() {
        return Err(ServiceError::InvalidArgument(all));
    }
    let key = (!request.request_id.is_empty() && !request.validate_only).then(|| IdempotencyKey {
        caller: caller.to_owned(),
        request_id: request.request_id.clone(),
        method: "CreateSegment",
        request_hash: create_hash(&request),
    });
    if let Some(key) = &key {
        match keys::claim_key(&mut tx, key).await.map_err(db)? {
            KeyLookup::New => {}
            KeyLookup::Replay(bytes) => {
                return CreateSegmentResponse::decode(bytes.as_slice()).map_err(internal);
            }
            KeyLookup::Reused => return Err(reused()),
        }
    }
    if store::count(&mut tx).await.map_err(db)? >= MAX_SEGMENTS {
        return Err(ServiceError::ResourceExhausted(format!(
            "the deployment already holds {MAX_SEGMENTS} segments"
        )));
    }
    let now = state.clock.now();
    let segment_id = Uuid::now_v7();
    let mut record = SegmentRecord {
        segment_id,
        display_name: segment.display_name.clone(),
        description: segment.description.clone(),
        rule_kind: kind == pb::SegmentKind::Rule,
        rule: checked.as_ref().map(|c| c.bytes.clone()),
        version: 1,
        membership_version: 0,
        member_count: 0,
        time_dependent: checked.as_ref().is_some_and(|c| c.rule.time_dependent()),
        referenced_segment_ids: checked
            .as_ref()
            .map(|c| c.references.clone())
            .unwrap_or_default(),
        fields: checked
            .as_ref()
            .map(|c| c.rule.fields().into_iter().collect())
            .unwrap_or_default(),
        labels: segment.labels.clone().into_iter().collect(),
        latest_recompute_job_id: None,
        create_time: now,
        update_time: now,
        etag: store::new_etag(),
    };
    if request.validate_only {
        return Ok(CreateSegmentResponse {
            segment: Some(segment_to_proto(&record, true)),
            recompute_job_id: String::new(),
        });
    }
    let job = record.rule_kind.then(|| {
        JobRecord::queued(
            "segment",
            Some((segment_id, 1)),
            "segment_created",
            caller,
            now,
        )
    });
    record.latest_recompute_job_id = job.as_ref().map(|j| j.recompute_job_id);
    store::insert(&mut tx, &record).await.map_err(db)?;
    if let Some(bytes) = &record.rule {
        store::insert_version(&mut tx, segment_id, 1, bytes, now, caller)
            .await
            .map_err(db)?;
    }
    if let Some(job) = &job {
        job_store::insert(&mut tx, job).await.map_err(db)?;
    }
    let proto = segment_to_proto(&record, true);
    events::append_segment_event(
        &mut tx,
        segment_id,
        &pb::SegmentCreated {
            segment: Some(proto.clone()),
        },
    )
    .await
    .map_err(db)?;
    memberships::notify_segments(&mut tx, &[segment_id])
        .await
        .map_err(db)?;
    let response = CreateSegmentResponse {
        segment: Some(proto),
        recompute_job_id: job_id_string(job.as_ref()),
    };
    if let Some(key) = &key {
        keys::record_key(&mut tx, key, &response.encode_to_vec(), now)
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(response)
}

/// GetSegment.
pub(super) async fn get_segment(
    api: &SegmentationApi,
    request: Request<GetSegmentRequest>,
) -> Result<Response<GetSegmentResponse>, Status> {
    let request = request.into_inner();
    let id = parse_id("segment_id", &request.segment_id)?;
    let segment = store::get(&api.state().pool, id)
        .await
        .map_err(db)?
        .ok_or_else(|| ServiceError::not_found("segment", id.to_string()))?;
    Ok(Response::new(GetSegmentResponse {
        segment: Some(segment_to_proto(&segment, full_view(request.view, true))),
    }))
}

/// BatchGetSegments.
pub(super) async fn batch_get_segments(
    api: &SegmentationApi,
    request: Request<BatchGetSegmentsRequest>,
) -> Result<Response<BatchGetSegmentsResponse>, Status> {
    let request = request.into_inner();
    let mut violations = Violations::new();
    violations.check(
        (1..=1_000).contains(&request.segment_ids.len()),
        "segment_ids",
        "1-1,000 ids required",
    );
    let mut ids = Vec::new();
    for (i, raw) in request.segment_ids.iter().enumerate() {
        match Uuid::parse_str(raw) {
            Ok(id) => ids.push(id),
            Err(_) => violations.add(format!("segment_ids[{i}]"), "not a valid UUID"),
        }
    }
    violations.into_result()?;
    let found = store::get_many(&api.state().pool, &ids).await.map_err(db)?;
    let by_id: HashMap<Uuid, &SegmentRecord> = found.iter().map(|s| (s.segment_id, s)).collect();
    let full = full_view(request.view, false);
    let mut seen = BTreeSet::new();
    let mut segments = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        if !seen.insert(id) {
            continue;
        }
        match by_id.get(&id) {
            Some(s) => segments.push(segment_to_proto(s, full)),
            None => missing.push(id.to_string()),
        }
    }
    Ok(Response::new(BatchGetSegmentsResponse {
        segments,
        missing_segment_ids: missing,
    }))
}

/// ListSegments.
pub(super) async fn list_segments(
    api: &SegmentationApi,
    request: Request<ListSegmentsRequest>,
) -> Result<Response<ListSegmentsResponse>, Status> {
    let request = request.into_inner();
    let state = api.state();
    let size = paging::page_size(request.page_size)?;
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
    violations.into_result()?;
    let filter = store::SegmentFilter {
        rule_kind,
        labels: request.labels.clone().into_iter().collect(),
        referenced_segment_id: referenced,
        field: (!request.field.is_empty()).then(|| request.field.clone()),
    };
    let fingerprint = format!(
        "segments:{:?}:{:?}:{:?}:{:?}",
        filter.rule_kind, filter.labels, filter.referenced_segment_id, filter.field
    );
    let after: Option<(DateTime<Utc>, Uuid)> = if request.page_token.is_empty() {
        None
    } else {
        let cursor: (i64, String) = state
            .page_tokens
            .decode(&fingerprint, &request.page_token)
            .map_err(|e| ServiceError::invalid_argument(e.field(), e.message()))?;
        Some(decode_cursor(cursor)?)
    };
    let limit = i64::try_from(size).unwrap_or(50);
    let mut rows = store::list(&state.pool, &filter, after, limit + 1)
        .await
        .map_err(db)?;
    let next = if rows.len() > size {
        rows.truncate(size);
        let last = rows
            .last()
            .map(|s| (s.create_time.timestamp_micros(), s.segment_id.to_string()));
        state
            .page_tokens
            .encode(&fingerprint, &last)
            .map_err(internal)?
    } else {
        String::new()
    };
    let full = full_view(request.view, false);
    Ok(Response::new(ListSegmentsResponse {
        segments: rows.iter().map(|s| segment_to_proto(s, full)).collect(),
        next_page_token: next,
    }))
}

/// UpdateSegment.
pub(super) async fn update_segment(
    api: &SegmentationApi,
    request: Request<UpdateSegmentRequest>,
) -> Result<Response<UpdateSegmentResponse>, Status> {
    let caller = caller(&request);
    Ok(Response::new(
        update(api, &caller, request.into_inner()).await?,
    ))
}

async fn update(
    api: &SegmentationApi,
    caller: &str,
    request: UpdateSegmentRequest,
) -> Result<UpdateSegmentResponse, ServiceError> {
    let state = api.state();
    let segment = request
        .segment
        .as_ref()
        .ok_or_else(|| ServiceError::invalid_argument("segment", "required"))?;
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
    violations.into_result()?;

    let mut tx = state.pool.begin().await.map_err(db)?;
    let current = store::get_for_update(&mut tx, id)
        .await
        .map_err(db)?
        .ok_or_else(|| ServiceError::not_found("segment", id.to_string()))?;
    if !segment.etag.is_empty() && segment.etag != current.etag {
        return Err(ServiceError::Aborted(
            "the segment changed since it was read (stale etag)".to_owned(),
        ));
    }
    let mut next = current.clone();
    let mut changed: Vec<&str> = Vec::new();
    if has("display_name") && segment.display_name != current.display_name {
        next.display_name = segment.display_name.clone();
        changed.push("display_name");
    }
    if has("description") && segment.description != current.description {
        next.description = segment.description.clone();
        changed.push("description");
    }
    let labels: BTreeMap<String, String> = segment.labels.clone().into_iter().collect();
    if has("labels") && labels != current.labels {
        next.labels = labels;
        changed.push("labels");
    }
    let mut rule_changed = false;
    if has("rule") {
        if !current.rule_kind {
            return Err(ServiceError::invalid_argument(
                "segment.rule",
                "a STATIC segment has no rule",
            ));
        }
        let condition = segment
            .rule
            .as_ref()
            .ok_or_else(|| ServiceError::invalid_argument("segment.rule", "required"))?;
        let checked = check_rule(&mut tx, condition, "segment.rule", Some(id))
            .await?
            .map_err(ServiceError::InvalidArgument)?;
        if Some(&checked.bytes) != current.rule.as_ref() {
            rule_changed = true;
            next.rule = Some(checked.bytes.clone());
            next.version = current.version + 1;
            next.time_dependent = checked.rule.time_dependent();
            next.referenced_segment_ids = checked.references.clone();
            next.fields = checked.rule.fields().into_iter().collect();
            changed.push("rule");
        }
    }
    if changed.is_empty() {
        return Ok(UpdateSegmentResponse {
            segment: Some(segment_to_proto(&current, true)),
            recompute_job_id: String::new(),
        });
    }
    let now = state.clock.now();
    next.update_time = now;
    next.etag = store::new_etag();
    if request.validate_only {
        return Ok(UpdateSegmentResponse {
            segment: Some(segment_to_proto(&next, true)),
            recompute_job_id: String::new(),
        });
    }
    let mut job = None;
    if rule_changed {
        let queued = JobRecord::queued(
            "segment",
            Some((id, next.version)),
            "rule_changed",
            caller,
            now,
        );
        supersede(&mut tx, id, now).await?;
        job_store::insert(&mut tx, &queued).await.map_err(db)?;
        if let Some(bytes) = &next.rule {
            store::insert_version(&mut tx, id, next.version, bytes, now, caller)
                .await
                .map_err(db)?;
        }
        next.latest_recompute_job_id = Some(queued.recompute_job_id);
        job = Some(queued);
    }
    store::update_definition(&mut tx, &next).await.map_err(db)?;
    let proto = segment_to_proto(&next, true);
    events::append_segment_event(
        &mut tx,
        id,
        &pb::SegmentUpdated {
            segment: Some(proto.clone()),
            update_mask: Some(prost_types::FieldMask {
                paths: changed.iter().map(|p| (*p).to_owned()).collect(),
            }),
            rule_changed,
        },
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(UpdateSegmentResponse {
        segment: Some(proto),
        recompute_job_id: job_id_string(job.as_ref()),
    })
}

/// Supersedes the queued jobs of a segment, with their RecomputeJobFinished events.
async fn supersede(
    tx: &mut PgConnection,
    segment_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), ServiceError> {
    for old in job_store::supersede_queued(tx, segment_id, now)
        .await
        .map_err(db)?
    {
        events::append_job_finished(tx, crate::jobs::job_to_proto(&old))
            .await
            .map_err(db)?;
    }
    Ok(())
}

/// DeleteSegment.
pub(super) async fn delete_segment(
    api: &SegmentationApi,
    request: Request<DeleteSegmentRequest>,
) -> Result<Response<DeleteSegmentResponse>, Status> {
    let request = request.into_inner();
    let state = api.state();
    let id = parse_id("segment_id", &request.segment_id)?;
    let mut tx = state.pool.begin().await.map_err(db)?;
    let current = store::get_for_update(&mut tx, id)
        .await
        .map_err(db)?
        .ok_or_else(|| ServiceError::not_found("segment", id.to_string()))?;
    if !request.etag.is_empty() && request.etag != current.etag {
        return Err(ServiceError::Aborted(
            "the segment changed since it was read (stale etag)".to_owned(),
        )
        .into());
    }
    let referencing = store::referencing(&mut *tx, id).await.map_err(db)?;
    if !referencing.is_empty() {
        let mut details = ErrorDetails::new();
        for other in &referencing {
            details.add_precondition_failure_violation(
                "SEGMENT_REFERENCED",
                format!("segments/{other}"),
                "this segment's rule references the segment being deleted",
            );
        }
        return Err(Status::with_error_details(
            Code::FailedPrecondition,
            format!(
                "{} other segment(s) reference this segment; change their rules first",
                referencing.len()
            ),
            details,
        ));
    }
    let now = state.clock.now();
    supersede(&mut tx, id, now).await?;
    store::delete(&mut tx, id).await.map_err(db)?;
    events::append_segment_event(
        &mut tx,
        id,
        &pb::SegmentDeleted {
            segment_id: id.to_string(),
            display_name: current.display_name.clone(),
            kind: if current.rule_kind {
                pb::SegmentKind::Rule
            } else {
                pb::SegmentKind::Static
            }
            .into(),
            member_count: current.member_count,
            delete_time: Some(ts(now)),
        },
    )
    .await
    .map_err(db)?;
    memberships::notify_segments(&mut tx, &[id])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    // This replica answers "gone" at once, before the notification comes back.
    if let Err(error) = state.lookups.refresh_segment(&state.pool, id).await {
        tracing::warn!(error = %error, "failed to refresh a deleted segment's cache entry");
    }
    Ok(Response::new(DeleteSegmentResponse {}))
}

/// ListSegmentVersions.
pub(super) async fn list_segment_versions(
    api: &SegmentationApi,
    request: Request<ListSegmentVersionsRequest>,
) -> Result<Response<ListSegmentVersionsResponse>, Status> {
    let request = request.into_inner();
    let state = api.state();
    let id = parse_id("segment_id", &request.segment_id)?;
    let size = paging::page_size(request.page_size)?;
    let fingerprint = format!("versions:{id}");
    let before: Option<i64> = if request.page_token.is_empty() {
        None
    } else {
        Some(
            state
                .page_tokens
                .decode(&fingerprint, &request.page_token)
                .map_err(|e| ServiceError::invalid_argument(e.field(), e.message()))?,
        )
    };
    if store::get(&state.pool, id).await.map_err(db)?.is_none() {
        return Err(ServiceError::not_found("segment", id.to_string()).into());
    }
    let limit = i64::try_from(size).unwrap_or(50);
    let mut rows = store::versions(&state.pool, id, before, limit + 1)
        .await
        .map_err(db)?;
    let next = if rows.len() > size {
        rows.truncate(size);
        let last = rows.last().map(|v| v.version);
        state
            .page_tokens
            .encode(&fingerprint, &last)
            .map_err(internal)?
    } else {
        String::new()
    };
    Ok(Response::new(ListSegmentVersionsResponse {
        versions: rows
            .iter()
            .map(|v| pb::SegmentVersion {
                segment_id: v.segment_id.to_string(),
                version: v.version,
                rule: store::decode_rule(&v.rule).ok(),
                create_time: Some(ts(v.create_time)),
                creator: v.creator.clone(),
            })
            .collect(),
        next_page_token: next,
    }))
}

/// PreviewSegment.
pub(super) async fn preview_segment(
    api: &SegmentationApi,
    request: Request<PreviewSegmentRequest>,
) -> Result<Response<PreviewSegmentResponse>, Status> {
    let request = request.into_inner();
    let Ok(_permit) = PREVIEWS.try_acquire() else {
        return Err(ServiceError::ResourceExhausted(
            "too many previews are running; retry shortly".to_owned(),
        )
        .into());
    };
    Ok(Response::new(preview(api, request).await?))
}

async fn preview(
    api: &SegmentationApi,
    request: PreviewSegmentRequest,
) -> Result<PreviewSegmentResponse, ServiceError> {
    let state = api.state();
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
    let mut all = into_violations(violations);
    let mut tx = state.pool.begin().await.map_err(db)?;
    let checked = match condition {
        Some(condition) => match check_rule(&mut tx, condition, "rule", None).await? {
            Ok(checked) => Some(checked),
            Err(v) => {
                all.extend(v);
                None
            }
        },
        None => None,
    };
    let Some(checked) = checked.filter(|_| all.is_empty()) else {
        return Err(ServiceError::InvalidArgument(all));
    };
    if let Some(compare) = compare
        && store::get(&mut *tx, compare).await.map_err(db)?.is_none()
    {
        return Err(ServiceError::not_found("segment", compare.to_string()));
    }
    let sample_size = if request.sample_size == 0 {
        20
    } else {
        i64::from(request.sample_size)
    };
    let now = state.clock.now();
    let ctx = crate::store::facts::eval_context(&mut tx, now)
        .await
        .map_err(db)?;
    let compiled = compile::compile(&checked.rule);
    sqlx::query("CREATE TEMP TABLE preview_members (customer_id text PRIMARY KEY) ON COMMIT DROP")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let select = format!(
        "INSERT INTO preview_members SELECT f.customer_id FROM customer_facts f WHERE {}",
        compiled.sql
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(select))
        .bind(now)
        .bind(ctx.today);
    let member_count = compiled
        .bind(query)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
    // Pseudo-random: ordered by a hash salted per call.
    let sample: Vec<String> = sqlx::query_scalar(
        "SELECT customer_id FROM preview_members ORDER BY md5(customer_id || $1) LIMIT $2",
    )
    .bind(Uuid::new_v4().to_string())
    .bind(sample_size)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let customer_count: i64 = sqlx::query_scalar("SELECT count(*) FROM customer_facts")
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
    let comparison = match compare {
        None => None,
        Some(segment_id) => {
            let row = sqlx::query(
                "SELECT count(*) FILTER (WHERE m.customer_id IS NULL) AS entering, \
                        count(*) FILTER (WHERE p.customer_id IS NULL) AS exiting, \
                        count(*) FILTER (WHERE p.customer_id IS NOT NULL \
                                           AND m.customer_id IS NOT NULL) AS unchanged \
                 FROM preview_members p \
                 FULL JOIN (SELECT customer_id FROM memberships WHERE segment_id = $1) m \
                   ON p.customer_id = m.customer_id",
            )
            .bind(segment_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            Some(pb::PreviewComparison {
                segment_id: segment_id.to_string(),
                entering_count: row.try_get("entering").map_err(db)?,
                exiting_count: row.try_get("exiting").map_err(db)?,
                unchanged_count: row.try_get("unchanged").map_err(db)?,
            })
        }
    };
    // Nothing is saved: the temporary table goes with the rollback.
    tx.rollback().await.map_err(db)?;
    Ok(PreviewSegmentResponse {
        member_count: i64::try_from(member_count).unwrap_or(i64::MAX),
        customer_count,
        sample_customer_ids: sample,
        evaluate_time: Some(ts(now)),
        time_dependent: checked.rule.time_dependent(),
        comparison,
    })
}

/// UploadStaticMembers.
pub(super) async fn upload_static_members(
    api: &SegmentationApi,
    request: Request<Streaming<UploadStaticMembersRequest>>,
) -> Result<Response<UploadStaticMembersResponse>, Status> {
    let caller = caller(&request);
    let mut stream = request.into_inner();
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
        violations.into_result()?;
        if index > MAX_UPLOAD_IDS {
            return Err(ServiceError::ResourceExhausted(
                "an upload holds at most 1,000,000 ids".to_owned(),
            )
            .into());
        }
    }
    let id = parse_id("segment_id", &segment_id)?;
    if mode == pb::StaticUploadMode::Unspecified {
        return Err(
            ServiceError::invalid_argument("mode", "required: ADD, REMOVE or REPLACE").into(),
        );
    }
    let ids: Vec<String> = ids.into_iter().collect();
    let response = apply_upload(api, &caller, id, mode, &request_id, &ids).await?;
    Ok(Response::new(response))
}

async fn apply_upload(
    api: &SegmentationApi,
    caller: &str,
    segment_id: Uuid,
    mode: pb::StaticUploadMode,
    request_id: &str,
    ids: &[String],
) -> Result<UploadStaticMembersResponse, ServiceError> {
    let state = api.state();
    let mut tx = state.pool.begin().await.map_err(db)?;
    let key = (!request_id.is_empty()).then(|| {
        let mut hasher = Sha256::new();
        hasher.update(segment_id.as_bytes());
        hasher.update(i32::from(mode).to_be_bytes());
        for id in ids {
            hasher.update((id.len() as u64).to_be_bytes());
            hasher.update(id.as_bytes());
        }
        IdempotencyKey {
            caller: caller.to_owned(),
            request_id: request_id.to_owned(),
            method: "UploadStaticMembers",
            request_hash: hasher.finalize().to_vec(),
        }
    });
    if let Some(key) = &key {
        match keys::claim_key(&mut tx, key).await.map_err(db)? {
            KeyLookup::New => {}
            KeyLookup::Replay(bytes) => {
                return UploadStaticMembersResponse::decode(bytes.as_slice()).map_err(internal);
            }
            KeyLookup::Reused => return Err(reused()),
        }
    }
    let segment = store::get_for_update(&mut tx, segment_id)
        .await
        .map_err(db)?
        .ok_or_else(|| ServiceError::not_found("segment", segment_id.to_string()))?;
    if segment.rule_kind {
        return Err(ServiceError::FailedPrecondition(
            "members can be uploaded only to a STATIC segment".to_owned(),
        ));
    }
    let known: Vec<String> = sqlx::query_scalar(
        "SELECT customer_id FROM customer_facts WHERE customer_id = ANY($1) ORDER BY customer_id",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let known_set: BTreeSet<&str> = known.iter().map(String::as_str).collect();
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| !known_set.contains(id.as_str()))
        .cloned()
        .collect();
    let now = state.clock.now();
    let reason = pb::ChangeReason::StaticUpload;
    let removed = match mode {
        pb::StaticUploadMode::Remove => sqlx::query(
            "DELETE FROM memberships WHERE segment_id = $1 AND customer_id = ANY($2) \
             RETURNING customer_id, enter_time",
        )
        .bind(segment_id)
        .bind(&known)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?,
        pb::StaticUploadMode::Replace => sqlx::query(
            "DELETE FROM memberships WHERE segment_id = $1 AND NOT (customer_id = ANY($2)) \
             RETURNING customer_id, enter_time",
        )
        .bind(segment_id)
        .bind(&known)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?,
        _ => Vec::new(),
    };
    let added: Vec<String> = if matches!(
        mode,
        pb::StaticUploadMode::Add | pb::StaticUploadMode::Replace
    ) {
        sqlx::query_scalar(
            "INSERT INTO memberships (segment_id, customer_id, segment_version, enter_time, enter_reason) \
             SELECT $1, c, 1, $3, $4 FROM unnest($2::text[]) AS c \
             ON CONFLICT DO NOTHING RETURNING customer_id",
        )
        .bind(segment_id)
        .bind(&known)
        .bind(now)
        .bind(memberships::reason_slug(reason))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?
    } else {
        Vec::new()
    };
    let cause = ChangeCause {
        reason,
        event_id: String::new(),
        recompute_job_id: None,
    };
    let mut changed = Vec::with_capacity(added.len() + removed.len());
    let mut exits = Vec::with_capacity(removed.len());
    let mut removed_known = 0_i64;
    for row in &removed {
        let customer_id: String = row.try_get("customer_id").map_err(db)?;
        let enter_time: DateTime<Utc> = row.try_get("enter_time").map_err(db)?;
        if known_set.contains(customer_id.as_str()) {
            removed_known += 1;
        }
        exits.push((
            customer_id.clone(),
            events::segment_exited(segment_id, 1, &customer_id, enter_time, now, &cause),
        ));
        changed.push(customer_id);
    }
    let enters: Vec<_> = added
        .iter()
        .map(|c| {
            (
                c.clone(),
                events::segment_entered(segment_id, 1, c, now, &cause),
            )
        })
        .collect();
    changed.extend(added.iter().cloned());
    events::append_many(&mut tx, &exits).await.map_err(db)?;
    events::append_many(&mut tx, &enters).await.map_err(db)?;
    let member_count: i64 = sqlx::query_scalar(
        "UPDATE segments SET member_count = (SELECT count(*) FROM memberships WHERE segment_id = $1) \
         WHERE segment_id = $1 RETURNING member_count",
    )
    .bind(segment_id)
    .fetch_one(&mut *tx)
    .await
    .map_err(db)?;
    // Sizes first: once a lookup shows a customer's new segments, sizes already agree.
    memberships::notify_segments(&mut tx, &[segment_id])
        .await
        .map_err(db)?;
    if changed.len() > NOTIFY_EACH_MAX {
        memberships::bump_epoch(&mut tx).await.map_err(db)?;
    } else {
        memberships::notify_customers(&mut tx, &changed)
            .await
            .map_err(db)?;
    }
    let known_count = i64::try_from(known.len()).unwrap_or(i64::MAX);
    let added_count = i64::try_from(added.len()).unwrap_or(i64::MAX);
    let unchanged = match mode {
        pb::StaticUploadMode::Remove => known_count - removed_known,
        _ => known_count - added_count,
    };
    let response = UploadStaticMembersResponse {
        received_count: i64::try_from(ids.len()).unwrap_or(i64::MAX),
        added_count,
        removed_count: i64::try_from(removed.len()).unwrap_or(i64::MAX),
        unchanged_count: unchanged,
        unknown_count: i64::try_from(unknown.len()).unwrap_or(i64::MAX),
        unknown_customer_ids: unknown.into_iter().take(MAX_REPORTED_UNKNOWN).collect(),
        member_count,
    };
    if let Some(key) = &key {
        keys::record_key(&mut tx, key, &response.encode_to_vec(), now)
            .await
            .map_err(db)?;
    }
    tx.commit().await.map_err(db)?;
    Ok(response)
}
