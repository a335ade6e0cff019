//! Every feed consumer of the suite registers with its producer, so the producer's retention
//! keeps what it has not applied, and reads its lag there over gRPC.

use custops_common::service::ServiceKind;
use custops_contracts::custops::common::v1::event_feed_service_client::EventFeedServiceClient;
use custops_contracts::custops::common::v1::{GetFeedPositionRequest, ListFeedConsumersRequest};
use custops_e2e::{PROPAGATION, TestSuite, eventually};

#[tokio::test]
async fn every_consumer_of_the_suite_registers_with_its_producer_and_acknowledges()
-> anyhow::Result<()> {
    // Arrange: the suite, and an event on the profiles feed, which three services follow.
    let suite = TestSuite::start().await?;
    let mut clients = suite.clients().await?;
    clients.create_customer("feeds@example.com").await?;
    let profiles = EventFeedServiceClient::new(suite.channel(ServiceKind::Profiles).await?);
    let sequenced = eventually(PROPAGATION, || {
        let mut profiles = profiles.clone();
        async move {
            let position = profiles
                .get_feed_position(GetFeedPositionRequest {})
                .await?;
            Ok(position.into_inner().latest_sequence >= 1)
        }
    })
    .await;
    assert!(sequenced, "the customer's event never got a feed position");

    // Act / Assert: each producer lists its consumers by name, and they catch up to its newest
    // event, the customer's on profiles (they acknowledge within seconds of applying it).
    let expected: [(ServiceKind, &[&str]); 3] = [
        (
            ServiceKind::Profiles,
            &["feedback", "loyalty", "segmentation"],
        ),
        (ServiceKind::Loyalty, &["segmentation"]),
        (ServiceKind::Feedback, &["segmentation"]),
    ];
    for (producer, consumers) in expected {
        let feed = EventFeedServiceClient::new(suite.channel(producer).await?);
        let caught_up = eventually(PROPAGATION, || {
            let mut feed = feed.clone();
            async move {
                let listed = feed
                    .list_feed_consumers(ListFeedConsumersRequest::default())
                    .await?
                    .into_inner();
                let names: Vec<&str> = listed
                    .consumers
                    .iter()
                    .map(|c| c.consumer.as_str())
                    .collect();
                Ok(names == consumers
                    && (producer != ServiceKind::Profiles || listed.latest_sequence >= 1)
                    && listed.consumers.iter().all(|c| {
                        c.acked_sequence == listed.latest_sequence
                            && c.events_behind == 0
                            && c.seconds_behind == 0.0
                    }))
            }
        })
        .await;
        assert!(
            caught_up,
            "{producer}'s feed should list {consumers:?}, caught up"
        );
    }
    suite.stop().await
}
