//! spawn_app: the feedback service started in-process on port 0 over a fresh database, with
//! a manual clock; a typed client; fixtures and status assertions.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::feedback::v1 as pb;
use custops_contracts::custops::feedback::v1::feedback_service_client::FeedbackServiceClient;
use custops_feedback::domain::ManualClock;
use custops_testkit::TestDatabase;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub(crate) type Client = FeedbackServiceClient<Channel>;

/// A running feedback service.
pub(crate) struct TestApp {
    pub(crate) client: Client,
    /// The port the service listens on.
    #[allow(
        dead_code,
        reason = "read by tests/rewards.rs, which shares these helpers"
    )]
    pub(crate) port: u16,
    pub(crate) clock: ManualClock,
    /// Admin pool on the test database (schema-qualify: `feedback.tickets`).
    pub(crate) pool: PgPool,
    stop: CancellationToken,
    // Last: the database is dropped after everything that uses it.
    _db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The longest retry backoff of the test services' reward worker.
pub(crate) const REWARD_MAX_BACKOFF: std::time::Duration = std::time::Duration::from_millis(300);

/// The instant tests start at.
pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
        .single()
        .unwrap_or_default()
}

/// Logs of the service under test, only when `TEST_LOG` is set.
fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub(crate) async fn spawn_app() -> anyhow::Result<TestApp> {
    let db = TestDatabase::create().await?;
    let settings = ServiceSettings::for_local(ServiceKind::Feedback, db.url());
    spawn_app_with(db, settings, ManualClock::new(t0())).await
}

/// The service over `db` with `settings` (e.g. a loyalty peer) and `clock`.
pub(crate) async fn spawn_app_with(
    db: TestDatabase,
    settings: ServiceSettings,
    clock: ManualClock,
) -> anyhow::Result<TestApp> {
    start(
        db,
        settings,
        clock,
        custops_feedback::jobs::PRUNE_KEYS_EVERY,
    )
    .await
}

/// [`spawn_app`] pruning expired idempotency keys every `every` (instead of hourly).
pub(crate) async fn spawn_app_pruning_every(every: std::time::Duration) -> anyhow::Result<TestApp> {
    let db = TestDatabase::create().await?;
    let settings = ServiceSettings::for_local(ServiceKind::Feedback, db.url());
    start(db, settings, ManualClock::new(t0()), every).await
}

async fn start(
    db: TestDatabase,
    settings: ServiceSettings,
    clock: ManualClock,
    prune_keys_every: std::time::Duration,
) -> anyhow::Result<TestApp> {
    init_logging();
    let overrides = custops_feedback::Overrides {
        clock: Arc::new(clock.clone()),
        rewards: custops_feedback::jobs::rewards::WorkerOptions {
            poll: std::time::Duration::from_millis(50),
            initial_backoff: std::time::Duration::from_millis(50),
            max_backoff: REWARD_MAX_BACKOFF,
            call_timeout: std::time::Duration::from_secs(2),
            ..Default::default()
        },
        prune_keys_every,
    };
    let app = custops_feedback::build_with(settings, overrides).await?;
    let port = app.port();
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move { app.run_until_stopped(stop.cancelled_owned()).await }
    });
    let client = FeedbackServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
    let pool = PgPool::connect(db.url()).await?;
    Ok(TestApp {
        client,
        port,
        clock,
        pool,
        stop,
        _db: db,
    })
}

/// The fields of an INVALID_ARGUMENT's BadRequest.
pub(crate) fn fields(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|f| f.field).collect())
        .unwrap_or_default()
}

/// The ErrorInfo reason of a status.
pub(crate) fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// The ErrorInfo metadata value `key`.
pub(crate) fn metadata(status: &Status, key: &str) -> String {
    status
        .get_details_error_info()
        .and_then(|i| i.metadata.get(key).cloned())
        .unwrap_or_default()
}

pub(crate) fn question(id: &str, kind: pb::QuestionKind, required: bool) -> pb::Question {
    pb::Question {
        question_id: id.to_owned(),
        text: format!("Question {id}?"),
        kind: kind.into(),
        required,
        ..Default::default()
    }
}

