//! Segments, their rule versions, and the parsed rules of rule segments (cached in-process
//! by segment id and version, so evaluating a customer does not re-parse every rule).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use custops_contracts::custops::segmentation::v1 as pb;
use prost::Message;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::domain::references::dependency_order;
use crate::domain::rule::Rule;
use crate::store::catalog::load_catalog;
use crate::wire::rules::parse_rule;

/// A segment as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRecord {
    pub segment_id: Uuid,
    pub display_name: String,
    pub description: String,
    /// True for a rule segment, false for a static one.
    pub rule_kind: bool,
    /// The encoded `Condition` of the current version (rule segments).
    pub rule: Option<Vec<u8>>,
    pub version: i64,
    pub membership_version: i64,
    pub member_count: i64,
    pub time_dependent: bool,
    pub referenced_segment_ids: Vec<Uuid>,
    pub fields: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub latest_recompute_job_id: Option<Uuid>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub etag: String,
}

/// A new opaque etag.
pub fn new_etag() -> String {
    Uuid::new_v4().simple().to_string()
}

const COLUMNS: &str = "segment_id, display_name, description, kind, rule, version, \
    membership_version, member_count, time_dependent, referenced_segment_ids, fields, labels, \
    latest_recompute_job_id, create_time, update_time, etag";

fn from_row(row: &PgRow) -> Result<SegmentRecord, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let labels: serde_json::Value = row.try_get("labels")?;
    Ok(SegmentRecord {
        segment_id: row.try_get("segment_id")?,
        display_name: row.try_get("display_name")?,
        description: row.try_get("description")?,
        rule_kind: kind == "rule",
        rule: row.try_get("rule")?,
        version: row.try_get("version")?,
        membership_version: row.try_get("membership_version")?,
        member_count: row.try_get("member_count")?,
        time_dependent: row.try_get("time_dependent")?,
        referenced_segment_ids: row.try_get("referenced_segment_ids")?,
        fields: row.try_get("fields")?,
        labels: serde_json::from_value(labels).unwrap_or_default(),
        latest_recompute_job_id: row.try_get("latest_recompute_job_id")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        etag: row.try_get("etag")?,
    })
}

/// One segment.
pub async fn get<'e>(
    executor: impl PgExecutor<'e>,
    segment_id: Uuid,
) -> Result<Option<SegmentRecord>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM segments WHERE segment_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(segment_id)
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// One segment, row-locked for the rest of the transaction.
pub async fn get_for_update(
    conn: &mut PgConnection,
    segment_id: Uuid,
) -> Result<Option<SegmentRecord>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM segments WHERE segment_id = $1 FOR UPDATE");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(segment_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The segments among `ids` that exist.
pub async fn get_many<'e>(
    executor: impl PgExecutor<'e>,
    ids: &[Uuid],
) -> Result<Vec<SegmentRecord>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM segments WHERE segment_id = ANY($1)");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(executor)
        .await?;
    rows.iter().map(from_row).collect()
}

/// Filters of ListSegments.
#[derive(Debug, Clone, Default)]
pub struct SegmentFilter {
    /// Some(true) rule, Some(false) static.
    pub rule_kind: Option<bool>,
    pub labels: BTreeMap<String, String>,
    pub referenced_segment_id: Option<Uuid>,
    pub field: Option<String>,
}

/// A page of segments, oldest first, after the keyset `after`.
pub async fn list<'e>(
    executor: impl PgExecutor<'e>,
    filter: &SegmentFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<SegmentRecord>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM segments \
         WHERE ($1::text IS NULL OR kind = $1) \
           AND labels @> $2 \
           AND ($3::uuid IS NULL OR referenced_segment_ids @> ARRAY[$3::uuid]) \
           AND ($4::text IS NULL OR fields @> ARRAY[$4::text]) \
           AND ($5::timestamptz IS NULL OR (create_time, segment_id) > ($5, $6)) \
         ORDER BY create_time, segment_id LIMIT $7"
    );
    let kind = filter
        .rule_kind
        .map(|rule| if rule { "rule" } else { "static" });
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(kind)
        .bind(serde_json::to_value(&filter.labels).unwrap_or_default())
        .bind(filter.referenced_segment_id)
        .bind(filter.field.as_deref())
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(limit)
        .fetch_all(executor)
        .await?;
    rows.iter().map(from_row).collect()
}

/// How many segments exist.
pub async fn count(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM segments")
        .fetch_one(conn)
        .await
}

