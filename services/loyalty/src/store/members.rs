//! Members and their balances projection: reading and locking a member (with its program),
//! the rolling window of qualifying amounts, the FULL view, listing; and the statements that
//! change a member row (enrolment, tier, status).

use std::sync::LazyLock;

use chrono::{DateTime, Duration, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, Row};
use uuid::Uuid;

use super::{StoreResult, birthdays, decode, lots, programs};
use crate::domain::Rejection;
use crate::domain::member::{
    Balances, DueSettlement, EnrolCommand, Expiring, Member, MemberRef, MemberStatus, MemberTier,
    PendingDowngrade, TierProgress,
};
use crate::domain::program::Program;

const COLUMNS: &str = "m.member_id, m.program_id, m.customer_id, m.status, m.status_reason, m.merged_into_member_id, m.anonymized, \
     m.enrol_channel, m.enrol_time, m.tier_code, m.tier_achieve_time, m.next_review_time, \
     m.pending_tier_code, m.pending_decide_time, m.pending_downgrade_time, b.available_points, \
     b.pending_points, b.qualifying_points, b.qualifying_spend_minor, b.lifetime_earned_points, \
     b.lifetime_redeemed_points, b.lifetime_expired_points, b.update_time";

/// A lateral join giving each member `m` what its due releases and expiries at `now` (an SQL
/// expression) change (columns `due_released`, `due_expired_available`,
/// `due_expired_pending`, `due_latest`), in the statement that reads the member, so that the
/// balances and the settlement come from one snapshot. Only the due lots are read (the
/// `point_lots_expiry_due` and `point_lots_release_due` indexes find them).
fn due_join(now: &str) -> String {
    let due_lots = lots::lots_now(
        &format!(
            "l.member_id = m.member_id AND l.remaining_points > 0 \
             AND ((l.pending AND l.release_time <= {now}) OR l.expire_time <= {now})"
        ),
        now,
    );
    format!(
        "CROSS JOIN LATERAL ( \
           SELECT coalesce(sum(v.stored_remaining) FILTER (WHERE v.due_release), 0)::bigint \
                    AS due_released, \
                  coalesce(sum(v.stored_remaining - v.cut) \
                    FILTER (WHERE v.due_expire AND NOT v.pending), 0)::bigint \
                    AS due_expired_available, \
                  coalesce(sum(v.stored_remaining) FILTER (WHERE v.due_expire AND v.pending), 0)::bigint \
                    AS due_expired_pending, \
                  max(GREATEST(CASE WHEN v.due_release THEN v.release_time END, \
                               CASE WHEN v.due_expire THEN v.expire_time END)) AS due_latest \
           FROM ({due_lots}) v) due"
    )
}

fn due_from(row: &PgRow) -> StoreResult<DueSettlement> {
    Ok(DueSettlement {
        released: row.try_get("due_released")?,
        expired_available: row.try_get("due_expired_available")?,
        expired_pending: row.try_get("due_expired_pending")?,
        latest: row.try_get("due_latest")?,
    })
}

/// The stored code of a status.
pub(crate) fn status_code(status: MemberStatus) -> i16 {
    match status {
        MemberStatus::Active => 1,
        MemberStatus::Suspended => 2,
        MemberStatus::Closed => 3,
        MemberStatus::Merged => 4,
    }
}

fn status_from(code: i16) -> Option<MemberStatus> {
    Some(match code {
        1 => MemberStatus::Active,
        2 => MemberStatus::Suspended,
        3 => MemberStatus::Closed,
        4 => MemberStatus::Merged,
        _ => return None,
    })
}

