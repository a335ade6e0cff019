//! Time comes from the service clock: the unmerge window is decided by it, every time stored
//! is its reading, and on the wall clock a time answered equals the time stored.

use chrono::{DateTime, Duration, TimeZone, Utc};
use custops_common::time::{from_timestamp, to_timestamp};
use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::profiles::v1 as pb;
use custops_profiles::domain::Clock;
use tonic::Code;

use crate::support::{
    TestApp, bad_fields, create, customer, expect_code, purchase, reason, spawn_app,
    spawn_app_on_the_wall_clock, unique_email,
};

/// The window the contract promises (`MergeRecord.unmerge_expire_time`, README: 30 days).
const UNMERGE_WINDOW: Duration = Duration::days(30);

/// A time the service stored, read back.
fn at(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(from_timestamp)
}

/// Merges a new customer into another new one; answers the merge record.
async fn merge_two(app: &TestApp, tag: &str) -> anyhow::Result<pb::MergeRecord> {
    let source = create(app, customer(&unique_email(&format!("{tag}-src")))).await?;
    let target = create(app, customer(&unique_email(&format!("{tag}-tgt")))).await?;
    let merged = app
        .client
        .clone()
        .merge_customers(pb::MergeCustomersRequest {
            source_customer_id: source.customer_id,
            target_customer_id: target.customer_id,
            ..Default::default()
        })
        .await?
        .into_inner();
    merged
        .merge_record
        .ok_or_else(|| anyhow::anyhow!("no merge record"))
}

