//! `spawn_app`: the loyalty service built through its own `build_with_clock` on port 0, in a
//! fresh database, with a manual clock and a typed client; plus request builders.

use std::sync::Arc;

use anyhow::Context;
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::Money;
use custops_contracts::custops::loyalty::v1 as pb;
use custops_contracts::custops::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use custops_loyalty::domain::{Clock, ManualClock};
use custops_testkit::TestDatabase;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic_types::StatusExt;
use uuid::Uuid;

/// A running loyalty service.
pub(crate) struct TestApp {
    /// Typed client.
    pub(crate) client: LoyaltyServiceClient<Channel>,
    /// Direct access to the database, for checking invariants.
    pub(crate) pool: PgPool,
    /// The service clock.
    pub(crate) clock: Arc<ManualClock>,
    _stop: oneshot::Sender<()>,
    _db: TestDatabase,
}

/// Starts the service on a fresh database.
pub(crate) async fn spawn_app() -> anyhow::Result<TestApp> {
    spawn_app_with_pool(10).await
}

/// Starts the service with a pool of `connections`.
pub(crate) async fn spawn_app_with_pool(connections: u32) -> anyhow::Result<TestApp> {
    spawn_app_with_settings(|settings| settings.database.max_connections = connections).await
}

/// Starts the service with its local settings changed by `change`.
pub(crate) async fn spawn_app_with_settings(
    change: impl FnOnce(&mut ServiceSettings),
) -> anyhow::Result<TestApp> {
    let db = TestDatabase::create().await?;
    let mut settings = ServiceSettings::for_local(ServiceKind::Loyalty, db.url());
    change(&mut settings);
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    // No scheduler: these tests run the jobs by RPC, at the clock times they choose.
    let (client, stop) = start(settings, clock.clone(), None).await?;
    Ok(TestApp {
        client,
        pool: test_pool(&db).await?,
        clock,
        _stop: stop,
        _db: db,
    })
}

/// Builds and serves one instance of the service with `settings`, `clock` and the scheduler
/// pace `jobs`; it stops when the returned sender is dropped (or sent to).
pub(crate) async fn start(
    settings: ServiceSettings,
    clock: Arc<dyn Clock>,
    jobs: Option<custops_loyalty::jobs::JobSchedule>,
) -> anyhow::Result<(LoyaltyServiceClient<Channel>, oneshot::Sender<()>)> {
    let options = custops_loyalty::Options { clock, jobs };
    let app = custops_loyalty::build_with(settings, options).await?;
    let port = app.port();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await
        .context("Failed to connect to the loyalty service")?;
    Ok((LoyaltyServiceClient::new(channel), stop))
}

/// A small pool on the test database with the loyalty schema first on the search path, for
/// checking what the service stored.
pub(crate) async fn test_pool(db: &TestDatabase) -> anyhow::Result<PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(&mut *conn, "SET search_path = loyalty").await?;
                Ok(())
            })
        })
        .connect(db.url())
        .await?;
    Ok(pool)
}

/// A fresh request id.
pub(crate) fn rid() -> String {
    Uuid::now_v7().to_string()
}

/// Money in CNY.
pub(crate) fn cny(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: "CNY".to_owned(),
    }
}

/// A program: CNY, 1 point per yuan rounded down, three tiers on qualifying points (silver
/// at 500, gold at 2,000), no expiry, the given clawback policy.
pub(crate) fn program(clawback: pb::ClawbackPolicy, expire_after_days: i32) -> pb::Program {
    pb::Program {
        display_name: "Acme Rewards".to_owned(),
        currency: "CNY".to_owned(),
        earning_rules: Some(pb::EarningRules {
            base_rate: Some(pb::EarnRate {
                points: 1,
                per_amount_minor: 100,
            }),
            rounding_mode: pb::RoundingMode::Down as i32,
            ..Default::default()
        }),
        expiry_policy: Some(pb::ExpiryPolicy { expire_after_days }),
        clawback_policy: clawback as i32,
        tiers: vec![
            tier("member", "Member", None),
            tier("silver", "Silver", Some(500)),
            tier("gold", "Gold", Some(2_000)),
        ],
        tier_policy: Some(pb::TierPolicy {
            qualifying_window_days: 365,
            review_schedule: pb::TierReviewSchedule::Anniversary as i32,
            review_period_months: 12,
            grace_period_days: 30,
            downgrade_mode: pb::TierDowngradeMode::ToQualifiedTier as i32,
        }),
        ..Default::default()
    }
}

