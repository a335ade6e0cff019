//! The ledger's SQL: appending an entry (the entry, the balances projection and the entry's
//! lot in one statement, under the member's row lock the caller holds), taking points from
//! lots, the probe for due lots, and reading entries and statements. The use cases that decide
//! what to append are in `workflow::ledger` and `workflow::reversals`.
//!
//! Lots are available or pending: a purchase earn in a program with a return window makes a
//! pending lot (its points in `pending_points`, not spendable) that a RELEASE entry makes
//! available once its `release_time` has passed.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use custops_common::idempotency::{LAST_WRITE_FIRST_PARAMETER, LastWrite};
use custops_common::metrics::{self, Counter, KeyValue};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use uuid::Uuid;

use super::members::{self, Locked};
use super::{StoreError, StoreResult, decode, points_sum};
use crate::domain::Rejection;
use crate::domain::ledger::{
    EntryDetails, EntryKind, LedgerEntry, LotBalance, Reversal, allocate_fifo,
};
use crate::domain::limits::{self, Deltas};
use crate::domain::member::Balances;
use crate::domain::program::ClawbackPolicy;

/// Ledger entries written, by kind (`custops_common::metrics`).
static LEDGER_OPERATIONS: LazyLock<Counter<u64>> =
    LazyLock::new(|| metrics::LEDGER_OPERATIONS.counter());

/// The caller name on entries the service makes itself.
pub const SYSTEM_CALLER: &str = "loyalty";

/// Who made a mutation: the calling service and its request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Calling service.
    pub caller: String,
    /// Its request id.
    pub request_id: String,
}

/// An entry about to be appended.
#[derive(Debug, Clone)]
pub(crate) struct NewEntry {
    pub(crate) kind: EntryKind,
    pub(crate) available_delta: i64,
    pub(crate) pending_delta: i64,
    pub(crate) qualifying_delta: i64,
    pub(crate) spend_delta_minor: i64,
    pub(crate) lifetime_earned_delta: i64,
    pub(crate) lifetime_redeemed_delta: i64,
    pub(crate) lifetime_expired_delta: i64,
    pub(crate) reason: String,
    pub(crate) reason_code: String,
    pub(crate) origin: Origin,
    pub(crate) operator_id: String,
    pub(crate) external_reference: String,
    pub(crate) order_id: Option<String>,
    pub(crate) expire_time: Option<DateTime<Utc>>,
    pub(crate) release_time: Option<DateTime<Utc>>,
    pub(crate) details: Option<EntryDetails>,
    pub(crate) reversal: Option<Reversal>,
    /// The lot a crediting entry creates, written in the entry's statement.
    pub(crate) lot: Option<NewLot>,
}

/// A crediting entry's lot: its points, and what is left of them once a negative balance is
/// repaid. It expires and releases when the entry says, and is pending while it has a release
/// time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewLot {
    pub(crate) original: i64,
    pub(crate) remaining: i64,
}

impl NewLot {
    /// The lot of `points` credited to a member who owes `debt` (none when no points).
    pub(crate) fn of(points: i64, debt: i64) -> Option<Self> {
        (points > 0).then(|| Self {
            original: points,
            remaining: (points - debt).max(0),
        })
    }
}

impl NewEntry {
    pub(crate) fn new(kind: EntryKind, origin: Origin, reason: String) -> Self {
        Self {
            kind,
            available_delta: 0,
            pending_delta: 0,
            qualifying_delta: 0,
            spend_delta_minor: 0,
            lifetime_earned_delta: 0,
            lifetime_redeemed_delta: 0,
            lifetime_expired_delta: 0,
            reason,
            reason_code: String::new(),
            origin,
            operator_id: String::new(),
            external_reference: String::new(),
            order_id: None,
            expire_time: None,
            release_time: None,
            details: None,
            reversal: None,
            lot: None,
        }
    }
}

fn clawback_code(policy: ClawbackPolicy) -> i16 {
    match policy {
        ClawbackPolicy::PendingOnly => 1,
        ClawbackPolicy::WithinBalance => 2,
        ClawbackPolicy::AllowNegativeBalance => 3,
    }
}

/// Appends `new` for the locked member, moves its balances projection by the same deltas and
/// creates the entry's lot (`new.lot`), in one statement.
pub(crate) async fn append(
    conn: &mut PgConnection,
    locked: &mut Locked,
    new: NewEntry,
    now: DateTime<Utc>,
) -> StoreResult<LedgerEntry> {
    let (entry, write) = prepare_append(conn, locked, new, now).await?;
    write.run(conn).await?;
    Ok(entry)
}