fn unmerge(merge_id: &str) -> pb::UnmergeCustomerRequest {
    pb::UnmergeCustomerRequest {
        merge_id: merge_id.to_owned(),
        unmerge_reason: "wrong match".to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_unmerge_is_allowed_to_the_end_of_its_window_and_refused_after_it() -> anyhow::Result<()>
{
    // Arrange: two merges made at the same clock time.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let merged_at = app.clock.now();
    let inside = merge_two(&app, "inside").await?;
    let outside = merge_two(&app, "outside").await?;
    let expires = merged_at + UNMERGE_WINDOW;

    // Act: one undone at the last instant of the window, the other just after it.
    app.clock.set(expires);
    let undone = client.unmerge_customer(unmerge(&inside.merge_id)).await;
    app.clock.advance(Duration::microseconds(1));
    let late = client.unmerge_customer(unmerge(&outside.merge_id)).await;

    // Assert
    assert_eq!(at(inside.merge_time.as_ref()), Some(merged_at));
    assert_eq!(at(inside.unmerge_expire_time.as_ref()), Some(expires));
    let undone = undone?.into_inner().merge_record.unwrap_or_default();
    assert_eq!(undone.state, pb::MergeState::Unmerged as i32);
    assert_eq!(at(undone.unmerge_time.as_ref()), Some(expires));
    let status = expect_code(late, Code::FailedPrecondition)?;
    assert_eq!(reason(&status).as_deref(), Some("UNMERGE_WINDOW_EXPIRED"));
    // The refused merge still stands.
    let source = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: outside.source_customer_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(source.merged_from_customer_id, outside.source_customer_id);
    Ok(())
}

/// A clock time with microseconds, years away from the wall clock, so a time taken from the
/// wall clock (or from the database's `now()`) cannot pass for it.
fn far_from_the_wall_clock() -> anyhow::Result<DateTime<Utc>> {
    let t = Utc
        .with_ymd_and_hms(2021, 3, 4, 5, 6, 7)
        .single()
        .ok_or_else(|| anyhow::anyhow!("no such time"))?;
    Ok(t + Duration::microseconds(123_456))
}

#[tokio::test]
async fn every_time_stored_is_the_service_clocks() -> anyhow::Result<()> {
    // Arrange
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let t0 = far_from_the_wall_clock()?;
    app.clock.set(t0);
    let mut input = customer(&unique_email("clock"));
    input.consents = vec![pb::Consent {
        channel: common::ContactChannel::Email as i32,
        status: pb::ConsentStatus::Granted as i32,
        source: "signup".to_owned(),
        ..Default::default()
    }];

    // Act and assert: create.
    let created = create(&app, input).await?;
    assert_eq!(at(created.create_time.as_ref()), Some(t0));
    assert_eq!(at(created.update_time.as_ref()), Some(t0));
    let identity_times: Vec<_> = created
        .identities
        .iter()
        .map(|i| at(i.create_time.as_ref()))
        .collect();
    assert_eq!(identity_times, [Some(t0)]);
    let consent = created.consents.first().cloned().unwrap_or_default();
    assert_eq!(at(consent.change_time.as_ref()), Some(t0));
    assert_eq!(at(consent.record_time.as_ref()), Some(t0));

    // Update, activity, attribute: an hour later.
    let t1 = t0 + Duration::hours(1);
    app.clock.set(t1);
    let updated = client
        .update_customer(pb::UpdateCustomerRequest {
            customer: Some(pb::Customer {
                customer_id: created.customer_id.clone(),
                display_name: "Later".to_owned(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".to_owned()],
            }),
        })
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();
    assert_eq!(at(updated.create_time.as_ref()), Some(t0));
    assert_eq!(at(updated.update_time.as_ref()), Some(t1));
    let mut activity = purchase(&created.customer_id, "clock-1", 100);
    activity.occur_time = Some(to_timestamp(t0));
    let recorded = client
        .record_activity(pb::RecordActivityRequest {
            activity: Some(activity),
            customer_identity: None,
        })
        .await?
        .into_inner()
        .activity
        .unwrap_or_default();
    assert_eq!(at(recorded.record_time.as_ref()), Some(t1));
    let declared = client
        .create_attribute_definition(pb::CreateAttributeDefinitionRequest {
            attribute_definition: Some(pb::AttributeDefinition {
                attribute_name: "clock_attribute".to_owned(),
                value_type: pb::AttributeValueType::String as i32,
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .attribute_definition
        .unwrap_or_default();
    assert_eq!(at(declared.create_time.as_ref()), Some(t1));

    // Delete, erase and export: a day later.
    let t2 = t1 + Duration::days(1);
    app.clock.set(t2);
    let deleted = client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: created.customer_id.clone(),
            etag: String::new(),
        })
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();
    assert_eq!(at(deleted.delete_time.as_ref()), Some(t2));
    let erased = client
        .erase_customer(pb::EraseCustomerRequest {
            customer_id: created.customer_id.clone(),
            request_id: String::new(),
        })
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();
    assert_eq!(at(erased.erase_time.as_ref()), Some(t2));
    assert_eq!(at(erased.update_time.as_ref()), Some(t2));
    let exported = client
        .export_customer(pb::ExportCustomerRequest {
            customer_id: created.customer_id.clone(),
            section_timeout: None,
        })
        .await?
        .into_inner()
        .customer_export
        .unwrap_or_default();
    assert_eq!(at(exported.export_time.as_ref()), Some(t2));
    Ok(())
}

#[tokio::test]
async fn ages_and_future_birth_dates_are_judged_by_the_service_clock() -> anyhow::Result<()> {
    // Arrange: the clock in 2021; a customer born 2000-06-01 is 20 then (26 by the wall clock).
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    app.clock.set(far_from_the_wall_clock()?);
    let born = |year| {
        let mut c = customer(&unique_email("age"));
        c.demographics = Some(pb::Demographics {
            birth_date: Some(common::Date {
                year,
                month: 6,
                day: 1,
            }),
            ..Default::default()
        });
        c
    };
    let twenty = create(&app, born(2000)).await?;

    // Act
    let listed = client
        .list_customers(pb::ListCustomersRequest {
            filter: Some(pb::CustomerFilter {
                age_range: Some(pb::AgeRange {
                    min_age: 20,
                    max_age: 20,
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    // Born in 2022: in the wall clock's past, in the service clock's future.
    let unborn = client
        .create_customer(pb::CreateCustomerRequest {
            customer: Some(born(2022)),
            request_id: String::new(),
        })
        .await;

    // Assert
    let ids: Vec<_> = listed.customers.iter().map(|c| &c.customer_id).collect();
    assert_eq!(ids, [&twenty.customer_id]);
    let status = expect_code(unborn, Code::InvalidArgument)?;
    assert_eq!(bad_fields(&status), ["customer.demographics.birth_date"]);
    Ok(())
}

#[tokio::test]
async fn on_the_wall_clock_the_times_answered_are_the_times_stored() -> anyhow::Result<()> {
    // Arrange: the production clock, whose readings carry nanoseconds Postgres drops.
    let app = spawn_app_on_the_wall_clock().await?;
    let mut client = app.client.clone();

    // Act: writes that answer times, and the reads of what they stored.
    let created = create(&app, customer(&unique_email("wall"))).await?;
    let got = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: created.customer_id.clone(),
        })
        .await?
        .into_inner()
        .customer;
    let consented = client
        .update_consent(pb::UpdateConsentRequest {
            customer_id: created.customer_id.clone(),
            consents: vec![pb::Consent {
                channel: common::ContactChannel::Sms as i32,
                status: pb::ConsentStatus::Granted as i32,
                source: "signup".to_owned(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await?
        .into_inner();
    let audited = client
        .list_consent_changes(pb::ListConsentChangesRequest {
            customer_id: created.customer_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let declared = client
        .create_attribute_definition(pb::CreateAttributeDefinitionRequest {
            attribute_definition: Some(pb::AttributeDefinition {
                attribute_name: "wall_attribute".to_owned(),
                value_type: pb::AttributeValueType::Bool as i32,
                ..Default::default()
            }),
        })
        .await?
        .into_inner()
        .attribute_definition;
    let read_back = client
        .get_attribute_definition(pb::GetAttributeDefinitionRequest {
            attribute_name: "wall_attribute".to_owned(),
        })
        .await?
        .into_inner()
        .attribute_definition;
    let merged = merge_two(&app, "wall").await?;
    let listed = client
        .list_merges(pb::ListMergesRequest {
            customer_id: merged.source_customer_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();

    // Assert
    assert_eq!(got.as_ref(), Some(&created));
    assert_eq!(
        consented.consent_changes, audited.consent_changes,
        "UpdateConsent against ListConsentChanges"
    );
    assert_eq!(consented.consent_changes.len(), 1);
    assert_eq!(declared, read_back);
    assert_eq!(listed.merge_records, [merged]);
    Ok(())
}
