//! One shard of the memory storage: its entries, the order in which they are evicted
//! (S3-FIFO), and the bookkeeping the bounds and purges need. The bounds themselves are the
//! storage's: it asks for victims with [`Shard::evict_one`] until a new entry fits.
//!
//! # Eviction: S3-FIFO
//!
//! An exact LRU lets every one-off request (a crawler, a scan of old URLs, a cache-busting
//! query) push a popular entry out. S3-FIFO (Yang et al., SOSP 2023) keeps two FIFO queues:
//! - new entries enter the *small* queue (about a tenth of the shard); when one reaches its
//!   end, it moves to the *main* queue if it was read at least twice meanwhile, and is
//!   evicted otherwise, its key remembered in a *ghost* list;
//! - an entry whose key is in the ghost list comes back straight into the main queue;
//! - the main queue is a CLOCK: an entry reaching its end goes round again as long as it
//!   was read since it last went round (up to three times), and is evicted when it was not.
//!
//! A hit only bumps a small counter: it moves nothing, so it costs less than an LRU's
//! move to the front. `benches/eviction.rs` measures the hit ratio against an exact LRU
//! and Pingora's TinyUFO (`benches/results/eviction.md`).
//!
//! Pingora's TinyUFO (S3-FIFO with TinyLFU admission) is the kept implementation of this
//! idea, but it cannot be the store here: it keys entries by a 64-bit hash alone (a
//! collision would serve one URL's response for another), weighs them in `u16`, bounds one
//! weight (not bytes and entries at once), may refuse to store a fetched response (the
//! requests waiting on that fill would all fetch again), and has no iteration (expiry
//! sweeps, the hand-over's export). The queues here ([`queues`](super::queues)) are linked
//! lists through one slab with one index: O(1) removal by key (purges, expiry), iteration,
//! and growth without rehashing the shard at once.

use std::collections::{HashMap, VecDeque};

use super::queues::{End, Queue, Queues};
use super::{Entry, Key};

/// The small queue's share of the shard (S3-FIFO's 10%).
const SMALL_SHARE: usize = 10;
/// Reads counted per entry, at most (S3-FIFO's 2-bit counter).
const MAX_FREQ: u8 = 3;
/// Reads in the small queue that earn a place in the main queue.
const PROMOTE_FREQ: u8 = 2;

/// Where an entry goes when it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    /// A new entry: the small queue, or the main queue if it was evicted from the small one
    /// recently (its key is a ghost).
    New,
    /// An entry that was just used (revalidated): the front of the main queue.
    Used,
    /// An entry handed over by another process: the end of the main queue, behind
    /// everything this process stored, evicted first when the main queue is.
    Adopted,
}

pub(super) struct Shard {
    queues: Queues,
    ghost: Ghost,
    bytes: usize,
    small_bytes: usize,
    max_bytes: usize,
    max_entries: usize,
    /// Bytes reserved for bodies being stored into this shard (see `inflight`): part of the
    /// shard's bound like its entries, kept by the storage.
    pub(super) reserved: usize,
    /// Primary key -> keys of its variants stored apart from it, so that purging a URL
    /// does not scan the shard. A boxed slice, reallocated on each change: its slot is 16
    /// bytes smaller than a `Vec`'s (32 with the key, where a `Vec` pads it to 48) and it
    /// holds no spare room (a `Vec`'s first push reserves four keys); a URL has a handful of
    /// variants and they change far less often than they are read.
    pub(super) variants: HashMap<Key, Box<[Key]>>,
}

