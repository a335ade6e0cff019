//! Ticket use cases: open (complaints, and follow-ups inside a response's transaction),
//! assign, the status transitions, notes, follow-up outcomes, the SLA policy and the
//! closed-loop report.

use chrono::{DateTime, Utc};
use custops_common::idempotency::RequestKey;
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Actor, Changed, Context};
use crate::domain::Rejection;
use crate::domain::response::{FollowUpTrigger, SurveyResponse};
use crate::domain::sla::SlaPolicy;
use crate::domain::ticket::{
    Action, FollowUp, FollowUpOutcome, HistoryDetail, HistoryEntry, Kind, NewTicket, Resolution,
    Severity, SlaState, Status, Ticket, Transition,
};
use crate::error::Error;
use crate::store::{self, tickets as rows};

fn new_ticket(
    kind: Kind,
    policy: &SlaPolicy,
    severity: Severity,
    now: DateTime<Utc>,
    n: NewTicket,
    follow_up: Option<FollowUp>,
) -> Ticket {
    let due = policy.due_times(severity, now);
    Ticket {
        id: Uuid::now_v7(),
        kind,
        status: Status::Open,
        customer_id: n.customer_id,
        category: n.category,
        severity,
        channel: n.channel,
        subject: n.subject,
        description: n.description,
        touchpoint: n.touchpoint,
        source_response_id: n.source_response_id,
        assignee_id: n.assignee_id,
        resolution: None,
        sla: SlaState {
            respond_due_time: due.respond,
            resolve_due_time: due.resolve,
            first_respond_time: None,
            response_breached: false,
            resolution_breached: false,
        },
        follow_up,
        create_time: now,
        update_time: now,
        resolve_time: None,
        close_time: None,
        erase_time: None,
        version: 1,
    }
}

/// A ticket as a change left it, and the time of the change, at which the reply judges its
/// SLA breaches.
type Judged<T> = (T, DateTime<Utc>);

/// Opens a complaint ticket and answers `reply` of it (judged at the open time); a replay of
/// the key answers the first reply.
pub async fn open<R: Message + Default>(
    ctx: &Context,
    key: RequestKey,
    actor: &Actor,
    n: NewTicket,
    reply: impl FnOnce(&Ticket, DateTime<Utc>) -> R + Send + 'static,
) -> Result<R, Error> {
    let (ctx2, actor) = (ctx.clone(), actor.clone());
    super::once(ctx, Some(&key), judged(reply), move |tx| {
        Box::pin(async move {
            if let Some(source) = n.source_response_id {
                store::responses::get_response(&mut *tx, source).await?;
            }
            let policy = rows::policy(&mut *tx).await?;
            let now = ctx2.now();
            let severity = n.severity;
            let t = new_ticket(Kind::Complaint, &policy, severity, now, n.clone(), None);
            // Appends TicketOpened with the ticket.
            rows::insert(&mut *tx, &t, &actor.service, &n.actor_id).await?;
            Ok(((t, now), Vec::new()))
        })
    })
    .await
}

/// `reply` of a judged value.
fn judged<T, R>(
    reply: impl FnOnce(&T, DateTime<Utc>) -> R + Send + 'static,
) -> impl FnOnce(&Judged<T>) -> R + Send + 'static {
    move |(value, now): &Judged<T>| reply(value, *now)
}

