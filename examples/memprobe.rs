//! Memory per entry of the memory storage, counted by the allocator (no load, no network):
//! stores 100,000 entries of a 1 KiB body with a typical origin header (every other one hit
//! once, as a hit adds the shared-buffer records of its body and header), then prints the
//! bytes allocated per entry (as requested and as glibc hands them out, with its 8-byte chunk
//! header), the allocations per entry, and the bytes the storage accounts per entry.
//!
//!     cargo run --release --example memprobe          # distinct URLs
//!     cargo run --release --example memprobe -- vary  # 4 Vary variants per URL
//!
//! The whole-process figure (RSS) is `benches/load/memory.sh`'s.

use bytes::Bytes;
use caching_proxy::cache::storage::memory::{MemoryLimits, MemoryStorage};
use pingora_cache::{CacheKey, CacheMeta};
use pingora_http::ResponseHeader;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

/// The system allocator, counting what is allocated and freed.
struct Counting;
static BYTES: AtomicIsize = AtomicIsize::new(0);
static USABLE: AtomicIsize = AtomicIsize::new(0);
static COUNT: AtomicUsize = AtomicUsize::new(0);
extern "C" {
    fn malloc_usable_size(p: *mut u8) -> usize;
}
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        BYTES.fetch_add(l.size() as isize, Ordering::Relaxed);
        USABLE.fetch_add(malloc_usable_size(p) as isize + 8, Ordering::Relaxed);
        COUNT.fetch_add(1, Ordering::Relaxed);
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        BYTES.fetch_sub(l.size() as isize, Ordering::Relaxed);
        USABLE.fetch_sub(malloc_usable_size(p) as isize + 8, Ordering::Relaxed);
        System.dealloc(p, l)
    }
}
#[global_allocator]
static A: Counting = Counting;

fn main() {
    let n = 100_000usize;
    let s = MemoryStorage::new(MemoryLimits {
        max_bytes: 1 << 34,
        max_entries: 4 * n,
        max_object_bytes: 1 << 20,
        stale_retention: Duration::ZERO,
        max_inflight_bytes: usize::MAX,
    });
    let now = SystemTime::now();
    let vary = std::env::args().nth(1).is_some();
    let (b0, u0, c0) = (
        BYTES.load(Ordering::Relaxed),
        USABLE.load(Ordering::Relaxed),
        COUNT.load(Ordering::Relaxed),
    );
    for i in 0..n {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.append_header("date", "Sun, 06 Dec 2026 05:24:50 GMT")
            .unwrap();
        h.append_header("content-type", "application/octet-stream")
            .unwrap();
        h.append_header("cache-control", "public, max-age=300")
            .unwrap();
        h.append_header("content-length", "1024").unwrap();
        if vary {
            h.append_header("vary", "accept-encoding").unwrap();
        }
        let meta = CacheMeta::new(now + Duration::from_secs(300), now, 0, 0, h);
        let mut key = CacheKey::new(
            format!("http://bench/1k/mem-{}", if vary { i / 4 } else { i }),
            "",
        );
        if vary {
            key.set_variance_key([(i % 4) as u8 + 1; 16]);
        }
        s.put(&key, &meta, Bytes::from(vec![b'x'; 1024])).unwrap();
        if i % 2 == 0 {
            let _ = s.get(&key);
        }
    }
    let (b1, u1, c1) = (
        BYTES.load(Ordering::Relaxed),
        USABLE.load(Ordering::Relaxed),
        COUNT.load(Ordering::Relaxed),
    );
    use caching_proxy::cache::storage::CacheBackend;
    let u = s.usage();
    println!("entries {} requested/entry {:.0} malloc-usable+hdr/entry {:.0} allocs/entry {:.1} accounted/entry {:.0} (body 1024)",
        u.entries, (b1 - b0) as f64 / n as f64, (u1 - u0) as f64 / n as f64, (c1 - c0) as f64 / n as f64, u.bytes as f64 / n as f64);
    println!(
        "size_of ResponseHeader {}",
        std::mem::size_of::<ResponseHeader>()
    );
}
