//! Identity resolution and privacy: duplicates, merge, export and erasure.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use custops_common::outbox;
use sqlx::PgConnection;
use uuid::Uuid;

use super::activities::ActivityRow;
use super::customers::{AttributeRow, ConsentChangeRow, apply_consent, merged_family, touch};
use super::{
    PgStore, RequestKey, claim_request, ensure_editable, json, load, load_for_update,
    pii_attributes, resolve, write_traits,
};
use crate::domain::customer::{MergeWinner, merge_traits};
use crate::domain::identity::canonical_email;
use crate::domain::{
    Activity, Actor, AttributeDefinition, ConsentChange, ConsentDecision, Customer, CustomerState,
    IdentityType, MergeRecord,
};
use crate::error::{ProfilesError, Result};
use crate::events;
use crate::wire::encode_snapshot;

/// How long a merge can be undone.
const UNMERGE_WINDOW_DAYS: i64 = 30;

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

/// Everything held about one customer.
#[derive(Debug, Clone)]
pub struct Export {
    /// The record.
    pub customer: Customer,
    /// The requested id when it was merged.
    pub merged_from: Option<Uuid>,
    /// Definitions of its attributes.
    pub definitions: Vec<AttributeDefinition>,
    /// Consent audit trail, oldest first.
    pub consent_changes: Vec<ConsentChange>,
    /// Activities, oldest first.
    pub activities: Vec<Activity>,
    /// Merges, oldest first.
    pub merges: Vec<MergeRecord>,
    /// Snapshot time.
    pub export_time: DateTime<Utc>,
}

/// A likely duplicate: the candidate, score and the rules that matched (rule number, the
/// asked customer's identity index, the candidate's identity index, field paths).
#[derive(Debug, Clone)]
pub struct Duplicate {
    /// The candidate (ACTIVE).
    pub customer: Customer,
    /// 0–1.
    pub score: f64,
    /// Evidence.
    pub matches: Vec<DuplicateEvidence>,
}

/// One matched rule.
#[derive(Debug, Clone)]
pub struct DuplicateEvidence {
    /// `DuplicateMatchRule` number.
    pub rule: i32,
    /// Index into the asked customer's identities.
    pub customer_identity: Option<usize>,
    /// Index into the candidate's identities.
    pub candidate_identity: Option<usize>,
    /// For trait rules.
    pub field_paths: Vec<String>,
}

