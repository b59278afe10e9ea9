//! The Redis cache tier: several real proxies sharing one real `redis-server` (or a
//! three-node Redis Cluster) in front of real origins.
//!
//! Every request carries the same `Host`, so that proxies on different ports address the
//! same cache key. A write to Redis happens after the response has gone out; a test that
//! needs an entry in Redis waits for the writer's `tiers.l2.writes` first.

#[path = "redis_tier/helpers.rs"]
mod helpers;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use helpers::*;
use serde_json::Value;
use support::proxy::run;
use support::{get, Origin, ProxyBuilder, RedisCluster, RedisServer, Reply};

// ---- Checks run against a standalone server and against a cluster -------------------------------

/// A MISS on A is a HIT on B, which has no in-process tier, with one origin request and an
/// `Age` counted from when A stored it.
fn miss_on_a_is_a_hit_on_b(redis: &impl SharedRedis) {
    let origin = Origin::cacheable();
    let a = proxy(&origin, redis, &[]);
    let b = proxy(&origin, redis, NO_L1);

    let first = fetch(&a, "/shared");
    assert_eq!((first.status, first.x_cache()), (200, "MISS"));
    wait_writes(&a, 1);
    // Not synchronisation: the entry has to be a second old for a non-zero Age.
    thread::sleep(Duration::from_millis(1200));

    let second = fetch(&b, "/shared");
    assert_eq!(
        (second.status, second.x_cache()),
        (200, "HIT"),
        "{second:?}"
    );
    assert_eq!(second.body, "body of /shared");
    let age: u64 = second
        .header("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("a hit carries Age: {second:?}"));
    assert!((1..=30).contains(&age), "Age {age} after ~1.2 s");
    assert_eq!(origin.hits_for("/shared"), 1);
    assert_eq!(l2(&b)["hits"], 1, "{}", b.stats());
    assert_eq!(l2(&b)["backend"], "redis");
}

/// A purge on A, by the admin API and by the PURGE method, reaches B and C (which hold the
/// entries in their in-process tier) within 1 s. Each proxy checks a URL of its own, as
/// the miss that ends the wait refills Redis.
fn purge_on_a_reaches_b_and_c(redis: &impl SharedRedis) {
    let origin = Origin::cacheable();
    let a = redis
        .attach(ProxyBuilder::new(&origin.url()))
        .arg("--enable-purge")
        .start();
    wait_l2_up(&a, true);
    let others = proxies(2, &origin, redis, &[]);
    let paths = |how: &str| [format!("/purge/{how}-b"), format!("/purge/{how}-c")];
    let all: Vec<String> = ["admin", "method"].iter().flat_map(|h| paths(h)).collect();

    for path in &all {
        assert_eq!(fetch(&a, path).x_cache(), "MISS");
    }
    wait_writes(&a, all.len() as u64);
    for how in ["admin", "method"] {
        for (p, path) in others.iter().zip(paths(how)) {
            assert_eq!(fetch(p, &path).x_cache(), "HIT", "{path} from Redis");
            assert_eq!(fetch(p, &path).x_cache(), "HIT", "{path} from memory");
        }
    }
    for p in &others {
        let l1 = &p.stats()["tiers"]["l1"];
        assert!(
            l1["hits"].as_u64() >= Some(2),
            "the purge must reach copies in memory: {l1}"
        );
    }

    for how in ["admin", "method"] {
        for path in paths(how) {
            match how {
                "admin" => admin_purge(&a, &path),
                _ => method_purge(&a, &path),
            }
        }
        for (p, path) in others.iter().zip(paths(how)) {
            let took = wait_miss(p, &path, Duration::from_secs(1));
            eprintln!("{how} purge of {path} seen after {took:?}");
        }
    }
    assert_eq!(origin.hits(), all.len() * 2);
}

/// A 5 MiB body of non-repeating bytes stored by A comes back byte-exact from Redis on B.
fn large_body_round_trips(redis: &impl SharedRedis) {
    const LEN: usize = 5 << 20;
    let body = Arc::new(noise(LEN));
    let served = body.clone();
    let origin = Origin::start(move |_| {
        Reply::ok(served.to_vec())
            .header("cache-control", "max-age=60")
            .header("content-type", "application/octet-stream")
    });
    let a = proxy(&origin, redis, &[]);
    let b = proxy(&origin, redis, NO_L1);

    let (x_cache, first) = fetch_bytes(&a, "/large");
    assert_eq!(x_cache, "MISS");
    assert_eq!(first.len(), LEN);
    assert!(
        first == *body,
        "differs at {:?}",
        first_difference(&first, &body)
    );
    wait_writes(&a, 1);
    assert!(
        !redis.keys("cp:*:b:*").is_empty(),
        "a large body is stored in chunks"
    );

    for _ in 0..2 {
        let (x_cache, got) = fetch_bytes(&b, "/large");
        assert_eq!(x_cache, "HIT");
        assert_eq!(got.len(), LEN, "length from Redis");
        assert!(
            got == *body,
            "differs at {:?}",
            first_difference(&got, &body)
        );
    }
    assert_eq!(origin.hits(), 1);
}

/// 100 concurrent requests on each of 3 proxies for one uncached, slow URL: one origin
/// request in all (the fill lock lives in Redis), every client gets the body.
fn concurrent_misses_on_three_proxies(redis: &impl SharedRedis) {
    const PER_PROXY: usize = 100;
    let origin = Origin::start(|_| {
        Reply::ok("slow body")
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(300))
    });
    let all = proxies(3, &origin, redis, &[]);

    let barrier = Arc::new(Barrier::new(all.len() * PER_PROXY));
    let clients: Vec<_> = all
        .iter()
        .flat_map(|p| std::iter::repeat_n(p.port, PER_PROXY))
        .map(|port| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                try_fetch(port, "/slow")
            })
        })
        .collect();
    let results: Vec<Result<String, String>> =
        clients.into_iter().map(|c| c.join().unwrap()).collect();

    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert!(results.iter().all(|r| r.as_deref() == Ok("slow body")));
    assert_eq!(
        origin.hits_for("/slow"),
        1,
        "one origin request for 300 clients"
    );
}

