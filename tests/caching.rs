//! Whole-proxy caching behaviour: the real binary in front of a real origin.

mod support;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use support::{get, request, Gate, Origin, Proxy, ProxyBuilder, Reply};

#[test]
fn second_get_is_a_hit_with_one_origin_request() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());

    let first = get(&proxy.url("/page"));
    assert_eq!(first.status, 200);
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.body, "body of /page");

    let second = get(&proxy.url("/page"));
    assert_eq!(second.status, 200);
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.body, "body of /page");
    assert!(second.header("age").is_some(), "a hit carries Age");
    assert_eq!(second.header("cache-control"), Some("max-age=60"));

    assert_eq!(origin.hits_for("/page"), 1);
    let stats = proxy.stats();
    assert_eq!(stats["hits"], 1);
    assert_eq!(stats["misses"], 1);
    assert_eq!(stats["entries"], 1);
}

#[test]
fn head_is_answered_from_a_stored_get() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    assert_eq!(get(&proxy.url("/h")).x_cache(), "MISS");
    let head = request("HEAD", &proxy.url("/h"), &[], None);
    assert_eq!(head.status, 200);
    assert_eq!(head.x_cache(), "HIT");
    assert_eq!(head.body, "");
    assert_eq!(origin.hits(), 1);
}

#[test]
fn query_string_is_part_of_the_key_and_forwarded() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());

    assert_eq!(get(&proxy.url("/q?a=1")).body, "body of /q?a=1");
    assert_eq!(get(&proxy.url("/q?a=2")).body, "body of /q?a=2");
    let again = get(&proxy.url("/q?a=1"));
    assert_eq!(again.x_cache(), "HIT");
    assert_eq!(again.body, "body of /q?a=1");
    assert_eq!(origin.hits_for("/q?a=1"), 1);
    assert_eq!(origin.hits_for("/q?a=2"), 1);
}

#[test]
fn different_hosts_do_not_share_entries() {
    let origin = Origin::start(|r| {
        Reply::ok(format!("for {}", r.header("host").unwrap_or("?")))
            .header("cache-control", "max-age=60")
    });
    let proxy = ProxyBuilder::new(&origin.url())
        .arg("--preserve-host")
        .start();
    let a = request("GET", &proxy.url("/same"), &[("Host", "a.example")], None);
    let b = request("GET", &proxy.url("/same"), &[("Host", "b.example")], None);
    assert_eq!((a.x_cache(), b.x_cache()), ("MISS", "MISS"));
    let a2 = request("GET", &proxy.url("/same"), &[("Host", "a.example")], None);
    assert_eq!(a2.x_cache(), "HIT");
    assert_eq!(a2.body, "for a.example");
    assert_eq!(b.body, "for b.example");
    assert_eq!(origin.hits_for("/same"), 2);
    let hosts: Vec<String> = origin
        .requests()
        .iter()
        .map(|r| r.header("host").unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        hosts,
        ["a.example", "b.example"],
        "preserve_host sends the client's Host"
    );
}

#[test]
fn upstream_host_is_the_origin_authority_by_default() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    request("GET", &proxy.url("/x"), &[("Host", "client.example")], None);
    let sent = &origin.requests()[0];
    assert_eq!(
        sent.header("host"),
        Some(origin.addr().to_string().as_str())
    );
    assert_eq!(sent.header("x-forwarded-for"), Some("127.0.0.1"));
}

/// The connection's details hold for every request of a keep-alive connection, not only its
/// first: each request after the first gets the finished session's digest (the vendored
/// pingora-core), so the origin sees the client's address in `X-Forwarded-For` every time.
#[test]
fn every_request_of_a_kept_alive_connection_knows_its_client() {
    let origin = Origin::start(|r| Reply::ok(format!("body of {}", r.target)));
    let proxy = Proxy::start(&origin.url());
    let mut client = support::client::KeepAlive::new(proxy.addr());
    for i in 0..3 {
        let (status, body) = client.get(&format!("/c{i}")).unwrap();
        assert_eq!((status, body), (200, format!("body of /c{i}").into_bytes()));
    }
    assert_eq!(
        (client.connections, client.retries),
        (1, 0),
        "one connection"
    );
    let forwarded: Vec<_> = origin
        .requests()
        .iter()
        .map(|r| r.header("x-forwarded-for").map(str::to_owned))
        .collect();
    assert_eq!(forwarded, vec![Some("127.0.0.1".to_owned()); 3]);
}

