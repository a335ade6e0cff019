//! The suite's metrics, read from a real OTLP receiver: the four services run in this process
//! as `custops dev` runs them, exporting to a stand-in collector (`custops_testkit::otlp`)
//! every 300 ms; a customer journey and three provoked faults (Redis stopped, a pool run dry, a
//! call budget spent) make every metric of the catalogue (`custops_common::metrics`) record
//! something. The test then checks that the collector received exactly the catalogue — every
//! metric with its declared instrument, unit, attributes and buckets, none undeclared (the
//! dashboard and alert checks of `make k8s-check` trust it) — and that the values tell the
//! journey's story.
//!
//! One test per binary: telemetry is installed once per process.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use custops_common::metrics::{CATALOGUE, Instrument, Metric};
use custops_common::service::ServiceKind;
use custops_common::telemetry::{self, Exporters, LogFormat, OtlpSettings};
use custops_contracts::custops::feedback::v1 as feedback;
use custops_contracts::custops::loyalty::v1 as loyalty;
use custops_contracts::custops::segmentation::v1 as segmentation;
use custops_e2e::{PROPAGATION, TestSuite, eventually, rid};
use custops_testkit::otlp::{Collector, Kind, Point};
use custops_testkit::redis::TestRedis;
use sqlx::Connection;

