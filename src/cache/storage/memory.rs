//! The embedded in-memory backend: sharded, bounded by bytes and by entries.
//!
//! Each shard is under its own mutex and holds at most its share of the byte and entry
//! bounds, so the global bounds hold at every instant without a global lock. An entry is
//! committed only when its body is complete, and room is made for it (by the shard's
//! eviction policy, S3-FIFO: see [`shard`]) in the same critical section that inserts it.
//! All variants of one URL live in the same shard (sharding is by the primary key), so
//! purging a URL is one shard's work.
//!
//! Entries are freed once they are of no more use: past their freshness and stale windows,
//! plus `stale_retention`, during which an expired entry can still be revalidated with a 304
//! or served to a client that accepts stale responses (`max-stale`). Such entries are
//! dropped on lookup, by eviction, and by [`sweep_expired`] once they reach the old end of
//! their queue.
//!
//! [`sweep_expired`]: super::CacheBackend::sweep_expired

use std::any::Any;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::arena;
use super::inflight::{BodyBuffer, InflightBudget, ReserveIn};
use super::{CacheBackend, Usage};
use crate::cache::partial;
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use pingora_cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheEntryKey, CacheKey, CacheMeta};
use pingora_error::{Error, ErrorType, Result};

mod compact;
mod queues;
mod shard;
mod transfer;
use compact::CompactHeader;
use shard::{Placement, Shard};
pub use transfer::{Adopted, Exported, Removal};

/// Memory of one entry beyond its body and its header's bytes (queue node with the entry,
/// map slot, its key in the ghost list once evicted, the shared-buffer records that the
/// first hit adds to the body and the header, allocator overhead), counted against the byte
/// bound so that the bound is on memory, not only on content. Calibrated by the memory run
/// in `benches/load/memory.sh` (process RSS over entries with the binary's allocator,
/// mimalloc: 457 bytes with 109 of header, of entries never read; a read adds the two
/// shared-buffer records, 48 bytes), rounded up.
const ENTRY_OVERHEAD: usize = 416;
/// An entry stored apart from its URL's primary key (a Vary variant, a partial entry) also
/// has a place in its shard's variant index: its key in the URL's list, and its share of the
/// list and of the list's map slot (all of them for a URL's only variant). Calibrated by the
/// memory run's Vary workload, where a little over a third of the entries are variants (the
/// first response of a URL, and any fetched before it was stored, take the primary slot) and
/// the whole workload measured 643 to 672 bytes per entry by RSS: the rest of that, per
/// variant, with a margin (320 left 3 bytes of it).
const VARIANT_OVERHEAD: usize = 384;
/// Any entry of a response with `Vary` (a variance), wherever it is stored: its URL's share
/// of the variant index's room. The Vary run at a million requests (250,000 URLs, most
/// variants evicted again and the URL's first response in the primary slot) measured 630
/// bytes per entry by RSS where the two constants above counted 583 (the variance was boxed
/// then, 16 bytes more, and the node 192 bytes); since the 160-byte node, 594 where 612 are
/// counted.
const VARIANCE_OVERHEAD: usize = 48;
const MAX_SHARDS: usize = 16;
/// Entries past use an expiry sweep removes per hold of a shard's lock (some 50 us of
/// removals: `cargo bench --bench cache -- 'expiry sweep'`).
const SWEEP_BATCH: usize = 256;
/// Entries still of use an expiry sweep passes in a queue, from its old end, before it stops
/// looking there (see [`Shard::remove_unused`]).
const SWEEP_LOOKAHEAD: usize = 64;
/// A shard holds at least this many objects of the largest cacheable size, so that the
/// capacity a shard cannot use (less than one object) stays a small part of it.
const MIN_OBJECTS_PER_SHARD: usize = 4;
/// Below this many entries per shard, sharding would make eviction order too coarse.
const MIN_ENTRIES_PER_SHARD: usize = 256;

type Key = u128;

fn key_of(hash: [u8; 16]) -> Key {
    u128::from_be_bytes(hash)
}

struct Entry {
    primary: Key,
    meta: StoredMeta,
    body: Bytes,
    /// What the entry counts against the bound ([`entry_weight`]); `u32` keeps the queue
    /// node in a smaller size class, and [`MemoryStorage::insert`] refuses anything heavier.
    weight: u32,
    /// Reads since the entry was stored or last went round the main queue (see [`shard`]).
    freq: u8,
}

impl Entry {
    fn weight(&self) -> usize {
        self.weight as usize
    }

    /// A weight too large for the field saturates it, and [`weighable`] then refuses it.
    fn set_weight(&mut self, weight: usize) {
        self.weight = u32::try_from(weight).unwrap_or(u32::MAX);
    }

