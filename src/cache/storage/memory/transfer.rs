//! What the cache hand-over of an upgrade needs from the memory storage: its entries in
//! most-recently-used order (old process), adoption of entries under this process's own
//! bounds (new process), and the removals made meanwhile on either side.
//!
//! Both processes serve while entries travel, so a purge or a clear can happen on either
//! side in the middle of a transfer:
//! - on the old side, removals are announced to [`MemoryStorage::watch_removals`]
//!   subscribers, and the hand-over forwards them;
//! - on the new side, removals made while entries are adopted leave tombstones, and an
//!   entry arriving later for a removed URL (an older copy) is not adopted. Removals record
//!   the tombstone under the shard lock that adoption takes too, so no order of the two can
//!   bring a removed entry back.
//!
//! The stream itself (framing, sockets, time bounds) is `lifecycle::handover`'s.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use pingora_cache::key::HashBinary;
use pingora_cache::CacheMeta;
use tokio::sync::mpsc;

use super::{
    arena, entry_weight, key_of, weighable, Entry, Key, MemoryStorage, Placement, Stamp, StoredMeta,
};

/// A removal another process holding copies of these entries must repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Every variant of the URL with this primary key hash.
    Url(HashBinary),
    /// Everything.
    All,
}

/// Removal bookkeeping of one storage; idle (one relaxed load per removal) unless a
/// hand-over is running.
#[derive(Default)]
pub(super) struct Transfers {
    /// Some subscriber or adoption is active: the fast path skips both locks below.
    active: AtomicBool,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Removal>>>,
    tombstones: Mutex<Option<Tombstones>>,
}

#[derive(Default)]
struct Tombstones {
    urls: HashSet<Key>,
    cleared: bool,
}

impl Transfers {
    fn refresh_active(&self) {
        let active = !self.subscribers.lock().is_empty() || self.tombstones.lock().is_some();
        self.active.store(active, Ordering::Release);
    }

    /// Called for every removal, with the shard lock of `removal` held (for `Url`) or
    /// before the shards are cleared (for `All`).
    pub(super) fn removed(&self, removal: Removal) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        if let Some(t) = self.tombstones.lock().as_mut() {
            match removal {
                Removal::Url(primary) => {
                    t.urls.insert(key_of(primary));
                }
                Removal::All => t.cleared = true,
            }
        }
        let mut subscribers = self.subscribers.lock();
        let before = subscribers.len();
        subscribers.retain(|s| s.send(removal).is_ok());
        if subscribers.len() != before {
            drop(subscribers);
            self.refresh_active();
        }
    }

    fn buried(&self, primary: Key) -> bool {
        self.tombstones
            .lock()
            .as_ref()
            .is_some_and(|t| t.cleared || t.urls.contains(&primary))
    }
}

/// An entry on its way to another process.
pub struct Exported {
    pub primary: HashBinary,
    pub combined: HashBinary,
    pub meta: CacheMeta,
    pub body: Bytes,
}

/// What became of an entry offered to [`MemoryStorage::adopt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    Stored,
    /// This process already has the entry (stored since it started): its own copy is newer.
    Present,
    /// No room without evicting: everything stored is more recent.
    Full,
    /// Larger than this process caches.
    TooLarge,
    /// Removed on this side while the hand-over ran, or of no use any more.
    Dropped,
}

