//! Survey rewards through the real loyalty service started in-process: delivered exactly
//! once even when loyalty is down while the responses arrive, also by two replicas' workers
//! racing over the backlog, and traced as one trace from the response to loyalty's ledger
//! entry.

#[allow(dead_code, reason = "the helpers are shared with the api tests")]
#[path = "api/helpers.rs"]
mod helpers;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::Utc;
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_common::telemetry::{self, Exporters, LogFormat, Telemetry};
use custops_contracts::custops::feedback::v1 as pb;
use custops_contracts::custops::loyalty::v1 as lpb;
use custops_contracts::custops::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use custops_feedback::domain::ManualClock;
use custops_testkit::{TestDatabase, eventually};
use opentelemetry::Key;
use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    REWARD_MAX_BACKOFF, active_survey, full_survey, invite, rid, score, spawn_app_with,
    submit_request,
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

/// Feedback's settings on `db_url`, calling loyalty on `loyalty_port`.
fn feedback_settings(db_url: &str, loyalty_port: u16) -> ServiceSettings {
    let mut settings = ServiceSettings::for_local(ServiceKind::Feedback, db_url);
    settings.clients.peers.insert(
        ServiceKind::Loyalty,
        format!("http://127.0.0.1:{loyalty_port}"),
    );
    settings
}

/// A program in loyalty and a customer enrolled in it: their ids.
async fn program_with_member(
    loyalty: &mut LoyaltyServiceClient<tonic::transport::Channel>,
) -> anyhow::Result<(String, String)> {
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
    let customer_id = uuid::Uuid::now_v7().to_string();
    loyalty
        .enrol_member(lpb::EnrolMemberRequest {
            request_id: rid(),
            program_id: program_id.clone(),
            customer_id: customer_id.clone(),
            enrol_channel: "app".to_owned(),
        })
        .await?;
    Ok((program_id, customer_id))
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
    // Invitations are created for this customer (each about another order).
    let (program_id, customer_id) = program_with_member(&mut loyalty).await?;

    let settings = feedback_settings(&db_url, port);
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
    // The worker tries, fails and backs off; with the service clock standing still, no
    // retry comes due.
    let pool = app.pool.clone();
    let retrying = eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move { count_rewards(&pool, "retrying").await == 100 }
    })
    .await;
    assert!(retrying, "rewards were not retried while loyalty was down");

    // Loyalty comes back on the same address; the clock moves past the retries' due times
    // (again at each check, for a retry a reconnecting channel may still have failed): every
    // reward is paid, once.
    let (_, loyalty_stop, _task) = start_loyalty(&db_url, port).await?;
    let clock = app.clock.clone();
    let delivered = eventually(Duration::from_secs(30), || {
        let pool = pool.clone();
        clock.advance(chrono::Duration::from_std(REWARD_MAX_BACKOFF).unwrap_or_default());
        async move { count_rewards(&pool, "delivered").await == 100 }
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
    let settings = feedback_settings(&db_url, port);
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

/// How many rewards are in `status`.
/// A second feedback replica over `settings`' database, on `clock` (shared with the first),
/// its reward worker paced as the helpers pace the first's; it stops with the token.
async fn start_replica(
    settings: ServiceSettings,
    clock: ManualClock,
) -> anyhow::Result<(crate::helpers::Client, CancellationToken)> {
    let overrides = custops_feedback::Overrides {
        clock: Arc::new(clock),
        rewards: custops_feedback::jobs::rewards::WorkerOptions {
            poll: Duration::from_millis(50),
            initial_backoff: Duration::from_millis(50),
            max_backoff: REWARD_MAX_BACKOFF,
            call_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        prune_keys_every: custops_feedback::jobs::PRUNE_KEYS_EVERY,
    };
    let app = custops_feedback::build_with(settings, overrides).await?;
    let port = app.port();
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move { app.run_until_stopped(stop.cancelled_owned()).await }
    });
    let client = crate::helpers::Client::connect(format!("http://127.0.0.1:{port}")).await?;
    Ok((client, stop))
}

#[tokio::test]
async fn two_replicas_pay_each_reward_of_a_shared_backlog_once() -> anyhow::Result<()> {
    // Arrange: loyalty with a member; two feedback replicas on one database and one clock,
    // each with its reward worker; a rewarded survey.
    let db = TestDatabase::create().await?;
    let db_url = db.url().to_owned();
    let (port, loyalty_stop, loyalty_task) = start_loyalty(&db_url, 0).await?;
    let mut loyalty = LoyaltyServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
    let (program_id, customer_id) = program_with_member(&mut loyalty).await?;
    let settings = feedback_settings(&db_url, port);
    let mut app = spawn_app_with(db, settings.clone(), ManualClock::new(Utc::now())).await?;
    let (mut second, stop_second) = start_replica(settings, app.clock.clone()).await?;
    let mut survey = full_survey();
    survey.reward = Some(pb::SurveyReward {
        points: 3,
        program_id: program_id.clone(),
    });
    let survey_id = active_survey(&mut app.client, survey).await?;

    // Act: loyalty is down while 80 rewarded responses arrive through either replica, so a
    // backlog builds that both workers have tried; then loyalty returns and the clock moves
    // past the retries, and both workers lease from the backlog at once.
    loyalty_stop.cancel();
    loyalty_task.await?;
    let rewards = 80;
    for i in 0..rewards {
        let client = if i % 2 == 0 {
            &mut app.client
        } else {
            &mut second
        };
        let invitation_id = invite_customer(client, &survey_id, &customer_id).await?;
        client
            .submit_response(submit_request(&invitation_id, vec![score("nps", 9)]))
            .await?;
    }
    let pool = app.pool.clone();
    let retrying = eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move { count_rewards(&pool, "retrying").await == rewards }
    })
    .await;
    assert!(retrying, "rewards were not retried while loyalty was down");
    let (_, loyalty_stop, _task) = start_loyalty(&db_url, port).await?;
    let clock = app.clock.clone();
    let delivered = eventually(Duration::from_secs(30), || {
        let pool = pool.clone();
        clock.advance(chrono::Duration::from_std(REWARD_MAX_BACKOFF).unwrap_or_default());
        async move { count_rewards(&pool, "delivered").await == rewards }
    })
    .await;
    assert!(delivered, "rewards were not all delivered");

    // Assert: each reward granted once, in feedback's feed and in loyalty's ledger.
    let (granted, distinct_entries): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM feedback.outbox \
                 WHERE type = 'custops.feedback.v1.SurveyRewardGranted'), \
                (SELECT count(DISTINCT reward_ledger_entry_id) FROM feedback.responses \
                 WHERE reward_status = 'delivered')",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!((granted, distinct_entries), (rewards, rewards));
    let (earns, keys, points): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT request_id), coalesce(sum(points), 0)::bigint \
         FROM loyalty.ledger_entries WHERE request_id LIKE 'feedback-survey-reward-%'",
    )
    .fetch_one(&pool)
    .await?;
    assert_eq!((earns, keys, points), (rewards, rewards, 3 * rewards));
    stop_second.cancel();
    loyalty_stop.cancel();
    Ok(())
}