    /// A new entry, not yet read.
    fn new(primary: Key, meta: StoredMeta, body: Bytes, weight: usize) -> Self {
        let mut entry = Entry {
            primary,
            meta,
            body,
            weight: 0,
            freq: 0,
        };
        entry.set_weight(weight);
        entry
    }
}

#[cfg(test)]
impl Entry {
    /// An entry of `weight` holding an empty 200 response, for the queues' tests.
    fn of_weight(weight: usize) -> Self {
        let now = SystemTime::now();
        let meta = CacheMeta::new(
            now,
            now,
            0,
            0,
            pingora_http::ResponseHeader::build(200, None).unwrap(),
        );
        Entry::new(0, StoredMeta::new(&meta), Bytes::new(), weight)
    }
}

/// Whether an entry of this weight can be stored: its weight field is a `u32`.
fn weighable(weight: usize) -> bool {
    weight < u32::MAX as usize
}

/// A duration in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A point in time as nanoseconds since the Unix epoch, saturating at both ends (1970 and
/// 2554): 8 bytes where a `SystemTime` takes 16. An entry keeps two inline (the epoch is in
/// the header's buffer when it differs from the creation time); with the one-buffer header
/// this takes its queue node from 256 to 160 bytes, three allocator size classes down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Stamp(u64);

impl Stamp {
    pub(super) fn now() -> Self {
        SystemTime::now().into()
    }

    fn time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }
}

impl From<SystemTime> for Stamp {
    fn from(t: SystemTime) -> Self {
        Stamp(t.duration_since(UNIX_EPOCH).map_or(0, nanos))
    }
}

/// A [`CacheMeta`] kept as its parts, the header compact (see [`compact`]). A hit rebuilds
/// the meta from them; deserializing a stored meta would decompress and parse the header on
/// every hit. (Fields Pingora does not persist, such as extensions, are not kept either.)
#[derive(Clone)]
pub(super) struct StoredMeta {
    fresh_until: Stamp,
    created: Stamp,
    /// Inline: a box would cost an allocation of its own per entry of a response with
    /// `Vary`. The stale windows and the epoch ride in the header's buffer instead (a hit
    /// reads them with the header), which keeps the entry's queue node in the same size
    /// class.
    variance: Option<HashBinary>,
    header: CompactHeader,
}

impl StoredMeta {
    pub(super) fn new(meta: &CacheMeta) -> Self {
        let created = Stamp::from(meta.created());
        let epoch = Stamp::from(meta.epoch());
        StoredMeta {
            fresh_until: meta.fresh_until().into(),
            created,
            variance: meta.variance(),
            header: CompactHeader::new(
                meta.response_header(),
                [meta.stale_while_revalidate_sec(), meta.stale_if_error_sec()],
                (epoch != created).then_some(epoch.0),
            ),
        }
    }

    pub(super) fn to_meta(&self) -> CacheMeta {
        let [stale_while_revalidate, stale_if_error] = self.header.stale_windows();
        let mut meta = CacheMeta::new(
            self.fresh_until.time(),
            self.created.time(),
            stale_while_revalidate,
            stale_if_error,
            self.header.to_header(),
        );
        meta.set_epoch_override(Stamp(self.header.epoch().unwrap_or(self.created.0)).time());
        if let Some(variance) = self.variance {
            meta.set_variance(variance);
        }
        meta
    }

    /// When the entry stops being useful: past its stale windows and the retention after
    /// them.
    pub(super) fn removable_at(&self, stale_retention: Duration) -> Stamp {
        let [revalidate, error] = self.header.stale_windows();
        let after = Duration::from_secs(revalidate.max(error).into()) + stale_retention;
        Stamp(self.fresh_until.0.saturating_add(nanos(after)))
    }

    /// Whether the entry is of no more use at `now`. An entry within its freshness and the
    /// retention is not, whatever its stale windows: that answer needs no read of the
    /// header's buffer (a sweep asks it of each entry it passes, a hit of the one it serves).
    pub(super) fn removable(&self, stale_retention: Duration, now: Stamp) -> bool {
        self.fresh_until.0.saturating_add(nanos(stale_retention)) <= now.0
            && self.removable_at(stale_retention) <= now
    }

    /// Memory held by the header beyond the entry itself.
    fn weight(&self) -> usize {
        self.header.heap_bytes()
    }
}

/// Bounds and retention for [`MemoryStorage`].
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimits {
    pub max_bytes: usize,
    pub max_entries: usize,
    pub max_object_bytes: usize,
    pub stale_retention: Duration,
    /// Cap on the bytes of bodies being stored at once (`cache.max_inflight_size`), counted
    /// within `max_bytes`.
    pub max_inflight_bytes: usize,
}

