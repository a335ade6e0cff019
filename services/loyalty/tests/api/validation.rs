//! Bad input is INVALID_ARGUMENT naming the field, or FAILED_PRECONDITION / NOT_FOUND with
//! the contract's reason; nothing is written.

use custops_contracts::custops::loyalty::v1 as pb;
use tonic::Code;

use crate::helpers::{
    TestApp, bad_fields, by_id, error_info, grant, program, redeem, rid, spawn_app,
};

async fn app_with_member() -> anyhow::Result<(TestApp, String, String)> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    Ok((app, program_id, member))
}

#[tokio::test]
async fn zero_or_negative_points_name_the_field() -> anyhow::Result<()> {
    let (app, _, member) = app_with_member().await?;
    let mut client = app.client.clone();
    for points in [0, -5] {
        let status = client
            .earn_points(grant(rid(), &member, points))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("grant of {points} accepted"))?;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["grant.points"]);
        let status = client
            .redeem_points(redeem(rid(), &member, points))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("redeem of {points} accepted"))?;
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["points"]);
    }
    assert_eq!(app.balances(&member).await?.available_points, 0);
    Ok(())
}

#[tokio::test]
async fn missing_request_id_and_every_bad_field_are_reported_together() -> anyhow::Result<()> {
    let (app, _, _) = app_with_member().await?;
    let status = app
        .client
        .clone()
        .earn_points(pb::EarnPointsRequest {
            request_id: String::new(),
            member: None,
            source: None,
            ..Default::default()
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("empty earn accepted"))?;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(bad_fields(&status), ["request_id", "member", "source"]);
    Ok(())
}

#[tokio::test]
async fn unknown_currency_and_another_currency_name_the_currency() -> anyhow::Result<()> {
    let (app, _, member) = app_with_member().await?;
    let purchase = |currency: &str| pb::EarnPointsRequest {
        request_id: rid(),
        member: by_id(&member),
        source: Some(pb::earn_points_request::Source::Purchase(pb::Purchase {
            order_id: "10023".to_owned(),
            amount: Some(custops_contracts::custops::common::v1::Money {
                amount_minor: 10_000,
                currency: currency.to_owned(),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    for currency in ["XYZ", "cny", "USD"] {
        let status = app
            .client
            .clone()
            .earn_points(purchase(currency))
            .await
            .err()
            .ok_or_else(|| anyhow::anyhow!("{currency} accepted"))?;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{currency}: {status:?}"
        );
        assert_eq!(
            bad_fields(&status),
            ["purchase.amount.currency"],
            "{currency}"
        );
    }
    let earned = app
        .client
        .clone()
        .earn_points(purchase("CNY"))
        .await?
        .into_inner();
    assert_eq!(earned.ledger_entry.map(|e| e.points), Some(100));
    Ok(())
}

#[tokio::test]
async fn unknown_program_and_member_are_not_found() -> anyhow::Result<()> {
    let (app, _, _) = app_with_member().await?;
    let unknown = uuid::Uuid::now_v7().to_string();
    let status = app
        .client
        .clone()
        .enrol_member(pb::EnrolMemberRequest {
            request_id: rid(),
            program_id: unknown.clone(),
            customer_id: uuid::Uuid::now_v7().to_string(),
            enrol_channel: String::new(),
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("enrolled in an unknown program"))?;
    assert_eq!(status.code(), Code::NotFound);
    let status = app
        .client
        .clone()
        .earn_points(grant(rid(), &unknown, 10))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("earned for an unknown member"))?;
    assert_eq!(status.code(), Code::NotFound);
    let status = app
        .client
        .clone()
        .enrol_member(pb::EnrolMemberRequest {
            request_id: rid(),
            program_id: "not-a-uuid".to_owned(),
            customer_id: String::new(),
            enrol_channel: "Bad Channel".to_owned(),
        })
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("bad enrolment accepted"))?;
    assert_eq!(
        bad_fields(&status),
        ["program_id", "customer_id", "enrol_channel"]
    );
    Ok(())
}

#[tokio::test]
async fn insufficient_points_carry_the_shortfall() -> anyhow::Result<()> {
    let (app, _, member) = app_with_member().await?;
    app.grant(&member, 30).await?;
    let status = app
        .client
        .clone()
        .redeem_points(redeem(rid(), &member, 50))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("overdraft accepted"))?;
    assert_eq!(status.code(), Code::FailedPrecondition);
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "INSUFFICIENT_POINTS");
    assert_eq!(metadata.get("shortfall").map(String::as_str), Some("20"));
    assert_eq!(
        metadata.get("available_points").map(String::as_str),
        Some("30")
    );
    assert_eq!(app.balances(&member).await?.available_points, 30);
    Ok(())
}

#[tokio::test]
async fn a_reversal_larger_than_the_earn_is_refused() -> anyhow::Result<()> {
    let (app, _, member) = app_with_member().await?;
    let earned = app.grant(&member, 100).await?;
    let entry_id = earned
        .ledger_entry
        .map(|e| e.ledger_entry_id)
        .unwrap_or_default();
    let reverse = |points: i64| pb::ReversePointsRequest {
        request_id: rid(),
        target: Some(pb::reverse_points_request::Target::LedgerEntryId(
            entry_id.clone(),
        )),
        amount: Some(pb::reverse_points_request::Amount::Points(points)),
        ..Default::default()
    };
    let status = app
        .client
        .clone()
        .reverse_points(reverse(101))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("over-reversal accepted"))?;
    assert_eq!(status.code(), Code::FailedPrecondition);
    let (reason, metadata) = error_info(&status);
    assert_eq!(reason, "REVERSAL_EXCEEDS_REMAINING");
    assert_eq!(metadata.get("field").map(String::as_str), Some("points"));
    assert_eq!(
        metadata.get("reversible_points").map(String::as_str),
        Some("100")
    );

    app.client.clone().reverse_points(reverse(60)).await?;
    let status = app
        .client
        .clone()
        .reverse_points(reverse(41))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("second over-reversal accepted"))?;
    let (_, metadata) = error_info(&status);
    assert_eq!(
        metadata.get("reversible_points").map(String::as_str),
        Some("40")
    );
    let status = app
        .client
        .clone()
        .reverse_points(reverse(0))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("zero reversal accepted"))?;
    assert_eq!(bad_fields(&status), ["points"]);
    assert_eq!(app.balances(&member).await?.available_points, 40);
    Ok(())
}

