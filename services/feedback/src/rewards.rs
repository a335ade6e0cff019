//! Survey rewards paid through loyalty, from a durable queue.
//!
//! A rewarded, completed response commits with its reward PENDING (the `responses` row is the
//! queue: `responses_rewards_due`). This worker leases due rewards (`FOR UPDATE SKIP LOCKED`,
//! so replicas share the work), calls loyalty's EarnPoints with the request id
//! `feedback-survey-reward-<response_id>`, and records the outcome with its outbox event.
//! Loyalty keeps the first result of a request id, so a call repeated after a crash or a lost
//! answer pays nothing twice: delivery is at least once, the effect exactly once. Transient
//! failures (loyalty down, deadline) are retried with exponential backoff until loyalty
//! answers; a refusal (member or program unknown, …) makes the reward REJECTED, which
//! RetryReward can re-queue.
//!
//! Each delivery runs in a `survey_reward` span continuing the trace of the call that queued
//! the reward (`reward_traceparent`, stored with the response as the outbox stores its
//! producer's), so one trace shows the response, the EarnPoints call and loyalty's work.

use std::time::Duration;

use chrono::{DateTime, Utc};
use custops_common::client::ServiceChannel;
use custops_common::error::DisplayChain;
use custops_common::outbox::{self, OutboxEvent};
use custops_common::trace_context;
use custops_contracts::custops::feedback::v1 as pb;
use custops_contracts::custops::loyalty::v1 as loyalty;
use custops_contracts::custops::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use sqlx::{PgPool, Row};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::Instrument;
use uuid::Uuid;

use crate::api::convert::ts;
use crate::domain::response::reward_request_id;
use crate::error::Error;

/// How the worker paces itself.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOptions {
    /// Pause between polls when nothing is due.
    pub poll: Duration,
    /// Rewards leased per round.
    pub batch: i64,
    /// How long a lease hides a reward from other workers (longer than one call).
    pub lease: Duration,
    /// Backoff after the first failure; doubled per attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Deadline of one EarnPoints call.
    pub call_timeout: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(250),
            batch: 50,
            lease: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            call_timeout: Duration::from_secs(5),
        }
    }
}

/// One leased reward.
#[derive(Debug)]
struct Due {
    response_id: Uuid,
    survey_id: Uuid,
    customer_id: String,
    points: i64,
    program_id: String,
    attempt: i32,
    /// The trace to continue (empty: none).
    traceparent: String,
}

/// What loyalty said.
enum Outcome {
    Delivered { ledger_entry_id: String },
    Retry { reason: String },
    Rejected { reason: String },
}

/// Runs the worker until `stop` is cancelled. Uses the system clock: retry pacing is real
/// time, whatever clock the API runs on.
pub async fn run(
    pool: PgPool,
    channel: ServiceChannel,
    options: WorkerOptions,
    stop: CancellationToken,
) {
    let client = LoyaltyServiceClient::new(channel);
    while !stop.is_cancelled() {
        let worked = match round(&pool, &client, &options).await {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(error = %DisplayChain(&error), "reward round failed; retrying");
                0
            }
        };
        if worked == 0 {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(options.poll) => {}
            }
        }
    }
}

async fn round(
    pool: &PgPool,
    client: &LoyaltyServiceClient<ServiceChannel>,
    options: &WorkerOptions,
) -> Result<usize, Error> {
    let now = Utc::now();
    let lease_until = now + chrono::Duration::from_std(options.lease).unwrap_or_default();
    let rows = sqlx::query(
        "UPDATE responses SET reward_next_attempt = $2, \
           reward_attempt_count = reward_attempt_count + 1, reward_last_attempt = $1 \
         WHERE response_id IN ( \
           SELECT response_id FROM responses \
           WHERE reward_status IN ('pending', 'retrying') AND reward_next_attempt <= $1 \
           ORDER BY reward_next_attempt LIMIT $3 FOR UPDATE SKIP LOCKED) \
         RETURNING response_id, survey_id, customer_id, reward_points, reward_program_id, \
           reward_attempt_count, reward_traceparent",
    )
    .bind(now)
    .bind(lease_until)
    .bind(options.batch)
    .fetch_all(pool)
    .await?;
    let mut leased = Vec::with_capacity(rows.len());
    for row in &rows {
        leased.push(Due {
            response_id: row.try_get("response_id")?,
            survey_id: row.try_get("survey_id")?,
            customer_id: row.try_get("customer_id")?,
            points: row.try_get::<Option<i64>, _>("reward_points")?.unwrap_or(0),
            program_id: row
                .try_get::<Option<String>, _>("reward_program_id")?
                .unwrap_or_default(),
            attempt: row.try_get("reward_attempt_count")?,
            traceparent: row.try_get("reward_traceparent")?,
        });
    }
    let n = leased.len();
    for due in leased {
        let span = tracing::info_span!(
            "survey_reward",
            response_id = %due.response_id,
            attempt = due.attempt,
        );
        trace_context::continue_trace(&span, &due.traceparent);
        async {
            let outcome = earn(client.clone(), &due, options.call_timeout).await;
            record(pool, &due, outcome, options).await
        }
        .instrument(span)
        .await?;
    }
    Ok(n)
}