// ---- Sharing entries ----------------------------------------------------------------------------

#[test]
fn miss_on_one_proxy_is_a_hit_on_another() {
    miss_on_a_is_a_hit_on_b(&RedisServer::start());
}

#[test]
fn concurrent_misses_on_three_proxies_are_one_origin_request() {
    concurrent_misses_on_three_proxies(&RedisServer::start());
}

#[test]
fn purge_reaches_every_proxy_within_a_second() {
    purge_on_a_reaches_b_and_c(&RedisServer::start());
}

/// `--clear-cache` against A clears the shared tier and every proxy's in-process tier.
#[test]
fn clear_cache_on_one_proxy_clears_all() {
    let redis = RedisServer::start();
    let origin = Origin::cacheable();
    let all = proxies(3, &origin, &redis, &[]);
    let paths = ["/clear/a", "/clear/b", "/clear/c"];
    for path in paths {
        assert_eq!(fetch(&all[0], path).x_cache(), "MISS");
    }
    wait_writes(&all[0], 3);
    for (p, path) in all.iter().zip(paths) {
        assert_eq!(fetch(p, path).x_cache(), "HIT", "{path}");
        assert_eq!(fetch(p, path).x_cache(), "HIT", "{path}");
    }

    let admin_port = all[0].admin_port.to_string();
    let out = run(&["--clear-cache", "--admin-port", &admin_port], &[]);
    assert!(out.status.success(), "{out:?}");

    assert_eq!(fetch(&all[0], paths[0]).x_cache(), "MISS", "on A at once");
    for (p, path) in all.iter().zip(paths).skip(1) {
        wait_miss(p, path, Duration::from_secs(1));
    }
    assert_eq!(origin.hits(), 6);
}

/// A new proxy on the same Redis serves what an earlier one stored.
#[test]
fn restarted_proxy_serves_entries_from_redis() {
    let redis = RedisServer::start();
    let origin = Origin::cacheable();
    let first = proxy(&origin, &redis, &[]);
    assert_eq!(fetch(&first, "/kept").x_cache(), "MISS");
    wait_writes(&first, 1);
    drop(first);

    let second = proxy(&origin, &redis, &[]);
    let resp = fetch(&second, "/kept");
    assert_eq!(
        (resp.x_cache(), resp.body.as_str()),
        ("HIT", "body of /kept")
    );
    assert_eq!(origin.hits(), 1);
}

// ---- Entries in Redis ---------------------------------------------------------------------------

#[test]
fn large_body_round_trips_byte_exact() {
    large_body_round_trips(&RedisServer::start());
}

#[test]
fn vary_variants_are_kept_apart_in_redis() {
    let redis = RedisServer::start();
    let origin = Origin::start(|r| {
        Reply::ok(format!(
            "lang={}",
            r.header("accept-language").unwrap_or("none")
        ))
        .header("cache-control", "max-age=60")
        .header("vary", "Accept-Language")
    });
    let a = proxy(&origin, &redis, &[]);
    let b = proxy(&origin, &redis, NO_L1);
    for lang in ["en", "fr"] {
        assert_eq!(fetch_lang(&a, "/v", lang).x_cache(), "MISS");
    }
    wait_writes(&a, 2);
    for _ in 0..2 {
        for lang in ["en", "fr"] {
            let resp = fetch_lang(&b, "/v", lang);
            assert_eq!(
                (resp.x_cache(), resp.body.as_str()),
                ("HIT", &*format!("lang={lang}"))
            );
        }
    }
    let de = fetch_lang(&b, "/v", "de");
    assert_eq!((de.x_cache(), de.body.as_str()), ("MISS", "lang=de"));
    assert_eq!(origin.hits(), 3);
}

