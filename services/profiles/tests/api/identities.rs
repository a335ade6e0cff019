//! Lookup by identity, add and remove identities.

use custops_contracts::custops::profiles::v1 as pb;
use tonic::Code;

use crate::support::{
    bad_fields, create, customer, expect_code, identity, reason, spawn_app, unique_email,
};

#[tokio::test]
async fn identities_are_looked_up_added_and_removed() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let email = unique_email("look");
    let a = create(&app, customer(&email)).await?;
    let b = create(&app, customer(&unique_email("other"))).await?;

    // Lookup normalises first.
    let found = client
        .lookup_customer(pb::LookupCustomerRequest {
            identity: Some(identity(
                pb::IdentityType::Email,
                &format!(" {} ", email.to_uppercase()),
            )),
        })
        .await?
        .into_inner();
    assert_eq!(
        found.customer.map(|c| c.customer_id),
        Some(a.customer_id.clone())
    );
    assert_eq!(found.identity.map(|i| i.value), Some(email.clone()));

    // Add: a new one works, repeating it is a no-op, one another customer holds is taken.
    let openid = pb::Identity {
        identity_type: pb::IdentityType::WechatOpenid as i32,
        namespace: "wx1a2b".to_owned(),
        value: "o_abc-123".to_owned(),
        create_time: None,
    };
    let added = client
        .add_identity(pb::AddIdentityRequest {
            customer_id: a.customer_id.clone(),
            identity: Some(openid.clone()),
            etag: a.etag.clone(),
        })
        .await?
        .into_inner();
    let again = client
        .add_identity(pb::AddIdentityRequest {
            customer_id: a.customer_id.clone(),
            identity: Some(openid.clone()),
            etag: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(added.customer.as_ref().map(|c| c.identities.len()), Some(2));
    assert_eq!(added, again);
    let taken = client
        .add_identity(pb::AddIdentityRequest {
            customer_id: b.customer_id.clone(),
            identity: Some(openid.clone()),
            etag: String::new(),
        })
        .await;
    let status = expect_code(taken, Code::AlreadyExists)?;
    assert_eq!(reason(&status).as_deref(), Some("IDENTITY_TAKEN"));
    let stale = client
        .add_identity(pb::AddIdentityRequest {
            customer_id: a.customer_id.clone(),
            identity: Some(identity(pb::IdentityType::Email, &unique_email("x"))),
            etag: a.etag.clone(),
        })
        .await;
    expect_code(stale, Code::Aborted)?;
    let bad = client
        .add_identity(pb::AddIdentityRequest {
            customer_id: a.customer_id.clone(),
            identity: Some(identity(pb::IdentityType::Phone, "12345")),
            etag: String::new(),
        })
        .await;
    assert_eq!(
        bad_fields(&expect_code(bad, Code::InvalidArgument)?),
        ["identity.value"]
    );

    // Remove: then it is free and no longer found.
    client
        .remove_identity(pb::RemoveIdentityRequest {
            customer_id: a.customer_id.clone(),
            identity: Some(openid.clone()),
            etag: String::new(),
            allow_missing: false,
        })
        .await?;
    expect_code(
        client
            .lookup_customer(pb::LookupCustomerRequest {
                identity: Some(openid.clone()),
            })
            .await,
        Code::NotFound,
    )?;
    expect_code(
        client
            .remove_identity(pb::RemoveIdentityRequest {
                customer_id: a.customer_id.clone(),
                identity: Some(openid.clone()),
                etag: String::new(),
                allow_missing: false,
            })
            .await,
        Code::NotFound,
    )?;
    client
        .remove_identity(pb::RemoveIdentityRequest {
            customer_id: a.customer_id.clone(),
            identity: Some(openid.clone()),
            etag: String::new(),
            allow_missing: true,
        })
        .await?;
    client
        .add_identity(pb::AddIdentityRequest {
            customer_id: b.customer_id.clone(),
            identity: Some(openid),
            etag: String::new(),
        })
        .await?;
    let missing_namespace = pb::Identity {
        identity_type: pb::IdentityType::Other as i32,
        namespace: String::new(),
        value: "x".to_owned(),
        create_time: None,
    };
    let status = expect_code(
        client
            .lookup_customer(pb::LookupCustomerRequest {
                identity: Some(missing_namespace),
            })
            .await,
        Code::InvalidArgument,
    )?;
    assert_eq!(bad_fields(&status), ["identity.namespace"]);
    Ok(())
}

#[tokio::test]
async fn a_customer_holds_at_most_twenty_identities() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let c = create(&app, customer(&unique_email("many"))).await?;
    for i in 0..19 {
        let card = pb::Identity {
            identity_type: pb::IdentityType::LoyaltyCard as i32,
            namespace: String::new(),
            value: format!("card-{}-{i}", c.customer_id),
            create_time: None,
        };
        client
            .add_identity(pb::AddIdentityRequest {
                customer_id: c.customer_id.clone(),
                identity: Some(card),
                etag: String::new(),
            })
            .await?;
    }
    let one_more = pb::Identity {
        identity_type: pb::IdentityType::LoyaltyCard as i32,
        namespace: String::new(),
        value: format!("card-{}-x", c.customer_id),
        create_time: None,
    };

    let result = client
        .add_identity(pb::AddIdentityRequest {
            customer_id: c.customer_id.clone(),
            identity: Some(one_more),
            etag: String::new(),
        })
        .await;

    let status = expect_code(result, Code::FailedPrecondition)?;
    assert_eq!(reason(&status).as_deref(), Some("IDENTITY_LIMIT"));
    Ok(())
}
