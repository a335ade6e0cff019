//! Segment use cases: create, update and delete (each with its outbox event and, for rule
//! changes, a queued recompute job), rule versions, preview and static member uploads.
//!
//! Rules arrive as wire `Condition`s because checking them needs the catalog and the reference
//! graph, both read in the use case's transaction. Idempotent calls replay the encoded response
//! stored with their key and outbox events are wire messages, so these functions answer with
//! the response messages; request parsing stays in `api`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use custops_common::error::FieldViolation;
use custops_common::idempotency::{Completed, RequestKey};
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::{
    CreateSegmentResponse, PreviewSegmentResponse, UpdateSegmentResponse,
    UploadStaticMembersResponse,
};
use futures_util::FutureExt;
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::references::{MAX_REFERENCE_DEPTH, MAX_REFERENCES, depth, height, reaches};
use crate::domain::rule::Rule;
use crate::error::{Error, Result, field_violations};
use crate::events::{self, ChangeCause};
use crate::state::AppState;
use crate::store::catalog::load_catalog;
use crate::store::jobs::{self as job_store, JobRecord};
use crate::store::segments::{self as store, SegmentFilter, SegmentRecord, VersionRecord};
use crate::store::{compile, facts, memberships, preview as previews, uploads};
use crate::wire::jobs::job_id_string;
use crate::wire::rules::parse_rule;
use crate::wire::segments::segment_to_proto;

/// Most segments a deployment holds.
const MAX_SEGMENTS: i64 = 10_000;
/// Unknown ids reported back.
const MAX_REPORTED_UNKNOWN: usize = 1_000;
/// Above this many changed customers an upload moves the cache epoch instead of notifying
/// each customer.
const NOTIFY_EACH_MAX: usize = 1_000;

/// A CreateSegment request past the checks that need no database.
#[derive(Debug, Clone)]
pub struct NewSegment {
    pub display_name: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    /// True for a RULE segment.
    pub rule_kind: bool,
    /// The rule to check, for a RULE segment that has one.
    pub rule: Option<pb::Condition>,
    pub validate_only: bool,
}

/// Creates a segment (queueing its first recompute when it is a rule segment), or replays
/// the response stored with `key`.
///
/// `invalid` holds what the API already found wrong in the request: problems of the rule
/// join them, so the caller gets every bad field in one INVALID_ARGUMENT.
pub async fn create(
    state: &AppState,
    caller: &str,
    key: Option<RequestKey>,
    segment: NewSegment,
    invalid: Vec<FieldViolation>,
) -> Result<CreateSegmentResponse> {
    let now = state.clock.now();
    let caller = caller.to_owned();
    super::respond_once(state, key.as_ref(), now, move |conn| {
        create_in(conn, caller, segment, invalid, now).boxed()
    })
    .await
}

/// [`create`]'s work in its transaction: the encoded response and the SegmentCreated event.
async fn create_in(
    conn: &mut PgConnection,
    caller: String,
    segment: NewSegment,
    mut invalid: Vec<FieldViolation>,
    now: DateTime<Utc>,
) -> Result<Completed> {
    let checked = match &segment.rule {
        Some(condition) => match check_rule(&mut *conn, condition, "segment.rule", None).await? {
            Ok(checked) => Some(checked),
            Err(v) => {
                invalid.extend(v);
                None
            }
        },
        None => None,
    };
    if !invalid.is_empty() {
        return Err(Error::InvalidArgument(invalid));
    }
    if store::count(&mut *conn).await? >= MAX_SEGMENTS {
        return Err(Error::SegmentLimitReached {
            limit: MAX_SEGMENTS,
        });
    }
    let segment_id = Uuid::now_v7();
    let mut record = SegmentRecord {
        segment_id,
        display_name: segment.display_name,
        description: segment.description,
        rule_kind: segment.rule_kind,
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
        labels: segment.labels,
        latest_recompute_job_id: None,
        create_time: now,
        update_time: now,
        etag: store::new_etag(),
    };
    if segment.validate_only {
        let response = CreateSegmentResponse {
            segment: Some(segment_to_proto(&record, true)),
            recompute_job_id: String::new(),
        };
        return Ok(Completed::response(response.encode_to_vec()));
    }
    let job = record.rule_kind.then(|| {
        JobRecord::queued(
            "segment",
            Some((segment_id, 1)),
            "segment_created",
            &caller,
            now,
        )
    });
    record.latest_recompute_job_id = job.as_ref().map(|j| j.recompute_job_id);
    store::insert(&mut *conn, &record).await?;
    if let Some(bytes) = &record.rule {
        store::insert_version(&mut *conn, segment_id, 1, bytes, now, &caller).await?;
    }
    if let Some(job) = &job {
        job_store::insert(&mut *conn, job).await?;
    }
    let proto = segment_to_proto(&record, true);
    let created = events::segment_event(
        segment_id,
        &pb::SegmentCreated {
            segment: Some(proto.clone()),
        },
    );
    memberships::notify_segments(&mut *conn, &[segment_id]).await?;
    let response = CreateSegmentResponse {
        segment: Some(proto),
        recompute_job_id: job_id_string(job.as_ref()),
    };
    Ok(Completed::with_events(
        response.encode_to_vec(),
        vec![created],
    ))
}

