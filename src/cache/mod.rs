//! The HTTP cache: key, policy, storage backends and counters, bundled in [`Cache`], which
//! the proxy and the admin service share.
//!
//! This module decides what is cached and holds it; it knows nothing of Pingora sessions or
//! of the admin API's routes.

pub mod conditional;
pub mod directives;
pub mod freshness;
pub mod invalidation;
pub mod key;
pub mod partial;
pub mod policy;
pub mod stats;
pub mod storage;
pub mod vary;

use std::time::Duration;

use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::CacheOptionOverrides;

use crate::config::{BackendConfig, CacheConfig};
use directives::TargetList;
use freshness::FreshnessRules;
pub use policy::{merge_not_modified, CachePolicy, HitDecision, RequestDirectives};
pub use stats::{CacheStats, CacheStatus, StatsSnapshot};
use storage::memory::MemoryLimits;
use storage::redis::RedisTier;
pub use storage::{CacheBackend, L2Status, MemoryStorage, TieredStorage, Usage};

/// The configured bounds of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_entries: usize,
}

/// Everything the request path and the admin service need to use the cache.
pub struct Cache {
    pub backend: &'static dyn CacheBackend,
    /// Coalesces concurrent misses of one key into a single origin fetch.
    pub lock: &'static CacheKeyLockImpl,
    pub policy: CachePolicy,
    pub stats: CacheStats,
    /// The configured size bounds, reported alongside usage.
    pub limits: Limits,
    pub max_object_bytes: usize,
    lock_timeout: Duration,
}

impl Cache {
    /// The cache described by `config`, and the Redis tier when it has one (its upkeep
    /// runs as a service of its own, see [`storage::TierService`]).
    pub fn from_config(config: &CacheConfig) -> (Self, Option<&'static TieredStorage>) {
        let memory = |max_bytes| {
            MemoryStorage::new_static(MemoryLimits {
                max_bytes,
                max_entries: config.max_entries,
                max_object_bytes: config.max_object_bytes.min(max_bytes),
                stale_retention: config.stale_retention,
                max_inflight_bytes: config.max_inflight_bytes(max_bytes),
            })
        };
        match &config.backend {
            BackendConfig::Memory => {
                let limits = Limits {
                    max_bytes: config.max_bytes,
                    max_entries: config.max_entries,
                };
                (
                    Self::with_backend(memory(config.max_bytes), limits, config),
                    None,
                )
            }
            BackendConfig::Redis(redis) => {
                let l1 = (redis.l1_max_bytes > 0).then(|| memory(redis.l1_max_bytes));
                let tier = TieredStorage::new(
                    l1,
                    RedisTier::new(redis.clone()),
                    config.stale_retention,
                    config.max_object_bytes,
                    config.max_inflight_bytes(redis.l1_max_bytes),
                    config.lock_timeout,
                )
                .new_static();
                let limits = Limits {
                    max_bytes: redis.l1_max_bytes,
                    max_entries: if l1.is_some() { config.max_entries } else { 0 },
                };
                (Self::with_backend(tier, limits, config), Some(tier))
            }
        }
    }

    pub fn with_backend(
        backend: &'static dyn CacheBackend,
        limits: Limits,
        config: &CacheConfig,
    ) -> Self {
        // The age timeout bounds how long a stuck writer blocks its readers.
        let lock: &'static CacheLock = Box::leak(CacheLock::new_boxed(config.lock_timeout));
        Cache {
            backend,
            lock,
            policy: CachePolicy {
                freshness: FreshnessRules {
                    default_ttl: config.default_ttl,
                    heuristic_fraction: config.heuristic_fraction,
                    heuristic_max: config.heuristic_max,
                },
                stale_if_error: config.stale_if_error,
                ignore_client_no_cache: config.ignore_client_no_cache,
                targets: TargetList::new(config.targeted_cache_control.clone()),
            },
            stats: CacheStats::default(),
            limits,
            max_object_bytes: config.max_object_bytes,
            lock_timeout: config.lock_timeout,
        }
    }

    /// Per-request cache options: how long a request waits behind another one fetching the
    /// same key before it goes to the origin itself.
    pub fn lock_options(&self) -> CacheOptionOverrides {
        let mut o = CacheOptionOverrides::default();
        o.wait_timeout = Some(self.lock_timeout);
        o
    }
}
