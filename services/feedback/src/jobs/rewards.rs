//! The survey reward worker: rewards paid through loyalty, from a durable queue.
//!
//! A rewarded, completed response commits with its reward PENDING (the `responses` row is the
//! queue: `store::rewards`). This worker leases due rewards (`FOR UPDATE SKIP LOCKED`,
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

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use custops_common::client::ServiceChannel;
use custops_common::error::DisplayChain;
use custops_common::metrics::{self, Counter, KeyValue};
use custops_common::outbox;
use custops_common::trace_context;
use custops_contracts::custops::loyalty::v1 as loyalty;
use custops_contracts::custops::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::Instrument;

use crate::domain::Clock;
use crate::domain::response::{DueReward, reward_request_id};
use crate::error::Error;
use crate::events;
use crate::store::rewards;

/// Rewards settled, by outcome, counted once their transaction committed.
static SETTLED: LazyLock<Counter<u64>> =
    LazyLock::new(|| metrics::SURVEY_REWARDS_SETTLED.counter());

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

/// What loyalty said.
enum Outcome {
    Delivered { ledger_entry_id: String },
    Retry { reason: String },
    Rejected { reason: String },
}

/// Runs the worker until `stop` is cancelled. It polls on real time (`options.poll` between
/// empty rounds), but every due-time decision — which rewards are due, how long a lease hides
/// one, when a failed one is due again — is made on `clock`, the service's clock, which also
/// set each reward's first due time when its response was submitted (a `ManualClock` in
/// tests: a retry is due when the test moves the clock past it, whatever real time passes).
pub async fn run(
    pool: PgPool,
    channel: ServiceChannel,
    clock: Arc<dyn Clock>,
    options: WorkerOptions,
    stop: CancellationToken,
) {
    let client = LoyaltyServiceClient::new(channel);
    while !stop.is_cancelled() {
        let worked = match round(&pool, &client, clock.as_ref(), &options).await {
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
    clock: &dyn Clock,
    options: &WorkerOptions,
) -> Result<usize, Error> {
    let now = clock.now();
    let lease_until = now + chrono::Duration::from_std(options.lease).unwrap_or_default();
    let leased = rewards::lease(pool, now, lease_until, options.batch).await?;
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
            record(pool, &due, outcome, clock.now(), options).await
        }
        .instrument(span)
        .await?;
    }
    Ok(n)
}

async fn earn(
    mut client: LoyaltyServiceClient<ServiceChannel>,
    due: &DueReward,
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
    due: &DueReward,
    outcome: Outcome,
    now: DateTime<Utc>,
    options: &WorkerOptions,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    // The end state this call settled the reward in, if any (a lost race settles nothing).
    let mut settled = None;
    match outcome {
        Outcome::Delivered { ledger_entry_id } => {
            if rewards::deliver(&mut tx, due.response_id, &ledger_entry_id, now).await? {
                let event = events::survey_reward_granted(due, &ledger_entry_id, now);
                outbox::append(&mut tx, event).await?;
                settled = Some("delivered");
            }
        }
        Outcome::Retry { reason } => {
            let next =
                now + chrono::Duration::from_std(backoff(options, due.attempt)).unwrap_or_default();
            rewards::retry(&mut tx, due.response_id, next, &reason).await?;
        }
        Outcome::Rejected { reason } => {
            if rewards::reject(&mut tx, due.response_id, &reason).await? {
                outbox::append(&mut tx, events::survey_reward_rejected(due, &reason, now)).await?;
                settled = Some("rejected");
            }
        }
    }
    tx.commit().await?;
    if let Some(outcome) = settled {
        SETTLED.add(1, &[KeyValue::new("custops.reward.outcome", outcome)]);
    }
    Ok(())
}
