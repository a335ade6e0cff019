//! Segment targeting against the real segmentation service started in-process: a survey aimed
//! at a segment invites its members only, responses record the customer's segments, and the
//! metrics `segment_id` filter counts only those responses.

#[allow(dead_code, reason = "the helpers are shared with the api tests")]
#[path = "api/helpers.rs"]
mod helpers;

use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::feedback::v1 as pb;
use custops_contracts::custops::segmentation::v1 as spb;
use custops_contracts::custops::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use custops_feedback::domain::ManualClock;
use custops_testkit::TestDatabase;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::helpers::{
    Client, active_survey, full_survey, reason, rid, score, spawn_app_with, submit_request,
};

/// Segmentation served over `db_url` until the token is cancelled; returns its port.
async fn start_segmentation(db_url: &str) -> anyhow::Result<(u16, CancellationToken)> {
    let settings = ServiceSettings::for_local(ServiceKind::Segmentation, db_url);
    let app = custops_segmentation::build(settings).await?;
    let port = app.port();
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = app.run_until_stopped(stop.cancelled_owned()).await;
        }
    });
    Ok((port, stop))
}

/// A static segment holding exactly `members` (who segmentation must already know).
async fn static_segment(
    client: &mut SegmentationServiceClient<tonic::transport::Channel>,
    members: &[&str],
) -> anyhow::Result<String> {
    let segment = client
        .create_segment(spb::CreateSegmentRequest {
            segment: Some(spb::Segment {
                display_name: "Survey panel".to_owned(),
                kind: spb::SegmentKind::Static.into(),
                ..Default::default()
            }),
            request_id: rid(),
            validate_only: false,
        })
        .await?
        .into_inner()
        .segment
        .unwrap_or_default();
    let upload = spb::UploadStaticMembersRequest {
        segment_id: segment.segment_id.clone(),
        mode: spb::StaticUploadMode::Add.into(),
        request_id: rid(),
        customer_ids: members.iter().map(|m| (*m).to_owned()).collect(),
    };
    let added = client
        .upload_static_members(futures_util::stream::iter(vec![upload]))
        .await?
        .into_inner();
    assert_eq!(added.added_count, members.len() as i64);
    Ok(segment.segment_id)
}

async fn invite_customer(
    client: &mut Client,
    survey_id: &str,
    customer_id: &str,
) -> Result<String, tonic::Status> {
    let n = rid();
    let invitation = client
        .create_invitation(pb::CreateInvitationRequest {
            invitation: Some(pb::Invitation {
                survey_id: survey_id.to_owned(),
                customer_id: customer_id.to_owned(),
                touchpoint: Some(pb::TouchpointRef {
                    kind: pb::TouchpointKind::Order.into(),
                    touchpoint_id: format!("order-{n}"),
                }),
                channel: "app".to_owned(),
                ..Default::default()
            }),
            request_id: n,
        })
        .await?
        .into_inner()
        .invitation
        .unwrap_or_default();
    Ok(invitation.invitation_id)
}

async fn nps_responses(client: &mut Client, segment_id: &str) -> anyhow::Result<i64> {
    let metrics = client
        .get_survey_metrics(pb::GetSurveyMetricsRequest {
            segment_id: segment_id.to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(metrics.total.map(|t| t.response_count).unwrap_or_default())
}

#[tokio::test]
async fn a_segment_targeted_survey_invites_members_and_metrics_filter_by_segment()
-> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let db_url = db.url().to_owned();
    let (port, segmentation_stop) = start_segmentation(&db_url).await?;
    let mut segmentation =
        SegmentationServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
    // Segmentation knows customers from the profiles feed; here they are written directly.
    let admin = sqlx::PgPool::connect(&db_url).await?;
    let [member_1, member_2, outsider] = [(); 3].map(|()| uuid::Uuid::now_v7().to_string());
    sqlx::query(
        "INSERT INTO segmentation.customer_facts (customer_id) \
         SELECT unnest($1::text[])",
    )
    .bind([member_1.as_str(), member_2.as_str(), outsider.as_str()])
    .execute(&admin)
    .await?;
    let panel = static_segment(&mut segmentation, &[&member_1, &member_2]).await?;
    let other = static_segment(&mut segmentation, &[&outsider]).await?;

    let mut settings = ServiceSettings::for_local(ServiceKind::Feedback, &db_url);
    settings.clients.peers.insert(
        ServiceKind::Segmentation,
        format!("http://127.0.0.1:{port}"),
    );
    let mut app = spawn_app_with(db, settings, ManualClock::new(helpers::t0())).await?;
    let mut survey = full_survey();
    if let Some(target) = survey.target.as_mut() {
        target.segment_id = panel.clone();
    }
    let survey_id = active_survey(&mut app.client, survey).await?;

    // Members are invited; the outsider is refused with the documented reason.
    let Err(refused) = invite_customer(&mut app.client, &survey_id, &outsider).await else {
        anyhow::bail!("an outsider must not be invited");
    };
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(reason(&refused), "CUSTOMER_NOT_IN_SEGMENT");
    for (customer, nps) in [(&member_1, 10), (&member_2, 3)] {
        let invitation = invite_customer(&mut app.client, &survey_id, customer).await?;
        let response = app
            .client
            .submit_response(submit_request(&invitation, vec![score("nps", nps)]))
            .await?
            .into_inner()
            .survey_response
            .unwrap_or_default();
        assert_eq!(response.segment_ids, vec![panel.clone()]);
    }
    // An untargeted survey's response from the outsider carries the outsider's segment.
    let open_survey = active_survey(&mut app.client, full_survey()).await?;
    let invitation = invite_customer(&mut app.client, &open_survey, &outsider).await?;
    app.client
        .submit_response(submit_request(&invitation, vec![score("nps", 9)]))
        .await?;

    assert_eq!(nps_responses(&mut app.client, "").await?, 3);
    assert_eq!(nps_responses(&mut app.client, &panel).await?, 2);
    assert_eq!(nps_responses(&mut app.client, &other).await?, 1);
    let panel_metrics = app
        .client
        .get_survey_metrics(pb::GetSurveyMetricsRequest {
            segment_id: panel.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .total
        .and_then(|t| t.nps)
        .unwrap_or_default();
    // One promoter, one detractor: NPS 0.
    assert_eq!(
        (panel_metrics.promoter_count, panel_metrics.detractor_count),
        (1, 1)
    );
    assert_eq!(panel_metrics.score, Some(0.0));

    // Segmentation down: a targeted invitation cannot be decided, so it is UNAVAILABLE.
    segmentation_stop.cancel();
    let Err(down) = invite_customer(&mut app.client, &survey_id, &member_1).await else {
        anyhow::bail!("membership cannot be checked while segmentation is down");
    };
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    Ok(())
}
