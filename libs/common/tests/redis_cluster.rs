//! The two-level cache on a real Redis Cluster (three masters, a replica of each, started by
//! `TestRedisCluster` on loopback ports): values of keys in every master's slots are written
//! and read back through `REDIS_URL=redis+cluster://…`; a master killed (SIGKILL) while
//! lookups and write-throughs run costs no lookup, loses no acknowledged write-through, and
//! once its replica has taken over (and the dead master is back as a replica) every lookup
//! answers the newest value; a write-through no replica acknowledged is reported as not
//! written.
//!
//! `redis-server` and `redis-cli` must be on `PATH`: without them these tests fail, naming
//! what is missing, rather than pass without a cluster.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use custops_common::cache::{CacheError, CacheValue, RedisCache, RedisSettings, TwoLevelCache};
use custops_testkit::eventually;
use custops_testkit::redis_cluster::TestRedisCluster;

const LONG: Duration = Duration::from_secs(600);
/// Generous: a write-through waits up to half of it for a replica's acknowledgement, and on a
/// loaded CI machine replication can lag a few hundred milliseconds.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long a test waits for a state it expects before it fails.
const PATIENCE: Duration = Duration::from_secs(30);
/// Keys enough to land in every master's slots.
const KEYS: usize = 30;

async fn cluster_client(url: &str) -> anyhow::Result<RedisCache> {
    let settings = RedisSettings {
        timeout: TIMEOUT,
        // Short, so lookups go back to Redis soon after the failover.
        retry_after: Duration::from_millis(100),
        ..RedisSettings::new(url)
    };
    Ok(RedisCache::connect(&settings).await?)
}

/// One cluster at a time: three clusters of six servers at once on two cores made replication
/// lag past the write-throughs' wait.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Puts `value` for `key` until a replica has acknowledged it (setting up a test's values, not
/// what the test checks).
async fn put_acknowledged(cache: &TwoLevelCache<String>, key: &str, value: &str) -> bool {
    eventually(PATIENCE, || async {
        cache.put(key, value.to_owned(), LONG).await
    })
    .await
}

/// A cache with no in-process layer: every read reaches Redis, as on a replica that has not
/// seen the key yet.
fn redis_only(redis: &RedisCache) -> TwoLevelCache<String> {
    TwoLevelCache::new(Some(redis.clone()), Duration::ZERO, 0, "test:cluster")
}

fn key(i: usize) -> String {
    format!("customer-{i}")
}

/// The source of truth: each key's current version, and how often it was read.
#[derive(Clone, Default)]
struct Source {
    versions: Arc<Mutex<HashMap<String, u64>>>,
    loads: Arc<AtomicUsize>,
}

impl Source {
    fn set(&self, key: &str, version: u64) {
        self.lock().insert(key.to_owned(), version);
    }