/// Loyalty's pool in this test: small, so a handful of blocked calls empties it.
const LOYALTY_POOL: u32 = 4;
/// Loyalty's unary call budget in this test (half of it per caller).
const LOYALTY_CALL_BUDGET: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_catalogued_metric_reaches_the_collector_with_the_journeys_values()
-> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let _telemetry = telemetry::init_hosting(
        "custops",
        &ServiceKind::ALL,
        LogFormat::Text,
        Exporters::Otlp(OtlpSettings {
            endpoint: collector.endpoint().to_owned(),
            metric_interval: Duration::from_millis(300),
            instance_id: "metrics-test".to_owned(),
        }),
    )
    .context("telemetry was already installed in this process")?;
    let mut redis = TestRedis::start().await?;
    let redis_url = redis.url();
    let suite = TestSuite::start_adjusted(|settings| {
        settings.redis = Some(custops_common::cache::RedisSettings::new(&redis_url));
        if settings.service == ServiceKind::Loyalty {
            settings.database.max_connections = LOYALTY_POOL;
            settings.database.acquire_timeout = Duration::from_millis(200);
            settings.server.max_concurrent_calls = LOYALTY_CALL_BUDGET;
        }
    })
    .await?;
    let mut clients = suite.clients().await?;

    // The journey: a purchase, a membership and its earn, a rewarded survey answered, a ticket.
    let world = clients.world().await?;
    let customer_id = clients.create_customer("metrics@example.com").await?;
    let traces = clients.leave_traces(&world, &customer_id, "m1").await?;
    let reward = feedback::SurveyReward {
        points: 10,
        program_id: world.program_id.clone(),
    };
    let rewarded = clients.nps_survey("Rewarded", Some(reward)).await?;
    clients
        .answer_nps(&rewarded, &customer_id, "order-rewarded", 10)
        .await?;
    // A rule segment made after the purchase has reached segmentation (the customer is in
    // the world's Buyers segment, same rule, by the feed): the customer enters the new one by
    // a recompute, not by the purchase's event arriving late (which failed this once in CI on
    // a loaded machine: no recompute entered anyone).
    let lookups = clients.segmentation.clone();
    let becomes_member = |segment_id: String| {
        let segmentation = lookups.clone();
        let customer_id = customer_id.clone();
        eventually(PROPAGATION, move || {
            let mut segmentation = segmentation.clone();
            let request = segmentation::CheckMembershipRequest {
                segment_id: segment_id.clone(),
                customer_id: customer_id.clone(),
            };
            async move {
                Ok(segmentation
                    .check_membership(request)
                    .await?
                    .into_inner()
                    .member)
            }
        })
    };
    let buyer = becomes_member(world.buyers_segment_id.clone()).await;
    anyhow::ensure!(buyer, "the purchase never reached segmentation");
    let big_buyers = clients.buyers_segment("Big buyers").await?;
    clients
        .segmentation
        .recompute_segment(segmentation::RecomputeSegmentRequest {
            segment_id: big_buyers.clone(),
            request_id: rid(),
        })
        .await?;
    let member = becomes_member(big_buyers.clone()).await;
    anyhow::ensure!(member, "the buyer never entered the Big buyers segment");
    // The ticket is past its SLA: its due time moved back (the shortest SLA is a minute).
    let mut admin = sqlx::PgConnection::connect(suite.database.url()).await?;
    sqlx::query(
        "UPDATE feedback.tickets SET next_due_time = now() - interval '1 hour' \
         WHERE ticket_id = $1::uuid",
    )
    .bind(&traces.ticket_id)
    .execute(&mut admin)
    .await?;

    // Fault 1: Redis stops; a lookup of a customer not cached here falls back to Postgres.
    let uncached = clients.create_customer("uncached@example.com").await?;
    redis.stop().await?;
    clients
        .segmentation
        .check_membership(segmentation::CheckMembershipRequest {
            segment_id: world.buyers_segment_id.clone(),
            customer_id: uncached,
        })
        .await?;

    // Faults 2 and 3: the member's balance row is held, so earns wait on it holding loyalty's
    // connections; a burst of three times the caller's budget both spends that budget
    // (refusals) and outwaits the pool's acquire timeout (pool timeouts).
    let mut holder = sqlx::PgConnection::connect(suite.database.url()).await?;
    let mut held = holder.begin().await?;
    sqlx::query("SELECT 1 FROM loyalty.balances WHERE member_id = $1::uuid FOR UPDATE")
        .bind(&traces.member_id)
        .execute(&mut *held)
        .await?;
    let burst: Vec<_> = (0..LOYALTY_CALL_BUDGET * 3 / 2)
        .map(|_| {
            let mut loyalty = clients.loyalty.clone();
            let member_id = traces.member_id.clone();
            tokio::spawn(async move {
                loyalty
                    .earn_points(grant(&member_id))
                    .await
                    .map_err(|status| status.code())
            })
        })
        .collect();
    let mut codes = Vec::new();
    for call in burst {
        codes.push(call.await?.err());
    }
    held.rollback().await?;
    anyhow::ensure!(
        codes.contains(&Some(tonic::Code::ResourceExhausted))
            && codes.contains(&Some(tonic::Code::Unavailable)),
        "the burst should be refused in part and time out on the pool in part: {codes:?}"
    );

    // Everything recorded reaches the collector within a few exports.
    let complete = eventually(Duration::from_secs(30), || {
        let latest = collector.latest();
        async move { Ok(CATALOGUE.iter().all(|m| latest.contains_key(m.name))) }
    })
    .await;
    let latest = collector.latest();
    let received: BTreeSet<&str> = latest.keys().map(String::as_str).collect();
    let declared: BTreeSet<&str> = CATALOGUE.iter().map(|m| m.name).collect();
    assert!(
        complete && received == declared,
        "received and declared metrics differ:\n missing {:?}\n undeclared {:?}",
        declared.difference(&received).collect::<Vec<_>>(),
        received.difference(&declared).collect::<Vec<_>>()
    );
    for metric in CATALOGUE {
        check_shape(metric, &latest[metric.name]);
    }

    // The values tell the journey's story.
    let value = |metric: &Metric, attributes: &[(&str, &str)]| -> f64 {
        latest[metric.name]
            .iter()
            .filter(|p| {
                attributes
                    .iter()
                    .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|p| p.value)
            .sum()
    };
    use custops_common::metrics as m;
    let earn = [
        ("rpc.service", "custops.loyalty.v1.LoyaltyService"),
        ("rpc.method", "EarnPoints"),
    ];
    assert!(
        value(
            &m::RPC_SERVER_DURATION,
            &[earn[0], earn[1], ("rpc.grpc.status_code", "0")]
        ) >= 2.0
    );
    assert!(
        value(
            &m::RPC_SERVER_REFUSED,
            &[earn[1], ("budget", "concurrent unary calls")]
        ) >= 1.0
    );
    // The survey reward: feedback calling loyalty.
    assert!(
        value(
            &m::RPC_CLIENT_DURATION,
            &[
                (m::SERVICE, "feedback"),
                earn[1],
                ("rpc.grpc.status_code", "0")
            ]
        ) >= 1.0
    );
    assert!(value(&m::CACHE_LOOKUPS, &[("cache.result", "miss")]) >= 1.0);
    assert!(value(&m::CACHE_LOOKUPS, &[("cache.result", "local_hit")]) >= 1.0);
    assert!(value(&m::CACHE_REDIS_ERRORS, &[("cache.operation", "get")]) >= 1.0);
    assert!(value(&m::CACHE_FALLBACKS, &[]) >= 1.0);
    let loyalty_pool = [("db.client.connection.pool.name", "loyalty")];
    assert_eq!(
        value(&m::DB_CONNECTION_MAX, &loyalty_pool),
        f64::from(LOYALTY_POOL)
    );
    assert_eq!(
        value(
            &m::DB_CONNECTION_MAX,
            &[("db.client.connection.pool.name", "profiles")]
        ),
        10.0
    );
    assert!(value(&m::DB_CONNECTION_COUNT, &loyalty_pool) >= 1.0);
    assert!(value(&m::DB_CONNECTION_TIMEOUTS, &loyalty_pool) >= 1.0);
    for service in ServiceKind::ALL {
        let pool = [("db.client.connection.pool.name", service.schema())];
        assert!(
            value(&m::DB_CONNECTION_WAIT_TIME, &pool) >= 1.0,
            "{service}"
        );
        let sampled = |metric: &Metric| {
            latest[metric.name]
                .iter()
                .filter(|p| {
                    p.attributes.get(m::SERVICE).map(String::as_str) == Some(service.schema())
                })
                .count()
        };
        assert_eq!(sampled(&m::OUTBOX_UNSEQUENCED), 1, "{service}");
        assert_eq!(sampled(&m::OUTBOX_OLDEST_UNSEQUENCED_AGE), 1, "{service}");
    }
    let segmentation_on_profiles = [(m::FEED, "profiles"), (m::CONSUMER_GROUP, "segmentation")];
    assert!(value(&m::FEED_CONSUMER_POSITION, &segmentation_on_profiles) >= 3.0);
    assert!(
        value(&m::FEED_CONSUMER_LAG, &segmentation_on_profiles)
            <= value(&m::FEED_CONSUMER_POSITION, &segmentation_on_profiles)
    );
    // Registered with profiles, it is measured there: caught up or minutes behind at most.
    assert!(value(&m::FEED_CONSUMER_LAG_SECONDS, &segmentation_on_profiles) < 600.0);
    assert_eq!(
        value(&m::FEED_CONSUMER_RESYNCS, &segmentation_on_profiles),
        0.0
    );
    assert!(
        value(
            &m::SEGMENT_RECOMPUTE_DURATION,
            &[
                ("custops.recompute.kind", "segment"),
                ("custops.recompute.outcome", "succeeded")
            ]
        ) >= 1.0
    );
    assert!(
        value(
            &m::SEGMENT_RECOMPUTE_CHANGES,
            &[
                ("custops.recompute.kind", "segment"),
                ("custops.membership.change", "entered")
            ]
        ) >= 1.0
    );
    // The purchase's earn and the survey reward, at least.
    assert!(value(&m::LEDGER_OPERATIONS, &[("custops.ledger.kind", "EARN")]) >= 2.0);
    assert!(
        value(
            &m::SURVEY_REWARDS_SETTLED,
            &[("custops.reward.outcome", "delivered")]
        ) >= 1.0
    );
    assert!(
        value(
            &m::TICKETS_SLA_BREACHED,
            &[("custops.ticket.severity", "medium")]
        ) >= 1.0
    );
    assert_eq!(
        value(
            &m::TICKETS_SLA_BREACHED,
            &[("custops.ticket.severity", "critical")]
        ),
        0.0
    );
    suite.stop().await
}

