//! Memory of responses while they are being stored: bodies arrive chunk by chunk and are
//! kept until complete, so their bytes are reserved as they arrive.
//!
//! Every chunk of a body being stored is reserved before it is kept: in the in-flight
//! budget (`cache.max_inflight_size`, a cap on all bodies being stored at once) and, with the
//! in-process tier, in the byte bound of the shard the entry will go to, where the
//! reservation makes room as a stored entry would (least recently used entries go first). So
//! stored entries and bodies in flight together stay within `cache.max_size`, and bodies in
//! flight can displace at most the in-flight budget of stored entries. A chunk that cannot be
//! reserved ends the store of that response: what it held is released at once, the response
//! goes on streaming to its client, and `caching_proxy_cache_store_aborted_total{reason}`
//! counts it. A client that reads slowly slows its origin fetch down with it (Pingora reads
//! the origin at the client's pace), so its store holds what was delivered so far, never more
//! than `cache.max_object_size`.
//!
//! What this module must not do: decide what is cacheable, or touch committed entries other
//! than through the storage's own eviction.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use log::info;
use pingora_cache::key::HashBinary;
use pingora_error::{Error, ErrorType, Result};

use super::memory::MemoryStorage;
use crate::metrics::CACHE_STORE_ABORTED;

/// A cap on the bytes of all bodies being stored at once.
#[derive(Debug)]
pub struct InflightBudget {
    max: usize,
    reserved: AtomicUsize,
}

impl InflightBudget {
    pub fn new(max: usize) -> Self {
        InflightBudget {
            max,
            reserved: AtomicUsize::new(0),
        }
    }

