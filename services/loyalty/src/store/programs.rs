//! Programs: their identity, state and the rules document; the time-zone arithmetic done in
//! the program's zone.

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{StoreError, StoreResult, decode};
use crate::domain::Rejection;
use crate::domain::program::{NewProgram, Program, ProgramRules, ProgramState};

const COLUMNS: &str = "program_id, display_name, description, state, currency, time_zone, \
                       rules::text AS rules, etag, create_time, update_time";

/// The columns of a program `p` read beside another row (a member's): each named `p_` and
/// the column, so none collides with the other row's; [`from_joined_row`] reads them.
pub(crate) const JOINED_COLUMNS: &str = "p.program_id AS p_program_id, p.display_name AS p_display_name, \
     p.description AS p_description, p.state AS p_state, p.currency AS p_currency, \
     p.time_zone AS p_time_zone, p.rules::text AS p_rules, p.etag AS p_etag, \
     p.create_time AS p_create_time, p.update_time AS p_update_time";

pub(crate) fn state_code(state: ProgramState) -> i16 {
    match state {
        ProgramState::Active => 1,
        ProgramState::Archived => 2,
    }
}

fn state_from(code: i16) -> Option<ProgramState> {
    match code {
        1 => Some(ProgramState::Active),
        2 => Some(ProgramState::Archived),
        _ => None,
    }
}

fn rules_json(rules: &ProgramRules) -> StoreResult<String> {
    serde_json::to_string(rules).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_row(row: &PgRow) -> StoreResult<Program> {
    from_columns(row, &Names::PLAIN)
}

/// The program of a row read with [`JOINED_COLUMNS`].
pub(crate) fn from_joined_row(row: &PgRow) -> StoreResult<Program> {
    from_columns(row, &Names::JOINED)
}

/// What a program's columns are called in a row: as in [`COLUMNS`], or [`JOINED_COLUMNS`].
struct Names {
    program_id: &'static str,
    display_name: &'static str,
    description: &'static str,
    state: &'static str,
    currency: &'static str,
    time_zone: &'static str,
    rules: &'static str,
    etag: &'static str,
    create_time: &'static str,
    update_time: &'static str,
}

impl Names {
    const PLAIN: Self = Self {
        program_id: "program_id",
        display_name: "display_name",
        description: "description",
        state: "state",
        currency: "currency",
        time_zone: "time_zone",
        rules: "rules",
        etag: "etag",
        create_time: "create_time",
        update_time: "update_time",
    };
    const JOINED: Self = Self {
        program_id: "p_program_id",
        display_name: "p_display_name",
        description: "p_description",
        state: "p_state",
        currency: "p_currency",
        time_zone: "p_time_zone",
        rules: "p_rules",
        etag: "p_etag",
        create_time: "p_create_time",
        update_time: "p_update_time",
    };
}

/// The program in the columns of `row` called `names`.
fn from_columns(row: &PgRow, names: &Names) -> StoreResult<Program> {
    let rules: String = row.try_get(names.rules)?;
    Ok(Program {
        program_id: row.try_get(names.program_id)?,
        display_name: row.try_get(names.display_name)?,
        description: row.try_get(names.description)?,
        state: decode(state_from(row.try_get(names.state)?), "program state")?,
        currency: row.try_get(names.currency)?,
        time_zone: row.try_get(names.time_zone)?,
        rules: serde_json::from_str(&rules).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        etag: row.try_get(names.etag)?,
        create_time: row.try_get(names.create_time)?,
        update_time: row.try_get(names.update_time)?,
    })
}

/// Refuses a time zone Postgres does not know by its IANA name (e.g. "Asia/Shanghai").
/// Zone rules live in the database, which also does the zone arithmetic (`AT TIME ZONE`),
/// so no zone database is compiled into the service. Abbreviations and POSIX strings such as
/// "UTC+8", which `AT TIME ZONE` would also accept, are refused: their meaning is surprising
/// (POSIX offsets are west-positive).
pub(crate) async fn check_time_zone(conn: &mut PgConnection, zone: &str) -> StoreResult<()> {
    let known: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
            .bind(zone)
            .fetch_one(conn)
            .await?;
    if known {
        Ok(())
    } else {
        Err(Rejection::InvalidField {
            field: "program.time_zone",
            description: format!("unknown IANA time zone {zone:?} (e.g. \"Asia/Shanghai\")"),
        }
        .into())
    }
}

/// The month (1–12) of `at` in the IANA time zone `zone`.
pub(crate) async fn month_in_zone(
    conn: &mut PgConnection,
    at: DateTime<Utc>,
    zone: &str,
) -> StoreResult<u32> {
    let month: i32 = sqlx::query_scalar("SELECT extract(month FROM $1 AT TIME ZONE $2)::int")
        .bind(at)
        .bind(zone)
        .fetch_one(conn)
        .await?;
    u32::try_from(month).map_err(|_| StoreError::Corrupt(format!("month {month}")))
}

/// Inserts a program.
#[tracing::instrument(skip_all)]
pub async fn create(
    conn: &mut PgConnection,
    new: NewProgram,
    now: DateTime<Utc>,
) -> StoreResult<Program> {
    check_time_zone(conn, &new.time_zone).await?;
    let row = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO programs (program_id, display_name, description, state, currency, \
         time_zone, rules, create_time, update_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $8) RETURNING {COLUMNS}"
    )))
    .bind(Uuid::now_v7())
    .bind(&new.display_name)
    .bind(&new.description)
    .bind(state_code(new.state))
    .bind(new.currency.as_str())
    .bind(&new.time_zone)
    .bind(rules_json(&new.rules)?)
    .bind(now)
    .fetch_one(conn)
    .await?;
    from_row(&row)
}