fn from_row(row: &PgRow, program: &Program) -> StoreResult<Member> {
    let tier_code: String = row.try_get("tier_code")?;
    let (rank, tier) = program
        .rules
        .tier(&tier_code)
        .map(|(rank, t)| (rank, t.display_name.clone()))
        .unwrap_or((0, tier_code.clone()));
    Ok(Member {
        member_id: row.try_get("member_id")?,
        program_id: row.try_get("program_id")?,
        customer_id: row
            .try_get::<Option<Uuid>, _>("customer_id")?
            .unwrap_or_default(),
        status: decode(status_from(row.try_get("status")?), "member status")?,
        status_reason: row.try_get("status_reason")?,
        merged_into: row.try_get("merged_into_member_id")?,
        anonymized: row.try_get("anonymized")?,
        enrol_channel: row.try_get("enrol_channel")?,
        enrol_time: row.try_get("enrol_time")?,
        update_time: row.try_get("update_time")?,
        balances: Balances {
            available: row.try_get("available_points")?,
            pending: row.try_get("pending_points")?,
            qualifying: row.try_get("qualifying_points")?,
            spend_minor: row.try_get("qualifying_spend_minor")?,
            lifetime_earned: row.try_get("lifetime_earned_points")?,
            lifetime_redeemed: row.try_get("lifetime_redeemed_points")?,
            lifetime_expired: row.try_get("lifetime_expired_points")?,
        },
        currency: program.currency.clone(),
        tier: MemberTier {
            code: tier_code,
            display_name: tier,
            rank,
            achieve_time: row.try_get("tier_achieve_time")?,
            next_review_time: row.try_get("next_review_time")?,
            pending_downgrade: pending_from(row, program)?,
            next_tier_progress: None,
            retention_progress: None,
        },
        expiring: None,
    })
}

fn pending_from(row: &PgRow, program: &Program) -> StoreResult<Option<PendingDowngrade>> {
    let code: Option<String> = row.try_get("pending_tier_code")?;
    let decide: Option<DateTime<Utc>> = row.try_get("pending_decide_time")?;
    let at: Option<DateTime<Utc>> = row.try_get("pending_downgrade_time")?;
    Ok(match (code, decide, at) {
        (Some(code), Some(decide_time), Some(downgrade_time)) => {
            let (rank, name) = program
                .rules
                .tier(&code)
                .map(|(rank, t)| (rank, t.display_name.clone()))
                .unwrap_or((0, code.clone()));
            Some(PendingDowngrade {
                code,
                display_name: name,
                rank,
                decide_time,
                downgrade_time,
            })
        }
        _ => None,
    })
}

/// A member and its program, as a mutation sees them.
#[derive(Debug, Clone)]
pub struct Locked {
    /// The member (balances as locked).
    pub member: Member,
    /// Its program.
    pub program: Program,
    /// Its window sums, when read with the lock and no entry has been appended since
    /// (`ledger::append` clears them).
    pub window: Option<WindowSums>,
    /// Whether it has lots due for release or expiry, when read in the locking statement
    /// ([`lock_at`]); `workflow::ledger::settle_due` takes it.
    pub due: Option<DueProbe>,
}

/// Whether a member has pending lots whose release time has passed, and lots with points
/// whose expiry time has passed.
#[derive(Debug, Clone, Copy)]
pub struct DueProbe {
    pub release: bool,
    pub expire: bool,
}

/// Loads a member and its program; with `lock`, locks the member's balances row until the
/// transaction ends (every mutation of the member does this first). A MERGED member resolves
/// to the member it was merged into when locking (mutations apply to the survivor) and when
/// named by customer (a merged-away customer's membership is the survivor's); a read by
/// member id returns the merged member itself.
pub async fn load(conn: &mut PgConnection, member: &MemberRef, lock: bool) -> StoreResult<Locked> {
    let access = if lock { Access::Lock } else { Access::Stored };
    resolve(conn, member, access).await
}

/// [`load`] with the lock, for a mutation at `now`: the locking statement also reads whether
/// lots are due ([`Locked::due`]) and the window sums at `now` ([`Locked::window`]), saving
/// the mutation a round trip, whenever its snapshot holds everything committed under the
/// lock. That is so unless the lock waited for a transaction that changed the member: then
/// the locked `balances` row is a later version than the one the statement's snapshot sees
/// (every change of a member's entries or lots moves its balances row in the same
/// transaction), the two are left unset and `workflow::ledger::settle_due` asks again.
pub async fn lock_at(
    conn: &mut PgConnection,
    member: &MemberRef,
    now: DateTime<Utc>,
) -> StoreResult<Locked> {
    resolve(conn, member, Access::LockAt(now)).await
}

