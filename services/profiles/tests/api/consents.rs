//! Consent decisions, their ordering and the audit trail.

use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::profiles::v1 as pb;
use tonic::Code;

use crate::support::{
    bad_fields, create, customer, expect_code, outbox_types, spawn_app, time, unique_email,
};

fn decision(
    channel: common::ContactChannel,
    status: pb::ConsentStatus,
    change_time: Option<prost_types::Timestamp>,
) -> pb::Consent {
    pb::Consent {
        channel: channel as i32,
        status: status as i32,
        source: "preference_centre".to_owned(),
        actor: Some(pb::Actor {
            actor_kind: pb::ActorKind::Customer as i32,
            ..Default::default()
        }),
        change_time,
        record_time: None,
    }
}

#[tokio::test]
async fn consent_changes_are_applied_in_decision_order_and_audited() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let c = create(&app, customer(&unique_email("consent"))).await?;
    let update = |consents: Vec<pb::Consent>| pb::UpdateConsentRequest {
        customer_id: c.customer_id.clone(),
        consents,
        ..Default::default()
    };

    let granted = client
        .update_consent(update(vec![decision(
            common::ContactChannel::Sms,
            pb::ConsentStatus::Granted,
            Some(time(-60)),
        )]))
        .await?
        .into_inner();
    let repeated = client
        .update_consent(update(vec![decision(
            common::ContactChannel::Sms,
            pb::ConsentStatus::Granted,
            None,
        )]))
        .await?
        .into_inner();
    let older = client
        .update_consent(update(vec![decision(
            common::ContactChannel::Sms,
            pb::ConsentStatus::Withdrawn,
            Some(time(-3600)),
        )]))
        .await?
        .into_inner();
    let withdrawn = client
        .update_consent(update(vec![decision(
            common::ContactChannel::Sms,
            pb::ConsentStatus::Withdrawn,
            None,
        )]))
        .await?
        .into_inner();

    assert_eq!(granted.consent_changes.len(), 1);
    assert!(repeated.consent_changes.is_empty());
    assert_eq!(
        older
            .consent_changes
            .iter()
            .map(|c| c.superseded)
            .collect::<Vec<_>>(),
        [true]
    );
    let status = |r: &pb::UpdateConsentResponse| {
        r.customer
            .as_ref()
            .and_then(|c| c.consents.first())
            .map(|c| c.status)
    };
    assert_eq!(status(&older), Some(pb::ConsentStatus::Granted as i32));
    assert_eq!(
        status(&withdrawn),
        Some(pb::ConsentStatus::Withdrawn as i32)
    );
    let trail = client
        .list_consent_changes(pb::ListConsentChangesRequest {
            customer_id: c.customer_id.clone(),
            page_size: 2,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(trail.consent_changes.len(), 2);
    assert_eq!(
        trail.consent_changes[0].new_status,
        pb::ConsentStatus::Withdrawn as i32
    );
    assert_eq!(
        trail.consent_changes[0]
            .actor
            .as_ref()
            .map(|a| a.service.as_str()),
        Some("anonymous")
    );
    let rest = client
        .list_consent_changes(pb::ListConsentChangesRequest {
            customer_id: c.customer_id.clone(),
            page_size: 2,
            page_token: trail.next_page_token.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(rest.consent_changes.len(), 1);
    // Two applied changes, two events; the superseded one emitted nothing.
    let events = outbox_types(&app, &c.customer_id).await?;
    assert_eq!(
        events
            .iter()
            .filter(|t| t.ends_with("ConsentChanged"))
            .count(),
        2
    );
    Ok(())
}

#[tokio::test]
async fn bad_consent_requests_name_the_field() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let c = create(&app, customer(&unique_email("consent"))).await?;
    let mut bad = decision(
        common::ContactChannel::Email,
        pb::ConsentStatus::Unspecified,
        Some(time(3600)),
    );
    bad.source = "Bad Source".to_owned();
    let repeated = decision(
        common::ContactChannel::Email,
        pb::ConsentStatus::Granted,
        None,
    );
    let request = pb::UpdateConsentRequest {
        customer_id: c.customer_id.clone(),
        consents: vec![bad, repeated],
        ..Default::default()
    };

    let status = expect_code(client.update_consent(request).await, Code::InvalidArgument)?;

    assert_eq!(
        bad_fields(&status),
        [
            "consents[0].status",
            "consents[0].source",
            "consents[0].change_time",
            "consents[1].channel"
        ]
    );
    let empty = pb::UpdateConsentRequest {
        customer_id: c.customer_id.clone(),
        ..Default::default()
    };
    assert_eq!(
        bad_fields(&expect_code(
            client.update_consent(empty).await,
            Code::InvalidArgument
        )?),
        ["consents"]
    );
    let unknown = pb::UpdateConsentRequest {
        customer_id: uuid::Uuid::now_v7().to_string(),
        consents: vec![decision(
            common::ContactChannel::Email,
            pb::ConsentStatus::Granted,
            None,
        )],
        ..Default::default()
    };
    expect_code(client.update_consent(unknown).await, Code::NotFound)?;
    Ok(())
}

#[tokio::test]
async fn a_consent_request_id_is_bound_to_its_payload() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let c = create(&app, customer(&unique_email("consent"))).await?;
    let request = |status| pb::UpdateConsentRequest {
        customer_id: c.customer_id.clone(),
        consents: vec![decision(common::ContactChannel::Email, status, None)],
        request_id: "opt-1".to_owned(),
        ..Default::default()
    };

    let first = client
        .update_consent(request(pb::ConsentStatus::Granted))
        .await?
        .into_inner();
    let replay = client
        .update_consent(request(pb::ConsentStatus::Granted))
        .await?
        .into_inner();
    let reused = client
        .update_consent(request(pb::ConsentStatus::Withdrawn))
        .await;

    // The replay answers the first response, the change it recorded included.
    assert_eq!(first.consent_changes.len(), 1);
    assert_eq!(replay, first);
    let status = expect_code(reused, Code::AlreadyExists)?;
    assert_eq!(
        crate::support::reason(&status).as_deref(),
        Some("REQUEST_ID_REUSED")
    );
    let trail = client
        .list_consent_changes(pb::ListConsentChangesRequest {
            customer_id: c.customer_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(trail.consent_changes.len(), 1);
    Ok(())
}