    /// Takes `n` bytes if they fit under the cap.
    pub fn try_reserve(&self, n: usize) -> bool {
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                r.checked_add(n).filter(|total| *total <= self.max)
            })
            .is_ok()
    }

    pub fn release(&self, n: usize) {
        self.reserved.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes reserved right now.
    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// Where a body's bytes are reserved.
#[derive(Clone, Copy)]
pub enum ReserveIn {
    /// In the in-process tier: its budget and the byte bound of the entry's shard.
    Memory(&'static MemoryStorage, HashBinary),
    /// In a budget alone (the Redis tier without an in-process tier).
    Budget(&'static InflightBudget),
}

/// Bytes reserved for one body; released when dropped.
struct Reservation {
    target: ReserveIn,
    bytes: usize,
}

impl Reservation {
    fn grow(&mut self, n: usize) -> bool {
        let granted = match self.target {
            ReserveIn::Memory(storage, primary) => storage.reserve(&primary, n),
            ReserveIn::Budget(budget) => budget.try_reserve(n),
        };
        if granted {
            self.bytes += n;
        }
        granted
    }

    fn release(&mut self) {
        let n = std::mem::take(&mut self.bytes);
        if n > 0 {
            match self.target {
                ReserveIn::Memory(storage, primary) => storage.release(&primary, n),
                ReserveIn::Budget(budget) => budget.release(n),
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

/// Why a store was given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// No memory could be reserved for the next chunk.
    Memory,
    /// The body grew past `cache.max_object_size`.
    ObjectSize,
}

impl AbortReason {
    pub const ALL: [AbortReason; 2] = [AbortReason::Memory, AbortReason::ObjectSize];

    pub fn label(self) -> &'static str {
        match self {
            AbortReason::Memory => "memory",
            AbortReason::ObjectSize => "object_size",
        }
    }
}

/// A body as it arrives, its bytes reserved chunk by chunk, bounded by the largest
/// cacheable object.
pub(super) struct BodyBuffer {
    chunks: Vec<Bytes>,
    len: usize,
    max: usize,
    reservation: Reservation,
    /// Given up: nothing more is kept, and it must not be committed.
    aborted: bool,
}

impl BodyBuffer {
    pub(super) fn new(max: usize, reserve_in: ReserveIn) -> Self {
        BodyBuffer {
            chunks: Vec::new(),
            len: 0,
            max,
            reservation: Reservation {
                target: reserve_in,
                bytes: 0,
            },
            aborted: false,
        }
    }

    /// Adds a chunk; an error once it cannot be kept (Pingora then stops filling the cache
    /// and keeps serving the client), after which everything held is released.
    pub(super) fn push(&mut self, data: Bytes) -> Result<()> {
        if self.aborted {
            return Error::e_explain(ErrorType::InternalError, "the store was given up");
        }
        let reason = if self.len + data.len() > self.max {
            AbortReason::ObjectSize
        } else if data.is_empty() || self.reservation.grow(data.len()) {
            self.len += data.len();
            if !data.is_empty() {
                self.chunks.push(data);
            }
            return Ok(());
        } else {
            AbortReason::Memory
        };
        let held = self.len;
        self.abort();
        CACHE_STORE_ABORTED
            .with_label_values(&[reason.label()])
            .inc();
        info!(
            "cache store given up ({}): {held} bytes received, {} more did not fit",
            reason.label(),
            data.len()
        );
        Error::e_explain(
            ErrorType::InternalError,
            match reason {
                AbortReason::Memory => "no memory for the body being stored",
                AbortReason::ObjectSize => "body exceeds cache max object size",
            },
        )
    }

    fn abort(&mut self) {
        self.aborted = true;
        self.chunks = Vec::new();
        self.len = 0;
        self.reservation.release();
    }

    /// One exactly sized copy: upstream chunks may be views into larger read buffers, which
    /// would otherwise stay alive and escape the byte accounting. The reservation is
    /// released here, before the caller commits the entry (which counts it again). An error
    /// for a store that was given up.
    pub(super) fn finish(mut self) -> Result<Bytes> {
        if self.aborted {
            return Error::e_explain(ErrorType::InternalError, "the store was given up");
        }
        // A large body goes to the body file, from where hits can send it without a copy.
        let body = match super::arena::store(&self.chunks, self.len) {
            Some(body) => body,
            None => {
                let mut body = Vec::with_capacity(self.len);
                for chunk in &self.chunks {
                    body.extend_from_slice(chunk);
                }
                body.into()
            }
        };
        self.abort();
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max: usize) -> &'static InflightBudget {
        Box::leak(Box::new(InflightBudget::new(max)))
    }

    #[test]
    fn the_budget_caps_all_reservations_together() {
        let b = budget(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(41));
        assert!(b.try_reserve(40));
        b.release(60);
        assert_eq!(b.reserved(), 40);
    }

    #[test]
    fn a_body_reserves_as_it_grows_and_releases_when_dropped_or_finished() {
        let b = budget(100);
        let mut body = BodyBuffer::new(1000, ReserveIn::Budget(b));
        body.push(Bytes::from(vec![1; 30])).unwrap();
        body.push(Bytes::from(vec![2; 30])).unwrap();
        assert_eq!(b.reserved(), 60);
        assert_eq!(body.finish().unwrap().len(), 60);
        assert_eq!(b.reserved(), 0);
        let mut dropped = BodyBuffer::new(1000, ReserveIn::Budget(b));
        dropped.push(Bytes::from(vec![1; 50])).unwrap();
        drop(dropped);
        assert_eq!(b.reserved(), 0);
    }

    #[test]
    fn a_chunk_that_does_not_fit_gives_the_store_up_and_frees_what_it_held() {
        let b = budget(100);
        let mut other = BodyBuffer::new(1000, ReserveIn::Budget(b));
        other.push(Bytes::from(vec![0; 50])).unwrap();
        let mut body = BodyBuffer::new(1000, ReserveIn::Budget(b));
        body.push(Bytes::from(vec![1; 40])).unwrap();
        let before = CACHE_STORE_ABORTED.with_label_values(&["memory"]).get();
        assert!(body.push(Bytes::from(vec![1; 40])).is_err());
        assert_eq!(b.reserved(), 50, "only the other body's bytes are left");
        assert!(
            body.push(Bytes::from(vec![1; 1])).is_err(),
            "given up for good"
        );
        assert!(body.finish().is_err(), "never committed");
        assert!(CACHE_STORE_ABORTED.with_label_values(&["memory"]).get() > before);
    }

    mod with_memory_storage {
        use super::super::super::memory::{MemoryLimits, MemoryStorage};
        use super::super::super::CacheBackend;
        use bytes::Bytes;
        use pingora_cache::storage::Storage;
        use pingora_cache::trace::Span;
        use pingora_cache::{CacheKey, CacheMeta};
        use pingora_http::ResponseHeader;
        use std::time::{Duration, SystemTime};

        const MAX: usize = 64 << 10;

        fn storage(max_inflight_bytes: usize) -> &'static MemoryStorage {
            MemoryStorage::new_static(MemoryLimits {
                max_bytes: MAX,
                max_entries: 1000,
                max_object_bytes: 16 << 10,
                stale_retention: Duration::ZERO,
                max_inflight_bytes,
            })
        }

        fn meta() -> CacheMeta {
            let now = SystemTime::now();
            let header = ResponseHeader::build(200, None).unwrap();
            CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header)
        }

        async fn store(s: &'static MemoryStorage, url: &str, len: usize) {
            let key = CacheKey::new(url, "");
            let span = Span::inactive().handle();
            let mut miss = s.get_miss_handler(&key, &meta(), &span).await.unwrap();
            miss.write_body(Bytes::from(vec![b'x'; len]), true)
                .await
                .unwrap();
            miss.finish().await.unwrap();
        }

        fn held(s: &MemoryStorage) -> usize {
            s.usage().bytes as usize + s.inflight_bytes()
        }

        #[tokio::test]
        async fn bodies_being_stored_and_entries_share_the_bound() {
            let s = storage(MAX);
            for i in 0..6 {
                store(s, &format!("/stored/{i}"), 8 << 10).await;
            }
            let stored = s.usage().entries;
            let key = CacheKey::new("/arriving", "");
            let span = Span::inactive().handle();
            let mut miss = s.get_miss_handler(&key, &meta(), &span).await.unwrap();
            for _ in 0..4 {
                miss.write_body(Bytes::from(vec![b'y'; 4 << 10]), false)
                    .await
                    .unwrap();
                assert!(held(s) <= MAX, "{} > {MAX}", held(s));
            }
            assert_eq!(s.inflight_bytes(), 16 << 10);
            assert!(s.usage().entries < stored, "room was made by eviction");
            miss.finish().await.unwrap();
            assert_eq!(s.inflight_bytes(), 0, "committed: no longer reserved");
            assert!(held(s) <= MAX);
        }

        #[tokio::test]
        async fn a_cleared_cache_keeps_the_bodies_being_stored_in_its_bound() {
            let s = storage(MAX);
            let key = CacheKey::new("/arriving", "");
            let span = Span::inactive().handle();
            let mut miss = s.get_miss_handler(&key, &meta(), &span).await.unwrap();
            miss.write_body(Bytes::from(vec![b'y'; 16 << 10]), false)
                .await
                .unwrap();
            s.clear_now();
            for i in 0..12 {
                store(s, &format!("/after-clear/{i}"), 8 << 10).await;
                assert!(held(s) <= MAX, "{} > {MAX}", held(s));
            }
            miss.finish().await.unwrap();
            assert_eq!(s.inflight_bytes(), 0);
            assert!(held(s) <= MAX);
        }

        #[tokio::test]
        async fn past_the_inflight_budget_a_store_is_given_up_and_released() {
            let s = storage(20 << 10);
            let span = Span::inactive().handle();
            let (a, b) = (CacheKey::new("/a", ""), CacheKey::new("/b", ""));
            let mut first = s.get_miss_handler(&a, &meta(), &span).await.unwrap();
            first
                .write_body(Bytes::from(vec![1; 12 << 10]), false)
                .await
                .unwrap();
            let mut second = s.get_miss_handler(&b, &meta(), &span).await.unwrap();
            second
                .write_body(Bytes::from(vec![2; 4 << 10]), false)
                .await
                .unwrap();
            assert!(second
                .write_body(Bytes::from(vec![2; 8 << 10]), false)
                .await
                .is_err());
            assert_eq!(
                s.inflight_bytes(),
                12 << 10,
                "the given-up store freed its bytes"
            );
            drop(first); // a fetch that ended without finishing
            assert_eq!(s.inflight_bytes(), 0);
            assert_eq!(s.usage().entries, 0);
        }
    }

    #[test]
    fn a_body_over_the_object_size_is_given_up() {
        let b = budget(1000);
        let mut body = BodyBuffer::new(50, ReserveIn::Budget(b));
        body.push(Bytes::from(vec![1; 50])).unwrap();
        assert!(body.push(Bytes::from(vec![1; 1])).is_err());
        assert_eq!(b.reserved(), 0);
    }
}
