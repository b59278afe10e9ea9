//! Routes and upstream groups through the real binary, configured by a YAML file, against
//! real origins on 127.0.0.1: matching by host and path, header rules, per-route cache
//! settings, load balancing, DNS names, WebSocket upgrades, config errors, and routes on the
//! shared Redis tier; health checks, retries and `GET /upstreams` are in `routing/health.rs`.
//!
//! DNS: a name whose answer changes is not tested through the binary (that needs a resolver
//! or a hosts file the test controls); `src/upstream/discovery.rs` and `src/upstream/mod.rs`
//! test the discovery with an injected resolver (a changed answer is followed, a failed or
//! empty one keeps the last good addresses), and `named_servers_work_end_to_end` runs a
//! `localhost:PORT` server through the proxy.

#[path = "routing/health.rs"]
mod health;
#[path = "routing/helpers.rs"]
mod helpers;
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use helpers::*;
use support::client::KeepAlive;
use support::proxy::check_config;
use support::websocket::{self, WsOrigin};
use support::{free_port, metrics, request, wait_until, Origin, ProxyBuilder, RedisServer, Reply};
use tungstenite::Message;

// ---- Matching -------------------------------------------------------------------------------

#[test]
fn hosts_prefixes_and_wildcards_pick_the_upstream() {
    let names = ["site-a", "site-b", "static", "images", "wild", "www"];
    let origins: HashMap<&str, Origin> = names.iter().map(|n| (*n, named(n))).collect();
    let upstreams: String = names
        .iter()
        .map(|n| format!("  {n}: {{servers: {}}}\n", servers(&[&origins[n]])))
        .collect();
    // Shorter prefixes and wildcards are written first: order in the file must not matter.
    let routes = "\
routes:
  - {name: a, hosts: [a.test], upstream: site-a}
  - {name: b, hosts: [b.test], upstream: site-b}
  - {name: a-static, hosts: [a.test], path_prefix: /static/, upstream: static}
  - {name: a-img, hosts: [a.test], path_prefix: /static/img/, upstream: images}
  - {name: wild, hosts: ['*.example.com'], upstream: wild}
  - {name: www, hosts: [www.example.com], upstream: www}
";
    let config = format!("upstreams:\n{upstreams}{routes}");
    let proxy = ProxyBuilder::with_config(&config).start();

    for (host, path, expected) in [
        ("a.test", "/", "site-a"),
        ("A.Test:8080", "/page", "site-a"),
        ("b.test", "/", "site-b"),
        ("a.test", "/static/app.js", "static"),
        ("a.test", "/static/img/logo.png", "images"),
        ("a.test", "/staticfile", "site-a"),
        ("img.example.com", "/", "wild"),
        ("deep.img.example.com", "/", "wild"),
        ("www.example.com", "/", "www"),
    ] {
        let resp = fetch(&proxy, host, path);
        assert_eq!(served_by(&resp), expected, "{host}{path}");
        assert_eq!(resp.body, format!("{expected} {path}"));
    }
    // Upstream groups serve sites: they get the client's Host.
    assert_eq!(
        origins["site-b"].requests()[0].header("host"),
        Some("b.test")
    );

    let before: usize = origins.values().map(Origin::hits).sum();
    for host in ["other.test", "example.com"] {
        let resp = fetch(&proxy, host, "/");
        assert_eq!(resp.status, 404, "{host}: {resp:?}");
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.json()["code"], "NO_ROUTE", "{host}");
    }
    let after: usize = origins.values().map(Origin::hits).sum();
    assert_eq!(before, after, "a request without a route reaches no origin");

    // The `route` label names the route that served each request.
    let route_count = |route: &str| {
        metrics::sum(
            &metrics::scrape(&proxy),
            "caching_proxy_requests_total",
            &[("route", route)],
        )
    };
    wait_until(SOON, "requests counted by route", || {
        route_count("a-img") == 1.0 && route_count("none") == 2.0
    });
    assert_eq!(route_count("a"), 3.0);
    drop(proxy);

    let with_default = format!("{config}default_route: {{upstream: site-b}}\n");
    let proxy = ProxyBuilder::with_config(&with_default).start();
    assert_eq!(served_by(&fetch(&proxy, "other.test", "/x")), "site-b");
    assert_eq!(served_by(&fetch(&proxy, "a.test", "/static/x")), "static");
}