/// [`append`] up to its write: every sum checked and the entry made, the locked member moved
/// on, and the statement that writes them returned unsent, for the caller to run
/// ([`EntryWrite::run`]) or to leave to the call's last statement
/// ([`EntryWrite::into_last_write`]). Reads only when an entry came since the member's lock
/// read its window sums.
pub(crate) async fn prepare_append(
    conn: &mut PgConnection,
    locked: &mut Locked,
    new: NewEntry,
    now: DateTime<Utc>,
) -> StoreResult<(LedgerEntry, EntryWrite)> {
    let before = locked.member.balances;
    // The qualifying amounts are those of the rolling window ending now, this entry included
    // (the contract's meaning, and what tier decisions use), not a running sum of deltas.
    // Read with the member's lock when nothing was appended since (`settle_due`); this
    // entry changes them.
    let (window_points, window_spend) = members::window_raw(conn, locked, now).await?;
    locked.window = None;
    // Every sum checked, and a caller's change past a balance limit refused, before anything
    // is written: a member's row never holds a value its reads cannot add up.
    let deltas = Deltas {
        available: new.available_delta,
        pending: new.pending_delta,
        qualifying: new.qualifying_delta,
        spend_minor: new.spend_delta_minor,
        lifetime_earned: new.lifetime_earned_delta,
        lifetime_redeemed: new.lifetime_redeemed_delta,
        lifetime_expired: new.lifetime_expired_delta,
    };
    let after = limits::balances_after(&before, &deltas, window_points, window_spend)?;
    limits::check_limits(new.kind, &before, &deltas, &after)?;
    let points =
        new.available_delta
            .checked_add(new.pending_delta)
            .ok_or(Rejection::BalanceLimit {
                balance: "points",
                limit: limits::MAX_BALANCE_POINTS,
            })?;
    let member_id = locked.member.member_id;
    let details = match &new.details {
        Some(d) => Some(serde_json::to_string(d).map_err(|e| StoreError::Corrupt(e.to_string()))?),
        None => None,
    };
    let row = EntryRow {
        id: Uuid::now_v7(),
        member_id,
        program_id: locked.member.program_id,
        kind: new.kind.code(),
        points,
        available_delta: new.available_delta,
        pending_delta: new.pending_delta,
        qualifying_delta: new.qualifying_delta,
        spend_delta_minor: new.spend_delta_minor,
        reason: new.reason.clone(),
        reason_code: new.reason_code.clone(),
        caller: new.origin.caller.clone(),
        request_id: new.origin.request_id.clone(),
        operator_id: new.operator_id.clone(),
        external_reference: new.external_reference.clone(),
        order_id: new.order_id.clone(),
        now,
        expire_time: new.expire_time,
        reversal: new.reversal.clone(),
        details,
        after,
        release_time: new.release_time,
        lot_id: Uuid::now_v7(),
        lot: new.lot,
    };
    let id = row.id;
    let write = EntryWrite {
        kind: new.kind,
        row: Box::new(row),
    };
    locked.member.balances = after;
    locked.member.update_time = now;
    let reversible = match new.kind {
        EntryKind::Earn => points,
        EntryKind::Redeem if new.details.is_none() => points.saturating_neg(),
        _ => 0,
    };
    let entry = LedgerEntry {
        ledger_entry_id: id,
        member_id,
        customer_id: locked.member.customer_id,
        program_id: locked.member.program_id,
        currency: locked.program.currency.clone(),
        kind: new.kind,
        available_delta: new.available_delta,
        pending_delta: new.pending_delta,
        qualifying_delta: new.qualifying_delta,
        spend_delta_minor: new.spend_delta_minor,
        reason: new.reason,
        reason_code: new.reason_code,
        caller: new.origin.caller,
        request_id: new.origin.request_id,
        operator_id: new.operator_id,
        external_reference: new.external_reference,
        order_id: new.order_id,
        create_time: now,
        expire_time: new.expire_time,
        release_time: new.release_time,
        balances_after: after,
        reversible_points: reversible,
        details: new.details,
        reversal: new.reversal,
    };
    Ok((entry, write))
}