/// Opens the follow-up ticket of a detractor / low-CSAT response, in the response's
/// transaction `tx`. Returns its id.
pub async fn open_follow_up(
    tx: &mut PgConnection,
    actor: &Actor,
    r: &SurveyResponse,
    triggers: Vec<FollowUpTrigger>,
) -> Result<Uuid, Error> {
    let policy = rows::policy(&mut *tx).await?;
    let category = triggers
        .first()
        .map(|t| t.as_str())
        .unwrap_or("nps_detractor")
        .to_owned();
    let subject = match (r.scores.nps.score, r.scores.csat.score) {
        (Some(nps), Some(csat)) => format!("Follow up: NPS {nps}, CSAT {csat}"),
        (Some(nps), None) => format!("Follow up: NPS {nps}"),
        (None, Some(csat)) => format!("Follow up: CSAT {csat}"),
        (None, None) => "Follow up".to_owned(),
    };
    let n = NewTicket {
        customer_id: r.customer_id.clone(),
        category,
        severity: policy.follow_up_severity,
        channel: r.channel.clone(),
        subject,
        description: String::new(),
        touchpoint: Some(r.touchpoint.clone()),
        source_response_id: Some(r.id),
        assignee_id: String::new(),
        actor_id: String::new(),
    };
    let follow_up = FollowUp {
        triggers,
        survey_id: r.survey_id,
        scores: r.scores,
        first_outcome_time: None,
    };
    let t = new_ticket(
        Kind::FollowUp,
        &policy,
        policy.follow_up_severity,
        r.submit_time,
        n,
        Some(follow_up),
    );
    rows::insert(&mut *tx, &t, &actor.service, "").await?;
    Ok(t.id)
}

/// One ticket and its history.
pub async fn get(ctx: &Context, id: Uuid) -> Result<(Ticket, Vec<HistoryEntry>), Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    let t = rows::get(&mut conn, id, false).await?;
    let history = rows::history(&mut conn, id).await?;
    Ok((t, history))
}

/// The ticket `id`, locked for a change, if `etag` is empty or its current etag.
async fn lock(conn: &mut PgConnection, id: Uuid, etag: &str) -> Result<Ticket, Error> {
    let t = rows::get(conn, id, true).await?;
    t.check_etag(etag)?;
    Ok(t)
}

fn entry(t: &Ticket, action: Action, actor: &Actor, now: DateTime<Utc>) -> HistoryEntry {
    HistoryEntry {
        id: Uuid::now_v7(),
        ticket_id: t.id,
        action,
        occur_time: now,
        actor_service: actor.service.clone(),
        actor_id: actor.actor_id.clone(),
        from_status: None,
        to_status: None,
        note: String::new(),
        detail: None,
    }
}

/// Assigns (or unassigns with "") a ticket and answers `reply` of it; with a request id, a
/// replay answers the first reply.
#[allow(clippy::too_many_arguments, reason = "one parameter per request field")]
pub async fn assign<R: Message + Default>(
    ctx: &Context,
    id: Uuid,
    key: Option<RequestKey>,
    actor: &Actor,
    etag: &str,
    assignee_id: String,
    note: String,
    reply: impl FnOnce(&Ticket, DateTime<Utc>) -> R + Send + 'static,
) -> Result<R, Error> {
    let (ctx2, actor, etag) = (ctx.clone(), actor.clone(), etag.to_owned());
    super::once(ctx, key.as_ref(), judged(reply), move |tx| {
        Box::pin(async move {
            let mut t = lock(&mut *tx, id, &etag).await?;
            if t.status == Status::Closed {
                return Err(Rejection::TicketClosed.into());
            }
            let now = ctx2.now();
            let previous = std::mem::replace(&mut t.assignee_id, assignee_id);
            t.update_time = now;
            rows::save(&mut *tx, &mut t, None).await?;
            let mut e = entry(&t, Action::Assigned, &actor, now);
            e.note = note;
            e.detail = Some(HistoryDetail::Assignment {
                assignee_id: t.assignee_id.clone(),
                previous_assignee_id: previous.clone(),
            });
            rows::insert_history(&mut *tx, &e).await?;
            let assigned =
                crate::events::ticket_assigned(&t, &previous, &actor.service, &actor.actor_id, now);
            Ok(((t, now), vec![assigned]))
        })
    })
    .await
}

