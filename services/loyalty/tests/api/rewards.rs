//! Rewards: 50 members racing for a stock of 10 redeem it exactly 10 times.

use std::time::Duration;

use custops_contracts::custops::loyalty::v1 as pb;
use tonic::Code;

use crate::helpers::{by_id, error_info, program, rid, spawn_app_with_settings};

#[tokio::test]
async fn a_stock_of_ten_is_redeemed_exactly_ten_times_by_fifty_members() -> anyhow::Result<()> {
    // A lock timeout far below how long the redemptions ahead hold the reward's row: what a
    // loaded machine does to the default (where this test once saw ABORTED). Every answer
    // must still be the reward or OUT_OF_STOCK.
    let app = spawn_app_with_settings(|settings| {
        settings.database.max_connections = 20;
        settings.database.lock_timeout = Duration::from_millis(15);
    })
    .await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let reward = app
        .create_reward(&program_id, "Coffee voucher", 40, 10)
        .await?;
    let mut members = Vec::new();
    for _ in 0..50 {
        let member = app.enrol(&program_id).await?;
        app.grant(&member, 100).await?;
        members.push(member);
    }

    let calls: Vec<_> = members
        .iter()
        .map(|member| {
            let mut client = app.client.clone();
            let request = pb::RedeemRewardRequest {
                request_id: rid(),
                member: by_id(member),
                reward_id: reward.reward_id.clone(),
                quantity: 1,
                ..Default::default()
            };
            tokio::spawn(async move { client.redeem_reward(request).await })
        })
        .collect();
    let mut redeemed = 0;
    for call in calls {
        match call.await? {
            Ok(_) => redeemed += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(error_info(&status).0, "REWARD_OUT_OF_STOCK");
            }
        }
    }
    assert_eq!(redeemed, 10);
    let listed = app
        .client
        .clone()
        .list_reward_redemptions(pb::ListRewardRedemptionsRequest {
            reward_id: reward.reward_id.clone(),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(listed.reward_redemptions.len(), 10);
    let after = app
        .client
        .clone()
        .get_reward(pb::GetRewardRequest {
            reward_id: reward.reward_id,
        })
        .await?
        .into_inner()
        .reward
        .unwrap_or_default();
    assert_eq!((after.available_stock, after.redeemed_quantity), (0, 10));
    let spent: i64 = sqlx::query_scalar(
        "SELECT coalesce(-sum(points), 0)::bigint FROM ledger_entries WHERE kind = 2",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(spent, 400);
    crate::helpers::assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn a_reversed_redemption_returns_points_and_stock_once() -> anyhow::Result<()> {
    let app = crate::helpers::spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let mut client = app.client.clone();
    let reward = app.create_reward(&program_id, "Mug", 30, 5).await?;
    let member = app.enrol(&program_id).await?;
    app.grant(&member, 100).await?;
    let redeemed = client
        .redeem_reward(pb::RedeemRewardRequest {
            request_id: rid(),
            member: by_id(&member),
            reward_id: reward.reward_id.clone(),
            quantity: 2,
            ..Default::default()
        })
        .await?
        .into_inner();
    let redemption_id = redeemed
        .reward_redemption
        .map(|r| r.reward_redemption_id)
        .unwrap_or_default();
    assert_eq!(redeemed.reward.map(|r| r.available_stock), Some(3));
    assert_eq!(app.balances(&member).await?.available_points, 40);

    let reverse = || pb::ReverseRewardRedemptionRequest {
        request_id: rid(),
        reward_redemption_id: redemption_id.clone(),
        ..Default::default()
    };
    let reversed = client
        .reverse_reward_redemption(reverse())
        .await?
        .into_inner();
    assert_eq!(reversed.reward.map(|r| r.available_stock), Some(5));
    assert_eq!(app.balances(&member).await?.available_points, 100);
    let again = client
        .reverse_reward_redemption(reverse())
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("reversed twice"))?;
    assert_eq!(error_info(&again).0, "ALREADY_REVERSED");

    let renamed = client
        .update_reward(pb::UpdateRewardRequest {
            reward: Some(pb::Reward {
                reward_id: reward.reward_id.clone(),
                display_name: "Big mug".to_owned(),
                etag: reward.etag.clone(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".to_owned()],
            }),
        })
        .await?
        .into_inner()
        .reward
        .unwrap_or_default();
    assert_eq!(
        (renamed.display_name.as_str(), renamed.available_stock),
        ("Big mug", 5)
    );
    let redeemable = client
        .list_rewards(pb::ListRewardsRequest {
            program_id: program_id.clone(),
            redeemable_only: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(redeemable.rewards.len(), 1);
    let stock = |delta: i64| pb::AdjustRewardStockRequest {
        request_id: rid(),
        reward_id: reward.reward_id.clone(),
        delta,
        reason: "Inventory count".to_owned(),
    };
    assert_eq!(
        client
            .adjust_reward_stock(stock(-5))
            .await?
            .into_inner()
            .reward
            .map(|r| r.available_stock),
        Some(0)
    );
    let negative = client
        .adjust_reward_stock(stock(-1))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("stock went negative"))?;
    assert_eq!(error_info(&negative).0, "STOCK_WOULD_BE_NEGATIVE");
    let out_of_stock = client
        .list_rewards(pb::ListRewardsRequest {
            program_id,
            redeemable_only: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(out_of_stock.rewards.is_empty());
    crate::helpers::assert_ledger_invariants(&app.pool).await
}
