//! Storage backends. Each implements pingora-cache's [`Storage`] (the request path uses only
//! that) plus [`CacheBackend`], the few operations the admin service needs on top.
//!
//! A backend owns its size bound: it is enforced when an entry is committed, inside the
//! backend, so it holds however many requests fill the cache at once. No Pingora eviction
//! manager is used.
//!
//! A 206 handed to a backend's miss handler is the URL's partial entry: every backend writes
//! it under `cache::partial::storage_key`, apart from the full response.

pub mod arena;
pub mod entry;
pub mod inflight;
pub mod memory;
pub mod redis;
pub mod tiered;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::storage::Storage;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_error::Result;

pub use memory::{hit_body_file, MemoryStorage};
pub use tiered::{TierService, TieredStorage};

/// What a backend holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub entries: u64,
    pub bytes: u64,
    /// Entries removed to stay within the bounds, since start.
    pub evictions: u64,
    /// Entries removed because they could no longer be served, since start.
    pub expirations: u64,
}

#[async_trait]
pub trait CacheBackend: Storage + Send + Sync + 'static {
    /// The same object as the `Storage` trait object Pingora's cache takes.
    fn as_storage(&'static self) -> &'static (dyn Storage + Sync);

    /// Removes every entry; returns how many there were.
    async fn clear(&'static self) -> Result<u64>;

    /// Removes the entry stored under `key`; returns whether there was one.
    async fn remove(&'static self, key: &CacheKey) -> Result<bool>;

    fn usage(&self) -> Usage;

    /// The entry stored under exactly `key`, read without taking or waiting on any fill
    /// lock: how the proxy reads a URL's partial entry (`cache::partial`) once the lookup of
    /// its full entry has missed.
    async fn peek(&'static self, key: &CacheKey) -> Option<(CacheMeta, Bytes)>;

    /// Removes the entry stored under exactly `key`, leaving the URL's other entries (a
    /// partial entry that a full one superseded).
    async fn remove_entry(&'static self, key: &CacheKey);

    /// Frees entries that can no longer be served, in part `part` of `parts` of the store
    /// (`part < parts`). The sweeper goes through the parts one at a time, spread over its
    /// interval, so that no pass holds the store's locks, or the CPU the workers share with
    /// it, for long. Backends whose store expires entries by itself need not do anything.
    fn sweep_expired(&self, _part: usize, _parts: usize) -> u64 {
        0
    }

    /// A fill of `key` that this request started is over without a stored response (the
    /// response was not cacheable, or the fetch failed): a shared tier releases its fill
    /// lock so other instances stop waiting. Storing a response releases it by itself.
    async fn fill_done(&'static self, _key: &CacheKey) {}

    /// The in-process memory storage (the whole cache, or the tier in front of a shared
    /// one): what an upgrade hands to the new process.
    fn memory_tier(&'static self) -> Option<&'static MemoryStorage>;

    /// Lookups answered by the in-process tier, where the backend has tiers.
    fn l1_hits(&self) -> Option<u64> {
        None
    }

    /// The shared tier's state, where there is one.
    fn l2_status(&self) -> Option<L2Status> {
        None
    }
}

/// The shared (Redis) tier, as `/cache/stats` and readiness report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct L2Status {
    pub up: bool,
    pub circuit_open: bool,
    pub hits: u64,
    pub misses: u64,
    /// Entries completely written.
    pub writes: u64,
    pub errors: u64,
}
