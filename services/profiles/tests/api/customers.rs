//! Create, get, batch get, update, list, delete: happy paths and errors.

use custops_contracts::custops::common::v1 as common;
use custops_contracts::custops::profiles::v1 as pb;
use tonic::Code;

use crate::support::{
    bad_fields, create, customer, expect_code, identity, reason, spawn_app, unique_email,
};

#[tokio::test]
async fn a_created_customer_is_normalised_and_read_back() -> anyhow::Result<()> {
    // Arrange
    let app = spawn_app().await?;
    let mut input = customer("  Li.Wei@Example.COM ");
    input
        .identities
        .push(identity(pb::IdentityType::Phone, "+86 138-0013-8000"));
    input.tags = vec!["VIP".to_owned(), "b2b".to_owned(), "vip".to_owned()];
    input.demographics = Some(pb::Demographics {
        birth_date: Some(common::Date {
            year: 1990,
            month: 5,
            day: 17,
        }),
        gender: pb::Gender::Female as i32,
        ..pb::Demographics::default()
    });

    // Act
    let created = create(&app, input).await?;
    let got = app
        .client
        .clone()
        .get_customer(pb::GetCustomerRequest {
            customer_id: created.customer_id.clone(),
        })
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();

    // Assert
    let values: Vec<&str> = got.identities.iter().map(|i| i.value.as_str()).collect();
    assert_eq!(values, ["li.wei@example.com", "+8613800138000"]);
    assert_eq!(got.tags, ["b2b", "vip"]);
    assert_eq!(
        got.geography.as_ref().map(|g| g.country_code.as_str()),
        Some("CN")
    );
    assert_eq!(got.state, pb::CustomerState::Active as i32);
    assert_eq!(got, created);
    assert_eq!(
        crate::support::outbox_types(&app, &created.customer_id).await?,
        ["custops.profiles.v1.CustomerCreated"]
    );
    Ok(())
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_every_field() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut input = customer("not-an-email");
    input
        .identities
        .push(identity(pb::IdentityType::Phone, "13800138000"));
    input.demographics = Some(pb::Demographics {
        birth_date: Some(common::Date {
            year: 2999,
            month: 1,
            day: 1,
        }),
        ..pb::Demographics::default()
    });
    input.geography = Some(pb::Geography {
        country_code: "XX".to_owned(),
        ..pb::Geography::default()
    });
    input.tags = vec!["not a slug".to_owned()];

    let result = app
        .client
        .clone()
        .create_customer(pb::CreateCustomerRequest {
            customer: Some(input),
            request_id: String::new(),
        })
        .await;

    let status = expect_code(result, Code::InvalidArgument)?;
    assert_eq!(
        bad_fields(&status),
        [
            "customer.demographics.birth_date",
            "customer.geography.country_code",
            "customer.tags[0]",
            "customer.identities[0].value",
            "customer.identities[1].value",
        ]
    );
    // Nothing was written.
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(count, 0);
    Ok(())
}