/// A meta value that does not decode is a miss, not an error; the refill replaces it.
#[test]
fn corrupt_meta_in_redis_is_a_miss() {
    let redis = RedisServer::start();
    let origin = Origin::cacheable();
    let mut b = proxy(
        &origin,
        &redis,
        &[NO_L1, &["--redis-key-prefix", "cp:"]].concat(),
    );
    assert_eq!(fetch(&b, "/c").x_cache(), "MISS");
    wait_writes(&b, 1);
    assert_eq!(fetch(&b, "/c").x_cache(), "HIT");

    let metas = redis.keys("cp:*:m:*");
    assert!(!metas.is_empty(), "meta keys: {:?}", redis.keys("*"));
    for key in &metas {
        assert_eq!(redis.cli(&["SET", key, "garbage"]), "OK");
    }
    let resp = fetch(&b, "/c");
    assert_eq!(resp.status, 200);
    assert_eq!((resp.x_cache(), resp.body.as_str()), ("MISS", "body of /c"));
    assert!(b.is_running());
    assert_eq!(fetch(&b, "/other").status, 200, "keeps serving");

    wait_writes(&b, 3);
    assert_eq!(fetch(&b, "/c").x_cache(), "HIT", "after the refill");
    assert_eq!(origin.hits_for("/c"), 2);
}

// ---- Redis failing ------------------------------------------------------------------------------

/// Redis killed and restarted under load: every client request succeeds, and the tier
/// comes back by itself (no proxy restart).
#[test]
fn redis_killed_under_load_fails_open_and_recovers() {
    let mut redis = RedisServer::start();
    let origin = Origin::cacheable();
    let a = proxy(&origin, &redis, &[]);
    let b = proxy(&origin, &redis, NO_L1);

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let ports = [a.port, b.port];
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (stop, failures) = (stop.clone(), failures.clone());
            thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    // Mostly the same few URLs, now and then a new one (a fill).
                    let path = match n % 5 {
                        4 => format!("/load/new-{t}-{n}"),
                        i => format!("/load/{i}"),
                    };
                    match try_fetch(ports[n % 2], &path) {
                        Ok(body) if body == format!("body of {path}") => {}
                        Ok(body) => failures.lock().unwrap().push(format!("{path}: {body:?}")),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    n += 1;
                    thread::sleep(Duration::from_millis(5));
                }
                n
            })
        })
        .collect();

    // The sleeps set the pace of the scenario, under load; nothing waits on them.
    thread::sleep(Duration::from_secs(1));
    redis.kill();
    thread::sleep(Duration::from_secs(1));
    redis.restart();
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let sent: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();

    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        l2(&b)["errors"].as_u64() > Some(0),
        "Redis was down: {}",
        b.stats()
    );
    for p in [&a, &b] {
        wait_l2_up(p, true);
    }
    let writes = l2_writes(&a);
    assert_eq!(fetch(&a, "/after-restart").x_cache(), "MISS");
    wait_writes(&a, writes + 1);
    assert_eq!(fetch(&b, "/after-restart").x_cache(), "HIT", "shared again");
}

/// A Redis that does not answer costs a request at most the Redis timeout per call, not
/// the length of the stall.
#[test]
fn paused_redis_does_not_stall_requests() {
    let redis = RedisServer::start();
    let origin = Origin::cacheable();
    let p = proxy(
        &origin,
        &redis,
        &[NO_L1, &["--redis-timeout", "50ms"]].concat(),
    );
    redis.pause(2000);
    let paused = Instant::now();
    for path in ["/paused/1", "/paused/1", "/paused/2"] {
        let started = Instant::now();
        let resp = fetch(&p, path);
        let took = started.elapsed();
        assert_eq!(
            (resp.status, resp.body.as_str()),
            (200, &*format!("body of {path}"))
        );
        assert!(took < Duration::from_millis(1500), "{path} took {took:?}");
    }
    assert!(
        paused.elapsed() < Duration::from_secs(2),
        "all within the pause"
    );
    assert!(
        l2(&p)["errors"].as_u64() > Some(0),
        "calls timed out: {}",
        p.stats()
    );
}

