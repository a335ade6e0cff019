//! `spawn_app`: the segmentation service built through its own `build_with_workers` on port 0
//! over a fresh database (optionally with a Redis, or beside a profiles service), with a manual
//! clock, a typed client, and a pool on the test database whose search_path is the service's
//! schema (for arranging facts and driving the feed handlers directly); fixtures for customers
//! and rules, and helpers reading statuses.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use custops_common::cache::RedisSettings;
use custops_common::clock::ManualClock;
use custops_common::config::ServiceSettings;
use custops_common::paging::PageTokens;
use custops_common::service::ServiceKind;
use custops_contracts::custops::profiles::v1 as profiles_pb;
use custops_contracts::custops::profiles::v1::profiles_service_client::ProfilesServiceClient;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use custops_segmentation::jobs::WorkerOptions;
use custops_segmentation::lookups::Lookups;
use custops_segmentation::state::AppState;
use custops_segmentation::workflow::membership::{self, Cause};
use custops_testkit::TestDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub(crate) type Client = SegmentationServiceClient<Channel>;
pub(crate) type ProfilesClient = ProfilesServiceClient<Channel>;

/// A running segmentation service.
pub(crate) struct TestApp {
    pub(crate) client: Client,
    pub(crate) clock: ManualClock,
    /// A pool on the test database with `search_path = segmentation`.
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

/// The instant most tests start at.
pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The as-of instant of the facts fixtures: 2026-11-23T00:00:00Z.
pub(crate) fn as_of() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// What a test may change in the service it starts.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The manual clock's first instant.
    pub(crate) start: DateTime<Utc>,
    /// A Redis for the lookup caches (in-process caches only when `None`).
    pub(crate) redis_url: Option<String>,
    /// A profiles service whose feed the service follows.
    pub(crate) profiles_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            start: t0(),
            redis_url: None,
            profiles_url: None,
        }
    }
}

/// The service over a fresh database, its clock at [`t0`].
pub(crate) async fn spawn_app() -> anyhow::Result<TestApp> {
    spawn_app_on(TestDatabase::create().await?, Options::default()).await
}

/// The service over a fresh database, its clock at `start`.
pub(crate) async fn spawn_app_at(start: DateTime<Utc>) -> anyhow::Result<TestApp> {
    let options = Options {
        start,
        ..Options::default()
    };
    spawn_app_on(TestDatabase::create().await?, options).await
}

/// The service, with Redis at `redis_url` when given.
pub(crate) async fn spawn_app_with(redis_url: Option<String>) -> anyhow::Result<TestApp> {
    let options = Options {
        redis_url,
        ..Options::default()
    };
    spawn_app_on(TestDatabase::create().await?, options).await
}

/// How every test's service paces its background work: the worker polls often, so tests
/// waiting for a job wait little; the scheduler never ticks on its own (tests drive it through
/// `jobs::scheduler::schedule_once`, at the clock times they choose).
fn workers() -> WorkerOptions {
    WorkerOptions {
        poll: Duration::from_millis(50),
        scheduler_tick: Duration::from_secs(3600),
        ..WorkerOptions::default()
    }
}

/// The service over `db` (which other services of the test may share) with `options`.
/// Profiles in-process and segmentation following its feed over one database, segmentation's
/// clock at the wall clock's now (so events recorded now are not in its future): the
/// segmentation app, a profiles client, and the guard that stops profiles when dropped.
pub(crate) async fn spawn_with_profiles(
    redis_url: Option<String>,
) -> anyhow::Result<(TestApp, ProfilesClient, DropGuard)> {
    let db = TestDatabase::create().await?;
    let stop = CancellationToken::new();
    let profiles_app =
        custops_profiles::build(ServiceSettings::for_local(ServiceKind::Profiles, db.url()))
            .await?;
    let profiles_url = format!("http://127.0.0.1:{}", profiles_app.port());
    tokio::spawn({
        let stop = stop.clone();
        async move { profiles_app.run_until_stopped(stop.cancelled_owned()).await }
    });
    let profiles = ProfilesClient::connect(profiles_url.clone()).await?;
    let app = spawn_app_on(
        db,
        Options {
            start: Utc::now(),
            redis_url,
            profiles_url: Some(profiles_url),
        },
    )
    .await?;
    Ok((app, profiles, stop.drop_guard()))
}