// ---- Header rules ---------------------------------------------------------------------------

#[test]
fn header_rules_change_requests_and_responses_also_on_hits() {
    let origin = Origin::start(|_| {
        Reply::ok("page")
            .header("cache-control", "max-age=60")
            .header("server", "origin-httpd")
            .header("x-origin-secret", "s3cr3t")
    });
    let config = format!(
        "\
upstreams:
  app: {{servers: {}}}
routes:
  - upstream: app
    request_headers: {{set: {{X-Edge: '1', X-Replaced: new}}, remove: [X-Debug]}}
    response_headers:
      set: {{X-Served-By: edge, Cache-Control: 'public, max-age=5'}}
      remove: [Server, X-Origin-Secret]
",
        servers(&[&origin])
    );
    let proxy = ProxyBuilder::with_config(&config).start();

    let headers = [
        ("X-Debug", "yes"),
        ("X-Replaced", "old"),
        ("X-Other", "kept"),
    ];
    let first = request("GET", &proxy.url("/page"), &headers, None);
    let second = request("GET", &proxy.url("/page"), &headers, None);
    assert_eq!(
        (first.x_cache(), second.x_cache()),
        ("MISS", "HIT"),
        "the origin's max-age=60 decides caching, not the rewritten Cache-Control"
    );

    let seen = &origin.requests()[0];
    assert_eq!(seen.header("x-edge"), Some("1"));
    assert_eq!(seen.header("x-replaced"), Some("new"));
    assert_eq!(seen.header("x-debug"), None);
    assert_eq!(seen.header("x-other"), Some("kept"));
    assert_eq!(origin.hits(), 1);

    for resp in [&first, &second] {
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-served-by"), Some("edge"), "{resp:?}");
        assert_eq!(resp.header("cache-control"), Some("public, max-age=5"));
        assert_eq!(resp.header("server"), None, "{resp:?}");
        assert_eq!(resp.header("x-origin-secret"), None, "{resp:?}");
        assert_eq!(resp.body, "page");
    }
}

// ---- Per-route cache settings ---------------------------------------------------------------

#[test]
fn per_route_ttl_bypass_and_ignored_query_parameters() {
    // No freshness from the origin for /short/ and /global/: the default TTL decides.
    let origin = Origin::start(|r| {
        let reply = Reply::ok(format!("body of {}", r.target));
        if r.path().starts_with("/short/") || r.path().starts_with("/global/") {
            reply
        } else {
            reply.header("cache-control", "max-age=60")
        }
    });
    let config = format!(
        "\
upstreams:
  app: {{servers: {}}}
routes:
  - {{upstream: app}}
  - {{upstream: app, path_prefix: /short/, cache: {{default_ttl: 2s}}}}
  - {{upstream: app, path_prefix: /nocache/, cache: {{enabled: false}}}}
  - {{upstream: app, path_prefix: /q/, cache: {{key_ignore_query: [utm_source, fbclid]}}}}
",
        servers(&[&origin])
    );
    let proxy = ProxyBuilder::with_config(&config)
        .args(&["--cache-ttl", "1h"])
        .start();
    let get = |path: &str| fetch(&proxy, "site.test", path);

    // default_ttl: the route's 2 s, elsewhere the global hour.
    for path in ["/short/a", "/global/a"] {
        assert_eq!(get(path).x_cache(), "MISS", "{path}");
        assert_eq!(get(path).x_cache(), "HIT", "{path}");
    }
    wait_until(SOON, "/short/a to expire after the route's 2 s", || {
        get("/short/a").x_cache() != "HIT"
    });
    assert_eq!(
        get("/global/a").x_cache(),
        "HIT",
        "the global TTL still holds"
    );

    // enabled: false bypasses even a cacheable response.
    assert_eq!(get("/nocache/a").x_cache(), "BYPASS");
    assert_eq!(get("/nocache/a").x_cache(), "BYPASS");
    assert_eq!(origin.hits_for("/nocache/a"), 2);

    // key_ignore_query: one entry for URLs that differ only in ignored parameters.
    let first = get("/q/item?id=1&utm_source=mail");
    let second = get("/q/item?utm_source=ads&id=1&fbclid=x");
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    assert_eq!(second.body, "body of /q/item?id=1&utm_source=mail");
    let origin_saw: Vec<String> = origin
        .requests()
        .iter()
        .filter(|r| r.path() == "/q/item")
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(
        origin_saw,
        ["/q/item?id=1&utm_source=mail"],
        "one origin request, with the query as the client sent it"
    );
    assert_eq!(get("/q/item?id=2&utm_source=mail").x_cache(), "MISS");
    assert_eq!(get("/q/item?id=2").x_cache(), "HIT");
    // Another route keeps every parameter in its keys.
    assert_eq!(get("/other?utm_source=a").x_cache(), "MISS");
    assert_eq!(get("/other?utm_source=b").x_cache(), "MISS");
}

