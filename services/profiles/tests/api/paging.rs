//! Lists page one way (`custops_common::paging`): a listing ends on its last full page, never
//! on an empty one, and a page token only pages on the request (minus its paging fields) that
//! issued it.

use custops_contracts::custops::profiles::v1 as pb;
use tonic::Code;

use crate::support::{bad_fields, create, customer, expect_code, spawn_app, unique_email};

#[tokio::test]
async fn a_listing_of_an_exact_multiple_of_the_page_size_ends_on_a_full_page() -> anyhow::Result<()>
{
    // Arrange: six customers and four attribute definitions.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let mut created = Vec::new();
    for _ in 0..6 {
        created.push(
            create(&app, customer(&unique_email("pages")))
                .await?
                .customer_id,
        );
    }
    for name in ["a_one", "b_two", "c_three", "d_four"] {
        client
            .create_attribute_definition(pb::CreateAttributeDefinitionRequest {
                attribute_definition: Some(pb::AttributeDefinition {
                    attribute_name: name.to_owned(),
                    value_type: pb::AttributeValueType::Number as i32,
                    ..Default::default()
                }),
            })
            .await?;
    }

    // Act: page through both, three customers and two definitions at a time.
    let mut customer_pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_customers(pb::ListCustomersRequest {
                page_size: 3,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        token = page.next_page_token;
        customer_pages.push(page.customers);
        if token.is_empty() || customer_pages.len() > 3 {
            break;
        }
    }
    let mut definition_pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_attribute_definitions(pb::ListAttributeDefinitionsRequest {
                page_size: 2,
                page_token: token,
            })
            .await?
            .into_inner();
        token = page.next_page_token;
        definition_pages.push(page.attribute_definitions);
        if token.is_empty() || definition_pages.len() > 3 {
            break;
        }
    }

    // Assert: two full pages each, every row once, in order; no empty third page.
    let sizes: Vec<usize> = customer_pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3]);
    let listed: Vec<String> = customer_pages
        .concat()
        .into_iter()
        .map(|c| c.customer_id)
        .collect();
    assert_eq!(listed, created);
    let names: Vec<Vec<String>> = definition_pages
        .into_iter()
        .map(|page| page.into_iter().map(|d| d.attribute_name).collect())
        .collect();
    assert_eq!(names, [["a_one", "b_two"], ["c_three", "d_four"]]);
    Ok(())
}

#[tokio::test]
async fn a_page_token_sent_with_other_filters_or_to_another_list_is_refused() -> anyhow::Result<()>
{
    // Arrange: two merges, listed one per page.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let target = create(&app, customer(&unique_email("target"))).await?;
    for tag in ["first", "second"] {
        let source = create(&app, customer(&unique_email(tag))).await?;
        client
            .merge_customers(pb::MergeCustomersRequest {
                source_customer_id: source.customer_id,
                target_customer_id: target.customer_id.clone(),
                ..Default::default()
            })
            .await?;
    }
    let first = client
        .list_merges(pb::ListMergesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    let token = first.next_page_token.clone();

    // Act
    let same_filters_other_size = client
        .list_merges(pb::ListMergesRequest {
            page_size: 5,
            page_token: token.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let other_filters = client
        .list_merges(pb::ListMergesRequest {
            states: vec![pb::MergeState::Merged as i32],
            page_size: 1,
            page_token: token.clone(),
            ..Default::default()
        })
        .await;
    let other_list = client
        .list_consent_changes(pb::ListConsentChangesRequest {
            page_size: 1,
            page_token: token,
            ..Default::default()
        })
        .await;

    // Assert: the token pages on at any size, and only for the filters and list that issued
    // it; otherwise INVALID_ARGUMENT on page_token.
    assert_eq!(first.merge_records.len(), 1);
    assert_eq!(same_filters_other_size.merge_records.len(), 1);
    assert!(same_filters_other_size.next_page_token.is_empty());
    assert_ne!(
        same_filters_other_size.merge_records[0].merge_id,
        first.merge_records[0].merge_id
    );
    for refused in [other_filters.map(|_| ()), other_list.map(|_| ())] {
        let status = expect_code(refused, Code::InvalidArgument)?;
        assert_eq!(bad_fields(&status), ["page_token"]);
    }
    Ok(())
}