pub struct MemoryStorage {
    shards: Box<[Mutex<Shard>]>,
    shard_max_bytes: usize,
    shard_max_entries: usize,
    limits: MemoryLimits,
    evictions: AtomicU64,
    expirations: AtomicU64,
    transfers: transfer::Transfers,
    inflight: InflightBudget,
}

impl MemoryStorage {
    pub fn new(limits: MemoryLimits) -> Self {
        let mut n = MAX_SHARDS;
        while n > 1
            && (limits.max_bytes / n
                < MIN_OBJECTS_PER_SHARD * (limits.max_object_bytes + ENTRY_OVERHEAD)
                || limits.max_entries / n < MIN_ENTRIES_PER_SHARD)
        {
            n /= 2;
        }
        let (shard_max_bytes, shard_max_entries) =
            (limits.max_bytes / n, (limits.max_entries / n).max(1));
        MemoryStorage {
            shards: (0..n)
                .map(|_| Mutex::new(Shard::new(shard_max_bytes, shard_max_entries)))
                .collect(),
            shard_max_bytes,
            shard_max_entries,
            limits,
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            transfers: transfer::Transfers::default(),
            inflight: InflightBudget::new(limits.max_inflight_bytes),
        }
    }

    /// Leaks a new storage: Pingora's cache wants `&'static` storage, and the storage lives
    /// as long as the process.
    pub fn new_static(limits: MemoryLimits) -> &'static Self {
        Box::leak(Box::new(Self::new(limits)))
    }

    pub fn limits(&self) -> MemoryLimits {
        self.limits
    }

    fn shard(&self, primary: Key) -> &Mutex<Shard> {
        &self.shards[(primary as usize) & (self.shards.len() - 1)]
    }

    /// Whether `entry` is of no more use at `now` (see [`StoredMeta::removable_at`]).
    /// Derived when asked rather than kept in the entry: 8 bytes more would put every
    /// entry's queue node in the allocator's next size class.
    fn removable(&self, entry: &Entry, now: Stamp) -> bool {
        entry.meta.removable(self.limits.stale_retention, now)
    }

    /// Commits an entry, evicting entries of its shard to make room.
    fn insert(&self, key: Key, entry: Entry) -> Result<()> {
        if entry.weight() > self.shard_max_bytes || !weighable(entry.weight()) {
            return Error::e_explain(
                ErrorType::InternalError,
                "entry is larger than a cache shard",
            );
        }
        let mut shard = self.shard(entry.primary).lock();
        shard.remove(&key);
        let mut evicted = 0;
        while shard.bytes() + shard.reserved + entry.weight() > self.shard_max_bytes
            || shard.len() + 1 > self.shard_max_entries
        {
            if shard.evict_one().is_none() {
                break;
            }
            evicted += 1;
        }
        if shard.bytes() + shard.reserved + entry.weight() > self.shard_max_bytes {
            // Only bodies still being stored are left, and they hold the room.
            return Error::e_explain(
                ErrorType::InternalError,
                "no room beside the bodies being stored",
            );
        }
        shard.insert(key, entry, Placement::New);
        drop(shard);
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Reserves `n` bytes for a body being stored under `primary`: in the in-flight budget,
    /// and in the shard's bound, evicting entries to make room as a stored entry would. False
    /// when either is full.
    pub(super) fn reserve(&self, primary: &HashBinary, n: usize) -> bool {
        if !self.inflight.try_reserve(n) {
            return false;
        }
        let mut shard = self.shard(key_of(*primary)).lock();
        let mut evicted = 0;
        while shard.bytes() + shard.reserved + n > self.shard_max_bytes {
            if shard.evict_one().is_none() {
                break;
            }
            evicted += 1;
        }
        let fits = shard.bytes() + shard.reserved + n <= self.shard_max_bytes;
        if fits {
            shard.reserved += n;
        }
        drop(shard);
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
        }
        if !fits {
            self.inflight.release(n);
        }
        fits
    }

    /// Gives back what [`reserve`](Self::reserve) took.
    pub(super) fn release(&self, primary: &HashBinary, n: usize) {
        self.shard(key_of(*primary)).lock().reserved -= n;
        self.inflight.release(n);
    }

    /// Bytes reserved right now for bodies being stored.
    pub fn inflight_bytes(&self) -> usize {
        self.inflight.reserved()
    }

    /// The entry stored under `key`, if it can still be used.
    pub fn get(&self, key: &CacheKey) -> Option<(CacheMeta, Bytes)> {
        let k = key_of(key.combined_bin());
        let (stored, body) = {
            let mut shard = self.shard(key_of(key.primary_bin())).lock();
            match shard.get(&k) {
                None => return None,
                Some(e) if self.removable(e, Stamp::now()) => {
                    shard.remove(&k);
                    self.expirations.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Some(e) => (e.meta.clone(), e.body.clone()),
            }
        };
        Some((stored.to_meta(), body))
    }

    /// Removes every entry; returns how many there were.
    pub fn clear_now(&self) -> u64 {
        self.transfers.removed(Removal::All);
        self.shards
            .iter()
            .map(|shard| shard.lock().clear() as u64)
            .sum()
    }

    /// Stores a complete entry: the tier in front of Redis copies Redis hits in with this.
    /// Returns the entry's weight.
    pub fn put(&self, key: &CacheKey, meta: &CacheMeta, body: Bytes) -> Result<usize> {
        self.put_stored(key, StoredMeta::new(meta), body)
    }

    pub(super) fn put_stored(
        &self,
        key: &CacheKey,
        meta: StoredMeta,
        body: Bytes,
    ) -> Result<usize> {
        if body.len() > self.limits.max_object_bytes {
            return Error::e_explain(
                ErrorType::InternalError,
                "body exceeds cache max object size",
            );
        }
        let body = arena::place(body);
        let (k, primary) = (key_of(key.combined_bin()), key_of(key.primary_bin()));
        let weight = entry_weight(arena::footprint(&body), &meta, k != primary);
        self.insert(k, Entry::new(primary, meta, body, weight))?;
        Ok(weight)
    }

    /// Removes the one entry stored under `key`; returns whether there was one.
    pub fn remove_entry_now(&self, key: &CacheKey) -> bool {
        let mut shard = self.shard(key_of(key.primary_bin())).lock();
        shard.remove(&key_of(key.combined_bin())).is_some()
    }

    /// Removes every variant stored under the primary key hash `primary`; returns how many.
    pub fn remove_primary(&self, primary: HashBinary) -> u64 {
        self.remove_variants(key_of(primary))
    }

    fn remove_variants(&self, primary: Key) -> u64 {
        let mut shard = self.shard(primary).lock();
        let mut keys = shard
            .variants
            .get(&primary)
            .map_or(Vec::new(), |k| k.to_vec());
        keys.push(primary);
        let removed = keys.iter().filter(|k| shard.remove(k).is_some()).count() as u64;
        self.transfers.removed(Removal::Url(primary.to_be_bytes()));
        removed
    }
}