    fn current(&self, key: &str) -> u64 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    async fn load(&self, key: String) -> Result<String, Infallible> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Ok(self.current(&key).to_string())
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The version Redis holds for `key`, read through a client of its own.
async fn version_in_redis(
    redis: &RedisCache,
    cache: &TwoLevelCache<String>,
    key: &str,
) -> anyhow::Result<Option<u64>> {
    let Some(bytes) = redis.get(&cache.redis_key(key)).await? else {
        return Ok(None);
    };
    Ok(Some(String::from_bytes(&bytes)?.parse()?))
}

#[tokio::test]
async fn values_of_keys_on_every_master_are_written_read_and_removed() -> anyhow::Result<()> {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = TestRedisCluster::start().await?;
    let redis = cluster_client(&cluster.url()).await?;
    assert!(redis.is_cluster());
    let writer = TwoLevelCache::new(Some(redis.clone()), LONG, 100, "test:cluster");
    let reader = redis_only(&cluster_client(&cluster.url()).await?);
    let source = Source::default();
    let mut masters = BTreeSet::new();
    for i in 0..KEYS {
        masters.insert(cluster.master_of(&writer.redis_key(&key(i))).await?);
    }
    assert_eq!(masters.len(), 3, "the keys must span every master's slots");

    // Written through, then read by another replica from Redis without asking the source.
    for i in 0..KEYS {
        assert!(writer.put(&key(i), format!("v{i}"), LONG).await, "put {i}");
    }
    for i in 0..KEYS {
        let value = reader
            .get_or_load(&key(i), LONG, || source.load(key(i)))
            .await?;
        assert_eq!(value, format!("v{i}"));
    }
    assert_eq!(source.loads(), 0);

    // Removed from Redis: the next read loads from the source and fills Redis (SET NX).
    for i in (0..KEYS).step_by(2) {
        assert!(writer.invalidate(&key(i)).await, "invalidate {i}");
        source.set(&key(i), 1000 + u64::try_from(i)?);
    }
    for i in 0..KEYS {
        let expected = if i % 2 == 0 {
            (1000 + i).to_string()
        } else {
            format!("v{i}")
        };
        let value = reader
            .get_or_load(&key(i), LONG, || source.load(key(i)))
            .await?;
        assert_eq!(value, expected, "key {i}");
    }
    assert_eq!(source.loads(), KEYS / 2);
    for i in (0..KEYS).step_by(2) {
        let filled = version_in_redis(&redis, &writer, &key(i)).await?;
        assert_eq!(filled, Some(1000 + u64::try_from(i)?), "fill of {i}");
    }
    assert_eq!(writer.redis_errors() + reader.redis_errors(), 0);

    // Positive control: a single-server client on one node is sent away (MOVED) for the
    // keys of the other masters, so the cluster support is what made the above work.
    let port = masters.first().copied().unwrap_or_default();
    let single = RedisCache::connect(&RedisSettings::new(&cluster.node_url(port))).await?;
    assert!(!single.is_cluster());
    let mut moved = 0;
    for i in 0..KEYS {
        if let Err(CacheError::Command(_)) = single.get(&writer.redis_key(&key(i))).await {
            moved += 1;
        }
    }
    assert!(moved > 0, "a single-server client read every key");
    Ok(())
}

#[tokio::test]
async fn a_master_killed_during_lookups_costs_no_lookup_and_no_write() -> anyhow::Result<()> {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut cluster = TestRedisCluster::start().await?;
    let writer = Arc::new(redis_only(&cluster_client(&cluster.url()).await?));
    let reader = Arc::new(redis_only(&cluster_client(&cluster.url()).await?));
    let source = Source::default();
    for i in 0..KEYS {
        source.set(&key(i), 1);
        assert!(put_acknowledged(&writer, &key(i), "1").await, "put {i}");
    }
    let victim = cluster.master_of(&writer.redis_key(&key(0))).await?;

    // Lookups run throughout: each must answer (from Redis or the source) within 5 s.
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = tokio::spawn({
        let (reader, source, stop) = (reader.clone(), source.clone(), stop.clone());
        async move {
            let (mut answered, mut failed) = (0_usize, 0_usize);
            while !stop.load(Ordering::SeqCst) {
                for i in 0..KEYS {
                    let k = key(i);
                    let lookup = reader.get_or_load(&k, LONG, || source.load(key(i)));
                    match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                        Ok(Ok(_)) => answered += 1,
                        Ok(Err(never)) => match never {},
                        Err(_elapsed) => failed += 1,
                    }
                }
            }
            (answered, failed)
        }
    });

    // Write-throughs run, as the source changes, until the master dies: the last version of
    // each key that Redis acknowledged (a replica has it) is recorded.
    let rounds = Arc::new(AtomicUsize::new(0));
    let stop_writes = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn({
        let (writer, source) = (writer.clone(), source.clone());
        let (rounds, stop_writes) = (rounds.clone(), stop_writes.clone());
        async move {
            let mut acknowledged: HashMap<String, u64> = HashMap::new();
            let mut version = 1;
            while !stop_writes.load(Ordering::SeqCst) {
                version += 1;
                for i in 0..KEYS {
                    source.set(&key(i), version);
                    if writer.put(&key(i), version.to_string(), LONG).await {
                        acknowledged.insert(key(i), version);
                    }
                }
                rounds.fetch_add(1, Ordering::SeqCst);
            }
            (acknowledged, version)
        }
    });
    let writing = eventually(PATIENCE, || async { rounds.load(Ordering::SeqCst) >= 2 }).await;
    assert!(writing, "the writes never got going");
    cluster.kill(victim).await?;
    stop_writes.store(true, Ordering::SeqCst);
    let (acknowledged, mut version) = writes.await?;
    cluster.wait_for_failover(victim).await?;