/// Readiness does not depend on Redis, but says whether it is up; the Redis metrics exist.
#[test]
fn readiness_and_metrics_report_redis() {
    let mut redis = RedisServer::start();
    let origin = Origin::cacheable();
    let a = proxy(&origin, &redis, &[]);
    let b = proxy(&origin, &redis, NO_L1);
    let ready = get(&a.admin_url("/health/ready"));
    assert_eq!(
        (ready.status, &ready.json()["redis"]),
        (200, &Value::from("up"))
    );

    fetch(&a, "/m");
    wait_writes(&a, 1);
    assert_eq!(fetch(&a, "/m").x_cache(), "HIT", "from memory");
    assert_eq!(fetch(&b, "/m").x_cache(), "HIT", "from Redis");
    let metrics_a = get(&a.admin_url("/metrics")).body;
    assert_eq!(metric(&metrics_a, "caching_proxy_redis_up"), Some(1.0));
    assert!(metrics_a.contains(r#"caching_proxy_cache_tier_hits_total{tier="l1"}"#));
    assert!(metrics_a.contains("caching_proxy_redis_duration_seconds_bucket{"));
    assert!(
        metrics_a.contains("op="),
        "Redis metrics carry the operation"
    );
    let metrics_b = get(&b.admin_url("/metrics")).body;
    assert!(metrics_b.contains(r#"caching_proxy_cache_tier_hits_total{tier="l2"}"#));

    redis.kill();
    wait_until(
        Duration::from_secs(5),
        "readiness to say redis down",
        || {
            let ready = get(&a.admin_url("/health/ready"));
            assert_eq!(ready.status, 200, "ready without Redis: {ready:?}");
            ready.json()["redis"] == "down"
        },
    );
    assert_eq!(l2(&a)["up"], false);
    let mut n = 0;
    wait_until(
        Duration::from_secs(5),
        "Redis errors in the metrics",
        || {
            n += 1;
            assert_eq!(fetch(&b, &format!("/down/{n}")).status, 200);
            let text = get(&b.admin_url("/metrics")).body;
            metric(&text, "caching_proxy_redis_up") == Some(0.0)
                && text.contains("caching_proxy_redis_errors_total{")
        },
    );
}

/// A "Redis" that answers every connection with bytes that are not RESP: the proxy serves
/// every request from the origin, reports Redis down and counts the errors.
#[test]
fn redis_answering_garbage_is_treated_as_down() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0
                        || conn
                            .write_all(b"HTTP/1.1 400 Bad Request\r\n\x00\xff")
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    let origin = Origin::cacheable();
    let p = ProxyBuilder::new(&origin.url())
        .redis(&url)
        .args(NO_L1)
        .start();
    for i in 0..10 {
        let r = get(&p.url(&format!("/g{i}")));
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(origin.hits(), 10);
    let ready: Value = get(&p.admin_url("/health/ready")).json();
    assert_eq!(ready["redis"], "down", "{ready}");
    assert!(l2(&p)["errors"].as_u64().unwrap() > 0, "{}", l2(&p));
}

// ---- Redis Cluster ------------------------------------------------------------------------------

#[test]
fn cluster_miss_on_one_proxy_is_a_hit_on_another() {
    miss_on_a_is_a_hit_on_b(&RedisCluster::start());
}

#[test]
fn cluster_purge_reaches_every_proxy_within_a_second() {
    purge_on_a_reaches_b_and_c(&RedisCluster::start());
}

#[test]
fn cluster_concurrent_misses_on_three_proxies_are_one_origin_request() {
    concurrent_misses_on_three_proxies(&RedisCluster::start());
}

#[test]
fn cluster_large_body_round_trips_byte_exact() {
    large_body_round_trips(&RedisCluster::start());
}

// ---- The helpers themselves ---------------------------------------------------------------------

#[test]
fn redis_server_helper_sets_gets_restarts_and_pauses() {
    let mut redis = RedisServer::start();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.cli(&["SET", "cp:{a}:m:1", "v1"]), "OK");
    assert_eq!(redis.cli(&["GET", "cp:{a}:m:1"]), "v1");
    assert_eq!(redis.keys("cp:*:m:*"), ["cp:{a}:m:1"]);
    assert!(redis.keys("cp:*:b:*").is_empty());

    redis.kill();
    redis.restart();
    assert_eq!(redis.cli(&["PING"]), "PONG");
    assert_eq!(redis.cli(&["GET", "cp:{a}:m:1"]), "", "no persistence");
    redis.pause(10);
    assert_eq!(
        redis.cli(&["CONFIG", "GET", "maxmemory-policy"]),
        "maxmemory-policy\nallkeys-lru"
    );
}

#[test]
fn redis_cluster_helper_spreads_keys_over_three_nodes() {
    let cluster = RedisCluster::start();
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.urls().split(',').count(), 3);
    for i in 0..30 {
        assert_eq!(
            cluster.cli(&["SET", &format!("k{i}"), &format!("v{i}")]),
            "OK"
        );
    }
    assert_eq!(cluster.cli(&["GET", "k7"]), "v7");
    let mut keys = cluster.keys("k*");
    keys.sort();
    assert_eq!(keys.len(), 30, "{keys:?}");
}
