//! The race of issue 5: 50 concurrent clients send 10,000 mixed earn / redeem / reverse calls
//! on 100 members, a fifth of them replays of earlier request ids. Afterwards every balance
//! equals the sum of its ledger (and of its lots) and none is negative, each request id made
//! at most one entry and exactly one when it succeeded, every replay answered the first
//! response, and every refused redeem was short of points at a balance the member really had.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use custops_contracts::custops::loyalty::v1 as pb;
use prost::Message;
use tokio::sync::Mutex;
use tonic::Code;

use crate::helpers::{error_info, grant, program, redeem, spawn_app_with_pool};

const CLIENTS: usize = 50;
const CALLS: usize = 10_000;
const MEMBERS: usize = 100;

/// A tiny deterministic generator; the test needs variety, not statistical quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

#[derive(Clone)]
enum Call {
    Earn(pb::EarnPointsRequest),
    Redeem(pb::RedeemPointsRequest),
    Reverse(pb::ReversePointsRequest),
}

impl Call {
    fn request_id(&self) -> &str {
        match self {
            Call::Earn(r) => &r.request_id,
            Call::Redeem(r) => &r.request_id,
            Call::Reverse(r) => &r.request_id,
        }
    }
}

#[derive(Default)]
struct Shared {
    /// Calls sent so far, for replays.
    sent: Vec<Call>,
    /// Successful earns: (ledger entry id, points), for reversals.
    earns: Vec<(String, i64)>,
    /// First successful response of each request id, encoded.
    first: HashMap<String, Vec<u8>>,
    /// Replays whose response differed from the first.
    mismatched: Vec<String>,
    /// Refused redeems: (member, available reported, requested).
    refused: Vec<(String, i64, i64)>,
}

async fn send(
    client: &mut pb::loyalty_service_client::LoyaltyServiceClient<tonic::transport::Channel>,
    call: &Call,
) -> Result<(Vec<u8>, Option<(String, i64)>), tonic::Status> {
    match call {
        Call::Earn(r) => {
            let out = client.earn_points(r.clone()).await?.into_inner();
            let entry = out
                .ledger_entry
                .as_ref()
                .map(|e| (e.ledger_entry_id.clone(), e.points));
            Ok((out.encode_to_vec(), entry))
        }
        Call::Redeem(r) => Ok((
            client
                .redeem_points(r.clone())
                .await?
                .into_inner()
                .encode_to_vec(),
            None,
        )),
        Call::Reverse(r) => Ok((
            client
                .reverse_points(r.clone())
                .await?
                .into_inner()
                .encode_to_vec(),
            None,
        )),
    }
}

