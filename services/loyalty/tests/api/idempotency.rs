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
    let mut responses = Vec::new();
    for call in calls {
        responses.push(call.await??.encode_to_vec());
    }
    assert!(responses.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(app.balances(&member).await?.available_points, 7);
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