/// A custom event type as a platform team defines it in profiles: `properties` by name and
/// type, none personal or required.
pub(crate) fn event_type(
    name: &str,
    description: &str,
    properties: &[(&str, profiles_pb::EventPropertyType)],
) -> profiles_pb::EventType {
    profiles_pb::EventType {
        event_type_name: name.to_owned(),
        description: description.to_owned(),
        properties: properties
            .iter()
            .map(
                |(property, property_type)| profiles_pb::EventPropertyDefinition {
                    property_name: (*property).to_owned(),
                    property_type: *property_type as i32,
                    description: String::new(),
                    contains_pii: false,
                    required: false,
                },
            )
            .collect(),
        ..Default::default()
    }
}

/// A custom event of type `event_type` of `customer_id` with `properties`, `seconds_ago`
/// seconds before the wall clock (so never in a segmentation clock's future started at it),
/// on the "app" channel.
pub(crate) fn custom_activity(
    customer_id: &str,
    event_id: &str,
    event_type: &str,
    seconds_ago: i64,
    properties: Vec<(&str, profiles_pb::event_property_value::Value)>,
) -> profiles_pb::Activity {
    profiles_pb::Activity {
        customer_id: customer_id.to_owned(),
        source: "app".to_owned(),
        event_id: event_id.to_owned(),
        occur_time: Some(prost_types::Timestamp {
            seconds: Utc::now().timestamp() - seconds_ago,
            nanos: 0,
        }),
        channel: "app".to_owned(),
        details: Some(profiles_pb::activity::Details::CustomEvent(
            profiles_pb::CustomEvent {
                event_type: event_type.to_owned(),
                properties: properties
                    .into_iter()
                    .map(|(name, value)| {
                        (
                            name.to_owned(),
                            profiles_pb::EventPropertyValue { value: Some(value) },
                        )
                    })
                    .collect(),
            },
        )),
        ..Default::default()
    }
}

/// Creates a customer in profiles for each e-mail address; their ids, in order.
pub(crate) async fn profiles_customers(
    profiles: &mut ProfilesClient,
    emails: &[&str],
) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::with_capacity(emails.len());
    for email in emails {
        let customer = profiles
            .create_customer(profiles_pb::CreateCustomerRequest {
                customer: Some(profiles_pb::Customer {
                    identities: vec![profiles_pb::Identity {
                        identity_type: profiles_pb::IdentityType::Email.into(),
                        value: (*email).to_owned(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await?
            .into_inner()
            .customer
            .unwrap_or_default();
        ids.push(customer.customer_id);
    }
    Ok(ids)
}

pub(crate) async fn spawn_app_on(db: TestDatabase, options: Options) -> anyhow::Result<TestApp> {
    let mut settings = ServiceSettings::for_local(ServiceKind::Segmentation, db.url());
    settings.redis = options.redis_url.map(|url| RedisSettings {
        timeout: Duration::from_millis(200),
        ..RedisSettings::new(&url)
    });
    if let Some(url) = options.profiles_url {
        settings.clients.peers.insert(ServiceKind::Profiles, url);
    }
    let clock = ManualClock::new(options.start);
    let overrides = custops_segmentation::Overrides {
        clock: Arc::new(clock.clone()),
    };
    let app = custops_segmentation::build_with_workers(settings, overrides, workers()).await?;
    let port = app.port();
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move { app.run_until_stopped(stop.cancelled_owned()).await }
    });
    let client = SegmentationServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await?
        .max_decoding_message_size(64 * 1024 * 1024);
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET search_path TO segmentation").await?;
                Ok(())
            })
        })
        .connect(db.url())
        .await?;
    Ok(TestApp {
        client,
        clock,
        pool,
        stop,
        _db: db,
    })
}

