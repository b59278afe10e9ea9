//! Two tiers: this process's bounded memory storage (L1, optional) in front of the shared
//! Redis tier (L2).
//!
//! - Lookup: L1, then Redis (a Redis hit is copied into L1), then a miss.
//! - A miss takes the URL's fill lock in Redis. The instance that gets it fetches; an
//!   instance that finds it taken waits (within `cache.lock_timeout`) until the entry is
//!   stored or the lock released, woken by the `Filled` event or by bounded polling, and
//!   then serves what Redis has. Local requests for one URL share one such wait, and behind
//!   a lock this instance holds they queue on Pingora's own cache lock instead.
//! - A stored response goes to L1 at once and to Redis right after, off the request path;
//!   the fill lock is released once Redis has it.
//! - Purge and clear act on both tiers and are announced to every instance, which drop
//!   their L1 copies. An instance whose subscription broke drops its whole L1 when it is
//!   subscribed again, since it may have missed events.
//!
//! Nothing here turns a Redis failure into an error on the request path: Redis failures
//! are misses and skipped writes (see `redis.rs`). Only purge and clear report them, since
//! an operator must know when other instances may still serve what was removed.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use log::{debug, info};
use parking_lot::Mutex;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{
    HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget, PurgeType,
    Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_error::{Error, ErrorType, Result};
use tokio::sync::{watch, Notify};

use super::inflight::{BodyBuffer, InflightBudget, ReserveIn};
use super::memory::{compact_key, MemoryHit, MemoryStorage, StoredMeta};
use super::redis::{Event, RedisTier, Unavailable, HEALTH_INTERVAL};
use super::{CacheBackend, L2Status, Usage};
use crate::cache::partial;
use crate::metrics::REDIS_METRICS;

/// How often a waiter looks at Redis when no `Filled` event has come.
const FILL_POLL: Duration = Duration::from_millis(50);

type WaitFuture = Shared<BoxFuture<'static, ()>>;

pub struct TieredStorage {
    l1: Option<&'static MemoryStorage>,
    l2: RedisTier,
    stale_retention: Duration,
    max_object_bytes: usize,
    /// Bodies being stored, without an in-process tier (with one, they are reserved there).
    inflight: InflightBudget,
    /// How long a fill lock is held at most, and how long others wait behind it.
    lock_hold: Duration,
    /// Fill locks this instance holds: primary key -> (token, taken at).
    held: Mutex<HashMap<HashBinary, (u64, Instant)>>,
    /// Waits for another instance's fill, one per URL, shared by the local requests.
    waits: Mutex<HashMap<HashBinary, WaitFuture>>,
    wakers: Mutex<HashMap<HashBinary, Arc<Notify>>>,
    /// Redis writes this instance has started and not finished, per URL: a purge of the URL
    /// waits for them, or a write landing after it would bring the entry back.
    writing: Mutex<HashMap<HashBinary, usize>>,
    written: Notify,
}

impl TieredStorage {
    pub fn new(
        l1: Option<&'static MemoryStorage>,
        l2: RedisTier,
        stale_retention: Duration,
        max_object_bytes: usize,
        max_inflight_bytes: usize,
        lock_hold: Duration,
    ) -> Self {
        TieredStorage {
            l1,
            l2,
            stale_retention,
            max_object_bytes,
            inflight: InflightBudget::new(max_inflight_bytes),
            lock_hold,
            held: Mutex::new(HashMap::new()),
            waits: Mutex::new(HashMap::new()),
            wakers: Mutex::new(HashMap::new()),
            writing: Mutex::new(HashMap::new()),
            written: Notify::new(),
        }
    }

    pub fn new_static(self) -> &'static Self {
        Box::leak(Box::new(self))
    }

    pub fn redis(&self) -> &RedisTier {
        &self.l2
    }

    fn l1_lookup(&self, key: &CacheKey) -> Option<(CacheMeta, Bytes)> {
        self.l1?.get(key)
    }

    /// Reads Redis; a hit is copied into L1.
    async fn l2_lookup(&self, key: &CacheKey) -> Result<Option<(CacheMeta, Bytes)>, Unavailable> {
        let Some(found) = self.l2.get(&key.primary_bin(), &key.combined_bin()).await? else {
            return Ok(None);
        };
        if let Some(l1) = self.l1 {
            if found.body.len() <= self.max_object_bytes {
                if let Err(e) = l1.put(key, &found.meta, found.body.clone()) {
                    debug!("redis hit not copied into the memory tier: {e}");
                }
            }
        }
        Ok(Some((found.meta, found.body)))
    }

    /// Whether this instance holds the fill lock of `primary` (and it has not run out).
    fn holds(&self, primary: &HashBinary) -> bool {
        let mut held = self.held.lock();
        match held.get(primary) {
            Some((_, at)) if at.elapsed() < self.lock_hold => true,
            Some(_) => {
                held.remove(primary);
                false
            }
            None => false,
        }
    }

    fn take_lock(&self, primary: &HashBinary) -> Option<u64> {
        self.held.lock().remove(primary).map(|(token, _)| token)
    }

    fn waker(&self, primary: &HashBinary) -> Arc<Notify> {
        self.wakers.lock().entry(*primary).or_default().clone()
    }

    /// Waits until another instance's fill of `key` ends, sharing the wait with the other
    /// local requests for the same URL.
    async fn wait_for_fill(&'static self, key: &CacheKey) {
        let primary = key.primary_bin();
        let wait = self
            .waits
            .lock()
            .entry(primary)
            .or_insert_with(|| {
                let key = key.clone();
                async move { self.fill_wait(&key).await }.boxed().shared()
            })
            .clone();
        wait.await;
    }

    async fn fill_wait(&'static self, key: &CacheKey) {
        let (primary, combined) = (key.primary_bin(), key.combined_bin());
        let waker = self.waker(&primary);
        let deadline = Instant::now() + self.lock_hold;
        loop {
            let woken = waker.notified();
            match self.l2.fill_state(&primary, &combined).await {
                Some((false, true)) if Instant::now() < deadline => {}
                _ => break, // stored, released, expired, or Redis cannot tell: stop waiting
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(FILL_POLL.min(left)) => {}
            }
        }
        // One read for all local waiters: it lands in L1, where they find it.
        if self.l1.is_some() {
            let _ = self.l2_lookup(key).await;
        }
        self.waits.lock().remove(&primary);
        self.wakers.lock().remove(&primary);
    }

    /// Applies an event from the channel to this instance.
    fn on_event(&self, event: Event) {
        match event {
            Event::Filled(primary) => {
                if let Some(waker) = self.wakers.lock().get(&primary) {
                    waker.notify_waiters();
                }
            }
            Event::Purged(primary) => {
                if let Some(l1) = self.l1 {
                    l1.remove_primary(primary);
                }
            }
            Event::Cleared(generation) => {
                if self.l2.set_generation(generation) {
                    self.clear_l1("the cache was cleared");
                }
            }
        }
    }

    fn clear_l1(&self, why: &str) {
        if let Some(l1) = self.l1 {
            let removed = l1.clear_now();
            if removed > 0 {
                info!("memory tier dropped {removed} entries: {why}");
            }
        }
    }

    /// Writes a complete entry to Redis, then releases the fill lock if this write held it.
    async fn write_l2(&self, key: CacheKey, meta: CacheMeta, body: Bytes, token: Option<u64>) {
        let primary = key.primary_bin();
        if let Some(ttl) = RedisTier::ttl(&meta, self.stale_retention) {
            self.l2
                .put(&primary, &key.combined_bin(), &meta, &body, ttl)
                .await;
        }
        self.write_ended(&primary);
        if let Some(token) = token {
            self.l2.unlock(&primary, token).await;
        }
    }

    fn write_started(&self, primary: &HashBinary) {
        *self.writing.lock().entry(*primary).or_default() += 1;
    }

    fn write_ended(&self, primary: &HashBinary) {
        let mut writing = self.writing.lock();
        if let Some(n) = writing.get_mut(primary) {
            *n -= 1;
            if *n == 0 {
                writing.remove(primary);
            }
        }
        drop(writing);
        self.written.notify_waiters();
    }

    /// Waits until this instance's Redis writes of `primary` are over (each is bounded by
    /// the Redis timeout per call; `lock_hold` bounds the wait in any case).
    async fn writes_done(&self, primary: &HashBinary) {
        // The common case, on every lookup that reaches Redis: nothing in flight.
        if !self.writing.lock().contains_key(primary) {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.lock_hold;
        loop {
            let done = self.written.notified();
            if !self.writing.lock().contains_key(primary) {
                return;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                return;
            }
        }
    }
}

fn hit(meta: CacheMeta, body: Bytes) -> (CacheMeta, HitHandler) {
    (meta, Box::new(MemoryHit::new(body)))
}

#[async_trait]
impl Storage for TieredStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        if let Some((meta, body)) = self.l1_lookup(key) {
            REDIS_METRICS.l1_hits.inc();
            return Ok(Some(hit(meta, body)));
        }
        // A fill of this instance stores into Redis after Pingora has released the cache
        // lock: a lookup in between would read the entry it replaces (and, if that one is
        // stale, fetch once more). Wait for that write, as purge and remove do.
        self.writes_done(&key.primary_bin()).await;
        match self.l2_lookup(key).await {
            Ok(Some((meta, body))) => {
                REDIS_METRICS.l2_hits.inc();
                return Ok(Some(hit(meta, body)));
            }
            Ok(None) => {}
            // Redis did not answer just now: fetch without it, at no further delay.
            Err(Unavailable) => return Ok(None),
        }
        let primary = key.primary_bin();
        if self.holds(&primary) {
            // This instance is fetching it: Pingora's cache lock queues the request.
            return Ok(None);
        }
        // Twice at most: a wait for another fill that ends without this key's entry (it
        // stored another variant or a part, or nothing) is followed by a try of our own, so
        // that this fetch holds the lock and the next request waits for it, not refetches.
        for attempt in 0..2 {
            match self.l2.try_lock(&primary, self.lock_hold).await {
                Ok(Some(token)) => {
                    // Another fill may have stored the entry and released its lock between
                    // our read and our lock: look once more before fetching.
                    if let Ok(Some((meta, body))) = self.l2_lookup(key).await {
                        self.l2.unlock(&primary, token).await;
                        REDIS_METRICS.l2_hits.inc();
                        return Ok(Some(hit(meta, body)));
                    }
                    self.held.lock().insert(primary, (token, Instant::now()));
                    return Ok(None);
                }
                Ok(None) if attempt == 0 => {
                    self.wait_for_fill(key).await;
                    let found = match self.l1_lookup(key) {
                        Some(found) => Some(found),
                        None => self.l2_lookup(key).await.ok().flatten(),
                    };
                    if let Some((meta, body)) = found {
                        REDIS_METRICS.l2_hits.inc();
                        return Ok(Some(hit(meta, body)));
                    }
                }
                // Another instance started a fill again: fetch without waiting twice.
                Ok(None) => return Ok(None),
                Err(Unavailable) => return Ok(None), // Redis cannot coordinate
            }
        }
        Ok(None)
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(TieredMiss {
            tier: self,
            key: partial::storage_key(key, meta),
            meta: StoredMeta::new(meta),
            body: BodyBuffer::new(
                self.max_object_bytes,
                match self.l1 {
                    Some(l1) => ReserveIn::Memory(l1, key.primary_bin()),
                    None => ReserveIn::Budget(&self.inflight),
                },
            ),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let Some(key) = compact_key(target).cloned() else {
            return Ok(PurgeOutcome::NotFound);
        };
        let mut outcome = PurgeOutcome::NotFound;
        if let Some(l1) = self.l1 {
            outcome = l1
                .purge(PurgeTarget::Active(&key), purge_type, trace)
                .await?;
        }
        self.writes_done(&key.primary_bin()).await;
        if self.l2.purge(&key.primary_bin()).await == Some(true) {
            outcome = PurgeOutcome::Purged(None);
        }
        Ok(outcome)
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        trace: &SpanHandle,
    ) -> Result<bool> {
        let mut updated = false;
        if let Some(l1) = self.l1 {
            updated = l1.update_meta(key, meta, trace).await?;
        }
        // Redis gets the new meta with the stored body before the response goes out, so
        // the next request anywhere sees the refreshed entry. Bounded like every call.
        let (primary, combined) = (key.primary_bin(), key.combined_bin());
        if let Ok(Some(found)) = self.l2.get(&primary, &combined).await {
            if let Some(ttl) = RedisTier::ttl(meta, self.stale_retention) {
                updated |= self
                    .l2
                    .put(&primary, &combined, meta, &found.body, ttl)
                    .await;
            }
        }
        Ok(updated)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[async_trait]
impl CacheBackend for TieredStorage {
    fn as_storage(&'static self) -> &'static (dyn Storage + Sync) {
        self
    }

    async fn clear(&'static self) -> Result<u64> {
        if !self.l2.clear().await {
            return Error::e_explain(
                ErrorType::InternalError,
                "Redis is unreachable: the shared tier was not cleared",
            );
        }
        Ok(self.l1.map_or(0, |l1| l1.clear_now()))
    }

    async fn remove(&'static self, key: &CacheKey) -> Result<bool> {
        let local = self
            .l1
            .is_some_and(|l1| l1.remove_primary(key.primary_bin()) > 0);
        self.writes_done(&key.primary_bin()).await;
        match self.l2.purge(&key.primary_bin()).await {
            Some(shared) => Ok(local || shared),
            None => Error::e_explain(
                ErrorType::InternalError,
                "Redis is unreachable: removed from this instance only",
            ),
        }
    }

    async fn fill_done(&'static self, key: &CacheKey) {
        let primary = key.primary_bin();
        if let Some(token) = self.take_lock(&primary) {
            self.l2.unlock(&primary, token).await;
        }
    }

    fn usage(&self) -> Usage {
        self.l1.map(|l1| l1.usage()).unwrap_or_default()
    }

    async fn peek(&'static self, key: &CacheKey) -> Option<(CacheMeta, Bytes)> {
        match self.l1_lookup(key) {
            Some(found) => Some(found),
            None => self.l2_lookup(key).await.ok().flatten(),
        }
    }

    /// From this instance's memory tier and from Redis. Other instances may keep a copy in
    /// their memory tier until it expires or is evicted; a partial entry is read only while
    /// the URL has no full entry, and the full one is what made this one superseded.
    async fn remove_entry(&'static self, key: &CacheKey) {
        if let Some(l1) = self.l1 {
            l1.remove_entry_now(key);
        }
        self.l2
            .remove_entry(&key.primary_bin(), &key.combined_bin())
            .await;
    }

    fn memory_tier(&'static self) -> Option<&'static MemoryStorage> {
        self.l1
    }

    fn sweep_expired(&self, part: usize, parts: usize) -> u64 {
        self.l1.map_or(0, |l1| l1.sweep_expired(part, parts))
    }

    fn l1_hits(&self) -> Option<u64> {
        Some(REDIS_METRICS.l1_hits.get())
    }

    fn l2_status(&self) -> Option<L2Status> {
        let c = &self.l2.counters;
        Some(L2Status {
            up: self.l2.is_up(),
            circuit_open: self.l2.circuit_open(),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        })
    }
}

struct TieredMiss {
    tier: &'static TieredStorage,
    key: CacheKey,
    meta: StoredMeta,
    body: BodyBuffer,
}

#[async_trait]
impl HandleMiss for TieredMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.body.push(data)
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let TieredMiss {
            tier,
            key,
            meta,
            body,
        } = *self;
        let body = body.finish()?;
        let weight = body.len();
        if let Some(l1) = tier.l1 {
            if let Err(e) = l1.put_stored(&key, meta.clone(), body.clone()) {
                debug!("not stored in the memory tier: {e}");
            }
        }
        let token = tier.take_lock(&key.primary_bin());
        let meta = meta.to_meta();
        tier.write_started(&key.primary_bin());
        tokio::spawn(async move { tier.write_l2(key, meta, body, token).await });
        Ok(MissFinishType::Created(weight))
    }
}

/// Keeps the tier connected and current: health probes (which also close the breaker and
/// follow the key generation) and the events subscription.
pub struct TierService {
    pub tier: &'static TieredStorage,
    /// Set once the first connection attempt is over, so readiness can wait for it and a
    /// restarted instance serves from Redis from its first request.
    pub first_attempt: watch::Sender<bool>,
}

#[async_trait]
impl BackgroundService for TierService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let tier = self.tier;
        // At start the memory tier holds nothing, or what an upgrade's hand-over brings: the
        // old process's entries, which it kept in step with Redis and whose removals it
        // forwards while it lives. So a first contact at start (learning the generation,
        // subscribing) drops nothing; a later first contact does, since events may have
        // been missed in between.
        let _ = tier.l2.health_check().await;
        let mut trusted = tier.l2.is_up();
        let _ = self.first_attempt.send(true);
        let subscriber = tokio::spawn(async move {
            loop {
                let result = tier
                    .l2
                    .subscribe(
                        || {
                            if !std::mem::take(&mut trusted) {
                                tier.clear_l1(
                                    "subscribed to cache events (some may have been missed)",
                                );
                            }
                        },
                        |event| tier.on_event(event),
                    )
                    .await;
                trusted = false;
                if let Err(e) = result {
                    debug!("cache events subscription: {e}");
                }
                tokio::time::sleep(HEALTH_INTERVAL).await;
            }
        });
        let mut tick = tokio::time::interval(HEALTH_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    if tier.l2.health_check().await.is_some() {
                        tier.clear_l1("the key generation changed");
                    }
                    // Fill locks whose request ended without a word; Redis expired them too.
                    let hold = tier.lock_hold;
                    tier.held.lock().retain(|_, (_, at)| at.elapsed() < hold);
                }
            }
        }
        subscriber.abort();
    }
}