/// Applies a status transition (start, resolve, close, reopen) and answers `reply` of the
/// ticket; with a request id, a replay answers the first reply (not an invalid transition).
#[allow(clippy::too_many_arguments, reason = "one parameter per request field")]
pub async fn transition<R: Message + Default>(
    ctx: &Context,
    id: Uuid,
    key: Option<RequestKey>,
    actor: &Actor,
    etag: &str,
    transition: Transition,
    note: String,
    resolution: Option<Resolution>,
    reply: impl FnOnce(&Ticket, DateTime<Utc>) -> R + Send + 'static,
) -> Result<R, Error> {
    let (ctx2, actor, etag) = (ctx.clone(), actor.clone(), etag.to_owned());
    super::once(ctx, key.as_ref(), judged(reply), move |tx| {
        Box::pin(async move {
            let mut t = lock(&mut *tx, id, &etag).await?;
            let now = ctx2.now();
            let from = t.status;
            let (to, mut e) = apply(&mut t, transition, now, &actor, resolution)?;
            let policy = rows::policy(&mut *tx).await?;
            let reopened_at = if transition == Transition::Reopen {
                let due = policy.due_times(t.severity, now);
                t.sla.resolve_due_time = due.resolve;
                Some(now)
            } else {
                None
            };
            t.status = to;
            t.update_time = now;
            rows::save(&mut *tx, &mut t, reopened_at).await?;
            e.note = note;
            e.from_status = Some(from);
            e.to_status = Some(to);
            rows::insert_history(&mut *tx, &e).await?;
            let mut events = vec![crate::events::ticket_status_changed(
                &t,
                from,
                &actor.service,
                &actor.actor_id,
                now,
            )];
            if to == Status::Resolved {
                events.push(crate::events::ticket_resolved(
                    &t,
                    &actor.service,
                    &actor.actor_id,
                    now,
                ));
            }
            Ok(((t, now), events))
        })
    })
    .await
}

/// The domain effect of a transition on `t` (status excluded) and its history entry.
fn apply(
    t: &mut Ticket,
    transition: Transition,
    now: DateTime<Utc>,
    actor: &Actor,
    resolution: Option<Resolution>,
) -> Result<(Status, HistoryEntry), Error> {
    let to = transition.apply(t.status)?;
    let mut e = entry(t, Action::of(transition), actor, now);
    match transition {
        Transition::Start => meet_first_response(t, now),
        Transition::Resolve => {
            meet_first_response(t, now);
            if now > t.sla.resolve_due_time {
                t.sla.resolution_breached = true;
            }
            t.resolution = resolution.clone();
            t.resolve_time = Some(now);
            e.detail = resolution.map(HistoryDetail::Resolution);
        }
        Transition::Close => t.close_time = Some(now),
        Transition::Reopen => {
            t.resolution = None;
            t.resolve_time = None;
            t.close_time = None;
        }
    }
    Ok((to, e))
}

fn meet_first_response(t: &mut Ticket, now: DateTime<Utc>) {
    if t.sla.first_respond_time.is_none() {
        t.sla.first_respond_time = Some(now);
        if now > t.sla.respond_due_time {
            t.sla.response_breached = true;
        }
    }
}

/// Records a follow-up outcome and answers `reply` of the ticket as it is then with its
/// history (which holds the outcomes); a replay of the key answers the first reply.
#[allow(clippy::too_many_arguments, reason = "one parameter per request field")]
pub async fn record_outcome<R: Message + Default>(
    ctx: &Context,
    id: Uuid,
    key: RequestKey,
    actor: &Actor,
    etag: &str,
    outcome: FollowUpOutcome,
    note: String,
    reply: impl FnOnce(&(Ticket, Vec<HistoryEntry>), DateTime<Utc>) -> R + Send + 'static,
) -> Result<R, Error> {
    let (ctx2, actor, etag) = (ctx.clone(), actor.clone(), etag.to_owned());
    super::once(ctx, Some(&key), judged(reply), move |tx| {
        Box::pin(async move {
            let ((t, now), events) =
                record(&mut *tx, &ctx2, id, &actor, &etag, outcome, note).await?;
            // As a read after the change sees it.
            let t = rows::get(&mut *tx, t.id, false).await?;
            let history = rows::history(&mut *tx, t.id).await?;
            Ok((((t, history), now), events))
        })
    })
    .await
}

