//! The statements of a set-based application of a rule (recomputes, rollovers, and the
//! segments that follow a change of a segment they reference): the candidates, staged in
//! temporary tables, the difference with the stored memberships applied with `RETURNING` into
//! two more (`recompute_exited`, `recompute_entered`), from which `events` writes the events
//! inside Postgres. The caller (`workflow::recompute`) holds the recompute lock and the
//! segment's row.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::rule::Rule;
use crate::store::compile::{CompiledRule, compile, compile_grouped};
use crate::store::segments::SegmentRecord;

/// Which customers a set-based application of a rule re-evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidates {
    /// Every customer with facts: a recompute (how many, the caller counts).
    Everyone,
    /// Only the customers in the temporary table `moved_customers` ([`stage_moved`]);
    /// memberships of others are left alone.
    Moved,
}

impl Candidates {
    /// `rule` compiled for these candidates, the `FROM` clause of its `SELECT` and the
    /// condition restricting memberships to the candidates (`m` the memberships). Fixed
    /// fragments only: which customers are candidates is decided here, not by input.
    /// Everyone: aggregates in one grouped pass; a few moved customers: correlated.
    pub fn compile(self, rule: &Rule) -> (CompiledRule, String, &'static str) {
        match self {
            Candidates::Everyone => {
                let compiled = compile_grouped(rule);
                let from = compiled.from_clause();
                (compiled, from, "")
            }
            Candidates::Moved => (
                compile(rule),
                "customer_facts f JOIN moved_customers c ON c.customer_id = f.customer_id"
                    .to_owned(),
                " AND m.customer_id IN (SELECT customer_id FROM moved_customers)",
            ),
        }
    }
}

/// Stages `moved` (deduplicated) as the temporary table `moved_customers`, the candidates of
/// [`Candidates::Moved`].
pub async fn stage_moved(tx: &mut PgConnection, moved: &[String]) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "CREATE TEMP TABLE IF NOT EXISTS moved_customers (customer_id text PRIMARY KEY) \
             ON COMMIT DROP; \
         TRUNCATE moved_customers",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO moved_customers (customer_id) \
         SELECT DISTINCT c FROM unnest($1::text[]) AS c",
    )
    .bind(moved)
    .execute(&mut *tx)
    .await?;
    sqlx::query("ANALYZE moved_customers")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// How many customers `from` (a [`Candidates::compile`] clause) holds.
pub async fn count_candidates(tx: &mut PgConnection, from: &str) -> Result<i64, sqlx::Error> {
    let counted = format!("SELECT count(*) FROM {from}");
    sqlx::query_scalar(sqlx::AssertSqlSafe(counted))
        .fetch_one(&mut *tx)
        .await
}

/// Whether the segment has any member.
pub async fn has_members(tx: &mut PgConnection, segment_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM memberships WHERE segment_id = $1)")
        .bind(segment_id)
        .fetch_one(&mut *tx)
        .await
}

/// Stages every customer `select` (the compiled rule: `$1` T, `$2` today, `$3…` its binds)
/// matches into `recompute_members`; returns how many.
pub async fn stage_matching(
    tx: &mut PgConnection,
    compiled: &CompiledRule,
    select: &str,
    now: DateTime<Utc>,
    today: NaiveDate,
) -> Result<u64, sqlx::Error> {
    let staged = format!("INSERT INTO recompute_members (customer_id) {select}");
    let query = sqlx::query(sqlx::AssertSqlSafe(staged))
        .bind(now)
        .bind(today);
    let matched = compiled
        .bind(query)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("ANALYZE recompute_members")
        .execute(&mut *tx)
        .await?;
    Ok(matched)
}

