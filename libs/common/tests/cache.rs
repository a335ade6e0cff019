//! The two-level cache against a real Redis: values come from the in-process layer, then
//! Redis, then the loader; writes go through; and with Redis stopped or hung the loader
//! answers, quickly, and the failure is counted instead of returned.
//!
//! Every test runs a `redis-server` of its own (`TestRedis`), so stopping it never touches the
//! machine's shared Redis.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use custops_common::cache::{RedisCache, RedisSettings, TwoLevelCache};
use custops_testkit::redis::TestRedis;

const LONG: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_millis(300);
/// Scheduling slack allowed on top of the Redis timeout before a call counts as slow.
const SLACK: Duration = Duration::from_millis(250);

/// A source of truth that counts how often it is asked.
#[derive(Clone, Default)]
struct Source {
    loads: Arc<AtomicUsize>,
}

impl Source {
    async fn load(&self, value: &str) -> Result<String, Infallible> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Ok(value.to_owned())
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

async fn redis_client(url: &str) -> anyhow::Result<RedisCache> {
    let settings = RedisSettings {
        timeout: TIMEOUT,
        ..RedisSettings::new(url)
    };
    Ok(RedisCache::connect(&settings).await?)
}

fn cache(redis: &RedisCache, local_ttl: Duration) -> TwoLevelCache<String> {
    TwoLevelCache::new(Some(redis.clone()), local_ttl, 100, "test:customers")
}

#[tokio::test]
async fn a_value_is_loaded_once_then_served_from_local_then_from_redis() -> anyhow::Result<()> {
    let server = TestRedis::start().await?;
    let redis = redis_client(&server.url()).await?;
    let source = Source::default();
    let first = cache(&redis, LONG);

    let loaded = first.get_or_load("c1", LONG, || source.load("Ada")).await?;
    let again = first
        .get_or_load("c1", LONG, || source.load("changed"))
        .await?;
    assert_eq!(
        (loaded.as_str(), again.as_str(), source.loads()),
        ("Ada", "Ada", 1)
    );

    // Another replica (an empty in-process layer) finds the value in Redis.
    let replica = cache(&redis, LONG);
    assert_eq!(replica.local_len(), 0);
    let from_redis = replica
        .get_or_load("c1", LONG, || source.load("changed"))
        .await?;
    assert_eq!((from_redis.as_str(), source.loads()), ("Ada", 1));
    assert_eq!(replica.local_len(), 1);

    // Once the in-process copy expires, Redis answers again: still no load.
    let short = cache(&redis, Duration::from_millis(30));
    short
        .get_or_load("c1", LONG, || source.load("changed"))
        .await?;
    tokio::time::sleep(Duration::from_millis(60)).await;
    let after_expiry = short
        .get_or_load("c1", LONG, || source.load("changed"))
        .await?;
    assert_eq!((after_expiry.as_str(), source.loads()), ("Ada", 1));

    assert_eq!(
        first.redis_errors() + replica.redis_errors() + short.redis_errors(),
        0
    );
    Ok(())
}

#[tokio::test]
async fn the_redis_ttl_is_applied() -> anyhow::Result<()> {
    let server = TestRedis::start().await?;
    let redis = redis_client(&server.url()).await?;
    let source = Source::default();
    // No in-process layer, so every read reaches Redis.
    let cache = TwoLevelCache::new(Some(redis.clone()), Duration::ZERO, 0, "test:ttl");

    cache
        .get_or_load("k", Duration::from_millis(100), || source.load("v"))
        .await?;
    assert!(redis.get(&cache.redis_key("k")).await?.is_some());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(redis.get(&cache.redis_key("k")).await?, None);
    cache
        .get_or_load("k", Duration::from_millis(100), || source.load("v"))
        .await?;
    assert_eq!(source.loads(), 2);
    Ok(())
}

#[tokio::test]
async fn put_writes_through_and_invalidate_removes_from_both_layers() -> anyhow::Result<()> {
    let server = TestRedis::start().await?;
    let redis = redis_client(&server.url()).await?;
    let source = Source::default();
    let writer = cache(&redis, LONG);
    let reader =
        TwoLevelCache::<String>::new(Some(redis.clone()), Duration::ZERO, 0, "test:customers");

    writer
        .get_or_load("c2", LONG, || source.load("old"))
        .await?;
    writer.put("c2", "new".to_owned(), LONG).await;
    let local = writer
        .get_or_load("c2", LONG, || source.load("source"))
        .await?;
    let remote = reader
        .get_or_load("c2", LONG, || source.load("source"))
        .await?;
    assert_eq!(
        (local.as_str(), remote.as_str(), source.loads()),
        ("new", "new", 1)
    );

    writer.invalidate("c2").await;
    assert_eq!(redis.get(&writer.redis_key("c2")).await?, None);
    let reloaded = writer
        .get_or_load("c2", LONG, || source.load("source"))
        .await?;
    assert_eq!((reloaded.as_str(), source.loads()), ("source", 2));
    assert_eq!(writer.redis_errors() + reader.redis_errors(), 0);
    Ok(())
}

#[tokio::test]
async fn a_fill_does_not_overwrite_a_newer_put() -> anyhow::Result<()> {
    let server = TestRedis::start().await?;
    let redis = redis_client(&server.url()).await?;
    let stale = TwoLevelCache::<String>::new(Some(redis.clone()), Duration::ZERO, 0, "test:race");
    let fresh = TwoLevelCache::<String>::new(Some(redis.clone()), Duration::ZERO, 0, "test:race");

    // The loader read the old row; a `put` of the new one lands before the fill.
    let value = stale
        .get_or_load("k", LONG, || async {
            fresh.put("k", "new".to_owned(), LONG).await;
            Ok::<_, Infallible>("old".to_owned())
        })
        .await?;
    assert_eq!(value, "old");
    // Redis kept the newer value: a reader (no in-process layer) gets it, not the source's.
    let seen = fresh
        .get_or_load("k", LONG, || async {
            Ok::<_, Infallible>("source".to_owned())
        })
        .await?;
    assert_eq!(seen, "new");
    Ok(())
}

#[tokio::test]
async fn a_value_that_does_not_decode_is_counted_and_replaced() -> anyhow::Result<()> {
    let server = TestRedis::start().await?;
    let redis = redis_client(&server.url()).await?;
    let source = Source::default();
    let cache = TwoLevelCache::<String>::new(Some(redis.clone()), Duration::ZERO, 0, "test:bad");

    // Not a valid protobuf encoding: field 1, length 200, then nothing.
    redis
        .set(&cache.redis_key("k"), &[0x0a, 0xc8, 0x01], LONG, false)
        .await?;
    let value = cache.get_or_load("k", LONG, || source.load("v")).await?;
    assert_eq!(
        (value.as_str(), source.loads(), cache.redis_errors()),
        ("v", 1, 1)
    );
    let again = cache.get_or_load("k", LONG, || source.load("v")).await?;
    assert_eq!(
        (again.as_str(), source.loads(), cache.redis_errors()),
        ("v", 1, 1)
    );
    Ok(())
}

#[tokio::test]
async fn with_redis_stopped_the_source_answers_quickly_and_the_error_is_counted()
-> anyhow::Result<()> {
    let mut server = TestRedis::start().await?;
    let redis = redis_client(&server.url()).await?;
    let source = Source::default();
    // No in-process layer: every read would go to Redis.
    let cache = TwoLevelCache::<String>::new(Some(redis.clone()), Duration::ZERO, 0, "test:down");
    cache.get_or_load("k", LONG, || source.load("v1")).await?;
    cache.get_or_load("k", LONG, || source.load("v1")).await?;
    assert_eq!(
        (source.loads(), cache.redis_errors()),
        (1, 0),
        "Redis was not used"
    );

    server.stop().await?;

    let started = Instant::now();
    let value = cache
        .get_or_load("k", LONG, || source.load("from source"))
        .await?;
    let first_call = started.elapsed();
    assert_eq!(value, "from source");
    assert_eq!(source.loads(), 2);
    assert!(cache.redis_errors() >= 1, "the failure was not counted");
    assert!(
        first_call < TIMEOUT + SLACK,
        "first call took {first_call:?}"
    );

    // Later calls, writes and invalidations also answer, none slower than the timeout.
    for i in 0..20 {
        let started = Instant::now();
        let value = cache
            .get_or_load("k", LONG, || source.load("from source"))
            .await?;
        cache.put("k", value.clone(), LONG).await;
        cache.invalidate("k").await;
        let took = started.elapsed();
        assert_eq!(value, "from source");
        assert!(took < TIMEOUT + SLACK, "call {i} took {took:?}");
    }
    assert_eq!(source.loads(), 22);
    Ok(())
}

#[tokio::test]
async fn when_redis_comes_back_the_cache_uses_it_again() -> anyhow::Result<()> {
    let mut server = TestRedis::start().await?;
    let redis = redis_client(&server.url()).await?;
    let source = Source::default();
    let cache = TwoLevelCache::<String>::new(Some(redis.clone()), Duration::ZERO, 0, "test:back");
    server.stop().await?;
    cache.get_or_load("k", LONG, || source.load("v")).await?;
    assert!(cache.redis_errors() >= 1);

    server.restart().await?;
    // The client reconnects by itself once the skip window after the failure has passed.
    let reconnected = custops_testkit::eventually(Duration::from_secs(10), || async {
        redis.ping().await.is_ok()
    })
    .await;
    assert!(reconnected, "the client did not reconnect");

    let errors = cache.redis_errors();
    cache.get_or_load("k", LONG, || source.load("v")).await?;
    let loads = source.loads();
    cache.get_or_load("k", LONG, || source.load("v")).await?;
    assert_eq!(
        source.loads(),
        loads,
        "the second read did not come from Redis"
    );
    assert_eq!(cache.redis_errors(), errors);
    Ok(())
}

#[tokio::test]
async fn a_hung_redis_costs_at_most_the_timeout() -> anyhow::Result<()> {
    // A "Redis" that accepts connections and never answers: the worst case, a black hole.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    // Connecting pings once: that costs one timeout, is logged, and does not fail.
    let started = Instant::now();
    let redis = redis_client(&format!("redis://127.0.0.1:{port}")).await?;
    let connecting = started.elapsed();
    assert!(
        connecting < TIMEOUT + SLACK,
        "connecting took {connecting:?}"
    );
    let source = Source::default();
    let cache = TwoLevelCache::<String>::new(Some(redis), Duration::ZERO, 0, "test:hung");
    // After a failure Redis is left alone for a second; wait that out so the next read
    // really goes to the hung server.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let started = Instant::now();
    let value = cache
        .get_or_load("k", LONG, || source.load("from source"))
        .await?;
    let first_call = started.elapsed();
    assert_eq!(value, "from source");
    assert!(cache.redis_errors() >= 1, "the timeout was not counted");
    assert!(
        first_call < TIMEOUT + SLACK,
        "first call took {first_call:?}"
    );

    // Redis is then left alone for a moment: the next calls do not wait at all.
    let started = Instant::now();
    for _ in 0..10 {
        cache
            .get_or_load("k", LONG, || source.load("from source"))
            .await?;
    }
    let ten_calls = started.elapsed();
    assert!(
        ten_calls < Duration::from_millis(100),
        "ten calls took {ten_calls:?}"
    );
    assert_eq!(source.loads(), 11);
    hold.abort();
    Ok(())
}

#[tokio::test]
async fn without_redis_the_local_layer_still_caches() -> anyhow::Result<()> {
    let source = Source::default();
    let cache = TwoLevelCache::<Vec<u8>>::new(None, LONG, 2, "test:local");
    for _ in 0..3 {
        cache
            .get_or_load("a", LONG, || async {
                source.loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Infallible>(b"bytes".to_vec())
            })
            .await?;
    }
    assert_eq!((source.loads(), cache.redis_errors()), (1, 0));
    cache.invalidate("a").await;
    assert_eq!(cache.local_len(), 0);
    Ok(())
}

#[tokio::test]
async fn a_load_that_raced_a_write_is_answered_once_but_never_kept() -> anyhow::Result<()> {
    // With a long in-process TTL, a value read before a concurrent write must not stay.
    let server = TestRedis::start().await?;
    let redis = redis_client(&server.url()).await?;
    for with_redis in [false, true] {
        let cache: TwoLevelCache<String> = TwoLevelCache::new(
            with_redis.then(|| redis.clone()),
            LONG,
            100,
            format!("test:race:{with_redis}"),
        );
        // The loader read "old" from the source; before it returns, the change lands and is
        // written through (as the notification listener does).
        let answered = cache
            .get_or_load("c1", LONG, || async {
                cache.put("c1", "new".to_owned(), LONG).await;
                Ok::<_, Infallible>("old".to_owned())
            })
            .await?;
        assert_eq!(answered, "old", "the racing read answers what it read");
        let next = cache
            .get_or_load("c1", LONG, || async {
                Ok::<_, Infallible>("loaded".to_owned())
            })
            .await?;
        assert_eq!(next, "new", "with Redis: {with_redis}");
        // An invalidate racing a load: the next read goes back to the source.
        let _ = cache
            .get_or_load("c2", LONG, || async {
                cache.invalidate("c2").await;
                Ok::<_, Infallible>("stale".to_owned())
            })
            .await?;
        if with_redis {
            // The Redis fill (SET NX) may still hold the raced value; only the local layer is
            // at issue here.
            redis.delete(&cache.redis_key("c2")).await?;
        }
        let fresh = cache
            .get_or_load("c2", LONG, || async {
                Ok::<_, Infallible>("fresh".to_owned())
            })
            .await?;
        assert_eq!(fresh, "fresh", "with Redis: {with_redis}");
    }
    Ok(())
}