#[test]
fn unsafe_methods_are_forwarded_and_never_served_from_cache() {
    let origin = Origin::start(|r| {
        Reply::ok(format!(
            "{} {} {}",
            r.method,
            r.target,
            String::from_utf8_lossy(&r.body)
        ))
        .header("cache-control", "max-age=60")
    });
    let proxy = Proxy::start(&origin.url());
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for _ in 0..2 {
            let resp = request(method, &proxy.url("/res?v=1"), &[], Some("payload"));
            assert_eq!(resp.status, 200);
            assert_eq!(resp.x_cache(), "BYPASS", "{method}");
            assert_eq!(resp.body, format!("{method} /res?v=1 payload"));
        }
    }
    assert_eq!(origin.hits(), 8);
    let got: Vec<_> = origin.requests().iter().map(|r| r.method.clone()).collect();
    assert_eq!(
        got,
        ["POST", "POST", "PUT", "PUT", "DELETE", "DELETE", "PATCH", "PATCH"]
    );
}

#[test]
fn origin_status_headers_and_body_pass_through() {
    let origin = Origin::start(|_| {
        Reply::ok("teapot")
            .status(418)
            .header("x-origin", "yes")
            .header("content-type", "text/plain")
    });
    let proxy = Proxy::start(&origin.url());
    let resp = get(&proxy.url("/tea"));
    assert_eq!(resp.status, 418);
    assert_eq!(resp.header("x-origin"), Some("yes"));
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(resp.body, "teapot");
    assert_eq!(resp.x_cache(), "MISS");
}