/// Reads a member for a response, as it stands at `now`: like [`load`] without a lock, and
/// with the member's due releases and expiries applied to its balances (not written: the
/// member's next change or a scheduled job writes them). So a read never shows points past
/// their expiry as available, whenever the expiry job last ran.
pub async fn read(
    conn: &mut PgConnection,
    member: &MemberRef,
    now: DateTime<Utc>,
) -> StoreResult<Locked> {
    resolve(conn, member, Access::Now(now)).await
}

/// How a member row is read.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Locked for a mutation, as stored.
    Lock,
    /// Locked for a mutation at this time, with the due probe and the window sums.
    LockAt(DateTime<Utc>),
    /// As stored, without a lock.
    Stored,
    /// Without a lock, as it stands at this time (due releases and expiries applied).
    Now(DateTime<Utc>),
}

async fn resolve(
    conn: &mut PgConnection,
    member: &MemberRef,
    access: Access,
) -> StoreResult<Locked> {
    let follow = matches!(access, Access::Lock | Access::LockAt(_))
        || matches!(member, MemberRef::Customer { .. });
    let mut locked = load_one(conn, member, access).await?;
    // A chain of merges is short; the bound only guards against a cycle in corrupt data.
    for _ in 0..16 {
        match (follow, locked.member.status, locked.member.merged_into) {
            (true, MemberStatus::Merged, Some(survivor)) => {
                locked = load_one(conn, &MemberRef::Id(survivor), access).await?;
            }
            _ => return Ok(locked),
        }
    }
    Err(super::StoreError::Corrupt(
        "merge chain too long".to_owned(),
    ))
}

/// Locks the member `member_id` itself, even when it is MERGED (an unmerge works on the
/// merged-away member, which [`load`] would resolve to its survivor).
pub(crate) async fn lock_exact(conn: &mut PgConnection, member_id: Uuid) -> StoreResult<Locked> {
    load_one(conn, &MemberRef::Id(member_id), Access::Lock).await
}

/// The member's program, read in the member's statement ([`programs::JOINED_COLUMNS`]).
const PROGRAM: &str = programs::JOINED_COLUMNS;
const JOIN_PROGRAM: &str = "JOIN programs p ON p.program_id = m.program_id";

async fn load_one(
    conn: &mut PgConnection,
    member: &MemberRef,
    access: Access,
) -> StoreResult<Locked> {
    let suffix = if matches!(access, Access::Lock | Access::LockAt(_)) {
        " FOR UPDATE OF b"
    } else {
        ""
    };
    // The time is the last parameter: $2 after a member id, $3 after a program and customer.
    let at = match member {
        MemberRef::Id(_) => "$2::timestamptz",
        MemberRef::Customer { .. } => "$3::timestamptz",
    };
    let (extra_columns, extra_joins) = match access {
        Access::Now(_) => (", due.*".to_owned(), due_join(at)),
        Access::LockAt(_) => due_probe(at),
        Access::Lock | Access::Stored => (String::new(), String::new()),
    };
    let now = match access {
        Access::Now(now) | Access::LockAt(now) => Some(now),
        Access::Lock | Access::Stored => None,
    };
    let row = match member {
        MemberRef::Id(id) => {
            let query = format!(
                "SELECT {COLUMNS}, {PROGRAM}{extra_columns} \
                 FROM members m JOIN balances b USING (member_id) {JOIN_PROGRAM} \
                 {extra_joins} WHERE m.member_id = $1{suffix}"
            );
            let mut query = sqlx::query(AssertSqlSafe(query)).bind(id);
            if let Some(now) = now {
                query = query.bind(now);
            }
            query
                .fetch_optional(&mut *conn)
                .await?
                .ok_or_else(|| Rejection::not_found("member", id))?
        }
        MemberRef::Customer {
            program_id,
            customer_id,
        } => {
            let query = format!(
                "SELECT {COLUMNS}, {PROGRAM}{extra_columns} \
                 FROM members m JOIN balances b USING (member_id) {JOIN_PROGRAM} \
                 {extra_joins} WHERE m.program_id = $1 AND m.customer_id = $2{suffix}"
            );
            let mut query = sqlx::query(AssertSqlSafe(query))
                .bind(program_id)
                .bind(customer_id);
            if let Some(now) = now {
                query = query.bind(now);
            }
            query.fetch_optional(&mut *conn).await?.ok_or_else(|| {
                Rejection::not_found("member", format!("{program_id}/{customer_id}"))
            })?
        }
    };
    locked_from_row(&row, access)
}