fn tier(code: &str, name: &str, threshold: Option<i64>) -> pb::Tier {
    pb::Tier {
        tier_code: code.to_owned(),
        display_name: name.to_owned(),
        threshold: threshold.map(|p| pb::QualifyingAmount {
            amount: Some(pb::qualifying_amount::Amount::QualifyingPoints(p)),
        }),
        ..Default::default()
    }
}

impl TestApp {
    /// Creates a program and returns its id.
    pub(crate) async fn create_program(&self, program: pb::Program) -> anyhow::Result<String> {
        let created = self
            .client
            .clone()
            .create_program(pb::CreateProgramRequest {
                request_id: rid(),
                program: Some(program),
            })
            .await?
            .into_inner();
        Ok(created.program.context("no program")?.program_id)
    }

    /// Creates a reward of `program_id` named `display_name`, costing `points_cost`, with
    /// `stock` units.
    pub(crate) async fn create_reward(
        &self,
        program_id: &str,
        display_name: &str,
        points_cost: i64,
        stock: i64,
    ) -> anyhow::Result<pb::Reward> {
        let created = self
            .client
            .clone()
            .create_reward(pb::CreateRewardRequest {
                request_id: rid(),
                reward: Some(pb::Reward {
                    program_id: program_id.to_owned(),
                    display_name: display_name.to_owned(),
                    points_cost,
                    available_stock: stock,
                    ..Default::default()
                }),
            })
            .await?
            .into_inner();
        created.reward.context("no reward")
    }

    /// Enrols a new customer and returns the member id.
    pub(crate) async fn enrol(&self, program_id: &str) -> anyhow::Result<String> {
        let member = self
            .client
            .clone()
            .enrol_member(pb::EnrolMemberRequest {
                request_id: rid(),
                program_id: program_id.to_owned(),
                customer_id: Uuid::now_v7().to_string(),
                enrol_channel: "app".to_owned(),
            })
            .await?
            .into_inner()
            .member
            .context("no member")?;
        Ok(member.member_id)
    }

    /// Grants `points` to `member_id`.
    pub(crate) async fn grant(
        &self,
        member_id: &str,
        points: i64,
    ) -> anyhow::Result<pb::EarnPointsResponse> {
        Ok(self
            .client
            .clone()
            .earn_points(grant(rid(), member_id, points))
            .await?
            .into_inner())
    }

    /// The member's balances.
    pub(crate) async fn balances(&self, member_id: &str) -> anyhow::Result<pb::PointBalances> {
        self.client
            .clone()
            .get_member(pb::GetMemberRequest {
                member_id: member_id.to_owned(),
                view: 0,
            })
            .await?
            .into_inner()
            .member
            .and_then(|m| m.balances)
            .context("no balances")
    }
}

/// Names a member by id.
pub(crate) fn by_id(member_id: &str) -> Option<pb::MemberRef> {
    Some(pb::MemberRef {
        key: Some(pb::member_ref::Key::MemberId(member_id.to_owned())),
    })
}

/// An EarnPoints grant.
pub(crate) fn grant(request_id: String, member_id: &str, points: i64) -> pb::EarnPointsRequest {
    pb::EarnPointsRequest {
        request_id,
        member: by_id(member_id),
        source: Some(pb::earn_points_request::Source::Grant(pb::PointsGrant {
            points,
            qualifying: false,
            expire_time: None,
        })),
        reason: "Thank you".to_owned(),
        ..Default::default()
    }
}