#[tokio::test]
async fn custom_attributes_must_be_declared_and_typed() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let definition = pb::AttributeDefinition {
        attribute_name: "vip_level".to_owned(),
        value_type: pb::AttributeValueType::Number as i32,
        description: "VIP level 1-5".to_owned(),
        ..pb::AttributeDefinition::default()
    };
    client
        .create_attribute_definition(pb::CreateAttributeDefinitionRequest {
            attribute_definition: Some(definition.clone()),
        })
        .await?;
    // Identical re-declaration is fine; a different one is ALREADY_EXISTS.
    client
        .create_attribute_definition(pb::CreateAttributeDefinitionRequest {
            attribute_definition: Some(definition.clone()),
        })
        .await?;
    let changed = pb::AttributeDefinition {
        value_type: pb::AttributeValueType::String as i32,
        ..definition
    };
    expect_code(
        client
            .create_attribute_definition(pb::CreateAttributeDefinitionRequest {
                attribute_definition: Some(changed),
            })
            .await,
        Code::AlreadyExists,
    )?;

    let value = |v: pb::custom_attribute_value::Value| pb::CustomAttributeValue { value: Some(v) };
    let mut bad = customer(&unique_email("attr"));
    bad.custom_attributes.insert(
        "vip_level".to_owned(),
        value(pb::custom_attribute_value::Value::StringValue(
            "gold".to_owned(),
        )),
    );
    bad.custom_attributes.insert(
        "vip_levl".to_owned(),
        value(pb::custom_attribute_value::Value::NumberValue(1.0)),
    );
    let status = expect_code(
        client
            .create_customer(pb::CreateCustomerRequest {
                customer: Some(bad),
                request_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
    )?;
    let mut fields = bad_fields(&status);
    fields.sort();
    assert_eq!(
        fields,
        [
            "customer.custom_attributes[vip_level]",
            "customer.custom_attributes[vip_levl]"
        ]
    );

    let mut good = customer(&unique_email("attr"));
    good.custom_attributes.insert(
        "vip_level".to_owned(),
        value(pb::custom_attribute_value::Value::NumberValue(3.0)),
    );
    let created = create(&app, good).await?;
    assert!(created.custom_attributes.contains_key("vip_level"));
    let listed = client
        .list_attribute_definitions(pb::ListAttributeDefinitionsRequest::default())
        .await?
        .into_inner();
    assert_eq!(listed.attribute_definitions.len(), 1);
    expect_code(
        client
            .get_attribute_definition(pb::GetAttributeDefinitionRequest {
                attribute_name: "nope".to_owned(),
            })
            .await,
        Code::NotFound,
    )?;
    Ok(())
}

#[tokio::test]
async fn create_is_idempotent_on_request_id() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let request = pb::CreateCustomerRequest {
        customer: Some(customer(&unique_email("idem"))),
        request_id: "req-1".to_owned(),
    };

    let first = client.create_customer(request.clone()).await?.into_inner();
    let replay = client.create_customer(request.clone()).await?.into_inner();
    let other = pb::CreateCustomerRequest {
        customer: Some(customer(&unique_email("idem"))),
        request_id: "req-1".to_owned(),
    };
    let reused = client.create_customer(other).await;

    assert_eq!(first, replay);
    let status = expect_code(reused, Code::AlreadyExists)?;
    assert_eq!(reason(&status).as_deref(), Some("REQUEST_ID_REUSED"));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(count, 1);
    Ok(())
}

#[tokio::test]
async fn twenty_concurrent_creates_with_one_email_make_one_customer() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let email = unique_email("race");
    let calls = (0..20).map(|i| {
        let mut client = app.client.clone();
        // Different spellings of one address: normalisation must make them collide.
        let spelled = if i % 2 == 0 {
            email.to_uppercase()
        } else {
            email.clone()
        };
        async move {
            client
                .create_customer(pb::CreateCustomerRequest {
                    customer: Some(customer(&spelled)),
                    request_id: String::new(),
                })
                .await
        }
    });
    let results = futures_util::future::join_all(calls).await;

    let ok = results.iter().filter(|r| r.is_ok()).count();
    let taken: Vec<&tonic::Status> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(ok, 1, "{taken:?}");
    assert_eq!(taken.len(), 19);
    for status in taken {
        assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
        assert_eq!(reason(status).as_deref(), Some("IDENTITY_TAKEN"));
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(count, 1);
    Ok(())
}

