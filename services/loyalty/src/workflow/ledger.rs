//! The ledger's use cases: EarnPoints, RedeemPoints and AdjustPoints (each once per request
//! id), the reads of entries and statements, CalculatePurchasePoints, and the settlement of a
//! member's due releases and expiries that every change applies first. Reversals are in
//! `reversals`.
//!
//! Every change of a member runs in one transaction: lock the member's `balances` row
//! (`FOR UPDATE`, `store::members::lock_at`), apply due releases and expiries, append the
//! entry (the projection and the lots move with it: `store::ledger::append`), then record the
//! idempotency key with the reply and append the outbox events in one statement
//! (`Context::once`). Locking the balances row first serialises all changes of one
//! member, so no update is lost or doubled and a spend sees the balance it is checked against.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use custops_common::idempotency::{LastWrite, RequestKey};
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use super::earn_group::{self, EarnCall};
use super::{Changed, Context, decode, tiers};
use crate::domain::earning::{self, Calculation, Purchase};
use crate::domain::event::Event;
use crate::domain::ledger::{
    AdjustCommand, EarnCommand, EarnSource, EntryDetails, EntryKind, LedgerEntry, RedeemCommand,
    check_sufficient,
};
use crate::domain::member::{Member, MemberRef, TierChange};
use crate::domain::program::ProgramState;
use crate::domain::{Keyed, Rejection};
use crate::events;
use crate::store::ledger::{
    self, EntryWrite, NewEntry, NewLot, Origin, SYSTEM_CALLER, StatementFilter, append,
    prepare_append, spend,
};
use crate::store::members::{self, GroupMember, Locked};
use crate::store::{StoreResult, birthdays, lots, points_sum, programs};

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

/// EarnPoints, once per request id: the earn at the service clock's now, its
/// events appended and `reply` of its outcome recorded with the key
/// (`Context::once`); a replay answers the first call's reply. An earn of a member named by
/// id is made together with the earns that wait beside it (`earn_group`), and answered as it
/// would be alone.
pub async fn earn_points<R, F>(
    ctx: &Context,
    key: &RequestKey,
    cmd: Keyed<EarnCommand>,
    reply: F,
) -> StoreResult<R>
where
    R: Message + Default,
    F: Fn(Applied) -> R + Send + Sync + 'static,
{
    let origin = Origin {
        caller: key.caller.clone(),
        request_id: cmd.request_id,
    };
    let encode = move |applied| reply(applied).encode_to_vec();
    let grouped = ctx
        .earn_groups()
        .zip(earn_group::grouped_member(&cmd.command));
    let bytes = match grouped {
        Some((groups, member_id)) => {
            groups
                .earn(EarnCall {
                    key: key.clone(),
                    member_id,
                    origin,
                    cmd: cmd.command,
                    encode: Arc::new(encode),
                })
                .await?
        }
        None => earn_alone(ctx, key, origin, cmd.command, encode).await?,
    };
    decode(&bytes)
}

/// EarnPoints in a transaction of its own (`Context::once`), answering the encoding of its
/// reply: a call no group takes, or one that leaves its group.
pub(crate) async fn earn_alone(
    ctx: &Context,
    key: &RequestKey,
    origin: Origin,
    cmd: EarnCommand,
    encode: impl FnOnce(Applied) -> Vec<u8> + Send + 'static,
) -> StoreResult<Vec<u8>> {
    ctx.once_encoded(
        key,
        move |conn, now| {
            Box::pin(async move {
                let (out, last_write) = earn(conn, origin, cmd, now).await?;
                let events = events::outbox_events(&out.events);
                Ok(Changed::from((out, events)).with_last_write(last_write))
            })
        },
        encode,
    )
    .await
}

