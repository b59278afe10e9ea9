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