#[tokio::test]
async fn get_and_batch_get_report_what_is_missing() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let a = create(&app, customer(&unique_email("a"))).await?;
    let missing = uuid::Uuid::now_v7().to_string();

    expect_code(
        client
            .get_customer(pb::GetCustomerRequest {
                customer_id: missing.clone(),
            })
            .await,
        Code::NotFound,
    )?;
    let status = expect_code(
        client
            .get_customer(pb::GetCustomerRequest {
                customer_id: "nope".to_owned(),
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(bad_fields(&status), ["customer_id"]);

    let batch = client
        .batch_get_customers(pb::BatchGetCustomersRequest {
            customer_ids: vec![a.customer_id.clone(), missing.clone()],
        })
        .await?
        .into_inner();
    assert_eq!(batch.customers.len(), 1);
    assert_eq!(batch.missing_customer_ids, [missing]);

    let too_many = vec![a.customer_id.clone(); 1001];
    let status = expect_code(
        client
            .batch_get_customers(pb::BatchGetCustomersRequest {
                customer_ids: too_many,
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(bad_fields(&status), ["customer_ids"]);
    let status = expect_code(
        client
            .batch_get_customers(pb::BatchGetCustomersRequest {
                customer_ids: vec!["x".to_owned()],
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(bad_fields(&status), ["customer_ids[0]"]);
    Ok(())
}

#[tokio::test]
async fn batch_get_answers_each_customer_once_whatever_the_repeats() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let a = create(&app, customer(&unique_email("dup-a"))).await?;
    let source = create(&app, customer(&unique_email("dup-src"))).await?;
    let target = create(&app, customer(&unique_email("dup-tgt"))).await?;
    client
        .merge_customers(pb::MergeCustomersRequest {
            source_customer_id: source.customer_id.clone(),
            target_customer_id: target.customer_id.clone(),
            ..Default::default()
        })
        .await?;
    let missing = uuid::Uuid::now_v7().to_string();

    // `a` three times, the missing id twice, the survivor by its own id and by the merged one.
    let batch = client
        .batch_get_customers(pb::BatchGetCustomersRequest {
            customer_ids: vec![
                a.customer_id.clone(),
                missing.clone(),
                a.customer_id.clone(),
                source.customer_id.clone(),
                target.customer_id.clone(),
                missing.clone(),
                a.customer_id.clone(),
            ],
        })
        .await?
        .into_inner();

    let ids: Vec<&str> = batch
        .customers
        .iter()
        .map(|c| c.customer_id.as_str())
        .collect();
    assert_eq!(ids, [a.customer_id.as_str(), target.customer_id.as_str()]);
    assert_eq!(batch.missing_customer_ids, [missing]);
    assert_eq!(
        batch.merged_customer_ids.get(&source.customer_id),
        Some(&target.customer_id)
    );
    assert_eq!(batch.merged_customer_ids.len(), 1);
    Ok(())
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

#[tokio::test]
async fn update_applies_the_mask_under_the_etag() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let created = create(&app, customer(&unique_email("upd"))).await?;
    let mut change = created.clone();
    change.geography = Some(pb::Geography {
        city: "Beijing".to_owned(),
        country_code: "CN".to_owned(),
        ..pb::Geography::default()
    });
    change.given_name = "Ignored".to_owned();

    let updated = client
        .update_customer(pb::UpdateCustomerRequest {
            customer: Some(change.clone()),
            update_mask: mask(&["geography.city"]),
        })
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();

    assert_eq!(
        updated.geography.as_ref().map(|g| g.city.as_str()),
        Some("Beijing")
    );
    assert_eq!(
        updated.geography.as_ref().map(|g| g.region.as_str()),
        Some("CN-GD")
    );
    assert_eq!(updated.given_name, "Wei");
    assert_ne!(updated.etag, created.etag);
    // The old etag is stale now.
    let stale = client
        .update_customer(pb::UpdateCustomerRequest {
            customer: Some(change.clone()),
            update_mask: mask(&["given_name"]),
        })
        .await;
    expect_code(stale, Code::Aborted)?;
    // Unknown and output-only paths.
    let mut fresh = updated.clone();
    fresh.etag.clear();
    let status = expect_code(
        client
            .update_customer(pb::UpdateCustomerRequest {
                customer: Some(fresh.clone()),
                update_mask: mask(&["favourite_colour"]),
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(bad_fields(&status), ["update_mask"]);
    let status = expect_code(
        client
            .update_customer(pb::UpdateCustomerRequest {
                customer: Some(fresh.clone()),
                update_mask: mask(&["identities"]),
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(bad_fields(&status), ["update_mask"]);
    expect_code(
        client
            .update_customer(pb::UpdateCustomerRequest {
                customer: Some(fresh.clone()),
                update_mask: None,
            })
            .await,
        Code::InvalidArgument,
    )?;
    // Unknown customer.
    let mut unknown = fresh.clone();
    unknown.customer_id = uuid::Uuid::now_v7().to_string();
    expect_code(
        client
            .update_customer(pb::UpdateCustomerRequest {
                customer: Some(unknown),
                update_mask: mask(&["given_name"]),
            })
            .await,
        Code::NotFound,
    )?;
    // No-op writes nothing.
    let same = client
        .update_customer(pb::UpdateCustomerRequest {
            customer: Some(fresh),
            update_mask: mask(&["geography.city"]),
        })
        .await?
        .into_inner();
    assert_eq!(same.customer.map(|c| c.etag), Some(updated.etag));
    assert_eq!(
        crate::support::outbox_types(&app, &created.customer_id).await?,
        [
            "custops.profiles.v1.CustomerCreated",
            "custops.profiles.v1.CustomerUpdated"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn list_filters_and_pages_with_signed_tokens() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut c = customer(&unique_email("list"));
        if i % 2 == 1 {
            c.geography = Some(pb::Geography {
                country_code: "DE".to_owned(),
                city: "Berlin".to_owned(),
                ..pb::Geography::default()
            });
        }
        ids.push((i, create(&app, c).await?.customer_id));
    }
    let cn: Vec<String> = ids
        .iter()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, id)| id.clone())
        .collect();
    let filter = Some(pb::CustomerFilter {
        country_code: "cn".to_owned(),
        tags: vec!["vip".to_owned()],
        ..pb::CustomerFilter::default()
    });

    let first = client
        .list_customers(pb::ListCustomersRequest {
            filter: filter.clone(),
            page_size: 3,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    let second = client
        .list_customers(pb::ListCustomersRequest {
            filter: filter.clone(),
            page_size: 3,
            page_token: first.next_page_token.clone(),
        })
        .await?
        .into_inner();

    let seen: Vec<String> = first
        .customers
        .iter()
        .chain(&second.customers)
        .map(|c| c.customer_id.clone())
        .collect();
    assert_eq!(seen, cn);
    assert!(second.next_page_token.is_empty());
    // A token for other filters, a tampered token, a bad page size.
    let other = Some(pb::CustomerFilter {
        country_code: "DE".to_owned(),
        ..pb::CustomerFilter::default()
    });
    let status = expect_code(
        client
            .list_customers(pb::ListCustomersRequest {
                filter: other,
                page_size: 3,
                page_token: first.next_page_token.clone(),
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(bad_fields(&status), ["page_token"]);
    let mut tampered = first.next_page_token.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered)?;
    let status = expect_code(
        client
            .list_customers(pb::ListCustomersRequest {
                filter: filter.clone(),
                page_size: 3,
                page_token: tampered,
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(bad_fields(&status), ["page_token"]);
    let status = expect_code(
        client
            .list_customers(pb::ListCustomersRequest {
                filter: filter.clone(),
                page_size: 1001,
                page_token: String::new(),
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(bad_fields(&status), ["page_size"]);
    let bad_filter = Some(pb::CustomerFilter {
        country_code: "ZZ".to_owned(),
        age_range: Some(pb::AgeRange {
            min_age: 0,
            max_age: 0,
        }),
        ..pb::CustomerFilter::default()
    });
    let status = expect_code(
        client
            .list_customers(pb::ListCustomersRequest {
                filter: bad_filter,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(
        bad_fields(&status),
        ["filter.country_code", "filter.age_range"]
    );
    Ok(())
}

#[tokio::test]
async fn list_filters_on_age_and_consent() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let mut young = customer(&unique_email("young"));
    young.demographics = Some(pb::Demographics {
        birth_date: Some(common::Date {
            year: 2005,
            month: 1,
            day: 1,
        }),
        ..Default::default()
    });
    young.consents = vec![pb::Consent {
        channel: common::ContactChannel::Email as i32,
        status: pb::ConsentStatus::Granted as i32,
        source: "checkout_form".to_owned(),
        ..Default::default()
    }];
    let young = create(&app, young).await?;
    let mut old = customer(&unique_email("old"));
    old.demographics = Some(pb::Demographics {
        birth_date: Some(common::Date {
            year: 1950,
            month: 1,
            day: 1,
        }),
        ..Default::default()
    });
    let old = create(&app, old).await?;

    let ids = |r: pb::ListCustomersResponse| {
        r.customers
            .into_iter()
            .map(|c| c.customer_id)
            .collect::<Vec<_>>()
    };
    let by_age = client
        .list_customers(pb::ListCustomersRequest {
            filter: Some(pb::CustomerFilter {
                age_range: Some(pb::AgeRange {
                    min_age: 60,
                    max_age: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(ids(by_age), std::slice::from_ref(&old.customer_id));
    let granted = pb::ConsentFilter {
        channel: common::ContactChannel::Email as i32,
        granted: true,
    };
    let by_consent = client
        .list_customers(pb::ListCustomersRequest {
            filter: Some(pb::CustomerFilter {
                consents: vec![granted],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(ids(by_consent), std::slice::from_ref(&young.customer_id));
    let not_granted = pb::ConsentFilter {
        channel: common::ContactChannel::Email as i32,
        granted: false,
    };
    let by_no_consent = client
        .list_customers(pb::ListCustomersRequest {
            filter: Some(pb::CustomerFilter {
                consents: vec![not_granted],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(ids(by_no_consent), [old.customer_id]);
    Ok(())
}

#[tokio::test]
async fn delete_is_soft_and_undoable() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let created = create(&app, customer(&unique_email("del"))).await?;

    let stale = client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: created.customer_id.clone(),
            etag: "999".to_owned(),
        })
        .await;
    expect_code(stale, Code::Aborted)?;
    let deleted = client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: created.customer_id.clone(),
            etag: created.etag.clone(),
        })
        .await?
        .into_inner();
    let again = client
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: created.customer_id.clone(),
            etag: String::new(),
        })
        .await?
        .into_inner();

    assert_eq!(
        deleted.customer.as_ref().map(|c| c.state),
        Some(pb::CustomerState::Deleted as i32)
    );
    assert_eq!(deleted, again);
    let listed = client
        .list_customers(pb::ListCustomersRequest::default())
        .await?
        .into_inner();
    assert!(listed.customers.is_empty());
    // Edits of a deleted customer are refused.
    let mut edit = created.clone();
    edit.etag.clear();
    let status = expect_code(
        client
            .update_customer(pb::UpdateCustomerRequest {
                customer: Some(edit),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["given_name".to_owned()],
                }),
            })
            .await,
        Code::FailedPrecondition,
    )?;
    assert_eq!(reason(&status).as_deref(), Some("CUSTOMER_DELETED"));
    let restored = client
        .undelete_customer(pb::UndeleteCustomerRequest {
            customer_id: created.customer_id.clone(),
            etag: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(
        restored.customer.map(|c| c.state),
        Some(pb::CustomerState::Active as i32)
    );
    expect_code(
        client
            .delete_customer(pb::DeleteCustomerRequest {
                customer_id: uuid::Uuid::now_v7().to_string(),
                etag: String::new(),
            })
            .await,
        Code::NotFound,
    )?;
    Ok(())
}

#[tokio::test]
async fn a_replay_with_custom_attributes_is_recognised() -> anyhow::Result<()> {
    // Maps are encoded in hash order on the wire; the key must not depend on it.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let mut input = customer(&unique_email("map"));
    for name in ["a_level", "b_store", "c_flag", "d_score"] {
        let definition = pb::AttributeDefinition {
            attribute_name: name.to_owned(),
            value_type: pb::AttributeValueType::Number as i32,
            ..Default::default()
        };
        client
            .create_attribute_definition(pb::CreateAttributeDefinitionRequest {
                attribute_definition: Some(definition),
            })
            .await?;
        let value = pb::CustomAttributeValue {
            value: Some(pb::custom_attribute_value::Value::NumberValue(1.5)),
        };
        input.custom_attributes.insert(name.to_owned(), value);
    }
    let request = pb::CreateCustomerRequest {
        customer: Some(input),
        request_id: "with-map".to_owned(),
    };

    let first = client.create_customer(request.clone()).await?.into_inner();
    for _ in 0..5 {
        // A fresh copy each time, so the map is rebuilt (and re-hashed) like a new client's.
        let copy = pb::CreateCustomerRequest {
            customer: request.customer.clone(),
            request_id: request.request_id.clone(),
        };
        assert_eq!(client.create_customer(copy).await?.into_inner(), first);
    }
    Ok(())
}