/// The member and program of a row read with `access`; for [`Access::LockAt`], with the due
/// probe and window sums of [`due_probe`]'s columns when the lock did not wait.
fn locked_from_row(row: &PgRow, access: Access) -> StoreResult<Locked> {
    let program = programs::from_joined_row(row)?;
    let mut member = from_row(row, &program)?;
    let (mut window, mut due) = (None, None);
    match access {
        Access::Now(_) => member = member.with_due_applied(due_from(row)?),
        Access::LockAt(now) => {
            let locked_version: String = row.try_get("locked_version")?;
            let seen_version: String = row.try_get("seen_version")?;
            if locked_version == seen_version {
                window = Some(WindowSums {
                    at: now,
                    points: row.try_get("window_points")?,
                    spend: row.try_get("window_spend")?,
                });
                due = Some(DueProbe {
                    release: row.try_get("release_due")?,
                    expire: row.try_get("expire_due")?,
                });
            }
        }
        Access::Lock | Access::Stored => {}
    }
    Ok(Locked {
        member,
        program,
        window,
        due,
    })
}

/// What [`lock_group`] is told of one call of a group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupCall<'a> {
    /// The member the call names by id.
    pub(crate) member_id: Uuid,
    /// Its request key's caller.
    pub(crate) caller: &'a str,
    /// Its request key's request id.
    pub(crate) request_id: &'a str,
    /// For a purchase, its order id.
    pub(crate) order_id: Option<&'a str>,
}

/// One call of a group locked by [`lock_group`].
#[derive(Debug)]
pub(crate) struct GroupMember {
    /// The call's place in the group.
    pub(crate) call: usize,
    /// Its member as [`lock_at`] reads it (the probe and sums unset when the member changed
    /// after the statement's snapshot).
    pub(crate) locked: Locked,
    /// Whether the call's request key has a record: a replay, or a reused id.
    pub(crate) key_used: bool,
    /// For a purchase, the entry that already earned its order in the member's program.
    pub(crate) order_earned: Option<Uuid>,
    /// The member's customer's birth month, when profiles told it.
    pub(crate) birth_month: Option<u32>,
}

/// The statement of [`lock_group`], made once.
static LOCK_GROUP: LazyLock<String> = LazyLock::new(|| {
    let (probe_columns, probe_joins) = due_probe("$5::timestamptz");
    let order_earned = super::ledger::earn_of_order_sql("m.program_id", "c.order_id");
    let birth_month = birthdays::month_of("m.customer_id");
    format!(
        "SELECT c.n, {COLUMNS}, {PROGRAM}{probe_columns}, \
           EXISTS (SELECT 1 FROM idempotency_keys k \
                   WHERE k.caller = c.caller AND k.request_id = c.request_id) AS key_used, \
           CASE WHEN c.order_id IS NOT NULL THEN ({order_earned}) END AS order_earned, \
           ({birth_month}) AS birth_month \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) \
              WITH ORDINALITY AS c(member_id, caller, request_id, order_id, n) \
         JOIN members m ON m.member_id = c.member_id \
         JOIN balances b ON b.member_id = m.member_id {JOIN_PROGRAM} {probe_joins} \
         ORDER BY m.member_id FOR UPDATE OF b SKIP LOCKED"
    )
});

