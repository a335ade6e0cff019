//! The suite's write path together, as most deployments run it: profiles, loyalty and
//! feedback on one Postgres (one database, a schema each), written to at once.
//!
//! `writes.mixed`: RecordActivity, EarnPoints and SubmitResponse in turn from one closed loop
//! of 16 calls in flight (`Scale::earn_concurrency`), each call one transaction of its
//! service: commits per second of the suite against `pgbench -b tpcb-like` at the same total
//! concurrency on the same server. `writes.feed_delay`: while it runs, a subscriber of each
//! service's feed receives the event of every write (ActivityRecorded, PointsEarned,
//! ResponseSubmitted); p99 from a write's answer to its event's arrival, against the same
//! for writes sent one at a time on the idle suite. Every write answered must reach its
//! feed once, and the loyalty ledger must hold exactly what was earned.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use custops_contracts::custops::feedback::v1 as fb;
use custops_contracts::custops::feedback::v1::feedback_service_client::FeedbackServiceClient;
use custops_contracts::custops::profiles::v1 as pr;
use custops_contracts::custops::profiles::v1::profiles_service_client::ProfilesServiceClient;
use prost::{Message, Name};
use serde_json::json;
use tonic::transport::Channel;

use super::child::{Child, service_env};
use super::database::BenchDatabase;
use super::delivery::{self, Deliveries, Follower};
use super::load::{self, CallFuture, Connections, MakeCall, Samples, Window};
use super::loyalty::{self, Ledger, Spread};
use super::report::Row;
use super::segmentation::feed;
use super::{Harness, finished};

/// Writes of each kind sent one at a time for `writes.feed_delay`'s idle baseline.
const IDLE_WRITES: usize = 50;

/// The rows of this group.
pub fn row_names() -> Vec<String> {
    vec!["writes.mixed".to_owned(), "writes.feed_delay".to_owned()]
}

/// The three services, started on one database, with what their writes need.
struct Suite {
    children: Vec<Child>,
    profiles: Arc<Connections>,
    loyalty: Arc<Connections>,
    feedback: Arc<Connections>,
    customers: Arc<Vec<String>>,
    ledger: Arc<Ledger>,
    invitations: Arc<Invitations>,
}

/// Invitations to an active NPS survey, each answered once.
struct Invitations {
    ids: Vec<String>,
    next: AtomicUsize,
}

impl Invitations {
    fn take(&self) -> Option<String> {
        self.ids
            .get(self.next.fetch_add(1, Ordering::Relaxed))
            .cloned()
    }
}

/// Runs the selected rows of this group.
pub async fn run(harness: &Harness, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let wants = |name: &str| harness.selection.wants(name);
    if !harness.selection.wants_any(&row_names()) {
        return Ok(());
    }
    let scale = &harness.scale;
    // The baseline brackets the window, as `loyalty.earn`'s does (`Pgbench::bracketing`).
    let pgbench_tables = loyalty::PgbenchTables::create(harness).await?;
    let pgbench_before = pgbench_tables.run(harness).await?;
    let db = BenchDatabase::create(&harness.admin_database_url, "writes").await?;
    let suite = start(harness, &db).await?;

    let deliveries = Arc::new(Deliveries::default());
    let followers = follow_all(&suite, &deliveries).await?;
    let call = mixed_call(&suite, Some(deliveries.clone()));
    let window = Window {
        warmup: scale.warmup,
        measure: scale.window,
    };
    let mut mixed =
        load::closed_loop(&suite.loyalty, scale.earn_concurrency, window, &call).await?;
    mixed.expect_clean("writes.mixed")?;
    let pgbench = loyalty::Pgbench::bracketing(pgbench_before, pgbench_tables.run(harness).await?);
    let mut loaded = delivery::finish(followers, &deliveries, "writes.mixed").await?;

    if wants("writes.mixed") {
        let row = Row::new(
            "writes.mixed",
            "commits/s",
            mixed.ok_per_sec(),
            pgbench.tps,
        )
        .latency(mixed.ok.quantile_ms(0.5), mixed.ok.quantile_ms(0.99))
        .params(json!({
            "custops": "RecordActivity, EarnPoints (a grant of 1-100 points) and SubmitResponse (an NPS answer to an invitation made before) in turn, one closed loop, each call one transaction of its service; profiles, loyalty and feedback on one database",
            "concurrency": scale.earn_concurrency,
            "calls": mixed.ok.len(),
            "baseline": pgbench.describe(),
            "checked": "every write answered reached its service's feed once; loyalty's balances equal their ledgers and what was earned",
        }));
        finished(rows, row);
    }
    if wants("writes.feed_delay") {
        let mut idle = idle_delays(&suite).await?;
        let row = delivery::delay_row(
            "writes.feed_delay",
            &mut loaded,
            &mut idle,
            json!({
                "custops": "from a write's answer to its event at a subscriber of its service's feed (zero when the event came first), every write of writes.mixed (warm-up included)",
                "writes_per_s": mixed.ok_per_sec(),
                "baseline": format!("the same for {IDLE_WRITES} writes of each kind sent one at a time"),
            }),
        );
        finished(rows, row);
    }

    let Suite {
        children, ledger, ..
    } = suite;
    for child in children {
        child.stop().await?;
    }
    loyalty::verify(&db, &ledger).await
}

