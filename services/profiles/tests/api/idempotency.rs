//! Request ids (`custops_common::idempotency`): a replay answers the first response byte for
//! byte even after the customer changed, one id is bound to one RPC and request, racing calls
//! with one id apply once, keys are pruned after the retention (also by two replicas pruning
//! at once), and keys of the old `request_ids` table are refused after the upgrade rather
//! than applied twice.

use std::time::Duration;

use custops_common::idempotency::RETENTION;
use custops_contracts::custops::profiles::v1 as pb;
use custops_testkit::{TestDatabase, eventually};
use prost::Message;
use sqlx::migrate::Migrator;
use tonic::Code;

use crate::support::{
    create, customer, expect_code, reason, schema_pool, spawn_app, spawn_app_on,
    spawn_app_pruning_every, unique_email,
};

fn create_request(customer: pb::Customer, request_id: &str) -> pb::CreateCustomerRequest {
    pb::CreateCustomerRequest {
        customer: Some(customer),
        request_id: request_id.to_owned(),
    }
}

async fn count(app: &crate::support::TestApp, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(sql).fetch_one(&app.pool).await?)
}

#[tokio::test]
async fn a_replay_after_the_customer_changed_answers_the_first_response_byte_for_byte()
-> anyhow::Result<()> {
    // Arrange: a customer created with a request id, then renamed.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let request = create_request(customer(&unique_email("replay")), "create-1");
    let first = client.create_customer(request.clone()).await?.into_inner();
    let created = first.customer.clone().unwrap_or_default();
    let mut renamed = created.clone();
    renamed.display_name = "Renamed".to_owned();
    let updated = client
        .update_customer(pb::UpdateCustomerRequest {
            customer: Some(renamed),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".to_owned()],
            }),
        })
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();

    // Act
    let replay = client.create_customer(request).await?.into_inner();

    // Assert: the first answer, not the customer as it is now; nothing created twice.
    assert_eq!(replay.encode_to_vec(), first.encode_to_vec());
    assert_eq!(updated.display_name, "Renamed");
    assert_ne!(updated.etag, created.etag);
    assert_eq!(count(&app, "SELECT count(*) FROM customers").await?, 1);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM outbox WHERE type LIKE '%.CustomerCreated'"
        )
        .await?,
        1
    );
    Ok(())
}

#[tokio::test]
async fn a_merge_replayed_after_its_unmerge_answers_the_first_merge_and_merges_nothing()
-> anyhow::Result<()> {
    // Arrange: a merge with a request id, undone since (so the work could run again).
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let source = create(&app, customer(&unique_email("source"))).await?;
    let target = create(&app, customer(&unique_email("target"))).await?;
    let merge = pb::MergeCustomersRequest {
        source_customer_id: source.customer_id.clone(),
        target_customer_id: target.customer_id.clone(),
        request_id: "merge-1".to_owned(),
        ..Default::default()
    };
    let first = client.merge_customers(merge.clone()).await?.into_inner();
    let merge_id = first
        .merge_record
        .as_ref()
        .map(|r| r.merge_id.clone())
        .unwrap_or_default();
    client
        .unmerge_customer(pb::UnmergeCustomerRequest {
            merge_id,
            ..Default::default()
        })
        .await?;

    // Act
    let replay = client.merge_customers(merge).await?.into_inner();

    // Assert: the first merge's answer; one merge on record, and the source is active.
    assert_eq!(replay.encode_to_vec(), first.encode_to_vec());
    assert_eq!(count(&app, "SELECT count(*) FROM merges").await?, 1);
    let source_now = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: source.customer_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(source_now.merged_from_customer_id, "");
    assert_eq!(
        source_now.customer.map(|c| c.state),
        Some(pb::CustomerState::Active as i32)
    );
    Ok(())
}

