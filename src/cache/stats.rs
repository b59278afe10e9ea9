//! Counters of what the cache did, kept by the proxy as requests finish.
//!
//! The storage backend knows what it holds (entries, bytes, evictions); these counters hold
//! what only the request path knows (hits, misses). The admin service joins both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;

/// How a response relates to the cache; written to `X-Cache` and the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from a fresh stored response.
    Hit,
    /// Not in the cache, or not cacheable; fetched from the origin.
    Miss,
    /// A stored response had expired and could not be revalidated; fetched in full.
    Expired,
    /// Served from a stored response past its freshness (stale-while-revalidate or
    /// stale-if-error).
    Stale,
    /// A stored response was revalidated with the origin (304) and served.
    Revalidated,
    /// The cache was not consulted: the method or request is not cacheable.
    Bypass,
}

impl CacheStatus {
    /// The `X-Cache` value, made at compile time (no parsing or copy per response).
    pub fn header_value(self) -> http::HeaderValue {
        http::HeaderValue::from_static(self.as_str())
    }

    /// Every status, in [`CacheStatus::index`] order.
    pub const ALL: [CacheStatus; 6] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Expired,
        CacheStatus::Stale,
        CacheStatus::Revalidated,
        CacheStatus::Bypass,
    ];

    /// The position in [`CacheStatus::ALL`], for tables indexed by status.
    pub const fn index(self) -> usize {
        self as usize
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

#[derive(Debug, Default)]
pub struct CacheStats {
    hits: AtomicU64,
    misses: AtomicU64,
    expired: AtomicU64,
    stale: AtomicU64,
    revalidated: AtomicU64,
    bypass: AtomicU64,
    coalesced_waits: AtomicU64,
    last_cleared: Mutex<Option<SystemTime>>,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub hits: u64,
    pub misses: u64,
    pub expired: u64,
    pub stale: u64,
    pub revalidated: u64,
    pub bypass: u64,
    /// Requests that waited for another request's fetch of the same key.
    pub coalesced_waits: u64,
    pub last_cleared: Option<SystemTime>,
}

impl CacheStats {
    pub fn record(&self, status: CacheStatus) {
        let counter = match status {
            CacheStatus::Hit => &self.hits,
            CacheStatus::Miss => &self.misses,
            CacheStatus::Expired => &self.expired,
            CacheStatus::Stale => &self.stale,
            CacheStatus::Revalidated => &self.revalidated,
            CacheStatus::Bypass => &self.bypass,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_coalesced_wait(&self) {
        self.coalesced_waits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_clear(&self) {
        *self.last_cleared.lock() = Some(SystemTime::now());
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            stale: self.stale.load(Ordering::Relaxed),
            revalidated: self.revalidated.load(Ordering::Relaxed),
            bypass: self.bypass.load(Ordering::Relaxed),
            coalesced_waits: self.coalesced_waits.load(Ordering::Relaxed),
            last_cleared: *self.last_cleared.lock(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_status() {
        let s = CacheStats::default();
        s.record(CacheStatus::Hit);
        s.record(CacheStatus::Hit);
        s.record(CacheStatus::Miss);
        let snap = s.snapshot();
        assert_eq!((snap.hits, snap.misses, snap.stale), (2, 1, 0));
        assert!(snap.last_cleared.is_none());
        s.record_clear();
        assert!(s.snapshot().last_cleared.is_some());
    }
}
