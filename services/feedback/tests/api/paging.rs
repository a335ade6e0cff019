//! Every list pages one way (custops_common::paging): a listing of whole pages ends on its last
//! full page, with no empty page after it, and a page token is refused with other filters.

use std::future::Future;

use custops_contracts::custops::feedback::v1 as pb;

use crate::helpers::{Client, active_survey, fields, full_survey, respond, rid, score, spawn_app};

/// The sizes of the pages a listing answers, following `next_page_token` from the first page.
async fn page_sizes<F, Fut>(mut list: F) -> anyhow::Result<Vec<usize>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = anyhow::Result<(usize, String)>>,
{
    let mut sizes = Vec::new();
    let mut token = String::new();
    loop {
        let (size, next) = list(token).await?;
        sizes.push(size);
        if next.is_empty() || sizes.len() > 10 {
            return Ok(sizes);
        }
        token = next;
    }
}

fn open_request() -> pb::OpenTicketRequest {
    pb::OpenTicketRequest {
        customer_id: uuid::Uuid::now_v7().to_string(),
        category: "delivery".to_owned(),
        severity: pb::TicketSeverity::Medium.into(),
        channel: "phone".to_owned(),
        subject: "Parcel late".to_owned(),
        request_id: rid(),
        ..Default::default()
    }
}

async fn open_ticket(client: &mut Client) -> anyhow::Result<String> {
    Ok(client
        .open_ticket(open_request())
        .await?
        .into_inner()
        .ticket
        .map(|t| t.ticket_id)
        .unwrap_or_default())
}

#[tokio::test]
async fn every_listing_of_whole_pages_ends_on_its_last_full_page() -> anyhow::Result<()> {
    // Arrange: four of everything (responses answered by promoters, so no follow-up tickets).
    let mut app = spawn_app().await?;
    let survey_id = active_survey(&mut app.client, full_survey()).await?;
    for _ in 0..3 {
        app.client
            .create_survey(pb::CreateSurveyRequest {
                survey: Some(full_survey()),
                request_id: rid(),
            })
            .await?;
    }
    for _ in 0..4 {
        respond(&mut app.client, &survey_id, "email", vec![score("nps", 9)]).await?;
    }
    let ticket_id = open_ticket(&mut app.client).await?;
    for _ in 0..3 {
        open_ticket(&mut app.client).await?;
    }
    for i in 0..3 {
        app.client
            .add_ticket_note(pb::AddTicketNoteRequest {
                ticket_id: ticket_id.clone(),
                note: format!("note {i}"),
                actor_id: String::new(),
                request_id: rid(),
            })
            .await?;
    }
    for rating in 1..=4 {
        app.client
            .create_review(pb::CreateReviewRequest {
                review: Some(pb::Review {
                    customer_id: uuid::Uuid::now_v7().to_string(),
                    subject: Some(pb::ReviewSubject {
                        kind: pb::ReviewSubjectKind::Product.into(),
                        subject_id: "sku-1".to_owned(),
                    }),
                    rating,
                    ..Default::default()
                }),
                request_id: rid(),
            })
            .await?;
    }
    let client = app.client.clone();

    // Act: each list, two at a time.
    let surveys = page_sizes(|page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_surveys(pb::ListSurveysRequest {
                    page_size: 2,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((page.surveys.len(), page.next_page_token))
        }
    })
    .await?;
    let invitations = page_sizes(|page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_invitations(pb::ListInvitationsRequest {
                    page_size: 2,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((page.invitations.len(), page.next_page_token))
        }
    })
    .await?;
    let responses = page_sizes(|page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_responses(pb::ListResponsesRequest {
                    page_size: 2,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((page.survey_responses.len(), page.next_page_token))
        }
    })
    .await?;
    let tickets = page_sizes(|page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_tickets(pb::ListTicketsRequest {
                    page_size: 2,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((page.tickets.len(), page.next_page_token))
        }
    })
    .await?;
    let history = page_sizes(|page_token| {
        let (mut client, ticket_id) = (client.clone(), ticket_id.clone());
        async move {
            let page = client
                .list_ticket_history(pb::ListTicketHistoryRequest {
                    ticket_id,
                    page_size: 2,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((page.entries.len(), page.next_page_token))
        }
    })
    .await?;
    let reviews = page_sizes(|page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_reviews(pb::ListReviewsRequest {
                    page_size: 2,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((page.reviews.len(), page.next_page_token))
        }
    })
    .await?;

    // Assert: two full pages each, the second without a token.
    for (list, sizes) in [
        ("surveys", surveys),
        ("invitations", invitations),
        ("responses", responses),
        ("tickets", tickets),
        ("ticket history", history),
        ("reviews", reviews),
    ] {
        assert_eq!(sizes, [2, 2], "{list}");
    }
    Ok(())
}

#[tokio::test]
async fn a_page_token_sent_with_other_filters_is_refused_on_page_token() -> anyhow::Result<()> {
    // Arrange: three tickets, one with a note; the first page of each listing.
    let mut app = spawn_app().await?;
    let ticket_id = open_ticket(&mut app.client).await?;
    let other_ticket_id = open_ticket(&mut app.client).await?;
    open_ticket(&mut app.client).await?;
    app.client
        .add_ticket_note(pb::AddTicketNoteRequest {
            ticket_id: ticket_id.clone(),
            note: "called back".to_owned(),
            actor_id: String::new(),
            request_id: rid(),
        })
        .await?;
    let tickets = app
        .client
        .list_tickets(pb::ListTicketsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await?
        .into_inner();
    let history = app
        .client
        .list_ticket_history(pb::ListTicketHistoryRequest {
            ticket_id: ticket_id.clone(),
            page_size: 1,
            page_token: String::new(),
        })
        .await?
        .into_inner();

    // Act: the tokens with other filters (another status, another ticket), and with another
    // page size.
    let other_status = app
        .client
        .list_tickets(pb::ListTicketsRequest {
            page_size: 2,
            page_token: tickets.next_page_token.clone(),
            statuses: vec![pb::TicketStatus::Open.into()],
            ..Default::default()
        })
        .await;
    let other_ticket = app
        .client
        .list_ticket_history(pb::ListTicketHistoryRequest {
            ticket_id: other_ticket_id,
            page_size: 1,
            page_token: history.next_page_token.clone(),
        })
        .await;
    let other_size = app
        .client
        .list_tickets(pb::ListTicketsRequest {
            page_size: 5,
            page_token: tickets.next_page_token,
            ..Default::default()
        })
        .await?
        .into_inner();

    // Assert: refused on page_token; another page size pages on from the same place.
    for refused in [other_status.err(), other_ticket.err()] {
        let status = refused.unwrap_or_else(|| tonic::Status::ok(""));
        assert_eq!(fields(&status), ["page_token"]);
    }
    assert_eq!(
        (
            other_size.tickets.len(),
            other_size.next_page_token.as_str()
        ),
        (1, "")
    );
    Ok(())
}
