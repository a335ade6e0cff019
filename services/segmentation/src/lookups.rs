//! The hot-path membership lookups, served through a two-level cache (in-process, then Redis,
//! then Postgres, the truth).
//!
//! Two caches: a customer's segment ids (key `<epoch>:<customer id>`, a [`SegmentSet`]) and a
//! segment's existence and size (key `<epoch>:<segment id>`). Deleting a segment moves the
//! epoch, so a cached customer list never names a deleted segment and a lookup needs no
//! per-segment existence check. Write-through happens **after commit**: the transaction that
//! changes memberships calls `pg_notify('segmentation_membership', …)`
//! (`store::memberships::notify_*`), which Postgres delivers only if it commits; every replica
//! runs `jobs::listener::listen`, which on each notification reads the fresh value from
//! Postgres and writes it to its in-process layer and to Redis ([`Lookups::apply`]). A
//! recompute that moves many customers bumps the epoch instead (one notification): the keys
//! change, every replica reads fresh values.
//!
//! With Redis down, `TwoLevelCache` answers from Postgres and counts the failure. Two gaps
//! could leave a stale value in Redis, and both end in an epoch bump, so no replica reads a
//! value written before the gap:
//! - a write-through that failed (Redis unreachable but not restarted, so it kept the old
//!   value): the replica marks Redis *dirty*, answers from Postgres while dirty, and bumps the
//!   epoch as soon as Redis answers again;
//! - a lost listener connection may have dropped notifications: bumped on reconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use custops_common::cache::{CacheValue, RedisCache, TwoLevelCache, ValueDecodeError};
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::memberships;

/// How long a value lives in the in-process layer. Every change reaches every replica's layer
/// by notification (a lost listener connection bumps the epoch), and a fill that raced a
/// write-through is never kept (`TwoLevelCache`), so this is only a safety net against a
/// notice lost to a bug, healed within five minutes (half the Redis TTL); long enough that the
/// customers looked up in a busy minute are answered from memory rather than by a Redis round
/// trip (at 30 s, most lookups of a 20,000-customer bench went to Redis, whose CPU shares the
/// machine).
const LOCAL_TTL: Duration = Duration::from_secs(300);
/// How many values the in-process layer of each cache holds.
const LOCAL_CAPACITY: usize = 100_000;
/// How long a value lives in Redis: bounds staleness after an outage that hid a change.
const REDIS_TTL: Duration = Duration::from_secs(600);

/// The segment ids of one customer, ascending, as the hot path holds them: shared, so an
/// in-process hit copies a pointer rather than a list of strings, and stored in Redis as the
/// ids' 16 bytes one after another.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegmentSet(pub Arc<[Uuid]>);

impl SegmentSet {
    /// Whether `segment_id` is in the set.
    pub fn contains(&self, segment_id: &Uuid) -> bool {
        self.0.binary_search(segment_id).is_ok()
    }
}

impl CacheValue for SegmentSet {
    fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|id| *id.as_bytes()).collect()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, ValueDecodeError> {
        if !bytes.len().is_multiple_of(16) {
            return Err(ValueDecodeError(format!(
                "{} bytes are not a list of 16-byte ids",
                bytes.len()
            )));
        }
        Ok(Self(
            bytes
                .chunks_exact(16)
                .map(|chunk| {
                    let mut id = [0_u8; 16];
                    id.copy_from_slice(chunk);
                    Uuid::from_bytes(id)
                })
                .collect(),
        ))
    }
}

/// A segment's existence and size.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SegmentEntry {
    #[prost(bool, tag = "1")]
    pub exists: bool,
    #[prost(int64, tag = "2")]
    pub member_count: i64,
}

