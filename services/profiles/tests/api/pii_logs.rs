//! No personal data in logs: everything logged while a customer is created, updated and
//! erased is read back and searched for its e-mail, phone and names.

use custops_contracts::custops::profiles::v1 as pb;

use crate::support::{captured_logs, create, customer, identity, spawn_app};

#[tokio::test]
async fn create_update_and_erase_log_no_personal_data() -> anyhow::Result<()> {
    // Arrange: values that appear nowhere else, so a hit can only be a leak.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("pii.{marker}@example.com");
    let phone = format!(
        "+86138{}",
        &marker
            .chars()
            .filter(char::is_ascii_digit)
            .chain("00000000".chars())
            .take(8)
            .collect::<String>()
    );
    let given = format!("Given{marker}");
    let family = format!("Family{marker}");
    let mut input = customer(&email);
    input
        .identities
        .push(identity(pb::IdentityType::Phone, &phone));
    input.given_name = given.clone();
    input.family_name = family.clone();

    // Act: create, update (including a failing update), erase.
    let created = create(&app, input).await?;
    let mut change = created.clone();
    change.display_name = format!("Display{marker}");
    change.etag.clear();
    client
        .update_customer(pb::UpdateCustomerRequest {
            customer: Some(change.clone()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".to_owned()],
            }),
        })
        .await?;
    change.etag = "stale".to_owned();
    let _refused = client
        .update_customer(pb::UpdateCustomerRequest {
            customer: Some(change),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".to_owned()],
            }),
        })
        .await;
    let _taken = client
        .create_customer(pb::CreateCustomerRequest {
            customer: Some(customer(&email)),
            request_id: String::new(),
        })
        .await;
    client
        .erase_customer(pb::EraseCustomerRequest {
            customer_id: created.customer_id.clone(),
            request_id: String::new(),
        })
        .await?;

    // Assert: the capture saw these calls (their customer id), and none of the values.
    let logs = captured_logs();
    assert!(
        logs.contains(&created.customer_id),
        "the log capture saw nothing of this test"
    );
    for secret in [&email, &phone, &given, &family, &format!("Display{marker}")] {
        assert!(
            !logs.contains(secret.as_str()),
            "personal data in the logs: {secret}"
        );
    }
    Ok(())
}
