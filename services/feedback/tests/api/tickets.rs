//! Tickets: the workflow and its refusals, full history, SLA due times from the (configurable)
//! policy, breach and near-breach lists under a manual clock, follow-up outcomes.

use chrono::Duration;
use custops_contracts::custops::feedback::v1 as pb;
use tonic::Code;

use crate::helpers::{
    Client, active_survey, fields, full_survey, reason, respond, rid, score, spawn_app,
};

fn open_request(severity: pb::TicketSeverity) -> pb::OpenTicketRequest {
    pb::OpenTicketRequest {
        customer_id: uuid::Uuid::now_v7().to_string(),
        category: "delivery".to_owned(),
        severity: severity.into(),
        channel: "phone".to_owned(),
        subject: "Parcel late".to_owned(),
        request_id: rid(),
        ..Default::default()
    }
}

async fn open(client: &mut Client, severity: pb::TicketSeverity) -> anyhow::Result<pb::Ticket> {
    Ok(client
        .open_ticket(open_request(severity))
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default())
}

fn ts_secs(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().map(|t| t.seconds).unwrap_or_default()
}

#[tokio::test]
async fn a_ticket_walks_the_workflow_and_keeps_its_history() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let t = open(&mut app.client, pb::TicketSeverity::Medium).await?;
    assert_eq!(t.status(), pb::TicketStatus::Open);
    let sla = t.sla.unwrap_or_default();
    // Medium: first response 4 h, resolution 72 h.
    assert_eq!(
        ts_secs(&sla.respond_due_time) - ts_secs(&t.create_time),
        4 * 3600
    );
    assert_eq!(
        ts_secs(&sla.resolve_due_time) - ts_secs(&t.create_time),
        72 * 3600
    );
    let id = t.ticket_id.clone();

    app.client
        .assign_ticket(pb::AssignTicketRequest {
            ticket_id: id.clone(),
            assignee_id: "agent-7".to_owned(),
            ..Default::default()
        })
        .await?;
    app.client
        .start_ticket(pb::StartTicketRequest {
            ticket_id: id.clone(),
            ..Default::default()
        })
        .await?;
    let resolved = app
        .client
        .resolve_ticket(pb::ResolveTicketRequest {
            ticket_id: id.clone(),
            resolution: Some(pb::TicketResolution {
                code: pb::ResolutionCode::Compensated.into(),
                note: "voucher".to_owned(),
                compensation: None,
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    assert_eq!(resolved.status(), pb::TicketStatus::Resolved);
    assert_eq!(resolved.assignee_id, "agent-7");
    app.client
        .close_ticket(pb::CloseTicketRequest {
            ticket_id: id.clone(),
            ..Default::default()
        })
        .await?;
    let reopened = app
        .client
        .reopen_ticket(pb::ReopenTicketRequest {
            ticket_id: id.clone(),
            reason: "came back".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    assert_eq!(reopened.status(), pb::TicketStatus::Open);
    assert!(reopened.resolution.is_none());

    let got = app
        .client
        .get_ticket(pb::GetTicketRequest { ticket_id: id })
        .await?
        .into_inner();
    let actions: Vec<pb::TicketAction> = got.history.iter().map(|e| e.action()).collect();
    assert_eq!(
        actions,
        [
            pb::TicketAction::Opened,
            pb::TicketAction::Assigned,
            pb::TicketAction::Started,
            pb::TicketAction::Resolved,
            pb::TicketAction::Closed,
            pb::TicketAction::Reopened,
        ]
    );
    assert_eq!(got.history[5].note, "came back");
    Ok(())
}

#[tokio::test]
async fn invalid_transitions_are_refused() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let t = open(&mut app.client, pb::TicketSeverity::Low).await?;
    let id = t.ticket_id;
    let resolve = pb::ResolveTicketRequest {
        ticket_id: id.clone(),
        resolution: Some(pb::TicketResolution {
            code: pb::ResolutionCode::Fixed.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let refusals = [
        app.client.resolve_ticket(resolve.clone()).await.err(),
        app.client
            .close_ticket(pb::CloseTicketRequest {
                ticket_id: id.clone(),
                ..Default::default()
            })
            .await
            .err(),
        app.client
            .reopen_ticket(pb::ReopenTicketRequest {
                ticket_id: id.clone(),
                reason: "x".to_owned(),
                ..Default::default()
            })
            .await
            .err(),
    ];
    for status in refusals {
        let status = status.unwrap_or_else(|| tonic::Status::ok(""));
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert_eq!(reason(&status), "INVALID_TICKET_TRANSITION");
    }
    app.client
        .start_ticket(pb::StartTicketRequest {
            ticket_id: id.clone(),
            ..Default::default()
        })
        .await?;
    let again = app
        .client
        .start_ticket(pb::StartTicketRequest {
            ticket_id: id.clone(),
            ..Default::default()
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(again, Some(Code::FailedPrecondition));
    // A missing resolution code is a bad argument, not a transition problem.
    let no_code = app
        .client
        .resolve_ticket(pb::ResolveTicketRequest {
            ticket_id: id.clone(),
            resolution: None,
            ..Default::default()
        })
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(fields(&no_code), ["resolution.code"]);
    // Nothing of the refused calls is in the history.
    let history = app
        .client
        .get_ticket(pb::GetTicketRequest { ticket_id: id })
        .await?
        .into_inner()
        .history;
    assert_eq!(history.len(), 2);
    Ok(())
}

#[tokio::test]
async fn bad_tickets_name_the_field() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let mut request = open_request(pb::TicketSeverity::Unspecified);
    request.category = "Bad Category".to_owned();
    request.subject = String::new();
    let status = app
        .client
        .open_ticket(request)
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(fields(&status), ["category", "severity", "subject"]);
    Ok(())
}

#[tokio::test]
async fn breached_and_near_breach_lists_follow_the_clock() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    // High: first response within 1 h. Low: within 24 h.
    let high = open(&mut app.client, pb::TicketSeverity::High).await?;
    let low = open(&mut app.client, pb::TicketSeverity::Low).await?;
    let list = |breached_only: bool, near: Option<i64>| pb::ListTicketsRequest {
        breached_only,
        near_breach_within: near.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
        ..Default::default()
    };
    let ids = |r: pb::ListTicketsResponse| {
        r.tickets
            .into_iter()
            .map(|t| t.ticket_id)
            .collect::<Vec<_>>()
    };

    assert!(
        ids(app
            .client
            .list_tickets(list(true, None))
            .await?
            .into_inner())
        .is_empty()
    );
    let near = ids(app
        .client
        .list_tickets(list(false, Some(2 * 3600)))
        .await?
        .into_inner());
    assert_eq!(near, std::slice::from_ref(&high.ticket_id));

    app.clock.advance(Duration::hours(2));
    let breached = app
        .client
        .list_tickets(list(true, None))
        .await?
        .into_inner();
    assert_eq!(breached.tickets.len(), 1);
    assert!(
        breached.tickets[0]
            .sla
            .unwrap_or_default()
            .response_breached
    );
    assert_eq!(breached.tickets[0].ticket_id, high.ticket_id);
    let near = ids(app
        .client
        .list_tickets(list(false, Some(23 * 3600)))
        .await?
        .into_inner());
    assert_eq!(near, std::slice::from_ref(&low.ticket_id));

    // Starting the low ticket meets its first response: its next due time is the resolution.
    app.client
        .start_ticket(pb::StartTicketRequest {
            ticket_id: low.ticket_id.clone(),
            ..Default::default()
        })
        .await?;
    assert!(
        ids(app
            .client
            .list_tickets(list(false, Some(23 * 3600)))
            .await?
            .into_inner())
        .is_empty()
    );

    // Work-queue order: most urgent first.
    let queue = ids(app
        .client
        .list_tickets(pb::ListTicketsRequest {
            order_by: pb::TicketOrderBy::NextDueTime.into(),
            ..Default::default()
        })
        .await?
        .into_inner());
    assert_eq!(queue, [high.ticket_id, low.ticket_id]);

    let both = app
        .client
        .list_tickets(list(true, Some(60)))
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(fields(&both), ["near_breach_within"]);
    Ok(())
}

#[tokio::test]
async fn the_sla_policy_is_configurable() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let mut policy = app
        .client
        .get_sla_policy(pb::GetSlaPolicyRequest {})
        .await?
        .into_inner()
        .sla_policy
        .unwrap_or_default();
    assert_eq!(policy.targets.len(), 4);
    for t in &mut policy.targets {
        if t.severity() == pb::TicketSeverity::Medium {
            t.first_response = Some(prost_types::Duration {
                seconds: 600,
                nanos: 0,
            });
        }
    }
    app.client
        .update_sla_policy(pb::UpdateSlaPolicyRequest {
            sla_policy: Some(policy.clone()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["targets".to_owned()],
            }),
        })
        .await?;
    let t = open(&mut app.client, pb::TicketSeverity::Medium).await?;
    let sla = t.sla.unwrap_or_default();
    assert_eq!(
        ts_secs(&sla.respond_due_time) - ts_secs(&t.create_time),
        600
    );

    policy.targets.pop();
    let status = app
        .client
        .update_sla_policy(pb::UpdateSlaPolicyRequest {
            sla_policy: Some(policy),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["targets".to_owned()],
            }),
        })
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(status.code(), Code::InvalidArgument);
    Ok(())
}

/// Whether UpdateSlaPolicy accepts the MEDIUM target (first response, resolution); `Err` names
/// the target's field refused and part of the description.
async fn medium_target(
    client: &mut Client,
    first_response: prost_types::Duration,
    resolution: prost_types::Duration,
) -> anyhow::Result<Result<(), (String, String)>> {
    let mut policy = client
        .get_sla_policy(pb::GetSlaPolicyRequest {})
        .await?
        .into_inner()
        .sla_policy
        .unwrap_or_default();
    let mut index = 0;
    for (i, t) in policy.targets.iter_mut().enumerate() {
        if t.severity() == pb::TicketSeverity::Medium {
            t.first_response = Some(first_response);
            t.resolution = Some(resolution);
            index = i;
        }
    }
    policy.etag = String::new();
    let result = client
        .update_sla_policy(pb::UpdateSlaPolicyRequest {
            sla_policy: Some(policy),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["targets".to_owned()],
            }),
        })
        .await;
    Ok(match result {
        Ok(_) => Ok(()),
        Err(status) => {
            use tonic_types::StatusExt;
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            let violations = status
                .get_details_bad_request()
                .map(|b| b.field_violations)
                .unwrap_or_default();
            assert_eq!(violations.len(), 1, "{violations:?}");
            let prefix = format!("sla_policy.targets[{index}].");
            Err((
                violations[0]
                    .field
                    .strip_prefix(&prefix)
                    .unwrap_or(&violations[0].field)
                    .to_owned(),
                violations[0].description.clone(),
            ))
        }
    })
}

#[tokio::test]
async fn sla_targets_are_bounded_as_the_contract_says() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    const DAY: i64 = 24 * 3600;
    let d = |seconds: i64, nanos: i32| prost_types::Duration { seconds, nanos };
    // (first response, resolution) → accepted, or the field refused and why.
    let cases = [
        (d(60, 0), d(60, 0), None),
        (d(90 * DAY, 0), d(365 * DAY, 0), None),
        (
            d(90 * DAY + 1, 0),
            d(365 * DAY, 0),
            Some(("first_response", "1 minute to 90 days")),
        ),
        (
            d(59, 0),
            d(3600, 0),
            Some(("first_response", "1 minute to 90 days")),
        ),
        (
            d(3600, 0),
            d(365 * DAY + 1, 0),
            Some(("resolution", "1 minute to 365 days")),
        ),
        (
            d(600, 500_000_000),
            d(3600, 0),
            Some(("first_response", "whole seconds")),
        ),
        (
            d(7200, 0),
            d(3600, 0),
            Some(("resolution", "shorter than first_response")),
        ),
    ];
    for (first_response, resolution, expected) in cases {
        let case = format!("{first_response:?} / {resolution:?}");
        let outcome = medium_target(&mut app.client, first_response, resolution).await?;
        match (outcome, expected) {
            (Ok(()), None) => {}
            (Err((field, description)), Some((expected_field, expected_text))) => {
                assert_eq!(field, expected_field, "{case}");
                assert!(description.contains(expected_text), "{case}: {description}");
            }
            (outcome, expected) => panic!("{case}: {outcome:?}, expected {expected:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn follow_up_outcomes_are_recorded() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let r = respond(&mut app.client, &survey_id, "email", vec![score("nps", 3)]).await?;
    let outcome = |outcome: pb::FollowUpOutcome| pb::RecordFollowUpOutcomeRequest {
        ticket_id: r.follow_up_ticket_id.clone(),
        outcome: outcome.into(),
        note: "called".to_owned(),
        request_id: rid(),
        ..Default::default()
    };
    let t = app
        .client
        .record_follow_up_outcome(outcome(pb::FollowUpOutcome::NoAnswer))
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    assert_eq!(t.status(), pb::TicketStatus::Open);
    let t = app
        .client
        .record_follow_up_outcome(outcome(pb::FollowUpOutcome::Contacted))
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    assert_eq!(t.status(), pb::TicketStatus::InProgress);
    let t = app
        .client
        .record_follow_up_outcome(outcome(pb::FollowUpOutcome::Resolved))
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    assert_eq!(t.status(), pb::TicketStatus::Resolved);
    let follow_up = t.follow_up.unwrap_or_default();
    assert_eq!(follow_up.outcomes.len(), 3);
    assert!(follow_up.first_outcome_time.is_some());
    let late = app
        .client
        .record_follow_up_outcome(outcome(pb::FollowUpOutcome::Contacted))
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(reason(&late), "INVALID_TICKET_TRANSITION");

    let complaint = app
        .client
        .open_ticket(open_request(pb::TicketSeverity::Low))
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    let mut wrong = outcome(pb::FollowUpOutcome::Contacted);
    wrong.ticket_id = complaint.ticket_id;
    let status = app
        .client
        .record_follow_up_outcome(wrong)
        .await
        .err()
        .unwrap_or_else(|| tonic::Status::ok(""));
    assert_eq!(reason(&status), "NOT_A_FOLLOW_UP");
    Ok(())
}

#[tokio::test]
async fn the_follow_up_report_counts_within_sla_late_and_pending() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    // Three detractors (one also low CSAT) at t0: follow-up severity MEDIUM, 4 h to respond.
    let a = respond(
        &mut app.client,
        &survey_id,
        "email",
        vec![score("nps", 1), score("csat", 1)],
    )
    .await?;
    let b = respond(&mut app.client, &survey_id, "email", vec![score("nps", 2)]).await?;
    let _c = respond(&mut app.client, &survey_id, "email", vec![score("nps", 3)]).await?;
    let record = |ticket_id: &str, outcome: pb::FollowUpOutcome| pb::RecordFollowUpOutcomeRequest {
        ticket_id: ticket_id.to_owned(),
        outcome: outcome.into(),
        request_id: rid(),
        ..Default::default()
    };
    // a: followed up within an hour; b: after five hours (late); c: never.
    app.clock.advance(Duration::hours(1));
    app.client
        .record_follow_up_outcome(record(
            &a.follow_up_ticket_id,
            pb::FollowUpOutcome::Contacted,
        ))
        .await?;
    let report = |app_client: &mut Client| {
        let mut client = app_client.clone();
        async move {
            anyhow::Ok(
                client
                    .get_follow_up_report(pb::GetFollowUpReportRequest::default())
                    .await?
                    .into_inner()
                    .report
                    .unwrap_or_default(),
            )
        }
    };
    let r = report(&mut app.client).await?;
    assert_eq!(
        (r.follow_up_count, r.nps_detractor_count, r.low_csat_count),
        (3, 3, 1)
    );
    assert_eq!(
        (
            r.followed_up_count,
            r.within_sla_count,
            r.late_count,
            r.pending_count
        ),
        (1, 1, 0, 2)
    );
    assert_eq!(r.within_sla_percent, Some(100.0));

    app.clock.advance(Duration::hours(4));
    app.client
        .record_follow_up_outcome(record(
            &b.follow_up_ticket_id,
            pb::FollowUpOutcome::NoAnswer,
        ))
        .await?;
    let r = report(&mut app.client).await?;
    assert_eq!(
        (
            r.followed_up_count,
            r.within_sla_count,
            r.late_count,
            r.pending_count
        ),
        (2, 1, 2, 0)
    );
    assert_eq!(
        r.within_sla_percent.map(|p| (p * 100.0).round() / 100.0),
        Some(33.33)
    );
    assert_eq!(
        (r.contacted_count, r.resolved_count, r.no_answer_count),
        (1, 0, 1)
    );
    Ok(())
}

#[tokio::test]
async fn a_severity_change_moves_the_due_times_not_yet_met() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let t = open(&mut app.client, pb::TicketSeverity::Low).await?;
    app.clock.advance(Duration::minutes(10));
    let mut edit = t.clone();
    edit.severity = pb::TicketSeverity::Critical.into();
    let updated = app
        .client
        .update_ticket(pb::UpdateTicketRequest {
            ticket: Some(edit),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["severity".to_owned()],
            }),
            actor_id: "agent-1".to_owned(),
        })
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    let sla = updated.sla.unwrap_or_default();
    // Critical: 15 min / 4 h from the open time, not from the change.
    assert_eq!(
        ts_secs(&sla.respond_due_time) - ts_secs(&t.create_time),
        15 * 60
    );
    assert_eq!(
        ts_secs(&sla.resolve_due_time) - ts_secs(&t.create_time),
        4 * 3600
    );
    // A stale etag is refused.
    let stale = app
        .client
        .update_ticket(pb::UpdateTicketRequest {
            ticket: Some(pb::Ticket {
                subject: "x".to_owned(),
                ..t.clone()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["subject".to_owned()],
            }),
            actor_id: String::new(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(stale, Some(Code::Aborted));

    // History, page by page.
    for i in 0..3 {
        app.client
            .add_ticket_note(pb::AddTicketNoteRequest {
                ticket_id: t.ticket_id.clone(),
                note: format!("note {i}"),
                actor_id: String::new(),
                request_id: rid(),
            })
            .await?;
    }
    let mut actions = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .client
            .list_ticket_history(pb::ListTicketHistoryRequest {
                ticket_id: t.ticket_id.clone(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        actions.extend(page.entries.iter().map(|e| e.action()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        actions,
        [
            pb::TicketAction::Opened,
            pb::TicketAction::Updated,
            pb::TicketAction::NoteAdded,
            pb::TicketAction::NoteAdded,
            pb::TicketAction::NoteAdded,
        ]
    );
    Ok(())
}

#[tokio::test]
async fn transitions_replay_on_their_request_id() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let t = open(&mut app.client, pb::TicketSeverity::Low).await?;
    let start = pb::StartTicketRequest {
        ticket_id: t.ticket_id.clone(),
        request_id: rid(),
        ..Default::default()
    };
    let first = app
        .client
        .start_ticket(start.clone())
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    // A retry of the same call succeeds with the ticket as it is, instead of an invalid transition.
    let replay = app
        .client
        .start_ticket(start)
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    assert_eq!(replay.status(), pb::TicketStatus::InProgress);
    assert_eq!(replay.etag, first.etag);
    let history = app
        .client
        .get_ticket(pb::GetTicketRequest {
            ticket_id: t.ticket_id,
        })
        .await?
        .into_inner()
        .history;
    assert_eq!(history.len(), 2);
    Ok(())
}
