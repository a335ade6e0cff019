//! What feedback holds per customer, read by customer id: the summary (open follow-ups
//! included), the lists filtered by customer, the data-subject export, and the refusal of a
//! customer id that is not a UUID. `holdings` and `seed` are shared with the profiles feed
//! tests, which move a customer's data around.

use chrono::Duration;
use custops_contracts::custops::feedback::v1 as pb;

use crate::helpers::{
    Client, TestApp, active_survey, fields, full_survey, rid, score, spawn_app, submit_request,
};

/// The ids of everything a customer's reads return, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Holdings {
    pub(crate) invitations: Vec<String>,
    pub(crate) responses: Vec<String>,
    pub(crate) tickets: Vec<String>,
    pub(crate) reviews: Vec<String>,
}

impl Holdings {
    /// Both customers' holdings together.
    pub(crate) fn and(&self, other: &Holdings) -> Holdings {
        let join = |a: &[String], b: &[String]| {
            let mut all: Vec<String> = a.iter().chain(b).cloned().collect();
            all.sort();
            all
        };
        Holdings {
            invitations: join(&self.invitations, &other.invitations),
            responses: join(&self.responses, &other.responses),
            tickets: join(&self.tickets, &other.tickets),
            reviews: join(&self.reviews, &other.reviews),
        }
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// What ListInvitations, ListResponses, ListTickets and ListReviews return for `customer_id`.
pub(crate) async fn holdings(client: &mut Client, customer_id: &str) -> anyhow::Result<Holdings> {
    let invitations = client
        .list_invitations(pb::ListInvitationsRequest {
            customer_id: customer_id.to_owned(),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .invitations;
    let responses = client
        .list_responses(pb::ListResponsesRequest {
            customer_id: customer_id.to_owned(),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .survey_responses;
    let tickets = client
        .list_tickets(pb::ListTicketsRequest {
            customer_id: customer_id.to_owned(),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .tickets;
    let reviews = client
        .list_reviews(pb::ListReviewsRequest {
            customer_id: customer_id.to_owned(),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .reviews;
    Ok(Holdings {
        invitations: sorted(invitations.into_iter().map(|i| i.invitation_id).collect()),
        responses: sorted(responses.into_iter().map(|r| r.response_id).collect()),
        tickets: sorted(tickets.into_iter().map(|t| t.ticket_id).collect()),
        reviews: sorted(reviews.into_iter().map(|r| r.review_id).collect()),
    })
}

/// The ids of everything in a customer's export, each list sorted.
pub(crate) fn exported(export: &pb::CustomerDataExport) -> Holdings {
    Holdings {
        invitations: sorted(
            export
                .invitations
                .iter()
                .map(|i| i.invitation_id.clone())
                .collect(),
        ),
        responses: sorted(
            export
                .responses
                .iter()
                .map(|r| r.response_id.clone())
                .collect(),
        ),
        tickets: sorted(export.tickets.iter().map(|t| t.ticket_id.clone()).collect()),
        reviews: sorted(export.reviews.iter().map(|r| r.review_id.clone()).collect()),
    }
}

pub(crate) async fn export(
    client: &mut Client,
    customer_id: &str,
) -> anyhow::Result<pb::CustomerDataExport> {
    Ok(client
        .export_customer_data(pb::ExportCustomerDataRequest {
            customer_id: customer_id.to_owned(),
        })
        .await?
        .into_inner()
        .customer_data_export
        .unwrap_or_default())
}

pub(crate) async fn summary(
    client: &mut Client,
    customer_id: &str,
) -> anyhow::Result<pb::CustomerFeedbackSummary> {
    Ok(client
        .get_customer_feedback_summary(pb::GetCustomerFeedbackSummaryRequest {
            customer_id: customer_id.to_owned(),
        })
        .await?
        .into_inner()
        .summary
        .unwrap_or_default())
}

/// The free text a seeded customer wrote: it must be gone after an erasure.
pub(crate) const PRIVATE_TEXT: &str = "my address is 1 Main St";

/// Gives `customer_id`, through the API, one of each thing feedback holds: an answered
/// invitation (a detractor NPS and a free-text answer) with its follow-up ticket, a complaint
/// ticket with a note, and a review. Each an hour after the previous, on the app's clock.
pub(crate) async fn seed(
    app: &mut TestApp,
    survey_id: &str,
    customer_id: &str,
) -> anyhow::Result<Holdings> {
    let n = rid();
    let invitation = app
        .client
        .create_invitation(pb::CreateInvitationRequest {
            invitation: Some(pb::Invitation {
                survey_id: survey_id.to_owned(),
                customer_id: customer_id.to_owned(),
                touchpoint: Some(pb::TouchpointRef {
                    kind: pb::TouchpointKind::Order.into(),
                    touchpoint_id: format!("order-{n}"),
                }),
                channel: "email".to_owned(),
                ..Default::default()
            }),
            request_id: n,
        })
        .await?
        .into_inner()
        .invitation
        .unwrap_or_default();
    app.clock.advance(Duration::hours(1));
    let mut submit = submit_request(&invitation.invitation_id, vec![score("nps", 3)]);
    submit.answers.push(pb::Answer {
        question_id: "comment".to_owned(),
        value: Some(pb::answer::Value::Text(PRIVATE_TEXT.to_owned())),
    });
    let response = app
        .client
        .submit_response(submit)
        .await?
        .into_inner()
        .survey_response
        .unwrap_or_default();
    app.clock.advance(Duration::hours(1));
    let complaint = app
        .client
        .open_ticket(pb::OpenTicketRequest {
            customer_id: customer_id.to_owned(),
            category: "delivery".to_owned(),
            severity: pb::TicketSeverity::High.into(),
            channel: "phone".to_owned(),
            subject: PRIVATE_TEXT.to_owned(),
            description: PRIVATE_TEXT.to_owned(),
            request_id: rid(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    app.clock.advance(Duration::hours(1));
    app.client
        .add_ticket_note(pb::AddTicketNoteRequest {
            ticket_id: complaint.ticket_id.clone(),
            note: PRIVATE_TEXT.to_owned(),
            actor_id: "agent-1".to_owned(),
            request_id: rid(),
        })
        .await?;
    app.clock.advance(Duration::hours(1));
    let review = app
        .client
        .create_review(pb::CreateReviewRequest {
            review: Some(pb::Review {
                customer_id: customer_id.to_owned(),
                subject: Some(pb::ReviewSubject {
                    kind: pb::ReviewSubjectKind::Product.into(),
                    subject_id: "sku-1".to_owned(),
                }),
                rating: 2,
                title: "Meh".to_owned(),
                text: PRIVATE_TEXT.to_owned(),
                ..Default::default()
            }),
            request_id: rid(),
        })
        .await?
        .into_inner()
        .review
        .unwrap_or_default();
    app.clock.advance(Duration::hours(1));
    Ok(Holdings {
        invitations: vec![invitation.invitation_id],
        responses: vec![response.response_id],
        tickets: sorted(vec![response.follow_up_ticket_id, complaint.ticket_id]),
        reviews: vec![review.review_id],
    })
}

fn customer() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[tokio::test]
async fn a_customer_id_that_is_not_a_uuid_is_refused_on_every_read_and_write() -> anyhow::Result<()>
{
    let mut app = spawn_app().await?;
    let bad = "cust-1".to_owned();
    let c = &mut app.client;
    // (call, the field it must name)
    let outcomes = [
        (
            c.get_customer_feedback_summary(pb::GetCustomerFeedbackSummaryRequest {
                customer_id: bad.clone(),
            })
            .await
            .err(),
            "customer_id",
        ),
        (
            c.export_customer_data(pb::ExportCustomerDataRequest {
                customer_id: bad.clone(),
            })
            .await
            .err(),
            "customer_id",
        ),
        (
            c.list_responses(pb::ListResponsesRequest {
                customer_id: bad.clone(),
                ..Default::default()
            })
            .await
            .err(),
            "customer_id",
        ),
        (
            c.list_tickets(pb::ListTicketsRequest {
                customer_id: bad.clone(),
                ..Default::default()
            })
            .await
            .err(),
            "customer_id",
        ),
        (
            c.list_reviews(pb::ListReviewsRequest {
                customer_id: bad.clone(),
                ..Default::default()
            })
            .await
            .err(),
            "customer_id",
        ),
        (
            c.list_invitations(pb::ListInvitationsRequest {
                customer_id: bad.clone(),
                ..Default::default()
            })
            .await
            .err(),
            "customer_id",
        ),
        (
            c.open_ticket(pb::OpenTicketRequest {
                customer_id: bad.clone(),
                category: "delivery".to_owned(),
                severity: pb::TicketSeverity::Low.into(),
                channel: "phone".to_owned(),
                subject: "Late".to_owned(),
                request_id: rid(),
                ..Default::default()
            })
            .await
            .err(),
            "customer_id",
        ),
        (
            c.create_review(pb::CreateReviewRequest {
                review: Some(pb::Review {
                    customer_id: bad.clone(),
                    subject: Some(pb::ReviewSubject {
                        kind: pb::ReviewSubjectKind::Product.into(),
                        subject_id: "sku-1".to_owned(),
                    }),
                    rating: 4,
                    ..Default::default()
                }),
                request_id: rid(),
            })
            .await
            .err(),
            "review.customer_id",
        ),
    ];
    for (i, (status, field)) in outcomes.iter().enumerate() {
        let status = status
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("call {i} accepted `{bad}`"))?;
        assert_eq!(fields(status), [*field], "call {i}");
    }
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let invite = app
        .client
        .create_invitation(pb::CreateInvitationRequest {
            invitation: Some(pb::Invitation {
                survey_id,
                customer_id: bad,
                touchpoint: Some(pb::TouchpointRef {
                    kind: pb::TouchpointKind::Order.into(),
                    touchpoint_id: "o-1".to_owned(),
                }),
                ..Default::default()
            }),
            request_id: rid(),
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("CreateInvitation accepted a malformed customer id"))?;
    assert_eq!(fields(&invite), ["invitation.customer_id"]);
    Ok(())
}

#[tokio::test]
async fn a_customer_id_is_read_in_its_canonical_form() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let id = customer();
    let seeded = seed(&mut app, &survey_id, &id.to_uppercase()).await?;
    assert_eq!(holdings(&mut app.client, &id).await?, seeded);
    let s = summary(&mut app.client, &id.to_uppercase()).await?;
    assert_eq!((s.customer_id.as_str(), s.response_count), (id.as_str(), 1));
    Ok(())
}

#[tokio::test]
async fn the_summary_counts_open_follow_ups() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let id = customer();
    // A detractor's follow-up and a complaint, both open.
    let seeded = seed(&mut app, &survey_id, &id).await?;
    let s = summary(&mut app.client, &id).await?;
    assert_eq!(
        (s.open_ticket_count, s.open_follow_up_count, s.ticket_count),
        (2, 1, 2)
    );
    let follow_up = app
        .client
        .list_tickets(pb::ListTicketsRequest {
            customer_id: id.clone(),
            kinds: vec![pb::TicketKind::FollowUp.into()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .tickets
        .into_iter()
        .next()
        .map(|t| t.ticket_id)
        .unwrap_or_default();
    assert!(seeded.tickets.contains(&follow_up));
    // IN_PROGRESS is still open.
    app.client
        .start_ticket(pb::StartTicketRequest {
            ticket_id: follow_up.clone(),
            ..Default::default()
        })
        .await?;
    let s = summary(&mut app.client, &id).await?;
    assert_eq!((s.open_ticket_count, s.open_follow_up_count), (2, 1));
    // Resolved it is not; the complaint never counted.
    app.client
        .resolve_ticket(pb::ResolveTicketRequest {
            ticket_id: follow_up,
            resolution: Some(pb::TicketResolution {
                code: pb::ResolutionCode::Explained.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    let s = summary(&mut app.client, &id).await?;
    assert_eq!(
        (s.open_ticket_count, s.open_follow_up_count, s.ticket_count),
        (1, 0, 2)
    );
    Ok(())
}

#[tokio::test]
async fn the_export_holds_everything_of_the_customer_oldest_first() -> anyhow::Result<()> {
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    let id = customer();
    let other = customer();
    let first = seed(&mut app, &survey_id, &id).await?;
    seed(&mut app, &survey_id, &other).await?;
    let second = seed(&mut app, &survey_id, &id).await?;

    let e = export(&mut app.client, &id).await?;
    assert_eq!(e.customer_id, id);
    assert_eq!(exported(&e), first.and(&second));
    assert!(e.export_time.is_some());
    // Oldest first, in every list.
    let first_of = |ids: Vec<&String>| ids.first().map(|s| (*s).clone()).unwrap_or_default();
    assert_eq!(
        first_of(e.invitations.iter().map(|i| &i.invitation_id).collect()),
        first.invitations[0]
    );
    assert_eq!(
        first_of(e.responses.iter().map(|r| &r.response_id).collect()),
        first.responses[0]
    );
    assert_eq!(
        first_of(e.reviews.iter().map(|r| &r.review_id).collect()),
        first.reviews[0]
    );
    let opened: Vec<i64> = e
        .tickets
        .iter()
        .map(|t| {
            t.create_time
                .as_ref()
                .map(|c| c.seconds)
                .unwrap_or_default()
        })
        .collect();
    assert!(opened.windows(2).all(|w| w[0] <= w[1]), "{opened:?}");
    let history: Vec<i64> = e
        .ticket_history
        .iter()
        .map(|h| h.occur_time.as_ref().map(|c| c.seconds).unwrap_or_default())
        .collect();
    assert!(history.windows(2).all(|w| w[0] <= w[1]), "{history:?}");
    // Responses carry their answers; the history covers both tickets of each seed, notes
    // included.
    assert!(e.responses.iter().all(|r| {
        r.answers
            .iter()
            .any(|a| matches!(&a.value, Some(pb::answer::Value::Text(t)) if t == PRIVATE_TEXT))
    }));
    let mut history_tickets: Vec<String> = e
        .ticket_history
        .iter()
        .map(|h| h.ticket_id.clone())
        .collect();
    history_tickets.sort();
    history_tickets.dedup();
    assert_eq!(history_tickets, exported(&e).tickets);
    assert!(e.ticket_history.iter().any(|h| h.note == PRIVATE_TEXT));

    // Someone feedback never heard of: an empty export, not NOT_FOUND.
    let stranger = export(&mut app.client, &customer()).await?;
    assert_eq!(exported(&stranger), Holdings::default());
    assert!(stranger.ticket_history.is_empty());
    Ok(())
}
