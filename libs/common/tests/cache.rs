//! The two-level cache against a real Redis: values come from the in-process layer, then
//! Redis, then the loader; writes go through; and with Redis stopped or hung the loader
//! answers without waiting for Redis, the failure is counted instead of returned, and Redis is
//! then left alone (commands skipped, not sent).
//!
//! Every test runs a `redis-server` of its own (`TestRedis`), so stopping or pausing it never
//! touches the machine's shared Redis. How long a Redis failure costs a call is bounded by the
//! timeout by construction; these tests assert what happens, not how fast.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use custops_common::cache::{CacheError, RedisCache, RedisSettings, TwoLevelCache};
use custops_testkit::eventually;
use custops_testkit::redis::TestRedis;

const LONG: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_millis(300);
/// How long a test waits for a state it expects before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

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

/// A client that, once Redis has failed, leaves it alone for longer than any test runs: every
/// later command is skipped (not sent, not counted), whatever the machine's speed.
async fn patient_redis_client(url: &str) -> anyhow::Result<RedisCache> {
    let settings = RedisSettings {
        timeout: TIMEOUT,
        retry_after: LONG,
        ..RedisSettings::new(url)
    };
    Ok(RedisCache::connect(&settings).await?)
}

/// The remaining time to live of `key` in Redis, in milliseconds (negative: no key or no TTL).
async fn pttl(url: &str, key: &str) -> anyhow::Result<i64> {
    let mut connection = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    Ok(redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut connection)
        .await?)
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
    let expired = eventually(PATIENCE, || async {
        short.read_local(|held| held.get("c1").is_none())
    })
    .await;
    assert!(expired, "the in-process copy never expired");
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
    let ttl = pttl(&server.url(), &cache.redis_key("k")).await?;
    assert!((1..=100).contains(&ttl), "PTTL {ttl}");
    let gone = eventually(PATIENCE, || async {
        matches!(redis.get(&cache.redis_key("k")).await, Ok(None))
    })
    .await;
    assert!(gone, "the value outlived its TTL");
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
async fn with_redis_stopped_the_source_answers_and_redis_is_then_left_alone() -> anyhow::Result<()>
{
    let mut server = TestRedis::start().await?;
    let redis = patient_redis_client(&server.url()).await?;
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

    // The first call finds Redis gone: answered from the source, the failure counted.
    let value = cache
        .get_or_load("k", LONG, || source.load("from source"))
        .await?;
    assert_eq!(value, "from source");
    assert_eq!(source.loads(), 2);
    assert_eq!(cache.redis_errors(), 1, "the failure was not counted once");

    // Later calls, writes and invalidations also answer, and none of their commands is sent
    // to Redis (a sent one would fail and be counted): they are skipped.
    for _ in 0..20 {
        let value = cache
            .get_or_load("k", LONG, || source.load("from source"))
            .await?;
        assert!(!cache.put("k", value.clone(), LONG).await);
        assert!(!cache.invalidate("k").await);
        assert_eq!(value, "from source");
    }
    assert_eq!(source.loads(), 22);
    assert_eq!(
        cache.redis_errors(),
        1,
        "a command was sent to the stopped Redis"
    );
    assert!(matches!(redis.ping().await, Err(CacheError::Skipped)));
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
async fn connecting_to_a_redis_that_never_answers_succeeds_and_then_leaves_it_alone()
-> anyhow::Result<()> {
    // A "Redis" that accepts connections and never answers: the worst case, a black hole.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    // Connecting pings once: that times out, is logged, and does not fail (a client without
    // the timeout would wait here for ever).
    let redis = tokio::time::timeout(
        PATIENCE,
        patient_redis_client(&format!("redis://127.0.0.1:{port}")),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connecting waited for the black hole"))??;
    // The failed ping left Redis alone: nothing is sent, and the source answers.
    assert!(matches!(redis.ping().await, Err(CacheError::Skipped)));
    let source = Source::default();
    let cache = TwoLevelCache::<String>::new(Some(redis), Duration::ZERO, 0, "test:hole");
    let value = cache
        .get_or_load("k", LONG, || source.load("from source"))
        .await?;
    assert_eq!((value.as_str(), source.loads()), ("from source", 1));
    hold.abort();
    Ok(())
}

#[tokio::test]
async fn a_hung_redis_does_not_hold_the_call_and_is_then_left_alone() -> anyhow::Result<()> {
    let server = TestRedis::start().await?;
    let redis = patient_redis_client(&server.url()).await?;
    let source = Source::default();
    let cache = TwoLevelCache::<String>::new(Some(redis.clone()), Duration::ZERO, 0, "test:hung");
    cache.get_or_load("k", LONG, || source.load("v")).await?;
    assert_eq!((source.loads(), cache.redis_errors()), (1, 0));

    // Redis hangs: it keeps its connections and answers no command for a minute, longer than
    // the test waits for any call.
    let mut admin = redis::Client::open(server.url())?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(LONG.as_millis().to_string())
        .arg("ALL")
        .query_async::<()>(&mut admin)
        .await?;

    // The call is answered from the source while Redis still holds its command unanswered,
    // and the timeout is counted.
    let value = tokio::time::timeout(
        PATIENCE,
        cache.get_or_load("k", LONG, || source.load("from source")),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the call waited for the hung Redis"))??;
    assert_eq!((value.as_str(), source.loads()), ("from source", 2));
    assert_eq!(cache.redis_errors(), 1, "the timeout was not counted once");

    // Redis is then left alone: the next calls send it nothing (a sent command would time out
    // and be counted) and go straight to the source.
    for _ in 0..10 {
        cache
            .get_or_load("k", LONG, || source.load("from source"))
            .await?;
    }
    assert_eq!(source.loads(), 12);
    assert_eq!(
        cache.redis_errors(),
        1,
        "a command was sent to the hung Redis"
    );
    assert!(matches!(redis.ping().await, Err(CacheError::Skipped)));
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