/// The data-modifying steps that write an entry: the balances projection's new values, the
/// entry (which carries them, $24–$30) and its lot ($34–$36), inserted only when there is one.
/// Parameters from `$1`: [`EntryWrite::run`] runs them alone, [`EntryWrite::into_last_write`]
/// in the call's recording statement.
macro_rules! entry_steps {
    () => {
        concat!(
            "balance AS ( \
               UPDATE balances SET available_points = $24, pending_points = $25, \
                 qualifying_points = $26, qualifying_spend_minor = $27, \
                 lifetime_earned_points = $28, lifetime_redeemed_points = $29, \
                 lifetime_expired_points = $30, update_time = $17 \
               WHERE member_id = $2 \
             ), entry AS ( \
               INSERT INTO ledger_entries (",
            entry_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
               $17, $18, $19, $20, $21, $22, $23::jsonb, $24, $25, $26, $27, $28, $29, $30, $31, \
               $32, $33) \
               RETURNING ledger_entry_id \
             ), lot AS ( \
               INSERT INTO point_lots (point_lot_id, member_id, ledger_entry_id, original_points, \
                 remaining_points, earn_time, expire_time, release_time, pending) \
               SELECT $34, $2, entry.ledger_entry_id, $35, $36, $17, $18, $33, $33 IS NOT NULL \
               FROM entry WHERE $35::bigint IS NOT NULL \
             )"
        )
    };
}

/// The columns an entry's write fills, in the order of its parameters ([`EntryRow`]'s).
macro_rules! entry_columns {
    () => {
        "ledger_entry_id, member_id, program_id, kind, points, available_delta, pending_delta, \
         qualifying_delta, spend_delta_minor, reason, reason_code, caller, request_id, \
         operator_id, external_reference, order_id, create_time, expire_time, \
         reversed_entry_id, requested_points, waived_points, refund_amount_minor, details, \
         after_available, after_pending, after_qualifying, after_spend_minor, \
         after_lifetime_earned, after_lifetime_redeemed, after_lifetime_expired, \
         clawback_policy, expired_points, release_time"
    };
}

/// The steps of [`entry_steps`] as `WITH` items of the statement that records the call's key,
/// numbered after its parameters (once).
static ENTRY_STEPS_LAST: LazyLock<String> = LazyLock::new(|| {
    custops_common::db::shift_parameters(entry_steps!(), LAST_WRITE_FIRST_PARAMETER - 1)
});

/// The steps of [`entry_steps`] as a statement of their own.
const ENTRY_STATEMENT: &str = concat!("WITH ", entry_steps!(), " SELECT 1");

/// The values of an entry's write, in the order of its parameters.
#[derive(Debug)]
struct EntryRow {
    id: Uuid,
    member_id: Uuid,
    program_id: Uuid,
    kind: i16,
    points: i64,
    available_delta: i64,
    pending_delta: i64,
    qualifying_delta: i64,
    spend_delta_minor: i64,
    reason: String,
    reason_code: String,
    caller: String,
    request_id: String,
    operator_id: String,
    external_reference: String,
    order_id: Option<String>,
    now: DateTime<Utc>,
    expire_time: Option<DateTime<Utc>>,
    reversal: Option<Reversal>,
    details: Option<String>,
    after: Balances,
    release_time: Option<DateTime<Utc>>,
    lot_id: Uuid,
    lot: Option<NewLot>,
}

impl EntryRow {
    fn bind<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let reversal = self.reversal.as_ref();
        query
            .bind(self.id)
            .bind(self.member_id)
            .bind(self.program_id)
            .bind(self.kind)
            .bind(self.points)
            .bind(self.available_delta)
            .bind(self.pending_delta)
            .bind(self.qualifying_delta)
            .bind(self.spend_delta_minor)
            .bind(self.reason)
            .bind(self.reason_code)
            .bind(self.caller)
            .bind(self.request_id)
            .bind(self.operator_id)
            .bind(self.external_reference)
            .bind(self.order_id)
            .bind(self.now)
            .bind(self.expire_time)
            .bind(reversal.map(|r| r.reversed_entry_id))
            .bind(reversal.map(|r| r.requested_points))
            .bind(reversal.map(|r| r.waived_points))
            .bind(reversal.and_then(|r| r.refund_amount_minor))
            .bind(self.details)
            .bind(self.after.available)
            .bind(self.after.pending)
            .bind(self.after.qualifying)
            .bind(self.after.spend_minor)
            .bind(self.after.lifetime_earned)
            .bind(self.after.lifetime_redeemed)
            .bind(self.after.lifetime_expired)
            .bind(reversal.and_then(|r| r.clawback).map(clawback_code))
            .bind(reversal.map(|r| r.expired_points))
            .bind(self.release_time)
            .bind(self.lot_id)
            .bind(self.lot.map(|lot| lot.original))
            .bind(self.lot.map(|lot| lot.remaining))
    }
}