impl Shard {
    pub(super) fn new(max_bytes: usize, max_entries: usize) -> Self {
        Shard {
            queues: Queues::new(),
            ghost: Ghost::default(),
            bytes: 0,
            small_bytes: 0,
            max_bytes,
            max_entries,
            reserved: 0,
            variants: HashMap::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.queues.len(Queue::Small) + self.queues.len(Queue::Main)
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The entry under `key`, counted as a read.
    pub(super) fn get(&mut self, key: &Key) -> Option<&Entry> {
        let (_, entry) = self.queues.get_mut(*key)?;
        entry.freq = (entry.freq + 1).min(MAX_FREQ);
        Some(entry)
    }

    /// The entry under `key`, not counted as a read.
    pub(super) fn peek(&self, key: &Key) -> Option<&Entry> {
        self.queues.get(*key).map(|(_, entry)| entry)
    }

    pub(super) fn contains(&self, key: &Key) -> bool {
        self.queues.get(*key).is_some()
    }

    /// Stores an entry under a key that has none (the caller removed it and made room).
    pub(super) fn insert(&mut self, key: Key, mut entry: Entry, placement: Placement) {
        if key != entry.primary {
            let keys = self.variants.entry(entry.primary).or_default();
            *keys = keys.iter().copied().chain([key]).collect();
        }
        self.bytes += entry.weight();
        match placement {
            Placement::New if !self.ghost.contains(key) => {
                entry.freq = 0;
                self.small_bytes += entry.weight();
                self.queues.push(key, entry, Queue::Small, End::Newest);
            }
            Placement::New | Placement::Used => {
                self.queues.push(key, entry, Queue::Main, End::Newest);
            }
            Placement::Adopted => {
                entry.freq = 0;
                self.queues.push(key, entry, Queue::Main, End::Oldest);
            }
        }
    }

    pub(super) fn remove(&mut self, key: &Key) -> Option<Entry> {
        let (queue, entry) = self.queues.remove(*key)?;
        if queue == Queue::Small {
            self.small_bytes -= entry.weight();
        }
        self.unlink(*key, &entry);
        Some(entry)
    }

    /// Takes the next entry S3-FIFO evicts; `None` when the shard is empty.
    pub(super) fn evict_one(&mut self) -> Option<Entry> {
        loop {
            if self.small_over_share() || self.queues.is_empty(Queue::Main) {
                let entry = self.queues.oldest_mut(Queue::Small)?;
                if entry.freq >= PROMOTE_FREQ {
                    entry.freq = 0;
                    self.small_bytes -= entry.weight();
                    self.queues.requeue_oldest(Queue::Small, Queue::Main);
                    continue;
                }
                let (key, entry) = self.queues.pop_oldest(Queue::Small).expect("just seen");
                self.small_bytes -= entry.weight();
                self.ghost.add(key, self.len());
                self.unlink(key, &entry);
                return Some(entry);
            }
            let entry = self.queues.oldest_mut(Queue::Main).expect("not empty");
            if entry.freq > 0 {
                // Read since it last went round: once more round the clock.
                entry.freq -= 1;
                self.queues.requeue_oldest(Queue::Main, Queue::Main);
                continue;
            }
            let (key, entry) = self.queues.pop_oldest(Queue::Main).expect("just seen");
            self.unlink(key, &entry);
            return Some(entry);
        }
    }

    /// Whether the small queue holds its share of the shard or more, by bytes or entries
    /// (whichever bound evicts).
    fn small_over_share(&self) -> bool {
        !self.queues.is_empty(Queue::Small)
            && (self.small_bytes * SMALL_SHARE >= self.max_bytes
                || self.queues.len(Queue::Small) * SMALL_SHARE >= self.max_entries)
    }

    /// Bookkeeping for an entry that left the queues.
    fn unlink(&mut self, key: Key, entry: &Entry) {
        self.bytes -= entry.weight();
        if key != entry.primary {
            if let Some(keys) = self.variants.get_mut(&entry.primary) {
                *keys = keys.iter().copied().filter(|k| *k != key).collect();
                if keys.is_empty() {
                    self.variants.remove(&entry.primary);
                    // Filling the cache stores many URLs' variants at once; the index keeps
                    // the room it grew to unless given back once most of it is unused.
                    let capacity = self.variants.capacity();
                    if capacity > 1024 && self.variants.len() * 4 < capacity {
                        self.variants.shrink_to(self.variants.len() * 2);
                    }
                }
            }
        }
    }

    /// Removes entries `removable` says are of no more use, looking from the old end of each
    /// queue, where the entries stored longest ago wait: in a queue, it stops after passing
    /// `max_kept` entries still of use, and it stops altogether once `max_removed` are
    /// removed. Returns how many it removed.
    ///
    /// A walk of every entry held the shard's lock for about 0.2 us per entry (milliseconds
    /// for a shard of tens of thousands), and every request for a key of the shard waited
    /// through it. Entries of one lifetime expire in the order they were stored, so those
    /// past use gather at the old end, and this walk's cost is the entries it removes plus
    /// at most `max_kept` per queue. An entry past use behind more than `max_kept` older
    /// ones still of use (a short lifetime stored after long ones) is left to a lookup of its
    /// key, which drops it, or to eviction; it counts against the bounds meanwhile, like any
    /// entry. (nginx's cache manager walks its queue for inactive entries the same way, from
    /// the old end, stopping at the first one still in use.)
    pub(super) fn remove_unused(
        &mut self,
        removable: impl Fn(&Entry) -> bool,
        max_removed: usize,
        max_kept: usize,
    ) -> usize {
        let mut keys = Vec::new();
        for queue in [Queue::Small, Queue::Main] {
            let mut kept = 0;
            for (key, entry) in self.queues.walk(queue, End::Oldest) {
                if keys.len() == max_removed || kept == max_kept {
                    break;
                }
                if removable(entry) {
                    keys.push(key);
                } else {
                    kept += 1;
                }
            }
        }
        for key in &keys {
            self.remove(key);
        }
        keys.len()
    }

    /// Every key, the entries most worth keeping first (what a smaller cache taking them
    /// over keeps): the main queue's, then the small queue's; within each, those read more
    /// often since they were stored or last went round first, then the newest first.
    pub(super) fn keys_by_value(&self) -> Vec<Key> {
        let newest_first = |queue| self.queues.walk(queue, End::Newest);
        let mut ranked: Vec<(bool, u8, Key)> = newest_first(Queue::Main)
            .map(|(k, e)| (false, e.freq, k))
            .chain(newest_first(Queue::Small).map(|(k, e)| (true, e.freq, k)))
            .collect();
        // Stable: equal ranks keep the queues' newest-first order.
        ranked.sort_by_key(|&(small, freq, _)| (small, std::cmp::Reverse(freq)));
        ranked.into_iter().map(|(_, _, k)| k).collect()
    }

    /// Removes every entry; returns how many there were.
    pub(super) fn clear(&mut self) -> usize {
        let removed = self.len();
        // New tables: frees their memory too, not only the entries. Reservations stay: their
        // bodies are still arriving.
        let reserved = self.reserved;
        *self = Shard::new(self.max_bytes, self.max_entries);
        self.reserved = reserved;
        removed
    }
}

/// Keys recently evicted from the small queue, at most as many as the shard holds entries
/// (the paper bounds it by the main queue's capacity; the entries actually held bound it
/// here, so its memory is covered by each entry's accounted overhead), as 32-bit
/// fingerprints: a false match only sends a new entry to the main queue, and 4 bytes a key
/// keep the list small.
#[derive(Default)]
struct Ghost {
    order: VecDeque<u32>,
    /// Fingerprint -> how many times it is in `order` (a key can be evicted again before its
    /// first ghost has aged out).
    counts: HashMap<u32, u32>,
}

impl Ghost {
    /// Bits of the key the shard index does not use (shards are chosen by the low bits).
    fn fingerprint(key: Key) -> u32 {
        (key >> 96) as u32
    }

    fn add(&mut self, key: Key, limit: usize) {
        let fp = Self::fingerprint(key);
        self.order.push_back(fp);
        *self.counts.entry(fp).or_default() += 1;
        while self.order.len() > limit.max(1) {
            let old = self.order.pop_front().expect("not empty");
            if let Some(n) = self.counts.get_mut(&old) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&old);
                }
            }
        }
    }

    /// Whether `key` is a ghost. It stays one until it ages out: a key that comes back goes
    /// to the main queue, where it is not evicted into the ghost list again.
    fn contains(&self, key: Key) -> bool {
        self.counts.contains_key(&Self::fingerprint(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(weight: usize) -> Entry {
        Entry::of_weight(weight)
    }

    /// Keys whose fingerprints differ (the ghost list keys by the top 32 bits).
    fn k(n: u128) -> Key {
        n << 96 | n
    }

    fn with_primary(key: Key, mut e: Entry) -> Entry {
        e.primary = key;
        e
    }

    fn put(s: &mut Shard, n: u128) {
        while s.len() + 1 > s.max_entries {
            s.evict_one().unwrap();
        }
        s.insert(k(n), with_primary(k(n), entry(1)), Placement::New);
    }

    /// In these tests an entry of weight 2 is past use.
    fn put_weighing(s: &mut Shard, n: u128, weight: usize) {
        s.insert(k(n), with_primary(k(n), entry(weight)), Placement::New);
    }

    fn unused(e: &Entry) -> bool {
        e.weight() == 2
    }

    #[test]
    fn unused_entries_leave_from_the_old_end_a_batch_at_a_time() {
        let mut s = Shard::new(usize::MAX, 10_000);
        for n in 0..1000 {
            put_weighing(&mut s, n, 2);
        }
        for n in 1000..1010 {
            put_weighing(&mut s, n, 1);
        }
        assert_eq!(s.remove_unused(unused, 256, 64), 256);
        assert_eq!(s.len(), 1010 - 256);
        let mut batches = 1;
        while s.remove_unused(unused, 256, 64) == 256 {
            batches += 1;
        }
        assert_eq!(batches, 3, "1000 = 3 x 256 + 232");
        assert_eq!(s.len(), 10);
        assert!((1000..1010).all(|n| s.peek(&k(n)).is_some()));
        assert_eq!(s.bytes(), 10);
    }

    /// The walk stops after `max_kept` entries still of use: what it costs is bounded by the
    /// entries it removes, not by the shard's size.
    #[test]
    fn a_walk_stops_after_passing_entries_still_of_use() {
        let mut s = Shard::new(usize::MAX, 10_000);
        for n in 0..5 {
            put_weighing(&mut s, n, 2);
        }
        for n in 5..105 {
            put_weighing(&mut s, n, 1);
        }
        for n in 105..110 {
            put_weighing(&mut s, n, 2);
        }
        assert_eq!(s.remove_unused(unused, 256, 64), 5, "the 5 at the old end");
        assert_eq!(s.len(), 105);
        assert!(
            (105..110).all(|n| s.peek(&k(n)).is_some()),
            "behind 100 in use"
        );
        assert_eq!(s.remove_unused(unused, 256, 101), 5, "found past 100");
        assert_eq!(s.len(), 100);
    }

    /// Both queues are walked: an entry moved to the main queue is found there.
    #[test]
    fn unused_entries_leave_both_queues() {
        let mut s = Shard::new(usize::MAX, 10_000);
        put_weighing(&mut s, 1, 2);
        s.insert(k(2), with_primary(k(2), entry(2)), Placement::Used);
        put_weighing(&mut s, 3, 1);
        assert_eq!(s.remove_unused(unused, 256, 64), 2);
        assert_eq!(s.len(), 1);
        assert!(s.peek(&k(3)).is_some());
    }

    #[test]
    fn one_off_entries_leave_before_entries_read_twice() {
        let mut s = Shard::new(usize::MAX, 10);
        for n in 1..=10 {
            put(&mut s, n);
        }
        for _ in 0..2 {
            s.get(&k(1)).unwrap();
        }
        // A scan of new keys: 1 was read twice, it moves to the main queue and stays.
        for n in 100..120 {
            put(&mut s, n);
        }
        assert!(s.peek(&k(1)).is_some());
        assert!(s.peek(&k(2)).is_none());
        assert_eq!(s.len(), 10);
    }

    #[test]
    fn a_ghost_comes_back_into_the_main_queue() {
        let mut s = Shard::new(usize::MAX, 10);
        for n in 1..=10 {
            put(&mut s, n);
        }
        for _ in 0..2 {
            s.get(&k(10)).unwrap();
        }
        put(&mut s, 11); // 10 is promoted, 1 evicted into the ghost list
        assert!(s.peek(&k(1)).is_none());
        assert!(s.ghost.contains(k(1)));
        put(&mut s, 1);
        let queue = s.queues.get(k(1)).map(|(queue, _)| queue);
        assert_eq!(queue, Some(Queue::Main), "back in the main queue");
    }

    #[test]
    fn the_main_queue_spares_entries_read_since_they_last_went_round() {
        let mut s = Shard::new(usize::MAX, 4);
        for n in 1..=3 {
            s.insert(k(n), with_primary(k(n), entry(1)), Placement::Used);
        }
        s.get(&k(1)).unwrap();
        assert_eq!(
            s.evict_one().unwrap().primary,
            k(2),
            "1 goes round once more"
        );
        assert_eq!(s.evict_one().unwrap().primary, k(3));
        assert_eq!(s.evict_one().unwrap().primary, k(1));
        assert!(s.evict_one().is_none());
        assert_eq!((s.bytes(), s.len()), (0, 0));
    }

    #[test]
    fn adopted_entries_are_evicted_first_from_the_main_queue() {
        let mut s = Shard::new(usize::MAX, 4);
        s.insert(k(1), with_primary(k(1), entry(1)), Placement::Used);
        s.insert(k(2), with_primary(k(2), entry(1)), Placement::Adopted);
        s.insert(k(3), with_primary(k(3), entry(1)), Placement::Adopted);
        assert_eq!(s.evict_one().unwrap().primary, k(3), "the last adopted");
        assert_eq!(s.evict_one().unwrap().primary, k(2));
    }

    #[test]
    fn bytes_and_variants_follow_every_move() {
        let mut s = Shard::new(100, 100);
        let primary = k(7);
        for n in 1..=3 {
            s.insert(k(n), with_primary(primary, entry(20)), Placement::New);
        }
        assert_eq!(s.bytes(), 60);
        assert_eq!(s.variants[&primary].len(), 3);
        s.get(&k(1));
        s.get(&k(1));
        s.evict_one().unwrap(); // promotes 1 on the way, evicts 2
        assert_eq!(s.bytes(), 40);
        assert_eq!(s.small_bytes, 20);
        s.remove(&k(1)).unwrap();
        s.remove(&k(3)).unwrap();
        assert_eq!((s.bytes(), s.small_bytes), (0, 0));
        assert!(s.variants.is_empty());
    }

    #[test]
    fn keys_by_value_puts_entries_read_again_first() {
        let mut s = Shard::new(usize::MAX, 100);
        for n in 1..=4 {
            put(&mut s, n);
        }
        s.get(&k(1));
        s.insert(k(9), with_primary(k(9), entry(1)), Placement::Used);
        assert_eq!(s.keys_by_value(), [9, 1, 4, 3, 2].map(k));
    }

    #[test]
    fn the_ghost_list_is_bounded() {
        let mut g = Ghost::default();
        for n in 1..=100 {
            g.add(k(n), 10);
        }
        assert_eq!(g.order.len(), 10);
        assert_eq!(g.counts.len(), 10);
        assert!(g.contains(k(100)) && !g.contains(k(90)));
    }
}
