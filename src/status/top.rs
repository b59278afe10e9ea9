//! The busiest URLs of the last minute: a space-saving heavy-hitters sketch (Metwally,
//! Agrawal, El Abbadi, 2005), sharded and sliced in time, with a fixed memory bound.
//!
//! This is the one part of the status page that touches the request path: the proxy's
//! `logging` phase calls [`TopUrls::record`] once per request. What that costs:
//! - one keyed SipHash-1-3 of host and path (the URL is never copied or allocated for it);
//! - one uncontended `parking_lot` mutex of [`SHARDS`], chosen by that hash, so requests
//!   for different URLs rarely meet on a lock;
//! - one lookup in a small map keyed by the hash, an increment, and a heap fix-up that is
//!   O(log capacity) and usually nothing (busy URLs sit at the leaves of a min-heap);
//! - for a URL not tracked yet: the least counted entry of that shard's current slice is
//!   replaced; its text buffer is reused, so after warm-up nothing is allocated.
//!
//! `cargo bench --bench cache -- "top URLs"` measured about 75 ns per request for a set of
//! busy URLs and about 155 ns when every URL is new (a flood of distinct URLs), on the
//! shared 2-core development machine under load.
//!
//! Memory is constant whatever the number of distinct URLs: [`SHARDS`] × [`SLICES`] ×
//! [`CAPACITY`] entries (3,584), each holding at most [`MAX_URL_BYTES`] of text in a buffer
//! of at most twice that: under 1.5 MiB in all.
//!
//! Space-saving keeps `capacity` counters; a URL not tracked takes over the smallest one,
//! inheriting its count as an overestimate (`error`). Any URL seen more often than
//! `1/capacity` of its shard's requests is guaranteed to be tracked, with a count off by at
//! most `error`. Hits are counted only while a URL is tracked, so a hit ratio is computed
//! over the requests seen since then (`count - error`), and is exact over that span.
//!
//! The window slides in [`SLICE`] steps: each shard keeps one sketch per slice, requests
//! go to the current one, and [`TopUrls::rotate`] (called by the status sampler every
//! [`SLICE`]) clears the oldest and makes it current. The top list sums the slices: the
//! last `SLICES - 1` whole slices plus the current one, one minute and a bit.
//!
//! URLs are identified by a 64-bit keyed hash (per-process random key), so two URLs could
//! share a counter only by a hash collision, about 1 in 2^64 per pair.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::time::Duration;

use parking_lot::Mutex;

use crate::cache::CacheStatus;

/// Locks the request path spreads over.
pub const SHARDS: usize = 8;
/// Time slices of the sliding window, the current one included.
pub const SLICES: usize = 7;
/// Length of one slice.
pub const SLICE: Duration = Duration::from_secs(10);
/// Counters per shard and slice.
pub const CAPACITY: usize = 64;
/// URL text kept per entry; longer ones are cut (their hash still tells them apart).
pub const MAX_URL_BYTES: usize = 200;

/// What the cache did for a request, as the per-URL hit ratio counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Served from the cache (HIT, STALE, REVALIDATED).
    Hit,
    /// Looked up, fetched from the origin (MISS, EXPIRED).
    Miss,
    /// The cache was not consulted (BYPASS): not part of the hit ratio.
    None,
}

impl Lookup {
    pub fn of(status: CacheStatus) -> Self {
        match status {
            CacheStatus::Hit | CacheStatus::Stale | CacheStatus::Revalidated => Lookup::Hit,
            CacheStatus::Miss | CacheStatus::Expired => Lookup::Miss,
            CacheStatus::Bypass => Lookup::None,
        }
    }
}

/// One URL of the top list.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TopUrl {
    pub url: String,
    /// Requests in the window (an overestimate by at most `error`).
    pub requests: u64,
    pub error: u64,
    /// Cache lookups and cache-served responses since the URL was tracked.
    pub lookups: u64,
    pub hits: u64,
    /// `hits / lookups`; `None` without lookups.
    pub hit_ratio: Option<f64>,
}

/// The top URLs over the sliding window, safe to share between the request path (record)
/// and the status sampler (rotate) and the admin service (top).
pub struct TopUrls {
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
    capacity: usize,
}