/// Starts profiles, loyalty and feedback on `db` and prepares their writes: customers in
/// profiles, members in loyalty, an active NPS survey with invitations in feedback.
async fn start(harness: &Harness, db: &BenchDatabase) -> anyhow::Result<Suite> {
    let scale = &harness.scale;
    let env = service_env(db.url(), harness.redis_url.as_deref());
    let mut children = Vec::new();
    let mut conns = Vec::new();
    for service in ["profiles", "loyalty", "feedback"] {
        let serve = ["bench-serve".to_owned(), service.to_owned()];
        let child =
            Child::start(&format!("writes-{service}"), &serve, &env, &harness.log_dir).await?;
        conns.push(Connections::open(child.addr(), scale.connections).await?);
        children.push(child);
    }
    let (profiles, loyalty_conns, feedback) =
        (conns[0].clone(), conns[1].clone(), conns[2].clone());
    let (customers, _) =
        feed::create_customers(&profiles, scale.feed_customers, scale.feed_concurrency).await?;
    let ledger = Arc::new(loyalty::setup(&loyalty_conns, scale).await?);
    let invitations = invite(&feedback, scale.members * 3 / 2).await?;
    Ok(Suite {
        children,
        profiles,
        loyalty: loyalty_conns,
        feedback,
        customers: Arc::new(customers),
        ledger,
        invitations: Arc::new(invitations),
    })
}

/// An active survey with one required NPS question, and `count` invitations to it (each for
/// a new customer), 16 created at a time.
async fn invite(conns: &Arc<Connections>, count: usize) -> anyhow::Result<Invitations> {
    let mut client = FeedbackServiceClient::new(conns.pick());
    let survey = client
        .create_survey(fb::CreateSurveyRequest {
            survey: Some(fb::Survey {
                display_name: "Benchmark NPS".to_owned(),
                questions: vec![fb::Question {
                    question_id: "nps".to_owned(),
                    text: "How likely are you to recommend us?".to_owned(),
                    kind: fb::QuestionKind::Nps.into(),
                    required: true,
                    ..Default::default()
                }],
                target: Some(fb::SurveyTarget {
                    touchpoint_kind: fb::TouchpointKind::Order.into(),
                    segment_id: String::new(),
                }),
                ..Default::default()
            }),
            request_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .context("CreateSurvey failed")?
        .into_inner()
        .survey
        .context("CreateSurvey answered no survey")?
        .survey_id;
    client
        .activate_survey(fb::ActivateSurveyRequest {
            survey_id: survey.clone(),
            etag: String::new(),
        })
        .await
        .context("ActivateSurvey failed")?;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (conns, next, survey) = (conns.clone(), next.clone(), survey.clone());
        workers.spawn(async move {
            let mut made = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let invitation = FeedbackServiceClient::new(conns.pick())
                    .create_invitation(fb::CreateInvitationRequest {
                        invitation: Some(fb::Invitation {
                            survey_id: survey.clone(),
                            customer_id: uuid::Uuid::now_v7().to_string(),
                            touchpoint: Some(fb::TouchpointRef {
                                kind: fb::TouchpointKind::Order.into(),
                                touchpoint_id: uuid::Uuid::now_v7().to_string(),
                            }),
                            channel: "app".to_owned(),
                            ..Default::default()
                        }),
                        request_id: uuid::Uuid::now_v7().to_string(),
                    })
                    .await
                    .context("CreateInvitation failed")?
                    .into_inner()
                    .invitation
                    .context("CreateInvitation answered no invitation")?;
                made.push(invitation.invitation_id);
            }
            anyhow::Ok(made)
        });
    }
    let mut ids = Vec::with_capacity(count);
    while let Some(worker) = workers.join_next().await {
        ids.extend(worker.context("an inviting worker panicked")??);
    }
    Ok(Invitations {
        ids,
        next: AtomicUsize::new(0),
    })
}