/// An entry's write, checked and not yet sent ([`prepare_append`]).
#[derive(Debug)]
pub(crate) struct EntryWrite {
    kind: EntryKind,
    row: Box<EntryRow>,
}

impl EntryWrite {
    /// Writes the entry, its projection and its lot now, in one statement.
    pub(crate) async fn run(self, conn: &mut PgConnection) -> StoreResult<()> {
        let request_id = self.row.request_id.clone();
        let inserted = self
            .row
            .bind(sqlx::query(ENTRY_STATEMENT))
            .execute(&mut *conn)
            .await;
        // A replay of a call that made an entry (`workflow::Context::once` then returns the
        // first call's stored response), or a request id reused after its idempotency record
        // was cleaned up: the transaction is aborted now, so the error is all that can be said.
        if let Err(error) = &inserted
            && reuses_a_request_id(error)
        {
            return Err(Rejection::RequestIdReused { request_id }.into());
        }
        inserted?;
        count(self.kind);
        Ok(())
    }

    /// The write left to the call's last statement, which records its request id and appends
    /// its events (`custops_common::idempotency::run`): a round trip less. Only when nothing
    /// after it reads what it writes. Counted now, like an entry whose transaction then fails
    /// to commit; `workflow::Context::once` answers its failure on `ledger_entries_request` as
    /// [`EntryWrite::run`] does.
    pub(crate) fn into_last_write(self) -> LastWrite {
        count(self.kind);
        let row = self.row;
        LastWrite::new(ENTRY_STEPS_LAST.as_str(), move |query| row.bind(query))
    }
}

/// The writes of several entries, of distinct members, in one statement: each as
/// [`EntryWrite`] would make it (its balances row, the entry, its lot), from arrays. A group
/// of earns (`workflow::earn_group`) leaves it to the statement that records the group's keys.
#[derive(Debug, Default)]
pub(crate) struct EntryWrites {
    rows: Vec<EntryRow>,
    kinds: Vec<EntryKind>,
}

impl EntryWrites {
    /// Adds `write`; its member must be none of the others'.
    pub(crate) fn push(&mut self, write: EntryWrite) {
        self.kinds.push(write.kind);
        self.rows.push(*write.row);
    }

    /// The writes left to the group's recording statement, counted now (as
    /// [`EntryWrite::into_last_write`]).
    pub(crate) fn into_last_write(self) -> LastWrite {
        for kind in &self.kinds {
            count(*kind);
        }
        let rows = self.rows;
        LastWrite::new(ENTRIES_STEPS_LAST.as_str(), move |query| {
            bind_rows(rows, query)
        })
    }
}

/// [`entry_steps`] for many entries: the values of each are the columns of one row of
/// `entries_in` ($1–$36 are arrays, in [`EntryRow`]'s order, named as the entry's columns
/// and then the lot's), so one statement updates every balances row, inserts every entry and
/// every lot.
const ENTRIES_STEPS: &str = concat!(
    "entries_in AS ( \
       SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int2[], $5::int8[], \
         $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::text[], $11::text[], $12::text[], \
         $13::text[], $14::text[], $15::text[], $16::text[], $17::timestamptz[], \
         $18::timestamptz[], $19::uuid[], $20::int8[], $21::int8[], $22::int8[], \
         $23::text[]::jsonb[], $24::int8[], $25::int8[], $26::int8[], $27::int8[], $28::int8[], \
         $29::int8[], $30::int8[], $31::int2[], $32::int8[], $33::timestamptz[], $34::uuid[], \
         $35::int8[], $36::int8[]) \
       AS i(",
    entry_columns!(),
    ", lot_id, lot_original, lot_remaining) \
     ), balances_moved AS ( \
       UPDATE balances b SET available_points = i.after_available, \
         pending_points = i.after_pending, qualifying_points = i.after_qualifying, \
         qualifying_spend_minor = i.after_spend_minor, \
         lifetime_earned_points = i.after_lifetime_earned, \
         lifetime_redeemed_points = i.after_lifetime_redeemed, \
         lifetime_expired_points = i.after_lifetime_expired, update_time = i.create_time \
       FROM entries_in i WHERE b.member_id = i.member_id \
     ), entries AS ( \
       INSERT INTO ledger_entries (",
    entry_columns!(),
    ") SELECT ",
    entry_columns!(),
    " FROM entries_in ORDER BY ledger_entry_id \
       RETURNING ledger_entry_id \
     ), lots AS ( \
       INSERT INTO point_lots (point_lot_id, member_id, ledger_entry_id, original_points, \
         remaining_points, earn_time, expire_time, release_time, pending) \
       SELECT i.lot_id, i.member_id, e.ledger_entry_id, i.lot_original, i.lot_remaining, \
         i.create_time, i.expire_time, i.release_time, i.release_time IS NOT NULL \
       FROM entries_in i JOIN entries e ON e.ledger_entry_id = i.ledger_entry_id \
       WHERE i.lot_original IS NOT NULL \
     )"
);