// ---- Load balancing -------------------------------------------------------------------------

#[test]
fn round_robin_spreads_requests_evenly() {
    let origins = [named("o1"), named("o2"), named("o3")];
    let refs: Vec<&Origin> = origins.iter().collect();
    let config = format!(
        "upstreams:\n  rr: {{servers: {}, selection: round_robin}}\nroutes:\n  - {{upstream: rr}}\n",
        servers(&refs)
    );
    let proxy = ProxyBuilder::with_config(&config).start();

    thread::scope(|s| {
        for t in 0..3 {
            let addr = proxy.addr();
            s.spawn(move || {
                let mut client = KeepAlive::new(addr);
                for i in 0..100 {
                    let (status, _) = client.get(&format!("/rr/{t}/{i}")).unwrap();
                    assert_eq!(status, 200);
                }
            });
        }
    });
    let text = metrics::scrape(&proxy);
    for origin in &origins {
        let n = traffic(origin);
        assert!((90..=110).contains(&n), "{}: {n} of 300", origin.addr());
        let counted = metrics::value(
            &text,
            "caching_proxy_upstream_requests_total",
            &[
                ("upstream", "rr"),
                ("server", &origin.addr().to_string()),
                ("status_class", "2xx"),
            ],
        );
        assert_eq!(counted, Some(n as f64), "{}", origin.addr());
    }
}

#[test]
fn hash_and_consistent_keep_a_url_on_one_server() {
    let origins = [named("o1"), named("o2"), named("o3")];
    let list = servers(&origins.iter().collect::<Vec<_>>());
    let config = format!(
        "\
upstreams:
  hashed: {{servers: {list}, selection: hash}}
  ketama: {{servers: {list}, selection: consistent}}
routes:
  - {{upstream: hashed, path_prefix: /h/}}
  - {{upstream: ketama, path_prefix: /c/}}
"
    );
    let proxy = ProxyBuilder::with_config(&config).start();
    for prefix in ["/h/", "/c/"] {
        let mut used = HashSet::new();
        for url in 0..12 {
            let path = format!("{prefix}item-{url}");
            let servers: HashSet<String> = (0..3)
                .map(|_| served_by(&fetch(&proxy, "hash.test", &path)).to_owned())
                .collect();
            assert_eq!(servers.len(), 1, "{path} went to {servers:?}");
            used.extend(servers);
        }
        assert!(used.len() > 1, "{prefix}: 12 URLs all on {used:?}");
    }
}

// ---- DNS names ------------------------------------------------------------------------------

#[test]
fn named_servers_work_end_to_end() {
    let origin = named("local");
    let port = origin.addr().port();
    // Re-resolved every 100 ms while requests are served.
    let config = format!(
        "upstreams:\n  app: {{servers: [\"localhost:{port}\"], resolve_interval: 100ms, \
         retries: 1}}\nroutes:\n  - {{upstream: app}}\n"
    );
    let proxy = ProxyBuilder::with_config(&config).start();
    for i in 0..10 {
        assert_eq!(
            served_by(&fetch(&proxy, "app.test", &format!("/n/{i}"))),
            "local"
        );
        thread::sleep(Duration::from_millis(30));
    }
    let servers = upstream_servers(&proxy, "app");
    let v4 = servers
        .iter()
        .find(|s| s["server"] == format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("localhost resolved to 127.0.0.1: {servers:?}"));
    assert_eq!(v4["host"], "localhost");
}