/// RedeemPoints, once per request id: the spend at the service clock's now, its
/// events appended and `reply` of its outcome recorded with the key
/// (`Context::once`); a replay answers the first call's reply.
pub async fn redeem_points<R, F>(
    ctx: &Context,
    key: &RequestKey,
    cmd: Keyed<RedeemCommand>,
    reply: F,
) -> StoreResult<R>
where
    R: Message + Default,
    F: FnOnce(Applied) -> R + Send + 'static,
{
    let origin = Origin {
        caller: key.caller.clone(),
        request_id: cmd.request_id,
    };
    ctx.once(
        key,
        move |conn, now| {
            Box::pin(async move {
                let out = redeem(conn, origin, cmd.command, now).await?;
                let events = events::outbox_events(&out.events);
                Ok((out, events).into())
            })
        },
        reply,
    )
    .await
}

/// AdjustPoints, once per request id: the adjustment at the service clock's now, its
/// events appended and `reply` of its outcome recorded with the key
/// (`Context::once`); a replay answers the first call's reply.
pub async fn adjust_points<R, F>(
    ctx: &Context,
    key: &RequestKey,
    cmd: Keyed<AdjustCommand>,
    reply: F,
) -> StoreResult<R>
where
    R: Message + Default,
    F: FnOnce(Applied) -> R + Send + 'static,
{
    let origin = Origin {
        caller: key.caller.clone(),
        request_id: cmd.request_id,
    };
    ctx.once(
        key,
        move |conn, now| {
            Box::pin(async move {
                let out = adjust(conn, origin, cmd.command, now).await?;
                let events = events::outbox_events(&out.events);
                Ok((out, events).into())
            })
        },
        reply,
    )
    .await
}

/// GetLedgerEntry.
pub async fn get(ctx: &Context, id: Uuid) -> StoreResult<LedgerEntry> {
    ledger::get(&ctx.pool, id).await
}

/// ListLedgerEntries: a page of the statement of `member` (a merged member resolves to its
/// survivor when named by customer) after the entry `after`, entries as written.
pub async fn statement(
    ctx: &Context,
    member: &MemberRef,
    filter: &StatementFilter,
    after: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<LedgerEntry>> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let member_id = members::load(&mut conn, member, false)
        .await?
        .member
        .member_id;
    drop(conn);
    ledger::statement(
        &mut *custops_common::db::read(&ctx.pool).await?,
        member_id,
        filter,
        after,
        limit,
    )
    .await
}

/// What CalculatePurchasePoints answers.
#[derive(Debug, Clone)]
pub struct PurchasePoints {
    /// The calculation, as an earn would make it now.
    pub calculation: Calculation,
    /// The program's currency.
    pub currency: String,
    /// Whether an earn would make the points pending (the program has a return window).
    pub pending: bool,
}