impl Default for TopUrls {
    fn default() -> Self {
        Self::new(SHARDS, SLICES, CAPACITY)
    }
}

impl TopUrls {
    pub fn new(shards: usize, slices: usize, capacity: usize) -> Self {
        assert!(shards > 0 && slices > 0 && capacity > 0);
        TopUrls {
            hasher: RandomState::new(),
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        slices: (0..slices).map(|_| Sketch::new(capacity)).collect(),
                        current: 0,
                    })
                })
                .collect(),
            capacity,
        }
    }

    /// Counts one request for `host` + `path_and_query`.
    pub fn record(&self, host: &str, path_and_query: &str, lookup: Lookup) {
        let mut h = self.hasher.build_hasher();
        h.write(host.as_bytes());
        h.write(path_and_query.as_bytes());
        let hash = h.finish();
        // Bits the shard's own map does not use for its buckets or tags.
        let shard = ((hash >> 32) as usize) % self.shards.len();
        let mut shard = self.shards[shard].lock();
        let current = shard.current;
        shard.slices[current].record(hash, lookup, |buf| {
            push_truncated(buf, host, MAX_URL_BYTES);
            let room = MAX_URL_BYTES.saturating_sub(buf.len());
            push_truncated(buf, path_and_query, room);
        });
    }

    /// Starts a new slice: the oldest is forgotten.
    pub fn rotate(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock();
            shard.current = (shard.current + 1) % shard.slices.len();
            let current = shard.current;
            shard.slices[current].clear();
        }
    }

    /// The `n` URLs with the most requests over the window, most requested first.
    pub fn top(&self, n: usize) -> Vec<TopUrl> {
        let mut all: Vec<TopUrl> = Vec::new();
        for shard in &self.shards {
            // Merged outside the request path's hot loop, under the shard's lock: at most
            // `slices × capacity` entries.
            let merged = shard.lock().merged();
            all.extend(merged);
        }
        all.sort_unstable_by(|a, b| b.requests.cmp(&a.requests).then(a.url.cmp(&b.url)));
        all.truncate(n);
        all
    }

    /// Entries held now, across shards and slices.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().slices.iter().map(Sketch::len).sum::<usize>())
            .sum()
    }

    /// The most entries ever held: the memory bound.
    pub fn bound(&self) -> usize {
        self.shards.len() * self.shards[0].lock().slices.len() * self.capacity
    }

    /// Bytes of URL text held now (allocated capacity), for the bound's test.
    pub fn text_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .slices
                    .iter()
                    .map(|k| k.slots.iter().map(|e| e.url.capacity()).sum::<usize>())
                    .sum::<usize>()
            })
            .sum()
    }
}

/// Appends at most `room` bytes of `text`, cut at a character boundary.
fn push_truncated(buf: &mut String, text: &str, room: usize) {
    if text.len() <= room {
        buf.push_str(text);
    } else {
        let mut end = room;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        buf.push_str(&text[..end]);
    }
}

struct Shard {
    slices: Vec<Sketch>,
    current: usize,
}

impl Shard {
    /// The slices summed per URL.
    fn merged(&self) -> Vec<TopUrl> {
        let mut by_hash: HashMap<u64, TopUrl, BuildHasherDefault<IdentityHasher>> =
            HashMap::default();
        for sketch in &self.slices {
            for e in &sketch.slots[..sketch.used] {
                let t = by_hash.entry(e.hash).or_insert_with(|| TopUrl {
                    url: e.url.clone(),
                    requests: 0,
                    error: 0,
                    lookups: 0,
                    hits: 0,
                    hit_ratio: None,
                });
                t.requests += e.count;
                t.error += e.error;
                t.lookups += e.lookups;
                t.hits += e.hits;
            }
        }
        by_hash
            .into_values()
            .map(|mut t| {
                t.hit_ratio = (t.lookups > 0).then(|| t.hits as f64 / t.lookups as f64);
                t
            })
            .collect()
    }
}

/// The keys are already SipHash values: hashing them again would be wasted work.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Entry {
    hash: u64,
    url: String,
    count: u64,
    error: u64,
    lookups: u64,
    hits: u64,
}

