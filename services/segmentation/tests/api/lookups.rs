//! Lookups through the gRPC API with a Redis this test starts itself: answers come through
//! the cache, membership changes are written through to Redis after commit; with Redis
//! stopped answers still come (from Postgres) and reflect changes made meanwhile; once Redis
//! is back it is filled again and never serves a stale membership. The same holds on a Redis
//! Cluster whose master dies and is replaced by its replica.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::helpers::{TestApp, country_is, eventually, spawn_app, spawn_app_with};
use custops_common::cache::{CacheValue, RedisCache, RedisSettings};
use custops_contracts::custops::segmentation::v1 as pb;
use custops_segmentation::lookups::SegmentSet;
use custops_segmentation::wire::timestamp;
use custops_testkit::redis::TestRedis;
use custops_testkit::redis_cluster::TestRedisCluster;
use futures_util::StreamExt;
use tonic::Code;

/// The cache epoch Postgres holds (every replica's keys start with it).
async fn epoch(app: &TestApp) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM membership_cache_epoch",
    )
    .fetch_one(&app.pool)
    .await?)
}

/// What Redis holds for a customer's segments under the current epoch, if anything.
async fn cached(app: &TestApp, redis: &RedisCache, customer: &str) -> Option<Vec<String>> {
    let epoch = epoch(app).await.ok()?;
    let key = format!("custops:segmentation:customer_segments:v2:{epoch}:{customer}");
    let bytes = redis.get(&key).await.ok()??;
    SegmentSet::from_bytes(&bytes)
        .ok()
        .map(|set| set.0.iter().map(ToString::to_string).collect())
}

