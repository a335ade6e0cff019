//! Grouped earns (`workflow::earn_group`): earns that wait together are made in one
//! transaction, and each is answered exactly as it would be alone, including those the group
//! cannot make (they run alone after it). The service runs with a pool of two connections,
//! so one runner; the test holds the first earn's request key uncommitted so the rest queue
//! behind it and are taken as groups.

use std::collections::HashMap;

use chrono::Duration;
use custops_contracts::custops::loyalty::v1 as pb;
use prost::Message;
use tonic::Code;

use crate::helpers::{
    TestApp, assert_ledger_invariants, by_id, error_info, grant, program, purchase,
    spawn_app_with_pool,
};

/// What a call of the burst answered: its reply's encoding, or its code and reason.
type Answer = Result<pb::EarnPointsResponse, (Code, String)>;

/// Sends every request at once and answers each, by its place in `requests`.
async fn burst(app: &TestApp, requests: Vec<pb::EarnPointsRequest>) -> anyhow::Result<Vec<Answer>> {
    let calls: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                client
                    .earn_points(request)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| (status.code(), error_info(&status).0))
            })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await?);
    }
    Ok(answers)
}

/// Holds the key `request_id` of the caller of the earlier call `earlier` taken, uncommitted,
/// until the returned transaction ends: a group whose call has that key waits for it in its
/// last statement (a group skips a locked member, but a key must wait to be known).
async fn hold_key(
    app: &TestApp,
    earlier: &str,
    request_id: &str,
) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = app.pool.begin().await?;
    sqlx::query(
        "INSERT INTO idempotency_keys (caller, request_id, method, fingerprint, response, \
           create_time) \
         SELECT caller, $2, 'held', '\\x00', '\\x00', now() FROM ledger_entries \
         WHERE request_id = $1",
    )
    .bind(earlier)
    .bind(request_id)
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

/// Waits until some session waits for a lock: the runner's group, blocked by the test.
async fn until_a_lock_is_awaited(app: &TestApp) -> anyhow::Result<()> {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&app.pool)
        .await?;
        if waiting > 0 {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    anyhow::bail!("no session waited for the held member")
}

/// The most entries of `request_id LIKE pattern` that one transaction wrote.
async fn most_entries_in_one_transaction(app: &TestApp, pattern: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(max(n), 0) FROM ( \
           SELECT count(*) AS n FROM ledger_entries WHERE request_id LIKE $1 \
           GROUP BY xmin::text) t",
    )
    .bind(pattern)
    .fetch_one(&app.pool)
    .await?)
}

/// A qualifying grant.
fn qualifying(request_id: &str, member_id: &str, points: i64) -> pb::EarnPointsRequest {
    pb::EarnPointsRequest {
        source: Some(pb::earn_points_request::Source::Grant(pb::PointsGrant {
            points,
            qualifying: true,
            expire_time: None,
        })),
        ..grant(request_id.to_owned(), member_id, points)
    }
}