/// [`ENTRIES_STEPS`] numbered after the recording statement's parameters (once).
static ENTRIES_STEPS_LAST: LazyLock<String> = LazyLock::new(|| {
    custops_common::db::shift_parameters(ENTRIES_STEPS, LAST_WRITE_FIRST_PARAMETER - 1)
});

/// Binds `rows` as the arrays of [`ENTRIES_STEPS`], in [`EntryRow::bind`]'s order; the
/// strings are moved into their arrays, not copied.
fn bind_rows(
    mut rows: Vec<EntryRow>,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    // One column of the rows, as the array bound for it.
    fn col<T>(rows: &[EntryRow], value: impl Fn(&EntryRow) -> T) -> Vec<T> {
        rows.iter().map(value).collect()
    }
    fn take(rows: &mut [EntryRow], field: impl Fn(&mut EntryRow) -> &mut String) -> Vec<String> {
        rows.iter_mut().map(|r| std::mem::take(field(r))).collect()
    }
    let reasons = take(&mut rows, |r| &mut r.reason);
    let reason_codes = take(&mut rows, |r| &mut r.reason_code);
    let callers = take(&mut rows, |r| &mut r.caller);
    let request_ids = take(&mut rows, |r| &mut r.request_id);
    let operator_ids = take(&mut rows, |r| &mut r.operator_id);
    let external_references = take(&mut rows, |r| &mut r.external_reference);
    let order_ids: Vec<Option<String>> = rows.iter_mut().map(|r| r.order_id.take()).collect();
    let details: Vec<Option<String>> = rows.iter_mut().map(|r| r.details.take()).collect();
    query
        .bind(col(&rows, |r| r.id))
        .bind(col(&rows, |r| r.member_id))
        .bind(col(&rows, |r| r.program_id))
        .bind(col(&rows, |r| r.kind))
        .bind(col(&rows, |r| r.points))
        .bind(col(&rows, |r| r.available_delta))
        .bind(col(&rows, |r| r.pending_delta))
        .bind(col(&rows, |r| r.qualifying_delta))
        .bind(col(&rows, |r| r.spend_delta_minor))
        .bind(reasons)
        .bind(reason_codes)
        .bind(callers)
        .bind(request_ids)
        .bind(operator_ids)
        .bind(external_references)
        .bind(order_ids)
        .bind(col(&rows, |r| r.now))
        .bind(col(&rows, |r| r.expire_time))
        .bind(col(&rows, |r| {
            r.reversal.as_ref().map(|v| v.reversed_entry_id)
        }))
        .bind(col(&rows, |r| {
            r.reversal.as_ref().map(|v| v.requested_points)
        }))
        .bind(col(&rows, |r| r.reversal.as_ref().map(|v| v.waived_points)))
        .bind(col(&rows, |r| {
            r.reversal.as_ref().and_then(|v| v.refund_amount_minor)
        }))
        .bind(details)
        .bind(col(&rows, |r| r.after.available))
        .bind(col(&rows, |r| r.after.pending))
        .bind(col(&rows, |r| r.after.qualifying))
        .bind(col(&rows, |r| r.after.spend_minor))
        .bind(col(&rows, |r| r.after.lifetime_earned))
        .bind(col(&rows, |r| r.after.lifetime_redeemed))
        .bind(col(&rows, |r| r.after.lifetime_expired))
        .bind(col(&rows, |r| {
            r.reversal
                .as_ref()
                .and_then(|v| v.clawback)
                .map(clawback_code)
        }))
        .bind(col(&rows, |r| {
            r.reversal.as_ref().map(|v| v.expired_points)
        }))
        .bind(col(&rows, |r| r.release_time))
        .bind(col(&rows, |r| r.lot_id))
        .bind(col(&rows, |r| r.lot.map(|lot| lot.original)))
        .bind(col(&rows, |r| r.lot.map(|lot| lot.remaining)))
}