/// Inserts a new segment.
pub async fn insert(conn: &mut PgConnection, s: &SegmentRecord) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO segments (segment_id, display_name, description, kind, rule, version, \
             membership_version, member_count, time_dependent, referenced_segment_ids, fields, \
             labels, latest_recompute_job_id, create_time, update_time, etag) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(s.segment_id)
    .bind(&s.display_name)
    .bind(&s.description)
    .bind(if s.rule_kind { "rule" } else { "static" })
    .bind(&s.rule)
    .bind(s.version)
    .bind(s.membership_version)
    .bind(s.member_count)
    .bind(s.time_dependent)
    .bind(&s.referenced_segment_ids)
    .bind(&s.fields)
    .bind(serde_json::to_value(&s.labels).unwrap_or_default())
    .bind(s.latest_recompute_job_id)
    .bind(s.create_time)
    .bind(s.update_time)
    .bind(&s.etag)
    .execute(conn)
    .await?;
    Ok(())
}

/// The rule segments whose rules test catalog field `field` (their `fields`).
pub async fn reading_field(conn: &mut PgConnection, field: &str) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT segment_id FROM segments WHERE kind = 'rule' AND fields @> ARRAY[$1::text] \
         ORDER BY segment_id",
    )
    .bind(field)
    .fetch_all(conn)
    .await
}

/// Writes the definition fields of an updated segment.
pub async fn update_definition(
    conn: &mut PgConnection,
    s: &SegmentRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE segments SET display_name = $2, description = $3, rule = $4, version = $5, \
             time_dependent = $6, referenced_segment_ids = $7, fields = $8, labels = $9, \
             latest_recompute_job_id = $10, update_time = $11, etag = $12 \
         WHERE segment_id = $1",
    )
    .bind(s.segment_id)
    .bind(&s.display_name)
    .bind(&s.description)
    .bind(&s.rule)
    .bind(s.version)
    .bind(s.time_dependent)
    .bind(&s.referenced_segment_ids)
    .bind(&s.fields)
    .bind(serde_json::to_value(&s.labels).unwrap_or_default())
    .bind(s.latest_recompute_job_id)
    .bind(s.update_time)
    .bind(&s.etag)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a rule version.
pub async fn insert_version(
    conn: &mut PgConnection,
    segment_id: Uuid,
    version: i64,
    rule: &[u8],
    create_time: DateTime<Utc>,
    creator: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO segment_versions (segment_id, version, rule, create_time, creator) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(segment_id)
    .bind(version)
    .bind(rule)
    .bind(create_time)
    .bind(creator)
    .execute(conn)
    .await?;
    Ok(())
}

/// One stored rule version.
#[derive(Debug, Clone)]
pub struct VersionRecord {
    pub segment_id: Uuid,
    pub version: i64,
    pub rule: Vec<u8>,
    pub create_time: DateTime<Utc>,
    pub creator: String,
}

/// Versions of a segment, newest first, below `before`.
pub async fn versions<'e>(
    executor: impl PgExecutor<'e>,
    segment_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<VersionRecord>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT segment_id, version, rule, create_time, creator FROM segment_versions \
         WHERE segment_id = $1 AND ($2::bigint IS NULL OR version < $2) \
         ORDER BY version DESC LIMIT $3",
    )
    .bind(segment_id)
    .bind(before)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(VersionRecord {
                segment_id: r.try_get("segment_id")?,
                version: r.try_get("version")?,
                rule: r.try_get("rule")?,
                create_time: r.try_get("create_time")?,
                creator: r.try_get("creator")?,
            })
        })
        .collect()
}

/// Deletes a segment (memberships and versions cascade).
pub async fn delete(conn: &mut PgConnection, segment_id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM segments WHERE segment_id = $1")
        .bind(segment_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Segments whose rules directly reference `segment_id`.
pub async fn referencing<'e>(
    executor: impl PgExecutor<'e>,
    segment_id: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT segment_id FROM segments WHERE referenced_segment_ids @> ARRAY[$1::uuid] \
         ORDER BY segment_id",
    )
    .bind(segment_id)
    .fetch_all(executor)
    .await
}

/// Every segment's direct references (the graph cycle and depth checks walk).
pub async fn reference_graph<'e>(
    executor: impl PgExecutor<'e>,
) -> Result<HashMap<Uuid, Vec<Uuid>>, sqlx::Error> {
    let rows = sqlx::query("SELECT segment_id, referenced_segment_ids FROM segments")
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("segment_id")?,
                r.try_get("referenced_segment_ids")?,
            ))
        })
        .collect()
}