/// A response header far larger than the buffer the proxy first writes a header into (2
/// KiB, grown for a larger one) arrives whole, from the origin and then from the cache.
#[test]
fn a_response_header_of_many_kilobytes_arrives_whole_on_miss_and_hit() {
    let long = "v".repeat(10 << 10);
    let value = long.clone();
    let origin = Origin::start(move |_| {
        Reply::ok("small body")
            .header("cache-control", "max-age=60")
            .header("x-long", &value)
            .header("x-after", "last")
    });
    let proxy = Proxy::start(&origin.url());
    for expected in ["MISS", "HIT"] {
        let resp = get(&proxy.url("/long-header"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.x_cache(), expected);
        assert_eq!(resp.header("x-long"), Some(long.as_str()));
        assert_eq!(resp.header("x-after"), Some("last"));
        assert_eq!(resp.body, "small body");
    }
    assert_eq!(origin.hits(), 1);
}

/// Each case is requested twice; none may be stored.
#[test]
fn uncacheable_responses_are_not_stored() {
    let origin = Origin::start(|r| {
        let reply = Reply::ok("x");
        match r.path() {
            "/no-store" => reply.header("cache-control", "no-store, max-age=60"),
            "/private" => reply.header("cache-control", "private, max-age=60"),
            "/cookie" => reply
                .header("set-cookie", "session=1")
                .header("cache-control", "max-age=60"),
            "/auth" => reply.header("cache-control", "max-age=60"),
            "/error" => reply.status(500),
            _ => reply,
        }
    });
    let proxy = Proxy::start(&origin.url());
    for path in ["/no-store", "/private", "/cookie", "/error"] {
        for _ in 0..2 {
            assert_eq!(get(&proxy.url(path)).x_cache(), "MISS", "{path}");
        }
        assert_eq!(origin.hits_for(path), 2, "{path} must not be stored");
    }
    for _ in 0..2 {
        let resp = request(
            "GET",
            &proxy.url("/auth"),
            &[("Authorization", "Bearer t")],
            None,
        );
        assert_eq!(resp.x_cache(), "MISS");
    }
    assert_eq!(
        origin.hits_for("/auth"),
        2,
        "responses to Authorization requests are not stored"
    );
    assert_eq!(proxy.stats()["entries"], 0);
}

#[test]
fn authorization_response_marked_public_is_stored() {
    let origin =
        Origin::start(|_| Reply::ok("shared").header("cache-control", "public, max-age=60"));
    let proxy = Proxy::start(&origin.url());
    let auth = [("Authorization", "Bearer t")];
    assert_eq!(
        request("GET", &proxy.url("/p"), &auth, None).x_cache(),
        "MISS"
    );
    assert_eq!(
        request("GET", &proxy.url("/p"), &auth, None).x_cache(),
        "HIT"
    );
    assert_eq!(origin.hits(), 1);
}

#[test]
fn default_ttl_applies_to_responses_without_freshness_and_expires() {
    // Two proxies, so that no assertion depends on how fast a loaded machine runs: with a
    // 1 h default the response is still a hit after the wait, with 1 s it has expired.
    let origin = Origin::start(|_| Reply::ok("no freshness info"));
    let long = ProxyBuilder::new(&origin.url())
        .args(&["--cache-ttl", "1h"])
        .start();
    let short = ProxyBuilder::new(&origin.url())
        .args(&["--cache-ttl", "1s"])
        .start();
    for proxy in [&long, &short] {
        assert_eq!(get(&proxy.url("/d")).x_cache(), "MISS");
    }
    assert_eq!(get(&long.url("/d")).x_cache(), "HIT");
    assert_eq!(origin.hits(), 2);
    // Waiting out a 1 s TTL is the behaviour under test, not synchronisation.
    thread::sleep(Duration::from_millis(2100));
    assert_eq!(get(&long.url("/d")).x_cache(), "HIT");
    assert_eq!(get(&short.url("/d")).x_cache(), "EXPIRED");
    assert_eq!(origin.hits(), 3);
}

#[test]
fn zero_default_ttl_stores_only_responses_with_freshness() {
    let origin = Origin::start(|r| match r.path() {
        "/explicit" => Reply::ok("e").header("cache-control", "max-age=60"),
        _ => Reply::ok("none"),
    });
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--cache-ttl", "0"])
        .start();
    for _ in 0..2 {
        get(&proxy.url("/none"));
        get(&proxy.url("/explicit"));
    }
    assert_eq!(origin.hits_for("/none"), 2);
    assert_eq!(origin.hits_for("/explicit"), 1);
}

#[test]
fn entry_bound_evicts_and_is_never_exceeded() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--cache-size", "5"])
        .start();
    for i in 0..20 {
        assert_eq!(get(&proxy.url(&format!("/e{i}"))).status, 200);
        let entries = proxy.stats()["entries"].as_u64().unwrap();
        assert!(entries <= 5, "after {i}: {entries} entries");
    }
    assert_eq!(
        get(&proxy.url("/e19")).x_cache(),
        "HIT",
        "the newest entry survives"
    );
    let stats = proxy.stats();
    assert_eq!(stats["entries"], 5);
    assert_eq!(stats["evictions"], 15);
    assert_eq!(
        get(&proxy.url("/e0")).x_cache(),
        "MISS",
        "the oldest entry was evicted"
    );
}

