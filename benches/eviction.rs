//! Hit ratio of the memory storage's eviction policy on synthetic traces, beside an exact
//! LRU and Pingora's TinyUFO (TinyLFU admission, S3-FIFO eviction): no network and no
//! timing, so the figures do not depend on the machine or its load.
//!
//! Traces: Zipf-distributed keys (α 0.7, 0.8, 0.9, 1.0) over 1,000,000 keys, each once
//! plain and once with a scan every `SCAN_EVERY` requests: `SCAN_LEN` keys asked for once and
//! never again (a crawler, a cache-busting client). Cache sizes: 1%, 5% and 10% of the key
//! space, in entries (every entry has the same size, so the entry bound is the one that
//! evicts). The first quarter of each trace warms the caches and is not counted; the hit
//! ratio is over the Zipf requests of the rest (a scan's one-off keys can never hit, under
//! any policy, so counting them would only scale every figure down).
//!
//! Policies:
//! - exact LRU per shard: `lru::LruCache`, sharded as `MemoryStorage` shards (by the low
//!   bits of the key hash), the storage's policy up to this commit;
//! - the memory storage as built (`MemoryStorage`, through its own `get` and `put`);
//! - TinyUFO, `put` (admission may refuse a new entry) and `force_put` (always stores it, as
//!   a proxy needs: the requests waiting on a fill read the entry right after it).
//!
//! ```text
//! cargo bench --bench eviction                   # about 5 minutes; writes
//!                                                # benches/results/eviction.md
//! REQUESTS=1000000 cargo bench --bench eviction  # shorter, prints only
//! ```
//!
//! `REQUESTS` (4,000,000 per trace), `RESULTS` (file to write; by default the results file,
//! only for a run with the default `REQUESTS`).

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use caching_proxy::cache::storage::memory::{MemoryLimits, MemoryStorage};
use lru::LruCache;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_http::ResponseHeader;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Zipf;

const KEYS: u64 = 1_000_000;
const ALPHAS: [f64; 4] = [0.7, 0.8, 0.9, 1.0];
/// Cache sizes as a share of the key space.
const SIZES: [f64; 3] = [0.01, 0.05, 0.10];
/// A scan every this many requests (of the whole trace, scans included) ...
const SCAN_EVERY: usize = 100_000;
/// ... of this many one-off keys: 2% of the key space, twice the smallest cache.
const SCAN_LEN: usize = 20_000;
/// Keys of scans start here, far from the Zipf keys (1..=KEYS).
const SCAN_KEYS: u64 = 1 << 40;
const DEFAULT_REQUESTS: usize = 4_000_000;

/// One request of a trace: a key, and whether it belongs to a scan.
#[derive(Clone, Copy)]
struct Request {
    key: u64,
    scan: bool,
}

fn trace(alpha: f64, requests: usize, scans: bool) -> Vec<Request> {
    // Seeded: every policy and every run sees the same trace.
    let mut rng = StdRng::seed_from_u64(alpha.to_bits());
    let zipf = Zipf::new(KEYS, alpha).expect("valid parameters");
    let mut next_scan_key = SCAN_KEYS;
    let mut trace = Vec::with_capacity(requests);
    while trace.len() < requests {
        if scans && trace.len() % SCAN_EVERY == SCAN_EVERY - SCAN_LEN {
            for _ in 0..SCAN_LEN.min(requests - trace.len()) {
                trace.push(Request {
                    key: next_scan_key,
                    scan: true,
                });
                next_scan_key += 1;
            }
            continue;
        }
        trace.push(Request {
            key: rng.sample(zipf) as u64,
            scan: false,
        });
    }
    trace
}

/// A well-mixed 64-bit hash of a key (splitmix64's finaliser): the keys of the trace are
/// small integers, the storage's are uniform hashes.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A cache under test: `access` looks the key up and, on a miss, stores it.
trait Policy {
    fn name(&self) -> &'static str;
    /// Whether the key was a hit.
    fn access(&mut self, key: u64) -> bool;
}

/// Exact LRU per shard, sharded as the memory storage shards: by the low bits of the hash.
struct ShardedLru {
    shards: Vec<LruCache<u64, ()>>,
}

impl ShardedLru {
    fn new(entries: usize) -> Self {
        let n = shard_count(entries);
        let per_shard = NonZeroUsize::new(entries / n).expect("at least one entry per shard");
        ShardedLru {
            shards: (0..n).map(|_| LruCache::new(per_shard)).collect(),
        }
    }
}

/// `MemoryStorage::new`'s shard count for an entry bound (the byte bound is not binding
/// here): halved from 16 while a shard would get fewer than 256 entries.
fn shard_count(entries: usize) -> usize {
    let mut n = 16;
    while n > 1 && entries / n < 256 {
        n /= 2;
    }
    n
}

impl Policy for ShardedLru {
    fn name(&self) -> &'static str {
        "exact LRU per shard"
    }

    fn access(&mut self, key: u64) -> bool {
        let hash = mix(key);
        let n = self.shards.len();
        let shard = &mut self.shards[hash as usize & (n - 1)];
        if shard.get(&hash).is_some() {
            return true;
        }
        shard.push(hash, ());
        false
    }
}