/// [`lock_at`] for the calls of a group, in one statement, with what each call's earn reads
/// besides (whether its key has a record, for a purchase the entry of its order, the
/// customer's birth month). A member whose balances row another transaction holds is
/// skipped (`SKIP LOCKED`), so a group never waits for a lock: one member's long change
/// cannot hold up every earn of a group. A member skipped or missing has no row; a MERGED
/// member is returned as it is (its call is not the group's to make).
pub(crate) async fn lock_group(
    conn: &mut PgConnection,
    calls: &[GroupCall<'_>],
    now: DateTime<Utc>,
) -> StoreResult<Vec<GroupMember>> {
    let members: Vec<Uuid> = calls.iter().map(|c| c.member_id).collect();
    let callers: Vec<&str> = calls.iter().map(|c| c.caller).collect();
    let request_ids: Vec<&str> = calls.iter().map(|c| c.request_id).collect();
    let order_ids: Vec<Option<&str>> = calls.iter().map(|c| c.order_id).collect();
    let rows = sqlx::query(AssertSqlSafe(LOCK_GROUP.as_str()))
        .bind(members)
        .bind(callers)
        .bind(request_ids)
        .bind(order_ids)
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| {
            let n: i64 = row.try_get("n")?;
            Ok(GroupMember {
                call: usize::try_from(n - 1)
                    .map_err(|_| super::StoreError::Corrupt("a group's ordinal".to_owned()))?,
                locked: locked_from_row(row, Access::LockAt(now))?,
                key_used: row.try_get("key_used")?,
                order_earned: row.try_get("order_earned")?,
                birth_month: birthdays::month_from(row.try_get("birth_month")?),
            })
        })
        .collect()
}

/// The columns and joins a locking read of member `m`, balances `b` and program `p` adds at
/// `now` (an SQL expression): the versions of the `balances` row locked (`b`, the newest) and
/// seen by the statement's snapshot (`seen`), which are equal when the lock did not wait for
/// a change of the member; whether lots are due ([`due_exists`]); the window sums.
fn due_probe(now: &str) -> (String, String) {
    let columns = format!(
        ", b.xmin::text AS locked_version, seen.xmin::text AS seen_version, {}, \
         w.window_points, w.window_spend",
        due_exists("m.member_id", now)
    );
    let joins = format!(
        "JOIN balances seen ON seen.member_id = m.member_id \
         CROSS JOIN LATERAL (SELECT {WINDOW_SUMS} FROM ledger_entries \
                             WHERE member_id = m.member_id AND {}) w",
        in_window("p.rules", now)
    );
    (columns, joins)
}

/// The select list saying whether the member `member` (an SQL expression) has pending lots
/// whose release time has passed at `now` (`release_due`) and lots with points whose expiry
/// time has passed (`expire_due`): the probe before a mutation (see
/// `workflow::ledger::settle_due`).
pub(crate) fn due_exists(member: &str, now: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM point_lots l \
                 WHERE l.member_id = {member} AND l.pending AND l.release_time <= {now}) \
           AS release_due, \
         EXISTS (SELECT 1 FROM point_lots l \
                 WHERE l.member_id = {member} AND l.remaining_points > 0 \
                   AND l.expire_time <= {now}) AS expire_due"
    )
}

/// Adds what only the FULL view shows: tier progress and the expiring-points summary.
pub async fn full_view(
    conn: &mut PgConnection,
    locked: Locked,
    now: DateTime<Utc>,
) -> StoreResult<Member> {
    let (points, spend) = window_qualifying(conn, &locked, now).await?;
    let Locked {
        mut member,
        program,
        ..
    } = locked;
    member.balances.qualifying = points;
    member.balances.spend_minor = spend;
    let rank = member.tier.rank;
    let tier_at = |r: i32| {
        usize::try_from(r)
            .ok()
            .and_then(|i| program.rules.tiers.get(i))
    };
    member.tier.next_tier_progress =
        tier_at(rank + 1).and_then(|t| TierProgress::towards(t, rank + 1, points, spend));
    member.tier.retention_progress =
        tier_at(rank).and_then(|t| TierProgress::towards(t, rank, points, spend));
    with_expiring(conn, member, now).await
}

async fn with_expiring(
    conn: &mut PgConnection,
    mut member: Member,
    now: DateTime<Utc>,
) -> StoreResult<Member> {
    // The lots as they stand now: points past their expiry have expired (remaining 0), even
    // before the expiry job writes it, so they count neither here nor as the next expiry.
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT \
           coalesce(sum(remaining_points) FILTER (WHERE expire_time < $2), 0)::bigint AS d30, \
           coalesce(sum(remaining_points) FILTER (WHERE expire_time < $3), 0)::bigint AS d60, \
           coalesce(sum(remaining_points) FILTER (WHERE expire_time < $4), 0)::bigint AS d90, \
           min(expire_time) AS next_time \
         FROM ({}) now_lots WHERE remaining_points > 0 AND expire_time IS NOT NULL",
        lots::lots_now("l.member_id = $1", "$5::timestamptz")
    )))
    .bind(member.member_id)
    .bind(now + Duration::days(30))
    .bind(now + Duration::days(60))
    .bind(now + Duration::days(90))
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    let next_time: Option<DateTime<Utc>> = row.try_get("next_time")?;
    let next = match next_time {
        Some(at) => {
            let points: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT coalesce(sum(remaining_points), 0)::bigint FROM ({}) now_lots \
                 WHERE remaining_points > 0 AND expire_time = $2",
                lots::lots_now("l.member_id = $1", "$3::timestamptz")
            )))
            .bind(member.member_id)
            .bind(at)
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
            Some((at, points))
        }
        None => None,
    };
    member.expiring = Some(Expiring {
        within_30: row.try_get("d30")?,
        within_60: row.try_get("d60")?,
        within_90: row.try_get("d90")?,
        next,
    });
    Ok(member)
}