/// One write of the mixed load, its kind by `pick`: RecordActivity, EarnPoints or
/// SubmitResponse. Each answer is reported to `deliveries` when given.
fn mixed_call(suite: &Suite, deliveries: Option<Arc<Deliveries>>) -> MakeCall {
    let earn = loyalty::make_call(&suite.ledger, Spread::Uniform, deliveries.clone());
    let profiles = suite.profiles.clone();
    let feedback = suite.feedback.clone();
    let customers = suite.customers.clone();
    let invitations = suite.invitations.clone();
    Arc::new(move |loyalty_channel: Channel, pick| -> CallFuture {
        match pick % 3 {
            0 => earn(loyalty_channel, pick / 3),
            1 => {
                let customer = &customers[((pick >> 8) % customers.len() as u64) as usize];
                let request = pr::RecordActivityRequest {
                    activity: Some(feed::activity(customer, pick >> 8)),
                    customer_identity: None,
                };
                let (channel, deliveries) = (profiles.pick(), deliveries.clone());
                Box::pin(async move {
                    let answer = ProfilesServiceClient::new(channel)
                        .record_activity(request)
                        .await?
                        .into_inner();
                    if let (Some(deliveries), Some(activity)) = (&deliveries, answer.activity) {
                        deliveries.answered(activity.activity_id);
                    }
                    Ok(())
                })
            }
            _ => {
                let (channel, deliveries) = (feedback.pick(), deliveries.clone());
                let invitation = invitations.take();
                Box::pin(async move {
                    let invitation_id = invitation.ok_or_else(|| {
                        tonic::Status::resource_exhausted("the benchmark ran out of invitations")
                    })?;
                    let answer = FeedbackServiceClient::new(channel)
                        .submit_response(fb::SubmitResponseRequest {
                            invitation_id,
                            answers: vec![fb::Answer {
                                question_id: "nps".to_owned(),
                                value: Some(fb::answer::Value::Score(10)),
                            }],
                            channel: String::new(),
                            request_id: uuid::Uuid::now_v7().to_string(),
                        })
                        .await?
                        .into_inner();
                    if let (Some(deliveries), Some(response)) =
                        (&deliveries, answer.survey_response)
                    {
                        deliveries.answered(response.response_id);
                    }
                    Ok(())
                })
            }
        }
    })
}

/// Followers of the three feeds' write events into `deliveries`.
async fn follow_all(suite: &Suite, deliveries: &Arc<Deliveries>) -> anyhow::Result<Vec<Follower>> {
    Ok(vec![
        delivery::follow(
            suite.profiles.pick(),
            pr::ActivityRecorded::full_name(),
            recorded_activity,
            deliveries.clone(),
        )
        .await?,
        loyalty::follow_earns(suite.loyalty.pick(), deliveries.clone()).await?,
        delivery::follow(
            suite.feedback.pick(),
            fb::ResponseSubmitted::full_name(),
            submitted_response,
            deliveries.clone(),
        )
        .await?,
    ])
}

/// The activity an ActivityRecorded reports.
fn recorded_activity(payload: &[u8]) -> anyhow::Result<Option<String>> {
    let recorded =
        pr::ActivityRecorded::decode(payload).context("an ActivityRecorded does not decode")?;
    Ok(recorded.activity.map(|activity| activity.activity_id))
}

/// The response a ResponseSubmitted reports.
fn submitted_response(payload: &[u8]) -> anyhow::Result<Option<String>> {
    let submitted =
        fb::ResponseSubmitted::decode(payload).context("a ResponseSubmitted does not decode")?;
    Ok(Some(submitted.response_id))
}

/// The delays of [`IDLE_WRITES`] writes of each kind sent one at a time.
async fn idle_delays(suite: &Suite) -> anyhow::Result<Samples> {
    let deliveries = Arc::new(Deliveries::default());
    let followers = follow_all(suite, &deliveries).await?;
    let call = mixed_call(suite, Some(deliveries.clone()));
    let mut rng = load::Rng::new(0x5EED);
    for i in 0..IDLE_WRITES * 3 {
        // The kind by `i` (pick % 3), the rest drawn. An EarnPoints that replays an earlier
        // earn (one in 50) expects no event.
        let pick = (rng.next_u64() / 3) * 3 + (i % 3) as u64;
        call(suite.loyalty.pick(), pick)
            .await
            .map_err(|status| anyhow::anyhow!("a write sent alone failed: {status}"))?;
    }
    delivery::finish(followers, &deliveries, "writes.feed_delay (idle)").await
}
