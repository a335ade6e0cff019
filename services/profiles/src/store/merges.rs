//! The merge audit trail: listing merges and undoing one within its window.

use chrono::{DateTime, Utc};
use custops_common::outbox;
use sqlx::PgConnection;
use uuid::Uuid;

use super::customers::{apply_consent, touch};
use super::privacy::{MergeRow, merge_columns};
use super::{
    Page, PgStore, RequestKey, claim_request, fetch_limit, load_for_update, page, pii_attributes,
    write_traits,
};
use crate::domain::customer::copy_path;
use crate::domain::{
    Actor, Consent, ConsentDecision, Customer, CustomerState, Identity, MergeRecord, Traits,
};
use crate::error::{ProfilesError, Result};
use crate::events;
use crate::wire::decode_snapshot;

/// Cursor of ListMerges: (merge time µs, id) of the last record.
pub type MergeCursor = (i64, Uuid);

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

#[derive(Debug, sqlx::FromRow)]
struct Snapshots {
    source_before: Option<Vec<u8>>,
    target_before: Option<Vec<u8>>,
    target_after: Option<Vec<u8>>,
}

fn decode(bytes: Option<Vec<u8>>) -> Result<(Traits, Vec<Identity>, Vec<Consent>)> {
    let bytes = bytes.ok_or(ProfilesError::MergeSnapshotPurged)?;
    decode_snapshot(&bytes).map_err(|e| ProfilesError::Internal(e.into()))
}

