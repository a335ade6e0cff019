//! Merge use cases: merge two customers (or preview it), undo a merge within its window, and
//! the merge trail.

use chrono::{DateTime, Utc};
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Changed, Context, RequestKey, ensure_editable, idempotent};
use crate::domain::customer::{MAX_IDENTITIES, MergeWinner, copy_path, merge_traits};
use crate::domain::{
    Actor, Consent, ConsentDecision, Customer, CustomerState, Identity, MergeRecord, Traits,
    UNMERGE_WINDOW,
};
use crate::error::{ProfilesError, Result};
use crate::events;
pub use crate::store::merges::{MergeCursor, merge_cursor};
use crate::store::{
    activities, consents, customers, identities, load_for_update, merges, pii_attributes,
    write_traits,
};
use crate::wire::{decode_snapshot, encode_snapshot};

/// A validated MergeCustomers.
#[derive(Debug, Clone)]
pub struct MergeCommand {
    /// Merged away.
    pub source: Uuid,
    /// Survives.
    pub target: Uuid,
    /// Per-field overrides.
    pub choices: Vec<(String, MergeWinner)>,
    /// Etags.
    pub source_etag: String,
    /// Etags.
    pub target_etag: String,
    /// Who.
    pub actor: Actor,
    /// Why.
    pub reason: String,
    /// Preview only.
    pub validate_only: bool,
    /// Idempotency key.
    pub request: Option<RequestKey>,
}

/// A validated UnmergeCustomer.
#[derive(Debug, Clone)]
pub struct UnmergeCommand {
    /// The merge to undo.
    pub merge_id: Uuid,
    /// Who.
    pub actor: Actor,
    /// Why.
    pub reason: String,
    /// Idempotency key.
    pub request: Option<RequestKey>,
}

/// The target after a merge, and the merge's record.
pub type Merged = (Customer, MergeRecord);

/// Merges `cmd.source` into `cmd.target` in one transaction; emits CustomerMerged (and
/// ConsentChanged for consents moved to the target). Answers `respond(target, record)`, once
/// per request key: a replay answers the first call's bytes. With `validate_only` the merge
/// is rolled back and answered with a nil merge id; no key is recorded.
#[tracing::instrument(skip_all, fields(source = %cmd.source, target = %cmd.target))]
pub async fn merge<R: Message + Default>(
    ctx: &Context,
    cmd: MergeCommand,
    respond: impl FnOnce(&Merged) -> R + Send + 'static,
) -> Result<R> {
    let now = ctx.now();
    if cmd.validate_only {
        // The preview is the merge itself, rolled back: the customer it answers is exactly
        // the one a real merge would produce (identities, consents, traits), with no
        // second copy of the merge rules to drift from the first.
        let mut tx = ctx.pool.begin().await?;
        let ((target, mut record), _events) = merge_in(&mut tx, cmd, now).await?;
        drop(tx);
        record.id = Uuid::nil();
        return Ok(respond(&(target, record)));
    }
    let key = cmd.request.clone();
    idempotent(
        ctx,
        key.as_ref(),
        now,
        move |conn| Box::pin(merge_in(conn, cmd, now)),
        respond,
    )
    .await
}

