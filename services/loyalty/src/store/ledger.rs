//! The ledger transactions: earn, redeem, adjust, reverse, release and expiry, each appending
//! one entry and updating the balances projection and the lots under the member's row lock.
//!
//! Lots are available or pending: a purchase earn in a program with a return window makes a
//! pending lot (its points in `pending_points`, not spendable) that a RELEASE entry makes
//! available once its `release_time` has passed.

use chrono::{DateTime, Duration, Utc};
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};
use uuid::Uuid;

use super::members::{self, Locked};
use super::{StoreError, StoreResult, decode, points_sum};
use crate::domain::Rejection;
use crate::domain::earning;
use crate::domain::event::Event;
use crate::domain::ledger::{
    AdjustCommand, EarnCommand, EarnSource, EntryDetails, EntryKind, LedgerEntry, LotBalance,
    RedeemCommand, Reversal, ReverseAmount, ReverseCommand, ReverseTarget, allocate_fifo,
    check_sufficient, clawback_split, pro_rata, refund_points,
};
use crate::domain::limits::{self, Deltas};
use crate::domain::member::{Balances, Member, MemberRef, TierChange};
use crate::domain::program::{ClawbackPolicy, ProgramState};

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

/// The result of a mutation: the entry, the member after it, a tier change if any, and the
/// events to publish.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The entry made.
    pub entry: LedgerEntry,
    /// The member after it.
    pub member: Member,
    /// The upgrade it caused.
    pub tier_change: Option<TierChange>,
    /// Events, in order.
    pub events: Vec<Event>,
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
    fn of(points: i64, debt: i64) -> Option<Self> {
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
    let id = Uuid::now_v7();
    let reversal = new.reversal.as_ref();
    // The entry carries the balances after it ($24–$30), which are the projection's new
    // values; the lot ($34–$36) is inserted only when there is one.
    let inserted = sqlx::query(
        "WITH balance AS ( \
             UPDATE balances SET available_points = $24, pending_points = $25, \
               qualifying_points = $26, qualifying_spend_minor = $27, \
               lifetime_earned_points = $28, lifetime_redeemed_points = $29, \
               lifetime_expired_points = $30, update_time = $17 \
             WHERE member_id = $2 \
         ), entry AS ( \
             INSERT INTO ledger_entries (ledger_entry_id, member_id, program_id, kind, points, \
             available_delta, pending_delta, qualifying_delta, spend_delta_minor, reason, \
             reason_code, caller, request_id, operator_id, external_reference, order_id, \
             create_time, expire_time, reversed_entry_id, requested_points, waived_points, \
             refund_amount_minor, details, after_available, after_pending, after_qualifying, \
             after_spend_minor, after_lifetime_earned, after_lifetime_redeemed, \
             after_lifetime_expired, clawback_policy, expired_points, release_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18, $19, $20, $21, $22, $23::jsonb, $24, $25, $26, $27, $28, $29, $30, $31, $32, \
             $33) \
             RETURNING ledger_entry_id \
         ) \
         INSERT INTO point_lots (point_lot_id, member_id, ledger_entry_id, original_points, \
           remaining_points, earn_time, expire_time, release_time, pending) \
         SELECT $34, $2, entry.ledger_entry_id, $35, $36, $17, $18, $33, $33 IS NOT NULL \
         FROM entry WHERE $35::bigint IS NOT NULL",
    )
    .bind(id)
    .bind(member_id)
    .bind(locked.member.program_id)
    .bind(new.kind.code())
    .bind(points)
    .bind(new.available_delta)
    .bind(new.pending_delta)
    .bind(new.qualifying_delta)
    .bind(new.spend_delta_minor)
    .bind(&new.reason)
    .bind(&new.reason_code)
    .bind(&new.origin.caller)
    .bind(&new.origin.request_id)
    .bind(&new.operator_id)
    .bind(&new.external_reference)
    .bind(&new.order_id)
    .bind(now)
    .bind(new.expire_time)
    .bind(reversal.map(|r| r.reversed_entry_id))
    .bind(reversal.map(|r| r.requested_points))
    .bind(reversal.map(|r| r.waived_points))
    .bind(reversal.and_then(|r| r.refund_amount_minor))
    .bind(details)
    .bind(after.available)
    .bind(after.pending)
    .bind(after.qualifying)
    .bind(after.spend_minor)
    .bind(after.lifetime_earned)
    .bind(after.lifetime_redeemed)
    .bind(after.lifetime_expired)
    .bind(reversal.and_then(|r| r.clawback).map(clawback_code))
    .bind(reversal.map(|r| r.expired_points))
    .bind(new.release_time)
    .bind(Uuid::now_v7())
    .bind(new.lot.map(|lot| lot.original))
    .bind(new.lot.map(|lot| lot.remaining))
    .execute(&mut *conn)
    .await;
    // A replay of a call that made an entry (`PgStore::idempotent` then returns the first
    // call's stored response), or a request id reused after its idempotency record was
    // cleaned up: the transaction is aborted now, so the error is all that can be said.
    if let Err(sqlx::Error::Database(db)) = &inserted
        && db.constraint() == Some("ledger_entries_request")
    {
        return Err(Rejection::RequestIdReused {
            request_id: new.origin.request_id.clone(),
        }
        .into());
    }
    inserted?;
    locked.member.balances = after;
    locked.member.update_time = now;
    let reversible = match new.kind {
        EntryKind::Earn => points,
        EntryKind::Redeem if new.details.is_none() => points.saturating_neg(),
        _ => 0,
    };
    Ok(LedgerEntry {
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
    })
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
async fn take(
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
async fn spend(
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

/// Locks the member and applies its due releases and expiries (so a mutation can spend
/// points released a moment ago and never spends an expired lot).
pub(crate) async fn lock_member(
    conn: &mut PgConnection,
    member: &MemberRef,
    now: DateTime<Utc>,
    events: &mut Vec<Event>,
) -> StoreResult<Locked> {
    let mut locked = members::lock_at(conn, member, now).await?;
    events.extend(settle_due(conn, &mut locked, now).await?);
    Ok(locked)
}

/// Applies the locked member's due releases, then its due expiries; returns their events.
/// Most mutations find neither due: one probe of both says so (read with the lock when it
/// could be, [`members::lock_at`], else asked here), and each update runs only when its
/// probe found a lot (a release never makes a lot newly expirable: it only lowers
/// `remaining_points`, so the expiry probe taken before it still holds). The statement
/// asked here also reads the member's window sums at `now` for the mutation's own entry
/// ([`members::WindowSums`]).
pub(crate) async fn settle_due(
    conn: &mut PgConnection,
    locked: &mut Locked,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Event>> {
    let members::DueProbe { release, expire } = match locked.due.take() {
        Some(due) if locked.window.is_some_and(|window| window.at == now) => due,
        _ => probe_due(conn, locked, now).await?,
    };
    let mut events = Vec::new();
    if release && let Some((entry, _lots)) = release_due(conn, locked, now).await? {
        events.push(Event::PointsReleased(locked.member.clone(), entry));
    }
    if expire && let Some((entry, _lots)) = expire_due(conn, locked, now).await? {
        events.push(Event::PointsExpired(locked.member.clone(), entry));
    }
    Ok(events)
}

/// Asks whether the locked member has lots due at `now`, and reads its window sums, after
/// its lock, so that this statement's snapshot holds every lot and entry committed under it.
async fn probe_due(
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

/// Releases the locked member's pending lots whose release time has passed, in one RELEASE
/// entry; returns it with the number of lots released. A lot is released once: its `pending`
/// flag is cleared under the member's lock. A negative balance (ALLOW_NEGATIVE_BALANCE) is
/// repaid from the released points first, earliest-earned lot first, as an earn's would be.
pub(crate) async fn release_due(
    conn: &mut PgConnection,
    locked: &mut Locked,
    now: DateTime<Utc>,
) -> StoreResult<Option<(LedgerEntry, i64)>> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "WITH due AS ( \
           UPDATE point_lots SET pending = false \
           WHERE member_id = $1 AND pending AND release_time <= $2 \
           RETURNING point_lot_id, remaining_points, earn_time) \
         SELECT point_lot_id, remaining_points FROM due WHERE remaining_points > 0 \
         ORDER BY earn_time, point_lot_id",
    )
    .bind(locked.member.member_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let points = points_sum(rows.iter().map(|(_, p)| *p))?;
    if points == 0 {
        return Ok(None);
    }
    let mut debt = (-locked.member.balances.available).max(0);
    for (lot, remaining) in &rows {
        if debt == 0 {
            break;
        }
        let cut = debt.min(*remaining);
        sqlx::query(
            "UPDATE point_lots SET remaining_points = remaining_points - $2 WHERE point_lot_id = $1",
        )
        .bind(lot)
        .bind(cut)
        .execute(&mut *conn)
        .await?;
        debt -= cut;
    }
    let origin = Origin {
        caller: SYSTEM_CALLER.to_owned(),
        request_id: String::new(),
    };
    let mut new = NewEntry::new(EntryKind::Release, origin, "Points released".to_owned());
    new.available_delta = points;
    new.pending_delta = -points;
    let lots = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    Ok(Some((append(conn, locked, new, now).await?, lots)))
}

/// Expires the locked member's lots whose expiry time has passed, in one EXPIRE entry;
/// returns it with the number of lots expired.
pub(crate) async fn expire_due(
    conn: &mut PgConnection,
    locked: &mut Locked,
    now: DateTime<Utc>,
) -> StoreResult<Option<(LedgerEntry, i64)>> {
    let rows = sqlx::query(
        "UPDATE point_lots SET expired_points = expired_points + remaining_points, \
         remaining_points = 0 \
         WHERE member_id = $1 AND remaining_points > 0 AND expire_time <= $2 \
         RETURNING expired_points, pending",
    )
    .bind(locked.member.member_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    // Each lot expires once and as a whole, so what it expired now is all it ever expired.
    // A lot can expire while still pending (an expiry period shorter than the return window).
    let mut expired = Vec::with_capacity(rows.len());
    for row in &rows {
        expired.push((
            row.try_get::<i64, _>("expired_points")?,
            row.try_get::<bool, _>("pending")?,
        ));
    }
    let available = points_sum(expired.iter().filter(|(_, p)| !p).map(|(n, _)| *n))?;
    let pending = points_sum(expired.iter().filter(|(_, p)| *p).map(|(n, _)| *n))?;
    let points = points_sum([available, pending])?;
    let origin = Origin {
        caller: SYSTEM_CALLER.to_owned(),
        request_id: String::new(),
    };
    let mut new = NewEntry::new(EntryKind::Expire, origin, "Points expired".to_owned());
    new.available_delta = -available;
    new.pending_delta = -pending;
    new.lifetime_expired_delta = points;
    let lots = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    Ok(Some((append(conn, locked, new, now).await?, lots)))
}

fn check_program_active(locked: &Locked) -> Result<(), Rejection> {
    match locked.program.state {
        ProgramState::Active => Ok(()),
        ProgramState::Archived => Err(Rejection::ProgramNotActive),
    }
}

/// EarnPoints.
#[tracing::instrument(skip_all)]
pub async fn earn(
    conn: &mut PgConnection,
    origin: Origin,
    cmd: EarnCommand,
    now: DateTime<Utc>,
) -> StoreResult<Applied> {
    let mut events = Vec::new();
    let mut locked = lock_member(conn, &cmd.member, now, &mut events).await?;
    locked.member.status.check_can_earn()?;
    check_program_active(&locked)?;
    let rules = &locked.program.rules;
    let policy_expiry = (rules.expire_after_days > 0)
        .then(|| now + Duration::days(i64::from(rules.expire_after_days)));
    let mut new = NewEntry::new(EntryKind::Earn, origin, cmd.context.reason.clone());
    new.reason_code = cmd.context.reason_code;
    new.operator_id = cmd.context.operator_id;
    let points = match cmd.source {
        EarnSource::Purchase(purchase) => {
            if purchase.currency != locked.program.currency {
                return Err(Rejection::InvalidField {
                    field: "purchase.amount.currency",
                    description: format!(
                        "the program earns in {}, not {}",
                        locked.program.currency, purchase.currency
                    ),
                }
                .into());
            }
            let earlier: Option<Uuid> = sqlx::query_scalar(
                "SELECT ledger_entry_id FROM ledger_entries \
                 WHERE program_id = $1 AND order_id = $2 AND kind = 1",
            )
            .bind(locked.member.program_id)
            .bind(&purchase.order_id)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(ledger_entry_id) = earlier {
                return Err(Rejection::OrderAlreadyEarned { ledger_entry_id }.into());
            }
            let birth_month = super::birthdays::month(conn, locked.member.customer_id).await?;
            // The birthday month is judged in the program's time zone (asked of the database
            // only when a birthday bonus could apply).
            let purchase_month = match birth_month {
                Some(_) if locked.program.rules.earning.birthday_multiplier_percent > 0 => {
                    super::programs::month_in_zone(
                        conn,
                        earning::purchase_instant(&purchase, now),
                        &locked.program.time_zone,
                    )
                    .await?
                }
                _ => 0,
            };
            let rules = &locked.program.rules;
            let calculation = earning::calculate(
                &rules.earning,
                &purchase,
                &locked.member.tier.code,
                birth_month,
                purchase_month,
                now,
            );
            earning::check_entry_limit(&calculation)?;
            if new.reason.is_empty() {
                new.reason = format!("Purchase, order {}", purchase.order_id);
            }
            new.qualifying_delta = calculation.qualifying_points;
            new.spend_delta_minor = purchase.amount_minor;
            new.order_id = Some(purchase.order_id.clone());
            new.expire_time = policy_expiry;
            // Inside the return window purchase points are pending (grants never are).
            new.release_time = (rules.return_window_days > 0)
                .then(|| now + Duration::days(i64::from(rules.return_window_days)));
            let points = calculation.total_points;
            new.details = Some(EntryDetails::PurchaseEarn {
                purchase,
                calculation,
            });
            points
        }
        EarnSource::Grant {
            points,
            qualifying,
            expire_time,
        } => {
            if qualifying {
                new.qualifying_delta = points;
            }
            new.expire_time = expire_time.or(policy_expiry);
            points
        }
    };
    new.lifetime_earned_delta = points;
    // A negative balance (ALLOW_NEGATIVE_BALANCE clawback) is repaid before points become
    // spendable: the lot holds only what is left after the debt (a pending lot repays it
    // when released).
    let debt = if new.release_time.is_some() {
        new.pending_delta = points;
        0
    } else {
        new.available_delta = points;
        (-locked.member.balances.available).max(0)
    };
    new.lot = NewLot::of(points, debt);
    let entry = append(conn, &mut locked, new, now).await?;
    settle_with_upgrade(conn, locked, entry, Event::PointsEarned, events, now).await
}

/// RedeemPoints.
#[tracing::instrument(skip_all)]
pub async fn redeem(
    conn: &mut PgConnection,
    origin: Origin,
    cmd: RedeemCommand,
    now: DateTime<Utc>,
) -> StoreResult<Applied> {
    let mut events = Vec::new();
    let mut locked = lock_member(conn, &cmd.member, now, &mut events).await?;
    locked.member.status.check_can_spend()?;
    check_program_active(&locked)?;
    check_sufficient(locked.member.balances.available, cmd.points)?;
    let reason = if cmd.context.reason.is_empty() {
        "Points redeemed".to_owned()
    } else {
        cmd.context.reason
    };
    let mut new = NewEntry::new(EntryKind::Redeem, origin, reason);
    new.reason_code = cmd.context.reason_code;
    new.operator_id = cmd.context.operator_id;
    new.external_reference = cmd.external_reference;
    new.available_delta = -cmd.points;
    new.lifetime_redeemed_delta = cmd.points;
    let entry = append(conn, &mut locked, new, now).await?;
    spend(
        conn,
        entry.member_id,
        entry.ledger_entry_id,
        cmd.points,
        None,
    )
    .await?;
    events.push(Event::PointsRedeemed(locked.member.clone(), entry.clone()));
    Ok(Applied {
        entry,
        member: locked.member,
        tier_change: None,
        events,
    })
}

/// AdjustPoints.
#[tracing::instrument(skip_all)]
pub async fn adjust(
    conn: &mut PgConnection,
    origin: Origin,
    cmd: AdjustCommand,
    now: DateTime<Utc>,
) -> StoreResult<Applied> {
    let mut events = Vec::new();
    let mut locked = lock_member(conn, &cmd.member, now, &mut events).await?;
    locked.member.status.check_can_earn()?;
    if cmd.points < 0 {
        check_sufficient(locked.member.balances.available, -cmd.points)?;
    }
    let rules = &locked.program.rules;
    let mut new = NewEntry::new(EntryKind::Adjust, origin, cmd.context.reason);
    new.reason_code = cmd.context.reason_code;
    new.operator_id = cmd.context.operator_id;
    new.available_delta = cmd.points;
    if cmd.points > 0 {
        new.lifetime_earned_delta = cmd.points;
        new.expire_time = (rules.expire_after_days > 0)
            .then(|| now + Duration::days(i64::from(rules.expire_after_days)));
    }
    // A decrease never takes qualifying points below zero.
    new.qualifying_delta = cmd
        .qualifying_points
        .max(-locked.member.balances.qualifying);
    let debt = (-locked.member.balances.available).max(0);
    new.lot = NewLot::of(cmd.points, debt);
    let entry = append(conn, &mut locked, new, now).await?;
    if cmd.points < 0 {
        spend(
            conn,
            entry.member_id,
            entry.ledger_entry_id,
            -cmd.points,
            None,
        )
        .await?;
    }
    settle_with_upgrade(conn, locked, entry, Event::PointsAdjusted, events, now).await
}

/// The end of a crediting mutation: upgrade the tier if the new points qualify, then record
/// the entry's event (`event`) and any `TierChanged`, in that order.
async fn settle_with_upgrade(
    conn: &mut PgConnection,
    mut locked: Locked,
    entry: LedgerEntry,
    event: fn(Member, LedgerEntry) -> Event,
    mut events: Vec<Event>,
    now: DateTime<Utc>,
) -> StoreResult<Applied> {
    let tier_change =
        members::upgrade_if_qualified(conn, &mut locked, now, Some(entry.ledger_entry_id)).await?;
    events.push(event(locked.member.clone(), entry.clone()));
    if let Some(change) = &tier_change {
        events.push(Event::TierChanged(locked.member.clone(), change.clone()));
    }
    Ok(Applied {
        entry,
        member: locked.member,
        tier_change,
        events,
    })
}

/// What earlier reversals took from one entry.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reversed {
    requested: i64,
    qualifying: i64,
    spend_minor: i64,
    refund_minor: i64,
}

pub(crate) async fn reversed_so_far(
    conn: &mut PgConnection,
    entry_id: Uuid,
) -> StoreResult<Reversed> {
    let row = sqlx::query(
        "SELECT coalesce(sum(requested_points), 0)::bigint AS requested, \
                coalesce(sum(-qualifying_delta), 0)::bigint AS qualifying, \
                coalesce(sum(-spend_delta_minor), 0)::bigint AS spend, \
                coalesce(sum(refund_amount_minor), 0)::bigint AS refund \
         FROM ledger_entries WHERE reversed_entry_id = $1",
    )
    .bind(entry_id)
    .fetch_one(conn)
    .await?;
    Ok(Reversed {
        requested: row.try_get("requested")?,
        qualifying: row.try_get("qualifying")?,
        spend_minor: row.try_get("spend")?,
        refund_minor: row.try_get("refund")?,
    })
}

async fn resolve_target(
    conn: &mut PgConnection,
    caller: &str,
    target: &ReverseTarget,
) -> StoreResult<Uuid> {
    let found: Option<Uuid> = match target {
        ReverseTarget::Entry(id) => {
            sqlx::query_scalar("SELECT member_id FROM ledger_entries WHERE ledger_entry_id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
        }
        ReverseTarget::OriginalRequest(request_id) => {
            sqlx::query_scalar(
                "SELECT member_id FROM ledger_entries WHERE caller = $1 AND request_id = $2",
            )
            .bind(caller)
            .bind(request_id)
            .fetch_optional(&mut *conn)
            .await?
        }
        ReverseTarget::Order {
            program_id,
            order_id,
        } => {
            sqlx::query_scalar(
                "SELECT member_id FROM ledger_entries \
                 WHERE program_id = $1 AND order_id = $2 AND kind = 1",
            )
            .bind(program_id)
            .bind(order_id)
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    found.ok_or_else(|| {
        let id = match target {
            ReverseTarget::Entry(id) => id.to_string(),
            ReverseTarget::OriginalRequest(r) => r.clone(),
            ReverseTarget::Order { order_id, .. } => order_id.clone(),
        };
        Rejection::not_found("ledger entry", id).into()
    })
}

pub(crate) async fn target_entry(
    conn: &mut PgConnection,
    caller: &str,
    target: &ReverseTarget,
) -> StoreResult<LedgerEntry> {
    let condition = match target {
        ReverseTarget::Entry(_) => "e.ledger_entry_id = $1::uuid",
        ReverseTarget::OriginalRequest(_) => "e.caller = $2 AND e.request_id = $1::text",
        ReverseTarget::Order { .. } => {
            "e.program_id = $2::uuid AND e.order_id = $1::text AND e.kind = 1"
        }
    };
    let query = format!(
        "SELECT {ENTRY_COLUMNS} FROM ledger_entries e JOIN programs p USING (program_id) JOIN members m USING (member_id) WHERE {condition}"
    );
    let row = match target {
        ReverseTarget::Entry(id) => {
            sqlx::query(AssertSqlSafe(query.clone()))
                .bind(id)
                .fetch_one(&mut *conn)
                .await?
        }
        ReverseTarget::OriginalRequest(r) => {
            sqlx::query(AssertSqlSafe(query.clone()))
                .bind(r)
                .bind(caller)
                .fetch_one(&mut *conn)
                .await?
        }
        ReverseTarget::Order {
            program_id,
            order_id,
        } => {
            sqlx::query(AssertSqlSafe(query.clone()))
                .bind(order_id)
                .bind(program_id)
                .fetch_one(&mut *conn)
                .await?
        }
    };
    entry_from_row(&row)
}

/// ReversePoints.
#[tracing::instrument(skip_all)]
pub async fn reverse(
    conn: &mut PgConnection,
    origin: Origin,
    cmd: ReverseCommand,
    now: DateTime<Utc>,
) -> StoreResult<Applied> {
    let member_id = resolve_target(conn, &origin.caller, &cmd.target).await?;
    let mut events = Vec::new();
    // The member's lock comes first, so the "reversed so far" read below is current.
    let mut locked = lock_member(conn, &MemberRef::Id(member_id), now, &mut events).await?;
    if matches!(
        locked.member.status,
        crate::domain::member::MemberStatus::Closed
    ) {
        return Err(Rejection::MemberNotActive { status: "CLOSED" }.into());
    }
    let target = target_entry(conn, &origin.caller, &cmd.target).await?;
    let prior = reversed_so_far(conn, target.ledger_entry_id).await?;
    let entry = match (target.kind, &target.details) {
        (EntryKind::Earn, _) => {
            reverse_earn(conn, &mut locked, origin, &cmd, &target, prior, now).await?
        }
        (EntryKind::Redeem, None) => {
            reverse_redeem(conn, &mut locked, origin, &cmd, &target, prior, now).await?
        }
        (kind, _) => {
            return Err(Rejection::NotReversible { kind: kind.name() }.into());
        }
    };
    events.push(Event::PointsReversed(locked.member.clone(), entry.clone()));
    Ok(Applied {
        entry,
        member: locked.member,
        tier_change: None,
        events,
    })
}

async fn reverse_earn(
    conn: &mut PgConnection,
    locked: &mut Locked,
    origin: Origin,
    cmd: &ReverseCommand,
    target: &LedgerEntry,
    prior: Reversed,
    now: DateTime<Utc>,
) -> StoreResult<LedgerEntry> {
    let reversible = target.points().saturating_sub(prior.requested);
    let purchase = match &target.details {
        Some(EntryDetails::PurchaseEarn { purchase, .. }) => Some(purchase),
        _ => None,
    };
    let exceeds = |field| Rejection::ReversalExceedsRemaining {
        field,
        reversible_points: reversible,
        refundable_amount_minor: purchase
            .map(|p| p.amount_minor.saturating_sub(prior.refund_minor)),
    };
    let (requested, refund) = match &cmd.amount {
        ReverseAmount::AllRemaining => (reversible, None),
        ReverseAmount::Points(points) => (*points, None),
        ReverseAmount::Refund {
            amount_minor,
            currency,
        } => {
            let Some(purchase) = purchase else {
                return Err(Rejection::InvalidField {
                    field: "refund_amount",
                    description: "refund_amount applies only to purchase earns".into(),
                }
                .into());
            };
            if *currency != locked.program.currency {
                return Err(Rejection::InvalidField {
                    field: "refund_amount.currency",
                    description: format!("the program currency is {}", locked.program.currency),
                }
                .into());
            }
            if *amount_minor > purchase.amount_minor.saturating_sub(prior.refund_minor) {
                return Err(exceeds("refund_amount").into());
            }
            let points = refund_points(
                target.points(),
                purchase.amount_minor,
                prior.refund_minor,
                prior.requested,
                *amount_minor,
            );
            (points, Some(*amount_minor))
        }
    };
    if requested > reversible || (requested <= 0 && refund.is_none()) {
        return Err(exceeds("points").into());
    }
    // The earn's own lot, if it is still the member's (a merge moves lots, an unmerge moves
    // them back). A reversed redemption may have restored its points into a second lot of the
    // same earn on another member, which an unmerge can bring together: the fuller one counts.
    let own_lot: Option<(Uuid, i64, bool)> = sqlx::query_as(
        "SELECT point_lot_id, remaining_points, pending FROM point_lots \
         WHERE ledger_entry_id = $1 AND member_id = $2 \
         ORDER BY remaining_points DESC, point_lot_id LIMIT 1",
    )
    .bind(target.ledger_entry_id)
    .bind(locked.member.member_id)
    .fetch_optional(&mut *conn)
    .await?;
    let own_pending = own_lot.is_some_and(|(_, _, pending)| pending);
    let policy = locked.program.rules.clawback;
    let available = locked.member.balances.available;
    let (own, others, negative, waived) = clawback_split(
        policy,
        requested,
        own_lot.map(|(_, r, _)| r).unwrap_or(0),
        own_pending,
        available,
    );
    let last = requested == reversible;
    // Shares of the earn in i128 (`pro_rata`): points × points or minor units × points
    // overflow i64 for the largest earns.
    let qualifying = if last {
        target.qualifying_delta.saturating_sub(prior.qualifying)
    } else {
        pro_rata(target.qualifying_delta, requested, target.points())
    };
    let spend_back = match (refund, purchase) {
        (Some(amount), _) => amount,
        (None, Some(p)) if last => p.amount_minor.saturating_sub(prior.spend_minor),
        (None, Some(p)) => pro_rata(p.amount_minor, requested, target.points()),
        _ => 0,
    };
    // Each part is at most `requested`, itself at most what the earn credited.
    let taken = own.saturating_add(others).saturating_add(negative);
    let reason = if cmd.context.reason.is_empty() {
        match purchase {
            Some(p) => format!("Refund, order {}", p.order_id),
            None => "Points reversed".to_owned(),
        }
    } else {
        cmd.context.reason.clone()
    };
    let mut new = NewEntry::new(EntryKind::Reverse, origin, reason);
    new.reason_code = cmd.context.reason_code.clone();
    new.operator_id = cmd.context.operator_id.clone();
    new.order_id = purchase.map(|p| p.order_id.clone());
    if own_pending {
        new.pending_delta = -own;
        new.available_delta = -(others + negative);
    } else {
        new.available_delta = -taken;
    }
    new.lifetime_earned_delta = -taken;
    new.qualifying_delta = -qualifying.clamp(0, locked.member.balances.qualifying);
    new.spend_delta_minor = -spend_back.clamp(0, locked.member.balances.spend_minor);
    new.reversal = Some(Reversal {
        reversed_entry_id: target.ledger_entry_id,
        reversed_kind: EntryKind::Earn,
        requested_points: requested,
        waived_points: waived,
        expired_points: 0,
        refund_amount_minor: refund,
        clawback: Some(policy),
    });
    let entry = append(conn, locked, new, now).await?;
    if let (Some((lot, _, _)), true) = (own_lot, own > 0) {
        take(conn, entry.ledger_entry_id, &[(lot, own)]).await?;
    }
    if others > 0 {
        spend(
            conn,
            entry.member_id,
            entry.ledger_entry_id,
            others,
            own_lot.map(|(lot, _, _)| lot),
        )
        .await?;
    }
    Ok(entry)
}

pub(crate) async fn reverse_redeem(
    conn: &mut PgConnection,
    locked: &mut Locked,
    origin: Origin,
    cmd: &ReverseCommand,
    target: &LedgerEntry,
    prior: Reversed,
    now: DateTime<Utc>,
) -> StoreResult<LedgerEntry> {
    let reversible = target
        .points()
        .saturating_neg()
        .saturating_sub(prior.requested);
    let exceeds = |field| Rejection::ReversalExceedsRemaining {
        field,
        reversible_points: reversible,
        refundable_amount_minor: None,
    };
    let requested = match &cmd.amount {
        ReverseAmount::AllRemaining => reversible,
        ReverseAmount::Points(points) => *points,
        ReverseAmount::Refund { .. } => {
            return Err(Rejection::InvalidField {
                field: "refund_amount",
                description: "refund_amount applies only to purchase earns".into(),
            }
            .into());
        }
    };
    if requested > reversible || requested <= 0 {
        return Err(exceeds("points").into());
    }
    // Points go back to the lots they were spent from, latest-expiring first, less what
    // earlier reversals gave back; points of lots that expired meanwhile count as expired.
    let rows = sqlx::query(
        "SELECT s.point_lot_id, l.member_id, s.points - coalesce(( \
             SELECT sum(r.points) FROM lot_returns r JOIN ledger_entries e \
               ON e.ledger_entry_id = r.ledger_entry_id \
             WHERE r.point_lot_id = s.point_lot_id AND e.reversed_entry_id = s.ledger_entry_id \
           ), 0)::bigint AS returnable, \
           (l.expire_time IS NOT NULL AND l.expire_time <= $2) AS expired \
         FROM lot_spends s JOIN point_lots l USING (point_lot_id) \
         WHERE s.ledger_entry_id = $1 \
         ORDER BY l.expire_time DESC NULLS FIRST, l.earn_time DESC",
    )
    .bind(target.ledger_entry_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let mut left = requested;
    let mut returns = Vec::new();
    let mut expired = 0_i64;
    for row in &rows {
        let returnable: i64 = row.try_get("returnable")?;
        let give = returnable.min(left);
        if give <= 0 {
            continue;
        }
        left -= give;
        returns.push(LotReturn {
            spent_lot: row.try_get("point_lot_id")?,
            holder: row.try_get("member_id")?,
            points: give,
            expired: row.try_get("expired")?,
        });
        if row.try_get::<bool, _>("expired")? {
            expired += give;
        }
    }
    let returned = requested - left - expired;
    let reason = if cmd.context.reason.is_empty() {
        "Points returned".to_owned()
    } else {
        cmd.context.reason.clone()
    };
    let mut new = NewEntry::new(EntryKind::Reverse, origin, reason);
    new.reason_code = cmd.context.reason_code.clone();
    new.operator_id = cmd.context.operator_id.clone();
    new.available_delta = returned;
    new.lifetime_redeemed_delta = -(requested - left);
    new.lifetime_expired_delta = expired;
    new.reversal = Some(Reversal {
        reversed_entry_id: target.ledger_entry_id,
        reversed_kind: EntryKind::Redeem,
        requested_points: requested,
        waived_points: 0,
        expired_points: expired,
        refund_amount_minor: None,
        clawback: None,
    });
    let entry = append(conn, locked, new, now).await?;
    for back in returns {
        // The balance the entry moved is this member's, so the points must land in one of
        // its lots: a lot spent before a merge (or moved away by an unmerge since) belongs to
        // another member, and points returned there would leave this balance without a lot.
        let restored = if back.holder == locked.member.member_id {
            None
        } else {
            Some(restored_lot(conn, locked.member.member_id, &back).await?)
        };
        let column = if back.expired {
            "expired_points"
        } else {
            "remaining_points"
        };
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE point_lots SET {column} = {column} + $2, \
             original_points = original_points + CASE WHEN $3 THEN $2 ELSE 0 END \
             WHERE point_lot_id = $1"
        )))
        .bind(restored.unwrap_or(back.spent_lot))
        .bind(back.points)
        .bind(restored.is_some())
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO lot_returns (ledger_entry_id, point_lot_id, points, restored_lot_id) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(entry.ledger_entry_id)
        .bind(back.spent_lot)
        .bind(back.points)
        .bind(restored)
        .execute(&mut *conn)
        .await?;
    }
    Ok(entry)
}

/// Points a reversal gives back from one lot a redemption spent.
struct LotReturn {
    spent_lot: Uuid,
    /// The member holding the spent lot now.
    holder: Uuid,
    points: i64,
    /// The spent lot has expired: the points count as expired, not available.
    expired: bool,
}

/// The lot of `member_id` that takes back points of `back.spent_lot`, a lot another member
/// holds: the one an earlier reversal restored the same spent lot into, else a new lot (empty,
/// the caller fills it) with the spent lot's earn entry, earn, release and expiry times, so its
/// points are spent and expire as the original's would have. When the holder was merged into
/// `member_id` by a merge not undone since, the new lot is recorded as one that merge moved:
/// the points were the holder's, and an unmerge gives them back with its other lots.
async fn restored_lot(
    conn: &mut PgConnection,
    member_id: Uuid,
    back: &LotReturn,
) -> StoreResult<Uuid> {
    let earlier: Option<Uuid> = sqlx::query_scalar(
        "SELECT r.restored_lot_id FROM lot_returns r \
         JOIN point_lots l ON l.point_lot_id = r.restored_lot_id \
         WHERE r.point_lot_id = $1 AND l.member_id = $2 \
         ORDER BY r.restored_lot_id LIMIT 1",
    )
    .bind(back.spent_lot)
    .bind(member_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(lot) = earlier {
        return Ok(lot);
    }
    let lot = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO point_lots (point_lot_id, member_id, ledger_entry_id, original_points, \
           remaining_points, earn_time, expire_time, release_time, pending) \
         SELECT $1, $2, ledger_entry_id, 0, 0, earn_time, expire_time, release_time, false \
         FROM point_lots WHERE point_lot_id = $3",
    )
    .bind(lot)
    .bind(member_id)
    .bind(back.spent_lot)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO member_merge_lots (merge_id, point_lot_id) \
         SELECT mm.merge_id, $1 FROM member_merges mm \
         JOIN members s ON s.member_id = mm.source_member_id \
         WHERE mm.source_member_id = $2 AND mm.target_member_id = $3 \
           AND s.status = 4 AND s.merged_into_member_id = $3 \
           AND NOT EXISTS (SELECT 1 FROM customer_unmerges u WHERE u.merge_id = mm.merge_id) \
         ON CONFLICT DO NOTHING",
    )
    .bind(lot)
    .bind(back.holder)
    .bind(member_id)
    .execute(&mut *conn)
    .await?;
    Ok(lot)
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
    .fetch_optional(pool)
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