/// Sets the segment's latest recompute job.
pub async fn set_latest_job(
    conn: &mut PgConnection,
    segment_id: Uuid,
    job_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE segments SET latest_recompute_job_id = $2 WHERE segment_id = $1")
        .bind(segment_id)
        .bind(job_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Parsed rules by segment id, with their version.
type RuleCache = HashMap<Uuid, (i64, Arc<Rule>)>;

/// A rule segment ready to evaluate.
#[derive(Debug, Clone)]
pub struct RuleSegment {
    pub segment_id: Uuid,
    pub version: i64,
    pub rule: Arc<Rule>,
    pub referenced_segment_ids: Vec<Uuid>,
    pub fields: Vec<String>,
    pub time_dependent: bool,
}

/// Parsed rules by segment id, with the version they belong to. Segment ids are never reused,
/// so entries of deleted segments are only dead weight (bounded by the 10,000-segment limit
/// per deployment).
static RULES: LazyLock<Mutex<RuleCache>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Decodes a stored rule.
pub fn decode_rule(bytes: &[u8]) -> Result<pb::Condition, prost::DecodeError> {
    pb::Condition::decode(bytes)
}

/// Every rule segment, in dependency order (referenced segments first), with its parsed rule.
/// A stored rule that no longer parses (e.g. an attribute definition changed type) is skipped
/// with a warning: its memberships stay as they are.
pub async fn rule_segments(conn: &mut PgConnection) -> Result<Vec<RuleSegment>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT segment_id, version, referenced_segment_ids, fields, time_dependent \
         FROM segments WHERE kind = 'rule'",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut by_id = HashMap::with_capacity(rows.len());
    let mut missing = Vec::new();
    for row in &rows {
        let segment_id: Uuid = row.try_get("segment_id")?;
        let version: i64 = row.try_get("version")?;
        let cached = RULES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&segment_id)
            .filter(|(v, _)| *v == version)
            .map(|(_, rule)| rule.clone());
        if cached.is_none() {
            missing.push(segment_id);
        }
        by_id.insert(
            segment_id,
            (
                version,
                cached,
                row.try_get::<Vec<Uuid>, _>("referenced_segment_ids")?,
                row.try_get::<Vec<String>, _>("fields")?,
                row.try_get::<bool, _>("time_dependent")?,
            ),
        );
    }
    if !missing.is_empty() {
        let catalog = load_catalog(&mut *conn).await?;
        let loaded = sqlx::query(
            "SELECT segment_id, version, rule FROM segments WHERE segment_id = ANY($1)",
        )
        .bind(&missing)
        .fetch_all(&mut *conn)
        .await?;
        for row in loaded {
            let segment_id: Uuid = row.try_get("segment_id")?;
            let version: i64 = row.try_get("version")?;
            let bytes: Option<Vec<u8>> = row.try_get("rule")?;
            let parsed = bytes
                .as_deref()
                .and_then(|b| decode_rule(b).ok())
                .and_then(|c| parse_rule(&c, "segment.rule", &catalog).ok());
            let Some(rule) = parsed else {
                tracing::warn!(%segment_id, version, "stored rule does not parse; segment skipped");
                continue;
            };
            let rule = Arc::new(rule);
            RULES
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(segment_id, (version, rule.clone()));
            if let Some(entry) = by_id.get_mut(&segment_id)
                && entry.0 == version
            {
                entry.1 = Some(rule);
            }
        }
    }
    let graph: Vec<(Uuid, Vec<Uuid>)> = by_id
        .iter()
        .map(|(id, entry)| (*id, entry.2.clone()))
        .collect();
    Ok(dependency_order(&graph)
        .into_iter()
        .filter_map(|id| {
            let (version, rule, refs, fields, time_dependent) = by_id.remove(&id)?;
            Some(RuleSegment {
                segment_id: id,
                version,
                rule: rule?,
                referenced_segment_ids: refs,
                fields,
                time_dependent,
            })
        })
        .collect())
}

/// The rule segments that reference `root`, directly or through other segments, in
/// dependency order (each after the segments it references). Through the GIN index on
/// `referenced_segment_ids`; `UNION` ends the walk even if a cycle were ever stored.
pub async fn dependants(conn: &mut PgConnection, root: Uuid) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows = sqlx::query(
        "WITH RECURSIVE d (segment_id) AS ( \
             SELECT segment_id FROM segments WHERE referenced_segment_ids @> ARRAY[$1::uuid] \
             UNION \
             SELECT s.segment_id FROM segments s JOIN d \
               ON s.referenced_segment_ids @> ARRAY[d.segment_id]) \
         SELECT s.segment_id, s.referenced_segment_ids FROM segments s JOIN d USING (segment_id) \
         WHERE s.kind = 'rule'",
    )
    .bind(root)
    .fetch_all(conn)
    .await?;
    let graph = rows
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<Uuid, _>("segment_id")?,
                row.try_get::<Vec<Uuid>, _>("referenced_segment_ids")?,
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(dependency_order(&graph))
}

/// Whether the segment exists.
pub async fn exists<'e>(
    executor: impl PgExecutor<'e>,
    segment_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM segments WHERE segment_id = $1)")
        .bind(segment_id)
        .fetch_one(executor)
        .await
}