async fn merge_in(
    tx: &mut PgConnection,
    cmd: MergeCommand,
    now: DateTime<Utc>,
) -> Result<Changed<Merged>> {
    let merge_id = Uuid::now_v7();
    // Lock in id order so two opposite merges cannot deadlock.
    let (first, second) = if cmd.source < cmd.target {
        (cmd.source, cmd.target)
    } else {
        (cmd.target, cmd.source)
    };
    let a = load_for_update(&mut *tx, first).await?;
    let b = load_for_update(&mut *tx, second).await?;
    let (source, mut target) = if a.id == cmd.source { (a, b) } else { (b, a) };
    ensure_editable(&source, false)?;
    ensure_editable(&target, false)?;
    if !source.etag_matches(&cmd.source_etag) || !target.etag_matches(&cmd.target_etag) {
        return Err(ProfilesError::StaleEtag);
    }
    // Identities are unique, so the two sets never overlap: their sizes add up.
    if source.identities.len() + target.identities.len() > MAX_IDENTITIES {
        return Err(ProfilesError::IdentityLimit);
    }
    let (traits, source_value_paths) = merge_traits(&target.traits, &source.traits, &cmd.choices);
    let consents_from_source = cmd
        .choices
        .iter()
        .any(|(p, w)| p == "consents" && *w == MergeWinner::Source);
    let mut record = MergeRecord {
        id: merge_id,
        source_customer_id: source.id,
        target_customer_id: target.id,
        state: 1,
        choices: cmd
            .choices
            .iter()
            .map(|(p, w)| (p.clone(), *w as i16))
            .collect(),
        source_value_paths,
        moved_identity_count: i32::try_from(source.identities.len()).unwrap_or(i32::MAX),
        moved_activity_count: 0,
        actor: cmd.actor.clone(),
        reason: cmd.reason.clone(),
        merge_time: now,
        unmerge_expire_time: now + UNMERGE_WINDOW,
        unmerge: None,
    };
    let source_before = encode_snapshot(&source);
    let target_before = encode_snapshot(&target);
    identities::move_all(&mut *tx, source.id, target.id).await?;
    record.moved_activity_count =
        activities::move_to(&mut *tx, source.id, target.id, merge_id).await?;
    // Consents: the target's stay unless the request chose the source's; channels only the
    // source has move over. Each change is audited with source "merge".
    let mut changes = Vec::new();
    for consent in &source.consents {
        let current = target
            .consents
            .iter()
            .find(|c| c.channel == consent.channel);
        let take = match current {
            None => true,
            Some(current) => consents_from_source && current.status != consent.status,
        };
        if take {
            let decision = ConsentDecision {
                channel: consent.channel,
                status: consent.status,
                source: "merge".to_owned(),
                actor: cmd.actor.clone(),
                change_time: Some(consent.change_time),
            };
            changes.push(
                consents::apply(
                    &mut *tx,
                    target.id,
                    &decision,
                    current,
                    consent.change_time,
                    now,
                    Some(merge_id),
                )
                .await?,
            );
        }
    }
    consents::delete_all(&mut *tx, source.id).await?;
    customers::mark_merged(&mut *tx, source.id, target.id, now).await?;
    target.traits = traits;
    target.touch(now);
    write_traits(&mut *tx, &target).await?;
    merges::insert(&mut *tx, &record, source_before, target_before).await?;
    let target = load_for_update(&mut *tx, target.id).await?;
    merges::set_target_after(&mut *tx, merge_id, encode_snapshot(&target)).await?;
    let pii = pii_attributes(&mut *tx).await?;
    let mut events: Vec<_> = changes.iter().map(events::consent_changed).collect();
    events.push(events::customer_merged(&record, &target, &pii));
    if !cmd.validate_only {
        tracing::info!(merge_id = %merge_id, "customers merged");
    }
    Ok(((target, record), events))
}

/// A snapshot the merge kept, decoded; MergeSnapshotPurged when it is gone.
fn snapshot(bytes: Option<Vec<u8>>) -> Result<(Traits, Vec<Identity>, Vec<Consent>)> {
    let bytes = bytes.ok_or(ProfilesError::MergeSnapshotPurged)?;
    decode_snapshot(&bytes).map_err(|e| ProfilesError::Internal(e.into()))
}

/// Undoes a merge in one transaction: the source comes back with its pre-merge fields,
/// identities, consents and exactly the activities the merge moved; the target gets back
/// its pre-merge value of every field it took from the source and has not changed since.
/// Refused after the merge's window (by the service clock). Answers `respond(source, target,
/// record)`, once per request key: a replay answers the first call's bytes.
#[tracing::instrument(skip_all, fields(merge_id = %cmd.merge_id))]
pub async fn unmerge<R: Message + Default>(
    ctx: &Context,
    cmd: UnmergeCommand,
    respond: impl FnOnce(&Unmerged) -> R + Send + 'static,
) -> Result<R> {
    let now = ctx.now();
    let key = cmd.request.clone();
    idempotent(
        ctx,
        key.as_ref(),
        now,
        move |conn| Box::pin(unmerge_in(conn, cmd, now)),
        respond,
    )
    .await
}

/// The restored source, the target and the merge record (now UNMERGED) after an unmerge.
pub type Unmerged = (Customer, Customer, MergeRecord);

