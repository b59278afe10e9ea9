//! The warm cache hand-over of a zero-downtime upgrade, through the real binary: the new
//! process serves the old one's entries as hits.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::client::KeepAlive;
use support::{get, request, Origin, Proxy, ProxyBuilder, Reply};

const ENTRIES: usize = 10_000;
const BIG: usize = 3 << 20;

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn big_body() -> Vec<u8> {
    (0..BIG).map(|i| (i % 251) as u8).collect()
}

fn origin() -> Origin {
    Origin::start(|r| match r.path() {
        "/big" => Reply::ok(big_body()).header("cache-control", "max-age=3600"),
        "/aged" => Reply::ok("aged")
            .header("cache-control", "max-age=3600")
            .header("age", "100"),
        "/vary" => {
            let lang = r.header("accept-language").unwrap_or("none").to_owned();
            Reply::ok(format!("in {lang}"))
                .header("cache-control", "max-age=3600")
                .header("vary", "Accept-Language")
        }
        "/short" => Reply::ok("short")
            .header("cache-control", "max-age=1")
            .header("etag", "\"s1\""),
        _ => Reply::ok(format!("item {}", r.target)).header("cache-control", "max-age=3600"),
    })
}

/// Fills the cache with `ENTRIES` small entries over a few keep-alive connections.
fn fill(proxy: &Proxy) {
    let addr = proxy.addr();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            thread::spawn(move || {
                let mut client = KeepAlive::new(addr);
                for i in (w..ENTRIES).step_by(4) {
                    let (status, _) = client.get(&format!("/item/{i}")).unwrap();
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

fn age(proxy: &Proxy, path: &str) -> u64 {
    let r = get(&proxy.url(path));
    assert_eq!(r.x_cache(), "HIT", "{path}");
    r.header("age").unwrap().parse().unwrap()
}

fn upgrade(old: Proxy, origin: &Origin) -> (Proxy, Proxy) {
    let builder = ProxyBuilder::upgrade_of(&old, &origin.url());
    let (new, old) = old.upgrade_to(builder);
    assert!(
        old.log().contains("cache hand-over: sent"),
        "old process log:\n{}",
        old.log()
    );
    (new, old)
}

#[test]
fn upgrade_hands_the_cache_to_the_new_process() {
    let origin = origin();
    let old = ProxyBuilder::new(&origin.url()).start();
    fill(&old);
    for path in ["/big", "/aged", "/short"] {
        assert_eq!(get(&old.url(path)).x_cache(), "MISS", "{path}");
    }
    for lang in ["en", "de"] {
        let r = request("GET", &old.url("/vary"), &[("accept-language", lang)], None);
        assert_eq!(r.x_cache(), "MISS");
    }
    let stored = ENTRIES as u64 + 5;
    assert_eq!(old.stats()["entries"], stored);
    let aged_before = age(&old, "/aged");
    assert!(aged_before >= 100);
    let origin_before = origin.hits();
    let short_stored = Instant::now();

    let (new, _old) = upgrade(old, &origin);
    wait_until("the hand-over", Duration::from_secs(30), || {
        new.stats()["entries"].as_u64() >= Some(stored)
    });
    assert!(
        new.log().contains("cache hand-over: took over"),
        "{}",
        new.log()
    );

    // Every entry is a hit on the new process: the origin hears of none of them.
    let hits_before = new.stats()["hits"].as_u64().unwrap();
    let mut client = KeepAlive::new(new.addr());
    for i in 0..ENTRIES {
        let (status, body) = client.get(&format!("/item/{i}")).unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, format!("item /item/{i}").as_bytes());
    }
    assert_eq!(
        new.stats()["hits"].as_u64().unwrap() - hits_before,
        ENTRIES as u64
    );
    let (status, big) = client.get("/big").unwrap();
    assert_eq!(status, 200);
    assert!(big == big_body(), "the large body is byte-exact");
    assert_eq!(
        new.stats()["hits"].as_u64().unwrap() - hits_before,
        ENTRIES as u64 + 1
    );
    for lang in ["en", "de"] {
        let r = request("GET", &new.url("/vary"), &[("accept-language", lang)], None);
        assert_eq!(r.x_cache(), "HIT");
        assert_eq!(r.body, format!("in {lang}"), "variants kept apart");
    }
    assert!(age(&new, "/aged") >= aged_before, "Age goes on from before");
    assert_eq!(origin.hits(), origin_before);
    let metrics = ureq::get(&new.admin_url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let received =
        format!("caching_proxy_handover_entries_total{{direction=\"received\"}} {stored}");
    assert!(metrics.contains(&received), "{received} in:\n{metrics}");

    // An entry whose freshness ran out meanwhile is not served as fresh.
    thread::sleep(Duration::from_secs(2).saturating_sub(short_stored.elapsed()));
    let short = get(&new.url("/short"));
    assert_ne!(short.x_cache(), "HIT");
    assert_eq!(origin.hits_for("/short"), 2, "revalidated with the origin");
}

#[test]
fn a_smaller_cache_keeps_the_most_recently_used_entries() {
    let origin = origin();
    let old = ProxyBuilder::new(&origin.url()).start();
    let addr = old.addr();
    let mut client = KeepAlive::new(addr);
    for i in 0..1000 {
        client.get(&format!("/item/{i}")).unwrap();
    }
    // Touch the first 100 again: now the most recently used.
    for i in 0..100 {
        client.get(&format!("/item/{i}")).unwrap();
    }
    let builder = ProxyBuilder::upgrade_of(&old, &origin.url()).args(&["--cache-size", "300"]);
    let (new, _old) = old.upgrade_to(builder);
    wait_until("the hand-over", Duration::from_secs(30), || {
        new.log().contains("cache hand-over: took over")
    });
    let entries = new.stats()["entries"].as_u64().unwrap();
    assert!(
        (200..=300).contains(&entries),
        "{entries} entries under a bound of 300"
    );
    let hits_before = new.stats()["hits"].as_u64().unwrap();
    let mut client = KeepAlive::new(new.addr());
    for i in 0..100 {
        client.get(&format!("/item/{i}")).unwrap();
    }
    assert_eq!(
        new.stats()["hits"].as_u64().unwrap() - hits_before,
        100,
        "the most recently used entries were kept"
    );
}

#[test]
fn handover_timeout_zero_starts_cold() {
    let origin = origin();
    let old = ProxyBuilder::new(&origin.url()).start();
    assert_eq!(get(&old.url("/item/1")).x_cache(), "MISS");
    let builder = ProxyBuilder::upgrade_of(&old, &origin.url()).args(&["--handover-timeout", "0"]);
    let (new, _old) = old.upgrade_to(builder);
    assert_eq!(get(&new.url("/item/1")).x_cache(), "MISS");
}

/// With the Redis tier, the memory tier in front of Redis travels too: the new process's
/// first request is answered by its own memory tier, not by Redis.
#[test]
fn the_memory_tier_in_front_of_redis_is_handed_over() {
    let redis = support::RedisServer::start();
    let origin = origin();
    let old = ProxyBuilder::new(&origin.url()).redis(&redis.url()).start();
    assert_eq!(get(&old.url("/item/1")).x_cache(), "MISS");
    let builder = ProxyBuilder::upgrade_of(&old, &origin.url()).redis(&redis.url());
    let (new, _old) = old.upgrade_to(builder);
    wait_until("the hand-over", Duration::from_secs(30), || {
        new.log().contains("cache hand-over: took over 1 entries")
    });
    assert_eq!(get(&new.url("/item/1")).x_cache(), "HIT");
    let tiers = &new.stats()["tiers"];
    assert_eq!(tiers["l1"]["hits"], 1, "{tiers}");
    assert_eq!(tiers["l2"]["hits"], 0, "{tiers}");
    assert_eq!(origin.hits(), 1);
}