/// Another replica of the service over the same database (no Redis), and its client.
pub(crate) struct Replica {
    pub(crate) client: Client,
    stop: CancellationToken,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestApp {
    /// Starts a second replica of the service on this app's database.
    pub(crate) async fn replica(&self) -> anyhow::Result<Replica> {
        let settings = ServiceSettings::for_local(ServiceKind::Segmentation, self._db.url());
        let overrides = custops_segmentation::Overrides {
            clock: Arc::new(self.clock.clone()),
        };
        let app = custops_segmentation::build_with_workers(settings, overrides, workers()).await?;
        let port = app.port();
        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move { app.run_until_stopped(stop.cancelled_owned()).await }
        });
        let client = SegmentationServiceClient::connect(format!("http://127.0.0.1:{port}")).await?;
        Ok(Replica { client, stop })
    }

    /// Inserts (or updates) a customer's facts row with `country` and `tags`.
    pub(crate) async fn put_customer(
        &self,
        id: &str,
        country: &str,
        tags: &[&str],
    ) -> anyhow::Result<()> {
        let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
        sqlx::query(
            "INSERT INTO customer_facts (customer_id, country, tags) VALUES ($1, $2, $3) \
             ON CONFLICT (customer_id) DO UPDATE SET country = $2, tags = $3",
        )
        .bind(id)
        .bind(country)
        .bind(&tags)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Re-evaluates a customer as a feed event would, and commits.
    pub(crate) async fn reevaluate(&self, id: &str) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        membership::reevaluate_customer(
            &mut tx,
            id,
            &Cause {
                reason: pb::ChangeReason::Event,
                event_id: format!("evt-{id}"),
                now: self.clock_now(),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A state over the test database and clock, for driving the library's entry points
    /// (e.g. `jobs::scheduler::schedule_once`) directly.
    pub(crate) fn state(&self) -> AppState {
        AppState {
            pool: self.pool.clone(),
            clock: Arc::new(self.clock.clone()),
            page_tokens: PageTokens::random(),
            lookups: Arc::new(Lookups::new(None)),
        }
    }

    pub(crate) fn clock_now(&self) -> DateTime<Utc> {
        use custops_common::clock::Clock;
        self.clock.now()
    }

    /// Creates a rule segment and waits for its first recompute.
    pub(crate) async fn rule_segment(
        &self,
        name: &str,
        rule: pb::Condition,
    ) -> anyhow::Result<pb::Segment> {
        let response = self
            .client
            .clone()
            .create_segment(pb::CreateSegmentRequest {
                segment: Some(pb::Segment {
                    display_name: name.to_owned(),
                    kind: pb::SegmentKind::Rule.into(),
                    rule: Some(rule),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?
            .into_inner();
        let job = self.wait_job(&response.recompute_job_id).await?;
        anyhow::ensure!(
            job.state == i32::from(pb::RecomputeJobState::Succeeded),
            "job ended {job:?}"
        );
        let segment = response.segment.unwrap_or_default();
        Ok(self.get_segment(&segment.segment_id).await?)
    }

    /// Whether segmentation holds `count` custom events of `customer_id` within `patience`.
    pub(crate) async fn stores_events(
        &self,
        customer_id: &str,
        count: i64,
        patience: Duration,
    ) -> bool {
        eventually(patience, || {
            let pool = self.pool.clone();
            let id = customer_id.to_owned();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM customer_events WHERE customer_id = $1",
                )
                .bind(&id)
                .fetch_one(&pool)
                .await
                .is_ok_and(|n| n == count)
            }
        })
        .await
    }

    /// Asserts CreateSegment refuses each case's rule (`rule` of its condition) naming exactly
    /// the case's fields.
    pub(crate) async fn assert_refusals<C: std::fmt::Debug + Clone>(
        &self,
        cases: Vec<(C, &[&str])>,
        rule: impl Fn(C) -> pb::Condition,
    ) -> anyhow::Result<()> {
        for (condition, expected) in cases {
            // Act
            let named = self
                .refused_rule(rule(condition.clone()))
                .await
                .map_err(|e| e.context(format!("{condition:?}")))?;

            // Assert
            assert_eq!(named, expected, "{condition:?}");
        }
        Ok(())
    }

    /// The fields named by CreateSegment refusing a rule segment with `rule`; an error when it
    /// was accepted.
    pub(crate) async fn refused_rule(&self, rule: pb::Condition) -> anyhow::Result<Vec<String>> {
        let created = self
            .client
            .clone()
            .create_segment(pb::CreateSegmentRequest {
                segment: Some(pb::Segment {
                    display_name: "bad".to_owned(),
                    kind: pb::SegmentKind::Rule.into(),
                    rule: Some(rule),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => anyhow::bail!("the rule was accepted"),
            Err(status) => Ok(fields(&status)),
        }
    }

    pub(crate) async fn static_segment(&self, name: &str) -> anyhow::Result<pb::Segment> {
        Ok(self
            .client
            .clone()
            .create_segment(pb::CreateSegmentRequest {
                segment: Some(pb::Segment {
                    display_name: name.to_owned(),
                    kind: pb::SegmentKind::Static.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?
            .into_inner()
            .segment
            .unwrap_or_default())
    }

    pub(crate) async fn get_segment(&self, id: &str) -> Result<pb::Segment, Status> {
        Ok(self
            .client
            .clone()
            .get_segment(pb::GetSegmentRequest {
                segment_id: id.to_owned(),
                view: 0,
            })
            .await?
            .into_inner()
            .segment
            .unwrap_or_default())
    }

    /// Waits (up to 120 s) until a job has ended and returns it.
    pub(crate) async fn wait_job(&self, id: &str) -> anyhow::Result<pb::RecomputeJob> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let job = self
                .client
                .clone()
                .get_recompute_job(pb::GetRecomputeJobRequest {
                    recompute_job_id: id.to_owned(),
                })
                .await?
                .into_inner()
                .job
                .unwrap_or_default();
            let state = pb::RecomputeJobState::try_from(job.state)?;
            if !matches!(
                state,
                pb::RecomputeJobState::Queued | pb::RecomputeJobState::Running
            ) {
                return Ok(job);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "job {id} did not end: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// ListCustomerSegments.
    pub(crate) async fn segments_of(&self, customer: &str) -> Result<Vec<String>, Status> {
        Ok(self
            .client
            .clone()
            .list_customer_segments(pb::ListCustomerSegmentsRequest {
                customer_id: customer.to_owned(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .segment_ids)
    }

    /// CheckMembership.
    pub(crate) async fn is_member(&self, segment: &str, customer: &str) -> Result<bool, Status> {
        Ok(self
            .client
            .clone()
            .check_membership(pb::CheckMembershipRequest {
                segment_id: segment.to_owned(),
                customer_id: customer.to_owned(),
            })
            .await?
            .into_inner()
            .member)
    }

    /// The stored members of a segment, ascending.
    pub(crate) async fn stored_members(&self, segment: &str) -> anyhow::Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT customer_id FROM memberships WHERE segment_id = $1::uuid ORDER BY 1",
        )
        .bind(segment)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Outbox events of a type (full protobuf name), as payloads in append order.
    pub(crate) async fn events(&self, event_type: &str) -> anyhow::Result<Vec<Vec<u8>>> {
        Ok(sqlx::query_scalar(
            "SELECT payload FROM outbox WHERE type = $1 ORDER BY appended_at, id",
        )
        .bind(event_type)
        .fetch_all(&self.pool)
        .await?)
    }
}

// ---------- rules ----------

pub(crate) fn string(value: &str) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::StringValue(value.to_owned())),
    }
}

pub(crate) fn integer(value: i64) -> pb::Value {
    pb::Value {
        kind: Some(pb::value::Kind::IntegerValue(value)),
    }
}

pub(crate) fn predicate(
    field: &str,
    operator: pb::Operator,
    values: Vec<pb::Value>,
) -> pb::Condition {
    pb::Condition {
        kind: Some(pb::condition::Kind::Predicate(pb::Predicate {
            field: field.to_owned(),
            operator: operator.into(),
            values,
            ..Default::default()
        })),
    }
}

/// `geo.country = country`.
pub(crate) fn country_is(country: &str) -> pb::Condition {
    predicate("geo.country", pb::Operator::Equals, vec![string(country)])
}

/// `tags CONTAINS tag`.
pub(crate) fn tagged(tag: &str) -> pb::Condition {
    predicate("tags", pb::Operator::Contains, vec![string(tag)])
}

pub(crate) fn all(conditions: Vec<pb::Condition>) -> pb::Condition {
    pb::Condition {
        kind: Some(pb::condition::Kind::All(pb::ConditionGroup { conditions })),
    }
}

pub(crate) fn not(condition: pb::Condition) -> pb::Condition {
    pb::Condition {
        kind: Some(pb::condition::Kind::Not(Box::new(pb::NotCondition {
            condition: Some(Box::new(condition)),
        }))),
    }
}

pub(crate) fn member_of(segment_id: &str) -> pb::Condition {
    pb::Condition {
        kind: Some(pb::condition::Kind::Segment(pb::SegmentReference {
            segment_id: segment_id.to_owned(),
        })),
    }
}

// ---------- statuses ----------

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

/// Polls a check until it holds or a timeout passes (the testkit's, for every test here).
pub(crate) use custops_testkit::eventually;
