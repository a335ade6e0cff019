//! Activities: single recording, idempotency, validation, the timeline and bulk import.

use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::profiles::v1 as pb;
use tonic::Code;

use crate::support::{
    bad_fields, create, customer, expect_code, identity, outbox_types, purchase, reason, spawn_app,
    time, unique_email,
};

#[tokio::test]
async fn an_activity_is_recorded_once_whatever_the_replays() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let c = create(&app, customer(&unique_email("act"))).await?;
    let activity = purchase(&c.customer_id, "evt-1", 1999);

    let first = client
        .record_activity(pb::RecordActivityRequest {
            activity: Some(activity.clone()),
            customer_identity: None,
        })
        .await?
        .into_inner();
    let replay = client
        .record_activity(pb::RecordActivityRequest {
            activity: Some(activity.clone()),
            customer_identity: None,
        })
        .await?
        .into_inner();
    let changed = purchase(&c.customer_id, "evt-1", 2999);
    let reused = client
        .record_activity(pb::RecordActivityRequest {
            activity: Some(changed),
            customer_identity: None,
        })
        .await;

    assert!(!first.duplicate);
    assert!(replay.duplicate);
    assert_eq!(first.activity, replay.activity);
    let status = expect_code(reused, Code::AlreadyExists)?;
    assert_eq!(reason(&status).as_deref(), Some("EVENT_ID_REUSED"));
    let events = outbox_types(&app, &c.customer_id).await?;
    assert_eq!(
        events
            .iter()
            .filter(|t| t.ends_with("ActivityRecorded"))
            .count(),
        1
    );
    Ok(())
}

#[tokio::test]
async fn an_activity_can_name_its_customer_by_identity() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let email = unique_email("byid");
    let c = create(&app, customer(&email)).await?;
    let mut activity = purchase("", "evt-id", 100);
    activity.customer_id.clear();

    let recorded = client
        .record_activity(pb::RecordActivityRequest {
            activity: Some(activity.clone()),
            customer_identity: Some(identity(pb::IdentityType::Email, &email.to_uppercase())),
        })
        .await?
        .into_inner();

    assert_eq!(
        recorded.activity.map(|a| a.customer_id),
        Some(c.customer_id)
    );
    let unknown = client
        .record_activity(pb::RecordActivityRequest {
            activity: Some(purchase("", "evt-2", 1)),
            customer_identity: Some(identity(pb::IdentityType::Email, &unique_email("nobody"))),
        })
        .await;
    expect_code(unknown, Code::NotFound)?;
    Ok(())
}