    // No acknowledged write-through was lost with the master: its replica, now the master,
    // holds it (or a later write that was sent but not acknowledged).
    let check = cluster_client(&cluster.url()).await?;
    let mut lost = Vec::new();
    for i in 0..KEYS {
        let acked = acknowledged.get(&key(i)).copied().unwrap_or(0);
        let held = eventually(PATIENCE, || async {
            version_in_redis(&check, &writer, &key(i)).await.is_ok()
        })
        .await;
        assert!(held, "the cluster never answered for key {i}");
        let in_redis = version_in_redis(&check, &writer, &key(i)).await?;
        if in_redis.is_none_or(|v| v < acked) {
            lost.push((key(i), acked, in_redis));
        }
    }
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");

    // The promoted master has no replica yet: a write-through to it is not acknowledged, so
    // it is reported as not written…
    assert!(
        !writer.put(&key(0), version.to_string(), LONG).await,
        "a write no replica has was reported written"
    );
    // …until the dead master comes back, as the replica of its successor.
    cluster.restart(victim).await?;

    // After the failover, the caller writes the newest values through until Redis takes them
    // (segmentation moves its epoch instead after a write-through failed): the dead master's
    // keys go to the promoted replica…
    version += 1;
    for i in 0..KEYS {
        source.set(&key(i), version);
        let written = eventually(PATIENCE, || async {
            writer.put(&key(i), version.to_string(), LONG).await
        })
        .await;
        if !written {
            let error = check
                .set(&writer.redis_key(&key(i)), b"0", LONG, false)
                .await;
            panic!("Redis never took the write of key {i}: {error:?}");
        }
    }
    // …and from then on no lookup answers an older value, while the loop still runs.
    let mut stale = Vec::new();
    for _round in 0..5 {
        for i in 0..KEYS {
            let value = reader
                .get_or_load(&key(i), LONG, || source.load(key(i)))
                .await?;
            if value != version.to_string() {
                stale.push((key(i), value));
            }
        }
    }
    // Redis answers them itself again: a whole round without the source.
    let from_redis = eventually(PATIENCE, || async {
        let before = source.loads();
        for i in 0..KEYS {
            let _ = reader
                .get_or_load(&key(i), LONG, || source.load(key(i)))
                .await;
        }
        source.loads() == before
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (answered, failed) = lookups.await?;
    assert!(
        reader.redis_errors() > 0,
        "the lookups never met the dead master"
    );

    assert!(
        stale.is_empty(),
        "stale answers after the failover: {stale:?}"
    );
    assert_eq!(failed, 0, "lookups that did not answer ({answered} did)");
    assert!(answered >= KEYS, "the lookup loop barely ran: {answered}");
    assert!(from_redis, "Redis never answered the lookups again");
    Ok(())
}

#[tokio::test]
async fn a_write_through_no_replica_acknowledged_is_not_counted_as_written() -> anyhow::Result<()> {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = TestRedisCluster::start().await?;
    let redis = cluster_client(&cluster.url()).await?;
    let cache = redis_only(&redis);
    let master = cluster.master_of(&cache.redis_key("k")).await?;
    let replica = cluster.replica_of(master).await?;
    assert!(put_acknowledged(&cache, "k", "1").await);
    let errors_before = cache.redis_errors();

    // The replica hangs: the master takes the writes, but nobody else has them.
    cluster.signal(replica, true).await?;
    let put = cache.put("k", "2".to_owned(), LONG).await;
    let invalidated = cache.invalidate("k").await;
    // A fill (SET NX) of the now empty key does not wait for the replica…
    let fill = redis.set(&cache.redis_key("k"), b"y", LONG, true).await;
    // …but a write-through does.
    let raw = redis.set(&cache.redis_key("k"), b"x", LONG, false).await;
    cluster.signal(replica, false).await?;

    assert!(!put, "a write no replica has was reported written");
    assert!(!invalidated, "a removal no replica has was reported done");
    assert!(matches!(fill, Ok(true)), "{fill:?}");
    assert!(matches!(raw, Err(CacheError::NotReplicated(_))), "{raw:?}");
    assert_eq!(cache.redis_errors() - errors_before, 2);
    // Once the replica is back, write-throughs count again.
    let written = eventually(PATIENCE, || async {
        cache.put("k", "3".to_owned(), LONG).await
    })
    .await;
    assert!(written);
    Ok(())
}
