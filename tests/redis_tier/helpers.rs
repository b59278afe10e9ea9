//! Helpers of the Redis tier tests: proxies on one Redis, waiting with a deadline, requests
//! with the shared `Host`, and the tier's stats.

use std::io::Read;
use std::thread;
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use serde_json::Value;

pub use crate::support::{poll, wait_until};
use crate::support::{request, Origin, Proxy, ProxyBuilder, RedisCluster, RedisServer, Response};

/// The `Host` of every request: the cache key names it, and purges address it.
pub const HOST: &str = "shared.test";
/// An in-process tier of 0 bytes: every lookup goes to Redis.
pub const NO_L1: &[&str] = &["--redis-l1-max-bytes", "0"];

/// A standalone server or a cluster, as the proxies see it.
pub trait SharedRedis: Sync {
    /// Points a proxy at this Redis.
    fn attach(&self, builder: ProxyBuilder) -> ProxyBuilder;
    /// Keys matching a glob pattern, on every node.
    fn keys(&self, pattern: &str) -> Vec<String>;
}

impl SharedRedis for RedisServer {
    fn attach(&self, builder: ProxyBuilder) -> ProxyBuilder {
        builder.redis(&self.url())
    }
    fn keys(&self, pattern: &str) -> Vec<String> {
        RedisServer::keys(self, pattern)
    }
}

impl SharedRedis for RedisCluster {
    fn attach(&self, builder: ProxyBuilder) -> ProxyBuilder {
        builder.redis_cluster(&self.urls())
    }
    fn keys(&self, pattern: &str) -> Vec<String> {
        RedisCluster::keys(self, pattern)
    }
}

/// Starts `n` proxies for `origin` on `redis` (in parallel), each with `extra` flags, and
/// waits until each reports its Redis tier up.
pub fn proxies(n: usize, origin: &Origin, redis: &impl SharedRedis, extra: &[&str]) -> Vec<Proxy> {
    let url = origin.url();
    let started: Vec<Proxy> = thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| s.spawn(|| redis.attach(ProxyBuilder::new(&url)).args(extra).start()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for p in &started {
        wait_l2_up(p, true);
    }
    started
}

pub fn proxy(origin: &Origin, redis: &impl SharedRedis, extra: &[&str]) -> Proxy {
    proxies(1, origin, redis, extra).pop().unwrap()
}

pub fn fetch(proxy: &Proxy, path: &str) -> Response {
    request("GET", &proxy.url(path), &[("Host", HOST)], None)
}

pub fn fetch_lang(proxy: &Proxy, path: &str, lang: &str) -> Response {
    request(
        "GET",
        &proxy.url(path),
        &[("Host", HOST), ("Accept-Language", lang)],
        None,
    )
}

/// A GET whose body is kept as bytes; returns `X-Cache` and the body.
pub fn fetch_bytes(proxy: &Proxy, path: &str) -> (String, Vec<u8>) {
    let resp = ureq::get(&proxy.url(path))
        .set("Host", HOST)
        .timeout(Duration::from_secs(30))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let x_cache = resp.header("x-cache").unwrap_or("<none>").to_owned();
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).unwrap();
    (x_cache, body)
}

/// A GET that reports failure instead of panicking (for load from many threads).
pub fn try_fetch(port: u16, path: &str) -> Result<String, String> {
    let resp = ureq::get(&format!("http://127.0.0.1:{port}{path}"))
        .set("Host", HOST)
        .timeout(Duration::from_secs(10))
        .call()
        .map_err(|e| format!("GET {path} on {port}: {e}"))?;
    resp.into_string()
        .map_err(|e| format!("GET {path} on {port}: body: {e}"))
}

/// Purges `path` through the admin API of `proxy`; asserts it was cached.
pub fn admin_purge(proxy: &Proxy, path: &str) {
    let body = format!(r#"{{"url":"http://{HOST}{path}"}}"#);
    let purged = request("POST", &proxy.admin_url("/cache/purge"), &[], Some(&body));
    assert_eq!(purged.status, 200, "{purged:?}");
    assert_eq!(purged.json()["purged"], true, "{path} was cached");
}

/// Purges `path` with the PURGE method (the proxy needs `--enable-purge`).
pub fn method_purge(proxy: &Proxy, path: &str) {
    let purged = request("PURGE", &proxy.url(path), &[("Host", HOST)], None);
    assert_eq!(purged.status, 200, "{purged:?}");
    assert_eq!(purged.json()["purged"], true, "{path} was cached");
}

/// The proxy's `tiers.l2` stats.
pub fn l2(proxy: &Proxy) -> Value {
    proxy.stats()["tiers"]["l2"].clone()
}

pub fn l2_writes(proxy: &Proxy) -> u64 {
    l2(proxy)["writes"].as_u64().unwrap_or(0)
}

/// Waits until `proxy` has completely written `n` entries to Redis.
pub fn wait_writes(proxy: &Proxy, n: u64) {
    let done = poll(Duration::from_secs(5), || l2_writes(proxy) >= n);
    assert!(
        done.is_some(),
        "proxy on {} wrote fewer than {n} entries to Redis; stats: {}",
        proxy.port,
        proxy.stats()
    );
}

/// Waits until the proxy's Redis tier reports `up`.
pub fn wait_l2_up(proxy: &Proxy, up: bool) {
    let done = poll(Duration::from_secs(5), || l2(proxy)["up"] == up);
    assert!(
        done.is_some(),
        "tiers.l2.up of the proxy on {} did not become {up}; stats: {}",
        proxy.port,
        proxy.stats()
    );
}

/// Polls `path` on `proxy` until it is a MISS, for at most `limit`; how long that took.
/// Only the last request (the miss) refills the cache.
pub fn wait_miss(proxy: &Proxy, path: &str, limit: Duration) -> Duration {
    let mut last = String::new();
    let took = poll(limit, || {
        let resp = fetch(proxy, path);
        assert_eq!(resp.status, 200, "{path}: {resp:?}");
        last = resp.x_cache().to_owned();
        last == "MISS"
    });
    took.unwrap_or_else(|| {
        panic!(
            "{path} on the proxy on {} still {last} after {limit:?}",
            proxy.port
        )
    })
}

/// The value of a metric without labels in the admin `/metrics` text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `len` bytes that do not repeat (every byte value occurs): a truncation, reordering or
/// mixed-up chunk shows as a difference.
pub fn noise(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rand::rngs::StdRng::seed_from_u64(9111).fill_bytes(&mut bytes);
    bytes
}

pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}