async fn count_rewards(pool: &sqlx::PgPool, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM feedback.responses WHERE reward_status = $1")
        .bind(status)
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// Submits an NPS 9 to `invitation_id`; returns the response id.
async fn submit_promoter(
    client: &mut crate::helpers::Client,
    invitation_id: &str,
) -> anyhow::Result<String> {
    Ok(client
        .submit_response(submit_request(invitation_id, vec![score("nps", 9)]))
        .await?
        .into_inner()
        .survey_response
        .map(|r| r.response_id)
        .unwrap_or_default())
}

/// A reward's status and attempt count, as GetResponse answers them.
async fn reward_of(
    client: &mut crate::helpers::Client,
    response_id: &str,
) -> anyhow::Result<(pb::RewardStatus, i32)> {
    let reward = client
        .get_response(pb::GetResponseRequest {
            response_id: response_id.to_owned(),
        })
        .await?
        .into_inner()
        .survey_response
        .and_then(|r| r.reward)
        .unwrap_or_default();
    Ok((reward.status(), reward.attempt_count))
}

#[tokio::test]
async fn a_retry_is_due_on_the_service_clock_not_the_wall_clock() -> anyhow::Result<()> {
    // Arrange: a program and a member in loyalty, then loyalty down; feedback on a clock that
    // stands still.
    let db = TestDatabase::create().await?;
    let db_url = db.url().to_owned();
    let (port, loyalty_stop, loyalty_task) = start_loyalty(&db_url, 0).await?;
    let mut loyalty = LoyaltyServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
    let (program_id, customer_id) = program_with_member(&mut loyalty).await?;
    loyalty_stop.cancel();
    loyalty_task.await?;
    let settings = feedback_settings(&db_url, port);
    let mut app = spawn_app_with(db, settings, ManualClock::new(Utc::now())).await?;
    let mut survey = full_survey();
    survey.reward = Some(pb::SurveyReward {
        points: 4,
        program_id,
    });
    let survey_id = active_survey(&mut app.client, survey).await?;

    // Act 1: the first attempt fails (loyalty is down) and the retry is due one backoff later
    // on the service clock.
    let invitation_id = invite_customer(&mut app.client, &survey_id, &customer_id).await?;
    let first = submit_promoter(&mut app.client, &invitation_id).await?;
    let client = app.client.clone();
    let failed_once =
        eventually(Duration::from_secs(10), || {
            let mut client = client.clone();
            let first = first.clone();
            async move {
                reward_of(&mut client, &first).await.ok() == Some((pb::RewardStatus::Retrying, 1))
            }
        })
        .await;
    assert!(failed_once, "the first attempt did not fail and back off");

    // Real time passes well beyond the backoff (this wait is the subject of the test, not
    // pacing), and the worker is seen working meanwhile: a second reward, due now, gets its
    // first attempt.
    tokio::time::sleep(4 * REWARD_MAX_BACKOFF).await;
    let invitation_id = invite_customer(&mut app.client, &survey_id, &customer_id).await?;
    let witness = submit_promoter(&mut app.client, &invitation_id).await?;
    let witnessed = eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        let witness = witness.clone();
        async move { reward_of(&mut client, &witness).await.ok().map(|r| r.1) == Some(1) }
    })
    .await;
    assert!(witnessed, "the worker did not attempt the second reward");

    // Assert 1: the first reward was not retried: its retry is not due on the service clock.
    let mut client = app.client.clone();
    assert_eq!(
        reward_of(&mut client, &first).await?,
        (pb::RewardStatus::Retrying, 1),
        "a retry came due on the wall clock"
    );

    // Act 2: loyalty comes back and the service clock moves past the retry's due time.
    let (_, loyalty_stop, _task) = start_loyalty(&db_url, port).await?;
    let clock = app.clock.clone();
    let delivered = eventually(Duration::from_secs(20), || {
        let mut client = client.clone();
        let first = first.clone();
        clock.advance(chrono::Duration::from_std(REWARD_MAX_BACKOFF).unwrap_or_default());
        async move {
            reward_of(&mut client, &first).await.ok().map(|r| r.0)
                == Some(pb::RewardStatus::Delivered)
        }
    })
    .await;

    // Assert 2: retried and paid.
    assert!(
        delivered,
        "the reward was not retried once its due time passed"
    );
    let (_, attempts) = reward_of(&mut client, &first).await?;
    assert!(attempts >= 2, "{attempts} attempts");
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