#[tokio::test]
async fn lookups_survive_a_redis_outage_and_serve_nothing_stale_after() -> anyhow::Result<()> {
    let mut server = TestRedis::start().await?;
    let app = spawn_app_with(Some(server.url())).await?;
    let redis = RedisCache::connect(&RedisSettings::new(&server.url())).await?;
    app.put_customer("c1", "CN", &[]).await?;
    app.put_customer("c2", "SG", &[]).await?;
    let china = app.rule_segment("China", country_is("CN")).await?;
    let id = china.segment_id.clone();

    // Healthy: answers, and the answer is in Redis.
    assert_eq!(app.segments_of("c1").await?, vec![id.clone()]);
    assert!(app.is_member(&id, "c1").await?);
    assert!(!app.is_member(&id, "c2").await?);
    assert!(app.segments_of("stranger").await?.is_empty());
    assert!(!app.is_member(&id, "stranger").await?);
    assert_eq!(cached(&app, &redis, "c1").await, Some(vec![id.clone()]));
    // A change is written through to Redis after commit, without any lookup.
    app.put_customer("c3", "CN", &[]).await?;
    app.reevaluate("c3").await?;
    assert!(
        eventually(Duration::from_secs(2), || async {
            cached(&app, &redis, "c3").await == Some(vec![id.clone()])
        })
        .await,
        "c3's new membership never reached Redis"
    );

    // Redis stops: lookups answer from Postgres and see changes made meanwhile. (How fast
    // they answer without Redis is the bench's to measure.)
    server.stop().await?;
    let before_outage = epoch(&app).await?;
    assert_eq!(app.segments_of("c1").await?, vec![id.clone()]);
    app.put_customer("c1", "SG", &[]).await?;
    app.reevaluate("c1").await?;
    app.put_customer("c2", "CN", &[]).await?;
    app.reevaluate("c2").await?;
    assert!(
        eventually(Duration::from_secs(3), || async {
            app.segments_of("c1").await.ok() == Some(Vec::new())
                && app.is_member(&id, "c2").await.ok() == Some(true)
        })
        .await,
        "lookups did not reflect the change made while Redis was down"
    );
    let size = app
        .client
        .clone()
        .get_segment_size(pb::GetSegmentSizeRequest {
            segment_id: id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(size.member_count, 2);

    // Redis returns (empty): the write-throughs it missed move the replica to fresh keys once
    // it answers again, those are filled from Postgres, and nothing stale is served.
    server.restart().await?;
    assert!(
        eventually(Duration::from_secs(5), || async {
            epoch(&app).await.is_ok_and(|now| now > before_outage)
                && app.segments_of("c1").await.ok() == Some(Vec::new())
                && app.segments_of("c2").await.ok() == Some(vec![id.clone()])
                && cached(&app, &redis, "c1").await == Some(Vec::new())
                && cached(&app, &redis, "c2").await == Some(vec![id.clone()])
        })
        .await,
        "Redis was not filled again with the current memberships"
    );
    for _ in 0..5 {
        assert!(!app.is_member(&id, "c1").await?);
        assert!(app.is_member(&id, "c2").await?);
    }
    Ok(())
}

/// Makes Redis stop answering clients for `millis` while keeping its data, as a network
/// partition would (`CLIENT PAUSE`).
async fn pause_redis(port: u16, millis: u64) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let arg = millis.to_string();
    let command = format!(
        "*3\r\n$6\r\nCLIENT\r\n$5\r\nPAUSE\r\n${}\r\n{arg}\r\n",
        arg.len()
    );
    stream.write_all(command.as_bytes()).await?;
    let mut reply = [0_u8; 5];
    stream.read_exact(&mut reply).await?;
    anyhow::ensure!(&reply == b"+OK\r\n", "CLIENT PAUSE refused");
    Ok(())
}

#[tokio::test]
async fn a_write_through_missed_during_a_partition_never_surfaces_later() -> anyhow::Result<()> {
    let server = TestRedis::start().await?;
    let app = spawn_app_with(Some(server.url())).await?;
    app.put_customer("c1", "CN", &[]).await?;
    let china = app.rule_segment("China", country_is("CN")).await?;
    let id = china.segment_id.clone();
    assert_eq!(app.segments_of("c1").await?, vec![id.clone()]);

    // Redis keeps its data but stops answering; the change's write-through cannot reach it.
    let redis = RedisCache::connect(&RedisSettings::new(&server.url())).await?;
    pause_redis(server.port(), 1_500).await?;
    app.put_customer("c1", "SG", &[]).await?;
    app.reevaluate("c1").await?;
    // The change shows once the replica has applied its notification...
    assert!(
        eventually(Duration::from_secs(5), || async {
            app.segments_of("c1")
                .await
                .is_ok_and(|listed| listed.is_empty())
        })
        .await,
        "the change never showed"
    );
    // ... and from then on answers stay right, during the partition and after Redis answers
    // again with its old value, until Redis holds nothing stale under the keys in use (the
    // replica moved past what Redis kept).
    let stale = AtomicBool::new(false);
    let settled = eventually(Duration::from_secs(10), || async {
        if !app
            .segments_of("c1")
            .await
            .is_ok_and(|listed| listed.is_empty())
        {
            stale.store(true, Ordering::Relaxed);
        }
        redis.ping().await.is_ok()
            && cached(&app, &redis, "c1")
                .await
                .is_none_or(|held| held.is_empty())
    })
    .await;
    assert!(
        !stale.load(Ordering::Relaxed),
        "a stale membership was served"
    );
    assert!(
        settled,
        "Redis kept a stale membership under the keys in use"
    );
    assert!(app.segments_of("c1").await?.is_empty());
    let size = app
        .client
        .clone()
        .get_segment_size(pb::GetSegmentSizeRequest {
            segment_id: id.clone(),
        })
        .await?
        .into_inner();
    assert_eq!(size.member_count, 0);
    Ok(())
}

/// A batch naming a customer twice that no cache holds yet answers both the same, and fills
/// the cache with the customer's real segments (it answered the second false and cached an
/// empty set: `sets.remove` on the first occurrence).
#[tokio::test]
async fn a_customer_named_twice_in_an_uncached_batch_is_answered_twice() -> anyhow::Result<()> {
    // Arrange: the membership written straight into Postgres, so no write-through has put
    // the customer into any cache.
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    let china = app.rule_segment("China", country_is("CN")).await?;
    sqlx::query(
        "INSERT INTO memberships (segment_id, customer_id, segment_version, enter_time, \
           enter_reason) VALUES ($1::uuid, 'twice', 1, now(), 'recompute')",
    )
    .bind(&china.segment_id)
    .execute(&app.pool)
    .await?;
    let request = pb::BatchCheckMembershipRequest {
        segment_id: china.segment_id.clone(),
        customer_ids: vec!["twice".into(), "twice".into(), "nobody".into()],
    };

    // Act: uncached, then from what the first call cached.
    let first = client
        .batch_check_membership(request.clone())
        .await?
        .into_inner();
    let second = client.batch_check_membership(request).await?.into_inner();

    // Assert
    assert_eq!(first.is_member, vec![true, true, false]);
    assert_eq!(second.is_member, vec![true, true, false]);
    Ok(())
}

#[tokio::test]
async fn check_batch_stream_and_size() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    for i in 0..7 {
        app.put_customer(&format!("c{i}"), if i % 2 == 0 { "CN" } else { "SG" }, &[])
            .await?;
    }
    let china = app.rule_segment("China", country_is("CN")).await?;
    let id = china.segment_id.clone();

    let batch = client
        .batch_check_membership(pb::BatchCheckMembershipRequest {
            segment_id: id.clone(),
            customer_ids: vec!["c0".into(), "c1".into(), "c0".into(), "nobody".into()],
        })
        .await?
        .into_inner();
    assert_eq!(batch.is_member, vec![true, false, true, false]);
    // The batch kept what it read in the cache; changes after it are still answered (the
    // write-through replaces what the batch kept).
    app.put_customer("c0", "SG", &[]).await?;
    app.put_customer("c1", "CN", &[]).await?;
    app.reevaluate("c0").await?;
    app.reevaluate("c1").await?;
    let followed = eventually(Duration::from_secs(5), || {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            client
                .batch_check_membership(pb::BatchCheckMembershipRequest {
                    segment_id: id,
                    customer_ids: vec!["c0".into(), "c1".into()],
                })
                .await
                .is_ok_and(|r| r.into_inner().is_member == vec![false, true])
        }
    })
    .await;
    assert!(
        followed,
        "the batch answers stayed on what an earlier batch read"
    );
    app.put_customer("c0", "CN", &[]).await?;
    app.put_customer("c1", "SG", &[]).await?;
    app.reevaluate("c0").await?;
    app.reevaluate("c1").await?;
    let filtered = client
        .list_customer_segments(pb::ListCustomerSegmentsRequest {
            customer_id: "c0".to_owned(),
            segment_ids: vec!["0190f6f5-0000-7000-8000-000000000000".to_owned()],
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(filtered.segment_ids.is_empty());

    // Stream in batches of 2, break after the first, resume with its token.
    let mut stream = client
        .stream_segment_members(pb::StreamSegmentMembersRequest {
            segment_id: id.clone(),
            resume_token: String::new(),
            batch_size: 2,
        })
        .await?
        .into_inner();
    let first = stream
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("empty stream"))??;
    drop(stream);
    assert_eq!(first.customer_ids, vec!["c0", "c2"]);
    let rest: Vec<pb::StreamSegmentMembersResponse> = client
        .stream_segment_members(pb::StreamSegmentMembersRequest {
            segment_id: id.clone(),
            resume_token: first.resume_token.clone(),
            batch_size: 2,
        })
        .await?
        .into_inner()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let ids: Vec<String> = rest.into_iter().flat_map(|b| b.customer_ids).collect();
    assert_eq!(ids, vec!["c4", "c6"]);

    // A token of another segment is refused; a missing segment is NOT_FOUND.
    let other = app.rule_segment("Singapore", country_is("SG")).await?;
    let foreign = client
        .stream_segment_members(pb::StreamSegmentMembersRequest {
            segment_id: other.segment_id.clone(),
            resume_token: first.resume_token,
            batch_size: 2,
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(foreign, Some(Code::InvalidArgument));
    let missing = client
        .get_segment_size(pb::GetSegmentSizeRequest {
            segment_id: "0190f6f5-0000-7000-8000-000000000000".to_owned(),
        })
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(missing, Some(Code::NotFound));

    // ExplainMembership (which takes profiles ids, UUIDs): stored and evaluated agree, with the
    // node's result.
    let profiles_id = "0190f6f5-0000-7000-8000-0000000000c2";
    app.put_customer(profiles_id, "CN", &[]).await?;
    app.reevaluate(profiles_id).await?;
    let explained = client
        .explain_membership(pb::ExplainMembershipRequest {
            segment_id: id.clone(),
            customer_id: profiles_id.to_owned(),
        })
        .await?
        .into_inner();
    assert!(explained.member && explained.rule_result);
    assert_eq!(explained.enter_reason, i32::from(pb::ChangeReason::Event));
    assert_eq!(explained.explanation.map(|e| e.result), Some(true));
    Ok(())
}

#[tokio::test]
async fn the_full_view_names_each_membership_with_kind_and_enter_time() -> anyhow::Result<()> {
    let app = spawn_app().await?;
    let mut client = app.client.clone();
    app.put_customer("c1", "CN", &[]).await?;
    app.put_customer("c2", "SG", &[]).await?;
    let china = app.rule_segment("China", country_is("CN")).await?;
    let recomputed_at = app.clock_now();
    app.clock.advance(chrono::Duration::minutes(5));
    let list = app.static_segment("Hand-picked").await?;
    client
        .upload_static_members(tokio_stream::iter(vec![pb::UploadStaticMembersRequest {
            segment_id: list.segment_id.clone(),
            mode: pb::StaticUploadMode::Add.into(),
            customer_ids: vec!["c1".to_owned()],
            ..Default::default()
        }]))
        .await?;
    let uploaded_at = app.clock_now();
    let ask = |view: pb::CustomerSegmentsView, only: Vec<String>| pb::ListCustomerSegmentsRequest {
        customer_id: "c1".to_owned(),
        segment_ids: only,
        view: view.into(),
    };

    let full = client
        .list_customer_segments(ask(pb::CustomerSegmentsView::Full, Vec::new()))
        .await?
        .into_inner();
    let mut expected = vec![
        pb::CustomerSegmentMembership {
            segment_id: china.segment_id.clone(),
            display_name: "China".to_owned(),
            kind: pb::SegmentKind::Rule.into(),
            enter_time: Some(timestamp(recomputed_at)),
        },
        pb::CustomerSegmentMembership {
            segment_id: list.segment_id.clone(),
            display_name: "Hand-picked".to_owned(),
            kind: pb::SegmentKind::Static.into(),
            enter_time: Some(timestamp(uploaded_at)),
        },
    ];
    expected.sort_by(|a, b| a.segment_id.cmp(&b.segment_id));
    let ids: Vec<String> = expected.iter().map(|m| m.segment_id.clone()).collect();
    assert_eq!(full.segment_ids, ids, "ascending ids");
    assert_eq!(full.memberships, expected, "one entry per id, same order");

    // A renamed segment shows its name at the time of the call.
    client
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(pb::Segment {
                segment_id: list.segment_id.clone(),
                display_name: "VIP list".to_owned(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".to_owned()],
            }),
            validate_only: false,
        })
        .await?;
    let only_list = client
        .list_customer_segments(ask(
            pb::CustomerSegmentsView::Full,
            vec![list.segment_id.clone()],
        ))
        .await?
        .into_inner();
    assert_eq!(only_list.segment_ids, vec![list.segment_id.clone()]);
    let names: Vec<&str> = only_list
        .memberships
        .iter()
        .map(|m| m.display_name.as_str())
        .collect();
    assert_eq!(names, vec!["VIP list"]);

    // IDS and UNSPECIFIED: the ids alone, from the hot path.
    for view in [
        pb::CustomerSegmentsView::Ids,
        pb::CustomerSegmentsView::Unspecified,
    ] {
        let ids_only = client
            .list_customer_segments(ask(view, Vec::new()))
            .await?
            .into_inner();
        assert_eq!(ids_only.segment_ids, ids);
        assert!(ids_only.memberships.is_empty());
    }
    // A customer without memberships: empty lists in FULL too.
    let none = client
        .list_customer_segments(pb::ListCustomerSegmentsRequest {
            customer_id: "c2".to_owned(),
            view: pb::CustomerSegmentsView::Full.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(none.segment_ids.is_empty() && none.memberships.is_empty());

    // An unknown view value is refused, naming the field along with the others.
    let unknown = client
        .list_customer_segments(pb::ListCustomerSegmentsRequest {
            customer_id: String::new(),
            segment_ids: Vec::new(),
            view: 7,
        })
        .await
        .err()
        .map(|s| crate::helpers::fields(&s));
    assert_eq!(
        unknown,
        Some(vec!["customer_id".to_owned(), "view".to_owned()])
    );
    Ok(())
}

#[tokio::test]
async fn on_a_redis_cluster_a_master_failover_serves_no_stale_membership() -> anyhow::Result<()> {
    let mut cluster = TestRedisCluster::start().await?;
    let app = spawn_app_with(Some(cluster.url())).await?;
    let redis = RedisCache::connect(&RedisSettings::new(&cluster.url())).await?;
    let customers: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
    for customer in &customers {
        app.put_customer(customer, "CN", &[]).await?;
    }
    let china = app.rule_segment("China", country_is("CN")).await?;
    let id = china.segment_id.clone();
    for customer in &customers {
        assert_eq!(app.segments_of(customer).await?, vec![id.clone()]);
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            cached(&app, &redis, "c0").await == Some(vec![id.clone()])
        })
        .await,
        "c0's membership never reached the cluster"
    );

    // The master holding c0's key dies; memberships change while its replica takes over.
    let key = format!(
        "custops:segmentation:customer_segments:v2:{}:c0",
        epoch(&app).await?
    );
    let victim = cluster.master_of(&key).await?;
    let before = epoch(&app).await?;
    cluster.kill(victim).await?;
    for customer in &customers[..6] {
        app.put_customer(customer, "SG", &[]).await?;
        app.reevaluate(customer).await?;
    }
    let expected = |i: usize| if i < 6 { Vec::new() } else { vec![id.clone()] };
    let all_current = || async {
        for (i, customer) in customers.iter().enumerate() {
            if app.segments_of(customer).await.ok() != Some(expected(i)) {
                return false;
            }
        }
        true
    };
    assert!(
        eventually(Duration::from_secs(5), all_current).await,
        "lookups did not reflect the changes made during the failover"
    );
    cluster.wait_for_failover(victim).await?;

    // Once every master answers, the missed write-throughs move the epoch; the cluster is
    // filled with current memberships and nothing stale is served.
    assert!(
        eventually(Duration::from_secs(10), || async {
            epoch(&app).await.is_ok_and(|now| now > before)
                && all_current().await
                && cached(&app, &redis, "c0").await == Some(Vec::new())
                && cached(&app, &redis, "c11").await == Some(vec![id.clone()])
        })
        .await,
        "the cluster was not filled again with the current memberships"
    );
    for _ in 0..3 {
        assert!(all_current().await, "a stale membership after the failover");
    }
    Ok(())
}