impl PgStore {
    /// Merges `cmd.source` into `cmd.target` in one transaction; emits CustomerMerged (and
    /// ConsentChanged for consents moved to the target).
    #[tracing::instrument(skip_all, fields(source = %cmd.source, target = %cmd.target))]
    pub async fn merge(&self, cmd: MergeCommand) -> Result<(Customer, MergeRecord)> {
        let mut tx = self.pool.begin().await?;
        let merge_id = Uuid::now_v7();
        if !cmd.validate_only
            && let Some(key) = &cmd.request
            && let Some(_first) = claim_request(&mut tx, key, "MergeCustomers", cmd.target).await?
        {
            drop(tx);
            let mut conn = self.pool.acquire().await?;
            let target = load(&mut conn, cmd.target, false)
                .await?
                .ok_or_else(|| ProfilesError::customer_not_found(cmd.target))?;
            let record = merges_of(&mut conn, &[cmd.source])
                .await?
                .into_iter()
                .rev()
                .find(|m| m.source_customer_id == cmd.source && m.target_customer_id == cmd.target)
                .ok_or_else(|| anyhow::anyhow!("merge of a replayed request is missing"))?;
            return Ok((target, record));
        }
        // Lock in id order so two opposite merges cannot deadlock.
        let (first, second) = if cmd.source < cmd.target {
            (cmd.source, cmd.target)
        } else {
            (cmd.target, cmd.source)
        };
        let a = load_for_update(&mut tx, first).await?;
        let b = load_for_update(&mut tx, second).await?;
        let (source, mut target) = if a.id == cmd.source { (a, b) } else { (b, a) };
        ensure_editable(&source, false)?;
        ensure_editable(&target, false)?;
        if !source.etag_matches(&cmd.source_etag) || !target.etag_matches(&cmd.target_etag) {
            return Err(ProfilesError::StaleEtag);
        }
        // Identities are unique, so the two sets never overlap: their sizes add up.
        if source.identities.len() + target.identities.len() > super::customers::MAX_IDENTITIES {
            return Err(ProfilesError::IdentityLimit);
        }
        let (traits, source_value_paths) =
            merge_traits(&target.traits, &source.traits, &cmd.choices);
        let consents_from_source = cmd
            .choices
            .iter()
            .any(|(p, w)| p == "consents" && *w == MergeWinner::Source);
        let now = self.now();
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
            unmerge_expire_time: now + Duration::days(UNMERGE_WINDOW_DAYS),
            unmerge: None,
        };
        let source_before = encode_snapshot(&source);
        let target_before = encode_snapshot(&target);
        sqlx::query("UPDATE identities SET customer_id = $2 WHERE customer_id = $1")
            .bind(source.id)
            .bind(target.id)
            .execute(&mut *tx)
            .await?;
        record.moved_activity_count = i64::try_from(
            sqlx::query(
                "UPDATE activities SET customer_id = $2, merge_id = $3 WHERE customer_id = $1",
            )
            .bind(source.id)
            .bind(target.id)
            .bind(merge_id)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        )
        .unwrap_or(i64::MAX);
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
                    apply_consent(
                        &mut tx,
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
        sqlx::query("DELETE FROM consents WHERE customer_id = $1")
            .bind(source.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE customers SET state = 3, merged_into = $2, version = version + 1, update_time = $3 WHERE customer_id = $1")
            .bind(source.id)
            .bind(target.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        target.traits = traits;
        touch(&mut target, now);
        write_traits(&mut tx, &target).await?;
        let choices_json = json(&record.choices)?;
        sqlx::query(
            "INSERT INTO merges (merge_id, source_customer_id, target_customer_id, state, survivorship, \
             source_value_paths, moved_identity_count, moved_activity_count, actor_kind, actor_id, \
             actor_service, merge_reason, merge_time, unmerge_expire_time, source_before, target_before) \
             VALUES ($1, $2, $3, 1, $4::text::jsonb, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(merge_id)
        .bind(source.id)
        .bind(target.id)
        .bind(choices_json)
        .bind(&record.source_value_paths)
        .bind(record.moved_identity_count)
        .bind(record.moved_activity_count)
        .bind(record.actor.kind)
        .bind(&record.actor.id)
        .bind(&record.actor.service)
        .bind(&record.reason)
        .bind(record.merge_time)
        .bind(record.unmerge_expire_time)
        .bind(source_before)
        .bind(target_before)
        .execute(&mut *tx)
        .await?;
        let target = load_for_update(&mut tx, target.id).await?;
        sqlx::query("UPDATE merges SET target_after = $2 WHERE merge_id = $1")
            .bind(merge_id)
            .bind(encode_snapshot(&target))
            .execute(&mut *tx)
            .await?;
        let pii = pii_attributes(&mut tx).await?;
        for change in &changes {
            outbox::append(&mut tx, events::consent_changed(change)).await?;
        }
        outbox::append(&mut tx, events::customer_merged(&record, &target, &pii)).await?;
        if cmd.validate_only {
            // The preview is the merge itself, rolled back: the customer it answers is exactly
            // the one a real merge would produce (identities, consents, traits), with no
            // second copy of the merge rules to drift from the first.
            drop(tx);
            record.id = Uuid::nil();
            return Ok((target, record));
        }
        tx.commit().await?;
        tracing::info!(merge_id = %merge_id, "customers merged");
        Ok((target, record))
    }

    /// Erases a customer and every tombstone merged into it: personal data cleared,
    /// identities, consents and the consent trail deleted, activities folded into anonymous
    /// daily aggregates; emits CustomerErased. Idempotent.
    #[tracing::instrument(skip_all, fields(customer_id = %id))]
    pub async fn erase(
        &self,
        id: Uuid,
        request: Option<RequestKey>,
    ) -> Result<(Customer, Vec<Uuid>)> {
        let mut tx = self.pool.begin().await?;
        let customer = load_for_update(&mut tx, id).await?;
        if let Some(key) = &request {
            claim_request(&mut tx, key, "EraseCustomer", id).await?;
        }
        match customer.state {
            CustomerState::Merged => ensure_editable(&customer, false)?,
            CustomerState::Erased => {
                let merged: Vec<Uuid> = merged_family(&mut tx, id)
                    .await?
                    .into_iter()
                    .filter(|m| *m != id)
                    .collect();
                tx.commit().await?;
                return Ok((customer, merged));
            }
            CustomerState::Active | CustomerState::Deleted => {}
        }
        let family = merged_family(&mut tx, id).await?;
        let merged: Vec<Uuid> = family.iter().copied().filter(|m| *m != id).collect();
        sqlx::query(
            "INSERT INTO erased_activity_aggregates (day, kind, channel, currency, activity_count, amount_minor) \
             SELECT date_trunc('day', occur_time)::date, kind, channel, coalesce(currency, ''), count(*), coalesce(sum(amount_minor), 0) \
             FROM activities WHERE customer_id = ANY($1) GROUP BY 1, 2, 3, 4 \
             ON CONFLICT (day, kind, channel, currency) DO UPDATE SET \
             activity_count = erased_activity_aggregates.activity_count + excluded.activity_count, \
             amount_minor = erased_activity_aggregates.amount_minor + excluded.amount_minor",
        )
        .bind(&family)
        .execute(&mut *tx)
        .await?;
        for statement in [
            "DELETE FROM activities WHERE customer_id = ANY($1)",
            "DELETE FROM identities WHERE customer_id = ANY($1)",
            "DELETE FROM consents WHERE customer_id = ANY($1)",
            "DELETE FROM consent_changes WHERE customer_id = ANY($1)",
            "UPDATE merges SET snapshot = NULL, source_before = NULL, target_before = NULL, target_after = NULL, \
             merge_reason = '', unmerge_reason = '' WHERE source_customer_id = ANY($1) OR target_customer_id = ANY($1)",
        ] {
            sqlx::query(statement)
                .bind(&family)
                .execute(&mut *tx)
                .await?;
        }
        // The tombstones keep only id, state and times.
        sqlx::query(
            "UPDATE customers SET state = 4, erase_time = $2, update_time = $2, delete_time = NULL, \
             version = version + 1, display_name = '', given_name = '', family_name = '', birth_date = NULL, \
             gender = 0, income_band = 0, occupation = '', education_level = 0, country_code = '', \
             region = '', city = '', postal_code = '', interests = '{}', lifestyle_tags = '{}', tags = '{}', \
             custom_attributes = '{}', channel_preferences = '{}' WHERE customer_id = ANY($1)",
        )
        .bind(&family)
        .bind(self.now())
        .execute(&mut *tx)
        .await?;
        let erased = load_for_update(&mut tx, id).await?;
        outbox::append(&mut tx, events::customer_erased(&erased, &merged)).await?;
        tx.commit().await?;
        tracing::info!(merged = merged.len(), "customer erased");
        Ok((erased, merged))
    }

    /// Everything held about the customer `id` resolves to, in one snapshot.
    #[tracing::instrument(skip_all, fields(customer_id = %id))]
    pub async fn export(&self, id: Uuid) -> Result<Export> {
        let mut tx = custops_common::db::begin_snapshot(&self.pool).await?;
        // The snapshot is taken by the first statement, just after this reading.
        let export_time = self.now();
        let (customer, merged_from) = resolve(&mut tx, id, false).await?;
        let family = merged_family(&mut tx, customer.id).await?;
        let names: Vec<String> = customer.traits.custom_attributes.keys().cloned().collect();
        let definitions: Vec<AttributeRow> = sqlx::query_as(
            "SELECT attribute_name, value_type, description, contains_pii, create_time FROM attribute_definitions \
             WHERE attribute_name = ANY($1) ORDER BY attribute_name",
        )
        .bind(&names)
        .fetch_all(&mut *tx)
        .await?;
        let changes: Vec<ConsentChangeRow> = sqlx::query_as(
            "SELECT consent_change_id, customer_id, channel, old_status, new_status, source, actor_kind, \
             actor_id, actor_service, change_time, record_time, merge_id, superseded FROM consent_changes \
             WHERE customer_id = ANY($1) ORDER BY record_time, consent_change_id",
        )
        .bind(&family)
        .fetch_all(&mut *tx)
        .await?;
        let activities: Vec<ActivityRow> = sqlx::query_as(
            "SELECT activity_id, customer_id, source, event_id, occur_time, record_time, channel, details::text AS details \
             FROM activities WHERE customer_id = $1 ORDER BY occur_time, activity_id",
        )
        .bind(customer.id)
        .fetch_all(&mut *tx)
        .await?;
        let merges = merges_of(&mut tx, &family).await?;
        tx.commit().await?;
        Ok(Export {
            customer,
            merged_from,
            definitions: definitions
                .into_iter()
                .map(AttributeRow::into_definition)
                .collect(),
            consent_changes: changes
                .into_iter()
                .map(ConsentChangeRow::into_change)
                .collect(),
            activities: activities
                .into_iter()
                .map(ActivityRow::into_activity)
                .collect::<Result<_>>()?,
            merges,
            export_time,
        })
    }

    /// ACTIVE customers likely the same person as `id`, best first.
    #[tracing::instrument(skip_all, fields(customer_id = %id))]
    pub async fn find_duplicates(
        &self,
        id: Uuid,
        max: usize,
        min_score: f64,
    ) -> Result<Vec<Duplicate>> {
        let mut conn = self.pool.acquire().await?;
        let (customer, _) = resolve(&mut conn, id, false).await?;
        let values: Vec<String> = customer
            .identities
            .iter()
            .map(|i| i.value.clone())
            .collect();
        let domains: Vec<String> = customer
            .identities
            .iter()
            .filter(|i| i.kind == IdentityType::Email)
            .filter_map(|i| i.value.split_once('@').map(|(_, d)| d.to_owned()))
            .collect();
        let t = &customer.traits;
        // Candidates: same value under any type, an e-mail at a shared domain, or same names.
        let candidate_ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT DISTINCT c.customer_id FROM customers c WHERE c.state = 1 AND c.customer_id <> $1 AND ( \
             EXISTS (SELECT 1 FROM identities i WHERE i.customer_id = c.customer_id AND i.value = ANY($2)) \
             OR EXISTS (SELECT 1 FROM identities i WHERE i.customer_id = c.customer_id AND i.identity_type = 1 \
                 AND split_part(i.value, '@', 2) = ANY($3)) \
             OR ($4 <> '' AND $5 <> '' AND lower(c.given_name) = lower($4) AND lower(c.family_name) = lower($5))) \
             LIMIT 1000",
        )
        .bind(customer.id)
        .bind(&values)
        .bind(&domains)
        .bind(&t.given_name)
        .bind(&t.family_name)
        .fetch_all(&mut *conn)
        .await?;
        let mut out = Vec::new();
        for candidate_id in candidate_ids {
            let Some(candidate) = load(&mut conn, candidate_id, false).await? else {
                continue;
            };
            let evidence = duplicate_evidence(&customer, &candidate);
            if evidence.is_empty() {
                continue;
            }
            let score = evidence
                .iter()
                .map(|e| match e.rule {
                    1 => 0.9,
                    2 => 0.85,
                    3 => 0.8,
                    4 => 0.6,
                    _ => 0.5,
                })
                .fold(0.0_f64, f64::max);
            if score >= min_score {
                out.push(Duplicate {
                    customer: candidate,
                    score,
                    matches: evidence,
                });
            }
        }
        out.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.customer.id.cmp(&b.customer.id))
        });
        out.truncate(max);
        Ok(out)
    }
}