#[tokio::test]
async fn a_request_id_used_on_another_rpc_is_request_id_reused() -> anyhow::Result<()> {
    // Arrange
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let created = client
        .create_customer(create_request(
            customer(&unique_email("other-rpc")),
            "key-1",
        ))
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();

    // Act: the same id on EraseCustomer, and on CreateCustomer with another customer.
    let erase = client
        .erase_customer(pb::EraseCustomerRequest {
            customer_id: created.customer_id.clone(),
            request_id: "key-1".to_owned(),
        })
        .await;
    let other_request = client
        .create_customer(create_request(customer(&unique_email("other")), "key-1"))
        .await;

    // Assert: both refused by reason, and the erasure rolled back.
    for refused in [erase.map(|_| ()), other_request.map(|_| ())] {
        let status = expect_code(refused, Code::AlreadyExists)?;
        assert_eq!(reason(&status).as_deref(), Some("REQUEST_ID_REUSED"));
    }
    let now = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: created.customer_id.clone(),
        })
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();
    assert_eq!(now.state, pb::CustomerState::Active as i32);
    assert_eq!(now.given_name, created.given_name);
    assert_eq!(count(&app, "SELECT count(*) FROM customers").await?, 1);
    Ok(())
}

#[tokio::test]
async fn twelve_racing_calls_with_one_request_id_create_one_customer() -> anyhow::Result<()> {
    // Arrange: a customer without identities, so nothing but the request id keeps a second
    // one from being created.
    let app = spawn_app().await?;
    let mut anonymous = customer("unused@example.com");
    anonymous.identities.clear();
    let request = create_request(anonymous, "race-1");

    // Act: twelve calls, all spawned before any is awaited.
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let mut client = app.client.clone();
            let request = request.clone();
            tokio::spawn(async move { client.create_customer(request).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await??.into_inner().encode_to_vec());
    }

    // Assert: one customer, one event, one key; every answer is the same bytes.
    assert_eq!(count(&app, "SELECT count(*) FROM customers").await?, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM outbox").await?, 1);
    assert_eq!(
        count(&app, "SELECT count(*) FROM idempotency_keys").await?,
        1
    );
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    Ok(())
}

#[tokio::test]
async fn a_request_id_older_than_the_retention_is_pruned() -> anyhow::Result<()> {
    // Arrange: one key recorded now, one after the retention has passed for the first.
    let app = spawn_app_pruning_every(Duration::from_millis(50)).await?;
    let mut client = app.client.clone();
    let old = create_request(customer(&unique_email("old")), "old-1");
    let first = client.create_customer(old.clone()).await?.into_inner();
    app.clock
        .advance(chrono::Duration::from_std(RETENTION)? + chrono::Duration::seconds(1));
    client
        .create_customer(create_request(customer(&unique_email("new")), "new-1"))
        .await?;

    // Act: wait for a pruning pass on the moved clock.
    let keys = |id: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM idempotency_keys WHERE request_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap_or(-1)
        }
    };
    let pruned = eventually(Duration::from_secs(10), || async {
        keys("old-1").await == 0
    })
    .await;

    // Assert: the old key is gone, the new one kept; the old id is now a new call, which
    // meets the identity its first call created.
    assert!(pruned, "the expired key was not pruned");
    assert_eq!(keys("new-1").await, 1);
    let status = expect_code(client.create_customer(old).await, Code::AlreadyExists)?;
    assert_eq!(reason(&status).as_deref(), Some("IDENTITY_TAKEN"));
    assert!(first.customer.is_some());
    Ok(())
}