/// The member's qualifying points and spend inside the program's rolling window ending at
/// `now`: the sum of the qualifying deltas of entries younger than the window.
pub(crate) async fn window_qualifying(
    conn: &mut PgConnection,
    locked: &Locked,
    now: DateTime<Utc>,
) -> StoreResult<(i64, i64)> {
    let (points, spend) = window_raw(conn, locked, now).await?;
    // Entries of a refund can stay in the window after their earn has left it.
    Ok((points.max(0), spend.max(0)))
}

/// The locked member's raw window sums at `now`: those read with its lock
/// ([`Locked::window`]) when they are still good, else asked of the ledger.
pub(crate) async fn window_raw(
    conn: &mut PgConnection,
    locked: &Locked,
    now: DateTime<Utc>,
) -> StoreResult<(i64, i64)> {
    if let Some(window) = locked.window.filter(|window| window.at == now) {
        return Ok((window.points, window.spend));
    }
    let sums = window_sums(conn, &[locked.member.member_id], &locked.program, now).await?;
    Ok(sums
        .get(&locked.member.member_id)
        .copied()
        .unwrap_or((0, 0)))
}

/// The raw sums of qualifying deltas inside the window of several members of `program`, in
/// one query (members without entries in the window are absent: their sums are 0). Callers
/// floor them at 0, as [`window_qualifying`] does.
pub(crate) async fn window_sums(
    conn: &mut PgConnection,
    member_ids: &[Uuid],
    program: &Program,
    now: DateTime<Utc>,
) -> StoreResult<std::collections::HashMap<Uuid, (i64, i64)>> {
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT member_id, {WINDOW_SUMS} FROM ledger_entries \
         WHERE member_id = ANY($1) AND {} GROUP BY member_id",
        in_window(
            "(SELECT rules FROM programs WHERE program_id = $2)",
            "$3::timestamptz"
        )
    )))
    .bind(member_ids)
    .bind(program.program_id)
    .bind(now)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, points, spend)| (id, (points, spend)))
        .collect())
}

/// The select list of a window's raw sums over `ledger_entries` rows: `window_points` and
/// `window_spend`. `sum(bigint)` is numeric; its cast back to bigint would fail every read of
/// the member if a window ever summed past i64. The balance limits (`domain::limits`) keep
/// each window near 10^14 points and 10^17 minor units, far inside, but a read must answer
/// whatever the history holds: the sums are clamped to bigint, and the checked additions of
/// `limits::balances_after` refuse a change from there.
pub(crate) const WINDOW_SUMS: &str = "LEAST(GREATEST(coalesce(sum(qualifying_delta), 0), -9223372036854775808), \
                   9223372036854775807)::bigint AS window_points, \
     LEAST(GREATEST(coalesce(sum(spend_delta_minor), 0), -9223372036854775808), \
                   9223372036854775807)::bigint AS window_spend";

/// The condition on a `ledger_entries` row of counting in the rolling qualifying window of
/// the program whose stored rules are `rules` ending at `now` (SQL expressions): created after
/// its start (`qualifying_window_days` before `now`, 365 when 0; in exact days, as every
/// instant of the service) and no later than `now`. Only entries that qualify for something
/// are read (the others add zero), through the partial index `ledger_entries_qualifying`, so
/// the cost follows the member's qualifying entries in the window, not all its entries. The
/// window is computed here alone, so that a member's locking read can sum it in its own
/// statement.
pub(crate) fn in_window(rules: &str, now: &str) -> String {
    format!(
        "create_time > {now} - make_interval(hours => 24 * coalesce(nullif( \
             ({rules} #>> '{{tier_policy,qualifying_window_days}}')::int, 0), 365)) \
         AND create_time <= {now} AND (qualifying_delta <> 0 OR spend_delta_minor <> 0)"
    )
}