/// Whether `error` is the unique index of entries by request id: a replay running into its
/// first call's entry, or a request id reused after its key was pruned.
pub(crate) fn reuses_a_request_id(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.constraint() == Some("ledger_entries_request"))
}

/// Every entry passes here, so here it is counted (one transaction in many thousands that
/// appended an entry then failed to commit is counted too).
fn count(kind: EntryKind) {
    LEDGER_OPERATIONS.add(1, &[KeyValue::new("custops.ledger.kind", kind.name())]);
}

/// The member's available (not pending) lots with points left, in spending order, leaving
/// out `except`.
async fn spendable_lots(
    conn: &mut PgConnection,
    member_id: Uuid,
    except: Option<Uuid>,
) -> StoreResult<Vec<LotBalance>> {
    let rows = sqlx::query(
        "SELECT point_lot_id, remaining_points FROM point_lots \
         WHERE member_id = $1 AND remaining_points > 0 AND NOT pending \
           AND ($2::uuid IS NULL OR point_lot_id <> $2) \
         ORDER BY expire_time NULLS LAST, earn_time, point_lot_id",
    )
    .bind(member_id)
    .bind(except)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LotBalance {
                point_lot_id: r.try_get("point_lot_id")?,
                remaining: r.try_get("remaining_points")?,
            })
        })
        .collect()
}