async fn earn(
    mut client: LoyaltyServiceClient<ServiceChannel>,
    due: &Due,
    timeout: Duration,
) -> Outcome {
    let mut request = tonic::Request::new(loyalty::EarnPointsRequest {
        request_id: reward_request_id(due.response_id),
        member: Some(loyalty::MemberRef {
            key: Some(loyalty::member_ref::Key::ProgramCustomer(
                loyalty::ProgramCustomer {
                    program_id: due.program_id.clone(),
                    customer_id: due.customer_id.clone(),
                },
            )),
        }),
        source: Some(loyalty::earn_points_request::Source::Grant(
            loyalty::PointsGrant {
                points: due.points,
                qualifying: false,
                expire_time: None,
            },
        )),
        reason: "Thank you for your feedback".to_owned(),
        reason_code: "survey_reward".to_owned(),
        operator_id: String::new(),
    });
    request.set_timeout(timeout);
    match client.earn_points(request).await {
        Ok(response) => Outcome::Delivered {
            ledger_entry_id: response
                .into_inner()
                .ledger_entry
                .map(|e| e.ledger_entry_id)
                .unwrap_or_default(),
        },
        Err(status) => match status.code() {
            // Loyalty refused the reward itself: retrying the same call cannot change that.
            Code::NotFound
            | Code::FailedPrecondition
            | Code::InvalidArgument
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::OutOfRange
            | Code::Unimplemented => Outcome::Rejected {
                reason: reason_of(&status),
            },
            // Transient or unknown: try again later with the same request id.
            Code::Ok
            | Code::Cancelled
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
            | Code::Unauthenticated => Outcome::Retry {
                reason: format!("{:?}", status.code()).to_uppercase(),
            },
        },
    }
}

fn reason_of(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| format!("{:?}", status.code()).to_uppercase())
}

/// The backoff before attempt `attempt + 1`.
fn backoff(options: &WorkerOptions, attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    options
        .initial_backoff
        .saturating_mul(2_u32.saturating_pow(exponent))
        .min(options.max_backoff)
}

async fn record(
    pool: &PgPool,
    due: &Due,
    outcome: Outcome,
    options: &WorkerOptions,
) -> Result<(), Error> {
    let now = Utc::now();
    let mut tx = pool.begin().await?;
    match outcome {
        Outcome::Delivered { ledger_entry_id } => {
            let updated = sqlx::query(
                "UPDATE responses SET reward_status = 'delivered', reward_ledger_entry_id = $2, \
                 reward_deliver_time = $3, reward_next_attempt = NULL, reward_last_error = '' \
                 WHERE response_id = $1 AND reward_status IN ('pending', 'retrying')",
            )
            .bind(due.response_id)
            .bind(&ledger_entry_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 1 {
                outbox::append(&mut tx, granted(due, &ledger_entry_id, now)).await?;
            }
        }
        Outcome::Retry { reason } => {
            let next =
                now + chrono::Duration::from_std(backoff(options, due.attempt)).unwrap_or_default();
            sqlx::query(
                "UPDATE responses SET reward_status = 'retrying', reward_next_attempt = $2, \
                 reward_last_error = $3 \
                 WHERE response_id = $1 AND reward_status IN ('pending', 'retrying')",
            )
            .bind(due.response_id)
            .bind(next)
            .bind(&reason)
            .execute(&mut *tx)
            .await?;
        }
        Outcome::Rejected { reason } => {
            let updated = sqlx::query(
                "UPDATE responses SET reward_status = 'rejected', reward_next_attempt = NULL, \
                 reward_last_error = $2 \
                 WHERE response_id = $1 AND reward_status IN ('pending', 'retrying')",
            )
            .bind(due.response_id)
            .bind(&reason)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 1 {
                outbox::append(&mut tx, rejected(due, &reason, now)).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

fn granted(due: &Due, ledger_entry_id: &str, now: DateTime<Utc>) -> OutboxEvent {
    OutboxEvent::new(
        "survey_response",
        due.response_id,
        &pb::SurveyRewardGranted {
            response_id: due.response_id.to_string(),
            survey_id: due.survey_id.to_string(),
            customer_id: due.customer_id.clone(),
            program_id: due.program_id.clone(),
            points: due.points,
            ledger_entry_id: ledger_entry_id.to_owned(),
            attempt_count: due.attempt,
            grant_time: Some(ts(now)),
        },
    )
}

fn rejected(due: &Due, reason: &str, now: DateTime<Utc>) -> OutboxEvent {
    OutboxEvent::new(
        "survey_response",
        due.response_id,
        &pb::SurveyRewardRejected {
            response_id: due.response_id.to_string(),
            survey_id: due.survey_id.to_string(),
            customer_id: due.customer_id.clone(),
            program_id: due.program_id.clone(),
            points: due.points,
            reason: reason.to_owned(),
            reject_time: Some(ts(now)),
        },
    )
}

/// Re-queues a REJECTED reward (RetryReward); other states are left as they are.
pub async fn requeue(
    conn: &mut sqlx::PgConnection,
    response_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    // The retried delivery continues the RetryReward call's trace: that is where someone looks
    // for its outcome.
    sqlx::query(
        "UPDATE responses SET reward_status = 'pending', reward_next_attempt = $2, \
           reward_traceparent = $3 \
         WHERE response_id = $1 AND reward_status = 'rejected'",
    )
    .bind(response_id)
    .bind(now)
    .bind(trace_context::current_traceparent())
    .execute(conn)
    .await?;
    Ok(())
}