#[test]
fn byte_bound_evicts_and_is_never_exceeded() {
    let body = "x".repeat(4096);
    let origin =
        Origin::start(move |_| Reply::ok(body.clone()).header("cache-control", "max-age=60"));
    let max = 64 * 1024;
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&[
            "--cache-max-bytes",
            "64KiB",
            "--cache-max-object-size",
            "8KiB",
        ])
        .start();
    for i in 0..40 {
        assert_eq!(get(&proxy.url(&format!("/b{i}"))).body.len(), 4096);
        let bytes = proxy.stats()["bytes"].as_u64().unwrap();
        assert!(bytes <= max, "after {i}: {bytes} bytes cached, bound {max}");
    }
    assert_eq!(get(&proxy.url("/b39")).x_cache(), "HIT");
    let stats = proxy.stats();
    assert!(stats["evictions"].as_u64().unwrap() > 0);
    let entries = stats["entries"].as_u64().unwrap();
    assert!(
        (10..16).contains(&entries),
        "{entries} entries of 4 KiB in 64 KiB"
    );
}

#[test]
fn bodies_over_the_object_limit_are_served_but_not_stored() {
    let origin =
        Origin::start(|_| Reply::ok("y".repeat(20_000)).header("cache-control", "max-age=60"));
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--cache-max-object-size", "10KiB"])
        .start();
    for _ in 0..2 {
        let resp = get(&proxy.url("/big"));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body.len(), 20_000);
        assert_eq!(resp.x_cache(), "MISS");
    }
    assert_eq!(origin.hits(), 2);
    assert_eq!(proxy.stats()["entries"], 0);
}

#[test]
fn concurrent_gets_of_one_slow_url_reach_the_origin_once() {
    let origin = Origin::start(|_| {
        Reply::ok("slow body")
            .header("cache-control", "max-age=60")
            .delay(Duration::from_millis(500))
    });
    let proxy = Proxy::start(&origin.url());
    let url = proxy.url("/slow");
    let barrier = Arc::new(Barrier::new(20));
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                get(&url)
            })
        })
        .collect();
    let responses: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &responses {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "slow body");
    }
    assert_eq!(
        origin.hits(),
        1,
        "20 concurrent requests made one origin request"
    );
    let misses = responses.iter().filter(|r| r.x_cache() == "MISS").count();
    assert_eq!(
        misses, 1,
        "one request filled the cache, the others were served from it"
    );
}

/// `cache.lock_timeout`: a request waiting behind another one's fetch of the same URL goes
/// to the origin itself once the timeout has passed, and is answered while the first fetch
/// is still held at the origin.
#[test]
fn waiters_go_to_the_origin_after_the_lock_timeout() {
    let gate = Gate::new();
    let held = gate.clone();
    let origin = Origin::start(move |r| {
        if r.header("x-first").is_some() {
            held.wait();
        }
        Reply::ok(if r.header("x-first").is_some() {
            "first"
        } else {
            "second"
        })
        .header("cache-control", "max-age=60")
    });
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--cache-lock-timeout", "500ms"])
        .start();
    let url = proxy.url("/locked");
    let first = thread::spawn(move || request("GET", &url, &[("x-first", "1")], None));
    wait_until(Duration::from_secs(10), || origin.hits() == 1);
    // The first fetch holds the lock (its answer is held at the origin): this one waits,
    // then gives up waiting and fetches for itself.
    let started = std::time::Instant::now();
    let second = get(&proxy.url("/locked"));
    let waited = started.elapsed();
    assert_eq!((second.status, second.body.as_str()), (200, "second"));
    assert!(
        waited < Duration::from_secs(8),
        "waited {waited:?}: the 500ms setting, not the 10 s default, must apply"
    );
    assert_eq!(second.x_cache(), "MISS");
    assert_eq!(origin.hits(), 2);
    assert!(!first.is_finished(), "the first fetch was still held");
    gate.open();
    assert_eq!(first.join().unwrap().body, "first");
}

