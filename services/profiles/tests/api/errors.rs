//! Every invalid input is INVALID_ARGUMENT with a `google.rpc.BadRequest` naming each bad
//! field, on every RPC that takes input (the one error mapping, `api/error.rs`).

use custops_contracts::custops::profiles::v1 as pb;
use tonic::{Code, Status};

use crate::support::{bad_fields, spawn_app};

/// Records a mismatch unless `result` is INVALID_ARGUMENT naming exactly `fields`.
fn check<T: std::fmt::Debug>(
    failures: &mut Vec<String>,
    rpc: &str,
    result: Result<T, Status>,
    fields: &[&str],
) {
    match result {
        Err(status) if status.code() == Code::InvalidArgument => {
            let named = bad_fields(&status);
            if named != fields {
                failures.push(format!("{rpc}: named {named:?}, expected {fields:?}"));
            }
        }
        other => failures.push(format!("{rpc}: expected INVALID_ARGUMENT, got {other:?}")),
    }
}

fn too_short() -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: 0,
        nanos: 1_000_000,
    })
}

#[tokio::test]
async fn every_invalid_input_names_its_field() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut c = app.client.clone();
    let mut failures = Vec::new();
    let f = &mut failures;

    let r = c
        .get_customer(pb::GetCustomerRequest {
            customer_id: String::new(),
        })
        .await;
    check(f, "GetCustomer", r, &["customer_id"]);
    let r = c
        .batch_get_customers(pb::BatchGetCustomersRequest {
            customer_ids: vec!["x".to_owned()],
        })
        .await;
    check(f, "BatchGetCustomers", r, &["customer_ids[0]"]);
    let r = c
        .update_customer(pb::UpdateCustomerRequest {
            customer: None,
            update_mask: None,
        })
        .await;
    check(
        f,
        "UpdateCustomer",
        r,
        &["customer.customer_id", "update_mask"],
    );
    let r = c
        .list_customers(pb::ListCustomersRequest {
            filter: Some(pb::CustomerFilter {
                states: vec![9],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    check(f, "ListCustomers", r, &["filter.states[0]"]);
    let r = c
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: "x".to_owned(),
            etag: String::new(),
        })
        .await;
    check(f, "DeleteCustomer", r, &["customer_id"]);
    let r = c
        .undelete_customer(pb::UndeleteCustomerRequest {
            customer_id: String::new(),
            etag: String::new(),
        })
        .await;
    check(f, "UndeleteCustomer", r, &["customer_id"]);
    let r = c
        .lookup_customer(pb::LookupCustomerRequest { identity: None })
        .await;
    check(f, "LookupCustomer", r, &["identity"]);
    let r = c
        .add_identity(pb::AddIdentityRequest {
            customer_id: String::new(),
            identity: None,
            ..Default::default()
        })
        .await;
    check(f, "AddIdentity", r, &["customer_id", "identity"]);
    let r = c
        .remove_identity(pb::RemoveIdentityRequest {
            customer_id: "x".to_owned(),
            identity: None,
            ..Default::default()
        })
        .await;
    check(f, "RemoveIdentity", r, &["customer_id", "identity"]);
    let r = c
        .create_attribute_definition(pb::CreateAttributeDefinitionRequest {
            attribute_definition: None,
        })
        .await;
    check(
        f,
        "CreateAttributeDefinition",
        r,
        &[
            "attribute_definition.attribute_name",
            "attribute_definition.value_type",
        ],
    );
    let r = c
        .get_attribute_definition(pb::GetAttributeDefinitionRequest {
            attribute_name: String::new(),
        })
        .await;
    check(f, "GetAttributeDefinition", r, &["attribute_name"]);
    let r = c
        .update_consent(pb::UpdateConsentRequest {
            customer_id: String::new(),
            ..Default::default()
        })
        .await;
    check(f, "UpdateConsent", r, &["customer_id", "consents"]);
    let r = c
        .list_consent_changes(pb::ListConsentChangesRequest {
            customer_id: "x".to_owned(),
            channels: vec![9],
            ..Default::default()
        })
        .await;
    check(f, "ListConsentChanges", r, &["customer_id", "channels[0]"]);
    let r = c
        .record_activity(pb::RecordActivityRequest {
            activity: None,
            customer_identity: None,
        })
        .await;
    check(f, "RecordActivity", r, &["activity"]);
    let r = c
        .list_activities(pb::ListActivitiesRequest {
            customer_id: String::new(),
            ..Default::default()
        })
        .await;
    check(f, "ListActivities", r, &["customer_id"]);
    let r = c
        .find_duplicate_customers(pb::FindDuplicateCustomersRequest {
            customer_id: String::new(),
            max_candidates: 101,
            ..Default::default()
        })
        .await;
    check(
        f,
        "FindDuplicateCustomers",
        r,
        &["customer_id", "max_candidates"],
    );
    let r = c
        .merge_customers(pb::MergeCustomersRequest::default())
        .await;
    check(
        f,
        "MergeCustomers",
        r,
        &["source_customer_id", "target_customer_id"],
    );
    let r = c
        .unmerge_customer(pb::UnmergeCustomerRequest::default())
        .await;
    check(f, "UnmergeCustomer", r, &["merge_id"]);
    let r = c
        .list_merges(pb::ListMergesRequest {
            states: vec![5],
            ..Default::default()
        })
        .await;
    check(f, "ListMerges", r, &["states[0]"]);
    let r = c
        .get_customer360(pb::GetCustomer360Request {
            customer_id: String::new(),
            section_timeout: too_short(),
            ..Default::default()
        })
        .await;
    check(f, "GetCustomer360", r, &["customer_id", "section_timeout"]);
    let r = c
        .export_customer(pb::ExportCustomerRequest {
            customer_id: String::new(),
            section_timeout: too_short(),
        })
        .await;
    check(f, "ExportCustomer", r, &["customer_id", "section_timeout"]);
    let r = c
        .erase_customer(pb::EraseCustomerRequest {
            customer_id: "x".to_owned(),
            request_id: String::new(),
        })
        .await;
    check(f, "EraseCustomer", r, &["customer_id"]);

    assert!(failures.is_empty(), "{failures:#?}");
    Ok(())
}