impl MemoryStorage {
    /// Announces every later removal (purge, invalidation, clear; not evictions) until the
    /// receiver is dropped.
    pub fn watch_removals(&self) -> mpsc::UnboundedReceiver<Removal> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.transfers.subscribers.lock().push(tx);
        self.transfers.refresh_active();
        rx
    }

    /// Keys of every entry, the most valuable first across shards (each shard's order,
    /// interleaved: see `Shard::keys_by_value`), for [`export`](Self::export) in batches.
    /// The shards are locked one at a time, only to copy keys.
    pub fn export_order(&self) -> Vec<(usize, Key)> {
        let per_shard: Vec<Vec<Key>> = self
            .shards
            .iter()
            .map(|s| s.lock().keys_by_value())
            .collect();
        let longest = per_shard.iter().map(Vec::len).max().unwrap_or(0);
        let mut order = Vec::with_capacity(per_shard.iter().map(Vec::len).sum());
        for i in 0..longest {
            for (shard, keys) in per_shard.iter().enumerate() {
                if let Some(k) = keys.get(i) {
                    order.push((shard, *k));
                }
            }
        }
        order
    }

    /// The entries behind `keys` that are still stored and of use, without touching their
    /// recency.
    pub fn export(&self, keys: &[(usize, Key)]) -> Vec<Exported> {
        let now = Stamp::now();
        keys.iter()
            .filter_map(|(shard, k)| {
                let (meta, body, primary) = {
                    let shard = self.shards[*shard].lock();
                    let e = shard.peek(k)?;
                    if self.removable(e, now) {
                        return None;
                    }
                    (e.meta.clone(), e.body.clone(), e.primary)
                };
                Some(Exported {
                    primary: primary.to_be_bytes(),
                    combined: k.to_be_bytes(),
                    meta: meta.to_meta(),
                    body,
                })
            })
            .collect()
    }

    /// Starts adopting entries from another process: removals from now on leave tombstones
    /// until [`end_adoption`](Self::end_adoption).
    pub fn begin_adoption(&self) {
        *self.transfers.tombstones.lock() = Some(Tombstones::default());
        self.transfers.refresh_active();
    }

    pub fn end_adoption(&self) {
        *self.transfers.tombstones.lock() = None;
        self.transfers.refresh_active();
    }

    /// Stores an entry handed over by another process, behind everything stored here (it
    /// arrives most valuable first, after what this process stored itself: each one goes to
    /// the end of the main queue) and only if it fits without evicting anything.
    pub fn adopt(
        &self,
        primary: HashBinary,
        combined: HashBinary,
        meta: &CacheMeta,
        body: Bytes,
    ) -> Adopted {
        if body.len() > self.limits.max_object_bytes {
            return Adopted::TooLarge;
        }
        let meta = StoredMeta::new(meta);
        if meta.removable_at(self.limits.stale_retention) <= Stamp::now() {
            return Adopted::Dropped;
        }
        let (primary, key) = (key_of(primary), key_of(combined));
        // A large body goes to the body file here too, so that hits after a reload can
        // still be sent with sendfile.
        let body = arena::place(body);
        let weight = entry_weight(arena::footprint(&body), &meta, key != primary);
        if !weighable(weight) {
            return Adopted::TooLarge;
        }
        let mut shard = self.shard(primary).lock();
        if self.transfers.buried(primary) {
            return Adopted::Dropped;
        }
        if shard.contains(&key) {
            return Adopted::Present;
        }
        if shard.bytes() + shard.reserved + weight > self.shard_max_bytes
            || shard.len() + 1 > self.shard_max_entries
        {
            return Adopted::Full;
        }
        let entry = Entry::new(primary, meta, body, weight);
        shard.insert(key, entry, Placement::Adopted);
        Adopted::Stored
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pingora_cache::key::CacheHashKey;
    use pingora_cache::CacheKey;
    use pingora_http::ResponseHeader;

    use super::super::MemoryLimits;
    use super::*;
    use crate::cache::storage::CacheBackend;
    use std::time::SystemTime;

    /// Below 512 entries the storage has one shard, so the order of entries is exact.
    fn storage(max_entries: usize) -> MemoryStorage {
        MemoryStorage::new(MemoryLimits {
            max_bytes: 1 << 30,
            max_entries,
            max_object_bytes: 1 << 20,
            stale_retention: Duration::ZERO,
            max_inflight_bytes: usize::MAX,
        })
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

    fn key(path: &str) -> CacheKey {
        CacheKey::new(path.to_owned(), "")
    }

    fn put(s: &MemoryStorage, path: &str) {
        s.put(
            &key(path),
            &meta(Duration::from_secs(60)),
            Bytes::from(path.to_owned()),
        )
        .unwrap();
    }

    fn exported_paths(s: &MemoryStorage) -> Vec<String> {
        s.export(&s.export_order())
            .into_iter()
            .map(|e| String::from_utf8(e.body.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn exports_the_main_queue_first_and_skips_useless_entries() {
        let s = storage(3);
        for p in ["/a", "/b", "/c"] {
            put(&s, p);
        }
        // Read twice: /a moves to the main queue when /d makes room (and /b, never read,
        // is evicted).
        s.get(&key("/a"));
        s.get(&key("/a"));
        put(&s, "/d");
        // Stored (evicting /c, the oldest one-off entry) but of no more use.
        let expired = meta(Duration::ZERO);
        s.put(&key("/gone"), &expired, Bytes::from_static(b"/gone"))
            .ok();
        assert_eq!(exported_paths(&s), ["/a", "/d"]);
    }

    #[test]
    fn adoption_keeps_the_newest_that_fit_and_never_evicts() {
        let old = storage(300);
        for i in 0..10 {
            put(&old, &format!("/{i}"));
        }
        // The new process is smaller and already stored /live itself, and served it twice.
        let new = storage(4);
        put(&new, "/live");
        new.get(&key("/live"));
        new.get(&key("/live"));
        new.begin_adoption();
        let mut outcomes = Vec::new();
        for e in old.export(&old.export_order()) {
            outcomes.push(new.adopt(e.primary, e.combined, &e.meta, e.body));
        }
        new.end_adoption();
        assert_eq!(
            outcomes.iter().filter(|o| **o == Adopted::Stored).count(),
            3
        );
        // Adopted entries sit at the end of the main queue, oldest last: a new entry evicts
        // the oldest adopted one (/7), not /live, which moves on to the main queue.
        put(&new, "/fresh");
        for kept in ["/live", "/fresh", "/9", "/8"] {
            assert!(new.get(&key(kept)).is_some(), "{kept} kept");
        }
        for gone in ["/7", "/6"] {
            assert!(new.get(&key(gone)).is_none(), "{gone} not kept");
        }
        assert_eq!(new.usage().entries, 4);
    }

    #[test]
    fn an_entry_removed_here_during_adoption_is_not_brought_back() {
        let old = storage(100);
        put(&old, "/x");
        put(&old, "/y");
        let exported = old.export(&old.export_order());
        let new = storage(100);
        new.begin_adoption();
        new.remove_primary(key("/x").primary_bin());
        for e in exported {
            new.adopt(e.primary, e.combined, &e.meta, e.body);
        }
        assert!(new.get(&key("/x")).is_none());
        assert!(new.get(&key("/y")).is_some());
        new.clear_now();
        put(&old, "/z");
        for e in old.export(&old.export_order()) {
            assert_eq!(
                new.adopt(e.primary, e.combined, &e.meta, e.body),
                Adopted::Dropped
            );
        }
        new.end_adoption();
        assert_eq!(new.usage().entries, 0);
    }

    #[test]
    fn removals_are_announced_to_watchers() {
        let s = storage(100);
        put(&s, "/x");
        let mut removals = s.watch_removals();
        s.remove_primary(key("/x").primary_bin());
        s.clear_now();
        assert_eq!(
            removals.try_recv().ok(),
            Some(Removal::Url(key("/x").primary_bin()))
        );
        assert_eq!(removals.try_recv().ok(), Some(Removal::All));
        drop(removals);
        s.remove_primary(key("/x").primary_bin()); // a gone watcher is forgotten
        assert!(!s.transfers.active.load(Ordering::Acquire));
    }
}
