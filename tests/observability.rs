//! Metrics and logs: counters that agree exactly with a known sequence of requests, the
//! access record's fields, and no secrets in logs.

mod support;

use std::collections::HashMap;
use std::thread;
use std::time::Duration;

use support::client::Pending;
use support::net::read_by_server;
use support::{free_port, get, request, Gate, Origin, Proxy, ProxyBuilder, Reply};

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// One scrape: `name{k="v",...}` (labels sorted) -> value.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    fn take(proxy: &Proxy) -> Scrape {
        let resp = get(&proxy.admin_url("/metrics"));
        assert_eq!(resp.status, 200);
        assert!(resp
            .header("content-type")
            .unwrap()
            .starts_with("text/plain"));
        let mut values = HashMap::new();
        for line in resp
            .body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let key = match series.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                    labels.sort();
                    format!("{name}{{{}}}", labels.join(","))
                }
                None => series.to_owned(),
            };
            values.insert(key, value.parse().unwrap());
        }
        Scrape(values)
    }

    fn get(&self, series: &str) -> f64 {
        *self.0.get(series).unwrap_or(&0.0)
    }

    fn has(&self, series: &str) -> bool {
        self.0.contains_key(series)
    }

    /// The sum over every label set of `name`.
    fn total(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }

    /// Scrapes until `requests` more requests than in `before` have been recorded: request
    /// metrics are recorded as each request finishes, just after its response went out.
    fn after_requests(proxy: &Proxy, before: &Scrape, requests: f64) -> Scrape {
        // Both are recorded as a request ends, one after the other: a scrape can fall
        // between them.
        let names = [
            "caching_proxy_requests_total",
            "caching_proxy_request_duration_seconds_count",
        ];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = Scrape::take(proxy);
            if names
                .iter()
                .all(|name| now.total(name) - before.total(name) >= requests)
            {
                return now;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "requests not all recorded"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Asserts `after - before` for each series.
fn assert_deltas(before: &Scrape, after: &Scrape, expected: &[(&str, f64)]) {
    for (series, delta) in expected {
        let got = after.get(series) - before.get(series);
        assert_eq!(got, *delta, "{series}: expected delta {delta}, got {got}");
    }
}

#[test]
fn counters_agree_with_a_known_sequence() {
    let gate = Gate::new();
    let held = gate.clone();
    let origin = Origin::start(move |r| match r.path() {
        "/err" => Reply::ok("broken").status(500),
        "/slow" => {
            held.wait();
            Reply::ok("slow").header("cache-control", "max-age=60")
        }
        "/reval" => match r.header("if-none-match") {
            Some(_) => Reply::ok("").status(304).header("etag", "\"e\""),
            None => Reply::ok("r")
                .header("cache-control", "max-age=0")
                .header("etag", "\"e\""),
        },
        _ => Reply::ok("x").header("cache-control", "max-age=60"),
    });
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--cache-size", "3"])
        .start();
    let before = Scrape::take(&proxy);

    get(&proxy.url("/a")); // MISS
    get(&proxy.url("/a")); // HIT
    get(&proxy.url("/a")); // HIT
    request("POST", &proxy.url("/b"), &[], Some("x")); // BYPASS
    get(&proxy.url("/err")); // MISS, origin 5xx
    get(&proxy.url("/reval")); // MISS (stored stale)
    get(&proxy.url("/reval")); // REVALIDATED
                               // Five requests for /slow: the first one's fetch is held at the origin until the four
                               // others have been read by the proxy (and so wait on the first one's fetch).
    let first = Pending::get(proxy.addr(), "/slow");
    wait_for("the first /slow at the origin", || {
        origin.hits_for("/slow") == 1
    });
    let waiters: Vec<Pending> = (0..4)
        .map(|_| Pending::get(proxy.addr(), "/slow"))
        .collect();
    wait_for("the proxy to read the other four", || {
        waiters
            .iter()
            .all(|w| read_by_server(w.local_port(), proxy.port))
    });
    gate.open();
    for p in std::iter::once(first).chain(waiters) {
        assert_eq!(p.response().status, 200);
    }
    // /a, /reval, /slow are stored; with 3 entries at most, the next one evicts.
    get(&proxy.url("/c")); // MISS, one eviction
    proxy.wait_stored(3);

    let after = Scrape::after_requests(&proxy, &before, 13.0);
    let req = |m: &str, class: &str, cache: &str| {
        format!(
            r#"caching_proxy_requests_total{{cache_status="{cache}",method="{m}",route="0",status_class="{class}"}}"#
        )
    };
    assert_deltas(
        &before,
        &after,
        &[
            (&req("GET", "2xx", "HIT"), 6.0),  // 2 for /a, 4 waiters on /slow
            (&req("GET", "2xx", "MISS"), 4.0), // /a, /reval, /slow, /c
            (&req("GET", "5xx", "MISS"), 1.0),
            (&req("GET", "2xx", "REVALIDATED"), 1.0),
            (&req("POST", "2xx", "BYPASS"), 1.0),
            ("caching_proxy_cache_hits_total", 6.0),
            ("caching_proxy_cache_misses_total", 5.0),
            ("caching_proxy_cache_revalidations_total", 1.0),
            ("caching_proxy_cache_bypass_total", 1.0),
            ("caching_proxy_cache_coalesced_waits_total", 4.0),
            ("caching_proxy_cache_evictions_total", 1.0),
            (r#"caching_proxy_origin_errors_total{kind="5xx"}"#, 1.0),
            (r#"caching_proxy_origin_errors_total{kind="connect"}"#, 0.0),
            (
                r#"caching_proxy_request_duration_seconds_count{cache_status="HIT"}"#,
                6.0,
            ),
            // one upstream exchange each: /a, /b, /err, /reval twice, /slow, /c
            (
                "caching_proxy_upstream_response_duration_seconds_count",
                7.0,
            ),
        ],
    );
    assert_eq!(after.get("caching_proxy_cache_entries"), 3.0);
    assert!(after.get("caching_proxy_cache_bytes") > 0.0);
    assert_eq!(after.get("caching_proxy_cache_max_entries"), 3.0);
    let connects = after.get("caching_proxy_upstream_connect_duration_seconds_count");
    assert!(
        (1.0..=7.0).contains(&connects),
        "{connects} new upstream connections"
    );
    assert_eq!(origin.hits(), 7);

    // Admin actions.
    request(
        "POST",
        &proxy.admin_url("/cache/purge"),
        &[],
        Some(&format!(r#"{{"url":"{}"}}"#, proxy.url("/a"))),
    );
    request("DELETE", &proxy.admin_url("/cache"), &[], None);
    let cleared = Scrape::take(&proxy);
    assert_deltas(
        &after,
        &cleared,
        &[
            (r#"caching_proxy_admin_actions_total{action="purge"}"#, 1.0),
            (r#"caching_proxy_admin_actions_total{action="clear"}"#, 1.0),
        ],
    );
    assert_eq!(cleared.get("caching_proxy_cache_entries"), 0.0);
    assert_eq!(cleared.get("caching_proxy_cache_bytes"), 0.0);
}

#[test]
fn origin_errors_by_kind() {
    let port = free_port();
    let down = Proxy::start(&format!("http://127.0.0.1:{port}"));
    let before = Scrape::take(&down);
    assert_eq!(get(&down.url("/x")).status, 502);
    let after = Scrape::take(&down);
    let connect = r#"caching_proxy_origin_errors_total{kind="connect"}"#;
    assert!(after.get(connect) - before.get(connect) >= 1.0);

    let slow = Origin::start(|_| Reply::ok("late").delay(Duration::from_secs(3)));
    let proxy = ProxyBuilder::new(&slow.url())
        .args(&["--timeout", "300ms"])
        .start();
    let before = Scrape::take(&proxy);
    assert_eq!(get(&proxy.url("/slow")).status, 504);
    let after = Scrape::after_requests(&proxy, &before, 1.0);
    assert_deltas(
        &before,
        &after,
        &[(r#"caching_proxy_origin_errors_total{kind="timeout"}"#, 1.0)],
    );
}

#[test]
fn build_and_process_metrics_are_exported() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    let s = Scrape::take(&proxy);
    let build =
        s.0.keys()
            .find(|k| k.starts_with("caching_proxy_build_info{"))
            .expect("build info");
    assert!(
        build.contains(&format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(build.contains("git_sha="), "{build}");
    for series in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(s.has(series), "{series} missing");
    }
    assert!(s.get("process_resident_memory_bytes") > 1e6);
}

#[test]
fn json_access_record_has_every_field() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    request(
        "GET",
        &proxy.url("/page?x=1"),
        &[
            ("user-agent", "test-agent/1.0"),
            ("x-request-id", "log-test-1"),
        ],
        None,
    );
    let log = proxy.wait_log(r#""request_id":"log-test-1""#);
    let line = log.lines().find(|l| l.contains("log-test-1")).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/page");
    assert_eq!(v["query"], "x=1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["cache"], "MISS");
    assert_eq!(v["bytes_sent"], "body of /page?x=1".len());
    assert_eq!(v["user_agent"], "test-agent/1.0");
    assert_eq!(v["origin"], origin.addr().to_string());
    assert!(v["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(v["upstream_ms"].as_f64().unwrap() > 0.0);
    let ts = v["timestamp"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    for other in log.lines() {
        let parsed: serde_json::Value =
            serde_json::from_str(other).unwrap_or_else(|e| panic!("{e}: {other}"));
        assert!(parsed["timestamp"].is_string(), "{other}");
    }
    let start = log.lines().next().unwrap();
    assert!(
        start.contains("starting caching-proxy") && start.contains(r#""fields""#),
        "{start}"
    );
}

#[test]
fn text_format_on_request() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--log-format", "text"])
        .start();
    request(
        "GET",
        &proxy.url("/t?q=2"),
        &[("x-request-id", "text-1")],
        None,
    );
    let log = proxy.wait_log("request_id=text-1");
    let line = log.lines().find(|l| l.contains("text-1")).unwrap();
    assert!(line.contains("GET /t?q=2 200 MISS"), "{line}");
    assert!(line.contains("ms http/1.1 request_id=text-1"), "{line}");
}

#[test]
fn secrets_never_appear_in_logs() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--log-level", "debug"])
        .env("PROXY_ADMIN_TOKEN", "very-secret-token")
        .start();
    request(
        "DELETE",
        &proxy.admin_url("/cache"),
        &[("authorization", "Bearer wrong-guess")],
        None,
    );
    request(
        "DELETE",
        &proxy.admin_url("/cache"),
        &[("authorization", "Bearer very-secret-token")],
        None,
    );
    get(&proxy.url("/x"));
    let log = proxy.wait_log("/x");
    assert!(log.contains(r#""admin_token":"set""#));
    assert!(
        !log.contains("very-secret-token"),
        "the token leaked into the log"
    );
}

/// Metric names in a PromQL expression (`caching_proxy_*` and `process_*`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    for prefix in ["caching_proxy_", "process_"] {
        let mut rest = expr;
        while let Some(i) = rest.find(prefix) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    let referenced: Vec<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();

    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    get(&proxy.url("/warm")); // histograms export their buckets once observed
    let exported = Scrape::after_requests(&proxy, &Scrape(HashMap::new()), 1.0);
    let series: std::collections::HashSet<&str> = exported
        .0
        .keys()
        .map(|k| k.split('{').next().unwrap())
        .collect();
    for name in &referenced {
        assert!(
            series.contains(name.as_str()),
            "the dashboard queries {name}, which is not exported"
        );
    }
    for needed in [
        "caching_proxy_requests_total",
        "caching_proxy_cache_hits_total",
        "caching_proxy_request_duration_seconds_bucket",
        "caching_proxy_origin_errors_total",
        "caching_proxy_cache_bytes",
        "caching_proxy_cache_evictions_total",
    ] {
        assert!(
            referenced.iter().any(|r| r == needed),
            "the dashboard has no panel on {needed}"
        );
    }
}
