//! `GET /status`, the admin status page's data: fields and units (README, "Admin API"),
//! figures that follow traffic, the top-URL list, the token rule, no secrets.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{free_port, get, request, Origin, Proxy, ProxyBuilder};

/// Polls `/status` until `ready` holds for it (the figures are sampled once a second).
fn wait_status(
    proxy: &Proxy,
    token: Option<&str>,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = request("GET", &proxy.admin_url("/status"), &headers, None);
        assert_eq!(r.status, 200, "{r:?}");
        let status = r.json();
        if ready(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "/status never showed {what}: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn top_url<'a>(status: &'a Value, path: &str) -> Option<&'a Value> {
    status["top_urls"]["urls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["url"].as_str().unwrap().ends_with(path))
}

/// A counter: `{"total": N, "per_s": {"1s": r, "1m": r, "15m": r}}`.
fn assert_counter(v: &Value, name: &str) {
    assert!(v["total"].is_u64(), "{name}.total: {v}");
    for w in ["1s", "1m", "15m"] {
        let rate = &v["per_s"][w];
        assert!(
            rate.as_f64().is_some_and(|r| r >= 0.0),
            "{name}.per_s.{w}: {v}"
        );
    }
}

#[test]
fn status_reports_traffic_in_documented_fields_and_units() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--cache-size", "500"])
        .start();
    // 2 misses, then 3 hits on /s/a.
    for path in ["/s/a", "/s/b"] {
        get(&proxy.url(path));
    }
    proxy.wait_stored(2);
    for _ in 0..3 {
        assert_eq!(get(&proxy.url("/s/a")).x_cache(), "HIT");
    }
    let s = wait_status(&proxy, None, "5 requests", |s| s["requests"]["total"] == 5);

    let inst = &s["instance"];
    assert_eq!(inst["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(inst["pid"], proxy.pid());
    assert_eq!(inst["state"], "ready");
    assert_eq!(inst["ready"], true);
    assert_eq!(inst["listen"], proxy.addr().to_string());
    assert_eq!(inst["admin"], proxy.admin_addr().to_string());
    assert!(inst["uptime_s"].is_u64());
    assert!(
        inst["started"].as_str().unwrap().ends_with('Z'),
        "RFC 3339, UTC"
    );
    assert_eq!(inst["config"]["admin_token"], "unset");
    assert_eq!(inst["config"]["cache"]["max_entries"], 500);

    for w in ["1s", "1m", "15m"] {
        assert!(
            s["windows_s"][w].as_f64().unwrap() > 0.0,
            "{}",
            s["windows_s"]
        );
    }
    assert!(s["windows_s"]["1m"].as_f64().unwrap() <= 60.0);
    assert_counter(&s["requests"], "requests");
    // Everything happened within the minute: 3 served from the cache of 5 lookups.
    assert_eq!(s["hit_ratio"]["1m"], 0.6);
    assert_eq!(s["hit_ratio"]["15m"], 0.6);
    assert!(s["requests"]["per_s"]["15m"].as_f64().unwrap() > 0.0);

    let cache = &s["cache"];
    assert_eq!(cache["entries"], 2);
    assert_eq!(cache["max_entries"], 500);
    assert!(cache["bytes"].as_u64().unwrap() > 0);
    assert_eq!(cache["max_bytes"], 256 << 20);
    for name in ["evictions", "expirations", "coalesced_waits"] {
        assert_counter(&cache[name], name);
    }
    let x = &cache["x_cache"];
    for status in ["HIT", "MISS", "EXPIRED", "STALE", "REVALIDATED", "BYPASS"] {
        assert_counter(&x[status], status);
    }
    assert_eq!(
        (x["HIT"]["total"].as_u64(), x["MISS"]["total"].as_u64()),
        (Some(3), Some(2))
    );

    let o = &s["origin"];
    assert_counter(&o["requests"], "origin.requests");
    assert_eq!(o["requests"]["total"], 2);
    for kind in ["connect", "timeout", "reset", "5xx"] {
        assert_counter(&o["errors"][kind], kind);
        assert_eq!(o["errors"][kind]["total"], 0);
    }
    let latency = &o["latency"];
    assert_eq!(latency["responses"], 2);
    let (p50, p99) = (
        latency["p50_ms"].as_f64().unwrap(),
        latency["p99_ms"].as_f64().unwrap(),
    );
    assert!(
        p50 > 0.0 && p50 <= p99 && p99 < 30_000.0,
        "milliseconds: {latency}"
    );

    let top = &s["top_urls"];
    assert_eq!(top["window_s"], 60);
    let a = top_url(&s, "/s/a").expect("/s/a in the top list");
    assert_eq!(top["urls"][0], *a, "the most requested first");
    assert_eq!(a["url"], format!("127.0.0.1:{}/s/a", proxy.port));
    assert_eq!(
        (a["requests"].as_u64(), a["hits"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(a["hit_ratio"], 0.75);
    assert_eq!(top_url(&s, "/s/b").unwrap()["hit_ratio"], 0.0);

    let chart = &s["chart"];
    assert_eq!(chart["interval_s"], 1);
    let points = chart["requests_per_s"].as_array().unwrap();
    assert!(!points.is_empty() && points.len() <= 300);
    assert_eq!(chart["hit_ratio"].as_array().unwrap().len(), points.len());
    assert!(
        points.iter().any(|p| p.as_f64().unwrap_or(0.0) > 0.0),
        "{chart}"
    );

    assert!(
        s["upstreams"].is_null(),
        "--origin alone: no groups to show"
    );
    assert!(s["redis"].is_null(), "no Redis tier");

    // More traffic moves the figures.
    get(&proxy.url("/s/c"));
    for _ in 0..6 {
        get(&proxy.url("/s/c"));
    }
    let after = wait_status(&proxy, None, "12 requests", |s| {
        s["requests"]["total"] == 12
    });
    assert_eq!(after["cache"]["entries"], 3);
    assert_eq!(
        after["top_urls"]["urls"][0]["url"],
        format!("127.0.0.1:{}/s/c", proxy.port)
    );
    assert_eq!(after["top_urls"]["urls"][0]["requests"], 7);
    assert_eq!(after["hit_ratio"]["1m"], 0.75, "9 of 12");
    assert_eq!(after["origin"]["requests"]["total"], 3);
}

#[test]
fn status_needs_the_token_when_one_is_set_and_never_shows_secrets() {
    let origin = Origin::cacheable();
    let token = "status-token-4f1c";
    let redis_password = "redis-pass-9d2e";
    // A Redis tier that is down: the proxy serves without it, and says so.
    let redis = format!("redis://:{redis_password}@127.0.0.1:{}/0", free_port());
    let proxy = ProxyBuilder::new(&origin.url())
        .redis(&redis)
        .env("PROXY_ADMIN_TOKEN", token)
        .start();
    get(&proxy.url("/requested-before-login"));

    // The page itself carries no data and is served to anyone.
    let page = get(&proxy.admin_url("/"));
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("default-src 'none'"));
    assert!(!page.body.contains("requested-before-login"));
    let js = get(&proxy.admin_url("/assets/status.js"));
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(get(&proxy.admin_url("/assets/status.css")).status, 200);

    for auth in [None, Some("Bearer wrong"), Some(token)] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let r = request("GET", &proxy.admin_url("/status"), &headers, None);
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.json()["code"], "UNAUTHORIZED");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let s = wait_status(&proxy, Some(token), "the request", |s| {
        s["requests"]["total"] == 1
    });
    let text = s.to_string();
    assert!(!text.contains(token), "the admin token leaked: {text}");
    assert!(
        !text.contains(redis_password),
        "the Redis password leaked: {text}"
    );
    assert_eq!(s["instance"]["config"]["admin_token"], "set");
    let r = &s["redis"];
    assert_eq!(r["up"], false);
    assert_eq!(
        r["nodes"][0],
        redis.rsplit('@').next().unwrap().trim_end_matches("/0")
    );
    for field in ["hits", "misses", "writes", "errors"] {
        assert!(r[field].is_u64(), "{field}: {r}");
    }
    assert!(matches!(r["circuit"].as_str(), Some("open" | "closed")));
    // The Redis tier has no L1 bound of entries: reported as 0, which the page leaves out.
    assert!(s["cache"]["max_entries"].is_u64());

    let post = request("POST", &proxy.admin_url("/status"), &[], Some(""));
    assert_eq!(post.status, 405);
    let post = request("POST", &proxy.admin_url("/"), &[], Some(""));
    assert_eq!(post.status, 405);
}

/// Sends `GET path` for every path over one keep-alive connection; returns how many
/// answers were 200.
fn keep_alive_gets(addr: SocketAddr, paths: impl Iterator<Item = String>) -> usize {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut ok = 0;
    for path in paths {
        let request = format!("GET {path} HTTP/1.1\r\nHost: flood.test\r\n\r\n");
        writer.write_all(request.as_bytes()).unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        ok += usize::from(status.starts_with("HTTP/1.1 200"));
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
    }
    ok
}

#[test]
fn top_urls_stay_bounded_under_many_distinct_urls_and_groups_are_shown() {
    let origin = Origin::cacheable();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    let closed = free_port();
    // `/flood?n=...` is one cache entry whatever `n` is (key_ignore_query), but every `n`
    // is a distinct URL for the top list: many distinct URLs cost one origin fetch.
    std::fs::write(
        &config,
        format!(
            "upstreams:\n  site:\n    servers: [\"{}\"]\n    health_check: {{type: http, path: /health, host: site.test, interval: 1s}}\n  gone:\n    servers: [\"127.0.0.1:{closed}\"]\n    health_check: {{type: tcp, interval: 1s, unhealthy_after: 1}}\nroutes:\n  - path_prefix: /flood\n    upstream: site\n    cache: {{key_ignore_query: [n]}}\n  - path_prefix: /gone/\n    upstream: gone\n",
            origin.addr()
        ),
    )
    .unwrap();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["-c", config.to_str().unwrap(), "--log-level", "warn"])
        .start();

    const DISTINCT: usize = 20_000;
    let addr = proxy.addr();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            std::thread::spawn(move || {
                let paths = (0..DISTINCT / 4).flat_map(move |i| {
                    let n = w * (DISTINCT / 4) + i;
                    // Every 20th request is for the one hot URL.
                    let hot = (i % 20 == 0).then(|| "/flood?n=hot".to_owned());
                    std::iter::once(format!("/flood?n={n}")).chain(hot)
                });
                keep_alive_gets(addr, paths)
            })
        })
        .collect();
    let ok: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(ok, DISTINCT + DISTINCT / 20);

    let s = wait_status(&proxy, None, "every request", |s| {
        s["requests"]["total"] == (DISTINCT + DISTINCT / 20) as u64
    });
    let top = &s["top_urls"];
    assert_eq!(top["urls"].as_array().unwrap().len(), 20);
    assert_eq!(top["urls"][0]["url"], "flood.test/flood?n=hot");
    assert_eq!(top["urls"][0]["requests"], (DISTINCT / 20) as u64);
    assert_eq!(top["urls"][0]["hit_ratio"], 1.0);
    let (tracked, bound) = (
        top["tracked"].as_u64().unwrap(),
        top["bound"].as_u64().unwrap(),
    );
    assert!(
        tracked <= bound && bound <= 4096,
        "{tracked} tracked, bound {bound}"
    );
    assert_eq!(s["cache"]["entries"], 1, "one entry for every n");

    // Upstream groups, with their health.
    let s = wait_status(&proxy, None, "the closed server unhealthy", |s| {
        s["upstreams"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["name"] == "gone" && g["healthy"] == 0))
    });
    let groups = s["upstreams"].as_array().unwrap();
    let site = groups.iter().find(|g| g["name"] == "site").unwrap();
    assert_eq!(site["healthy"], 1);
    assert_eq!(site["health_check"], true);
    assert_eq!(site["servers"][0]["server"], origin.addr().to_string());
    assert_eq!(site["servers"][0]["healthy"], true);
    let gone = groups.iter().find(|g| g["name"] == "gone").unwrap();
    assert_eq!(gone["servers"][0]["healthy"], false);
    assert!(
        groups.iter().any(|g| g["name"] == "origin"),
        "--origin's group too"
    );
}

#[test]
fn status_says_draining_during_a_graceful_stop() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url()).grace_period("10s").start();
    let s = wait_status(&proxy, None, "ready", |s| s["instance"]["state"] == "ready");
    assert_eq!(s["instance"]["ready"], true);
    proxy.signal("TERM");
    let s = wait_status(&proxy, None, "draining", |s| {
        s["instance"]["state"] == "draining"
    });
    assert_eq!(s["instance"]["ready"], false);
    // Still sampling while draining: the figures stay live (a sample taken 2 s after the
    // draining began).
    let uptime = s["instance"]["uptime_s"].as_u64().unwrap();
    wait_status(&proxy, None, "a later sample", |s| {
        s["windows_s"]["15m"].as_f64().unwrap() > (uptime + 2) as f64
    });
}
