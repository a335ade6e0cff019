//! End to end with the real profiles service in-process over the same test database (its own
//! schema): a purchase recorded in profiles moves the customer into a matching segment and a
//! lookup shows it within a second; an erasure removes them from every segment, static ones
//! included.

use std::sync::Arc;
use std::time::{Duration, Instant};

use custops_common::cache::RedisSettings;
use custops_common::clock::ManualClock;
use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::profiles::v1 as profiles;
use custops_contracts::custops::profiles::v1::profiles_service_client::ProfilesServiceClient;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_contracts::custops::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use custops_segmentation::jobs::WorkerOptions;
use custops_testkit::TestDatabase;
use custops_testkit::redis::TestRedis;
use tokio_util::sync::CancellationToken;

/// Polls `check` every 10 ms for up to `timeout`; how long it took, or `None`.
async fn within<F, Fut>(timeout: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
async fn a_purchase_in_profiles_enters_a_segment_within_a_second_and_erasure_leaves_all()
-> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let redis = TestRedis::start().await?;
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();

    let profiles_app =
        custops_profiles::build(ServiceSettings::for_local(ServiceKind::Profiles, db.url()))
            .await?;
    let profiles_port = profiles_app.port();
    tokio::spawn({
        let stop = stop.clone();
        async move { profiles_app.run_until_stopped(stop.cancelled_owned()).await }
    });
    let mut settings = ServiceSettings::for_local(ServiceKind::Segmentation, db.url());
    settings.clients.peers.insert(
        ServiceKind::Profiles,
        format!("http://127.0.0.1:{profiles_port}"),
    );
    settings.redis = Some(RedisSettings::new(&redis.url()));
    let overrides = custops_segmentation::Overrides {
        clock: Arc::new(ManualClock::new(chrono::Utc::now())),
    };
    let workers = WorkerOptions {
        poll: Duration::from_millis(50),
        ..WorkerOptions::default()
    };
    let segmentation_app =
        custops_segmentation::build_with_workers(settings, overrides, workers).await?;
    let segmentation_port = segmentation_app.port();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            segmentation_app
                .run_until_stopped(stop.cancelled_owned())
                .await
        }
    });
    let mut profiles =
        ProfilesServiceClient::connect(format!("http://127.0.0.1:{profiles_port}")).await?;
    let mut segmentation =
        SegmentationServiceClient::connect(format!("http://127.0.0.1:{segmentation_port}")).await?;

    // A rule segment of buyers and a static list.
    let buyers = segmentation
        .create_segment(pb::CreateSegmentRequest {
            segment: Some(pb::Segment {
                display_name: "Buyers".to_owned(),
                kind: pb::SegmentKind::Rule.into(),
                rule: Some(pb::Condition {
                    kind: Some(pb::condition::Kind::Predicate(pb::Predicate {
                        field: "purchase.count".to_owned(),
                        operator: pb::Operator::GreaterOrEqual.into(),
                        values: vec![pb::Value {
                            kind: Some(pb::value::Kind::IntegerValue(1)),
                        }],
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .segment
        .unwrap_or_default();
    let list = segmentation
        .create_segment(pb::CreateSegmentRequest {
            segment: Some(pb::Segment {
                display_name: "Newsletter list".to_owned(),
                kind: pb::SegmentKind::Static.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .segment
        .unwrap_or_default();

    let customer = profiles
        .create_customer(profiles::CreateCustomerRequest {
            customer: Some(profiles::Customer {
                given_name: "Wei".to_owned(),
                identities: vec![profiles::Identity {
                    identity_type: profiles::IdentityType::Email.into(),
                    value: "wei.e2e@example.com".to_owned(),
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
    let id = customer.customer_id.clone();
    let lookups = segmentation.clone();
    let segments_of = |id: String| {
        let mut client = lookups.clone();
        async move {
            client
                .list_customer_segments(pb::ListCustomerSegmentsRequest {
                    customer_id: id,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().segment_ids)
                .unwrap_or_default()
        }
    };
    // Segmentation learns the customer from the feed; the static list can then take them.
    let known = within(Duration::from_secs(10), || {
        let mut client = segmentation.clone();
        let id = id.clone();
        async move {
            client
                .get_customer_facts(pb::GetCustomerFactsRequest { customer_id: id })
                .await
                .is_ok()
        }
    })
    .await;
    assert!(known.is_some(), "the customer never reached segmentation");
    let uploaded = segmentation
        .upload_static_members(tokio_stream::iter(vec![pb::UploadStaticMembersRequest {
            segment_id: list.segment_id.clone(),
            mode: pb::StaticUploadMode::Add.into(),
            request_id: String::new(),
            customer_ids: vec![id.clone()],
        }]))
        .await?
        .into_inner();
    assert_eq!(uploaded.added_count, 1);
    assert_eq!(segments_of(id.clone()).await, vec![list.segment_id.clone()]);

    // A purchase in profiles: the lookup shows the rule membership within a second.
    profiles
        .record_activity(profiles::RecordActivityRequest {
            activity: Some(profiles::Activity {
                customer_id: id.clone(),
                source: "order_service".to_owned(),
                event_id: "order-1".to_owned(),
                occur_time: Some(prost_types::Timestamp {
                    seconds: chrono::Utc::now().timestamp() - 60,
                    nanos: 0,
                }),
                channel: "web".to_owned(),
                details: Some(profiles::activity::Details::Purchase(profiles::Purchase {
                    order_id: "order-1".to_owned(),
                    amount: Some(common::Money {
                        amount_minor: 1999,
                        currency: "CNY".to_owned(),
                    }),
                    categories: vec!["shoes".to_owned()],
                    item_count: 1,
                })),
                ..Default::default()
            }),
            customer_identity: None,
        })
        .await?;
    let mut both = vec![buyers.segment_id.clone(), list.segment_id.clone()];
    both.sort();
    let latency = within(Duration::from_secs(5), || {
        let both = both.clone();
        let lookup = segments_of(id.clone());
        async move { lookup.await == both }
    })
    .await;
    let latency =
        latency.ok_or_else(|| anyhow::anyhow!("the purchase never moved the customer"))?;
    assert!(latency < Duration::from_secs(1), "took {latency:?}");

    // Erasure in profiles: the customer leaves every segment, the static one included.
    profiles
        .erase_customer(profiles::EraseCustomerRequest {
            customer_id: id.clone(),
            request_id: "erase-1".to_owned(),
        })
        .await?;
    let gone = within(Duration::from_secs(5), || {
        let lookup = segments_of(id.clone());
        async move { lookup.await.is_empty() }
    })
    .await;
    assert!(gone.is_some(), "the erased customer kept memberships");
    for segment in [&buyers, &list] {
        let emptied = within(Duration::from_secs(2), || {
            let mut client = segmentation.clone();
            let segment_id = segment.segment_id.clone();
            async move {
                client
                    .get_segment_size(pb::GetSegmentSizeRequest { segment_id })
                    .await
                    .map(|r| r.into_inner().member_count)
                    .ok()
                    == Some(0)
            }
        })
        .await;
        assert!(emptied.is_some(), "segment size stayed above 0");
    }
    Ok(())
}