#[tokio::test]
async fn earns_that_wait_together_share_a_transaction_and_each_is_answered_as_alone()
-> anyhow::Result<()> {
    let app = spawn_app_with_pool(2).await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 1))
        .await?;
    let mut members = Vec::new();
    for _ in 0..11 {
        members.push(app.enrol(&program_id).await?);
    }
    let [
        blocker,
        a,
        b,
        c,
        d,
        expiring,
        closed,
        climber,
        buyer,
        other_buyer,
        repeat_buyer,
    ] = <[String; 11]>::try_from(members).map_err(|_| anyhow::anyhow!("eleven members"))?;
    // The expiring member's lot is past its expiry once the clock moves two days on: its next
    // earn settles it first, which only an earn alone does.
    app.grant(&expiring, 10).await?;
    let first = app
        .client
        .clone()
        .earn_points(grant("g-earlier".to_owned(), &a, 5))
        .await?
        .into_inner();
    app.client
        .clone()
        .close_member(pb::CloseMemberRequest {
            member: by_id(&closed),
            reason: "Customer asked".to_owned(),
            ..Default::default()
        })
        .await?;
    app.clock.advance(Duration::days(2));
    app.client
        .clone()
        .earn_points(purchase(&repeat_buyer, "o-old", 5_000))
        .await?;

    // Act: the runner's first group waits on the held key while the burst queues.
    let held = hold_key(&app, "g-earlier", "g-blocker").await?;
    let blocked = {
        let mut client = app.client.clone();
        let request = grant("g-blocker".to_owned(), &blocker, 1);
        tokio::spawn(async move { client.earn_points(request).await })
    };
    until_a_lock_is_awaited(&app).await?;
    let missing = uuid::Uuid::now_v7().to_string();
    let requests = vec![
        grant("g-a".to_owned(), &a, 11),
        grant("g-b".to_owned(), &b, 12),
        grant("g-c".to_owned(), &c, 13),
        grant("g-d1".to_owned(), &d, 14),
        grant("g-d2".to_owned(), &d, 15),
        grant("g-expiring".to_owned(), &expiring, 16),
        grant("g-closed".to_owned(), &closed, 17),
        grant("g-missing".to_owned(), &missing, 18),
        grant("g-earlier".to_owned(), &a, 5),
        grant("g-earlier".to_owned(), &a, 6),
        qualifying("g-climber", &climber, 600),
        grant("g-e".to_owned(), &b, 19),
        pb::EarnPointsRequest {
            request_id: "g-buy".to_owned(),
            ..purchase(&buyer, "o-new", 12_345)
        },
        pb::EarnPointsRequest {
            request_id: "g-buy-too".to_owned(),
            ..purchase(&other_buyer, "o-new", 12_345)
        },
        pb::EarnPointsRequest {
            request_id: "g-rebuy".to_owned(),
            ..purchase(&repeat_buyer, "o-old", 5_000)
        },
    ];
    let sent = tokio::spawn({
        let app_client = app.client.clone();
        let requests = requests.clone();
        async move {
            let calls: Vec<_> = requests
                .into_iter()
                .map(|request| {
                    let mut client = app_client.clone();
                    tokio::spawn(async move { client.earn_points(request).await })
                })
                .collect();
            calls
        }
    });
    let calls = sent.await?;
    // Give the calls time to reach the queue behind the blocked group.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    held.rollback().await?;
    blocked.await??;
    let mut answers: Vec<Answer> = Vec::new();
    for call in calls {
        answers.push(
            call.await?
                .map(tonic::Response::into_inner)
                .map_err(|status| (status.code(), error_info(&status).0)),
        );
    }

    // Assert: each answered as alone.
    let by_id: HashMap<&str, &Answer> = requests
        .iter()
        .map(|r| r.request_id.as_str())
        .zip(&answers)
        .filter(|(id, _)| *id != "g-earlier")
        .collect();
    let points = |id: &str| -> anyhow::Result<i64> {
        match by_id.get(id) {
            Some(Ok(reply)) => Ok(reply.ledger_entry.as_ref().map_or(0, |e| e.points)),
            other => anyhow::bail!("{id} answered {other:?}"),
        }
    };
    for (id, expected) in [
        ("g-a", 11),
        ("g-b", 12),
        ("g-c", 13),
        ("g-d1", 14),
        ("g-d2", 15),
    ] {
        assert_eq!(points(id)?, expected, "{id}");
    }
    assert_eq!(points("g-e")?, 19);
    // A purchase earns at the base rate (1 point per 100 minor units, rounded down); of two
    // for one order one earns and the other is refused, as an order earned before is.
    let order_earned = |id: &str| matches!(by_id.get(id), Some(Err((Code::AlreadyExists, reason))) if reason == "ORDER_ALREADY_EARNED");
    let bought = [points("g-buy").ok(), points("g-buy-too").ok()];
    assert!(
        matches!(bought, [Some(123), None] | [None, Some(123)]),
        "{bought:?}"
    );
    assert!(order_earned("g-buy") || order_earned("g-buy-too"));
    assert!(order_earned("g-rebuy"));
    // The expiring member's earn settled its expired lot first: only the new points remain.
    let Some(Ok(expiring_reply)) = by_id.get("g-expiring") else {
        anyhow::bail!("the expiring member's earn failed");
    };
    let balances = expiring_reply
        .member
        .as_ref()
        .and_then(|m| m.balances.clone())
        .unwrap_or_default();
    assert_eq!(
        (balances.available_points, balances.lifetime_expired_points),
        (16, 10)
    );
    assert!(
        matches!(by_id.get("g-closed"), Some(Err((Code::FailedPrecondition, reason))) if reason == "MEMBER_NOT_ACTIVE")
    );
    assert!(matches!(
        by_id.get("g-missing"),
        Some(Err((Code::NotFound, _)))
    ));
    let Some(Ok(climber_reply)) = by_id.get("g-climber") else {
        anyhow::bail!("the climber's earn failed");
    };
    assert_eq!(
        climber_reply
            .tier_change
            .as_ref()
            .map(|c| c.to_tier_code.as_str()),
        Some("silver"),
        "an earn that moves the tier answers the move"
    );
    // The replay of an earlier earn answers its first reply byte for byte; the same id with
    // another request is refused.
    let earlier: Vec<&Answer> = requests
        .iter()
        .zip(&answers)
        .filter(|(r, _)| r.request_id == "g-earlier")
        .map(|(_, a)| a)
        .collect();
    assert!(
        matches!(earlier.as_slice(), [Ok(replay), Err((Code::AlreadyExists, reason))]
            if replay.encode_to_vec() == first.encode_to_vec() && reason == "REQUEST_ID_REUSED"),
        "{earlier:?}"
    );

    // Grouped: some transaction wrote several of the burst's entries, the purchase's among
    // them (its order and the birthday were read by the group's statement).
    assert!(
        most_entries_in_one_transaction(&app, "g-_%").await? >= 2,
        "no two earns shared a transaction"
    );
    let purchase_shared: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ledger_entries p JOIN ledger_entries o \
           ON o.xmin::text = p.xmin::text AND o.ledger_entry_id <> p.ledger_entry_id \
         WHERE p.request_id IN ('g-buy', 'g-buy-too') AND o.request_id LIKE 'g-_%')",
    )
    .fetch_one(&app.pool)
    .await?;
    assert!(purchase_shared, "the purchase was not made in a group");
    // Each request id made one entry, and each earn (kind 1) one PointsEarned event.
    let repeated: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT request_id FROM ledger_entries WHERE request_id <> '' \
         GROUP BY caller, request_id HAVING count(*) > 1) t",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(repeated, 0);
    let (earns, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledger_entries WHERE kind = 1), \
                (SELECT count(*) FROM outbox WHERE type = 'custops.loyalty.v1.PointsEarned')",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(earns, events);
    let d_balance = app.balances(&d).await?.available_points;
    assert_eq!(
        d_balance,
        14 + 15,
        "both earns of one member in a burst count"
    );
    assert_ledger_invariants(&app.pool).await
}