async fn merge_record(conn: &mut PgConnection, id: Uuid, lock: bool) -> Result<MergeRecord> {
    let row: Option<MergeRow> = if lock {
        sqlx::query_as(concat!(
            "SELECT ",
            merge_columns!(),
            " FROM merges WHERE merge_id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(conn)
        .await?
    } else {
        sqlx::query_as(concat!(
            "SELECT ",
            merge_columns!(),
            " FROM merges WHERE merge_id = $1"
        ))
        .bind(id)
        .fetch_optional(conn)
        .await?
    };
    row.ok_or(ProfilesError::NotFound {
        resource: "merge",
        id: id.to_string(),
    })?
    .into_record()
}

impl PgStore {
    /// A page of merges, newest first.
    #[tracing::instrument(skip_all)]
    pub async fn list_merges(
        &self,
        customer_id: Option<Uuid>,
        states: &[i16],
        range: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
        after: Option<MergeCursor>,
        limit: usize,
    ) -> Result<Page<MergeRecord, MergeCursor>> {
        let (after_time, after_id) = match after {
            Some((micros, id)) => (DateTime::from_timestamp_micros(micros), Some(id)),
            None => (None, None),
        };
        let rows: Vec<MergeRow> = sqlx::query_as(concat!(
            "SELECT ", merge_columns!(), " FROM merges \
             WHERE ($1::uuid IS NULL OR source_customer_id = $1 OR target_customer_id = $1) \
             AND (cardinality($2::smallint[]) = 0 OR state = ANY($2)) \
             AND ($3::timestamptz IS NULL OR merge_time >= $3) AND ($4::timestamptz IS NULL OR merge_time < $4) \
             AND ($5::timestamptz IS NULL OR (merge_time, merge_id) < ($5, $6)) \
             ORDER BY merge_time DESC, merge_id DESC LIMIT $7"
        ))
        .bind(customer_id)
        .bind(states)
        .bind(range.0)
        .bind(range.1)
        .bind(after_time)
        .bind(after_id)
        .bind(fetch_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        let records = rows
            .into_iter()
            .map(MergeRow::into_record)
            .collect::<Result<Vec<_>>>()?;
        Ok(page(records, limit, |m: &MergeRecord| {
            (m.merge_time.timestamp_micros(), m.id)
        }))
    }

    /// Undoes a merge in one transaction: the source comes back with its pre-merge fields,
    /// identities, consents and exactly the activities the merge moved; the target gets back
    /// its pre-merge value of every field it took from the source and has not changed since.
    #[tracing::instrument(skip_all, fields(merge_id = %cmd.merge_id))]
    pub async fn unmerge(&self, cmd: UnmergeCommand) -> Result<(Customer, Customer, MergeRecord)> {
        let mut tx = self.pool.begin().await?;
        let mut record = merge_record(&mut tx, cmd.merge_id, true).await?;
        if let Some(key) = &cmd.request
            && claim_request(&mut tx, key, "UnmergeCustomer", record.source_customer_id)
                .await?
                .is_some()
        {
            let source = load_for_update(&mut tx, record.source_customer_id).await?;
            let target = load_for_update(&mut tx, record.target_customer_id).await?;
            return Ok((source, target, record));
        }
        if record.state == 2 {
            return Err(ProfilesError::AlreadyUnmerged);
        }
        let now = self.now();
        if now > record.unmerge_expire_time {
            return Err(ProfilesError::UnmergeWindowExpired);
        }
        let snapshots: Snapshots = sqlx::query_as(
            "SELECT source_before, target_before, target_after FROM merges WHERE merge_id = $1",
        )
        .bind(record.id)
        .fetch_one(&mut *tx)
        .await?;
        let (source_before, source_identities, source_consents) = decode(snapshots.source_before)?;
        let (target_before, _, target_consents) = decode(snapshots.target_before)?;
        let (target_after, _, _) = decode(snapshots.target_after)?;
        let (s, t) = (record.source_customer_id, record.target_customer_id);
        let (first, second) = if s < t { (s, t) } else { (t, s) };
        let a = load_for_update(&mut tx, first).await?;
        let b = load_for_update(&mut tx, second).await?;
        let (mut source, mut target) = if a.id == s { (a, b) } else { (b, a) };
        if target.state != CustomerState::Active {
            return Err(ProfilesError::TargetNotActive);
        }
        if source.state != CustomerState::Merged || source.merged_into != Some(t) {
            return Err(ProfilesError::SourceNotMerged);
        }
        // Source: its pre-merge fields, identities, consents and the activities the merge moved.
        source.traits = source_before;
        touch(&mut source, now);
        write_traits(&mut tx, &source).await?;
        sqlx::query("UPDATE customers SET state = 1, merged_into = NULL WHERE customer_id = $1")
            .bind(s)
            .execute(&mut *tx)
            .await?;
        for identity in &source_identities {
            sqlx::query(
                "UPDATE identities SET customer_id = $4 WHERE identity_type = $1 AND namespace = $2 \
                 AND value = $3 AND customer_id = $5",
            )
            .bind(identity.kind.number())
            .bind(&identity.namespace)
            .bind(&identity.value)
            .bind(s)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        }
        let moved_back = i64::try_from(
            sqlx::query("UPDATE activities SET customer_id = $2, merge_id = NULL WHERE merge_id = $1 AND customer_id = $3")
                .bind(record.id)
                .bind(s)
                .bind(t)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
        )
        .unwrap_or(i64::MAX);
        for consent in &source_consents {
            sqlx::query(
                "INSERT INTO consents (customer_id, channel, status, source, actor_kind, actor_id, actor_service, change_time, record_time) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (customer_id, channel) DO NOTHING",
            )
            .bind(s)
            .bind(consent.channel)
            .bind(consent.status)
            .bind(&consent.source)
            .bind(consent.actor.kind)
            .bind(&consent.actor.id)
            .bind(&consent.actor.service)
            .bind(consent.change_time)
            .bind(consent.record_time)
            .execute(&mut *tx)
            .await?;
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
                        apply_consent(
                            &mut tx,
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
                None => {
                    sqlx::query("DELETE FROM consents WHERE customer_id = $1 AND channel = $2")
                        .bind(t)
                        .bind(current.channel)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        for path in &record.source_value_paths {
            // Unchanged since the merge ⇔ copying the post-merge value changes nothing.
            let mut probe = target.traits.clone();
            if !copy_path(&mut probe, &target_after, path) {
                copy_path(&mut target.traits, &target_before, path);
            }
        }
        touch(&mut target, now);
        write_traits(&mut tx, &target).await?;
        sqlx::query(
            "UPDATE merges SET state = 2, unmerge_time = $2, unmerge_actor_kind = $3, unmerge_actor_id = $4, \
             unmerge_actor_service = $5, unmerge_reason = $6, source_before = NULL, target_before = NULL, \
             target_after = NULL WHERE merge_id = $1",
        )
        .bind(record.id)
        .bind(now)
        .bind(cmd.actor.kind)
        .bind(&cmd.actor.id)
        .bind(&cmd.actor.service)
        .bind(&cmd.reason)
        .execute(&mut *tx)
        .await?;
        record.state = 2;
        record.unmerge = Some((now, cmd.actor.clone(), cmd.reason.clone()));
        let source = load_for_update(&mut tx, s).await?;
        let target = load_for_update(&mut tx, t).await?;
        let pii = pii_attributes(&mut tx).await?;
        for change in &changes {
            outbox::append(&mut tx, events::consent_changed(change)).await?;
        }
        outbox::append(
            &mut tx,
            events::customer_unmerged(&record, &source, &target, &pii, moved_back),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(moved_back, "merge undone");
        Ok((source, target, record))
    }
}