/// A RedeemPoints.
pub(crate) fn redeem(request_id: String, member_id: &str, points: i64) -> pb::RedeemPointsRequest {
    pb::RedeemPointsRequest {
        request_id,
        member: by_id(member_id),
        points,
        ..Default::default()
    }
}

/// The fields a status's BadRequest names.
pub(crate) fn bad_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|f| f.field).collect())
        .unwrap_or_default()
}

/// The ErrorInfo reason and metadata of a status.
pub(crate) fn error_info(
    status: &tonic::Status,
) -> (String, std::collections::HashMap<String, String>) {
    status
        .get_details_error_info()
        .map(|i| (i.reason, i.metadata))
        .unwrap_or_default()
}

/// Every member's available and pending balances equal the sums of their ledger deltas and of
/// their (available or pending) lots, and none is negative.
pub(crate) async fn assert_ledger_invariants(pool: &PgPool) -> anyhow::Result<()> {
    let rows: Vec<(Uuid, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT b.member_id, b.available_points, \
           coalesce((SELECT sum(available_delta) FROM ledger_entries e WHERE e.member_id = b.member_id), 0)::bigint, \
           coalesce((SELECT sum(remaining_points) FROM point_lots l WHERE l.member_id = b.member_id AND NOT l.pending), 0)::bigint, \
           b.pending_points, \
           coalesce((SELECT sum(pending_delta) FROM ledger_entries e WHERE e.member_id = b.member_id), 0)::bigint, \
           coalesce((SELECT sum(remaining_points) FROM point_lots l WHERE l.member_id = b.member_id AND l.pending), 0)::bigint \
         FROM balances b",
    )
    .fetch_all(pool)
    .await?;
    for (member, balance, ledger, lots, pending, pending_ledger, pending_lots) in rows {
        assert_eq!(balance, ledger, "member {member}: balance vs sum of ledger");
        assert_eq!(balance, lots, "member {member}: balance vs sum of lots");
        assert!(balance >= 0, "member {member}: negative balance {balance}");
        assert_eq!(
            pending, pending_ledger,
            "member {member}: pending vs ledger"
        );
        assert_eq!(
            pending, pending_lots,
            "member {member}: pending vs pending lots"
        );
        assert!(pending >= 0, "member {member}: negative pending {pending}");
    }
    Ok(())
}

/// An EarnPoints for a purchase of `amount_minor` CNY (order `order_id`).
pub(crate) fn purchase(
    member_id: &str,
    order_id: &str,
    amount_minor: i64,
) -> pb::EarnPointsRequest {
    pb::EarnPointsRequest {
        request_id: rid(),
        member: by_id(member_id),
        source: Some(pb::earn_points_request::Source::Purchase(pb::Purchase {
            order_id: order_id.to_owned(),
            amount: Some(cny(amount_minor)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A profiles feed event carrying `payload`.
pub(crate) fn feed_event<M: prost::Message + prost::Name>(
    payload: &M,
) -> custops_contracts::custops::common::v1::Event {
    custops_contracts::custops::common::v1::Event {
        sequence: 1,
        event_id: Uuid::now_v7().to_string(),
        event_type: M::full_name(),
        payload: Some(prost_types::Any {
            type_url: format!("type.googleapis.com/{}", M::full_name()),
            value: payload.encode_to_vec(),
        }),
        ..Default::default()
    }
}

/// Delivers `event` as the profiles consumer does: in a transaction of its own.
pub(crate) async fn deliver(
    app: &TestApp,
    event: &custops_contracts::custops::common::v1::Event,
) -> anyhow::Result<()> {
    use custops_common::consumer::EventHandler;

    let mut tx = app.pool.begin().await?;
    custops_loyalty::feeds::profiles::ProfilesFeed::new(app.clock.clone())
        .handle(&mut tx, event)
        .await?;
    tx.commit().await?;
    Ok(())
}