/// CalculatePurchasePoints: what `purchase` would earn in the program now, for the tier and
/// birth month of `customer_id`'s membership when there is one (else the base tier), without
/// writing anything.
pub async fn calculate(
    ctx: &Context,
    program_id: Uuid,
    customer_id: Option<Uuid>,
    purchase: Purchase,
) -> StoreResult<PurchasePoints> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let program = programs::get(&mut conn, program_id).await?;
    if purchase.currency != program.currency {
        return Err(Rejection::InvalidField {
            field: "purchase.amount.currency",
            description: format!("the program earns in {}", program.currency),
        }
        .into());
    }
    let mut tier = program.rules.base_tier_code().to_owned();
    let mut birth_month = None;
    if let Some(customer_id) = customer_id {
        let member = MemberRef::Customer {
            program_id,
            customer_id,
        };
        if let Ok(locked) = members::load(&mut conn, &member, false).await {
            tier = locked.member.tier.code;
            birth_month = birthdays::month(&mut conn, locked.member.customer_id).await?;
        }
    }
    let now = ctx.now();
    let when = earning::purchase_instant(&purchase, now);
    let month = programs::month_in_zone(&mut conn, when, &program.time_zone).await?;
    let calculation = earning::calculate(
        &program.rules.earning,
        &purchase,
        &tier,
        birth_month,
        month,
        now,
    );
    earning::check_entry_limit(&calculation)?;
    Ok(PurchasePoints {
        calculation,
        currency: program.currency,
        pending: program.rules.return_window_days > 0,
    })
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
/// could be, [`members::lock_at`], else asked here: [`ledger::probe_due`]), and each update
/// runs only when its probe found a lot (a release never makes a lot newly expirable: it only
/// lowers `remaining_points`, so the expiry probe taken before it still holds). The statement
/// asked here also reads the member's window sums at `now` for the mutation's own entry
/// ([`members::WindowSums`]).
pub(crate) async fn settle_due(
    conn: &mut PgConnection,
    locked: &mut Locked,
    now: DateTime<Utc>,
) -> StoreResult<Vec<Event>> {
    let members::DueProbe { release, expire } = match locked.due.take() {
        Some(due) if locked.window.is_some_and(|window| window.at == now) => due,
        _ => ledger::probe_due(conn, locked, now).await?,
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

/// Releases the locked member's pending lots whose release time has passed, in one RELEASE
/// entry; returns it with the number of lots released. A lot is released once: its `pending`
/// flag is cleared under the member's lock. A negative balance (ALLOW_NEGATIVE_BALANCE) is
/// repaid from the released points first, earliest-earned lot first, as an earn's would be.
pub(crate) async fn release_due(
    conn: &mut PgConnection,
    locked: &mut Locked,
    now: DateTime<Utc>,
) -> StoreResult<Option<(LedgerEntry, i64)>> {
    let rows = lots::release_due(conn, locked.member.member_id, now).await?;
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
        lots::cut(conn, *lot, cut).await?;
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
    // Each lot expires once and as a whole, so what it expired now is all it ever expired.
    // A lot can expire while still pending (an expiry period shorter than the return window).
    let expired = lots::expire_due(conn, locked.member.member_id, now).await?;
    if expired.is_empty() {
        return Ok(None);
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
    let lots = i64::try_from(expired.len()).unwrap_or(i64::MAX);
    Ok(Some((append(conn, locked, new, now).await?, lots)))
}

/// Refuses a change in an archived program.
fn check_program_active(locked: &Locked) -> Result<(), Rejection> {
    match locked.program.state {
        ProgramState::Active => Ok(()),
        ProgramState::Archived => Err(Rejection::ProgramNotActive),
    }
}

/// EarnPoints in the call's transaction; with the entry's write left to the call's last
/// statement when no tier decision reads it.
#[tracing::instrument(skip_all)]
async fn earn(
    conn: &mut PgConnection,
    origin: Origin,
    cmd: EarnCommand,
    now: DateTime<Utc>,
) -> StoreResult<(Applied, Option<LastWrite>)> {
    let mut events = Vec::new();
    let mut locked = lock_member(conn, &cmd.member, now, &mut events).await?;
    let facts = match &cmd.source {
        EarnSource::Purchase(purchase) if purchase.currency == locked.program.currency => {
            purchase_facts(conn, &locked, purchase, now).await?
        }
        _ => PurchaseFacts::default(),
    };
    let new = earn_entry(&locked, origin, cmd, facts, now)?;
    let (entry, write) = prepare_append(conn, &mut locked, new, now).await?;
    if tiers::may_move(&locked) {
        // The tier decision reads the member's entries, this one included.
        write.run(conn).await?;
        let applied =
            settle_with_upgrade(conn, locked, entry, Event::PointsEarned, events, now).await?;
        return Ok((applied, None));
    }
    // Nothing after the entry reads it: it is written with the key and the events, in the
    // call's last statement.
    events.push(Event::PointsEarned(locked.member.clone(), entry.clone()));
    let applied = Applied {
        entry,
        member: locked.member,
        tier_change: None,
        events,
    };
    Ok((applied, Some(write.into_last_write())))
}

/// The earn of a member locked by its group (`earn_group`), decided as [`earn`] decides it
/// from what the group's statement read, with its entry's write left to the group's last
/// statement. `None` when the earn needs what a group does not do, and must run alone: the
/// member changed after the statement's snapshot (its probe and window sums are unset), lots
/// are due for release or expiry, a purchase may earn a birthday bonus, the earn is refused
/// (a MERGED member's among them: alone, it goes to the survivor), or its tier may move.
pub(crate) async fn earn_in_group(
    conn: &mut PgConnection,
    member: GroupMember,
    origin: Origin,
    cmd: EarnCommand,
    now: DateTime<Utc>,
) -> Option<(Applied, EntryWrite)> {
    let GroupMember {
        mut locked,
        order_earned,
        birth_month,
        ..
    } = member;
    let due = locked.due?;
    if due.release || due.expire {
        return None;
    }
    // A birthday bonus is judged by the purchase's month in the program's time zone, which
    // the group does not ask.
    let birthday_bonus = locked.program.rules.earning.birthday_multiplier_percent > 0;
    if matches!(cmd.source, EarnSource::Purchase(_)) && birth_month.is_some() && birthday_bonus {
        return None;
    }
    let facts = PurchaseFacts {
        earlier: order_earned,
        birth_month,
        purchase_month: 0,
    };
    let new = earn_entry(&locked, origin, cmd, facts, now).ok()?;
    let (entry, write) = prepare_append(conn, &mut locked, new, now).await.ok()?;
    if tiers::may_move(&locked) {
        return None;
    }
    let applied = Applied {
        events: vec![Event::PointsEarned(locked.member.clone(), entry.clone())],
        entry,
        member: locked.member,
        tier_change: None,
    };
    Some((applied, write))
}

/// What a purchase earn reads besides its member: the entry that already earned its order,
/// the customer's birth month, and the purchase's month in the program's time zone (asked
/// of the database only when a birthday bonus could apply). A grant reads none of it.
#[derive(Debug, Clone, Copy, Default)]
struct PurchaseFacts {
    earlier: Option<Uuid>,
    birth_month: Option<u32>,
    purchase_month: u32,
}

async fn purchase_facts(
    conn: &mut PgConnection,
    locked: &Locked,
    purchase: &Purchase,
    now: DateTime<Utc>,
) -> StoreResult<PurchaseFacts> {
    let earlier = ledger::earn_of_order(conn, locked.member.program_id, &purchase.order_id).await?;
    let birth_month = birthdays::month(conn, locked.member.customer_id).await?;
    // The birthday month is judged in the program's time zone.
    let purchase_month = match birth_month {
        Some(_) if locked.program.rules.earning.birthday_multiplier_percent > 0 => {
            programs::month_in_zone(
                conn,
                earning::purchase_instant(purchase, now),
                &locked.program.time_zone,
            )
            .await?
        }
        _ => 0,
    };
    Ok(PurchaseFacts {
        earlier,
        birth_month,
        purchase_month,
    })
}

/// The entry an earn makes for its locked member, or its refusal: a purchase's points as
/// `facts` make them ([`purchase_facts`]), a grant's as given.
fn earn_entry(
    locked: &Locked,
    origin: Origin,
    cmd: EarnCommand,
    facts: PurchaseFacts,
    now: DateTime<Utc>,
) -> StoreResult<NewEntry> {
    locked.member.status.check_can_earn()?;
    check_program_active(locked)?;
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
            if let Some(ledger_entry_id) = facts.earlier {
                return Err(Rejection::OrderAlreadyEarned { ledger_entry_id }.into());
            }
            let calculation = earning::calculate(
                &rules.earning,
                &purchase,
                &locked.member.tier.code,
                facts.birth_month,
                facts.purchase_month,
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
    Ok(new)
}

/// RedeemPoints in the call's transaction.
#[tracing::instrument(skip_all)]
async fn redeem(
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

/// AdjustPoints in the call's transaction.
#[tracing::instrument(skip_all)]
async fn adjust(
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
    let moved =
        tiers::upgrade_if_qualified(conn, &mut locked, now, Some(entry.ledger_entry_id)).await?;
    events.push(event(locked.member.clone(), entry.clone()));
    events.extend(moved.event(&locked.member));
    let tier_change = match moved {
        tiers::TierMove::Upgraded(change) => Some(change),
        tiers::TierMove::Kept | tiers::TierMove::DowngradeCancelled(_) => None,
    };
    Ok(Applied {
        entry,
        member: locked.member,
        tier_change,
        events,
    })
}