/// The memory storage as built, through its public `get` and `put`.
struct Storage {
    storage: MemoryStorage,
    key: CacheKey,
    meta: CacheMeta,
}

impl Storage {
    fn new(entries: usize) -> Self {
        let now = SystemTime::now();
        let header = ResponseHeader::build(200, Some(1)).unwrap();
        Storage {
            storage: MemoryStorage::new(MemoryLimits {
                // The entry bound is the one that evicts: every entry has the same weight.
                max_bytes: 1 << 40,
                max_entries: entries,
                max_object_bytes: 1024,
                stale_retention: Duration::ZERO,
                max_inflight_bytes: usize::MAX,
            }),
            key: CacheKey::new(Vec::new(), ""),
            meta: CacheMeta::new(now + Duration::from_secs(1 << 20), now, 0, 0, header),
        }
    }
}

impl Policy for Storage {
    fn name(&self) -> &'static str {
        "memory storage (as built)"
    }

    fn access(&mut self, key: u64) -> bool {
        let hash = mix(key);
        let mut bin = [0; 16];
        bin[..8].copy_from_slice(&mix(hash).to_be_bytes());
        bin[8..].copy_from_slice(&hash.to_be_bytes());
        self.key.set_primary_bin_override(bin);
        if self.storage.get(&self.key).is_some() {
            return true;
        }
        self.storage
            .put(&self.key, &self.meta, Bytes::new())
            .expect("an empty body fits");
        false
    }
}

struct Ufo {
    cache: tinyufo::TinyUfo<u64, ()>,
    force: bool,
}

impl Policy for Ufo {
    fn name(&self) -> &'static str {
        if self.force {
            "TinyUFO, force_put"
        } else {
            "TinyUFO, put"
        }
    }

    fn access(&mut self, key: u64) -> bool {
        if self.cache.get(&key).is_some() {
            return true;
        }
        if self.force {
            self.cache.force_put(key, (), 1);
        } else {
            self.cache.put(key, (), 1);
        }
        false
    }
}

fn policies(entries: usize) -> Vec<Box<dyn Policy>> {
    vec![
        Box::new(ShardedLru::new(entries)),
        Box::new(Storage::new(entries)),
        Box::new(Ufo {
            cache: tinyufo::TinyUfo::new(entries, entries),
            force: false,
        }),
        Box::new(Ufo {
            cache: tinyufo::TinyUfo::new(entries, entries),
            force: true,
        }),
    ]
}

/// The hit ratio (percent) of the Zipf requests after the warm-up quarter.
fn hit_ratio(policy: &mut dyn Policy, trace: &[Request]) -> f64 {
    let warm = trace.len() / 4;
    let (mut hits, mut counted) = (0u64, 0u64);
    for (i, r) in trace.iter().enumerate() {
        let hit = policy.access(r.key);
        if i >= warm && !r.scan {
            counted += 1;
            hits += u64::from(hit);
        }
    }
    100.0 * hits as f64 / counted.max(1) as f64
}

fn main() {
    let requests = std::env::var("REQUESTS")
        .ok()
        .map(|v| v.parse().expect("REQUESTS is a number"))
        .unwrap_or(DEFAULT_REQUESTS);
    let started = Instant::now();
    let names: Vec<&str> = policies(1 << 12).iter().map(|p| p.name()).collect();
    let mut table = String::new();
    writeln!(table, "| α | cache | trace | {} |", names.join(" | ")).unwrap();
    writeln!(table, "|--:|--:|---|{}", "--:|".repeat(names.len())).unwrap();
    print!("{table}");
    for alpha in ALPHAS {
        for scans in [false, true] {
            let trace = trace(alpha, requests, scans);
            for size in SIZES {
                let entries = (size * KEYS as f64) as usize;
                let ratios: Vec<String> = policies(entries)
                    .iter_mut()
                    .map(|p| format!("{:.1}", hit_ratio(p.as_mut(), &trace)))
                    .collect();
                let line = format!(
                    "| {alpha:.1} | {}% | {} | {} |\n",
                    size * 100.0,
                    if scans { "Zipf + scans" } else { "Zipf" },
                    ratios.join(" | ")
                );
                print!("{line}");
                table.push_str(&line);
            }
        }
    }
    let results = std::env::var("RESULTS").ok().or_else(|| {
        (requests == DEFAULT_REQUESTS)
            .then(|| concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/eviction.md").into())
    });
    eprintln!("{requests} requests per trace, {:.0?}", started.elapsed());
    if let Some(path) = results {
        let text = format!(
            "# Eviction: hit ratio by policy\n\n\
             `cargo bench --bench eviction` (see the module doc of `benches/eviction.rs`): \
             {requests} requests per trace over {KEYS} keys, the first quarter not counted; \
             \"Zipf + scans\": {SCAN_LEN} one-off keys every {SCAN_EVERY} requests. Hit ratio \
             in percent of the Zipf requests.\n\n{table}"
        );
        std::fs::write(&path, text).expect("results file written");
        eprintln!("written to {path}");
    }
}
