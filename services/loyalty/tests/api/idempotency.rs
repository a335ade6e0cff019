//! Request ids: a replay returns the first response byte for byte and changes nothing; the
//! same id with another payload is refused; a failed call may be retried with its id.

use custops_contracts::custops::loyalty::v1 as pb;
use prost::Message;
use tonic::Code;

use crate::helpers::{error_info, grant, program, redeem, rid, spawn_app};

#[tokio::test]
async fn a_replay_returns_the_first_response_byte_for_byte() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    let request = grant(rid(), &member, 100);

    let first = client.earn_points(request.clone()).await?.into_inner();
    // A later change, so a recomputed response would differ from the stored one.
    app.grant(&member, 5).await?;
    let replay = client.earn_points(request.clone()).await?.into_inner();

    assert_eq!(first.encode_to_vec(), replay.encode_to_vec());
    assert_eq!(app.balances(&member).await?.available_points, 105);
    let entries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger_entries WHERE request_id = $1")
            .bind(&request.request_id)
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(entries, 1);
    Ok(())
}

#[tokio::test]
async fn the_same_id_with_another_payload_is_refused() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    let id = rid();
    client.earn_points(grant(id.clone(), &member, 100)).await?;

    let status = client
        .earn_points(grant(id.clone(), &member, 101))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a reused id was applied"))?;
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(error_info(&status).0, "REQUEST_ID_REUSED");
    // Another method with the same id is another payload too.
    let status = client
        .redeem_points(redeem(id, &member, 1))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a reused id was applied to another method"))?;
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(app.balances(&member).await?.available_points, 100);
    Ok(())
}

#[tokio::test]
async fn a_failed_call_may_be_retried_with_its_id() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    let request = redeem(rid(), &member, 50);
    let status = client
        .redeem_points(request.clone())
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("overdraft accepted"))?;
    assert_eq!(status.code(), Code::FailedPrecondition);
    app.grant(&member, 80).await?;
    let redeemed = client.redeem_points(request).await?.into_inner();
    assert_eq!(
        redeemed
            .member
            .and_then(|m| m.balances)
            .map(|b| b.available_points),
        Some(30)
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_replays_apply_once() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    let request = grant(rid(), &member, 7);
    let calls = (0..20).map(|_| {
        let mut client = app.client.clone();
        let request = request.clone();
        tokio::spawn(async move { client.earn_points(request).await.map(|r| r.into_inner()) })
    });
    // Spawned before any is awaited, so they run at once.
    let calls: Vec<_> = calls.collect();
    let mut responses = Vec::new();
    for call in calls {
        responses.push(call.await??.encode_to_vec());
    }
    assert!(responses.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(app.balances(&member).await?.available_points, 7);
    Ok(())
}

#[tokio::test]
async fn a_replay_whose_work_would_now_be_refused_returns_the_first_response() -> anyhow::Result<()>
{
    // Arrange: a redemption, then another that spends what is left, so the first one's
    // request, run again, would be refused for want of points.
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    app.grant(&member, 100).await?;
    let mut client = app.client.clone();
    let first_request = redeem(rid(), &member, 60);
    let first = client
        .redeem_points(first_request.clone())
        .await?
        .into_inner();
    client.redeem_points(redeem(rid(), &member, 40)).await?;

    // Act
    let replay = client.redeem_points(first_request).await?.into_inner();

    // Assert
    assert_eq!(first.encode_to_vec(), replay.encode_to_vec());
    assert_eq!(app.balances(&member).await?.available_points, 0);
    Ok(())
}

#[tokio::test]
async fn concurrent_replays_of_a_change_without_a_ledger_entry_apply_once() -> anyhow::Result<()> {
    // Arrange: a stock adjustment makes no ledger entry, so only its idempotency key stops a
    // replay (which runs its work, then finds the key taken and rolls back).
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let reward = app.create_reward(&program_id, "Mug", 30, 5).await?;
    let request = pb::AdjustRewardStockRequest {
        request_id: rid(),
        reward_id: reward.reward_id.clone(),
        delta: 3,
        reason: "Inventory count".to_owned(),
    };

    // Act: the same request twelve times at once, then once more after they all ended.
    let calls = (0..12).map(|_| {
        let mut client = app.client.clone();
        let request = request.clone();
        tokio::spawn(async move {
            client
                .adjust_reward_stock(request)
                .await
                .map(|r| r.into_inner())
        })
    });
    // Spawned before any is awaited, so they run at once.
    let calls: Vec<_> = calls.collect();
    let mut responses = Vec::new();
    for call in calls {
        responses.push(call.await??.encode_to_vec());
    }
    let late = app
        .client
        .clone()
        .adjust_reward_stock(request)
        .await?
        .into_inner();

    // Assert: one response for all, and the stock moved once.
    assert!(responses.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(responses.first(), Some(&late.encode_to_vec()));
    assert_eq!(late.reward.map(|r| r.available_stock), Some(8));
    let stock: i64 = sqlx::query_scalar("SELECT available_stock FROM rewards")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(stock, 8);
    Ok(())
}

#[tokio::test]
async fn after_the_retention_a_key_that_made_an_entry_is_still_never_applied_twice()
-> anyhow::Result<()> {
    let app = spawn_app().await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    let mut client = app.client.clone();
    let request = grant(rid(), &member, 10);
    client.earn_points(request.clone()).await?;
    app.clock.advance(chrono::Duration::days(40));
    client
        .run_point_expiry(pb::RunPointExpiryRequest::default())
        .await?;
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(records, 0, "old records are cleaned up");
    let status = client
        .earn_points(request)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("an old key was applied again"))?;
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(error_info(&status).0, "REQUEST_ID_REUSED");
    assert_eq!(app.balances(&member).await?.available_points, 10);
    Ok(())
}