#[tokio::test]
async fn suspended_members_earn_but_cannot_spend_and_closed_ones_forfeit() -> anyhow::Result<()> {
    let (app, _, member) = app_with_member().await?;
    let mut client = app.client.clone();
    app.grant(&member, 100).await?;
    client
        .suspend_member(pb::SuspendMemberRequest {
            member: by_id(&member),
            reason: "Fraud review".to_owned(),
            operator_id: "agent-7".to_owned(),
        })
        .await?;
    let status = client
        .redeem_points(redeem(rid(), &member, 10))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a suspended member spent points"))?;
    assert_eq!(error_info(&status).0, "MEMBER_NOT_ACTIVE");
    app.grant(&member, 20).await?;
    client
        .reactivate_member(pb::ReactivateMemberRequest {
            member: by_id(&member),
            ..Default::default()
        })
        .await?;
    client.redeem_points(redeem(rid(), &member, 10)).await?;

    let closed = client
        .close_member(pb::CloseMemberRequest {
            member: by_id(&member),
            reason: "Customer left".to_owned(),
            operator_id: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(closed.forfeit_entry.map(|e| e.points), Some(-110));
    assert_eq!(
        closed.member.map(|m| m.status),
        Some(pb::MemberStatus::Closed as i32)
    );
    let status = client
        .earn_points(grant(rid(), &member, 5))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a closed member earned"))?;
    assert_eq!(error_info(&status).0, "MEMBER_NOT_ACTIVE");
    crate::helpers::assert_ledger_invariants(&app.pool).await
}