/// An UpdateSegment request past the checks that need no database: `Some` for each masked
/// field.
#[derive(Debug, Clone)]
pub struct SegmentChange {
    pub segment_id: Uuid,
    /// Empty: no etag check.
    pub etag: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    /// `Some` when `rule` is masked: the new rule, `None` when the request left it unset.
    pub rule: Option<Option<pb::Condition>>,
    pub validate_only: bool,
}

/// Applies the masked changes; a changed rule makes a new version and queues a recompute
/// (superseding queued ones). Nothing changed: the current segment, nothing written.
pub async fn update(
    state: &AppState,
    caller: &str,
    change: SegmentChange,
) -> Result<UpdateSegmentResponse> {
    let id = change.segment_id;
    let mut tx = state.pool.begin().await?;
    let current = store::get_for_update(&mut tx, id)
        .await?
        .ok_or_else(|| Error::not_found("segment", id))?;
    if !change.etag.is_empty() && change.etag != current.etag {
        return Err(Error::StaleSegment);
    }
    let mut next = current.clone();
    let mut changed: Vec<&str> = Vec::new();
    if let Some(display_name) = change.display_name
        && display_name != current.display_name
    {
        next.display_name = display_name;
        changed.push("display_name");
    }
    if let Some(description) = change.description
        && description != current.description
    {
        next.description = description;
        changed.push("description");
    }
    if let Some(labels) = change.labels
        && labels != current.labels
    {
        next.labels = labels;
        changed.push("labels");
    }
    let mut rule_changed = false;
    if let Some(rule) = &change.rule {
        if !current.rule_kind {
            return Err(Error::invalid(
                "segment.rule",
                "a STATIC segment has no rule",
            ));
        }
        let condition = rule
            .as_ref()
            .ok_or_else(|| Error::invalid("segment.rule", "required"))?;
        let checked = check_rule(&mut tx, condition, "segment.rule", Some(id))
            .await?
            .map_err(Error::InvalidArgument)?;
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
    if change.validate_only {
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
        job_store::insert(&mut tx, &queued).await?;
        if let Some(bytes) = &next.rule {
            store::insert_version(&mut tx, id, next.version, bytes, now, caller).await?;
        }
        next.latest_recompute_job_id = Some(queued.recompute_job_id);
        job = Some(queued);
    }
    store::update_definition(&mut tx, &next).await?;
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
    .await?;
    tx.commit().await?;
    Ok(UpdateSegmentResponse {
        segment: Some(proto),
        recompute_job_id: job_id_string(job.as_ref()),
    })
}

/// Supersedes the queued jobs of a segment, with their RecomputeJobFinished events.
async fn supersede(tx: &mut PgConnection, segment_id: Uuid, now: DateTime<Utc>) -> Result<()> {
    for old in job_store::supersede_queued(tx, segment_id, now).await? {
        events::append_job_finished(tx, crate::wire::jobs::job_to_proto(&old)).await?;
    }
    Ok(())
}

/// Deletes a segment no other rule references, superseding its queued jobs.
pub async fn delete(state: &AppState, id: Uuid, etag: &str) -> Result<()> {
    let mut tx = state.pool.begin().await?;
    let current = store::get_for_update(&mut tx, id)
        .await?
        .ok_or_else(|| Error::not_found("segment", id))?;
    if !etag.is_empty() && etag != current.etag {
        return Err(Error::StaleSegment);
    }
    let referencing = store::referencing(&mut *tx, id).await?;
    if !referencing.is_empty() {
        return Err(Error::SegmentReferenced(referencing));
    }
    let now = state.clock.now();
    supersede(&mut tx, id, now).await?;
    store::delete(&mut tx, id).await?;
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
            delete_time: Some(crate::wire::timestamp(now)),
        },
    )
    .await?;
    memberships::notify_segments(&mut tx, &[id]).await?;
    // Every cached customer list that names the segment becomes unreachable (its memberships
    // went with it), so lookups need not check each listed segment still exists. Deletions
    // are rare; the caches refill once.
    memberships::bump_epoch(&mut tx).await?;
    tx.commit().await?;
    // This replica answers "gone" at once, before the notifications come back.
    if let Err(error) = state.lookups.refresh_epoch(&state.pool).await {
        tracing::warn!(error = %error, "failed to move to the new cache epoch");
    }
    if let Err(error) = state.lookups.refresh_segment(&state.pool, id).await {
        tracing::warn!(error = %error, "failed to refresh a deleted segment's cache entry");
    }
    Ok(())
}

