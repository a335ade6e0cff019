//! End to end with the real profiles service in-process over the same test database (its own
//! schema): a purchase recorded in profiles moves the customer into a matching segment, and
//! a lookup shows it; an erasure removes them from every segment, static ones included. How
//! soon a lookup shows a change is measured by the bench (`segmentation.freshness`), not here.

use std::time::Duration;

use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::profiles::v1 as profiles;
use custops_contracts::custops::segmentation::v1 as pb;
use custops_testkit::redis::TestRedis;

use crate::helpers::{eventually, spawn_with_profiles};

/// How long a change may take to travel profiles → feed → segmentation → lookup on a loaded
/// test machine: a bound on waiting, not a claim about speed.
const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_purchase_in_profiles_enters_a_segment_and_erasure_leaves_all() -> anyhow::Result<()> {
    let redis = TestRedis::start().await?;
    // Segmentation's clock at the wall clock's now: the purchase below happened a minute ago.
    let (app, mut profiles, _stop_profiles) = spawn_with_profiles(Some(redis.url())).await?;
    let mut segmentation = app.client.clone();

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
    let known = eventually(PATIENCE, || {
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
    assert!(known, "the customer never reached segmentation");
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

    // A purchase in profiles: the lookup shows the rule membership.
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
    let moved = eventually(PATIENCE, || {
        let both = both.clone();
        let lookup = segments_of(id.clone());
        async move { lookup.await == both }
    })
    .await;
    assert!(moved, "the purchase never moved the customer");

    // Erasure in profiles: the customer leaves every segment, the static one included.
    profiles
        .erase_customer(profiles::EraseCustomerRequest {
            customer_id: id.clone(),
            request_id: "erase-1".to_owned(),
        })
        .await?;
    let gone = eventually(PATIENCE, || {
        let lookup = segments_of(id.clone());
        async move { lookup.await.is_empty() }
    })
    .await;
    assert!(gone, "the erased customer kept memberships");
    for segment in [&buyers, &list] {
        let emptied = eventually(PATIENCE, || {
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
        assert!(emptied, "segment size stayed above 0");
    }
    Ok(())
}
