//! The admin status page in a real browser: headless Chromium over WebDriver opens
//! `http://127.0.0.1:<admin>/`, and the tests read what the page shows.
//!
//! `screenshot_for_the_readme` (ignored) regenerates `docs/status-page.png`:
//! `cargo test --test status_page -- --ignored`.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::browser::Browser;
use support::{get, request, Origin, Proxy, ProxyBuilder, RedisServer, Reply};

/// The text of the top-URL table.
fn top_urls(b: &Browser) -> String {
    b.text("top-urls").unwrap_or_default()
}

/// Waits until the element `id` shows exactly `expected`.
fn wait_text(b: &Browser, id: &str, expected: &str) {
    b.wait_for(&format!("#{id} = {expected:?}"), |b| {
        (b.text(id).as_deref() == Some(expected)).then_some(())
    });
}

#[test]
fn page_shows_live_figures_and_follows_traffic() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    get(&proxy.url("/page/alpha"));
    get(&proxy.url("/page/beta"));
    proxy.wait_stored(2);

    let b = Browser::start(1280, 1000);
    b.goto(&proxy.admin_url("/"));
    wait_text(&b, "entries", "2");
    wait_text(&b, "req-total", "2");
    // Two lookups, both misses.
    wait_text(&b, "hit-15m", "0.0 %");
    assert!(top_urls(&b).contains("/page/alpha"), "{}", top_urls(&b));
    assert!(b.shown("dashboard") && !b.shown("login"));
    assert_eq!(b.text("state").unwrap().to_lowercase(), "ready");
    assert!(
        !b.shown("upstreams"),
        "no upstream groups: the section is left out"
    );
    assert!(!b.shown("redis"), "no Redis tier: the section is left out");
    assert!(b.text("max-entries").unwrap().contains("100,000"));
    assert!(
        b.text("p50").unwrap().ends_with(" ms"),
        "{:?}",
        b.text("p50")
    );

    // More traffic: 4 hits on alpha, one new URL.
    for _ in 0..4 {
        assert_eq!(get(&proxy.url("/page/alpha")).x_cache(), "HIT");
    }
    get(&proxy.url("/page/gamma"));
    proxy.wait_stored(3);
    wait_text(&b, "entries", "3");
    wait_text(&b, "req-total", "7");
    wait_text(&b, "hit-15m", "57.1 %"); // 4 of 7
    let first_row = b.wait_for("alpha first in the top list", |b| {
        let rows = top_urls(b);
        let first = rows.lines().next()?.to_owned();
        first.contains("/page/alpha").then_some(first)
    });
    assert!(
        first_row.contains("80.0 %"),
        "alpha: 4 hits of 5 lookups: {first_row}"
    );
    assert!(top_urls(&b).contains("/page/gamma"));
    assert!(b.text("hit-1m").unwrap().ends_with(" %"));
    let x_cache = b.text("x-cache").unwrap();
    assert!(x_cache.contains("HIT\t4"), "{x_cache:?}");
    // The chart is drawn: some pixel of the canvas is not blank.
    let painted = b.eval(
        "const c = document.getElementById('chart'); \
         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
         for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) return true; return false;",
        vec![],
    );
    assert_eq!(painted, json!(true));
}

#[test]
fn page_asks_for_the_token_and_shows_no_data_without_it() {
    let origin = Origin::cacheable();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "upstreams:\n  site:\n    servers: [\"{}\"]\n    health_check: {{type: tcp, interval: 1s}}\nroutes:\n  - path_prefix: /site/\n    upstream: site\n",
            origin.addr()
        ),
    )
    .unwrap();
    let token = "page-token-7c1d";
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["-c", config.to_str().unwrap()])
        .redis(&redis.url())
        .env("PROXY_ADMIN_TOKEN", token)
        .start();
    get(&proxy.url("/site/secret-report"));

    let b = Browser::start(1280, 1000);
    b.goto(&proxy.admin_url("/"));
    b.wait_for("the login prompt", |b| b.shown("login").then_some(()));
    let no_data = |b: &Browser| {
        assert!(!b.shown("dashboard"));
        let dom = b.eval("return document.documentElement.outerHTML;", vec![]);
        let dom = dom.as_str().unwrap();
        assert!(!dom.contains("secret-report"), "data without the token");
        assert!(
            !dom.contains(&proxy.pid().to_string()),
            "data without the token"
        );
        assert_eq!(b.text("entries").unwrap_or_default(), "");
    };
    no_data(&b);

    b.type_into("#token", "wrong");
    b.click("#login-submit");
    b.wait_for("the wrong-token message", |b| {
        b.shown("login-error").then_some(())
    });
    no_data(&b);

    b.type_into("#token", token);
    b.click("#login-submit");
    wait_text(&b, "entries", "1");
    assert!(!b.shown("login"));
    assert!(top_urls(&b).contains("/site/secret-report"));
    // The token is in no storage the browser keeps.
    let stored = b.eval(
        "return localStorage.length + sessionStorage.length + document.cookie.length;",
        vec![],
    );
    assert_eq!(stored, json!(0));

    // Upstream groups and the Redis tier are there, with their state.
    assert!(b.shown("upstreams"));
    let groups = b.text("upstream-groups").unwrap();
    assert!(
        groups.contains("site") && groups.contains("1/1 healthy"),
        "{groups}"
    );
    assert!(groups.contains(&origin.addr().to_string()), "{groups}");
    assert!(b.shown("redis"));
    b.wait_for("Redis up", |b| {
        (b.text("redis-state")?.to_lowercase() == "up").then_some(())
    });
    assert!(b
        .text("redis-nodes")
        .unwrap()
        .contains(&redis.port().to_string()));
}