#[allow(clippy::too_many_arguments, reason = "one parameter per request field")]
async fn record(
    tx: &mut PgConnection,
    ctx: &Context,
    id: Uuid,
    actor: &Actor,
    etag: &str,
    outcome: FollowUpOutcome,
    note: String,
) -> Changed<Judged<Ticket>> {
    let mut t = lock(&mut *tx, id, etag).await?;
    if t.kind != Kind::FollowUp {
        return Err(Rejection::NotAFollowUp.into());
    }
    let from = t.status;
    let to = outcome.next_status(from)?;
    let now = ctx.now();
    let first = t
        .follow_up
        .as_ref()
        .is_some_and(|f| f.first_outcome_time.is_none());
    if let Some(f) = t.follow_up.as_mut() {
        f.first_outcome_time.get_or_insert(now);
    }
    meet_first_response(&mut t, now);
    if to == Status::Resolved {
        if now > t.sla.resolve_due_time {
            t.sla.resolution_breached = true;
        }
        t.resolution = Some(Resolution {
            code: crate::domain::ticket::ResolutionCode::Fixed,
            note: note.clone(),
            compensation: None,
        });
        t.resolve_time = Some(now);
    }
    t.status = to;
    t.update_time = now;
    rows::save(&mut *tx, &mut t, None).await?;
    rows::set_last_outcome(&mut *tx, t.id, outcome).await?;
    let mut e = entry(&t, Action::FollowUpOutcomeRecorded, actor, now);
    e.note = note;
    e.from_status = Some(from);
    e.to_status = Some(to);
    e.detail = Some(HistoryDetail::FollowUpOutcome(outcome));
    rows::insert_history(&mut *tx, &e).await?;
    let mut events = vec![crate::events::follow_up_outcome_recorded(
        &t,
        outcome,
        first,
        &actor.service,
        &actor.actor_id,
        now,
    )];
    if to != from {
        events.push(crate::events::ticket_status_changed(
            &t,
            from,
            &actor.service,
            &actor.actor_id,
            now,
        ));
    }
    if to == Status::Resolved {
        events.push(crate::events::ticket_resolved(
            &t,
            &actor.service,
            &actor.actor_id,
            now,
        ));
    }
    Ok(((t, now), events))
}

/// Adds a note and answers `reply` of the ticket and the note's history entry; a replay of
/// the key answers the first reply.
pub async fn add_note<R: Message + Default>(
    ctx: &Context,
    id: Uuid,
    key: RequestKey,
    actor: &Actor,
    note: String,
    reply: impl FnOnce(&(Ticket, HistoryEntry), DateTime<Utc>) -> R + Send + 'static,
) -> Result<R, Error> {
    let (ctx2, actor) = (ctx.clone(), actor.clone());
    super::once(ctx, Some(&key), judged(reply), move |tx| {
        Box::pin(async move {
            let mut t = lock(&mut *tx, id, "").await?;
            let now = ctx2.now();
            t.update_time = now;
            rows::save(&mut *tx, &mut t, None).await?;
            let mut e = entry(&t, Action::NoteAdded, &actor, now);
            e.note = note;
            rows::insert_history(&mut *tx, &e).await?;
            Ok((((t, e), now), Vec::new()))
        })
    })
    .await
}

/// Up to `limit` tickets after `after` in the filter's order, with their cursors and the time
/// their breaches are judged at (now).
pub async fn list(
    ctx: &Context,
    filter: &rows::TicketFilter,
    after: Option<rows::TicketCursor>,
    limit: usize,
) -> Result<(Vec<(Ticket, rows::TicketCursor)>, DateTime<Utc>), Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    let now = ctx.now();
    Ok((rows::list(&mut conn, filter, now, after, limit).await?, now))
}

/// The policy in force.
pub async fn policy(ctx: &Context) -> Result<SlaPolicy, Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    rows::policy(&mut conn).await
}