fn duplicate_evidence(customer: &Customer, candidate: &Customer) -> Vec<DuplicateEvidence> {
    let mut evidence = Vec::new();
    for (i, mine) in customer.identities.iter().enumerate() {
        for (j, theirs) in candidate.identities.iter().enumerate() {
            let rule = if mine.kind == IdentityType::Email
                && theirs.kind == IdentityType::Email
                && canonical_email(&mine.value) == canonical_email(&theirs.value)
            {
                Some(1)
            } else if mine.value == theirs.value
                && (mine.kind != theirs.kind || mine.namespace != theirs.namespace)
            {
                Some(3)
            } else {
                None
            };
            if let Some(rule) = rule {
                evidence.push(DuplicateEvidence {
                    rule,
                    customer_identity: Some(i),
                    candidate_identity: Some(j),
                    field_paths: Vec::new(),
                });
            }
        }
    }
    let (a, b) = (&customer.traits, &candidate.traits);
    let same_name = !a.given_name.is_empty()
        && !a.family_name.is_empty()
        && a.given_name.to_lowercase() == b.given_name.to_lowercase()
        && a.family_name.to_lowercase() == b.family_name.to_lowercase();
    if same_name && a.birth_date.is_some() && a.birth_date == b.birth_date {
        evidence.push(DuplicateEvidence {
            rule: 4,
            customer_identity: None,
            candidate_identity: None,
            field_paths: vec![
                "family_name".into(),
                "given_name".into(),
                "demographics.birth_date".into(),
            ],
        });
    }
    let same_place = if !a.postal_code.is_empty() || !b.postal_code.is_empty() {
        a.postal_code == b.postal_code && !a.postal_code.is_empty()
    } else {
        !a.city.is_empty() && a.city.to_lowercase() == b.city.to_lowercase()
    };
    if same_name && same_place {
        evidence.push(DuplicateEvidence {
            rule: 5,
            customer_identity: None,
            candidate_identity: None,
            field_paths: vec![
                "family_name".into(),
                "given_name".into(),
                "geography".into(),
            ],
        });
    }
    let mut seen = HashSet::new();
    evidence.retain(|e| seen.insert((e.rule, e.customer_identity, e.candidate_identity)));
    evidence.sort_by_key(|e| e.rule);
    evidence
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct MergeRow {
    merge_id: Uuid,
    source_customer_id: Uuid,
    target_customer_id: Uuid,
    state: i16,
    survivorship: String,
    source_value_paths: Vec<String>,
    moved_identity_count: i32,
    moved_activity_count: i64,
    actor_kind: i16,
    actor_id: String,
    actor_service: String,
    merge_reason: String,
    merge_time: DateTime<Utc>,
    unmerge_expire_time: DateTime<Utc>,
    unmerge_time: Option<DateTime<Utc>>,
    unmerge_actor_kind: Option<i16>,
    unmerge_actor_id: Option<String>,
    unmerge_actor_service: Option<String>,
    unmerge_reason: String,
}

impl MergeRow {
    pub(super) fn into_record(self) -> Result<MergeRecord> {
        let unmerge = self.unmerge_time.map(|time| {
            let actor = Actor {
                kind: self.unmerge_actor_kind.unwrap_or(3),
                id: self.unmerge_actor_id.clone().unwrap_or_default(),
                service: self.unmerge_actor_service.clone().unwrap_or_default(),
            };
            (time, actor, self.unmerge_reason.clone())
        });
        Ok(MergeRecord {
            id: self.merge_id,
            source_customer_id: self.source_customer_id,
            target_customer_id: self.target_customer_id,
            state: self.state,
            choices: serde_json::from_str(&self.survivorship).map_err(anyhow::Error::from)?,
            source_value_paths: self.source_value_paths,
            moved_identity_count: self.moved_identity_count,
            moved_activity_count: self.moved_activity_count,
            actor: Actor {
                kind: self.actor_kind,
                id: self.actor_id,
                service: self.actor_service,
            },
            reason: self.merge_reason,
            merge_time: self.merge_time,
            unmerge_expire_time: self.unmerge_expire_time,
            unmerge,
        })
    }
}

macro_rules! merge_columns {
    () => {
        "merge_id, source_customer_id, target_customer_id, state, survivorship::text AS survivorship, \
         source_value_paths, moved_identity_count, moved_activity_count, actor_kind, actor_id, actor_service, \
         merge_reason, merge_time, unmerge_expire_time, unmerge_time, unmerge_actor_kind, unmerge_actor_id, \
         unmerge_actor_service, unmerge_reason"
    };
}
pub(super) use merge_columns;

/// Merges in which any of `ids` took part, oldest first.
async fn merges_of(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<MergeRecord>> {
    let rows: Vec<MergeRow> = sqlx::query_as(concat!(
        "SELECT ", merge_columns!(), " FROM merges \
         WHERE source_customer_id = ANY($1) OR target_customer_id = ANY($1) ORDER BY merge_time, merge_id"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(MergeRow::into_record).collect()
}
