//! Customer 360: the profile part is always complete; other services' sections are flagged
//! when they cannot be fetched, never failing the call.

use custops_common::service::ServiceKind;
use custops_contracts::custops::profiles::v1 as pb;
use tonic::Code;

use crate::support::{
    bad_fields, create, customer, expect_code, purchase, spawn_app, spawn_app_with, unique_email,
};

fn state(status: Option<&pb::Customer360SectionStatus>) -> i32 {
    status.map_or(0, |s| s.state)
}

#[tokio::test]
async fn the_profile_part_is_complete_and_missing_peers_are_flagged() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let c = create(&app, customer(&unique_email("360"))).await?;
    for (i, amount) in [1000, 2500].into_iter().enumerate() {
        let activity = purchase(&c.customer_id, &format!("p-{i}"), amount);
        client
            .record_activity(pb::RecordActivityRequest {
                activity: Some(activity),
                customer_identity: None,
            })
            .await?;
    }

    let view = client
        .get_customer360(pb::GetCustomer360Request {
            customer_id: c.customer_id.clone(),
            sections: vec![
                pb::Customer360Section::Segments as i32,
                pb::Customer360Section::Loyalty as i32,
            ],
            section_timeout: None,
        })
        .await?
        .into_inner();

    assert_eq!(
        view.customer.map(|c| c.customer_id),
        Some(c.customer_id.clone())
    );
    let summary = view.activity_summary.unwrap_or_default();
    assert_eq!(summary.purchase_count, 2);
    assert_eq!(
        summary
            .net_spend
            .iter()
            .map(|m| (m.currency.as_str(), m.amount_minor))
            .collect::<Vec<_>>(),
        [("CNY", 3500)]
    );
    assert_eq!(
        state(view.segments.as_ref().and_then(|s| s.status.as_ref())),
        pb::Customer360SectionState::Unavailable as i32
    );
    assert_eq!(
        state(view.loyalty.as_ref().and_then(|s| s.status.as_ref())),
        pb::Customer360SectionState::Unavailable as i32
    );
    assert_eq!(
        state(view.feedback.as_ref().and_then(|s| s.status.as_ref())),
        pb::Customer360SectionState::NotRequested as i32
    );
    let bad = pb::GetCustomer360Request {
        customer_id: c.customer_id.clone(),
        sections: vec![7],
        section_timeout: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
    };
    assert_eq!(
        bad_fields(&expect_code(
            client.get_customer360(bad).await,
            Code::InvalidArgument
        )?),
        ["sections[0]", "section_timeout"]
    );
    expect_code(
        client
            .get_customer360(pb::GetCustomer360Request {
                customer_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    )?;
    Ok(())
}

#[tokio::test]
async fn a_silent_peer_costs_one_section_timeout_and_a_dead_one_is_unavailable()
-> anyhow::Result<()> {
    // A listener that never answers (the handshake never completes) and a closed port.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let silent_url = format!("http://{}", silent.local_addr()?);
    let app = spawn_app_with(|settings| {
        settings
            .clients
            .peers
            .insert(ServiceKind::Loyalty, silent_url);
        settings
            .clients
            .peers
            .insert(ServiceKind::Feedback, format!("http://{closed}"));
    })
    .await?;
    let c = create(&app, customer(&unique_email("360"))).await?;

    let started = std::time::Instant::now();
    let view = app
        .client
        .clone()
        .get_customer360(pb::GetCustomer360Request {
            customer_id: c.customer_id.clone(),
            sections: Vec::new(),
            section_timeout: Some(prost_types::Duration {
                seconds: 0,
                nanos: 200_000_000,
            }),
        })
        .await?
        .into_inner();

    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        state(view.loyalty.as_ref().and_then(|s| s.status.as_ref())),
        pb::Customer360SectionState::DeadlineExceeded as i32
    );
    let feedback = state(view.feedback.as_ref().and_then(|s| s.status.as_ref()));
    assert!(
        feedback == pb::Customer360SectionState::Unavailable as i32
            || feedback == pb::Customer360SectionState::DeadlineExceeded as i32,
        "{feedback}"
    );
    assert!(view.customer.is_some());
    drop(silent);
    Ok(())
}