/// A member's raw window sums at `at` (what [`window_sums`] answers), read after its lock and
/// before any entry since: [`window_raw`] uses them instead of asking again.
#[derive(Debug, Clone, Copy)]
pub struct WindowSums {
    pub at: DateTime<Utc>,
    pub points: i64,
    pub spend: i64,
}

/// Sets the member's qualifying balances to the rolling window ending at `now` (what the
/// contract's `qualifying_points` and `qualifying_spend` mean). The stored projection holds
/// the window as of the member's last entry, and entries leave the window as time passes.
pub async fn as_of(
    conn: &mut PgConnection,
    locked: &mut Locked,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let (points, spend) = window_qualifying(conn, locked, now).await?;
    locked.member.balances.qualifying = points;
    locked.member.balances.spend_minor = spend;
    Ok(())
}

/// Filters of ListMembers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberFilter {
    /// Program.
    pub program_id: Option<Uuid>,
    /// Customer.
    pub customer_id: Option<Uuid>,
    /// Status codes; empty = all.
    pub statuses: Vec<i16>,
    /// Tier codes; empty = all.
    pub tier_codes: Vec<String>,
    /// Enrolled at or after.
    pub from: Option<DateTime<Utc>>,
    /// Enrolled before.
    pub until: Option<DateTime<Utc>>,
}

/// A page of members by member id (enrolment order) after `after`, as they stand at `now`:
/// qualifying amounts in the rolling window ending then, due releases and expiries applied.
pub async fn list(
    conn: &mut PgConnection,
    filter: &MemberFilter,
    after: Option<Uuid>,
    limit: usize,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Member>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS}, due.* FROM members m JOIN balances b USING (member_id) \
         {} \
         WHERE ($1::uuid IS NULL OR m.program_id = $1) \
           AND ($2::uuid IS NULL OR m.customer_id = $2) \
           AND (cardinality($3::smallint[]) = 0 OR m.status = ANY($3)) \
           AND (cardinality($4::text[]) = 0 OR m.tier_code = ANY($4)) \
           AND ($5::timestamptz IS NULL OR m.enrol_time >= $5) \
           AND ($6::timestamptz IS NULL OR m.enrol_time < $6) \
           AND ($7::uuid IS NULL OR m.member_id > $7) \
         ORDER BY m.member_id LIMIT $8",
        due_join("$9::timestamptz")
    )))
    .bind(filter.program_id)
    .bind(filter.customer_id)
    .bind(&filter.statuses)
    .bind(&filter.tier_codes)
    .bind(filter.from)
    .bind(filter.until)
    .bind(after)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let mut programs_seen: Vec<Program> = Vec::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let program_id: Uuid = row.try_get("program_id")?;
        let program = match programs_seen.iter().find(|p| p.program_id == program_id) {
            Some(p) => p.clone(),
            None => {
                let p = programs::get(conn, program_id).await?;
                programs_seen.push(p.clone());
                p
            }
        };
        out.push(from_row(row, &program)?.with_due_applied(due_from(row)?));
    }
    for program in &programs_seen {
        let ids: Vec<Uuid> = out
            .iter()
            .filter(|m| m.program_id == program.program_id)
            .map(|m| m.member_id)
            .collect();
        let sums = window_sums(conn, &ids, program, now).await?;
        for member in out
            .iter_mut()
            .filter(|m| m.program_id == program.program_id)
        {
            let (points, spend) = sums.get(&member.member_id).copied().unwrap_or((0, 0));
            member.balances.qualifying = points.max(0);
            member.balances.spend_minor = spend.max(0);
        }
    }
    Ok(out)
}

