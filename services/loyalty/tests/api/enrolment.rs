//! EnrolMember against the real profiles service started in-process: a customer profiles
//! never had is refused (NOT_FOUND, CUSTOMER_NOT_FOUND naming `customer_id`), a merged-away id
//! enrols its survivor, deleted and erased customers are refused, and an unreachable profiles
//! is UNAVAILABLE, while a replay still answers what the first call did.

use std::sync::Arc;

use custops_common::config::ServiceSettings;
use custops_common::service::ServiceKind;
use custops_contracts::custops::loyalty::v1 as pb;
use custops_contracts::custops::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use custops_contracts::custops::profiles::v1 as profiles;
use custops_contracts::custops::profiles::v1::profiles_service_client::ProfilesServiceClient;
use custops_loyalty::domain::ManualClock;
use custops_testkit::TestDatabase;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::helpers::{error_info, program, rid, start};

/// Creates a customer in profiles and returns its id.
async fn create_customer(
    profiles: &mut ProfilesServiceClient<Channel>,
    email: &str,
) -> anyhow::Result<String> {
    Ok(profiles
        .create_customer(profiles::CreateCustomerRequest {
            customer: Some(profiles::Customer {
                given_name: "Mei".to_owned(),
                identities: vec![profiles::Identity {
                    identity_type: profiles::IdentityType::Email.into(),
                    value: email.to_owned(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            request_id: rid(),
        })
        .await?
        .into_inner()
        .customer
        .unwrap_or_default()
        .customer_id)
}

fn enrol(program_id: &str, customer_id: &str) -> pb::EnrolMemberRequest {
    pb::EnrolMemberRequest {
        request_id: rid(),
        program_id: program_id.to_owned(),
        customer_id: customer_id.to_owned(),
        enrol_channel: "app".to_owned(),
    }
}

#[tokio::test]
async fn enrolment_is_checked_against_profiles() -> anyhow::Result<()> {
    let db = TestDatabase::create().await?;
    let stop_profiles = CancellationToken::new();
    let _stop_on_exit = stop_profiles.clone().drop_guard();
    let profiles_app =
        custops_profiles::build(ServiceSettings::for_local(ServiceKind::Profiles, db.url()))
            .await?;
    let profiles_url = format!("http://127.0.0.1:{}", profiles_app.port());
    let profiles_task = tokio::spawn({
        let stop = stop_profiles.clone();
        async move { profiles_app.run_until_stopped(stop.cancelled_owned()).await }
    });
    let mut settings = ServiceSettings::for_local(ServiceKind::Loyalty, db.url());
    settings
        .clients
        .peers
        .insert(ServiceKind::Profiles, profiles_url.clone());
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let (mut loyalty, _stop_loyalty) = start(settings, clock, None).await?;
    let mut profiles = ProfilesServiceClient::connect(profiles_url).await?;
    let program_id = loyalty
        .create_program(pb::CreateProgramRequest {
            request_id: rid(),
            program: Some(program(pb::ClawbackPolicy::WithinBalance, 0)),
        })
        .await?
        .into_inner()
        .program
        .unwrap_or_default()
        .program_id;

    // A customer of profiles, created a moment ago, enrols.
    let live = create_customer(&mut profiles, "live@example.com").await?;
    let first = enrol(&program_id, &live);
    let enrolled = loyalty
        .enrol_member(first.clone())
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    assert_eq!(enrolled.customer_id, live);

    // An id profiles never had is refused, naming the field and the id.
    let unknown = Uuid::now_v7().to_string();
    let refused = loyalty
        .enrol_member(enrol(&program_id, &unknown))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("an unknown customer is refused"))?;
    let (reason, metadata) = error_info(&refused);
    assert_eq!(
        (refused.code(), reason.as_str()),
        (Code::NotFound, "CUSTOMER_NOT_FOUND")
    );
    assert_eq!(metadata.get("customer_id"), Some(&unknown));
    assert!(refused.message().contains("customer_id"), "{refused:?}");

    // A merged-away id enrols its survivor (which is then enrolled, whatever id names it).
    let source = create_customer(&mut profiles, "source@example.com").await?;
    let survivor = create_customer(&mut profiles, "survivor@example.com").await?;
    profiles
        .merge_customers(profiles::MergeCustomersRequest {
            source_customer_id: source.clone(),
            target_customer_id: survivor.clone(),
            ..Default::default()
        })
        .await?;
    let merged = loyalty
        .enrol_member(enrol(&program_id, &source))
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    assert_eq!(merged.customer_id, survivor);
    let again = loyalty
        .enrol_member(enrol(&program_id, &survivor))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("the survivor is a member already"))?;
    assert_eq!(error_info(&again).0, "MEMBER_ALREADY_ENROLLED");

    // Deleted and erased customers are refused.
    let deleted = create_customer(&mut profiles, "deleted@example.com").await?;
    profiles
        .delete_customer(profiles::DeleteCustomerRequest {
            customer_id: deleted.clone(),
            ..Default::default()
        })
        .await?;
    let refused = loyalty
        .enrol_member(enrol(&program_id, &deleted))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a deleted customer is refused"))?;
    assert_eq!(
        (refused.code(), error_info(&refused).0.as_str()),
        (Code::FailedPrecondition, "CUSTOMER_DELETED")
    );
    let erased = create_customer(&mut profiles, "erased@example.com").await?;
    profiles
        .erase_customer(profiles::EraseCustomerRequest {
            customer_id: erased.clone(),
            request_id: rid(),
        })
        .await?;
    let refused = loyalty
        .enrol_member(enrol(&program_id, &erased))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("an erased customer is refused"))?;
    assert_eq!(
        (refused.code(), error_info(&refused).0.as_str()),
        (Code::FailedPrecondition, "CUSTOMER_ERASED")
    );

    // Profiles down: a new enrolment cannot be confirmed (UNAVAILABLE, retry later), but a
    // replay of a successful one answers as the first time.
    stop_profiles.cancel();
    profiles_task.await??;
    // Any well-formed id: with profiles down nobody can say whether it exists.
    let later = Uuid::now_v7().to_string();
    let refused = loyalty
        .enrol_member(enrol(&program_id, &later))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("profiles cannot answer"))?;
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let replayed = loyalty
        .enrol_member(first)
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    assert_eq!(replayed.member_id, enrolled.member_id);
    Ok(())
}

#[tokio::test]
async fn a_standalone_loyalty_enrols_any_customer_id() -> anyhow::Result<()> {
    // Without CUSTOPS_PROFILES_URL loyalty cannot know the customers and does not try.
    let db = TestDatabase::create().await?;
    let settings = ServiceSettings::for_local(ServiceKind::Loyalty, db.url());
    let (mut loyalty, _stop): (LoyaltyServiceClient<Channel>, _) = start(
        settings,
        Arc::new(ManualClock::new(chrono::Utc::now())),
        None,
    )
    .await?;
    let program_id = loyalty
        .create_program(pb::CreateProgramRequest {
            request_id: rid(),
            program: Some(program(pb::ClawbackPolicy::WithinBalance, 0)),
        })
        .await?
        .into_inner()
        .program
        .unwrap_or_default()
        .program_id;
    let customer = Uuid::now_v7().to_string();
    let member = loyalty
        .enrol_member(enrol(&program_id, &customer))
        .await?
        .into_inner()
        .member
        .unwrap_or_default();
    assert_eq!(member.customer_id, customer);
    Ok(())
}