/// The temporary tables of a set-based application of a rule, empty: the new members (when staged), the
/// memberships that ended and those that began, from which the events are written inside
/// Postgres whatever their number.
pub async fn create_tables(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "CREATE TEMP TABLE IF NOT EXISTS recompute_members (customer_id text PRIMARY KEY) \
             ON COMMIT DROP; \
         CREATE TEMP TABLE IF NOT EXISTS recompute_exited \
             (customer_id text NOT NULL, enter_time timestamptz NOT NULL) ON COMMIT DROP; \
         CREATE TEMP TABLE IF NOT EXISTS recompute_entered (customer_id text NOT NULL) \
             ON COMMIT DROP; \
         TRUNCATE recompute_members, recompute_exited, recompute_entered",
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// What a membership that begins records: the segment (its id and version), the instant, the
/// reason slug.
pub type Entry<'a> = (&'a SegmentRecord, DateTime<Utc>, &'static str);

/// Inserts every customer `select` (the compiled rule: `$1` T, `$2` today, `$3…` its binds)
/// matches as a member of a segment without members, into `recompute_entered` too; returns
/// how many. No `ON CONFLICT`: the caller found the segment empty under the exclusive
/// recompute lock and the segment's row lock, so no membership of it can exist or appear
/// before commit, and a plain insert skips the speculative insertion of each row.
pub async fn insert_matching(
    tx: &mut PgConnection,
    compiled: &CompiledRule,
    select: &str,
    today: chrono::NaiveDate,
    (segment, now, reason): Entry<'_>,
) -> Result<u64, sqlx::Error> {
    // The segment's own values come after the rule's parameters.
    let next = 3 + compiled.binds.len();
    let (id, version, reason_param) = (next, next + 1, next + 2);
    let insert = format!(
        "WITH entered AS ( \
             INSERT INTO memberships (segment_id, customer_id, segment_version, enter_time, enter_reason) \
             SELECT ${id}, m.customer_id, ${version}, $1, ${reason_param} FROM ({select}) AS m \
             ORDER BY m.customer_id \
             RETURNING customer_id \
         ) \
         INSERT INTO recompute_entered (customer_id) SELECT customer_id FROM entered"
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(insert))
        .bind(now)
        .bind(today);
    Ok(compiled
        .bind(query)
        .bind(segment.segment_id)
        .bind(segment.version)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected())
}

/// Applies the difference between the segment's memberships (only the moved customers' when
/// `only_moved` restricts them) and the staged `recompute_members`: ends the memberships of
/// those not staged (into `recompute_exited`), begins those of the staged who are not members
/// (into `recompute_entered`). Returns (exited, entered).
pub async fn apply_difference(
    tx: &mut PgConnection,
    only_moved: &str,
    (segment, now, reason): Entry<'_>,
) -> Result<(u64, u64), sqlx::Error> {
    let delete = format!(
        "WITH exited AS ( \
             DELETE FROM memberships m WHERE m.segment_id = $1{only_moved} \
               AND NOT EXISTS (SELECT 1 FROM recompute_members n WHERE n.customer_id = m.customer_id) \
             RETURNING m.customer_id, m.enter_time \
         ) \
         INSERT INTO recompute_exited (customer_id, enter_time) \
         SELECT customer_id, enter_time FROM exited"
    );
    let exited = sqlx::query(sqlx::AssertSqlSafe(delete))
        .bind(segment.segment_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let entered = sqlx::query(
        "WITH entered AS ( \
             INSERT INTO memberships (segment_id, customer_id, segment_version, enter_time, enter_reason) \
             SELECT $1, n.customer_id, $2, $3, $4 FROM recompute_members n \
             ORDER BY n.customer_id \
             ON CONFLICT DO NOTHING RETURNING customer_id \
         ) \
         INSERT INTO recompute_entered (customer_id) SELECT customer_id FROM entered",
    )
    .bind(segment.segment_id)
    .bind(segment.version)
    .bind(now)
    .bind(reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok((exited, entered))
}

/// The customers whose membership the last application moved (exited, then entered).
pub async fn moved(tx: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT customer_id FROM recompute_exited \
         UNION ALL SELECT customer_id FROM recompute_entered",
    )
    .fetch_all(&mut *tx)
    .await
}

/// After a recompute applied the segment's `version` to everyone: its members are the
/// `matched` ones. Returns the member count.
pub async fn set_member_count(
    tx: &mut PgConnection,
    segment: &SegmentRecord,
    matched: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE segments SET member_count = $2, \
         membership_version = GREATEST(membership_version, $3) \
         WHERE segment_id = $1 RETURNING member_count",
    )
    .bind(segment.segment_id)
    .bind(matched)
    .bind(segment.version)
    .fetch_one(&mut *tx)
    .await
}

/// After a few customers moved: the count moves by `delta`, as incremental changes move it.
/// Returns the member count.
pub async fn shift_member_count(
    tx: &mut PgConnection,
    segment_id: Uuid,
    delta: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE segments SET member_count = member_count + $2 \
         WHERE segment_id = $1 RETURNING member_count",
    )
    .bind(segment_id)
    .bind(delta)
    .fetch_one(&mut *tx)
    .await
}