/// A stored segment.
pub async fn get(state: &AppState, id: Uuid) -> Result<SegmentRecord> {
    store::get(&mut *custops_common::db::read(&state.pool).await?, id)
        .await?
        .ok_or_else(|| Error::not_found("segment", id))
}

/// The stored segments among `ids` (in no particular order; missing ones left out).
pub async fn get_many(state: &AppState, ids: &[Uuid]) -> Result<Vec<SegmentRecord>> {
    Ok(store::get_many(&mut *custops_common::db::read(&state.pool).await?, ids).await?)
}

/// Up to `limit` segments matching `filter`, oldest first, after the keyset `after`.
pub async fn list(
    state: &AppState,
    filter: &SegmentFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<SegmentRecord>> {
    Ok(store::list(
        &mut *custops_common::db::read(&state.pool).await?,
        filter,
        after,
        limit,
    )
    .await?)
}

/// Rule versions of an existing segment, newest first, below `before`.
pub async fn versions(
    state: &AppState,
    id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<VersionRecord>> {
    if store::get(&mut *custops_common::db::read(&state.pool).await?, id)
        .await?
        .is_none()
    {
        return Err(Error::not_found("segment", id));
    }
    Ok(store::versions(
        &mut *custops_common::db::read(&state.pool).await?,
        id,
        before,
        limit,
    )
    .await?)
}

/// A PreviewSegment request past the checks that need no database.
#[derive(Debug, Clone)]
pub struct PreviewRequest {
    /// `None` when missing (already among the violations).
    pub rule: Option<pb::Condition>,
    /// The stored segment to compare with.
    pub compare_segment_id: Option<Uuid>,
    /// How many member ids to return.
    pub sample_size: i64,
}

/// Evaluates a rule over every customer without saving anything; `invalid` as in [`create`].
pub async fn preview(
    state: &AppState,
    request: PreviewRequest,
    mut invalid: Vec<FieldViolation>,
) -> Result<PreviewSegmentResponse> {
    let mut tx = state.pool.begin().await?;
    let checked = match &request.rule {
        Some(condition) => match check_rule(&mut tx, condition, "rule", None).await? {
            Ok(checked) => Some(checked),
            Err(v) => {
                invalid.extend(v);
                None
            }
        },
        None => None,
    };
    let Some(checked) = checked.filter(|_| invalid.is_empty()) else {
        return Err(Error::InvalidArgument(invalid));
    };
    if let Some(compare) = request.compare_segment_id
        && store::get(&mut *tx, compare).await?.is_none()
    {
        return Err(Error::not_found("segment", compare));
    }
    let now = state.clock.now();
    let ctx = crate::store::facts::eval_context(&mut tx, now).await?;
    let compiled = compile::compile_grouped(&checked.rule);
    let member_count = previews::gather_members(&mut tx, &compiled, now, ctx.today).await?;
    let sample = previews::sample(&mut tx, request.sample_size).await?;
    let customer_count = facts::customer_count(&mut tx).await?;
    let comparison = match request.compare_segment_id {
        None => None,
        Some(segment_id) => {
            let counts = previews::compare(&mut tx, segment_id).await?;
            Some(pb::PreviewComparison {
                segment_id: segment_id.to_string(),
                entering_count: counts.entering,
                exiting_count: counts.exiting,
                unchanged_count: counts.unchanged,
            })
        }
    };
    // Nothing is saved: the temporary table goes with the rollback.
    tx.rollback().await?;
    Ok(PreviewSegmentResponse {
        member_count: i64::try_from(member_count).unwrap_or(i64::MAX),
        customer_count,
        sample_customer_ids: sample,
        evaluate_time: Some(crate::wire::timestamp(now)),
        time_dependent: checked.rule.time_dependent(),
        comparison,
    })
}

/// A complete static upload: the ids of every message, deduplicated and sorted.
#[derive(Debug, Clone)]
pub struct Upload {
    pub segment_id: Uuid,
    /// ADD, REMOVE or REPLACE.
    pub mode: pb::StaticUploadMode,
    pub customer_ids: Vec<String>,
}

/// Applies a static upload (unknown customers are reported, not added), or replays the
/// response stored with `key`.
///
/// The upload's events are appended inside the work, in chunks and before those of the
/// segments following it (`follow_dependants`), not through `Completed`: an upload may move a
/// million memberships, too many events for the one statement that records the key.
pub async fn upload(
    state: &AppState,
    key: Option<RequestKey>,
    upload: Upload,
) -> Result<UploadStaticMembersResponse> {
    let now = state.clock.now();
    super::respond_once(state, key.as_ref(), now, move |conn| {
        upload_in(conn, upload, now).boxed()
    })
    .await
}

/// [`upload`]'s work in its transaction: the encoded response.
async fn upload_in(
    conn: &mut PgConnection,
    upload: Upload,
    now: DateTime<Utc>,
) -> Result<Completed> {
    let Upload {
        segment_id,
        mode,
        customer_ids,
    } = upload;
    let ids = customer_ids.as_slice();
    // Rule segments may reference this one and follow the upload in this transaction (set-based,
    // like a recompute), so take the lock a recompute takes: no incremental change decides on
    // this segment's memberships while they are being replaced.
    memberships::lock_for_recompute(&mut *conn).await?;
    let segment = store::get_for_update(&mut *conn, segment_id)
        .await?
        .ok_or_else(|| Error::not_found("segment", segment_id))?;
    if segment.rule_kind {
        return Err(Error::UploadToRuleSegment);
    }
    let known = uploads::known_customers(&mut *conn, ids).await?;
    let known_set: BTreeSet<&str> = known.iter().map(String::as_str).collect();
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| !known_set.contains(id.as_str()))
        .cloned()
        .collect();
    let reason = pb::ChangeReason::StaticUpload;
    let removed = match mode {
        pb::StaticUploadMode::Remove => {
            uploads::remove_members(&mut *conn, segment_id, &known).await?
        }
        pb::StaticUploadMode::Replace => {
            uploads::keep_only_members(&mut *conn, segment_id, &known).await?
        }
        _ => Vec::new(),
    };
    let added: Vec<String> = if matches!(
        mode,
        pb::StaticUploadMode::Add | pb::StaticUploadMode::Replace
    ) {
        uploads::add_members(&mut *conn, segment_id, &known, now, reason).await?
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
    for (customer_id, enter_time) in &removed {
        if known_set.contains(customer_id.as_str()) {
            removed_known += 1;
        }
        exits.push((
            customer_id.clone(),
            events::segment_exited(segment_id, 1, customer_id, *enter_time, now, &cause),
        ));
        changed.push(customer_id.clone());
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
    events::append_many(&mut *conn, &exits).await?;
    events::append_many(&mut *conn, &enters).await?;
    let member_count = uploads::recount_members(&mut *conn, segment_id).await?;
    // Sizes first: once a lookup shows a customer's new segments, sizes already agree.
    memberships::notify_segments(&mut *conn, &[segment_id]).await?;
    if changed.len() > NOTIFY_EACH_MAX {
        memberships::bump_epoch(&mut *conn).await?;
    } else {
        memberships::notify_customers(&mut *conn, &changed).await?;
    }
    // Segments referencing this one follow for the customers who moved, before the commit.
    super::recompute::follow_dependants(&mut *conn, segment_id, &changed, now, &cause).await?;
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
    Ok(Completed::response(response.encode_to_vec()))
}

/// A rule that passed the catalog and the reference-graph checks.
struct CheckedRule {
    rule: Rule,
    /// The encoded `Condition`, as stored.
    bytes: Vec<u8>,
    /// Distinct referenced segments, sorted.
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
) -> Result<Result<CheckedRule, Vec<FieldViolation>>> {
    let catalog = load_catalog(&mut *conn).await?;
    let rule = match parse_rule(condition, path, &catalog) {
        Ok(rule) => rule,
        Err(violations) => return Ok(Err(field_violations(violations))),
    };
    let references = rule.referenced_segments();
    let mut violations = Problems::default();
    if references.len() > MAX_REFERENCES {
        violations.add(path, format!("at most {MAX_REFERENCES} segment references"));
    }
    let mut graph = store::reference_graph(&mut *conn).await?;
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