/// Replaces the masked parts of the policy.
pub async fn update_policy(
    ctx: &Context,
    etag: &str,
    targets: Option<Vec<crate::domain::sla::SeverityTarget>>,
    follow_up_severity: Option<Severity>,
) -> Result<SlaPolicy, Error> {
    let mut tx = ctx.store.pool.begin().await?;
    rows::lock_policy(&mut tx).await?;
    let mut policy = rows::policy(&mut tx).await?;
    if !etag.is_empty() && etag != policy.etag() {
        return Err(Rejection::StaleEtag {
            resource: "SLA policy",
        }
        .into());
    }
    let mut next = policy.clone();
    if let Some(targets) = targets {
        next.targets = targets;
    }
    if let Some(severity) = follow_up_severity {
        next.follow_up_severity = severity;
    }
    if next.targets == policy.targets
        && next.follow_up_severity == policy.follow_up_severity
        && policy.version > 0
    {
        return Ok(policy);
    }
    next.version = policy.version + 1;
    next.update_time = Some(ctx.now());
    rows::save_policy(&mut tx, &next).await?;
    tx.commit().await?;
    policy = next;
    Ok(policy)
}

/// The closed-loop report, judged now.
pub async fn follow_up_report(
    ctx: &Context,
    filter: &rows::FollowUpFilter,
) -> Result<crate::domain::ticket::FollowUpCounts, Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    rows::follow_up_counts(&mut conn, filter, ctx.now()).await
}

/// Updates the masked fields; a severity change recomputes the due times not yet met from the
/// open (or last reopen) time with the current policy.
pub async fn update(
    ctx: &Context,
    id: Uuid,
    actor: &Actor,
    etag: &str,
    mask: crate::domain::ticket::TicketMask,
    new: NewTicket,
) -> Result<Ticket, Error> {
    let mut tx = ctx.store.pool.begin().await?;
    let mut t = lock(&mut tx, id, etag).await?;
    if t.status == Status::Closed {
        return Err(Rejection::TicketClosed.into());
    }
    let before = t.clone();
    let mut changed = Vec::new();
    if mask.category && t.category != new.category {
        t.category = new.category;
        changed.push("category".to_owned());
    }
    if mask.severity && t.severity != new.severity {
        t.severity = new.severity;
        changed.push("severity".to_owned());
        let policy = rows::policy(&mut tx).await?;
        let base = rows::open_time(&mut tx, id).await?;
        let due = policy.due_times(t.severity, base);
        if t.sla.first_respond_time.is_none() {
            t.sla.respond_due_time = due.respond;
        }
        if t.status.is_active() {
            t.sla.resolve_due_time = due.resolve;
        }
    }
    if mask.subject && t.subject != new.subject {
        t.subject = new.subject;
        changed.push("subject".to_owned());
    }
    if mask.description && t.description != new.description {
        t.description = new.description;
        changed.push("description".to_owned());
    }
    if mask.touchpoint && t.touchpoint != new.touchpoint {
        t.touchpoint = new.touchpoint;
        changed.push("touchpoint".to_owned());
    }
    if changed.is_empty() {
        // Same input, same result.
        return Ok(t);
    }
    let now = ctx.now();
    t.update_time = now;
    rows::save(&mut tx, &mut t, None).await?;
    if changed.iter().any(|f| f == "touchpoint") {
        rows::set_touchpoint(&mut tx, t.id, t.touchpoint.as_ref()).await?;
    }
    let mut e = entry(&t, Action::Updated, actor, now);
    e.detail = Some(HistoryDetail::FieldsChange {
        changed_fields: changed,
        previous_severity: before.severity,
        severity: t.severity,
        previous_category: before.category,
        category: t.category.clone(),
    });
    rows::insert_history(&mut tx, &e).await?;
    tx.commit().await?;
    Ok(t)
}

/// Up to `limit` entries of a ticket's history after the position `after`, oldest first,
/// each with its position.
pub async fn history_page(
    ctx: &Context,
    id: Uuid,
    after: Option<i64>,
    limit: usize,
) -> Result<Vec<(HistoryEntry, i64)>, Error> {
    let mut conn = custops_common::db::read(&ctx.store.pool).await?;
    rows::get(&mut conn, id, false).await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    rows::history_page(&mut conn, id, after, limit).await
}