/// Takes `allocation` from the lots for `entry_id` and records where the points came from.
pub(crate) async fn take(
    conn: &mut PgConnection,
    entry_id: Uuid,
    allocation: &[(Uuid, i64)],
) -> StoreResult<()> {
    for (lot, points) in allocation {
        sqlx::query(
            "UPDATE point_lots SET remaining_points = remaining_points - $2 WHERE point_lot_id = $1",
        )
        .bind(lot)
        .bind(points)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO lot_spends (ledger_entry_id, point_lot_id, points) VALUES ($1, $2, $3)",
        )
        .bind(entry_id)
        .bind(lot)
        .bind(points)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Spends `points` first-expiring first; the lots must hold them (they always equal the
/// available balance, which the caller checked), else the data is inconsistent.
pub(crate) async fn spend(
    conn: &mut PgConnection,
    member_id: Uuid,
    entry_id: Uuid,
    points: i64,
    except: Option<Uuid>,
) -> StoreResult<()> {
    let lots = spendable_lots(conn, member_id, except).await?;
    let allocation = allocate_fifo(&lots, points);
    let total = points_sum(allocation.iter().map(|(_, p)| *p))?;
    if total != points {
        return Err(StoreError::Corrupt(format!(
            "member {member_id}: lots hold {total} of {points} points to spend"
        )));
    }
    take(conn, entry_id, &allocation).await
}

/// Empties the member's pending lots for `entry_id` (a forfeit), recording what it took.
pub(crate) async fn take_pending_all(
    conn: &mut PgConnection,
    member_id: Uuid,
    entry_id: Uuid,
) -> StoreResult<()> {
    sqlx::query(
        "WITH taken AS ( \
           SELECT point_lot_id, remaining_points FROM point_lots \
           WHERE member_id = $1 AND pending AND remaining_points > 0), \
         emptied AS ( \
           UPDATE point_lots l SET remaining_points = 0 FROM taken \
           WHERE l.point_lot_id = taken.point_lot_id) \
         INSERT INTO lot_spends (ledger_entry_id, point_lot_id, points) \
         SELECT $2, point_lot_id, remaining_points FROM taken",
    )
    .bind(member_id)
    .bind(entry_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Spends `points` for a new spending entry, first-expiring lot first.
pub(crate) async fn spend_for(
    conn: &mut PgConnection,
    member_id: Uuid,
    entry_id: Uuid,
    points: i64,
) -> StoreResult<()> {
    spend(conn, member_id, entry_id, points, None).await
}

/// Asks whether the locked member has lots due at `now`, and reads its window sums, after
/// its lock, so that this statement's snapshot holds every lot and entry committed under it.
pub(crate) async fn probe_due(
    conn: &mut PgConnection,
    locked: &mut Locked,
    now: DateTime<Utc>,
) -> StoreResult<members::DueProbe> {
    let (release, expire, points, spend): (bool, bool, i64, i64) =
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {}, w.window_points, w.window_spend \
             FROM (SELECT {} FROM ledger_entries WHERE member_id = $1 AND {}) w",
            members::due_exists("$1", "$3::timestamptz"),
            members::WINDOW_SUMS,
            members::in_window(
                "(SELECT rules FROM programs WHERE program_id = $2)",
                "$3::timestamptz"
            )
        )))
        .bind(locked.member.member_id)
        .bind(locked.member.program_id)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
    locked.window = Some(members::WindowSums {
        at: now,
        points,
        spend,
    });
    Ok(members::DueProbe { release, expire })
}

/// The query of the EARN entry of order `order` in program `program` (SQL expressions), as a
/// scalar subquery can read it too (`members::lock_group`).
pub(crate) fn earn_of_order_sql(program: &str, order: &str) -> String {
    format!(
        "SELECT ledger_entry_id FROM ledger_entries \
         WHERE program_id = {program} AND order_id = {order} AND kind = 1"
    )
}

/// [`earn_of_order_sql`] over `$1` and `$2`, made once.
static EARN_OF_ORDER: LazyLock<String> = LazyLock::new(|| earn_of_order_sql("$1", "$2"));

/// The EARN entry of `order_id` in the program, when the order earned already.
pub(crate) async fn earn_of_order(
    conn: &mut PgConnection,
    program_id: Uuid,
    order_id: &str,
) -> StoreResult<Option<Uuid>> {
    Ok(sqlx::query_scalar(AssertSqlSafe(EARN_OF_ORDER.as_str()))
        .bind(program_id)
        .bind(order_id)
        .fetch_optional(&mut *conn)
        .await?)
}

/// Columns of an entry joined with its program (`p`) and member (`m`). The ledger is
/// append-only, so a merge entry keeps the other customer's id as written; once that customer
/// is erased the id is read as nil (shown empty), so no read names an erased customer.
pub(crate) const ENTRY_COLUMNS: &str = "e.ledger_entry_id, e.member_id, m.customer_id, \
    e.program_id, p.currency, e.kind, e.available_delta, e.pending_delta, e.qualifying_delta, \
    e.spend_delta_minor, e.reason, e.reason_code, e.caller, e.request_id, e.operator_id, \
    e.external_reference, e.order_id, e.create_time, e.expire_time, e.release_time, \
    e.reversed_entry_id, \
    e.requested_points, e.waived_points, e.refund_amount_minor, e.clawback_policy, \
    e.expired_points, \
    CASE WHEN e.details ? 'Merge' AND EXISTS (SELECT 1 FROM erased_customers x \
        WHERE x.customer_id::text = e.details -> 'Merge' ->> 'other_customer_id') \
    THEN jsonb_set(e.details, '{Merge,other_customer_id}', \
        to_jsonb('00000000-0000-0000-0000-000000000000'::text))::text \
    ELSE e.details::text END AS details, \
    e.after_available, e.after_pending, e.after_qualifying, e.after_spend_minor, \
    e.after_lifetime_earned, e.after_lifetime_redeemed, e.after_lifetime_expired, \
    (SELECT kind FROM ledger_entries t WHERE t.ledger_entry_id = e.reversed_entry_id) AS reversed_kind, \
    CASE WHEN e.kind = 1 OR (e.kind = 2 AND e.details IS NULL) THEN abs(e.points) - coalesce(( \
        SELECT sum(r.requested_points) FROM ledger_entries r WHERE r.reversed_entry_id = e.ledger_entry_id \
    ), 0) ELSE 0 END::bigint AS reversible_points";

fn clawback_from(code: i16) -> Option<ClawbackPolicy> {
    Some(match code {
        1 => ClawbackPolicy::PendingOnly,
        2 => ClawbackPolicy::WithinBalance,
        3 => ClawbackPolicy::AllowNegativeBalance,
        _ => return None,
    })
}

pub(crate) fn entry_from_row(row: &PgRow) -> StoreResult<LedgerEntry> {
    let details: Option<String> = row.try_get("details")?;
    let details = match details {
        Some(text) => {
            Some(serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        }
        None => None,
    };
    let reversed: Option<Uuid> = row.try_get("reversed_entry_id")?;
    let reversal = match reversed {
        Some(reversed_entry_id) => {
            let kind: Option<i16> = row.try_get("reversed_kind")?;
            let clawback: Option<i16> = row.try_get("clawback_policy")?;
            Some(Reversal {
                reversed_entry_id,
                reversed_kind: decode(kind.and_then(EntryKind::from_code), "entry kind")?,
                requested_points: row
                    .try_get::<Option<i64>, _>("requested_points")?
                    .unwrap_or(0),
                waived_points: row.try_get::<Option<i64>, _>("waived_points")?.unwrap_or(0),
                expired_points: row
                    .try_get::<Option<i64>, _>("expired_points")?
                    .unwrap_or(0),
                refund_amount_minor: row.try_get("refund_amount_minor")?,
                clawback: clawback.and_then(clawback_from),
            })
        }
        None => None,
    };
    Ok(LedgerEntry {
        ledger_entry_id: row.try_get("ledger_entry_id")?,
        member_id: row.try_get("member_id")?,
        customer_id: row
            .try_get::<Option<Uuid>, _>("customer_id")?
            .unwrap_or_default(),
        program_id: row.try_get("program_id")?,
        currency: row.try_get("currency")?,
        kind: decode(EntryKind::from_code(row.try_get("kind")?), "entry kind")?,
        available_delta: row.try_get("available_delta")?,
        pending_delta: row.try_get("pending_delta")?,
        qualifying_delta: row.try_get("qualifying_delta")?,
        spend_delta_minor: row.try_get("spend_delta_minor")?,
        reason: row.try_get("reason")?,
        reason_code: row.try_get("reason_code")?,
        caller: row.try_get("caller")?,
        request_id: row.try_get("request_id")?,
        operator_id: row.try_get("operator_id")?,
        external_reference: row.try_get("external_reference")?,
        order_id: row.try_get("order_id")?,
        create_time: row.try_get("create_time")?,
        expire_time: row.try_get("expire_time")?,
        release_time: row.try_get("release_time")?,
        balances_after: Balances {
            available: row.try_get("after_available")?,
            pending: row.try_get("after_pending")?,
            qualifying: row.try_get("after_qualifying")?,
            spend_minor: row.try_get("after_spend_minor")?,
            lifetime_earned: row.try_get("after_lifetime_earned")?,
            lifetime_redeemed: row.try_get("after_lifetime_redeemed")?,
            lifetime_expired: row.try_get("after_lifetime_expired")?,
        },
        reversible_points: row.try_get("reversible_points")?,
        details,
        reversal,
    })
}

/// One entry.
pub async fn get(pool: &PgPool, id: Uuid) -> StoreResult<LedgerEntry> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ENTRY_COLUMNS} FROM ledger_entries e JOIN programs p USING (program_id) \
         JOIN members m USING (member_id) WHERE e.ledger_entry_id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *custops_common::db::read(pool).await?)
    .await?
    .ok_or_else(|| Rejection::not_found("ledger entry", id))?;
    entry_from_row(&row)
}