/// One space-saving summary: `slots` hold the entries (stable positions, reused after a
/// clear), `heap` orders slot numbers by count (smallest first), `pos` is each slot's place
/// in the heap, `index` finds a slot by URL hash.
struct Sketch {
    capacity: usize,
    slots: Vec<Entry>,
    used: usize,
    heap: Vec<u32>,
    pos: Vec<u32>,
    index: HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>,
}

impl Sketch {
    fn new(capacity: usize) -> Self {
        Sketch {
            capacity,
            slots: Vec::new(),
            used: 0,
            heap: Vec::new(),
            pos: Vec::new(),
            index: HashMap::default(),
        }
    }

    fn len(&self) -> usize {
        self.used
    }

    /// Forgets every entry, keeping the allocations for reuse.
    fn clear(&mut self) {
        self.used = 0;
        self.heap.clear();
        self.index.clear();
    }

    fn record(&mut self, hash: u64, lookup: Lookup, write_url: impl FnOnce(&mut String)) {
        if let Some(&slot) = self.index.get(&hash) {
            let e = &mut self.slots[slot as usize];
            e.count += 1;
            count_lookup(e, lookup);
            self.sift_down(self.pos[slot as usize] as usize);
            return;
        }
        let (slot, count, error) = if self.used < self.capacity {
            let slot = self.used;
            self.used += 1;
            if slot == self.slots.len() {
                self.slots.push(Entry {
                    hash,
                    url: String::new(),
                    count: 0,
                    error: 0,
                    lookups: 0,
                    hits: 0,
                });
                self.pos.push(0);
            }
            self.heap.push(slot as u32);
            self.pos[slot] = (self.heap.len() - 1) as u32;
            (slot, 1, 0)
        } else {
            // Full: the least counted entry makes way, and its count carries over as the
            // new URL's possible overestimate.
            let slot = self.heap[0] as usize;
            let min = self.slots[slot].count;
            self.index.remove(&self.slots[slot].hash);
            (slot, min + 1, min)
        };
        let e = &mut self.slots[slot];
        e.hash = hash;
        e.url.clear();
        write_url(&mut e.url);
        e.count = count;
        e.error = error;
        e.lookups = 0;
        e.hits = 0;
        count_lookup(e, lookup);
        self.index.insert(hash, slot as u32);
        let at = self.pos[slot] as usize;
        self.sift_up(at);
        self.sift_down(self.pos[slot] as usize);
    }

    fn count_of(&self, heap_at: usize) -> u64 {
        self.slots[self.heap[heap_at] as usize].count
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a] as usize] = a as u32;
        self.pos[self.heap[b] as usize] = b as u32;
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if self.count_of(parent) <= self.count_of(at) {
                break;
            }
            self.swap(parent, at);
            at = parent;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        let len = self.heap.len();
        loop {
            let (l, r) = (2 * at + 1, 2 * at + 2);
            let mut smallest = at;
            if l < len && self.count_of(l) < self.count_of(smallest) {
                smallest = l;
            }
            if r < len && self.count_of(r) < self.count_of(smallest) {
                smallest = r;
            }
            if smallest == at {
                return;
            }
            self.swap(at, smallest);
            at = smallest;
        }
    }
}