/// `cache.stale_retention`: an expired entry is kept that long past its freshness (and stale
/// windows) for revalidation, then freed, by the sweep when nobody asks for it.
#[test]
fn stale_retention_keeps_expired_entries_then_the_sweep_frees_them() {
    let origin = Origin::start(|r| match r.header("if-none-match") {
        Some("\"v1\"") => Reply::ok("").status(304).header("etag", "\"v1\""),
        _ => Reply::ok("body")
            .header("cache-control", "max-age=1")
            .header("etag", "\"v1\""),
    });
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&[
            "--cache-stale-if-error",
            "0",
            "--cache-stale-retention",
            "2s",
        ])
        .start();
    assert_eq!(get(&proxy.url("/r")).x_cache(), "MISS");
    proxy.wait_stored(1);
    // Expired, within the retention: revalidated, not fetched again.
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(get(&proxy.url("/r")).x_cache(), "REVALIDATED");
    assert_eq!(origin.requests()[1].header("if-none-match"), Some("\"v1\""));
    // Nobody asks again: the sweep (every 30 s) frees it once the retention is over.
    let expirations = proxy.stats()["expirations"].as_u64().unwrap();
    wait_until(Duration::from_secs(60), || {
        proxy.stats()["entries"] == 0
            && proxy.stats()["expirations"].as_u64().unwrap() > expirations
    });
    assert_eq!(get(&proxy.url("/r")).x_cache(), "MISS");
    assert_eq!(origin.requests()[2].header("if-none-match"), None);
}