#[tokio::test]
async fn bursts_of_earns_with_replays_lose_and_double_nothing() -> anyhow::Result<()> {
    let app = spawn_app_with_pool(4).await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let mut members = Vec::new();
    for _ in 0..6 {
        members.push(app.enrol(&program_id).await?);
    }
    // Three bursts of 40 earns over six members, each burst resending half of the one
    // before (replays, some racing their first call in the same burst).
    let mut firsts: HashMap<String, Vec<u8>> = HashMap::new();
    let mut previous: Vec<pb::EarnPointsRequest> = Vec::new();
    for round in 0..3 {
        let mut requests: Vec<pb::EarnPointsRequest> = (0..40)
            .map(|i| {
                let member = &members[(i * 7 + round) % members.len()];
                grant(
                    format!("b{round}-{i}"),
                    member,
                    1 + i64::try_from(i).unwrap_or(0),
                )
            })
            .collect();
        requests.extend(previous.iter().step_by(2).cloned());
        requests.extend(requests.iter().step_by(5).cloned().collect::<Vec<_>>());
        let answers = burst(&app, requests.clone()).await?;
        for (request, answer) in requests.iter().zip(answers) {
            let reply = answer
                .map_err(|e| anyhow::anyhow!("{} failed: {e:?}", request.request_id))?
                .encode_to_vec();
            let first = firsts
                .entry(request.request_id.clone())
                .or_insert_with(|| reply.clone());
            assert_eq!(*first, reply, "{} answered two replies", request.request_id);
        }
        previous = requests;
    }

    let (entries, points): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(points), 0)::bigint FROM ledger_entries \
         WHERE request_id LIKE 'b%'",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(entries, 120, "one entry per request id");
    assert_eq!(points, 3 * (1..=40).sum::<i64>());
    let balances: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(available_points), 0)::bigint FROM balances")
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(balances, points);
    assert!(most_entries_in_one_transaction(&app, "b%").await? >= 2);
    assert_ledger_invariants(&app.pool).await
}