/// A survey with a required NPS question, an optional CSAT, an optional CES, a choice and a
/// free-text question, aimed at orders.
pub(crate) fn full_survey() -> pb::Survey {
    let mut choice = question("reason", pb::QuestionKind::SingleChoice, false);
    choice.options = vec![
        pb::ChoiceOption {
            option_id: "delivery".to_owned(),
            label: "Delivery".to_owned(),
        },
        pb::ChoiceOption {
            option_id: "price".to_owned(),
            label: "Price".to_owned(),
        },
    ];
    pb::Survey {
        display_name: "Post-delivery NPS".to_owned(),
        questions: vec![
            question("nps", pb::QuestionKind::Nps, true),
            question("csat", pb::QuestionKind::Csat, false),
            question("ces", pb::QuestionKind::Ces, false),
            choice,
            question("comment", pb::QuestionKind::FreeText, false),
        ],
        target: Some(pb::SurveyTarget {
            touchpoint_kind: pb::TouchpointKind::Order.into(),
            segment_id: String::new(),
        }),
        ..Default::default()
    }
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh request id.
pub(crate) fn rid() -> String {
    format!(
        "req-{}",
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Creates and activates `survey`; returns its id.
pub(crate) async fn active_survey(
    client: &mut Client,
    survey: pb::Survey,
) -> anyhow::Result<String> {
    let created = client
        .create_survey(pb::CreateSurveyRequest {
            survey: Some(survey),
            request_id: rid(),
        })
        .await?
        .into_inner()
        .survey
        .unwrap_or_default();
    client
        .activate_survey(pb::ActivateSurveyRequest {
            survey_id: created.survey_id.clone(),
            etag: String::new(),
        })
        .await?;
    Ok(created.survey_id)
}

/// Invites a new customer (a fresh id, about a new order) through `channel`; returns the
/// invitation id.
pub(crate) async fn invite(
    client: &mut Client,
    survey_id: &str,
    channel: &str,
) -> anyhow::Result<String> {
    let n = rid();
    let invitation = client
        .create_invitation(pb::CreateInvitationRequest {
            invitation: Some(pb::Invitation {
                survey_id: survey_id.to_owned(),
                customer_id: uuid::Uuid::now_v7().to_string(),
                touchpoint: Some(pb::TouchpointRef {
                    kind: pb::TouchpointKind::Order.into(),
                    touchpoint_id: format!("order-{n}"),
                }),
                channel: channel.to_owned(),
                ..Default::default()
            }),
            request_id: n,
        })
        .await?
        .into_inner()
        .invitation
        .unwrap_or_default();
    Ok(invitation.invitation_id)
}

pub(crate) fn score(question_id: &str, score: i32) -> pb::Answer {
    pb::Answer {
        question_id: question_id.to_owned(),
        value: Some(pb::answer::Value::Score(score)),
    }
}

pub(crate) fn omitted(question_id: &str, omission: pb::AnswerOmission) -> pb::Answer {
    pb::Answer {
        question_id: question_id.to_owned(),
        value: Some(pb::answer::Value::Omission(omission.into())),
    }
}

pub(crate) fn submit_request(
    invitation_id: &str,
    answers: Vec<pb::Answer>,
) -> pb::SubmitResponseRequest {
    pb::SubmitResponseRequest {
        invitation_id: invitation_id.to_owned(),
        answers,
        channel: String::new(),
        request_id: rid(),
    }
}

/// Invites and submits `answers`; returns the stored response.
pub(crate) async fn respond(
    client: &mut Client,
    survey_id: &str,
    channel: &str,
    answers: Vec<pb::Answer>,
) -> anyhow::Result<pb::SurveyResponse> {
    let invitation_id = invite(client, survey_id, channel).await?;
    let response = client
        .submit_response(submit_request(&invitation_id, answers))
        .await?
        .into_inner()
        .survey_response
        .unwrap_or_default();
    Ok(response)
}