/// Filters of a statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementFilter {
    /// Kinds; empty = all.
    pub kinds: Vec<EntryKind>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    /// About this order.
    pub order_id: Option<String>,
    /// Oldest first.
    pub oldest_first: bool,
}

/// A page of a member's statement after the entry `after`. Entries are ordered by id: UUIDv7
/// ids made under the member's row lock, so id order is the order the entries were applied
/// (and the order of their running balances).
pub async fn statement(
    executor: impl sqlx::PgExecutor<'_>,
    member_id: Uuid,
    filter: &StatementFilter,
    after: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<LedgerEntry>> {
    let (cmp, order) = if filter.oldest_first {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    let kinds: Vec<i16> = filter.kinds.iter().map(|k| k.code()).collect();
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ENTRY_COLUMNS} FROM ledger_entries e JOIN programs p USING (program_id) \
         JOIN members m USING (member_id) \
         WHERE e.member_id = $1 \
           AND (cardinality($2::smallint[]) = 0 OR e.kind = ANY($2)) \
           AND ($3::timestamptz IS NULL OR e.create_time >= $3) \
           AND ($4::timestamptz IS NULL OR e.create_time < $4) \
           AND ($5::text IS NULL OR e.order_id = $5 OR e.external_reference = $5) \
           AND ($6::uuid IS NULL OR e.ledger_entry_id {cmp} $6) \
         ORDER BY e.ledger_entry_id {order} LIMIT $7"
    )))
    .bind(member_id)
    .bind(&kinds)
    .bind(filter.from)
    .bind(filter.until)
    .bind(&filter.order_id)
    .bind(after)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(executor)
    .await?;
    rows.iter().map(entry_from_row).collect()
}