/// What the screenshot's origins answer: cacheable pages and assets, an uncacheable API,
/// one broken URL.
fn site(r: &support::Recorded) -> Reply {
    let target = r.target.as_str();
    if target.starts_with("/api/") {
        Reply::ok(format!("{{\"path\":\"{target}\"}}"))
            .header("cache-control", "no-store")
            .header("content-type", "application/json")
    } else if target.contains("broken") {
        Reply::ok("oops").status(503)
    } else {
        Reply::ok(vec![b'x'; 2048 + target.len() * 97]).header("cache-control", "max-age=20")
    }
}

/// Sends a varied load (zipf-like over some pages, a tail of distinct URLs, some POSTs)
/// until `stop` is set.
fn traffic(proxy_port: u16, stop: Arc<AtomicBool>) {
    let pages = [
        "/",
        "/index.html",
        "/static/app.js",
        "/static/app.css",
        "/static/logo.svg",
        "/products",
        "/products/42",
        "/products/7",
        "/search?q=shoes",
        "/api/cart",
        "/api/session",
        "/blog/2026/launch",
        "/about",
        "/static/fonts/inter.woff2",
        "/products/1001?ref=home",
        "/broken/report",
    ];
    let url = |path: &str| format!("http://127.0.0.1:{proxy_port}{path}");
    let started = Instant::now();
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        // Waves of load.
        let t = started.elapsed().as_secs_f64();
        let burst = 8 + (6.0 * (t / 9.0).sin()).round() as i64;
        for _ in 0..burst.max(2) {
            i += 1;
            let rank = ((i * 2_654_435_761) % 1000) as f64 / 1000.0;
            let page = pages[((rank * rank * rank) * pages.len() as f64) as usize];
            if i % 23 == 0 {
                request("POST", &url("/api/cart"), &[], Some("{}"));
            } else if i % 9 == 0 {
                get(&url(&format!("/products/{}", i % 400)));
            } else {
                get(&url(page));
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Regenerates `docs/status-page.png`: a proxy with two upstream groups (one server down)
/// and a Redis tier, under a minute and a half of varied traffic.
#[test]
#[ignore = "regenerates docs/status-page.png; run with --ignored"]
fn screenshot_for_the_readme() {
    let (app1, app2) = (Origin::start(site), Origin::start(site));
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    let down = support::free_port();
    std::fs::write(
        &config,
        format!(
            "upstreams:\n  app:\n    servers: [\"{a}\", \"{b} weight=2\"]\n    health_check: {{type: tcp, interval: 1s}}\n  static:\n    servers: [\"{a}\", \"127.0.0.1:{down}\"]\n    selection: consistent\n    health_check: {{type: tcp, interval: 1s, unhealthy_after: 1}}\n    retries: 1\nroutes:\n  - name: static\n    path_prefix: /static/\n    upstream: static\n  - name: app\n    path_prefix: /\n    upstream: app\n",
            a = app1.addr(),
            b = app2.addr(),
        ),
    )
    .unwrap();
    let proxy = ProxyBuilder::new(&app1.url())
        .args(&["-c", config.to_str().unwrap(), "--log-level", "warn"])
        .args(&["--cache-max-bytes", "64MiB", "--cache-size", "5000"])
        .redis(&redis.url())
        .start();

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (port, stop) = (proxy.port, stop.clone());
        std::thread::spawn(move || traffic(port, stop))
    };
    std::thread::sleep(Duration::from_secs(90));

    let b = Browser::start(1280, 1200);
    b.goto(&proxy.admin_url("/"));
    b.wait_for("figures", |b| {
        (b.text("req-1s").is_some_and(|t| !t.is_empty() && t != "–")
            && b.text("redis-state")
                .is_some_and(|t| t.eq_ignore_ascii_case("up")))
        .then_some(())
    });
    // The whole page in the viewport.
    for _ in 0..3 {
        let size = b.eval(
            "return [document.documentElement.scrollHeight, window.innerHeight, window.outerHeight];",
            vec![],
        );
        let [page, inner, outer] = [0, 1, 2].map(|i| size[i].as_u64().unwrap() as u32);
        if page <= inner {
            break;
        }
        b.resize(1280, outer + (page - inner));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let png = b.screenshot();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, png).unwrap();
    eprintln!("wrote {}", out.display());
}