#[tokio::test]
async fn bad_activities_name_the_field() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let c = create(&app, customer(&unique_email("bad"))).await?;
    let mut activity = purchase(&c.customer_id, "evt-bad", -5);
    if let Some(pb::activity::Details::Purchase(p)) = activity.details.as_mut() {
        p.amount = Some(common::Money {
            amount_minor: -5,
            currency: "XYZ".to_owned(),
        });
    }
    activity.occur_time = Some(time(3600));
    activity.source = "Order Service".to_owned();

    let status = expect_code(
        client
            .record_activity(pb::RecordActivityRequest {
                activity: Some(activity),
                customer_identity: None,
            })
            .await,
        Code::InvalidArgument,
    )?;

    assert_eq!(
        bad_fields(&status),
        [
            "activity.source",
            "activity.occur_time",
            "activity.purchase.amount.amount_minor",
            "activity.purchase.amount.currency"
        ]
    );
    let neither = pb::Activity {
        customer_id: String::new(),
        ..purchase("", "e", 1)
    };
    let status = expect_code(
        client
            .record_activity(pb::RecordActivityRequest {
                activity: Some(neither),
                customer_identity: None,
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(bad_fields(&status), ["activity.customer_id"]);
    let no_details = pb::Activity {
        details: None,
        ..purchase(&c.customer_id, "e", 1)
    };
    let status = expect_code(
        client
            .record_activity(pb::RecordActivityRequest {
                activity: Some(no_details),
                customer_identity: None,
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(bad_fields(&status), ["activity.details"]);
    Ok(())
}

#[tokio::test]
async fn the_timeline_is_newest_first_and_paged() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let c = create(&app, customer(&unique_email("timeline"))).await?;
    for i in 0..5_i64 {
        let mut a = purchase(&c.customer_id, &format!("t-{i}"), 100 * i);
        a.occur_time = Some(time(-10_000 + i * 100));
        client
            .record_activity(pb::RecordActivityRequest {
                activity: Some(a),
                customer_identity: None,
            })
            .await?;
    }
    let visit = pb::Activity {
        details: Some(pb::activity::Details::Interaction(pb::Interaction {
            interaction_kind: pb::InteractionKind::Visit as i32,
            ..Default::default()
        })),
        ..purchase(&c.customer_id, "visit-1", 0)
    };
    client
        .record_activity(pb::RecordActivityRequest {
            activity: Some(visit),
            customer_identity: None,
        })
        .await?;
    let purchases = Some(pb::ActivityFilter {
        activity_kinds: vec![pb::ActivityKind::Purchase as i32],
        ..Default::default()
    });

    let first = client
        .list_activities(pb::ListActivitiesRequest {
            customer_id: c.customer_id.clone(),
            filter: purchases.clone(),
            page_size: 3,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    let second = client
        .list_activities(pb::ListActivitiesRequest {
            customer_id: c.customer_id.clone(),
            filter: purchases.clone(),
            page_size: 3,
            page_token: first.next_page_token.clone(),
        })
        .await?
        .into_inner();

    let events: Vec<String> = first
        .activities
        .iter()
        .chain(&second.activities)
        .map(|a| a.event_id.clone())
        .collect();
    assert_eq!(events, ["t-4", "t-3", "t-2", "t-1", "t-0"]);
    assert!(second.next_page_token.is_empty());
    let status = expect_code(
        client
            .list_activities(pb::ListActivitiesRequest {
                customer_id: c.customer_id.clone(),
                filter: None,
                page_size: 3,
                page_token: first.next_page_token,
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(bad_fields(&status), ["page_token"]);
    expect_code(
        client
            .list_activities(pb::ListActivitiesRequest {
                customer_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    )?;
    Ok(())
}

fn stream(
    items: Vec<pb::ImportActivitiesRequest>,
) -> impl tokio_stream::Stream<Item = pb::ImportActivitiesRequest> {
    tokio_stream::iter(items)
}

#[tokio::test]
async fn a_bulk_stream_with_replays_stores_each_event_once() -> anyhow::Result<()> {
    // Arrange: 10,000 items over 20 customers; every tenth repeats an earlier event.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let mut customers = Vec::new();
    for _ in 0..20 {
        customers.push(
            create(&app, customer(&unique_email("bulk")))
                .await?
                .customer_id,
        );
    }
    let items: Vec<pb::ImportActivitiesRequest> = (0..10_000)
        .map(|i| {
            let event = if i % 10 == 9 { i - 5 } else { i };
            let customer_id = &customers[event % customers.len()];
            let event_number = i64::try_from(event).unwrap_or_default();
            pb::ImportActivitiesRequest {
                activity: Some(purchase(
                    customer_id,
                    &format!("bulk-{event}"),
                    event_number,
                )),
                customer_identity: None,
            }
        })
        .collect();

    // Act
    let first = client
        .import_activities(stream(items.clone()))
        .await?
        .into_inner();
    let resent = client.import_activities(stream(items)).await?.into_inner();

    // Assert
    assert_eq!(
        (
            first.accepted_count,
            first.duplicate_count,
            first.rejected_count
        ),
        (9_000, 1_000, 0)
    );
    assert_eq!(
        (
            resent.accepted_count,
            resent.duplicate_count,
            resent.rejected_count
        ),
        (0, 10_000, 0)
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM activities")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(stored, 9_000);
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE type = 'custops.profiles.v1.ActivityRecorded'",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(events, 9_000);
    Ok(())
}

#[tokio::test]
async fn bad_import_items_are_reported_and_the_others_stored() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let c = create(&app, customer(&unique_email("imp"))).await?;
    let mut bad_currency = purchase(&c.customer_id, "i-1", 10);
    if let Some(pb::activity::Details::Purchase(p)) = bad_currency.details.as_mut() {
        p.amount = Some(common::Money {
            amount_minor: 10,
            currency: "cny".to_owned(),
        });
    }
    let items = vec![
        purchase(&c.customer_id, "i-0", 10),
        bad_currency,
        purchase(&uuid::Uuid::now_v7().to_string(), "i-2", 10),
        purchase(&c.customer_id, "i-0", 11),
        purchase(&c.customer_id, "i-4", 10),
    ]
    .into_iter()
    .map(|a| pb::ImportActivitiesRequest {
        activity: Some(a),
        customer_identity: None,
    })
    .collect();

    let response = client.import_activities(stream(items)).await?.into_inner();

    assert_eq!(
        (
            response.accepted_count,
            response.duplicate_count,
            response.rejected_count
        ),
        (2, 0, 3)
    );
    let errors: Vec<(i64, i32)> = response
        .errors
        .iter()
        .map(|e| (e.index, e.reason))
        .collect();
    assert_eq!(
        errors,
        [
            (1, pb::ActivityRejectReason::InvalidArgument as i32),
            (2, pb::ActivityRejectReason::CustomerNotFound as i32),
            (3, pb::ActivityRejectReason::EventIdReused as i32),
        ]
    );
    assert_eq!(
        response.errors[0]
            .field_violations
            .first()
            .map(|v| v.field.as_str()),
        Some("activity.purchase.amount.currency")
    );
    Ok(())
}

#[tokio::test]
async fn a_deleted_customer_takes_no_activities() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let c = create(&app, customer(&unique_email("gone"))).await?;
    client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: c.customer_id.clone(),
            etag: String::new(),
        })
        .await?;

    let result = client
        .record_activity(pb::RecordActivityRequest {
            activity: Some(purchase(&c.customer_id, "late", 1)),
            customer_identity: None,
        })
        .await;

    let status = expect_code(result, Code::FailedPrecondition)?;
    assert_eq!(reason(&status).as_deref(), Some("CUSTOMER_DELETED"));
    Ok(())
}