#[tokio::test]
async fn a_request_id_of_the_old_table_is_refused_after_the_upgrade() -> anyhow::Result<()> {
    // Arrange: a database at the version before the shared idempotency table, holding a key
    // its CreateCustomer claimed.
    let db = TestDatabase::create().await?;
    let pool = schema_pool(&db, "profiles").await?;
    let before = Migrator::with_migrations(
        custops_profiles::MIGRATIONS
            .iter()
            .filter(|m| m.version < 20261205110000)
            .cloned()
            .collect(),
    );
    custops_common::db::migrate(&pool, "profiles", &before).await?;
    sqlx::query(
        "INSERT INTO request_ids (caller, request_id, method, payload_hash, customer_id, \
         create_time) VALUES ('anonymous', 'before-1', 'CreateCustomer', $1, $2, now())",
    )
    .bind("ab".repeat(32))
    .bind(uuid::Uuid::now_v7())
    .execute(&pool)
    .await?;
    pool.close().await;

    // Act: the upgraded service gets the retry.
    let app = spawn_app_on(db).await?;
    let retry = app
        .client
        .clone()
        .create_customer(create_request(
            customer(&unique_email("before")),
            "before-1",
        ))
        .await;

    // Assert: refused, not applied; the old table is gone, its key kept.
    let status = expect_code(retry, Code::AlreadyExists)?;
    assert_eq!(reason(&status).as_deref(), Some("REQUEST_ID_REUSED"));
    assert_eq!(count(&app, "SELECT count(*) FROM customers").await?, 0);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM idempotency_keys WHERE request_id = 'before-1'"
        )
        .await?,
        1
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'profiles' \
             AND tablename = 'request_ids'"
        )
        .await?,
        0
    );
    Ok(())
}

#[tokio::test]
async fn two_replicas_pruning_at_once_drop_the_expired_keys_and_keep_the_rest() -> anyhow::Result<()>
{
    // Arrange: two replicas on one database and one clock, each pruning every 50 ms; keys
    // recorded through either, half of them before the retention moved past them.
    let app = spawn_app_pruning_every(Duration::from_millis(50)).await?;
    let replica = custops_profiles::build_with(
        custops_common::config::ServiceSettings::for_local(
            custops_common::service::ServiceKind::Profiles,
            app.db.url(),
        ),
        custops_profiles::Options {
            clock: app.clock.clone(),
            prune_every: Duration::from_millis(50),
        },
    )
    .await?;
    let replica_url = format!("http://{}", replica.local_addr());
    let stop_replica = tokio_util::sync::CancellationToken::new();
    tokio::spawn(replica.run_until_stopped(stop_replica.clone().cancelled_owned()));
    let mut first = app.client.clone();
    let mut second =
        pb::profiles_service_client::ProfilesServiceClient::new(custops_common::client::plain(
            tonic::transport::Channel::from_shared(replica_url)?
                .connect()
                .await?,
        ));
    let keys = 20;
    for i in 0..keys {
        let client = if i % 2 == 0 { &mut first } else { &mut second };
        let request = create_request(customer(&unique_email("old")), &format!("old-{i}"));
        client.create_customer(request).await?;
    }
    app.clock
        .advance(chrono::Duration::from_std(RETENTION)? + chrono::Duration::seconds(1));
    let mut answers = Vec::new();
    for i in 0..keys {
        let client = if i % 2 == 0 { &mut first } else { &mut second };
        let request = create_request(customer(&unique_email("new")), &format!("new-{i}"));
        answers.push((
            request.clone(),
            client.create_customer(request).await?.into_inner(),
        ));
    }

    // Act: both replicas' pruners run on the moved clock.
    let pruned = eventually(Duration::from_secs(10), || async {
        count(
            &app,
            "SELECT count(*) FROM idempotency_keys WHERE request_id LIKE 'old-%'",
        )
        .await
        .is_ok_and(|old| old == 0)
    })
    .await;

    // Assert: the expired keys are gone, every kept one still answers its first response,
    // through the replica that did not record it.
    assert!(pruned, "the expired keys were not pruned");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM idempotency_keys WHERE request_id LIKE 'new-%'"
        )
        .await?,
        keys
    );
    for (i, (request, answered)) in answers.into_iter().enumerate() {
        let other = if i % 2 == 0 { &mut second } else { &mut first };
        assert_eq!(other.create_customer(request).await?.into_inner(), answered);
    }
    assert_eq!(
        count(&app, "SELECT count(*) FROM customers").await?,
        2 * keys
    );
    stop_replica.cancel();
    Ok(())
}
