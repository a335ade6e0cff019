//! Duplicates, merge, export and erase: atomic (a failing step leaves nothing changed) and
//! followed by a feed consumer.

use std::time::Duration;

use custops_common::consumer::{Consumer, ConsumerOptions, EventHandler};
use custops_contracts::custops::common::v1::Event;
use custops_contracts::custops::profiles::v1 as pb;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::support::{
    TestApp, create, customer, expect_code, identity, purchase, reason, schema_pool, spawn_app,
    unique_email,
};

/// Records every event it sees in its own schema.
struct Recorder;

#[tonic::async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, tx: &mut PgConnection, event: &Event) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO seen (event_type, aggregate_id) VALUES ($1, $2)")
            .bind(&event.event_type)
            .bind(&event.aggregate_id)
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// A consumer (in a schema of its own on the test database) following the profiles feed.
async fn follow_feed(app: &TestApp, stop: &CancellationToken) -> anyhow::Result<PgPool> {
    let pool = schema_pool(&app.db, "consumer").await?;
    custops_common::db::migrate(
        &pool,
        "consumer",
        &sqlx::migrate::Migrator::with_migrations(Vec::new()),
    )
    .await?;
    sqlx::query("CREATE TABLE seen (event_type text NOT NULL, aggregate_id text NOT NULL)")
        .execute(&pool)
        .await?;
    let mut options = ConsumerOptions::new("profiles");
    options.initial_backoff = Duration::from_millis(50);
    Consumer::new(pool.clone(), app.channel.clone(), Recorder, options).spawn(stop.clone());
    Ok(pool)
}

async fn until_seen(pool: &PgPool, event_type: &str, aggregate_id: &str) -> bool {
    custops_testkit::eventually(Duration::from_secs(15), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM seen WHERE event_type = $1 AND aggregate_id = $2",
        )
        .bind(event_type)
        .bind(aggregate_id)
        .fetch_one(pool)
        .await
        .is_ok_and(|n| n == 1)
    })
    .await
}

/// Makes every statement that `trigger_when` describes on `table` fail, as a broken step would.
async fn sabotage(app: &TestApp, table: &str, when: &str) -> anyhow::Result<()> {
    sqlx::query("CREATE FUNCTION sabotage() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'sabotaged'; END $$")
        .execute(&app.pool)
        .await?;
    let sql = format!(
        "CREATE TRIGGER sabotage {when} ON {table} FOR EACH ROW EXECUTE FUNCTION sabotage()"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&app.pool)
        .await?;
    Ok(())
}

async fn repair(app: &TestApp, table: &str) -> anyhow::Result<()> {
    let sql = format!("DROP TRIGGER sabotage ON {table}; DROP FUNCTION sabotage()");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&app.pool)
        .await?;
    Ok(())
}

