//! Request IDs, security headers and CORS on every response path.

mod support;

use support::{get, request, Origin, Proxy, ProxyBuilder, Reply};

#[test]
fn request_id_is_kept_or_generated_and_sent_to_the_origin() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());

    let kept = request(
        "GET",
        &proxy.url("/r1"),
        &[("X-Request-Id", "abc-123")],
        None,
    );
    assert_eq!(kept.header("x-request-id"), Some("abc-123"));
    assert_eq!(origin.requests()[0].header("x-request-id"), Some("abc-123"));

    let generated = get(&proxy.url("/r2"));
    let id = generated.header("x-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(
        origin.requests()[1].header("x-request-id"),
        Some(id.as_str())
    );

    let unsafe_id = request(
        "GET",
        &proxy.url("/r3"),
        &[("X-Request-Id", "<script>")],
        None,
    );
    assert_ne!(unsafe_id.header("x-request-id"), Some("<script>"));

    // Hits get their own request's ID, not the one stored with the response.
    let hit = request(
        "GET",
        &proxy.url("/r1"),
        &[("X-Request-Id", "second")],
        None,
    );
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.header("x-request-id"), Some("second"));

    // The access log names the request ID.
    proxy.wait_log(r#""request_id":"abc-123""#);
}

#[test]
fn security_headers_on_proxied_responses_and_hits() {
    let origin = Origin::start(|r| match r.path() {
        "/framed" => Reply::ok("f").header("x-frame-options", "SAMEORIGIN"),
        _ => Reply::ok("x").header("cache-control", "max-age=60"),
    });
    let proxy = Proxy::start(&origin.url());
    for resp in [get(&proxy.url("/a")), get(&proxy.url("/a"))] {
        assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(resp.header("x-frame-options"), Some("DENY"));
        assert_eq!(
            resp.header("referrer-policy"),
            Some("strict-origin-when-cross-origin")
        );
        assert_eq!(resp.header("x-xss-protection"), Some("0"));
    }
    assert_eq!(
        get(&proxy.url("/framed")).header("x-frame-options"),
        Some("SAMEORIGIN"),
        "an origin's own value is kept"
    );
}

#[test]
fn security_headers_can_be_turned_off() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .arg("--security-headers=false")
        .start();
    let resp = get(&proxy.url("/a"));
    assert_eq!(resp.header("x-frame-options"), None);
    assert_eq!(resp.header("x-content-type-options"), None);
}

#[test]
fn cors_preflight_is_answered_at_the_edge() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--enable-cors", "--allowed-origins", "https://app.example"])
        .start();
    let pre = request(
        "OPTIONS",
        &proxy.url("/api"),
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        None,
    );
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(pre
        .header("access-control-allow-methods")
        .unwrap()
        .contains("PUT"));
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(pre.header("x-content-type-options"), Some("nosniff"));
    assert!(pre.header("x-request-id").is_some());

    let denied = request(
        "OPTIONS",
        &proxy.url("/api"),
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "PUT"),
        ],
        None,
    );
    assert_eq!(denied.status, 403);
    assert_eq!(denied.header("access-control-allow-origin"), None);
    assert_eq!(origin.hits(), 0, "preflights never reach the origin");

    let actual = request(
        "GET",
        &proxy.url("/api"),
        &[("Origin", "https://app.example")],
        None,
    );
    assert_eq!(
        actual.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let other = request(
        "GET",
        &proxy.url("/api"),
        &[("Origin", "https://evil.example")],
        None,
    );
    assert_eq!(other.x_cache(), "HIT");
    assert_eq!(other.header("access-control-allow-origin"), None);
}

#[test]
fn cors_off_by_default_forwards_options() {
    let origin = Origin::start(|_| Reply::ok("origin options").status(200));
    let proxy = Proxy::start(&origin.url());
    let resp = request(
        "OPTIONS",
        &proxy.url("/api"),
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "PUT"),
        ],
        None,
    );
    assert_eq!(resp.body, "origin options");
    assert_eq!(resp.header("access-control-allow-origin"), None);
    assert_eq!(origin.hits(), 1);
}

/// A config file with `yaml` in a temporary folder (kept alive by the returned guard).
fn config_file(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("caching-proxy.yaml");
    std::fs::write(&path, yaml).unwrap();
    (dir, path.to_str().unwrap().to_owned())
}

fn vary_names(resp: &support::Response) -> Vec<String> {
    resp.header("vary")
        .unwrap_or("")
        .split(',')
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect()
}

#[test]
fn cors_answers_for_a_listed_origin_vary_on_origin() {
    let origin = Origin::start(|_| {
        Reply::ok("x")
            .header("cache-control", "max-age=60")
            .header("vary", "Accept-Encoding")
    });
    let (_dir, file) = config_file(
        "cors:\n  enabled: true\n  allowed_origins: [https://a.example, https://b.example]\n",
    );
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["-c", &file])
        .start();
    for (from, x_cache) in [("https://a.example", "MISS"), ("https://b.example", "HIT")] {
        let resp = request("GET", &proxy.url("/api"), &[("Origin", from)], None);
        assert_eq!(resp.x_cache(), x_cache);
        assert_eq!(resp.header("access-control-allow-origin"), Some(from));
        let vary = vary_names(&resp);
        assert!(vary.contains(&"origin".to_owned()), "{vary:?}");
        assert!(
            vary.contains(&"accept-encoding".to_owned()),
            "the origin's Vary is kept: {vary:?}"
        );
    }
}

#[test]
fn cors_with_any_origin_in_the_config_file_answers_star_without_vary() {
    let origin = Origin::cacheable();
    let (_dir, file) = config_file("cors:\n  enabled: true\n  allowed_origins: \"*\"\n");
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["-c", &file])
        .start();
    for from in ["https://a.example", "https://anything.example"] {
        let resp = request("GET", &proxy.url("/api"), &[("Origin", from)], None);
        assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
        assert!(!vary_names(&resp).contains(&"origin".to_owned()));
    }
    let pre = request(
        "OPTIONS",
        &proxy.url("/api"),
        &[
            ("Origin", "https://x.example"),
            ("Access-Control-Request-Method", "DELETE"),
        ],
        None,
    );
    assert_eq!(
        (pre.status, pre.header("access-control-allow-origin")),
        (204, Some("*"))
    );
}

#[test]
fn security_headers_disabled_in_the_config_file() {
    let origin = Origin::cacheable();
    let (_dir, file) = config_file("security_headers:\n  enabled: false\n");
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["-c", &file])
        .start();
    let proxied = get(&proxy.url("/a"));
    let refused =
        support::parse_response(&support::raw(proxy.addr(), b"GET /a HTTP/1.0\r\n\r\n")).unwrap();
    assert_eq!(refused.status, 400, "the proxy's own error (no Host)");
    for resp in [&proxied, &refused] {
        for (name, _) in caching_proxy::headers::SECURITY_HEADERS {
            assert_eq!(
                resp.header(name.as_str()),
                None,
                "{name} on {}",
                resp.status
            );
        }
    }
    // The admin service always sends them.
    let admin = get(&proxy.admin_url("/health/live"));
    assert_eq!(admin.header("x-frame-options"), Some("DENY"));
}