/// What an entry counts against the byte bound: its body, its header's bytes, and the
/// memory around them (see [`ENTRY_OVERHEAD`], [`VARIANT_OVERHEAD`] and
/// [`VARIANCE_OVERHEAD`]). `body` is what the body takes ([`arena::footprint`]).
fn entry_weight(body: usize, meta: &StoredMeta, variant: bool) -> usize {
    body + meta.weight()
        + ENTRY_OVERHEAD
        + if variant { VARIANT_OVERHEAD } else { 0 }
        + if meta.variance.is_some() {
            VARIANCE_OVERHEAD
        } else {
            0
        }
}

/// The key a purge targets; `None` for an identified entry (no backend here assigns IDs).
pub(super) fn compact_key(target: PurgeTarget<'_>) -> Option<&CompactCacheKey> {
    match target {
        PurgeTarget::Active(key) => Some(key),
        PurgeTarget::Exact(CacheEntryKey::Identified { .. }) => None,
        PurgeTarget::Exact(entry) => Some(entry.key()),
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        Ok(self
            .get(key)
            .map(|(meta, body)| -> (CacheMeta, HitHandler) {
                (meta, Box::new(MemoryHit::new(body)))
            }))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(MemoryMiss {
            storage: self,
            key: partial::storage_key(key, meta),
            meta: StoredMeta::new(meta),
            body: BodyBuffer::new(
                self.limits.max_object_bytes,
                ReserveIn::Memory(self, key.primary_bin()),
            ),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        // This store assigns no entry IDs, so an identified target cannot be one of ours.
        let Some(key) = compact_key(target) else {
            return Ok(PurgeOutcome::NotFound);
        };
        let mut shard = self.shard(key_of(key.primary_bin())).lock();
        let removed = shard.remove(&key_of(key.combined_bin()));
        self.transfers.removed(Removal::Url(key.primary_bin()));
        drop(shard);
        Ok(match removed {
            Some(_) => PurgeOutcome::Purged(None),
            None => PurgeOutcome::NotFound,
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let stored = StoredMeta::new(meta);
        let k = key_of(key.combined_bin());
        let mut shard = self.shard(key_of(key.primary_bin())).lock();
        let Some(mut entry) = shard.remove(&k) else {
            return Ok(false);
        };
        let body = arena::footprint(&entry.body);
        entry.set_weight(entry_weight(body, &stored, k != entry.primary));
        entry.meta = stored;
        // New headers can be larger than the old ones: restore the bound around this entry,
        // which goes back in as just used.
        while shard.bytes() + shard.reserved + entry.weight() > self.shard_max_bytes {
            if shard.evict_one().is_none() {
                break;
            }
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        shard.insert(k, entry, Placement::Used);
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[async_trait]
impl CacheBackend for MemoryStorage {
    fn as_storage(&'static self) -> &'static (dyn Storage + Sync) {
        self
    }

    async fn clear(&'static self) -> Result<u64> {
        Ok(self.clear_now())
    }

    async fn remove(&'static self, key: &CacheKey) -> Result<bool> {
        Ok(self.remove_variants(key_of(key.primary_bin())) > 0)
    }

    fn memory_tier(&'static self) -> Option<&'static MemoryStorage> {
        Some(self)
    }

    async fn peek(&'static self, key: &CacheKey) -> Option<(CacheMeta, Bytes)> {
        self.get(key)
    }

    async fn remove_entry(&'static self, key: &CacheKey) {
        self.remove_entry_now(key);
    }

    fn usage(&self) -> Usage {
        let mut usage = Usage {
            evictions: self.evictions.load(Ordering::Relaxed),
            expirations: self.expirations.load(Ordering::Relaxed),
            ..Usage::default()
        };
        for shard in self.shards.iter() {
            let shard = shard.lock();
            usage.entries += shard.len() as u64;
            usage.bytes += shard.bytes() as u64;
        }
        usage
    }

    /// Part `part` of `parts` is every shard whose index is `part` modulo `parts`, so that a
    /// pass over the storage is spread over time. In each shard, entries past use are
    /// removed from the old end of its queues ([`Shard::remove_unused`]): a walk of every
    /// entry held the shard's lock for milliseconds at a few hundred thousand entries, and
    /// every request for a key of that shard waited (at 1,000 connections, enough of them to
    /// show in the p99). The lock is held for [`SWEEP_BATCH`] removals at most and then
    /// handed to a request waiting for it, if any, before the next batch.
    fn sweep_expired(&self, part: usize, parts: usize) -> u64 {
        let mut removed = 0;
        let parts = parts.max(1);
        for shard in self.shards.iter().skip(part % parts).step_by(parts) {
            loop {
                let now = Stamp::now();
                let mut guard = shard.lock();
                let n =
                    guard.remove_unused(|e| self.removable(e, now), SWEEP_BATCH, SWEEP_LOOKAHEAD);
                MutexGuard::unlock_fair(guard);
                removed += n as u64;
                if n < SWEEP_BATCH {
                    break;
                }
            }
        }
        self.expirations.fetch_add(removed, Ordering::Relaxed);
        removed
    }
}

struct MemoryMiss {
    storage: &'static MemoryStorage,
    key: CacheKey,
    meta: StoredMeta,
    body: BodyBuffer,
}

#[async_trait]
impl HandleMiss for MemoryMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.body.push(data)
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let weight = self
            .storage
            .put_stored(&self.key, self.meta, self.body.finish()?)?;
        Ok(MissFinishType::Created(weight))
    }
}

/// A hit on a complete body. Reads and range seeks are `Bytes` slices: no copy per request.
pub(super) struct MemoryHit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

impl MemoryHit {
    pub(super) fn new(body: Bytes) -> Self {
        let end = body.len();
        MemoryHit {
            body,
            start: 0,
            end,
            done: false,
        }
    }
}

/// The whole body of the hit `hit` as a region of the body file (see [`arena`]): its
/// descriptor, offset and length, where the body lives there and none of it was read yet.
pub fn hit_body_file(hit: &HitHandler) -> Option<(RawFd, u64, usize)> {
    let hit = hit.as_any().downcast_ref::<MemoryHit>()?;
    if hit.done || hit.start != 0 || hit.end != hit.body.len() {
        return None;
    }
    let (fd, offset) = arena::region(&hit.body)?;
    Some((fd, offset, hit.body.len()))
}

#[async_trait]
impl HandleHit for MemoryHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start out of range {start} >= {}", self.body.len()),
            );
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |e| e.min(self.body.len()));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::trace::Span;
    use pingora_http::ResponseHeader;

    fn limits(max_bytes: usize, max_entries: usize) -> MemoryLimits {
        MemoryLimits {
            max_bytes,
            max_entries,
            max_object_bytes: max_bytes.min(1 << 20),
            stale_retention: Duration::ZERO,
            max_inflight_bytes: usize::MAX,
        }
    }

    fn meta(fresh_for: Duration) -> CacheMeta {
        let now = SystemTime::now();
        CacheMeta::new(
            now + fresh_for,
            now,
            0,
            0,
            ResponseHeader::build(200, None).unwrap(),
        )
    }

    #[test]
    fn stamps_keep_times_to_the_nanosecond_and_saturate() {
        let t = UNIX_EPOCH + Duration::new(1_796_000_000, 123_456_789);
        assert_eq!(Stamp::from(t).time(), t);
        assert_eq!(Stamp::from(UNIX_EPOCH - Duration::from_secs(1)), Stamp(0));
        let far = UNIX_EPOCH + Duration::from_secs(600 * 365 * 86_400);
        assert_eq!(Stamp::from(far), Stamp(u64::MAX));
        let mut m = StoredMeta::new(&meta(Duration::from_secs(60)));
        m.fresh_until = Stamp(u64::MAX - 1);
        assert_eq!(m.removable_at(Duration::from_secs(1)), Stamp(u64::MAX));
    }

    /// An entry past its freshness stays while a stale window or the retention lasts.
    #[test]
    fn stale_windows_and_retention_keep_an_expired_entry() {
        let now = SystemTime::now();
        let expired = |ago: u64, windows: (u32, u32)| {
            StoredMeta::new(&CacheMeta::new(
                now - Duration::from_secs(ago),
                now - Duration::from_secs(ago + 1),
                windows.0,
                windows.1,
                ResponseHeader::build(200, None).unwrap(),
            ))
        };
        let (none, minute, now) = (Duration::ZERO, Duration::from_secs(60), Stamp::from(now));
        assert!(expired(10, (0, 0)).removable(none, now));
        assert!(!expired(10, (0, 0)).removable(minute, now));
        assert!(!expired(10, (30, 0)).removable(none, now));
        assert!(!expired(10, (0, 30)).removable(none, now));
        assert!(expired(40, (30, 20)).removable(none, now));
        assert!(!expired(40, (30, 20)).removable(minute, now));
        assert!(expired(100, (30, 20)).removable(minute, now));
    }

    #[test]
    fn an_entry_with_a_variance_and_a_large_body_weighs_what_it_holds() {
        let plain = StoredMeta::new(&meta(Duration::from_secs(60)));
        let mut with_vary = meta(Duration::from_secs(60));
        with_vary.set_variance([7; 16]);
        let varied = StoredMeta::new(&with_vary);
        assert_eq!(
            entry_weight(100, &varied, false) - entry_weight(100, &plain, false),
            VARIANCE_OVERHEAD
        );
        assert_eq!(
            entry_weight(100, &varied, true) - entry_weight(100, &plain, false),
            VARIANCE_OVERHEAD + VARIANT_OVERHEAD
        );
        // A body in the body file counts whole pages.
        let s = MemoryStorage::new(limits(1 << 30, 100));
        let key = CacheKey::new("/large", "");
        let weight = s
            .put(
                &key,
                &meta(Duration::from_secs(60)),
                vec![1u8; 20_000].into(),
            )
            .unwrap();
        assert_eq!(weight, entry_weight(20_480, &plain, false));
    }

    /// The queue node (key, entry, two links) stays in mimalloc's 160-byte size class: each
    /// class down is measured in RSS per entry (benches/README.md, "Memory per entry").
    #[test]
    fn an_entry_node_fits_in_160_bytes() {
        assert!(std::mem::size_of::<(Key, Entry, usize, usize)>() <= 160);
    }

    #[test]
    fn an_entry_too_heavy_for_its_weight_field_is_refused() {
        let s = MemoryStorage::new(limits(usize::MAX / 2, 10));
        let stored = StoredMeta::new(&meta(Duration::from_secs(60)));
        let heavy = Entry::new(1, stored.clone(), Bytes::new(), 1 << 33);
        assert_eq!(heavy.weight, u32::MAX);
        assert!(s.insert(1, heavy).is_err());
        assert_eq!(s.usage().entries, 0);
        let light = Entry::new(1, stored, Bytes::new(), 100);
        assert!(s.insert(1, light).is_ok());
        assert_eq!(s.usage().bytes, 100);
    }

    async fn put(s: &'static MemoryStorage, url: &str, body: &[u8]) -> Result<()> {
        put_meta(s, url, body, meta(Duration::from_secs(60))).await
    }

    async fn put_meta(
        s: &'static MemoryStorage,
        url: &str,
        body: &[u8],
        m: CacheMeta,
    ) -> Result<()> {
        let key = CacheKey::new(url, "");
        let mut miss = s
            .get_miss_handler(&key, &m, &Span::inactive().handle())
            .await?;
        miss.write_body(Bytes::copy_from_slice(body), true).await?;
        miss.finish().await.map(|_| ())
    }

    async fn get(s: &'static MemoryStorage, url: &str) -> Option<Bytes> {
        let key = CacheKey::new(url, "");
        let (_, mut hit) = s.lookup(&key, &Span::inactive().handle()).await.unwrap()?;
        hit.read_body().await.unwrap()
    }

    #[tokio::test]
    async fn stores_and_reads_back() {
        let s = MemoryStorage::new_static(limits(1 << 20, 100));
        assert!(get(s, "a").await.is_none());
        put(s, "a", b"hello").await.unwrap();
        assert_eq!(get(s, "a").await.unwrap(), "hello");
        let u = s.usage();
        assert_eq!(u.entries, 1);
        assert!(u.bytes >= 5 + ENTRY_OVERHEAD as u64);
    }

    #[tokio::test]
    async fn entry_bound_evicts_entries_not_read_first() {
        let s = MemoryStorage::new_static(limits(1 << 20, 3));
        for url in ["a", "b", "c"] {
            put(s, url, b"x").await.unwrap();
        }
        // Read twice: "a" moves on to the main queue, "b" is the oldest one-off entry.
        assert!(get(s, "a").await.is_some());
        assert!(get(s, "a").await.is_some());
        put(s, "d", b"x").await.unwrap();
        assert!(get(s, "b").await.is_none());
        for url in ["a", "c", "d"] {
            assert!(get(s, url).await.is_some(), "{url}");
        }
        assert_eq!(s.usage().entries, 3);
        assert_eq!(s.usage().evictions, 1);
    }

    #[tokio::test]
    async fn byte_bound_holds_after_every_insert() {
        let max = 64 << 10;
        let s = MemoryStorage::new_static(limits(max, 10_000));
        for i in 0..200 {
            put(s, &format!("k{i}"), &vec![b'x'; 1000 + i])
                .await
                .unwrap();
            assert!(
                s.usage().bytes <= max as u64,
                "after insert {i}: {:?}",
                s.usage()
            );
        }
        assert!(s.usage().evictions > 0);
        assert!(get(s, "k199").await.is_some());
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let mut l = limits(1 << 20, 100);
        l.max_object_bytes = 10;
        let s = MemoryStorage::new_static(l);
        assert!(put(s, "big", &[0; 11]).await.is_err());
        assert!(get(s, "big").await.is_none());
        assert_eq!(s.usage().entries, 0);
    }

    #[tokio::test]
    async fn expired_entries_are_freed() {
        let s = MemoryStorage::new_static(limits(1 << 20, 100));
        let now = SystemTime::now();
        let gone = CacheMeta::new(
            now - Duration::from_secs(10),
            now,
            0,
            0,
            ResponseHeader::build(200, None).unwrap(),
        );
        put_meta(s, "old", b"x", gone).await.unwrap();
        put(s, "new", b"x").await.unwrap();
        assert_eq!(s.sweep_expired(0, 1), 1);
        assert_eq!(s.usage().entries, 1);
        assert!(get(s, "new").await.is_some());
    }

    /// A sweep frees more than one batch of a shard (taking its lock again for each) and
    /// keeps what is still of use.
    #[tokio::test]
    async fn a_sweep_frees_every_expired_entry_of_a_shard_in_batches() {
        let s = MemoryStorage::new_static(limits(64 << 20, 10_000));
        let now = SystemTime::now();
        let gone = || {
            let header = ResponseHeader::build(200, None).unwrap();
            CacheMeta::new(now - Duration::from_secs(10), now, 0, 0, header)
        };
        let n = 3 * SWEEP_BATCH * s.shards.len() + 7;
        for i in 0..n {
            put_meta(s, &format!("old{i}"), b"x", gone()).await.unwrap();
        }
        put(s, "new", b"x").await.unwrap();
        assert_eq!(s.sweep_expired(0, 1), n as u64);
        assert_eq!(s.usage().entries, 1);
        assert_eq!(s.usage().expirations, n as u64);
        assert!(get(s, "new").await.is_some());
    }

    #[tokio::test]
    async fn a_sweep_in_parts_frees_each_shard_once_per_round() {
        let s = MemoryStorage::new_static(MemoryLimits {
            max_object_bytes: 1024,
            ..limits(64 << 20, 10_000)
        });
        assert!(s.shards.len() >= 4, "{} shards", s.shards.len());
        let now = SystemTime::now();
        let gone = || {
            let header = ResponseHeader::build(200, None).unwrap();
            CacheMeta::new(now - Duration::from_secs(10), now, 0, 0, header)
        };
        for i in 0..200 {
            put_meta(s, &format!("old{i}"), b"x", gone()).await.unwrap();
        }
        put(s, "new", b"x").await.unwrap();
        let parts = 4;
        let first = s.sweep_expired(0, parts);
        assert!(first > 0 && first < 200, "part 0 of 4 freed {first}");
        assert_eq!(s.sweep_expired(0, parts), 0, "part 0 again");
        let rest: u64 = (1..parts).map(|p| s.sweep_expired(p, parts)).sum();
        assert_eq!(first + rest, 200);
        assert_eq!(s.usage().entries, 1);
        assert!(get(s, "new").await.is_some());
    }

    #[tokio::test]
    async fn clear_and_remove() {
        let s = MemoryStorage::new_static(limits(1 << 20, 100));
        put(s, "a", b"1").await.unwrap();
        put(s, "b", b"2").await.unwrap();
        assert!(s.remove(&CacheKey::new("a", "")).await.unwrap());
        assert!(!s.remove(&CacheKey::new("a", "")).await.unwrap());
        assert_eq!(s.clear().await.unwrap(), 1);
        assert_eq!(s.usage().entries, 0);
        assert_eq!(s.usage().bytes, 0);
        assert!(get(s, "b").await.is_none());
    }

    #[tokio::test]
    async fn remove_takes_every_variant_and_only_them() {
        let s = MemoryStorage::new_static(limits(1 << 20, 100));
        let span = Span::inactive().handle();
        for (url, variance) in [
            ("v", Some([1; 16])),
            ("v", Some([2; 16])),
            ("v", None),
            ("w", Some([1; 16])),
        ] {
            let mut key = CacheKey::new(url, "");
            if let Some(v) = variance {
                key.set_variance_key(v);
            }
            let mut miss = s
                .get_miss_handler(&key, &meta(Duration::from_secs(60)), &span)
                .await
                .unwrap();
            miss.write_body(Bytes::from_static(b"x"), true)
                .await
                .unwrap();
            miss.finish().await.unwrap();
        }
        assert_eq!(s.usage().entries, 4);
        assert!(s.remove(&CacheKey::new("v", "")).await.unwrap());
        assert_eq!(
            s.usage().entries,
            1,
            "all three entries of v went, w stayed"
        );
        assert!(!s.remove(&CacheKey::new("v", "")).await.unwrap());
        assert_eq!(s.clear().await.unwrap(), 1);
        assert!(s.shards.iter().all(|sh| sh.lock().variants.is_empty()));
    }

    #[tokio::test]
    async fn seek_serves_ranges_without_copying() {
        let s = MemoryStorage::new_static(limits(1 << 20, 100));
        put(s, "r", b"0123456789").await.unwrap();
        let (_, mut hit) = s
            .lookup(&CacheKey::new("r", ""), &Span::inactive().handle())
            .await
            .unwrap()
            .unwrap();
        hit.seek(2, Some(5)).unwrap();
        assert_eq!(hit.read_body().await.unwrap().unwrap(), "234");
        assert!(hit.read_body().await.unwrap().is_none());
        assert!(hit.seek(10, None).is_err());
    }

    #[tokio::test]
    async fn meta_round_trips_through_storage() {
        let s = MemoryStorage::new_static(limits(1 << 20, 100));
        let now = SystemTime::now();
        let mut header = ResponseHeader::build(203, None).unwrap();
        header.insert_header("etag", "\"x\"").unwrap();
        let mut m = CacheMeta::new(now + Duration::from_secs(60), now, 7, 9, header);
        m.set_epoch_override(now - Duration::from_secs(30));
        m.set_variance([3; 16]);
        put_meta(s, "m", b"body", m).await.unwrap();
        let (got, _) = s
            .lookup(&CacheKey::new("m", ""), &Span::inactive().handle())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.response_header().status, 203);
        assert_eq!(got.headers()["etag"], "\"x\"");
        assert_eq!(
            (got.stale_while_revalidate_sec(), got.stale_if_error_sec()),
            (7, 9)
        );
        assert_eq!(got.variance(), Some([3; 16]));
        assert!(got.age() >= Duration::from_secs(30), "the epoch survives");
        assert_eq!(got.created(), now);
        assert!(got.is_fresh(now));
    }

    #[test]
    fn shards_keep_objects_fitting() {
        let s = MemoryStorage::new(MemoryLimits {
            max_bytes: 256 << 20,
            max_entries: 100_000,
            max_object_bytes: 8 << 20,
            stale_retention: Duration::ZERO,
            max_inflight_bytes: usize::MAX,
        });
        assert_eq!(s.shards.len(), 4);
        assert!(s.shard_max_bytes >= 4 * (8 << 20));
        let small = MemoryStorage::new(limits(1 << 20, 3));
        assert_eq!(small.shards.len(), 1);
    }
}
