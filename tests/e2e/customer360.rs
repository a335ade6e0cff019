//! Customer 360 against the real services: every section's documented fields are filled, and
//! each enumeration comes both as the owning service's enum and as the documented slug.

use custops_contracts::custops::feedback::v1 as feedback;
use custops_contracts::custops::loyalty::v1 as loyalty;
use custops_contracts::custops::profiles::v1 as profiles;
use custops_contracts::custops::segmentation::v1 as segmentation;
use custops_e2e::{PROPAGATION, TestSuite, eventually};

const OK: i32 = profiles::Customer360SectionState::Ok as i32;

#[tokio::test]
async fn every_section_carries_its_documented_fields() -> anyhow::Result<()> {
    // Arrange: a customer with a purchase, points (Silver at 100), a detractor answer with its
    // follow-up, a complaint, a review, and two segments.
    let suite = TestSuite::start().await?;
    let mut clients = suite.clients().await?;
    let world = clients.world().await?;
    let id = clients.create_customer("c360@example.com").await?;
    let traces = clients.leave_traces(&world, &id, "c360").await?;
    let settled = eventually(PROPAGATION, || {
        let mut clients = clients.clone();
        let id = id.clone();
        async move {
            let segments = clients.segments_of(&id).await?;
            let lifecycle = clients
                .segmentation
                .get_customer_lifecycle(segmentation::GetCustomerLifecycleRequest {
                    customer_id: id,
                })
                .await?
                .into_inner()
                .lifecycle
                .unwrap_or_default();
            Ok(segments.len() == 2 && lifecycle.stage != 0)
        }
    })
    .await;
    assert!(settled, "segmentation never caught up");
    let rfm = clients
        .segmentation
        .get_customer_rfm(segmentation::GetCustomerRfmRequest {
            customer_id: id.clone(),
        })
        .await?
        .into_inner()
        .rfm
        .unwrap_or_default();
    let lifecycle = clients
        .segmentation
        .get_customer_lifecycle(segmentation::GetCustomerLifecycleRequest {
            customer_id: id.clone(),
        })
        .await?
        .into_inner()
        .lifecycle
        .unwrap_or_default();

    // Act
    let view = clients
        .profiles
        .get_customer360(profiles::GetCustomer360Request {
            customer_id: id.clone(),
            sections: Vec::new(),
            section_timeout: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
        })
        .await?
        .into_inner();

    // Assert: segments.
    let segments = view.segments.unwrap_or_default();
    assert_eq!(segments.status.as_ref().map(|s| s.state), Some(OK));
    let mut memberships: Vec<(String, String, i32, bool)> = segments
        .memberships
        .iter()
        .map(|m| {
            (
                m.segment_id.clone(),
                m.display_name.clone(),
                m.kind,
                m.enter_time.is_some(),
            )
        })
        .collect();
    memberships.sort();
    let mut expected = vec![
        (
            world.static_segment_id.clone(),
            "VIP list".to_owned(),
            segmentation::SegmentKind::Static as i32,
            true,
        ),
        (
            world.buyers_segment_id.clone(),
            "Buyers".to_owned(),
            segmentation::SegmentKind::Rule as i32,
            true,
        ),
    ];
    expected.sort();
    assert_eq!(memberships, expected);
    let stage = segmentation::LifecycleStage::try_from(lifecycle.stage)?;
    assert_eq!(segments.lifecycle_stage_value, lifecycle.stage);
    assert_eq!(
        stage,
        segmentation::LifecycleStage::New,
        "one recent purchase"
    );
    assert_eq!(segments.lifecycle_stage, "new");
    assert_eq!(segments.churn_risk, lifecycle.churn_risk);
    assert_eq!(segments.rfm_group_value, rfm.group);
    let group = segmentation::RfmGroup::try_from(rfm.group)?;
    let slug = group
        .as_str_name()
        .trim_start_matches("RFM_GROUP_")
        .to_ascii_lowercase();
    assert_eq!(
        segments.rfm_group,
        if rfm.group == 0 { String::new() } else { slug }
    );
    assert!(!segments.rfm_group.contains("RFM_GROUP"));
    assert_eq!(
        (
            segments.recency_score,
            segments.frequency_score,
            segments.monetary_score
        ),
        (rfm.recency_score, rfm.frequency_score, rfm.monetary_score)
    );

    // Assert: loyalty.
    let loyalty_section = view.loyalty.unwrap_or_default();
    assert_eq!(loyalty_section.status.as_ref().map(|s| s.state), Some(OK));
    assert_eq!(loyalty_section.memberships.len(), 1);
    let member = &loyalty_section.memberships[0];
    assert_eq!(member.program_id, world.program_id);
    assert_eq!(member.member_id, traces.member_id);
    assert_eq!(member.member_status, "active");
    assert_eq!(
        member.member_status_value,
        loyalty::MemberStatus::Active as i32
    );
    assert_eq!(
        (member.tier_id.as_str(), member.tier_name.as_str()),
        ("silver", "Silver")
    );
    assert_eq!(
        (
            member.redeemable_points,
            member.pending_points,
            member.qualifying_points,
            member.expiring_points
        ),
        (150, 0, 150, 0)
    );
    assert!(member.next_expire_time.is_none());
    assert!(member.enroll_time.is_some());

    // Assert: feedback.
    let feedback_section = view.feedback.unwrap_or_default();
    assert_eq!(feedback_section.status.as_ref().map(|s| s.state), Some(OK));
    assert_eq!(feedback_section.latest_nps_score, Some(3));
    assert_eq!(feedback_section.latest_nps_category, "detractor");
    assert_eq!(
        feedback_section.latest_nps_category_value,
        feedback::NpsCategory::Detractor as i32
    );
    assert!(feedback_section.latest_nps_time.is_some());
    assert_eq!(feedback_section.latest_csat_score, None);
    assert_eq!(feedback_section.response_count, 1);
    assert_eq!(
        feedback_section.open_ticket_count, 2,
        "the complaint and the follow-up"
    );
    assert_eq!(feedback_section.open_follow_up_count, 1);
    suite.stop().await
}
