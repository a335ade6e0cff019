//! Calls waiting on one member's row lock cannot take the whole pool: each gives up after the
//! lock timeout (ABORTED, retryable), and an unrelated call is answered within the bounded
//! pool wait instead of hanging behind them.

use std::time::{Duration, Instant};

use custops_contracts::custops::loyalty::v1 as pb;
use tonic::Code;

use crate::helpers::{assert_ledger_invariants, grant, program, rid, spawn_app_with_pool};

#[tokio::test]
async fn waiters_on_a_locked_member_give_up_and_leave_the_pool_to_others() -> anyhow::Result<()> {
    // Arrange: a pool of 10, two members, and the hot member's balance row held by another
    // session (as a long transaction of another replica would).
    let app = spawn_app_with_pool(10).await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let hot = app.enrol(&program_id).await?;
    let other = app.enrol(&program_id).await?;
    app.grant(&hot, 100).await?;
    let mut held = app.pool.begin().await?;
    sqlx::query("SELECT 1 FROM balances WHERE member_id = $1::uuid FOR UPDATE")
        .bind(&hot)
        .execute(&mut *held)
        .await?;

    // Act: earns on the hot member wait on its row, one per pooled connection beside the one
    // the earn runner keeps (its group skips the locked member; each earn then runs alone).
    let waiting_earns = 10 - 1;
    let mut waiters = Vec::new();
    for _ in 0..waiting_earns {
        let mut client = app.client.clone();
        let request = grant(rid(), &hot, 5);
        waiters.push(tokio::spawn(async move {
            client.earn_points(request).await.err().map(|s| s.code())
        }));
    }
    let all_waiting = custops_testkit::eventually(Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'custops-loyalty' AND wait_event_type = 'Lock'",
        )
        .fetch_one(&app.pool)
        .await
        .is_ok_and(|waiting| waiting == waiting_earns)
    })
    .await;
    assert!(all_waiting, "the earns never all waited on the row");
    let started = Instant::now();
    let unrelated = app
        .client
        .clone()
        .get_member(pb::GetMemberRequest {
            member_id: other.clone(),
            view: 0,
        })
        .await;
    let unrelated_took = started.elapsed();

    // Assert: the unrelated read is answered (or refused UNAVAILABLE) within the pool wait and
    // the lock timeout (2 s each by default), never hung; every waiter gave up with ABORTED.
    assert!(
        unrelated.is_ok() || unrelated.as_ref().err().map(|s| s.code()) == Some(Code::Unavailable),
        "{unrelated:?}"
    );
    assert!(
        unrelated_took < Duration::from_secs(4),
        "{unrelated_took:?}"
    );
    for waiter in waiters {
        assert_eq!(waiter.await?, Some(Code::Aborted));
    }
    // Once the row is free, the member is served as before and nothing was half-written.
    held.rollback().await?;
    app.grant(&hot, 5).await?;
    assert_eq!(app.balances(&hot).await?.available_points, 105);
    assert_ledger_invariants(&app.pool).await
}