fn count_lookup(e: &mut Entry, lookup: Lookup) {
    match lookup {
        Lookup::Hit => {
            e.lookups += 1;
            e.hits += 1;
        }
        Lookup::Miss => e.lookups += 1,
        Lookup::None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heap_is_valid(s: &Sketch) -> bool {
        (1..s.heap.len()).all(|i| s.count_of((i - 1) / 2) <= s.count_of(i))
            && s.heap
                .iter()
                .enumerate()
                .all(|(i, &slot)| s.pos[slot as usize] as usize == i)
            && s.index.len() == s.used
            && s.heap.len() == s.used
    }

    #[test]
    fn counts_exactly_below_capacity() {
        let top = TopUrls::new(1, 1, 8);
        for _ in 0..5 {
            top.record("h", "/a", Lookup::Hit);
        }
        top.record("h", "/b", Lookup::Miss);
        top.record("h", "/b", Lookup::Hit);
        top.record("h", "/c", Lookup::None);
        let t = top.top(10);
        assert_eq!(t.len(), 3);
        assert_eq!(
            (t[0].url.as_str(), t[0].requests, t[0].error),
            ("h/a", 5, 0)
        );
        assert_eq!(t[0].hit_ratio, Some(1.0));
        assert_eq!((t[1].url.as_str(), t[1].requests), ("h/b", 2));
        assert_eq!(t[1].hit_ratio, Some(0.5));
        assert_eq!(t[2].hit_ratio, None, "BYPASS is not a lookup");
    }

    #[test]
    fn heavy_hitters_survive_a_flood_of_distinct_urls_in_bounded_memory() {
        let top = TopUrls::default();
        let long = "x".repeat(5000);
        for i in 0..100_000u32 {
            top.record("example.com", &format!("/once/{i}/{long}"), Lookup::Miss);
            if i % 50 == 0 {
                top.record("example.com", "/hot", Lookup::Hit);
            }
            if i % 100 == 0 {
                top.record("example.com", "/warm", Lookup::Miss);
            }
        }
        assert!(
            top.tracked() <= top.bound(),
            "{} > {}",
            top.tracked(),
            top.bound()
        );
        assert_eq!(top.bound(), SHARDS * SLICES * CAPACITY);
        // Text is cut: memory stays within the bound whatever the URLs' length.
        assert!(
            top.text_bytes() <= top.bound() * 2 * MAX_URL_BYTES,
            "{} bytes of URL text",
            top.text_bytes()
        );
        for shard in &top.shards {
            for s in &shard.lock().slices {
                assert!(s.slots.len() <= CAPACITY && s.index.len() <= CAPACITY);
                assert!(heap_is_valid(s));
            }
        }
        let t = top.top(20);
        assert_eq!(t.len(), 20);
        assert_eq!(t[0].url, "example.com/hot");
        assert!(t[0].requests >= 2000 && t[0].requests <= 2000 + t[0].error);
        assert_eq!(t[0].hit_ratio, Some(1.0));
        assert_eq!(t[1].url, "example.com/warm");
        assert!(t.iter().all(|u| u.url.len() <= MAX_URL_BYTES));
    }

    #[test]
    fn space_saving_overestimates_by_at_most_error() {
        let mut s = Sketch::new(4);
        let url = |_: &mut String| {};
        // Four slots full of 3 each, then a newcomer takes the smallest.
        for h in 1..=4u64 {
            for _ in 0..3 {
                s.record(h, Lookup::Miss, url);
            }
        }
        s.record(4, Lookup::Miss, url);
        s.record(99, Lookup::Hit, url);
        assert!(heap_is_valid(&s));
        let e = &s.slots[s.index[&99] as usize];
        assert_eq!((e.count, e.error, e.lookups, e.hits), (4, 3, 1, 1));
        let kept = [1u64, 2, 3]
            .iter()
            .filter(|h| s.index.contains_key(h))
            .count();
        assert_eq!(kept, 2, "one of the least counted entries made way");
        assert!(s.index.contains_key(&4), "a larger one stayed");
    }

    #[test]
    fn window_forgets_after_all_slices_rotate() {
        let top = TopUrls::new(2, 3, 4);
        top.record("h", "/old", Lookup::Miss);
        top.rotate();
        top.record("h", "/new", Lookup::Miss);
        top.rotate();
        assert_eq!(top.top(10).len(), 2, "both within the window");
        top.rotate();
        let t = top.top(10);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].url, "h/new");
        // Counts of one URL add up across slices.
        top.record("h", "/new", Lookup::Hit);
        assert_eq!(top.top(1)[0].requests, 2);
    }

    #[test]
    fn cut_urls_end_on_a_character_boundary() {
        let mut s = String::new();
        push_truncated(&mut s, "aé", 2);
        assert_eq!(s, "a");
        let top = TopUrls::new(1, 1, 2);
        top.record("h", &"é".repeat(400), Lookup::None);
        assert!(top.top(1)[0].url.len() <= MAX_URL_BYTES);
    }
}