/// Every response served from an entry carries the fields the origin's response was stored
/// with: each fresh hit is served with the header of its own lookup (moved out of that
/// lookup's meta, not copied), a revalidation merges the 304 into the stored header, and the
/// hits after it are served with the merged one.
#[test]
fn every_response_from_an_entry_carries_the_stored_fields() {
    let origin = Origin::start(|r| match r.header("if-none-match") {
        Some("\"v1\"") => Reply::ok("").status(304).header("etag", "\"v1\""),
        _ => Reply::ok("stored body")
            .header("cache-control", "max-age=1")
            .header("etag", "\"v1\"")
            .header("last-modified", "Mon, 07 Dec 2026 10:00:00 GMT")
            .header("content-type", "text/plain; charset=utf-8")
            .header("x-origin", "kept"),
    });
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--cache-stale-if-error", "0"])
        .start();
    let stored = [
        ("cache-control", "max-age=1"),
        ("etag", "\"v1\""),
        ("last-modified", "Mon, 07 Dec 2026 10:00:00 GMT"),
        ("content-type", "text/plain; charset=utf-8"),
        ("x-origin", "kept"),
        ("content-length", "11"),
    ];
    let check = |served: &str| {
        let resp = get(&proxy.url("/fields"));
        assert_eq!((resp.status, resp.x_cache()), (200, served));
        assert_eq!(resp.body, "stored body");
        for (name, value) in stored {
            assert_eq!(resp.header(name), Some(value), "{name} of a {served}");
        }
        resp
    };
    let miss = check("MISS");
    proxy.wait_stored(1);
    for _ in 0..3 {
        let hit = check("HIT");
        assert_eq!(hit.header("date"), miss.header("date"), "the stored Date");
        assert!(hit.header("age").is_some());
    }
    thread::sleep(Duration::from_millis(1500));
    check("REVALIDATED");
    assert_eq!(origin.requests()[1].header("if-none-match"), Some("\"v1\""));
    for _ in 0..2 {
        check("HIT");
    }
    assert_eq!(origin.hits_for("/fields"), 2);
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn vary_keeps_variants_apart() {
    let origin = Origin::start(|r| {
        Reply::ok(format!(
            "lang={}",
            r.header("accept-language").unwrap_or("none")
        ))
        .header("cache-control", "max-age=60")
        .header("vary", "Accept-Language")
    });
    let proxy = Proxy::start(&origin.url());
    let lang = |l: &str| request("GET", &proxy.url("/v"), &[("Accept-Language", l)], None);
    assert_eq!(lang("en").x_cache(), "MISS");
    assert_eq!(lang("fr").x_cache(), "MISS");
    let en = lang("en");
    assert_eq!((en.x_cache(), en.body.as_str()), ("HIT", "lang=en"));
    let fr = lang("fr");
    assert_eq!((fr.x_cache(), fr.body.as_str()), ("HIT", "lang=fr"));
    assert_eq!(origin.hits(), 2);

    // Purging the URL removes every variant.
    let url = proxy.url("/v");
    let purged = request(
        "POST",
        &proxy.admin_url("/cache/purge"),
        &[],
        Some(&format!(r#"{{"url":"{url}"}}"#)),
    );
    assert_eq!(purged.json()["purged"], true);
    assert_eq!(lang("en").x_cache(), "MISS");
    assert_eq!(lang("fr").x_cache(), "MISS");
}

#[test]
fn vary_star_is_never_served_from_cache() {
    let origin = Origin::start(|_| {
        Reply::ok("x")
            .header("cache-control", "max-age=60")
            .header("vary", "*")
    });
    let proxy = Proxy::start(&origin.url());
    assert_eq!(get(&proxy.url("/star")).x_cache(), "MISS");
    assert_eq!(get(&proxy.url("/star")).x_cache(), "MISS");
    assert_eq!(origin.hits(), 2);
}

/// The README's first example, as a newcomer runs it: `python3 -m http.server` serving a
/// file saved a moment ago (its Last-Modified is "now", no Cache-Control): the second
/// request is a HIT, since the configured default TTL wins over the Last-Modified heuristic.
#[test]
fn readme_first_example_with_python_http_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>hello</h1>\n").unwrap();
    let port = support::free_port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !support::proxy::listens(port) {
        assert!(
            std::time::Instant::now() < deadline,
            "http.server did not start"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let proxy = Proxy::start(&format!("http://localhost:{port}"));
    let first = get(&proxy.url("/"));
    let second = get(&proxy.url("/"));
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(first.status, 200);
    assert!(
        first.header("last-modified").is_some(),
        "the server sends Last-Modified"
    );
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(second.x_cache(), "HIT");
    assert!(second.header("age").is_some());
    assert_eq!(second.body, "<h1>hello</h1>\n");
}

/// Hits of bodies around the sizes where the client write buffer changes how they are sent
/// (copied behind the header, sent with it in one vectored write, larger than the buffer,
/// larger than the socket's buffers), one after another on a keep-alive connection whose
/// client starts reading each response late: the socket fills, writes stop part way and
/// resume, and every response arrives whole.
#[test]
fn hits_of_every_size_arrive_whole_to_a_late_reader() {
    use std::io::{BufRead, Read, Write};

    fn body(size: usize) -> Vec<u8> {
        (0..size)
            .map(|i| b'a' + ((i * 7 + size) % 26) as u8)
            .collect()
    }
    let sizes = [100, 4095, 4096, 16 * 1024, 33 * 1024, 8 << 20];
    let origin = Origin::start(|r| {
        let size: usize = r.path().trim_start_matches("/b").parse().unwrap();
        Reply::ok(body(size)).header("cache-control", "max-age=60")
    });
    let proxy = Proxy::start(&origin.url());

    let conn = std::net::TcpStream::connect(proxy.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let mut reader = std::io::BufReader::new(conn);
    for round in 0..3 {
        for size in sizes {
            write!(writer, "GET /b{size} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
            // Let the proxy fill the socket's buffers and wait on them.
            thread::sleep(Duration::from_millis(20));
            let mut head = String::new();
            while !head.ends_with("\r\n\r\n") {
                assert!(reader.read_line(&mut head).unwrap() > 0, "closed: {head}");
            }
            let head = head.to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let cache = if round == 0 { "miss" } else { "hit" };
            assert!(head.contains(&format!("x-cache: {cache}\r\n")), "{head}");
            assert!(
                head.contains(&format!("content-length: {size}\r\n")),
                "{head}"
            );
            let mut got = vec![0u8; size];
            reader.read_exact(&mut got).unwrap();
            assert!(got == body(size), "round {round}: body of /b{size} differs");
        }
    }
    for size in sizes {
        assert_eq!(origin.hits_for(&format!("/b{size}")), 1);
    }
}
