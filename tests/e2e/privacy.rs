//! Privacy across the suite, through the public APIs only: the data-subject export gathers
//! what every service holds about a customer, and after an erasure — plain, or after a merge
//! and its unmerge — no service returns anything of the erased customer, while the other
//! customer of the merge keeps exactly their own.

use custops_contracts::custops::feedback::v1 as feedback;
use custops_contracts::custops::loyalty::v1 as loyalty;
use custops_contracts::custops::profiles::v1 as profiles;
use custops_contracts::custops::segmentation::v1 as segmentation;
use custops_e2e::{Clients, PROPAGATION, TestSuite, Traces, World, eventually, rid};
use tonic::Code;

const OK: i32 = profiles::Customer360SectionState::Ok as i32;

/// Sorted ids, for order-insensitive comparisons.
fn sorted(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.into_iter().collect();
    ids.sort();
    ids
}

/// The parts of an export that belong to other services than profiles, as text.
fn peer_sections(export: &profiles::CustomerExport) -> String {
    format!(
        "{:?}\n{:?}\n{:?}",
        export.segmentation, export.loyalty, export.feedback
    )
}

/// Whether every service has forgotten `gone`: reads by its customer id and by the ids of what
/// it left answer nothing of theirs. Collects what still shows, so a failure says where.
async fn leftovers(clients: &mut Clients, gone: &Traces) -> anyhow::Result<Vec<String>> {
    let id = gone.customer_id.clone();
    let mut left = Vec::new();

    let customer = clients
        .profiles
        .get_customer(profiles::GetCustomerRequest {
            customer_id: id.clone(),
        })
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();
    if customer.state != profiles::CustomerState::Erased as i32
        || !customer.identities.is_empty()
        || !customer.given_name.is_empty()
    {
        left.push(format!("profiles customer {customer:?}"));
    }

    let segments = clients.segments_of(&id).await?;
    if !segments.is_empty() {
        left.push(format!("segmentation memberships {segments:?}"));
    }
    match clients
        .segmentation
        .get_customer_facts(segmentation::GetCustomerFactsRequest {
            customer_id: id.clone(),
        })
        .await
    {
        Err(status) if status.code() == Code::NotFound => {}
        other => left.push(format!("segmentation facts {other:?}")),
    }

    let members = clients
        .loyalty
        .list_members(loyalty::ListMembersRequest {
            customer_id: id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .members;
    if !members.is_empty() {
        left.push(format!("loyalty members {members:?}"));
    }
    let member = clients
        .loyalty
        .get_member(loyalty::GetMemberRequest {
            member_id: gone.member_id.clone(),
            view: 0,
        })
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    if !member.customer_id.is_empty() {
        left.push(format!("loyalty member still linked {member:?}"));
    }

    let summary = clients
        .feedback
        .get_customer_feedback_summary(feedback::GetCustomerFeedbackSummaryRequest {
            customer_id: id.clone(),
        })
        .await?
        .into_inner()
        .summary
        .unwrap_or_default();
    if summary.response_count + summary.ticket_count + summary.review_count != 0 {
        left.push(format!("feedback summary {summary:?}"));
    }
    let responses = clients
        .feedback
        .list_responses(feedback::ListResponsesRequest {
            customer_id: id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .survey_responses;
    if !responses.is_empty() {
        left.push(format!("feedback responses {responses:?}"));
    }
    let tickets = clients
        .feedback
        .list_tickets(feedback::ListTicketsRequest {
            customer_id: id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tickets;
    if !tickets.is_empty() {
        left.push(format!("feedback tickets {tickets:?}"));
    }
    let reviews = clients
        .feedback
        .list_reviews(feedback::ListReviewsRequest {
            customer_id: id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .reviews;
    if !reviews.is_empty() {
        left.push(format!("feedback reviews {reviews:?}"));
    }
    // What they left, looked up by its own id, is no longer theirs.
    let response = clients
        .feedback
        .get_response(feedback::GetResponseRequest {
            response_id: gone.response_id.clone(),
        })
        .await?
        .into_inner()
        .survey_response
        .unwrap_or_default();
    if !response.customer_id.is_empty() {
        left.push(format!(
            "feedback response {} still linked",
            response.response_id
        ));
    }
    let ticket = clients
        .feedback
        .get_ticket(feedback::GetTicketRequest {
            ticket_id: gone.ticket_id.clone(),
        })
        .await?
        .into_inner()
        .ticket
        .unwrap_or_default();
    if !ticket.customer_id.is_empty() || !ticket.subject.is_empty() {
        left.push(format!("feedback ticket {ticket:?}"));
    }
    let review = clients
        .feedback
        .get_review(feedback::GetReviewRequest {
            review_id: gone.review_id.clone(),
        })
        .await?
        .into_inner()
        .review
        .unwrap_or_default();
    if !review.customer_id.is_empty() || !review.text.is_empty() {
        left.push(format!("feedback review {review:?}"));
    }

    let mut export = clients.export(&id).await?;
    if !export.complete {
        left.push("the export is not complete".to_owned());
    }
    // Each section names the id it was asked about; everything else in it must be empty of
    // the customer.
    for echoed in [
        export.segmentation.as_mut().map(|s| &mut s.customer_id),
        export.loyalty.as_mut().map(|s| &mut s.customer_id),
        export.feedback.as_mut().map(|s| &mut s.customer_id),
    ]
    .into_iter()
    .flatten()
    {
        echoed.clear();
    }
    let peers = peer_sections(&export);
    for (what, value) in [
        ("customer id", &id),
        ("response id", &gone.response_id),
        ("ticket id", &gone.ticket_id),
        ("review id", &gone.review_id),
    ] {
        if peers.contains(value.as_str()) {
            left.push(format!(
                "the export's peer sections hold the {what}: {peers}"
            ));
        }
    }
    Ok(left)
}

/// Waits until nothing of `gone` is left anywhere; the leftovers when time runs out.
async fn until_forgotten(clients: &Clients, gone: &Traces) -> anyhow::Result<()> {
    let forgotten = eventually(PROPAGATION, || {
        let mut clients = clients.clone();
        let gone = gone.clone();
        async move { Ok(leftovers(&mut clients, &gone).await?.is_empty()) }
    })
    .await;
    if !forgotten {
        let left = leftovers(&mut clients.clone(), gone).await?;
        anyhow::bail!("still held about the erased customer: {left:#?}");
    }
    Ok(())
}

async fn erase(clients: &mut Clients, customer_id: &str) -> anyhow::Result<()> {
    clients
        .profiles
        .erase_customer(profiles::EraseCustomerRequest {
            customer_id: customer_id.to_owned(),
            request_id: rid(),
        })
        .await?;
    Ok(())
}

/// What `customer` holds in the three other services, per the export, is exactly `own`.
fn assert_holds_exactly(
    export: &profiles::CustomerExport,
    own: &Traces,
    world: &World,
) -> anyhow::Result<()> {
    let feedback = export.feedback.clone().unwrap_or_default();
    assert_eq!(
        feedback
            .responses
            .iter()
            .map(|r| r.response_id.as_str())
            .collect::<Vec<_>>(),
        [own.response_id.as_str()]
    );
    assert_eq!(
        feedback
            .reviews
            .iter()
            .map(|r| r.review_id.as_str())
            .collect::<Vec<_>>(),
        [own.review_id.as_str()]
    );
    // The complaint and the follow-up the detractor answer opened.
    assert_eq!(feedback.tickets.len(), 2, "{:?}", feedback.tickets);
    assert!(
        feedback
            .tickets
            .iter()
            .any(|t| t.ticket_id == own.ticket_id)
    );
    assert!(
        feedback
            .tickets
            .iter()
            .any(|t| t.source_response_id == own.response_id)
    );
    let loyalty = export.loyalty.clone().unwrap_or_default();
    assert_eq!(
        loyalty
            .members
            .iter()
            .filter_map(|m| m.member.as_ref().map(|m| m.member_id.as_str()))
            .collect::<Vec<_>>(),
        [own.member_id.as_str()]
    );
    let segmentation = export.segmentation.clone().unwrap_or_default();
    assert_eq!(
        sorted(
            segmentation
                .memberships
                .iter()
                .map(|m| m.segment_id.clone())
        ),
        sorted([
            world.static_segment_id.clone(),
            world.buyers_segment_id.clone()
        ])
    );
    anyhow::ensure!(
        segmentation.facts.is_some(),
        "no facts for {}",
        own.customer_id
    );
    Ok(())
}

#[tokio::test]
async fn the_export_holds_what_every_service_holds_and_an_erasure_leaves_nothing()
-> anyhow::Result<()> {
    // Arrange: a customer with data in all four services.
    let suite = TestSuite::start().await?;
    let mut clients = suite.clients().await?;
    let world = clients.world().await?;
    let id = clients.create_customer("li.wei@example.com").await?;
    let traces = clients.leave_traces(&world, &id, "a1").await?;
    let settled = eventually(PROPAGATION, || {
        let mut clients = clients.clone();
        let id = id.clone();
        let buyers = world.buyers_segment_id.clone();
        async move { Ok(clients.segments_of(&id).await?.contains(&buyers)) }
    })
    .await;
    assert!(settled, "the purchase never put the customer in Buyers");

    // Act 1: the export.
    let export = clients.export(&id).await?;

    // Assert 1: every section is there and holds the customer's data.
    assert!(export.complete, "{export:?}");
    for status in [
        &export.segmentation_status,
        &export.loyalty_status,
        &export.feedback_status,
    ] {
        assert_eq!(status.as_ref().map(|s| s.state), Some(OK), "{status:?}");
    }
    assert_eq!(export.activities.len(), 1);
    assert_holds_exactly(&export, &traces, &world)?;
    let ledger = &export.loyalty.clone().unwrap_or_default().members[0].ledger_entries;
    assert_eq!(ledger.len(), 1, "the purchase earn: {ledger:?}");
    assert_eq!(ledger[0].available_points_delta, 150);

    // Act 2: the erasure.
    erase(&mut clients, &id).await?;

    // Assert 2: every service forgets them.
    until_forgotten(&clients, &traces).await?;
    suite.stop().await
}

#[tokio::test]
async fn after_merge_unmerge_and_erase_nothing_of_the_erased_customer_is_left_anywhere()
-> anyhow::Result<()> {
    // Arrange: two customers with data everywhere; S is merged into T. Every service runs as
    // its own least-privilege role, as in production, so the whole journey also shows the
    // roles hold what the code needs (and the append-only tables stay append-only).
    let suite = TestSuite::start_as_roles().await?;
    let mut clients = suite.clients().await?;
    let world = clients.world().await?;
    let s = clients.create_customer("source@example.com").await?;
    let t = clients.create_customer("target@example.com").await?;
    let s_traces = clients.leave_traces(&world, &s, "s1").await?;
    let t_traces = clients.leave_traces(&world, &t, "t1").await?;
    let merge = clients
        .profiles
        .merge_customers(profiles::MergeCustomersRequest {
            source_customer_id: s.clone(),
            target_customer_id: t.clone(),
            request_id: rid(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .merge_record
        .unwrap_or_default();
    // The merge reaches every service: T holds S's response, and S's member is merged.
    let merged =
        eventually(PROPAGATION, || {
            let mut clients = clients.clone();
            let (t, s_member) = (t.clone(), s_traces.member_id.clone());
            async move {
                let summary = clients
                    .feedback
                    .get_customer_feedback_summary(feedback::GetCustomerFeedbackSummaryRequest {
                        customer_id: t,
                    })
                    .await?
                    .into_inner()
                    .summary
                    .unwrap_or_default();
                let member = clients
                    .loyalty
                    .get_member(loyalty::GetMemberRequest {
                        member_id: s_member,
                        view: 0,
                    })
                    .await?
                    .into_inner()
                    .member
                    .unwrap_or_default();
                Ok(summary.response_count == 2
                    && member.status == loyalty::MemberStatus::Merged as i32)
            }
        })
        .await;
    assert!(merged, "the merge never reached feedback and loyalty");

    // Act: unmerge, then erase S.
    clients
        .profiles
        .unmerge_customer(profiles::UnmergeCustomerRequest {
            merge_id: merge.merge_id.clone(),
            request_id: rid(),
            ..Default::default()
        })
        .await?;
    let separated = eventually(PROPAGATION, || {
        let mut clients = clients.clone();
        let (s, t, s_member) = (s.clone(), t.clone(), s_traces.member_id.clone());
        async move {
            let t_summary = clients
                .feedback
                .get_customer_feedback_summary(feedback::GetCustomerFeedbackSummaryRequest {
                    customer_id: t,
                })
                .await?
                .into_inner()
                .summary
                .unwrap_or_default();
            let member = clients
                .loyalty
                .get_member(loyalty::GetMemberRequest {
                    member_id: s_member,
                    view: 0,
                })
                .await?
                .into_inner()
                .member
                .unwrap_or_default();
            let s_segments = clients.segments_of(&s).await?;
            Ok(t_summary.response_count == 1
                && member.status == loyalty::MemberStatus::Active as i32
                && s_segments.len() == 2)
        }
    })
    .await;
    assert!(separated, "the unmerge never reached every service");
    erase(&mut clients, &s).await?;

    // Assert: nothing of S anywhere, and T holds exactly its own.
    until_forgotten(&clients, &s_traces).await?;
    let t_export = clients.export(&t).await?;
    assert!(t_export.complete, "{t_export:?}");
    assert_holds_exactly(&t_export, &t_traces, &world)?;
    let peers = peer_sections(&t_export);
    for value in [
        &s,
        &s_traces.response_id,
        &s_traces.ticket_id,
        &s_traces.review_id,
    ] {
        assert!(
            !peers.contains(value.as_str()),
            "T's export holds {value} of the erased S: {peers}"
        );
    }
    let t_member = &t_export.loyalty.clone().unwrap_or_default().members[0];
    assert_eq!(
        t_member
            .member
            .as_ref()
            .and_then(|m| m.balances.as_ref())
            .map(|b| b.available_points),
        Some(150),
        "T keeps exactly its own points"
    );
    suite.stop().await
}
