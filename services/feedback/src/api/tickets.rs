//! Tickets and the closed loop: OpenTicket, GetTicket, ListTickets, UpdateTicket,
//! ListTicketHistory, AssignTicket, the four transitions (Start, Resolve, Close, Reopen),
//! AddTicketNote, RecordFollowUpOutcome, GetFollowUpReport and the SLA policy. Each handler
//! parses (below the handlers), calls one use case in `workflow::tickets` and converts the
//! result, breach flags judged at the use case's clock.

use custops_common::auth::Caller;
use custops_common::error::Violations;
use custops_common::idempotency::RequestKey;
use custops_contracts::custops::feedback::v1 as pb;
use prost::Message;
use tonic::Request;
use uuid::Uuid;

use super::{FeedbackApi, Rpc, convert, next_page_token, ok, parse};
use crate::domain::sla::SeverityTarget;
use crate::domain::text;
use crate::domain::ticket::{
    FollowUpOutcome, Kind, NewTicket, Resolution, Severity, Status as TicketStatus, TicketMask,
    Transition,
};
use crate::error::Error;
use crate::store::tickets::{FollowUpFilter, TicketCursor, TicketFilter};
use crate::workflow::{self, Actor};

#[tracing::instrument(skip_all)]
pub(super) async fn open_ticket(
    api: &FeedbackApi,
    request: Request<pb::OpenTicketRequest>,
) -> Rpc<pb::OpenTicketResponse> {
    let caller = Caller::service_of(&request);
    let (key, actor, new) = open_request(&caller, request.into_inner())?;
    let reply = workflow::tickets::open(&api.ctx, key, &actor, new, |t, now| {
        pb::OpenTicketResponse {
            ticket: Some(convert::ticket(t, now, &[])),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_ticket(
    api: &FeedbackApi,
    request: Request<pb::GetTicketRequest>,
) -> Rpc<pb::GetTicketResponse> {
    let id = parse::required_id("ticket_id", &request.get_ref().ticket_id)?;
    let (t, history) = workflow::tickets::get(&api.ctx, id).await?;
    ok(pb::GetTicketResponse {
        ticket: Some(convert::ticket(&t, api.ctx.now(), &history)),
        history: history.iter().map(Into::into).collect(),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn list_tickets(
    api: &FeedbackApi,
    request: Request<pb::ListTicketsRequest>,
) -> Rpc<pb::ListTicketsResponse> {
    let req = request.into_inner();
    let filter = ticket_filter(&req)?;
    let page = api.page::<_, TicketCursor>(&req)?;
    let (mut list, now) =
        workflow::tickets::list(&api.ctx, &filter, page.after, page.fetch()).await?;
    let next_page_token = next_page_token(&page, &mut list, |(_, cursor)| *cursor)?;
    ok(pb::ListTicketsResponse {
        tickets: list
            .iter()
            .map(|(t, _)| convert::ticket(t, now, &[]))
            .collect(),
        next_page_token,
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn update_ticket(
    api: &FeedbackApi,
    request: Request<pb::UpdateTicketRequest>,
) -> Rpc<pb::UpdateTicketResponse> {
    let caller = Caller::service_of(&request);
    let u = update_request(&caller, request.into_inner())?;
    let t = workflow::tickets::update(&api.ctx, u.id, &u.actor, &u.etag, u.mask, u.new).await?;
    ok(pb::UpdateTicketResponse {
        ticket: Some(convert::ticket(&t, api.ctx.now(), &[])),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn list_ticket_history(
    api: &FeedbackApi,
    request: Request<pb::ListTicketHistoryRequest>,
) -> Rpc<pb::ListTicketHistoryResponse> {
    let req = request.into_inner();
    let id = parse::required_id("ticket_id", &req.ticket_id)?;
    // The cursor is the last entry's position in the ticket's history.
    let page = api.page::<_, i64>(&req)?;
    let mut entries =
        workflow::tickets::history_page(&api.ctx, id, page.after, page.fetch()).await?;
    let next_page_token = next_page_token(&page, &mut entries, |(_, position)| *position)?;
    ok(pb::ListTicketHistoryResponse {
        entries: entries.iter().map(|(e, _)| e.into()).collect(),
        next_page_token,
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn assign_ticket(
    api: &FeedbackApi,
    request: Request<pb::AssignTicketRequest>,
) -> Rpc<pb::AssignTicketResponse> {
    let caller = Caller::service_of(&request);
    let a = assign_request(&caller, request.into_inner())?;
    let reply = workflow::tickets::assign(
        &api.ctx,
        a.change.id,
        a.change.key,
        &a.change.actor,
        &a.change.etag,
        a.assignee_id,
        a.change.note,
        |t, now| pb::AssignTicketResponse {
            ticket: Some(convert::ticket(t, now, &[])),
        },
    )
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn start_ticket(
    api: &FeedbackApi,
    request: Request<pb::StartTicketRequest>,
) -> Rpc<pb::StartTicketResponse> {
    let caller = Caller::service_of(&request);
    let req = request.into_inner();
    let fields = ChangeFields {
        ticket_id: &req.ticket_id,
        request_id: &req.request_id,
        etag: &req.etag,
        actor_id: &req.actor_id,
        note: &req.note,
    };
    let change = change_request(&caller, "StartTicket", &req, fields, None)?;
    let reply = transition(api, change, Transition::Start, |ticket| {
        pb::StartTicketResponse {
            ticket: Some(ticket),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn resolve_ticket(
    api: &FeedbackApi,
    request: Request<pb::ResolveTicketRequest>,
) -> Rpc<pb::ResolveTicketResponse> {
    let caller = Caller::service_of(&request);
    let req = request.into_inner();
    let fields = ChangeFields {
        ticket_id: &req.ticket_id,
        request_id: &req.request_id,
        etag: &req.etag,
        actor_id: &req.actor_id,
        note: "",
    };
    let resolution = Some(req.resolution.as_ref());
    let change = change_request(&caller, "ResolveTicket", &req, fields, resolution)?;
    let reply = transition(api, change, Transition::Resolve, |ticket| {
        pb::ResolveTicketResponse {
            ticket: Some(ticket),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn close_ticket(
    api: &FeedbackApi,
    request: Request<pb::CloseTicketRequest>,
) -> Rpc<pb::CloseTicketResponse> {
    let caller = Caller::service_of(&request);
    let req = request.into_inner();
    let fields = ChangeFields {
        ticket_id: &req.ticket_id,
        request_id: &req.request_id,
        etag: &req.etag,
        actor_id: &req.actor_id,
        note: &req.note,
    };
    let change = change_request(&caller, "CloseTicket", &req, fields, None)?;
    let reply = transition(api, change, Transition::Close, |ticket| {
        pb::CloseTicketResponse {
            ticket: Some(ticket),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn reopen_ticket(
    api: &FeedbackApi,
    request: Request<pb::ReopenTicketRequest>,
) -> Rpc<pb::ReopenTicketResponse> {
    let caller = Caller::service_of(&request);
    let req = request.into_inner();
    // The reason is required here, so it is checked on its own before the shared fields.
    if let Err(e) = text::length(&req.reason, 1, 5000) {
        return Err(Error::invalid("reason", e).into());
    }
    let fields = ChangeFields {
        ticket_id: &req.ticket_id,
        request_id: &req.request_id,
        etag: &req.etag,
        actor_id: &req.actor_id,
        note: &req.reason,
    };
    let change = change_request(&caller, "ReopenTicket", &req, fields, None)?;
    let reply = transition(api, change, Transition::Reopen, |ticket| {
        pb::ReopenTicketResponse {
            ticket: Some(ticket),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn add_ticket_note(
    api: &FeedbackApi,
    request: Request<pb::AddTicketNoteRequest>,
) -> Rpc<pb::AddTicketNoteResponse> {
    let caller = Caller::service_of(&request);
    let (id, key, actor, note) = note_request(&caller, request.into_inner())?;
    let reply = workflow::tickets::add_note(&api.ctx, id, key, &actor, note, |(t, e), now| {
        pb::AddTicketNoteResponse {
            ticket: Some(convert::ticket(t, now, &[])),
            entry: Some(e.into()),
        }
    })
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_sla_policy(
    api: &FeedbackApi,
    _request: Request<pb::GetSlaPolicyRequest>,
) -> Rpc<pb::GetSlaPolicyResponse> {
    let p = workflow::tickets::policy(&api.ctx).await?;
    ok(pb::GetSlaPolicyResponse {
        sla_policy: Some((&p).into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn update_sla_policy(
    api: &FeedbackApi,
    request: Request<pb::UpdateSlaPolicyRequest>,
) -> Rpc<pb::UpdateSlaPolicyResponse> {
    let u = policy_request(request.into_inner())?;
    let p = workflow::tickets::update_policy(&api.ctx, &u.etag, u.targets, u.follow_up_severity)
        .await?;
    ok(pb::UpdateSlaPolicyResponse {
        sla_policy: Some((&p).into()),
    })
}

#[tracing::instrument(skip_all)]
pub(super) async fn record_follow_up_outcome(
    api: &FeedbackApi,
    request: Request<pb::RecordFollowUpOutcomeRequest>,
) -> Rpc<pb::RecordFollowUpOutcomeResponse> {
    let caller = Caller::service_of(&request);
    let o = outcome_request(&caller, request.into_inner())?;
    let reply = workflow::tickets::record_outcome(
        &api.ctx,
        o.id,
        o.key,
        &o.actor,
        &o.etag,
        o.outcome,
        o.note,
        |(t, history), now| pb::RecordFollowUpOutcomeResponse {
            ticket: Some(convert::ticket(t, now, history)),
        },
    )
    .await?;
    ok(reply)
}

#[tracing::instrument(skip_all)]
pub(super) async fn get_follow_up_report(
    api: &FeedbackApi,
    request: Request<pb::GetFollowUpReportRequest>,
) -> Rpc<pb::GetFollowUpReportResponse> {
    let filter = follow_up_filter(request.into_inner())?;
    let c = workflow::tickets::follow_up_report(&api.ctx, &filter).await?;
    ok(pb::GetFollowUpReportResponse {
        report: Some((&c).into()),
    })
}

/// A status transition applied, answered `reply` of the ticket on the wire.
async fn transition<R: Message + Default + 'static>(
    api: &FeedbackApi,
    change: Change,
    transition: Transition,
    reply: fn(pb::Ticket) -> R,
) -> Result<R, Error> {
    workflow::tickets::transition(
        &api.ctx,
        change.id,
        change.key,
        &change.actor,
        &change.etag,
        transition,
        change.note,
        change.resolution,
        move |t, now| reply(convert::ticket(t, now, &[])),
    )
    .await
}

// Parsing: each request into the values its use case takes, every bad field a violation.

/// A change to one ticket, parsed: the fields the transitions, assignments and outcomes share.
struct Change {
    id: Uuid,
    key: Option<RequestKey>,
    actor: Actor,
    etag: String,
    note: String,
    resolution: Option<Resolution>,
}

/// The request fields a change carries.
struct ChangeFields<'a> {
    ticket_id: &'a str,
    request_id: &'a str,
    etag: &'a str,
    actor_id: &'a str,
    note: &'a str,
}

/// A transition request (`operation` names the RPC for its optional request id); ResolveTicket
/// passes its `resolution`, which is then required.
fn change_request<M: Message>(
    caller: &str,
    operation: &'static str,
    request: &M,
    fields: ChangeFields<'_>,
    resolution: Option<Option<&pb::TicketResolution>>,
) -> Result<Change, Error> {
    let mut v = Violations::new();
    let id = parse::id(&mut v, "ticket_id", fields.ticket_id);
    parse::check(&mut v, "note", text::length(fields.note, 0, 5000));
    let key = parse::optional_key(&mut v, fields.request_id, caller, operation, request);
    let actor = parse::actor(&mut v, caller, fields.actor_id);
    let resolution = resolution.and_then(|r| parse::resolution(&mut v, r));
    parse::finish(v, || {
        Some(Change {
            id: id?,
            key,
            actor,
            etag: fields.etag.to_owned(),
            note: fields.note.to_owned(),
            resolution,
        })
    })
}

fn open_request(
    caller: &str,
    req: pb::OpenTicketRequest,
) -> Result<(RequestKey, Actor, NewTicket), Error> {
    let mut v = Violations::new();
    let key = parse::key(&mut v, &req.request_id, caller, "OpenTicket", &req);
    let customer_id = parse::customer_id(&mut v, "customer_id", &req.customer_id);
    parse::check(&mut v, "category", text::slug(&req.category));
    let severity = parse::severity(&mut v, "severity", req.severity);
    parse::check(&mut v, "channel", text::slug(&req.channel));
    parse::check(&mut v, "subject", text::length(&req.subject, 1, 200));
    parse::check(
        &mut v,
        "description",
        text::length(&req.description, 0, 10_000),
    );
    let touchpoint = req
        .touchpoint
        .as_ref()
        .and_then(|t| parse::touchpoint(&mut v, "touchpoint", Some(t)));
    let source_response_id = (!req.source_response_id.is_empty())
        .then(|| parse::id(&mut v, "source_response_id", &req.source_response_id))
        .flatten();
    if !req.assignee_id.is_empty() {
        parse::check(&mut v, "assignee_id", text::printable_id(&req.assignee_id));
    }
    let actor = parse::actor(&mut v, caller, &req.actor_id);
    parse::finish(v, || {
        Some((
            key?,
            actor,
            NewTicket {
                customer_id: customer_id?,
                category: req.category,
                severity,
                channel: req.channel,
                subject: req.subject,
                description: req.description,
                touchpoint,
                source_response_id,
                assignee_id: req.assignee_id,
                actor_id: req.actor_id,
            },
        ))
    })
}

fn ticket_filter(req: &pb::ListTicketsRequest) -> Result<TicketFilter, Error> {
    let mut v = Violations::new();
    let statuses = req
        .statuses
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let status = match pb::TicketStatus::try_from(*s).ok() {
                Some(pb::TicketStatus::Open) => Some(TicketStatus::Open),
                Some(pb::TicketStatus::InProgress) => Some(TicketStatus::InProgress),
                Some(pb::TicketStatus::Resolved) => Some(TicketStatus::Resolved),
                Some(pb::TicketStatus::Closed) => Some(TicketStatus::Closed),
                _ => None,
            };
            if status.is_none() {
                v.add(format!("statuses[{i}]"), "not a ticket status");
            }
            status
        })
        .collect();
    let kinds = req
        .kinds
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let kind = match pb::TicketKind::try_from(*k).ok() {
                Some(pb::TicketKind::Complaint) => Some(Kind::Complaint),
                Some(pb::TicketKind::FollowUp) => Some(Kind::FollowUp),
                _ => None,
            };
            if kind.is_none() {
                v.add(format!("kinds[{i}]"), "not a ticket kind");
            }
            kind
        })
        .collect();
    let severities: Vec<Severity> = req
        .severities
        .iter()
        .enumerate()
        .map(|(i, s)| parse::severity(&mut v, &format!("severities[{i}]"), *s))
        .collect();
    if req.unassigned_only && !req.assignee_id.is_empty() {
        v.add("unassigned_only", "cannot be combined with assignee_id");
    }
    let customer_id = parse::customer_filter(&mut v, "customer_id", &req.customer_id);
    let near = req.near_breach_within.as_ref().map(|d| d.seconds);
    if let Some(secs) = near {
        if !(1..=30 * 24 * 3600).contains(&secs) {
            v.add("near_breach_within", "must be 1 second to 30 days");
        }
        if req.breached_only {
            v.add(
                "near_breach_within",
                "cannot be combined with breached_only",
            );
        }
    }
    let (created_from, created_to) =
        parse::time_range(&mut v, "create_time_range", req.create_time_range.as_ref());
    let by_next_due = match pb::TicketOrderBy::try_from(req.order_by).ok() {
        Some(pb::TicketOrderBy::Unspecified) => false,
        Some(pb::TicketOrderBy::NextDueTime) => true,
        None => {
            v.add("order_by", "not an order");
            false
        }
    };
    parse::finish(v, || {
        Some(TicketFilter {
            statuses,
            kinds,
            severities,
            assignee_id: req.assignee_id.clone(),
            unassigned_only: req.unassigned_only,
            customer_id,
            category: req.category.clone(),
            breached_only: req.breached_only,
            near_breach_within_secs: near,
            created_from,
            created_to,
            by_next_due,
        })
    })
}

/// An UpdateTicket request, parsed.
struct Update {
    id: Uuid,
    actor: Actor,
    etag: String,
    mask: TicketMask,
    new: NewTicket,
}

fn update_request(caller: &str, req: pb::UpdateTicketRequest) -> Result<Update, Error> {
    let mut v = Violations::new();
    let t = req.ticket.unwrap_or_default();
    let id = parse::id(&mut v, "ticket.ticket_id", &t.ticket_id);
    let mut mask = TicketMask::default();
    let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        v.add("update_mask", "required: name the fields to update");
    }
    for p in &paths {
        match p.as_str() {
            "category" => mask.category = true,
            "severity" => mask.severity = true,
            "subject" => mask.subject = true,
            "description" => mask.description = true,
            "touchpoint" => mask.touchpoint = true,
            other => v.add("update_mask", format!("`{other}` cannot be updated")),
        }
    }
    if mask.category {
        parse::check(&mut v, "ticket.category", text::slug(&t.category));
    }
    let severity = if mask.severity {
        parse::severity(&mut v, "ticket.severity", t.severity)
    } else {
        Severity::Medium
    };
    if mask.subject {
        parse::check(&mut v, "ticket.subject", text::length(&t.subject, 1, 200));
    }
    if mask.description {
        parse::check(
            &mut v,
            "ticket.description",
            text::length(&t.description, 0, 10_000),
        );
    }
    let touchpoint = if mask.touchpoint {
        t.touchpoint
            .as_ref()
            .and_then(|tp| parse::touchpoint(&mut v, "ticket.touchpoint", Some(tp)))
    } else {
        None
    };
    let actor = parse::actor(&mut v, caller, &req.actor_id);
    parse::finish(v, || {
        Some(Update {
            id: id?,
            actor,
            etag: t.etag,
            mask,
            new: NewTicket {
                customer_id: String::new(),
                category: t.category,
                severity,
                channel: String::new(),
                subject: t.subject,
                description: t.description,
                touchpoint,
                source_response_id: None,
                assignee_id: String::new(),
                actor_id: req.actor_id,
            },
        })
    })
}

/// An AssignTicket request, parsed.
struct Assignment {
    change: Change,
    assignee_id: String,
}

fn assign_request(caller: &str, req: pb::AssignTicketRequest) -> Result<Assignment, Error> {
    let mut v = Violations::new();
    let id = parse::id(&mut v, "ticket_id", &req.ticket_id);
    if !req.assignee_id.is_empty() {
        parse::check(&mut v, "assignee_id", text::printable_id(&req.assignee_id));
    }
    parse::check(&mut v, "note", text::length(&req.note, 0, 5000));
    let key = parse::optional_key(&mut v, &req.request_id, caller, "AssignTicket", &req);
    let actor = parse::actor(&mut v, caller, &req.actor_id);
    parse::finish(v, || {
        Some(Assignment {
            change: Change {
                id: id?,
                key,
                actor,
                etag: req.etag,
                note: req.note,
                resolution: None,
            },
            assignee_id: req.assignee_id,
        })
    })
}

fn note_request(
    caller: &str,
    req: pb::AddTicketNoteRequest,
) -> Result<(Uuid, RequestKey, Actor, String), Error> {
    let mut v = Violations::new();
    let id = parse::id(&mut v, "ticket_id", &req.ticket_id);
    parse::check(&mut v, "note", text::length(&req.note, 1, 5000));
    let key = parse::key(&mut v, &req.request_id, caller, "AddTicketNote", &req);
    let actor = parse::actor(&mut v, caller, &req.actor_id);
    parse::finish(v, || Some((id?, key?, actor, req.note)))
}

/// An UpdateSlaPolicy request, parsed: the masked parts, `None` when not masked.
struct PolicyUpdate {
    etag: String,
    targets: Option<Vec<SeverityTarget>>,
    follow_up_severity: Option<Severity>,
}

fn policy_request(req: pb::UpdateSlaPolicyRequest) -> Result<PolicyUpdate, Error> {
    let mut v = Violations::new();
    let policy = req.sla_policy.unwrap_or_default();
    let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        v.add("update_mask", "required: name the fields to update");
    }
    let mut targets = None;
    let mut follow_up_severity = None;
    for p in &paths {
        match p.as_str() {
            "targets" => targets = Some(parse::sla_targets(&mut v, &policy.targets)),
            "follow_up_severity" => {
                follow_up_severity = Some(parse::severity(
                    &mut v,
                    "sla_policy.follow_up_severity",
                    policy.follow_up_severity,
                ));
            }
            other => v.add("update_mask", format!("`{other}` cannot be updated")),
        }
    }
    parse::finish(v, || {
        Some(PolicyUpdate {
            etag: policy.etag,
            targets,
            follow_up_severity,
        })
    })
}

/// A RecordFollowUpOutcome request, parsed.
struct Outcome {
    id: Uuid,
    key: RequestKey,
    actor: Actor,
    etag: String,
    outcome: FollowUpOutcome,
    note: String,
}

fn outcome_request(caller: &str, req: pb::RecordFollowUpOutcomeRequest) -> Result<Outcome, Error> {
    let mut v = Violations::new();
    let id = parse::id(&mut v, "ticket_id", &req.ticket_id);
    let outcome = match pb::FollowUpOutcome::try_from(req.outcome).ok() {
        Some(pb::FollowUpOutcome::Contacted) => Some(FollowUpOutcome::Contacted),
        Some(pb::FollowUpOutcome::Resolved) => Some(FollowUpOutcome::Resolved),
        Some(pb::FollowUpOutcome::NoAnswer) => Some(FollowUpOutcome::NoAnswer),
        _ => {
            v.add("outcome", "required: CONTACTED, RESOLVED or NO_ANSWER");
            None
        }
    };
    parse::check(&mut v, "note", text::length(&req.note, 0, 5000));
    let key = parse::key(
        &mut v,
        &req.request_id,
        caller,
        "RecordFollowUpOutcome",
        &req,
    );
    let actor = parse::actor(&mut v, caller, &req.actor_id);
    parse::finish(v, || {
        Some(Outcome {
            id: id?,
            key: key?,
            actor,
            etag: req.etag,
            outcome: outcome?,
            note: req.note,
        })
    })
}

fn follow_up_filter(req: pb::GetFollowUpReportRequest) -> Result<FollowUpFilter, Error> {
    let mut v = Violations::new();
    let (from, to) = parse::time_range(&mut v, "open_time_range", req.open_time_range.as_ref());
    let survey_ids = parse::survey_ids(&mut v, &req.survey_ids);
    parse::channels(&mut v, &req.channels);
    let triggers = req
        .triggers
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match pb::FollowUpTrigger::try_from(*t).ok() {
            Some(pb::FollowUpTrigger::NpsDetractor) => Some("nps_detractor"),
            Some(pb::FollowUpTrigger::LowCsat) => Some("low_csat"),
            _ => {
                v.add(format!("triggers[{i}]"), "not a follow-up trigger");
                None
            }
        })
        .collect();
    parse::finish(v, || {
        Some(FollowUpFilter {
            from,
            to,
            survey_ids,
            channels: req.channels,
            triggers,
        })
    })
}