/// Inserts the member `member_id` enrolled by `cmd` at `now` in the tier `base`, unless the
/// customer is a member of the program already; answers whether it was inserted.
pub(crate) async fn insert(
    conn: &mut PgConnection,
    member_id: Uuid,
    cmd: &EnrolCommand,
    base: &str,
    now: DateTime<Utc>,
) -> StoreResult<bool> {
    let inserted = sqlx::query(
        "INSERT INTO members (member_id, program_id, customer_id, status, enrol_channel, \
         enrol_time, tier_code, tier_achieve_time) VALUES ($1, $2, $3, 1, $4, $5, $6, $5) \
         ON CONFLICT (program_id, customer_id) DO NOTHING",
    )
    .bind(member_id)
    .bind(cmd.program_id)
    .bind(cmd.customer_id)
    .bind(&cmd.enrol_channel)
    .bind(now)
    .bind(base)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted != 0)
}

/// The zero balances of a member just inserted.
pub(crate) async fn insert_balances(
    conn: &mut PgConnection,
    member_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query("INSERT INTO balances (member_id, update_time) VALUES ($1, $2)")
        .bind(member_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The member of `customer_id` in the program (whatever its status), if any.
pub(crate) async fn find_by_customer(
    conn: &mut PgConnection,
    program_id: Uuid,
    customer_id: Uuid,
) -> StoreResult<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT member_id FROM members WHERE program_id = $1 AND customer_id = $2",
    )
    .bind(program_id)
    .bind(customer_id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// A tier some member of the program holds that is not among `codes`, if any.
pub(crate) async fn tier_held_outside(
    conn: &mut PgConnection,
    program_id: Uuid,
    codes: &[&str],
) -> StoreResult<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT tier_code FROM members WHERE program_id = $1 AND tier_code <> ALL($2) LIMIT 1",
    )
    .bind(program_id)
    .bind(codes)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Puts the member in the tier `tier_code` reached at `now`, next reviewed at `next_review`,
/// with no downgrade pending.
pub(crate) async fn set_tier(
    conn: &mut PgConnection,
    member_id: Uuid,
    tier_code: &str,
    now: DateTime<Utc>,
    next_review: Option<DateTime<Utc>>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE members SET tier_code = $2, tier_achieve_time = $3, next_review_time = $4, \
         pending_tier_code = NULL, pending_decide_time = NULL, pending_downgrade_time = NULL \
         WHERE member_id = $1",
    )
    .bind(member_id)
    .bind(tier_code)
    .bind(now)
    .bind(next_review)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Keeps the member's tier: no downgrade pending, next reviewed at `next_review`.
pub(crate) async fn cancel_downgrade(
    conn: &mut PgConnection,
    member_id: Uuid,
    next_review: Option<DateTime<Utc>>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE members SET pending_tier_code = NULL, pending_decide_time = NULL, \
         pending_downgrade_time = NULL, next_review_time = $2 WHERE member_id = $1",
    )
    .bind(member_id)
    .bind(next_review)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Schedules the member's downgrade to `tier_code`, decided at `now`, for `at`.
pub(crate) async fn schedule_downgrade(
    conn: &mut PgConnection,
    member_id: Uuid,
    tier_code: &str,
    now: DateTime<Utc>,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE members SET pending_tier_code = $2, pending_decide_time = $3, \
         pending_downgrade_time = $4, next_review_time = NULL WHERE member_id = $1",
    )
    .bind(member_id)
    .bind(tier_code)
    .bind(now)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Puts a reactivated member back in the base tier `base` at `now`, with no review due.
pub(crate) async fn restart_in_tier(
    conn: &mut PgConnection,
    member_id: Uuid,
    base: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE members SET tier_code = $2, tier_achieve_time = $3, next_review_time = NULL, \
         pending_tier_code = NULL, pending_decide_time = NULL, pending_downgrade_time = NULL \
         WHERE member_id = $1",
    )
    .bind(member_id)
    .bind(base)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets the member's status with its reason, and its update time to `now`.
pub(crate) async fn set_status(
    conn: &mut PgConnection,
    member_id: Uuid,
    status: MemberStatus,
    reason: &str,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query("UPDATE members SET status = $2, status_reason = $3 WHERE member_id = $1")
        .bind(member_id)
        .bind(status_code(status))
        .bind(reason)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE balances SET update_time = $2 WHERE member_id = $1")
        .bind(member_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