// ---- WebSocket ------------------------------------------------------------------------------

/// Upgrades made one after another by the WebSocket test.
const UPGRADES: usize = 50;

#[test]
fn websocket_upgrades_are_tunnelled_and_never_cached() {
    let origin = WsOrigin::start();
    let config = format!(
        "upstreams:\n  ws: {{servers: [\"{}\"]}}\nroutes:\n  - {{upstream: ws, hosts: [chat.test]}}\n",
        origin.addr()
    );
    let proxy = ProxyBuilder::with_config(&config).start();

    // Many upgrades in a row: the proxy once ended a tunnel at its start when the origin's 101
    // was read before the request's own (empty) body end (vendor/README.md); the order is
    // left to the scheduler, so one upgrade rarely shows it.
    for round in 1..=UPGRADES {
        let (mut ws, resp) = websocket::connect(proxy.addr(), "chat.test", "/socket")
            .unwrap_or_else(|e| panic!("upgrade {round}: {e}\n{}", proxy.log()));
        assert_eq!(resp.status(), 101);
        let x_cache = resp.headers().get("x-cache").map(|v| v.to_str().unwrap());
        assert_eq!(x_cache, Some("BYPASS"), "an upgrade never uses the cache");
        websocket::greeting_then_echoes(
            &mut ws,
            &[
                Message::text("ping 1"),
                Message::text("ping 2"),
                Message::binary(vec![0u8, 1, 2, 255]),
            ],
        );
        ws.close(None).unwrap();
        assert_eq!(
            origin.upgrades().len(),
            round,
            "every upgrade reaches the origin"
        );
    }
    assert_eq!(
        origin.upgrades()[0],
        ("/socket".to_owned(), "chat.test".to_owned())
    );
    assert_eq!(proxy.stats()["entries"], 0, "nothing stored");
}

#[test]
fn an_idle_tunnel_has_its_own_timeout() {
    let origin = WsOrigin::start();
    let config = format!(
        "upstream: {{read_timeout: 300ms, upgrade_idle_timeout: 1500ms}}\n\
         upstreams:\n  ws: {{servers: [\"{}\"]}}\nroutes:\n  - {{upstream: ws}}\n",
        origin.addr()
    );
    let proxy = ProxyBuilder::with_config(&config).start();
    let (mut ws, _) = websocket::connect(proxy.addr(), "chat.test", "/socket").unwrap();
    assert_eq!(
        websocket::next_message(&mut ws),
        Message::text(websocket::GREETING)
    );

    // Quiet for longer than the read timeout of ordinary requests: the tunnel stays.
    thread::sleep(Duration::from_millis(800));
    ws.send(Message::text("still there")).unwrap();
    assert_eq!(
        websocket::next_message(&mut ws),
        Message::text("still there")
    );

    // Quiet for longer than upgrade_idle_timeout: the proxy ends the tunnel (the client's own
    // read timeout is 10 s, so an error other than a timeout is the proxy's doing).
    let quiet = std::time::Instant::now();
    let end = loop {
        match ws.read() {
            Ok(m) if m.is_ping() || m.is_pong() => continue,
            other => break other,
        }
    };
    match end {
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            panic!("the tunnel was still open after 10 s idle")
        }
        Ok(m) => assert!(m.is_close(), "only a close may come: {m:?}"),
        Err(_) => {}
    }
    assert!(
        quiet.elapsed() >= Duration::from_secs(1),
        "ended by the idle timeout, not before it"
    );
}

// ---- Config errors --------------------------------------------------------------------------