async fn record(app: &TestApp, customer_id: &str, event_id: &str) -> anyhow::Result<()> {
    app.client
        .clone()
        .record_activity(pb::RecordActivityRequest {
            activity: Some(purchase(customer_id, event_id, 500)),
            customer_identity: None,
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_merge_is_atomic_moves_everything_and_reaches_the_feed() -> anyhow::Result<()> {
    // Arrange
    let app = spawn_app().await?;
    let stop = CancellationToken::new();
    let consumer = follow_feed(&app, &stop).await?;
    let mut client = app.client.clone();
    let source_email = unique_email("src");
    let mut source = customer(&source_email);
    source.tags = vec!["b2b".to_owned()];
    let source = create(&app, source).await?;
    let target = create(&app, customer(&unique_email("tgt"))).await?;
    record(&app, &source.customer_id, "m-1").await?;
    record(&app, &source.customer_id, "m-2").await?;
    let merge = pb::MergeCustomersRequest {
        source_customer_id: source.customer_id.clone(),
        target_customer_id: target.customer_id.clone(),
        merge_reason: "same person, confirmed by agent".to_owned(),
        ..Default::default()
    };

    // Act 1: a step of the merge fails (the merge record cannot be written).
    sabotage(&app, "merges", "BEFORE INSERT").await?;
    let failed = client.merge_customers(merge.clone()).await;

    // Assert 1: nothing changed.
    expect_code(failed, Code::Internal)?;
    let still = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: source.customer_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        still.customer.as_ref().map(|c| c.state),
        Some(pb::CustomerState::Active as i32)
    );
    assert_eq!(still.customer.as_ref().map(|c| c.identities.len()), Some(1));
    let on_source: i64 =
        sqlx::query_scalar("SELECT count(*) FROM activities WHERE customer_id = $1::uuid")
            .bind(&source.customer_id)
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(on_source, 2);
    let merged_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE type = 'custops.profiles.v1.CustomerMerged'",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(merged_events, 0);

    // Act 2: repaired, the merge goes through.
    repair(&app, "merges").await?;
    let merged = client.merge_customers(merge.clone()).await?.into_inner();

    // Assert 2
    let survivor = merged.customer.unwrap_or_default();
    assert_eq!(survivor.tags, ["b2b", "vip"]);
    assert_eq!(survivor.identities.len(), 2);
    let merge_record = merged.merge_record.unwrap_or_default();
    assert_eq!(merge_record.moved_activity_count, 2);
    assert_eq!(merge_record.moved_identity_count, 1);
    let via_source = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: source.customer_id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(
        via_source.customer.map(|c| c.customer_id),
        Some(target.customer_id.clone())
    );
    assert_eq!(via_source.merged_from_customer_id, source.customer_id);
    let looked_up = client
        .lookup_customer(pb::LookupCustomerRequest {
            identity: Some(identity(pb::IdentityType::Email, &source_email)),
        })
        .await?
        .into_inner();
    assert_eq!(
        looked_up.customer.map(|c| c.customer_id),
        Some(target.customer_id.clone())
    );
    let timeline = client
        .list_activities(pb::ListActivitiesRequest {
            customer_id: target.customer_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(timeline.activities.len(), 2);
    // Edits of the tombstone are refused; activities naming it land on the target.
    let status = expect_code(
        client.merge_customers(merge).await,
        Code::FailedPrecondition,
    )?;
    assert_eq!(reason(&status).as_deref(), Some("CUSTOMER_MERGED"));
    record(&app, &source.customer_id, "m-3").await?;
    let timeline = client
        .list_activities(pb::ListActivitiesRequest {
            customer_id: target.customer_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(timeline.activities.len(), 3);
    assert!(
        until_seen(
            &consumer,
            "custops.profiles.v1.CustomerMerged",
            &target.customer_id
        )
        .await,
        "the consumer never saw CustomerMerged"
    );
    stop.cancel();
    Ok(())
}

#[tokio::test]
async fn an_erase_is_atomic_clears_personal_data_and_reaches_the_feed() -> anyhow::Result<()> {
    // Arrange
    let app = spawn_app().await?;
    let stop = CancellationToken::new();
    let consumer = follow_feed(&app, &stop).await?;
    let mut client = app.client.clone();
    let email = unique_email("erase");
    let c = create(&app, customer(&email)).await?;
    record(&app, &c.customer_id, "e-1").await?;
    let erase = pb::EraseCustomerRequest {
        customer_id: c.customer_id.clone(),
        request_id: String::new(),
    };

    // Act 1: the last step (turning the record into a tombstone) fails.
    sabotage(&app, "customers", "BEFORE UPDATE").await?;
    let failed = client.erase_customer(erase.clone()).await;

    // Assert 1: identities, activities and data are all still there.
    expect_code(failed, Code::Internal)?;
    let still = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: c.customer_id.clone(),
        })
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();
    assert_eq!(still, c);
    let activities: i64 = sqlx::query_scalar("SELECT count(*) FROM activities")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(activities, 1);
    let aggregates: i64 = sqlx::query_scalar("SELECT count(*) FROM erased_activity_aggregates")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(aggregates, 0);

    // Act 2
    repair(&app, "customers").await?;
    let erased = client
        .erase_customer(erase.clone())
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();
    let again = client
        .erase_customer(erase)
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();

    // Assert 2
    assert_eq!(erased.state, pb::CustomerState::Erased as i32);
    assert!(
        erased.identities.is_empty()
            && erased.given_name.is_empty()
            && erased.family_name.is_empty()
            && erased.tags.is_empty()
    );
    assert_eq!(erased, again);
    expect_code(
        client
            .lookup_customer(pb::LookupCustomerRequest {
                identity: Some(identity(pb::IdentityType::Email, &email)),
            })
            .await,
        Code::NotFound,
    )?;
    let activities: i64 = sqlx::query_scalar("SELECT count(*) FROM activities")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(activities, 0);
    let kept: i64 =
        sqlx::query_scalar("SELECT sum(activity_count)::bigint FROM erased_activity_aggregates")
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(kept, 1);
    // The identity is free again.
    create(&app, customer(&email)).await?;
    assert!(
        until_seen(
            &consumer,
            "custops.profiles.v1.CustomerErased",
            &c.customer_id
        )
        .await,
        "the consumer never saw CustomerErased"
    );
    stop.cancel();
    Ok(())
}

#[tokio::test]
async fn merge_and_erase_refuse_bad_requests() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let a = create(&app, customer(&unique_email("a"))).await?;
    let same = pb::MergeCustomersRequest {
        source_customer_id: a.customer_id.clone(),
        target_customer_id: a.customer_id.clone(),
        survivorship_choices: vec![
            pb::SurvivorshipChoice {
                field_path: "shoe_size".to_owned(),
                winner: pb::MergeWinner::Source as i32,
            },
            pb::SurvivorshipChoice {
                field_path: "given_name".to_owned(),
                winner: pb::MergeWinner::Union as i32,
            },
        ],
        ..Default::default()
    };
    let status = expect_code(client.merge_customers(same).await, Code::InvalidArgument)?;
    assert_eq!(
        crate::support::bad_fields(&status),
        [
            "target_customer_id",
            "survivorship_choices[0].field_path",
            "survivorship_choices[1].winner"
        ]
    );
    let unknown = pb::MergeCustomersRequest {
        source_customer_id: uuid::Uuid::now_v7().to_string(),
        target_customer_id: a.customer_id.clone(),
        ..Default::default()
    };
    expect_code(client.merge_customers(unknown).await, Code::NotFound)?;
    expect_code(
        client
            .erase_customer(pb::EraseCustomerRequest {
                customer_id: uuid::Uuid::now_v7().to_string(),
                request_id: String::new(),
            })
            .await,
        Code::NotFound,
    )?;
    expect_code(
        client
            .erase_customer(pb::EraseCustomerRequest {
                customer_id: "x".to_owned(),
                request_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
    )?;
    Ok(())
}

#[tokio::test]
async fn duplicates_are_found_and_the_export_holds_everything() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let local = uuid::Uuid::new_v4().simple().to_string();
    let a = create(&app, customer(&format!("li.wei.{local}+shop@gmail.com"))).await?;
    let b = create(&app, customer(&format!("liwei{local}@gmail.com"))).await?;
    let mut unrelated = customer(&unique_email("zz"));
    unrelated.given_name = "Ana".to_owned();
    let _unrelated = create(&app, unrelated).await?;
    record(&app, &a.customer_id, "x-1").await?;

    let found = client
        .find_duplicate_customers(pb::FindDuplicateCustomersRequest {
            customer_id: a.customer_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let export = client
        .export_customer(pb::ExportCustomerRequest {
            customer_id: a.customer_id.clone(),
            section_timeout: None,
        })
        .await?
        .into_inner();

    let candidates: Vec<String> = found
        .candidates
        .iter()
        .filter_map(|c| c.customer.as_ref().map(|c| c.customer_id.clone()))
        .collect();
    assert_eq!(candidates, std::slice::from_ref(&b.customer_id));
    assert_eq!(
        found.candidates[0].matches[0].rule,
        pb::DuplicateMatchRule::EmailCanonical as i32
    );
    assert!(found.candidates[0].score >= 0.8);
    let export = export.customer_export.unwrap_or_default();
    assert_eq!(
        export.customer.map(|c| c.customer_id),
        Some(a.customer_id.clone())
    );
    assert_eq!(export.activities.len(), 1);
    expect_code(
        client
            .export_customer(pb::ExportCustomerRequest {
                customer_id: uuid::Uuid::now_v7().to_string(),
                section_timeout: None,
            })
            .await,
        Code::NotFound,
    )?;
    Ok(())
}

#[tokio::test]
async fn an_unmerge_separates_the_customers_again() -> anyhow::Result<()> {
    // Arrange: a merge that gave the target the source's display name, tags and identity.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let source_email = unique_email("un-src");
    let mut source = customer(&source_email);
    source.display_name = "From Source".to_owned();
    source.tags = vec!["b2b".to_owned()];
    let source = create(&app, source).await?;
    let target = create(&app, customer(&unique_email("un-tgt"))).await?;
    record(&app, &source.customer_id, "u-before").await?;
    let merged = client
        .merge_customers(pb::MergeCustomersRequest {
            source_customer_id: source.customer_id.clone(),
            target_customer_id: target.customer_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let merge_id = merged.merge_record.map(|m| m.merge_id).unwrap_or_default();
    assert_eq!(
        merged.customer.as_ref().map(|c| c.display_name.as_str()),
        Some("From Source")
    );
    // After the merge: an activity naming the source id lands on the target and stays there.
    record(&app, &source.customer_id, "u-after").await?;

    // Act
    let undone = client
        .unmerge_customer(pb::UnmergeCustomerRequest {
            merge_id: merge_id.clone(),
            unmerge_reason: "wrong match".to_owned(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let again = client
        .unmerge_customer(pb::UnmergeCustomerRequest {
            merge_id: merge_id.clone(),
            ..Default::default()
        })
        .await;

    // Assert
    let restored = undone.source_customer.unwrap_or_default();
    let separated = undone.target_customer.unwrap_or_default();
    assert_eq!(restored.state, pb::CustomerState::Active as i32);
    assert_eq!(restored.tags, ["b2b"]);
    assert_eq!(
        restored
            .identities
            .iter()
            .map(|i| i.value.clone())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&source_email)
    );
    assert_eq!(separated.display_name, "");
    assert_eq!(separated.tags, ["vip"]);
    assert_eq!(separated.identities.len(), 1);
    let on = |id: String| {
        let mut client = client.clone();
        async move {
            let listed = client
                .list_activities(pb::ListActivitiesRequest {
                    customer_id: id,
                    ..Default::default()
                })
                .await?
                .into_inner();
            anyhow::Ok(
                listed
                    .activities
                    .into_iter()
                    .map(|a| a.event_id)
                    .collect::<Vec<_>>(),
            )
        }
    };
    assert_eq!(on(source.customer_id.clone()).await?, ["u-before"]);
    assert_eq!(on(target.customer_id.clone()).await?, ["u-after"]);
    let status = expect_code(again, Code::FailedPrecondition)?;
    assert_eq!(reason(&status).as_deref(), Some("ALREADY_UNMERGED"));
    let merges = client
        .list_merges(pb::ListMergesRequest {
            customer_id: source.customer_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        merges
            .merge_records
            .iter()
            .map(|m| m.state)
            .collect::<Vec<_>>(),
        [pb::MergeState::Unmerged as i32]
    );
    assert_eq!(merges.merge_records[0].unmerge_reason, "wrong match");
    let events = crate::support::outbox_types(&app, &target.customer_id).await?;
    assert!(
        events
            .iter()
            .any(|t| t == "custops.profiles.v1.CustomerUnmerged"),
        "{events:?}"
    );
    expect_code(
        client
            .unmerge_customer(pb::UnmergeCustomerRequest {
                merge_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    )?;
    Ok(())
}

/// The parts of a customer a merge decides: everything but the clock.
fn merged_shape(c: &pb::Customer) -> pb::Customer {
    let mut shape = c.clone();
    shape.update_time = None;
    for consent in &mut shape.consents {
        consent.record_time = None;
    }
    for identity in &mut shape.identities {
        identity.create_time = None;
    }
    shape
}

#[tokio::test]
async fn a_merge_preview_is_the_customer_the_merge_produces_and_writes_nothing()
-> anyhow::Result<()> {
    // Arrange: the source brings an identity, a consent on a channel the target lacks, a
    // display name and an activity.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let mut source = customer(&unique_email("pv-src"));
    source.display_name = "From Source".to_owned();
    source
        .identities
        .push(identity(pb::IdentityType::Phone, "+8613800138000"));
    source.consents = vec![pb::Consent {
        channel: custops_contracts::custops::common::v1::ContactChannel::Sms as i32,
        status: pb::ConsentStatus::Granted as i32,
        source: "checkout_form".to_owned(),
        ..Default::default()
    }];
    let source = create(&app, source).await?;
    let target = create(&app, customer(&unique_email("pv-tgt"))).await?;
    record(&app, &source.customer_id, "pv-1").await?;
    let merge = pb::MergeCustomersRequest {
        source_customer_id: source.customer_id.clone(),
        target_customer_id: target.customer_id.clone(),
        ..Default::default()
    };

    // Act 1: the preview.
    let preview = client
        .merge_customers(pb::MergeCustomersRequest {
            validate_only: true,
            ..merge.clone()
        })
        .await?
        .into_inner();

    // Assert 1: nothing written — the source is still active with its identities, no event.
    let still = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: source.customer_id.clone(),
        })
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();
    assert_eq!(still.state, pb::CustomerState::Active as i32);
    assert_eq!(still.identities.len(), 2);
    assert!(
        !crate::support::outbox_types(&app, &target.customer_id)
            .await?
            .iter()
            .any(|t| t.ends_with("CustomerMerged"))
    );
    let record = preview.merge_record.unwrap_or_default();
    assert_eq!(record.merge_id, "");
    assert_eq!(record.moved_identity_count, 2);
    assert_eq!(record.moved_activity_count, 1);

    // Act 2: the real merge.
    let merged = client.merge_customers(merge).await?.into_inner();

    // Assert 2: the preview was exactly that customer (identities and consent included).
    let preview = preview.customer.unwrap_or_default();
    let merged = merged.customer.unwrap_or_default();
    assert_eq!(preview.identities.len(), 3, "{:?}", preview.identities);
    assert_eq!(preview.consents.len(), 1);
    assert_eq!(merged_shape(&preview), merged_shape(&merged));
    Ok(())
}

#[tokio::test]
async fn erasing_the_source_after_an_unmerge_leaves_nothing_of_it_on_the_target()
-> anyhow::Result<()> {
    // Arrange: S (with an activity and a consent) merged into T, then unmerged.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let source_email = unique_email("mue-src");
    let mut source = customer(&source_email);
    source.display_name = "Source Person".to_owned();
    source.consents = vec![pb::Consent {
        channel: custops_contracts::custops::common::v1::ContactChannel::Email as i32,
        status: pb::ConsentStatus::Granted as i32,
        source: "checkout_form".to_owned(),
        ..Default::default()
    }];
    let source = create(&app, source).await?;
    let target_email = unique_email("mue-tgt");
    let target = create(&app, customer(&target_email)).await?;
    record(&app, &source.customer_id, "mue-s").await?;
    record(&app, &target.customer_id, "mue-t").await?;
    let merge_id = client
        .merge_customers(pb::MergeCustomersRequest {
            source_customer_id: source.customer_id.clone(),
            target_customer_id: target.customer_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .merge_record
        .map(|m| m.merge_id)
        .unwrap_or_default();
    client
        .unmerge_customer(pb::UnmergeCustomerRequest {
            merge_id,
            ..Default::default()
        })
        .await?;

    // Act
    client
        .erase_customer(pb::EraseCustomerRequest {
            customer_id: source.customer_id.clone(),
            request_id: String::new(),
        })
        .await?;

    // Assert: S is a tombstone; T holds only its own identity, activity and consents, and
    // nothing in T's export names S's e-mail, name or activity.
    let erased = client
        .get_customer(pb::GetCustomerRequest {
            customer_id: source.customer_id.clone(),
        })
        .await?
        .into_inner()
        .customer
        .unwrap_or_default();
    assert_eq!(erased.state, pb::CustomerState::Erased as i32);
    assert!(erased.identities.is_empty() && erased.display_name.is_empty());
    let export = client
        .export_customer(pb::ExportCustomerRequest {
            customer_id: target.customer_id.clone(),
            section_timeout: None,
        })
        .await?
        .into_inner()
        .customer_export
        .unwrap_or_default();
    let identities: Vec<String> = export
        .customer
        .iter()
        .flat_map(|c| c.identities.iter().map(|i| i.value.clone()))
        .collect();
    assert_eq!(identities, [target_email]);
    let activities: Vec<&str> = export
        .activities
        .iter()
        .map(|a| a.event_id.as_str())
        .collect();
    assert_eq!(activities, ["mue-t"]);
    let text = format!("{export:?}");
    for personal in [source_email.as_str(), "Source Person", "mue-s"] {
        assert!(
            !text.contains(personal),
            "T's export holds {personal}: {text}"
        );
    }
    Ok(())
}