/// One program.
#[tracing::instrument(skip_all, fields(program_id = %program_id))]
pub async fn get(conn: &mut PgConnection, program_id: Uuid) -> StoreResult<Program> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM programs WHERE program_id = $1"
    )))
    .bind(program_id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| Rejection::not_found("program", program_id))?;
    from_row(&row)
}

/// A page of programs after `after` (by id, i.e. creation order), in `states` if not empty.
pub async fn list(
    pool: &PgPool,
    states: &[ProgramState],
    after: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<Program>> {
    let codes: Vec<i16> = states.iter().map(|s| state_code(*s)).collect();
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM programs \
         WHERE ($1::uuid IS NULL OR program_id > $1) \
           AND (cardinality($2::smallint[]) = 0 OR state = ANY($2)) \
         ORDER BY program_id LIMIT $3"
    )))
    .bind(after)
    .bind(&codes)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *custops_common::db::read(pool).await?)
    .await?;
    rows.iter().map(from_row).collect()
}

/// The program, its row locked until the transaction ends.
pub(crate) async fn lock(conn: &mut PgConnection, program_id: Uuid) -> StoreResult<Program> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM programs WHERE program_id = $1 FOR UPDATE"
    )))
    .bind(program_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| Rejection::not_found("program", program_id))?;
    from_row(&row)
}

/// Writes `program`'s changeable fields at `now`, moving its etag on; answers it as stored.
pub(crate) async fn save(
    conn: &mut PgConnection,
    program: &Program,
    now: DateTime<Utc>,
) -> StoreResult<Program> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "UPDATE programs SET display_name = $2, description = $3, state = $4, time_zone = $5, \
         rules = $6::jsonb, etag = etag + 1, update_time = $7 WHERE program_id = $1 \
         RETURNING {COLUMNS}"
    )))
    .bind(program.program_id)
    .bind(&program.display_name)
    .bind(&program.description)
    .bind(state_code(program.state))
    .bind(&program.time_zone)
    .bind(rules_json(&program.rules)?)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    from_row(&row)
}

/// `at` as local time in the IANA time zone `zone`.
pub(crate) async fn local_time(
    conn: &mut PgConnection,
    at: DateTime<Utc>,
    zone: &str,
) -> StoreResult<NaiveDateTime> {
    Ok(sqlx::query_scalar("SELECT $1::timestamptz AT TIME ZONE $2")
        .bind(at)
        .bind(zone)
        .fetch_one(&mut *conn)
        .await?)
}

/// The instant of the local time `local` in the IANA time zone `zone`.
pub(crate) async fn instant_of_local(
    conn: &mut PgConnection,
    local: NaiveDateTime,
    zone: &str,
) -> StoreResult<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT $1::timestamp AT TIME ZONE $2")
        .bind(local)
        .bind(zone)
        .fetch_one(&mut *conn)
        .await?)
}