/// Every received point of `metric` has its declared instrument, unit, attribute names and
/// (a histogram) buckets.
fn check_shape(metric: &Metric, points: &[Point]) {
    let kind = match metric.instrument {
        Instrument::Counter => Kind::Counter,
        Instrument::Histogram => Kind::Histogram,
        Instrument::Gauge => Kind::Gauge,
    };
    let declared: BTreeSet<&str> = metric.attributes.iter().copied().collect();
    for point in points {
        assert_eq!(point.kind, kind, "{}", metric.name);
        assert_eq!(point.unit, metric.unit, "{}", metric.name);
        let names: BTreeSet<&str> = point.attributes.keys().map(String::as_str).collect();
        assert_eq!(names, declared, "{}: {:?}", metric.name, point.attributes);
        if kind == Kind::Histogram {
            assert_eq!(point.bounds, metric.buckets, "{}", metric.name);
        }
    }
}

/// An earn of one point for `member_id`, with a request id of its own.
fn grant(member_id: &str) -> loyalty::EarnPointsRequest {
    loyalty::EarnPointsRequest {
        request_id: rid(),
        member: Some(loyalty::MemberRef {
            key: Some(loyalty::member_ref::Key::MemberId(member_id.to_owned())),
        }),
        source: Some(loyalty::earn_points_request::Source::Grant(
            loyalty::PointsGrant {
                points: 1,
                qualifying: false,
                expire_time: None,
            },
        )),
        reason: "burst".to_owned(),
        reason_code: "metrics_test".to_owned(),
        operator_id: String::new(),
    }
}