#[tokio::test]
async fn concurrent_earn_redeem_reverse_with_replays_lose_and_double_nothing() -> anyhow::Result<()>
{
    let app = spawn_app_with_pool(20).await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        members.push(app.enrol(&program_id).await?);
    }
    let members = Arc::new(members);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let started = Instant::now();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut client = app.client.clone();
            let members = members.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut rng =
                    Rng(0x9E37_79B9_7F4A_7C15 ^ (c as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
                for i in 0..CALLS / CLIENTS {
                    let roll = rng.below(100);
                    let call = {
                        let state = shared.lock().await;
                        if roll < 20 && !state.sent.is_empty() {
                            state.sent[rng.below(state.sent.len())].clone()
                        } else {
                            let member = &members[rng.below(members.len())];
                            let id = format!("c{c}-{i}");
                            let points = 1 + i64::try_from(rng.below(100)).unwrap_or(0);
                            match roll % 5 {
                                0 | 1 => Call::Earn(grant(id, member, points)),
                                2 | 3 => Call::Redeem(redeem(id, member, points)),
                                _ if !state.earns.is_empty() => {
                                    let (entry, earned) =
                                        state.earns[rng.below(state.earns.len())].clone();
                                    let take = 1 + i64::try_from(
                                        rng.below(usize::try_from(earned).unwrap_or(1)),
                                    )
                                    .unwrap_or(0);
                                    Call::Reverse(pb::ReversePointsRequest {
                                        request_id: id,
                                        target: Some(
                                            pb::reverse_points_request::Target::LedgerEntryId(
                                                entry,
                                            ),
                                        ),
                                        amount: Some(pb::reverse_points_request::Amount::Points(
                                            take,
                                        )),
                                        ..Default::default()
                                    })
                                }
                                _ => Call::Earn(grant(id, member, points)),
                            }
                        }
                    };
                    // ABORTED (a lock held past the lock timeout) is retryable by contract:
                    // the same request id again, as a careful client does.
                    let mut result = send(&mut client, &call).await;
                    for _ in 0..5 {
                        match &result {
                            Err(status) if status.code() == Code::Aborted => {
                                result = send(&mut client, &call).await;
                            }
                            _ => break,
                        }
                    }
                    let mut state = shared.lock().await;
                    state.sent.push(call.clone());
                    match result {
                        Ok((bytes, earn)) => {
                            let id = call.request_id().to_owned();
                            match state.first.get(&id) {
                                Some(first) if *first != bytes => state.mismatched.push(id),
                                Some(_) => {}
                                None => {
                                    state.first.insert(id, bytes);
                                    if let Some(earn) = earn {
                                        state.earns.push(earn);
                                    }
                                }
                            }
                        }
                        Err(status) => {
                            let (reason, metadata) = error_info(&status);
                            match (&call, status.code(), reason.as_str()) {
                                (
                                    Call::Redeem(r),
                                    Code::FailedPrecondition,
                                    "INSUFFICIENT_POINTS",
                                ) => {
                                    let available = metadata
                                        .get("available_points")
                                        .and_then(|v| v.parse().ok())
                                        .unwrap_or(-1);
                                    let member = match r.member.as_ref().and_then(|m| m.key.clone())
                                    {
                                        Some(pb::member_ref::Key::MemberId(id)) => id,
                                        _ => String::new(),
                                    };
                                    state.refused.push((member, available, r.points));
                                }
                                (
                                    Call::Reverse(_),
                                    Code::FailedPrecondition,
                                    "REVERSAL_EXCEEDS_REMAINING",
                                ) => {}
                                _ => panic!(
                                    "unexpected failure of {}: {status:?}",
                                    call.request_id()
                                ),
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await?;
    }
    let elapsed = started.elapsed();
    eprintln!("race: {CALLS} calls by {CLIENTS} clients in {elapsed:?}");

    let state = shared.lock().await;
    assert!(
        state.mismatched.is_empty(),
        "replays answered differently: {:?}",
        state.mismatched
    );
    crate::helpers::assert_ledger_invariants(&app.pool).await?;

    // Each request id that succeeded made exactly one entry; no other id made any.
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT request_id, count(*) FROM ledger_entries WHERE request_id LIKE 'c%' GROUP BY request_id",
    )
    .fetch_all(&app.pool)
    .await?;
    let made: HashMap<String, i64> = rows.into_iter().collect();
    assert!(
        made.values().all(|n| *n == 1),
        "a request id made several entries"
    );
    let succeeded: HashSet<&String> = state.first.keys().collect();
    let with_entries: HashSet<&String> = made.keys().collect();
    assert_eq!(succeeded, with_entries);

    // Every refused redeem was short at a balance the member really had at some point.
    let history: Vec<(String, i64)> =
        sqlx::query_as("SELECT member_id::text, after_available FROM ledger_entries")
            .fetch_all(&app.pool)
            .await?;
    let mut balances: HashMap<String, HashSet<i64>> = HashMap::new();
    for (member, available) in history {
        balances.entry(member).or_default().insert(available);
    }
    for (member, available, requested) in &state.refused {
        assert!(
            available < requested,
            "refused {requested} with {available} available"
        );
        let had = *available == 0 || balances.get(member).is_some_and(|b| b.contains(available));
        assert!(had, "member {member} never had {available} points");
    }
    eprintln!(
        "race: {} succeeded, {} refused redeems, {} replays",
        state.first.len(),
        state.refused.len(),
        state.sent.len() - state.first.len() - state.refused.len()
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_qualifying_earns_on_one_member_sum_every_entry_into_its_window()
-> anyhow::Result<()> {
    // Arrange: one member, and qualifying grants of distinct sizes (the window sums an earn
    // reads with its lock must include every earn committed while it waited for the lock).
    let app = spawn_app_with_pool(16).await?;
    let program_id = app
        .create_program(program(pb::ClawbackPolicy::WithinBalance, 0))
        .await?;
    let member = app.enrol(&program_id).await?;
    let points: Vec<i64> = (1..=60).collect();

    // Act: all of them at once, 16 in flight.
    let calls = points.iter().map(|&p| {
        let mut client = app.client.clone();
        let mut request = grant(format!("qualifying-{p}"), &member, p);
        if let Some(pb::earn_points_request::Source::Grant(grant)) = request.source.as_mut() {
            grant.qualifying = true;
        }
        tokio::spawn(async move { client.earn_points(request).await })
    });
    // Spawned before any is awaited, so they run at once.
    let calls: Vec<_> = calls.collect();
    for call in calls {
        call.await??;
    }

    // Assert: the member's qualifying balance is the sum of them all, and each entry's
    // qualifying balance after it is a different running total (none built on a stale sum).
    let total: i64 = points.iter().sum();
    let balances = app.balances(&member).await?;
    assert_eq!(
        (balances.available_points, balances.qualifying_points),
        (total, total)
    );
    let mut after: Vec<i64> =
        sqlx::query_scalar("SELECT after_qualifying FROM ledger_entries ORDER BY after_qualifying")
            .fetch_all(&app.pool)
            .await?;
    after.dedup();
    assert_eq!(after.len(), points.len());
    assert_eq!(after.last(), Some(&total));
    Ok(())
}