/// The lookup caches of one process.
pub struct Lookups {
    customers: TwoLevelCache<SegmentSet>,
    segments: TwoLevelCache<SegmentEntry>,
    epoch: AtomicI64,
    redis: Option<RedisCache>,
    /// A write-through to Redis failed: Redis may hold a stale value until the epoch moves.
    dirty: AtomicBool,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups")
            .field("epoch", &self.epoch.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Lookups {
    /// Caches over `redis` (in-process only when `None`).
    pub fn new(redis: Option<RedisCache>) -> Self {
        Self {
            customers: TwoLevelCache::new(
                redis.clone(),
                LOCAL_TTL,
                LOCAL_CAPACITY,
                // v2: binary ids (v1 held a protobuf list of strings).
                "segmentation:customer_segments:v2",
            ),
            segments: TwoLevelCache::new(
                redis.clone(),
                LOCAL_TTL,
                LOCAL_CAPACITY,
                "segmentation:segment",
            ),
            epoch: AtomicI64::new(0),
            redis,
            dirty: AtomicBool::new(false),
        }
    }

    /// The Redis key holding `customer_id`'s segment ids (for tests and operators).
    pub fn customer_redis_key(&self, customer_id: &str) -> String {
        self.customers.redis_key(&self.customer_key(customer_id))
    }

    /// Redis failures counted by both caches.
    pub fn redis_errors(&self) -> u64 {
        self.customers.redis_errors() + self.segments.redis_errors()
    }

    fn customer_key(&self, customer_id: &str) -> String {
        let mut key = String::new();
        self.write_customer_key(&mut key, customer_id);
        key
    }

    /// [`Self::customer_key`] into `key` (cleared first), reusing its buffer.
    fn write_customer_key(&self, key: &mut String, customer_id: &str) {
        use std::fmt::Write as _;
        key.clear();
        let _ = write!(key, "{}:{customer_id}", self.epoch.load(Ordering::Acquire));
    }

    fn segment_key(&self, segment_id: Uuid) -> String {
        format!("{}:{segment_id}", self.epoch.load(Ordering::Acquire))
    }

    /// Whether a write-through failed and Redis has not been moved past it yet.
    fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Writes through, marking Redis dirty when the write did not reach it.
    async fn put<V: custops_common::cache::CacheValue>(
        &self,
        cache: &TwoLevelCache<V>,
        key: &str,
        value: V,
    ) {
        if !cache.put(key, value, REDIS_TTL).await {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Removes a key, marking Redis dirty when the removal did not reach it.
    async fn invalidate<V: custops_common::cache::CacheValue>(
        &self,
        cache: &TwoLevelCache<V>,
        key: &str,
    ) {
        if !cache.invalidate(key).await {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Once Redis answers again after a missed write-through, moves every replica to fresh
    /// keys (the epoch) so the values Redis kept from before are never read.
    pub async fn heal(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        if !self.is_dirty() || redis.ping().await.is_err() {
            return Ok(());
        }
        let mut tx = pool.begin().await?;
        memberships::bump_epoch(&mut tx).await?;
        tx.commit().await?;
        self.refresh_epoch(pool).await?;
        self.dirty.store(false, Ordering::Release);
        tracing::info!("Redis is back after missed write-throughs; cache epoch moved");
        Ok(())
    }

    /// A segment's size, `None` when it does not exist.
    pub async fn segment_size(
        &self,
        pool: &PgPool,
        segment_id: Uuid,
    ) -> Result<Option<i64>, sqlx::Error> {
        let entry = if self.is_dirty() {
            load_segment(pool, segment_id).await?
        } else {
            self.segments
                .get_or_load(&self.segment_key(segment_id), REDIS_TTL, || {
                    load_segment(pool, segment_id)
                })
                .await?
        };
        Ok(entry.exists.then_some(entry.member_count))
    }

    /// The segments `customer_id` is a member of, ascending. (A deleted segment's memberships
    /// go with it, and its deletion moves the epoch, so no cached list names it.)
    pub async fn customer_segments(
        &self,
        pool: &PgPool,
        customer_id: &str,
    ) -> Result<SegmentSet, sqlx::Error> {
        if self.is_dirty() {
            return load_customer(pool, customer_id).await;
        }
        self.customers
            .get_or_load(&self.customer_key(customer_id), REDIS_TTL, || {
                load_customer(pool, customer_id)
            })
            .await
    }

    /// Whether each of `customer_ids` is a member of `segment_id`, in order: from this
    /// process's layer where it holds the customer; the others' segment lists are read from
    /// Postgres in one query and kept in the layer (guarded like any fill), so the next batch
    /// finds them in memory.
    pub async fn members_among(
        &self,
        pool: &PgPool,
        segment_id: Uuid,
        customer_ids: &[String],
    ) -> Result<Vec<bool>, sqlx::Error> {
        let dirty = self.is_dirty();
        let mut answers = Vec::with_capacity(customer_ids.len());
        let mut unknown = Vec::new();
        let mut key = String::new();
        // One lock for the batch; a dirty Redis means the local layer may lag: ask Postgres.
        self.customers.read_local(|held| {
            for (i, id) in customer_ids.iter().enumerate() {
                self.write_customer_key(&mut key, id);
                match held.get(&key).filter(|_| !dirty) {
                    Some(set) => answers.push(set.contains(&segment_id)),
                    None => {
                        answers.push(false);
                        unknown.push((i, id.clone()));
                    }
                }
            }
        });
        if unknown.is_empty() {
            return Ok(answers);
        }
        let token = self.customers.begin_fill();
        let ids: Vec<String> = unknown.iter().map(|(_, id)| id.clone()).collect();
        let sets =
            memberships::customers_segment_ids(&mut *custops_common::db::read(pool).await?, &ids)
                .await?;
        for (i, id) in unknown {
            // Read, not taken: a batch may name a customer twice, and a second `remove` would
            // answer false and fill the cache with an empty set.
            let set = SegmentSet(sets.get(&id).cloned().unwrap_or_default().into());
            answers[i] = set.contains(&segment_id);
            if !dirty {
                self.customers.fill(&self.customer_key(&id), &set, token);
            }
        }
        Ok(answers)
    }

    /// Reads `customer_id`'s memberships from Postgres and writes them through.
    pub async fn refresh_customer(
        &self,
        pool: &PgPool,
        customer_id: &str,
    ) -> Result<(), sqlx::Error> {
        let key = self.customer_key(customer_id);
        match load_customer(pool, customer_id).await {
            Ok(value) => {
                self.put(&self.customers, &key, value).await;
                Ok(())
            }
            Err(error) => {
                // Better no value than the one the change made stale.
                self.invalidate(&self.customers, &key).await;
                Err(error)
            }
        }
    }

    /// Reads a segment's size from Postgres and writes it through.
    pub async fn refresh_segment(
        &self,
        pool: &PgPool,
        segment_id: Uuid,
    ) -> Result<(), sqlx::Error> {
        let key = self.segment_key(segment_id);
        match load_segment(pool, segment_id).await {
            Ok(value) => {
                self.put(&self.segments, &key, value).await;
                Ok(())
            }
            Err(error) => {
                self.invalidate(&self.segments, &key).await;
                Err(error)
            }
        }
    }

    /// Switches to the epoch Postgres holds.
    pub async fn refresh_epoch(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let epoch = memberships::epoch(&mut *custops_common::db::read(pool).await?).await?;
        self.epoch.store(epoch, Ordering::Release);
        Ok(())
    }

    /// Applies one notification payload of [`memberships::CHANNEL`].
    pub async fn apply(&self, pool: &PgPool, payload: &str) -> Result<(), sqlx::Error> {
        if let Some(customer_id) = payload.strip_prefix("c:") {
            self.refresh_customer(pool, customer_id).await
        } else if let Some(segment_id) = payload.strip_prefix("s:") {
            match Uuid::parse_str(segment_id) {
                Ok(id) => self.refresh_segment(pool, id).await,
                Err(_) => Ok(()),
            }
        } else {
            self.refresh_epoch(pool).await
        }
    }
}

async fn load_customer(pool: &PgPool, customer_id: &str) -> Result<SegmentSet, sqlx::Error> {
    let ids =
        memberships::customer_segment_ids(&mut *custops_common::db::read(pool).await?, customer_id)
            .await?;
    Ok(SegmentSet(ids.into()))
}

async fn load_segment(pool: &PgPool, segment_id: Uuid) -> Result<SegmentEntry, sqlx::Error> {
    let size =
        memberships::segment_size(&mut *custops_common::db::read(pool).await?, segment_id).await?;
    Ok(SegmentEntry {
        exists: size.is_some(),
        member_count: size.unwrap_or(0),
    })
}
