//! Member use cases: EnrolMember (once per request id, the customer checked in profiles
//! first), and the reads of members (GetMember, GetMemberByCustomer, ListMembers), their lots
//! (ListPointLots) and their expiring points (GetExpiringPoints). Status changes are in
//! `status`. Reads show points as of now: due releases and expiries are applied in the read's
//! view, never written by it (`store::lots::lots_now`).

use chrono::{DateTime, NaiveDate, Utc};
use custops_common::idempotency::RequestKey;
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Context, decode};
use crate::domain::Rejection;
use crate::domain::event::Event;
use crate::domain::member::{EnrolCommand, Member, MemberRef};
use crate::domain::program::ProgramState;
use crate::events;
use crate::store::lots::{self, Lot, LotState};
use crate::store::members::{self, MemberFilter};
use crate::store::{StoreResult, erasure, programs, tiers};

/// EnrolMember, once per request id. A replay answers what the first call did, whatever
/// profiles says about the customer since; only a new enrolment is checked, outside the
/// transaction (no row is locked while profiles is asked), when loyalty knows where profiles
/// is: the customer profiles answers for (the survivor of a merge) is enrolled, at the service
/// clock's now, with its MemberEnrolled event and `reply` of the member recorded with the key.
pub async fn enrol_member<R, F>(
    ctx: &Context,
    key: &RequestKey,
    mut cmd: EnrolCommand,
    reply: F,
) -> StoreResult<R>
where
    R: Message + Default,
    F: FnOnce(Member) -> R + Send + 'static,
{
    if let Some(bytes) = ctx.replay(key).await? {
        return decode(&bytes);
    }
    if let Some(customers) = &ctx.customers {
        let requested = cmd.customer_id;
        let standing = customers.standing(requested).await?;
        cmd.customer_id = standing.enrols(requested)?;
    }
    ctx.once(
        key,
        move |conn, now| {
            Box::pin(async move {
                let member = enrol(conn, &cmd, now).await?;
                let event = Event::MemberEnrolled(member.clone());
                let events = events::outbox_events(&[event]);
                Ok((member, events).into())
            })
        },
        reply,
    )
    .await
}

/// GetMember, GetMemberByCustomer: `member` as it stands now, in the BASIC view or, with
/// `full`, the FULL one (tier progress, the expiring-points summary). A merged member named
/// by customer resolves to its survivor; named by id, it is read itself.
pub async fn view(ctx: &Context, member: MemberRef, full: bool) -> StoreResult<Member> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let now = ctx.now();
    let mut locked = members::read(&mut conn, &member, now).await?;
    let member = if full {
        members::full_view(&mut conn, locked, now).await?
    } else {
        members::as_of(&mut conn, &mut locked, now).await?;
        locked.member
    };
    Ok(member)
}

/// ListMembers: the members `filter` selects after `after`, at most `limit`, as they stand
/// now. `cut` is the caller's paging: it cuts the rows read to the page (and answers what the
/// caller makes of that, the next page's token); with `full`, the FULL view is then read for
/// the members the page keeps.
pub async fn list<T>(
    ctx: &Context,
    filter: &MemberFilter,
    full: bool,
    after: Option<Uuid>,
    limit: usize,
    cut: impl FnOnce(&mut Vec<Member>) -> T,
) -> StoreResult<(Vec<Member>, T)> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let now = ctx.now();
    let mut rows = members::list(&mut conn, filter, after, limit, now).await?;
    let cut = cut(&mut rows);
    let mut out = Vec::with_capacity(rows.len());
    for member in rows {
        if full {
            let locked = members::read(&mut conn, &MemberRef::Id(member.member_id), now).await?;
            out.push(members::full_view(&mut conn, locked, now).await?);
        } else {
            out.push(member);
        }
    }
    Ok((out, cut))
}

/// ListPointLots: a page of `member`'s lots in `states`, in spending order, after the lot
/// `after`, as they stand now.
pub async fn lots(
    ctx: &Context,
    member: &MemberRef,
    states: &[LotState],
    after: Option<Uuid>,
    limit: usize,
) -> StoreResult<Vec<Lot>> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let member_id = members::load(&mut conn, member, false)
        .await?
        .member
        .member_id;
    drop(conn);
    let now = ctx.now();
    lots::list(
        &mut *custops_common::db::read(&ctx.pool).await?,
        member_id,
        states,
        after,
        limit,
        now,
    )
    .await
}

/// What GetExpiringPoints answers.
#[derive(Debug, Clone)]
pub struct ExpiringPoints {
    /// Points expiring per calendar day in the program's time zone, earliest first.
    pub days: Vec<(NaiveDate, i64)>,
    /// The end of the horizon.
    pub until: DateTime<Utc>,
}

/// GetExpiringPoints: `member`'s points (available and pending) expiring within `days` days
/// from now, per calendar day in the program's time zone.
pub async fn expiring(ctx: &Context, member: &MemberRef, days: u32) -> StoreResult<ExpiringPoints> {
    let mut conn = custops_common::db::read(&ctx.pool).await?;
    let loaded = members::load(&mut conn, member, false).await?;
    drop(conn);
    let now = ctx.now();
    let until = now + chrono::Duration::days(i64::from(days));
    let by_day = lots::expiring_by_day(
        &mut *custops_common::db::read(&ctx.pool).await?,
        loaded.member.member_id,
        &loaded.program.time_zone,
        now,
        until,
    )
    .await?;
    Ok(ExpiringPoints {
        days: by_day,
        until,
    })
}

/// Enrols a customer: the member in the base tier, zero balances, the INITIAL tier change, in
/// the call's transaction.
#[tracing::instrument(skip_all, fields(program_id = %cmd.program_id))]
async fn enrol(
    conn: &mut PgConnection,
    cmd: &EnrolCommand,
    now: DateTime<Utc>,
) -> StoreResult<Member> {
    let program = programs::get(conn, cmd.program_id).await?;
    if program.state != ProgramState::Active {
        return Err(Rejection::ProgramNotActive.into());
    }
    let erased = erasure::is_erased(conn, cmd.customer_id).await?;
    if erased {
        return Err(Rejection::CustomerErased.into());
    }
    let base = program.rules.base_tier_code().to_owned();
    let member_id = Uuid::now_v7();
    let inserted = members::insert(conn, member_id, cmd, &base, now).await?;
    if !inserted {
        // Enrolled by another call meanwhile (members are never deleted, so the row is there).
        let existing = members::find_by_customer(conn, cmd.program_id, cmd.customer_id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        return Err(Rejection::MemberAlreadyEnrolled {
            member_id: existing,
        }
        .into());
    }
    members::insert_balances(conn, member_id, now).await?;
    tiers::insert_initial(conn, member_id, cmd.program_id, &base, now).await?;
    Ok(members::load(conn, &MemberRef::Id(member_id), false)
        .await?
        .member)
}