/// Every finished span of this test process with the `service.name` that exported it:
/// telemetry installed once, as `custops dev` installs it for the services it hosts.
type Exported = Arc<Mutex<Vec<(String, InMemorySpanExporter)>>>;

fn exported() -> anyhow::Result<Exported> {
    static INSTALLED: OnceLock<Option<(Exported, Telemetry)>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let exported = Exported::default();
            let make = {
                let exported = exported.clone();
                move |resource: Resource| {
                    let exporter = InMemorySpanExporter::default();
                    let name = resource
                        .get(&Key::new("service.name"))
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    if let Ok(mut all) = exported.lock() {
                        all.push((name, exporter.clone()));
                    }
                    SdkTracerProvider::builder()
                        .with_simple_exporter(exporter)
                        .with_resource(resource)
                        .build()
                }
            };
            telemetry::init_hosting(
                "custops-test",
                &[ServiceKind::Feedback, ServiceKind::Loyalty],
                LogFormat::Text,
                Exporters::Spans(Box::new(make)),
            )
            .map(|telemetry| (exported, telemetry))
        })
        .as_ref()
        .map(|(exported, _)| exported.clone())
        .ok_or_else(|| anyhow::anyhow!("telemetry was already installed"))
}

fn finished(exported: &Exported) -> anyhow::Result<Vec<(String, SpanData)>> {
    let all = exported
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let mut spans = Vec::new();
    for (name, exporter) in all {
        spans.extend(
            exporter
                .get_finished_spans()?
                .into_iter()
                .map(|s| (name.clone(), s)),
        );
    }
    Ok(spans)
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test]
async fn a_reward_continues_the_trace_of_its_response_into_loyalty() -> anyhow::Result<()> {
    let exported = exported()?;
    let db = TestDatabase::create().await?;
    let db_url = db.url().to_owned();
    let (port, loyalty_stop, _task) = start_loyalty(&db_url, 0).await?;
    telemetry::register_listener(port, ServiceKind::Loyalty);
    let mut loyalty = LoyaltyServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
    let (program_id, customer_id) = program_with_member(&mut loyalty).await?;
    let settings = feedback_settings(&db_url, port);
    let mut app = spawn_app_with(db, settings, ManualClock::new(Utc::now())).await?;
    telemetry::register_listener(app.port, ServiceKind::Feedback);
    let mut survey = full_survey();
    survey.reward = Some(pb::SurveyReward {
        points: 3,
        program_id,
    });
    let survey_id = active_survey(&mut app.client, survey).await?;
    let invitation_id = invite_customer(&mut app.client, &survey_id, &customer_id).await?;

    let response_id = app
        .client
        .submit_response(submit_request(&invitation_id, vec![score("nps", 9)]))
        .await?
        .into_inner()
        .survey_response
        .map(|r| r.response_id)
        .unwrap_or_default();
    let client = app.client.clone();
    let delivered = eventually(Duration::from_secs(15), || {
        let mut client = client.clone();
        let response_id = response_id.clone();
        async move {
            client
                .get_response(pb::GetResponseRequest { response_id })
                .await
                .ok()
                .and_then(|r| r.into_inner().survey_response)
                .and_then(|r| r.reward)
                .is_some_and(|w| w.status() == pb::RewardStatus::Delivered)
        }
    })
    .await;
    assert!(delivered, "the reward was not delivered");
    // The spans are exported when they end, loyalty's a moment after the answer: wait until
    // loyalty's server span is in the delivery's trace.
    let exported_whole = eventually(Duration::from_secs(10), || {
        let spans = finished(&exported).unwrap_or_default();
        let delivery_trace = spans
            .iter()
            .find(|(_, s)| {
                s.name == "survey_reward"
                    && attribute(s, "response_id").as_deref() == Some(response_id.as_str())
            })
            .map(|(_, s)| s.span_context.trace_id());
        let whole = delivery_trace.is_some_and(|trace| {
            spans.iter().any(|(_, s)| {
                s.span_context.trace_id() == trace
                    && s.name == "custops.loyalty.v1.LoyaltyService/EarnPoints"
                    && s.span_kind == SpanKind::Server
            })
        });
        async move { whole }
    })
    .await;
    assert!(
        exported_whole,
        "the delivery's trace never reached loyalty's server span"
    );

    // The delivery's span, then everything in its trace.
    let spans = finished(&exported)?;
    let delivery = spans
        .iter()
        .find(|(_, s)| {
            s.name == "survey_reward"
                && attribute(s, "response_id").as_deref() == Some(response_id.as_str())
        })
        .map(|(_, s)| s.clone())
        .ok_or_else(|| anyhow::anyhow!("no survey_reward span for the response"))?;
    let trace: Vec<&(String, SpanData)> = spans
        .iter()
        .filter(|(_, s)| s.span_context.trace_id() == delivery.span_context.trace_id())
        .collect();
    let one = |name: &str, kind: SpanKind| {
        let found: Vec<&(String, SpanData)> = trace
            .iter()
            .copied()
            .filter(|(_, s)| s.name == name && s.span_kind == kind)
            .collect();
        assert_eq!(found.len(), 1, "{name} {kind:?} in {trace:#?}");
        found[0].clone()
    };
    let (submit_service, submit) = one(
        "custops.feedback.v1.FeedbackService/SubmitResponse",
        SpanKind::Server,
    );
    let (earn_client_service, earn_client) = one(
        "custops.loyalty.v1.LoyaltyService/EarnPoints",
        SpanKind::Client,
    );
    let (earn_server_service, earn_server) = one(
        "custops.loyalty.v1.LoyaltyService/EarnPoints",
        SpanKind::Server,
    );
    // response → reward delivery → client call → loyalty's server span.
    let parent_of = |id| {
        trace
            .iter()
            .find(|(_, s)| s.span_context.span_id() == id)
            .map(|(_, s)| s.parent_span_id)
    };
    let mut ancestor = delivery.parent_span_id;
    while ancestor != submit.span_context.span_id() {
        ancestor = parent_of(ancestor).ok_or_else(|| {
            anyhow::anyhow!("the delivery does not continue the SubmitResponse call: {trace:#?}")
        })?;
    }
    assert_eq!(earn_client.parent_span_id, delivery.span_context.span_id());
    assert_eq!(
        earn_server.parent_span_id,
        earn_client.span_context.span_id()
    );
    // The client span says how the call ended and whom it called.
    assert_eq!(
        attribute(&earn_client, "rpc.grpc.status_code").as_deref(),
        Some("0")
    );
    assert_eq!(
        attribute(&earn_client, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attribute(&earn_client, "server.port"),
        Some(port.to_string())
    );
    // Each service's spans under its own name, though both run in this process.
    assert_eq!(submit_service, "custops-feedback");
    assert_eq!(earn_client_service, "custops-feedback");
    assert_eq!(earn_server_service, "custops-loyalty");
    loyalty_stop.cancel();
    Ok(())
}
