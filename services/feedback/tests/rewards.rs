//! Survey rewards through the real loyalty service started in-process: delivered exactly
//! once even when loyalty is down while the responses arrive.

#[allow(dead_code, reason = "the helpers are shared with the api tests")]
#[path = "api/helpers.rs"]
mod helpers;

use std::time::Duration;

use chrono::Utc;
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::feedback::v1 as pb;
use custops_contracts::custops::loyalty::v1 as lpb;
use custops_contracts::custops::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use custops_feedback::domain::clock::ManualClock;
use custops_testkit::{TestDatabase, eventually};
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    active_survey, full_survey, invite, rid, score, spawn_app_with, submit_request,
};

/// Loyalty served on `port` (0: any) over `db_url` until the token is cancelled.
async fn start_loyalty(
    db_url: &str,
    port: u16,
) -> anyhow::Result<(u16, CancellationToken, tokio::task::JoinHandle<()>)> {
    let mut settings = ServiceSettings::for_local(ServiceKind::Loyalty, db_url);
    settings.server.listen_addr.set_port(port);
    let app = custops_loyalty::build(settings).await?;
    let port = app.port();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = app.run_until_stopped(stop.cancelled_owned()).await;
        }
    });
    Ok((port, stop, task))
}

fn program() -> lpb::Program {
    lpb::Program {
        display_name: "Acme Rewards".to_owned(),
        currency: "CNY".to_owned(),
        earning_rules: Some(lpb::EarningRules {
            base_rate: Some(lpb::EarnRate {
                points: 1,
                per_amount_minor: 100,
            }),
            rounding_mode: lpb::RoundingMode::Down.into(),
            ..Default::default()
        }),
        expiry_policy: Some(lpb::ExpiryPolicy {
            expire_after_days: 0,
        }),
        clawback_policy: lpb::ClawbackPolicy::WithinBalance.into(),
        tiers: vec![lpb::Tier {
            tier_code: "member".to_owned(),
            display_name: "Member".to_owned(),
            ..Default::default()
        }],
        tier_policy: Some(lpb::TierPolicy {
            qualifying_window_days: 365,
            review_schedule: lpb::TierReviewSchedule::Anniversary.into(),
            review_period_months: 12,
            grace_period_days: 30,
            downgrade_mode: lpb::TierDowngradeMode::ToQualifiedTier.into(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn rewards_reach_loyalty_exactly_once_across_a_loyalty_outage() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let db_url = db.url().to_owned();
    let (port, loyalty_stop, loyalty_task) = start_loyalty(&db_url, 0).await?;
    let mut loyalty = LoyaltyServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
    let program_id = loyalty
        .create_program(lpb::CreateProgramRequest {
            request_id: rid(),
            program: Some(program()),
        })
        .await?
        .into_inner()
        .program
        .map(|p| p.program_id)
        .unwrap_or_default();
    // Invitations are created for this customer (each about another order).
    let customer_id = uuid::Uuid::now_v7().to_string();
    loyalty
        .enrol_member(lpb::EnrolMemberRequest {
            request_id: rid(),
            program_id: program_id.clone(),
            customer_id: customer_id.clone(),
            enrol_channel: "app".to_owned(),
        })
        .await?;

    let mut settings = ServiceSettings::for_local(ServiceKind::Feedback, &db_url);
    settings
        .clients
        .peers
        .insert(ServiceKind::Loyalty, format!("http://127.0.0.1:{port}"));
    let mut app = spawn_app_with(db, settings, ManualClock::new(Utc::now())).await?;
    let mut survey = full_survey();
    survey.reward = Some(pb::SurveyReward {
        points: 7,
        program_id: program_id.clone(),
    });
    let survey_id = active_survey(&mut app.client, survey).await?;

    // Loyalty goes down; 100 rewarded responses arrive.
    loyalty_stop.cancel();
    loyalty_task.await?;
    for _ in 0..100 {
        let invitation_id = invite_customer(&mut app.client, &survey_id, &customer_id).await?;
        let r = app
            .client
            .submit_response(submit_request(&invitation_id, vec![score("nps", 9)]))
            .await?
            .into_inner()
            .survey_response
            .unwrap_or_default();
        assert_eq!(r.reward.map(|w| w.points), Some(7));
    }
    // The worker tries, fails and backs off.
    let pool = app.pool.clone();
    let retrying = eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM feedback.responses WHERE reward_status = 'retrying'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
            n == 100
        }
    })
    .await;
    assert!(retrying, "rewards were not retried while loyalty was down");

    // Loyalty comes back on the same address: every reward is paid, once.
    let (_, loyalty_stop, _task) = start_loyalty(&db_url, port).await?;
    let delivered = eventually(Duration::from_secs(30), || {
        let pool = pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM feedback.responses WHERE reward_status = 'delivered'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
            n == 100
        }
    })
    .await;
    assert!(
        delivered,
        "rewards were not all delivered after loyalty came back"
    );
    let mut loyalty = LoyaltyServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
    let entries = loyalty
        .list_ledger_entries(lpb::ListLedgerEntriesRequest {
            member: Some(lpb::MemberRef {
                key: Some(lpb::member_ref::Key::ProgramCustomer(
                    lpb::ProgramCustomer {
                        program_id: program_id.clone(),
                        customer_id: customer_id.clone(),
                    },
                )),
            }),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .ledger_entries;
    let earns: Vec<&lpb::LedgerEntry> = entries
        .iter()
        .filter(|e| e.kind() == lpb::LedgerEntryKind::Earn)
        .collect();
    assert_eq!(earns.len(), 100);
    assert!(
        earns
            .iter()
            .all(|e| e.points == 7 && e.request_id.starts_with("feedback-survey-reward-"))
    );
    let mut keys: Vec<&str> = earns.iter().map(|e| e.request_id.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 100);
    let granted: i64 = sqlx::query_scalar("SELECT count(*) FROM feedback.outbox WHERE type = 'custops.feedback.v1.SurveyRewardGranted'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(granted, 100);
    loyalty_stop.cancel();
    Ok(())
}

#[tokio::test]
async fn a_reward_for_a_customer_loyalty_does_not_know_is_rejected_and_can_be_retried()
-> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let db_url = db.url().to_owned();
    let (port, loyalty_stop, _task) = start_loyalty(&db_url, 0).await?;
    let mut settings = ServiceSettings::for_local(ServiceKind::Feedback, &db_url);
    settings
        .clients
        .peers
        .insert(ServiceKind::Loyalty, format!("http://127.0.0.1:{port}"));
    let mut app = spawn_app_with(db, settings, ManualClock::new(Utc::now())).await?;
    let mut survey = full_survey();
    survey.reward = Some(pb::SurveyReward {
        points: 5,
        program_id: uuid::Uuid::now_v7().to_string(),
    });
    let survey_id = active_survey(&mut app.client, survey).await?;
    let invitation_id = invite(&mut app.client, &survey_id, "email").await?;
    let r = app
        .client
        .submit_response(submit_request(&invitation_id, vec![score("nps", 10)]))
        .await?
        .into_inner()
        .survey_response
        .unwrap_or_default();
    let mut client = app.client.clone();
    let response_id = r.response_id.clone();
    let rejected = eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        let response_id = response_id.clone();
        async move {
            client
                .get_response(pb::GetResponseRequest { response_id })
                .await
                .ok()
                .and_then(|r| r.into_inner().survey_response)
                .and_then(|r| r.reward)
                .is_some_and(|w| w.status() == pb::RewardStatus::Rejected)
        }
    })
    .await;
    assert!(rejected);
    let again = client
        .retry_reward(pb::RetryRewardRequest {
            response_id: r.response_id,
        })
        .await?
        .into_inner()
        .survey_response
        .and_then(|r| r.reward)
        .unwrap_or_default();
    assert!(matches!(
        again.status(),
        pb::RewardStatus::Pending | pb::RewardStatus::Retrying | pb::RewardStatus::Rejected
    ));
    loyalty_stop.cancel();
    Ok(())
}

async fn invite_customer(
    client: &mut crate::helpers::Client,
    survey_id: &str,
    customer_id: &str,
) -> anyhow::Result<String> {
    let n = rid();
    Ok(client
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
        .map(|i| i.invitation_id)
        .unwrap_or_default())
}