#[test]
fn invalid_routes_and_upstreams_exit_2_naming_the_key() {
    let live = format!("127.0.0.1:{}", free_port());
    let cases = [
        (
            format!("upstreams:\n  app: {{servers: [\"{live}\"]}}\nroutes:\n  - {{upstream: ap}}\n"),
            "routes[0].upstream: \"ap\" is not a defined upstream",
        ),
        (
            "upstreams:\n  app: {servers: []}\nroutes:\n  - {upstream: app}\n".to_owned(),
            "upstreams.app.servers: must list at least one server",
        ),
        (
            format!(
                "upstreams:\n  app: {{servers: [\"{live}\"]}}\nroutes:\n  \
                 - {{upstream: app, hosts: [a.test, b.test], path_prefix: /x/}}\n  \
                 - {{upstream: app, hosts: [b.test, a.test], path_prefix: /x/}}\n"
            ),
            "routes[1]: has the same hosts and path_prefix as an earlier route",
        ),
        (
            format!("upstreams:\n  app: {{servers: [\"{live} weight=0\"]}}\nroutes:\n  - {{upstream: app}}\n"),
            "upstreams.app.servers[0]: \"",
        ),
        (
            format!("upstreams:\n  app: {{servers: [\"{live}\"], selection: least_conn}}\nroutes:\n  - {{upstream: app}}\n"),
            "upstreams.app.selection: \"least_conn\" is not a selection",
        ),
        (
            format!(
                "upstreams:\n  app: {{servers: [\"{live}\"], health_check: {{interval: 0}}}}\n\
                 routes:\n  - {{upstream: app}}\n"
            ),
            "upstreams.app.health_check.interval: must be greater than 0",
        ),
        (
            format!("upstreams:\n  app: {{servers: [\"{live}\", \"no-such-host.invalid:80\"]}}\nroutes:\n  - {{upstream: app}}\n"),
            "upstreams.app.servers[1]: \"no-such-host.invalid:80\" does not resolve",
        ),
    ];
    for (yaml, expected) in &cases {
        let out = check_config(yaml, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}\n{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
        assert_eq!(stderr.lines().count(), 1, "one message: {stderr:?}");
    }
    // The bad weight's message says what a weight must be.
    let out = check_config(&cases[3].0, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("weight \"0\" is not a whole number"));
    // And the first case, fixed, passes.
    let fixed = cases[0].0.replace("upstream: ap}", "upstream: app}");
    let out = check_config(&fixed, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- Routes on the shared Redis tier --------------------------------------------------------

#[test]
fn ignored_query_parameters_share_one_entry_across_proxies_on_redis() {
    let redis = Arc::new(RedisServer::start());
    let origin = Origin::cacheable();
    let config = format!(
        "upstreams:\n  app: {{servers: {}}}\nroutes:\n  \
         - {{upstream: app, hosts: [shared.test], cache: {{key_ignore_query: [utm_source]}}}}\n",
        servers(&[&origin])
    );
    let start = |extra: &[&str]| {
        let proxy = ProxyBuilder::with_config(&config)
            .redis(&redis.url())
            .args(extra)
            .keep_alive(redis.clone())
            .start();
        wait_until(SOON, "the Redis tier up", || {
            proxy.stats()["tiers"]["l2"]["up"] == true
        });
        proxy
    };
    let a = start(&[]);
    // No in-process tier on B: its hit can only come from Redis.
    let b = start(&["--redis-l1-max-bytes", "0"]);

    let first = fetch(&a, "shared.test", "/item?id=7&utm_source=mail");
    assert_eq!(first.x_cache(), "MISS");
    wait_until(SOON, "A's write to Redis", || {
        a.stats()["tiers"]["l2"]["writes"].as_u64() >= Some(1)
    });
    let second = fetch(&b, "shared.test", "/item?utm_source=ads&id=7");
    assert_eq!(second.x_cache(), "HIT", "{second:?}");
    assert_eq!(second.body, "body of /item?id=7&utm_source=mail");
    assert_eq!(origin.hits(), 1);
    assert_eq!(
        fetch(&b, "shared.test", "/item?id=8&utm_source=ads").x_cache(),
        "MISS"
    );
}
