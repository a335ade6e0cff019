//! Entitlements follow the member's current tier; a customer who is not enrolled is simply not
//! entitled.

use custops_contracts::custops::loyalty::v1 as pb;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{by_id, program, rid, spawn_app};

#[tokio::test]
async fn free_shipping_comes_with_silver() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut with_benefit = program(pb::ClawbackPolicy::WithinBalance, 0);
    with_benefit.tiers[1].benefits = vec![pb::Benefit {
        benefit_code: "free_shipping".to_owned(),
        kind: pb::BenefitKind::FreeShipping as i32,
        display_name: "Free shipping".to_owned(),
        ..Default::default()
    }];
    let program_id = app.create_program(with_benefit).await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    let check = |member: Option<pb::MemberRef>, code: &str| pb::CheckEntitlementRequest {
        member,
        benefit_code: code.to_owned(),
    };

    let before = client
        .check_entitlement(check(by_id(&member), "free_shipping"))
        .await?
        .into_inner();
    assert!(!before.entitled);
    assert_eq!(
        before.not_entitled_reason,
        pb::NotEntitledReason::TierNotEligible as i32
    );
    assert_eq!(before.lowest_eligible_tier_code, "silver");

    client
        .adjust_points(pb::AdjustPointsRequest {
            request_id: rid(),
            member: by_id(&member),
            qualifying_points: 500,
            reason: "Status match".to_owned(),
            ..Default::default()
        })
        .await?;
    let after = client
        .check_entitlement(check(by_id(&member), "free_shipping"))
        .await?
        .into_inner();
    assert!(after.entitled);
    assert_eq!(after.tier_code, "silver");
    assert!(after.entitlement.and_then(|e| e.valid_until_time).is_some());
    let listed = client
        .list_entitlements(pb::ListEntitlementsRequest {
            member: by_id(&member),
        })
        .await?
        .into_inner();
    assert_eq!(listed.entitlements.len(), 1);

    let stranger = Some(pb::MemberRef {
        key: Some(pb::member_ref::Key::ProgramCustomer(pb::ProgramCustomer {
            program_id: program_id.clone(),
            customer_id: Uuid::now_v7().to_string(),
        })),
    });
    let not_enrolled = client
        .check_entitlement(check(stranger, "free_shipping"))
        .await?
        .into_inner();
    assert_eq!(
        not_enrolled.not_entitled_reason,
        pb::NotEntitledReason::NotEnrolled as i32
    );
    let unknown = client
        .check_entitlement(check(by_id(&member), "lounge_access"))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("an unknown benefit was answered"))?;
    assert_eq!(unknown.code(), Code::NotFound);
    Ok(())
}
