//! In-process hot paths of the cache: key building, a hit (lookup and body read), an
//! insert that evicts under the byte bound and the expiry sweep of a large cache; and the
//! status page's one per-request cost, counting a request in the top-URL sketch. Run with `cargo bench --bench cache`.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use caching_proxy::cache::key;
use caching_proxy::cache::storage::memory::{MemoryLimits, MemoryStorage};
use caching_proxy::cache::storage::CacheBackend;
use caching_proxy::status::{Lookup, TopUrls};
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_http::{RequestHeader, ResponseHeader};

fn meta() -> CacheMeta {
    let now = SystemTime::now();
    let mut header = ResponseHeader::build(200, None).unwrap();
    header.insert_header("content-type", "text/html").unwrap();
    header
        .insert_header("cache-control", "public, max-age=300")
        .unwrap();
    header.insert_header("etag", "\"abc123\"").unwrap();
    CacheMeta::new(now + Duration::from_secs(300), now, 0, 0, header)
}

fn fill(storage: &'static MemoryStorage, rt: &tokio::runtime::Runtime, url: &str, body: &Bytes) {
    rt.block_on(async {
        let key = CacheKey::new(url, "");
        let mut miss = storage
            .get_miss_handler(&key, &meta(), &Span::inactive().handle())
            .await
            .unwrap();
        miss.write_body(body.clone(), true).await.unwrap();
        miss.finish().await.unwrap();
    });
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut req = RequestHeader::build("GET", b"/static/app.js?v=123", None).unwrap();
    req.insert_header("host", "www.example.com").unwrap();
    c.bench_function("cache key from request", |b| {
        b.iter(|| key::for_request(black_box(&req), false))
    });

    let storage = MemoryStorage::new_static(MemoryLimits {
        max_bytes: 64 << 20,
        max_entries: 100_000,
        max_object_bytes: 1 << 20,
        stale_retention: Duration::ZERO,
        max_inflight_bytes: 16 << 20,
    });
    let body = Bytes::from(vec![b'x'; 1024]);
    fill(storage, &rt, "hit", &body);
    let hit_key = CacheKey::new("hit", "");
    c.bench_function("hit: lookup and read 1 KiB", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (meta, mut hit) = storage
                    .lookup(black_box(&hit_key), &Span::inactive().handle())
                    .await
                    .unwrap()
                    .unwrap();
                black_box(meta);
                black_box(hit.read_body().await.unwrap())
            })
        })
    });

    let small = MemoryStorage::new_static(MemoryLimits {
        max_bytes: 1 << 20,
        max_entries: 100_000,
        max_object_bytes: 64 << 10,
        stale_retention: Duration::ZERO,
        max_inflight_bytes: 256 << 10,
    });
    let mut i = 0u64;
    c.bench_function("insert 1 KiB with eviction", |b| {
        b.iter(|| {
            i += 1;
            fill(small, &rt, &format!("k{i}"), &body);
        })
    });
}

/// The expiry sweep of one shard holding 10,000 entries past use, stored before 20,000 still
/// fresh (entries of one lifetime end in the order they were stored). The sweep takes the
/// shard's lock, and every request for a key of the shard waits while it holds it: the
/// time here is the whole sweep; how long one hold lasts is this time divided by the
/// number of holds (one for a walk of every entry, a batch of removals each otherwise).
fn sweep(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let body = Bytes::from_static(b"0123456789abcdef");
    let store = |storage: &'static MemoryStorage, url: String, meta: &CacheMeta| {
        rt.block_on(async {
            let key = CacheKey::new(url, "");
            let mut miss = storage
                .get_miss_handler(&key, meta, &Span::inactive().handle())
                .await
                .unwrap();
            miss.write_body(body.clone(), true).await.unwrap();
            miss.finish().await.unwrap();
        })
    };
    let mut group = c.benchmark_group("expiry sweep");
    group.sample_size(10);
    group.bench_function("one shard, 10,000 past use before 20,000 fresh", |b| {
        b.iter_batched(
            || {
                // One shard: it must hold four objects of the largest size.
                let storage = MemoryStorage::new_static(MemoryLimits {
                    max_bytes: 64 << 20,
                    max_entries: 100_000,
                    max_object_bytes: 16 << 20,
                    stale_retention: Duration::ZERO,
                    max_inflight_bytes: 16 << 20,
                });
                let now = SystemTime::now();
                let ended = CacheMeta::new(
                    now - Duration::from_secs(1),
                    now - Duration::from_secs(301),
                    0,
                    0,
                    ResponseHeader::build(200, None).unwrap(),
                );
                for i in 0..10_000 {
                    store(storage, format!("ended{i}"), &ended);
                }
                for i in 0..20_000 {
                    store(storage, format!("fresh{i}"), &meta());
                }
                storage
            },
            |storage| {
                assert_eq!(storage.sweep_expired(0, 1), 10_000);
                // Dropped after the timing: frees the entries (the storage itself is leaked).
                Cleared(storage)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

/// Empties a leaked storage when dropped.
struct Cleared(&'static MemoryStorage);

impl Drop for Cleared {
    fn drop(&mut self) {
        self.0.clear_now();
    }
}

fn top_urls(c: &mut Criterion) {
    let top = TopUrls::default();
    let busy: Vec<String> = (0..200).map(|i| format!("/products/{i}?page=2")).collect();
    let mut n = 0usize;
    c.bench_function("top URLs: count a request (200 busy URLs)", |b| {
        b.iter(|| {
            n = (n + 1) % busy.len();
            top.record("www.example.com", black_box(&busy[n]), Lookup::Hit)
        })
    });
    let mut url = String::with_capacity(64);
    let mut m = 0u64;
    c.bench_function("top URLs: count a request (every URL new)", |b| {
        b.iter(|| {
            use std::fmt::Write;
            m += 1;
            url.clear();
            write!(url, "/search?q={m}").unwrap();
            top.record("www.example.com", black_box(&url), Lookup::Miss)
        })
    });
}

criterion_group!(cache, benches, sweep, top_urls);
criterion_main!(cache);