async fn unmerge_in(
    tx: &mut PgConnection,
    cmd: UnmergeCommand,
    now: DateTime<Utc>,
) -> Result<Changed<Unmerged>> {
    let mut record = merges::get(&mut *tx, cmd.merge_id, true).await?;
    if record.state == 2 {
        return Err(ProfilesError::AlreadyUnmerged);
    }
    if now > record.unmerge_expire_time {
        return Err(ProfilesError::UnmergeWindowExpired);
    }
    let snapshots = merges::snapshots(&mut *tx, record.id).await?;
    let (source_before, source_identities, source_consents) = snapshot(snapshots.source_before)?;
    let (target_before, _, target_consents) = snapshot(snapshots.target_before)?;
    let (target_after, _, _) = snapshot(snapshots.target_after)?;
    let (s, t) = (record.source_customer_id, record.target_customer_id);
    let (first, second) = if s < t { (s, t) } else { (t, s) };
    let a = load_for_update(&mut *tx, first).await?;
    let b = load_for_update(&mut *tx, second).await?;
    let (mut source, mut target) = if a.id == s { (a, b) } else { (b, a) };
    if target.state != CustomerState::Active {
        return Err(ProfilesError::TargetNotActive);
    }
    if source.state != CustomerState::Merged || source.merged_into != Some(t) {
        return Err(ProfilesError::SourceNotMerged);
    }
    // Source: its pre-merge fields, identities, consents and the activities the merge moved.
    source.traits = source_before;
    source.touch(now);
    write_traits(&mut *tx, &source).await?;
    customers::reactivate(&mut *tx, s).await?;
    for identity in &source_identities {
        identities::move_back(&mut *tx, identity, s, t).await?;
    }
    let moved_back = activities::move_back(&mut *tx, record.id, s, t).await?;
    for consent in &source_consents {
        consents::restore(&mut *tx, s, consent).await?;
    }
    // Target: consents the merge set and nobody changed since go back to what they were.
    let mut changes = Vec::new();
    for current in target
        .consents
        .clone()
        .iter()
        .filter(|c| c.source == "merge")
    {
        let before = target_consents
            .iter()
            .find(|c| c.channel == current.channel);
        match before {
            Some(before) => {
                let decision = ConsentDecision {
                    channel: before.channel,
                    status: before.status,
                    source: "merge".to_owned(),
                    actor: cmd.actor.clone(),
                    change_time: Some(before.change_time),
                };
                changes.push(
                    consents::apply(
                        &mut *tx,
                        t,
                        &decision,
                        Some(current),
                        before.change_time,
                        now,
                        Some(record.id),
                    )
                    .await?,
                );
            }
            None => consents::delete_channel(&mut *tx, t, current.channel).await?,
        }
    }
    for path in &record.source_value_paths {
        // Unchanged since the merge ⇔ copying the post-merge value changes nothing.
        let mut probe = target.traits.clone();
        if !copy_path(&mut probe, &target_after, path) {
            copy_path(&mut target.traits, &target_before, path);
        }
    }
    target.touch(now);
    write_traits(&mut *tx, &target).await?;
    merges::mark_unmerged(&mut *tx, record.id, &cmd.actor, &cmd.reason, now).await?;
    record.state = 2;
    record.unmerge = Some((now, cmd.actor.clone(), cmd.reason.clone()));
    let source = load_for_update(&mut *tx, s).await?;
    let target = load_for_update(&mut *tx, t).await?;
    let pii = pii_attributes(&mut *tx).await?;
    let mut events: Vec<_> = changes.iter().map(events::consent_changed).collect();
    events.push(events::customer_unmerged(
        &record, &source, &target, &pii, moved_back,
    ));
    tracing::info!(moved_back, "merge undone");
    Ok(((source, target, record), events))
}

/// Up to `limit` merges after the cursor `after`, newest first.
#[tracing::instrument(skip_all)]
pub async fn list(
    ctx: &Context,
    customer_id: Option<Uuid>,
    states: &[i16],
    range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    after: Option<MergeCursor>,
    limit: i64,
) -> Result<Vec<MergeRecord>> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    merges::list(&mut conn, customer_id, states, range, after, limit).await
}
