//! Computed traits across the suite: a custom event type defined in profiles, events recorded
//! there, a trait defined in segmentation over them, and the value — computed by hand — shown
//! by segmentation and by profiles' Customer 360.

use anyhow::Context;
use custops_contracts::custops::profiles::v1 as profiles;
use custops_contracts::custops::segmentation::v1 as segmentation;
use custops_e2e::{PROPAGATION, TestSuite, eventually, hours_ago};
use segmentation::computed_trait_value::Value as T;

/// `app_crash` with a string `screen`, as a platform team would define it.
fn crash_type() -> profiles::EventType {
    profiles::EventType {
        event_type_name: "app_crash".to_owned(),
        description: "The app crashed".to_owned(),
        properties: vec![profiles::EventPropertyDefinition {
            property_name: "screen".to_owned(),
            property_type: profiles::EventPropertyType::String as i32,
            description: "Where it crashed".to_owned(),
            contains_pii: false,
            required: true,
        }],
        ..Default::default()
    }
}

fn crash(customer_id: &str, event_id: &str, screen: &str, hours: u64) -> profiles::Activity {
    profiles::Activity {
        customer_id: customer_id.to_owned(),
        source: "mobile".to_owned(),
        event_id: event_id.to_owned(),
        occur_time: Some(hours_ago(hours)),
        channel: "app".to_owned(),
        details: Some(profiles::activity::Details::CustomEvent(
            profiles::CustomEvent {
                event_type: "app_crash".to_owned(),
                properties: [(
                    "screen".to_owned(),
                    profiles::EventPropertyValue {
                        value: Some(profiles::event_property_value::Value::StringValue(
                            screen.to_owned(),
                        )),
                    },
                )]
                .into_iter()
                .collect(),
            },
        )),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_computed_trait_reaches_customer_360_with_its_hand_computed_value() -> anyhow::Result<()>
{
    // Arrange: three crashes, two on the cart screen, and a trait "crashiest_screen".
    let suite = TestSuite::start().await?;
    let mut clients = suite.clients().await?;
    clients
        .profiles
        .create_event_type(profiles::CreateEventTypeRequest {
            event_type: Some(crash_type()),
        })
        .await?;
    let id = clients.create_customer("crashes@example.com").await?;
    for (event_id, screen, hours) in [
        ("x-1", "cart", 30),
        ("x-2", "home", 20),
        ("x-3", "cart", 10),
    ] {
        clients
            .profiles
            .record_activity(profiles::RecordActivityRequest {
                activity: Some(crash(&id, event_id, screen, hours)),
                customer_identity: None,
            })
            .await?;
    }
    let learnt = eventually(PROPAGATION, || {
        let mut clients = clients.clone();
        async move {
            let created = clients
                .segmentation
                .create_computed_trait(segmentation::CreateComputedTraitRequest {
                    computed_trait: Some(segmentation::ComputedTrait {
                        name: "crashiest_screen".to_owned(),
                        event_type: "app_crash".to_owned(),
                        aggregate: segmentation::EventAggregate::MostFrequent.into(),
                        property: "screen".to_owned(),
                        ..Default::default()
                    }),
                    request_id: "define-crashiest-screen".to_owned(),
                })
                .await;
            // Refused until segmentation has learnt the event type from profiles' feed.
            Ok(created.is_ok())
        }
    })
    .await;
    assert!(learnt, "segmentation never learnt app_crash");

    // Act: wait for the three crashes to be counted, then read Customer 360.
    let counted = eventually(PROPAGATION, || {
        let mut clients = clients.clone();
        let id = id.clone();
        async move {
            let values = clients
                .segmentation
                .get_customer_computed_traits(segmentation::GetCustomerComputedTraitsRequest {
                    customer_id: id,
                })
                .await?
                .into_inner()
                .computed_traits;
            Ok(values.first().and_then(|v| v.value.clone())
                == Some(T::StringValue("cart".to_owned())))
        }
    })
    .await;
    assert!(counted, "the trait never reached \"cart\"");
    let view = clients
        .profiles
        .get_customer360(profiles::GetCustomer360Request {
            customer_id: id.clone(),
            sections: vec![profiles::Customer360Section::Segments as i32],
            section_timeout: Some(prost_types::Duration {
                seconds: 5,
                nanos: 0,
            }),
        })
        .await?
        .into_inner();

    // Assert: "cart" (2 of 3 crashes), version 1, in the segmentation section.
    let shown = view
        .segments
        .context("Customer 360 has no segmentation section")?
        .computed_traits;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0].name, "crashiest_screen");
    assert_eq!(shown[0].version, 1);
    assert_eq!(shown[0].value, Some(T::StringValue("cart".to_owned())));
    assert!(shown[0].compute_time.is_some());
    Ok(())
}
