//! Storage backends. Each implements pingora-cache's [`Storage`] (the request path uses only
//! that) plus [`CacheBackend`], the few operations the admin service needs on top.
//!
//! A backend owns its size bound: it is enforced when an entry is committed, inside the
//! backend, so it holds however many requests fill the cache at once. No Pingora eviction
//! manager is used.

pub mod memory;

use async_trait::async_trait;
use pingora_cache::storage::Storage;
use pingora_cache::CacheKey;
use pingora_error::Result;

pub use memory::MemoryStorage;

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

    /// Frees entries that can no longer be served. Called periodically; backends whose
    /// store expires entries by itself need not do anything.
    fn sweep_expired(&self) -> u64 {
        0
    }
}
