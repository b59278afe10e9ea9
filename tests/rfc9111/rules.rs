//! RFC 9111 (HTTP Caching) and the cache-related parts of RFC 9110, rule by rule, through
//! the real proxy against a scripted origin. Each test names its rule and cites its section.
//!
//! Some rules are about time; those tests use one- or two-second lifetimes and wait them
//! out: the waiting is the behaviour under test, not synchronisation.

use super::{builder, support};

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use support::{get, request, Gate, Origin, Proxy, Reply, Response};

/// An HTTP date `offset` seconds from now.
fn date(offset: i64) -> String {
    let now = SystemTime::now();
    let t = if offset >= 0 {
        now + Duration::from_secs(offset as u64)
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    };
    httpdate::fmt_http_date(t)
}

fn ok(body: &str, cache_control: &str) -> Reply {
    Reply::ok(body).header("cache-control", cache_control)
}

/// Whether the second of two identical GETs was answered from the cache.
fn reused(origin_reply: Reply, extra: &[&str]) -> bool {
    let origin = Origin::start(move |_| origin_reply.clone());
    let proxy = builder(&origin.url()).args(extra).start();
    get(&proxy.url("/r"));
    let second = get(&proxy.url("/r"));
    let hit = second.x_cache() == "HIT";
    assert_eq!(
        hit,
        origin.hits() == 1,
        "X-Cache must agree with the origin's count"
    );
    hit
}

fn wait(secs: f64) {
    thread::sleep(Duration::from_secs_f64(secs));
}

fn with(req_headers: &[(&str, &str)], proxy: &Proxy, path: &str) -> Response {
    request("GET", &proxy.url(path), req_headers, None)
}

// ---- §4.2.1 Calculating freshness lifetime -------------------------------------------

/// §4.2.1: s-maxage is used before max-age by a shared cache.
#[test]
fn s_maxage_is_used_before_max_age() {
    assert!(reused(ok("x", "max-age=0, s-maxage=60"), &[]));
    assert!(!reused(ok("x", "max-age=60, s-maxage=0"), &[]));
}

/// §4.2.1: max-age is used before Expires.
#[test]
fn max_age_is_used_before_expires() {
    assert!(!reused(
        ok("x", "max-age=0").header("expires", &date(3600)),
        &[]
    ));
    assert!(reused(
        ok("x", "max-age=60").header("expires", &date(-3600)),
        &[]
    ));
}

/// §4.2.1: Expires is relative to Date, so an Expires earlier than the origin's Date means
/// stale even when the two clocks disagree.
#[test]
fn expires_is_relative_to_date() {
    let reply = Reply::ok("x")
        .header("date", &date(1000))
        .header("expires", &date(30));
    assert!(!reused(reply, &[]));
    let reply = Reply::ok("x")
        .header("date", &date(0))
        .header("expires", &date(60));
    assert!(reused(reply, &[]));
}

/// §5.3: an invalid Expires, including "0", means already expired; it does not fall back to
/// the default TTL.
#[test]
fn invalid_expires_means_stale() {
    assert!(!reused(Reply::ok("x").header("expires", "not a date"), &[]));
    assert!(!reused(Reply::ok("x").header("expires", "0"), &[]));
}

/// §5.3: several Expires lines are invalid.
#[test]
fn duplicate_expires_means_stale() {
    let e = date(3600);
    assert!(!reused(
        Reply::ok("x").header("expires", &e).header("expires", &e),
        &[]
    ));
}

/// §1.2.2, §4.2.1: a negative or malformed max-age is not a freshness lifetime; the response
/// is stale, not given the default TTL.
#[test]
fn negative_or_malformed_max_age_is_stale() {
    assert!(!reused(ok("x", "max-age=-1"), &[]));
    assert!(!reused(ok("x", "max-age=abc"), &[]));
    assert!(!reused(ok("x", "max-age=1.5"), &[]));
    assert!(!reused(ok("x", "max-age="), &[]));
}

/// §4.2.1: several conflicting max-age directives make the response stale; identical ones
/// are harmless.
#[test]
fn conflicting_duplicate_directives_are_stale() {
    assert!(!reused(ok("x", "max-age=60, max-age=0"), &[]));
    assert!(!reused(
        Reply::ok("x")
            .header("cache-control", "max-age=0")
            .header("cache-control", "max-age=60"),
        &[]
    ));
    assert!(reused(ok("x", "max-age=60, max-age=60"), &[]));
}

/// §5.2: the quoted-string form of a delta-seconds value is accepted.
#[test]
fn quoted_max_age_is_accepted() {
    assert!(reused(ok("x", "max-age=\"60\""), &[]));
}

/// §1.2.2: a delta-seconds too large to represent is read as 2147483648.
#[test]
fn huge_max_age_is_capped_not_rejected() {
    assert!(reused(ok("x", "max-age=99999999999999999999"), &[]));
}

/// §4.2.3: the Age the origin reports counts against freshness.
#[test]
fn age_from_the_origin_reduces_freshness() {
    assert!(!reused(ok("x", "max-age=10").header("age", "20"), &[]));
    assert!(reused(ok("x", "max-age=100").header("age", "20"), &[]));
}

/// The `Age` of a hit on `path`, with the seconds (rounded up) since `since`: the most
/// time the response can have spent in the cache.
fn hit_age(proxy: &Proxy, path: &str, since: Instant) -> (u64, u64) {
    let hit = get(&proxy.url(path));
    assert_eq!(hit.x_cache(), "HIT");
    let age = hit.header("age").unwrap().parse().unwrap();
    // Date and Age have one-second resolution: a second of rounding each way.
    (age, since.elapsed().as_secs() + 2)
}

/// §5.1: a response served from the cache carries Age, including the age it arrived with.
#[test]
fn age_on_responses_from_the_cache_includes_age_on_arrival() {
    let origin = Origin::start(|_| ok("x", "max-age=100").header("age", "30"));
    let proxy = builder(&origin.url()).start();
    let before = Instant::now();
    get(&proxy.url("/a"));
    let (age, spent) = hit_age(&proxy, "/a", before);
    assert!(
        (30..=30 + spent).contains(&age),
        "Age {age}, {spent} s since the fetch"
    );
}

/// §4.2.3: Age counts the time the response has spent in this cache (resident time).
#[test]
fn age_includes_the_time_spent_in_this_cache() {
    let origin = Origin::start(|_| ok("x", "max-age=100"));
    let proxy = builder(&origin.url()).start();
    let before = Instant::now();
    get(&proxy.url("/a"));
    let stored = Instant::now();
    // Time in the cache is the behaviour under test.
    wait(2.0);
    let (age, spent) = hit_age(&proxy, "/a", before);
    let at_least = stored.elapsed().as_secs() - 1; // Date has a one-second resolution
    assert!(
        (at_least..=spent).contains(&age),
        "Age {age}: expected {at_least}..={spent}"
    );
}

// ---- §3 Storing responses -----------------------------------------------------------------

/// §5.2.2.5: no-store responses are never stored.
#[test]
fn no_store_is_never_stored() {
    assert!(!reused(ok("x", "no-store, max-age=60"), &[]));
}

/// §5.2.2.7: private responses are never stored by a shared cache.
#[test]
fn private_is_never_stored_in_a_shared_cache() {
    assert!(!reused(ok("x", "private, max-age=60"), &[]));
}

/// §3.5: a response to a request with Authorization is stored only with public, s-maxage
/// or must-revalidate.
#[test]
fn authorization_requires_public_s_maxage_or_must_revalidate() {
    let case = |cc: &'static str| {
        let origin = Origin::start(move |_| ok("x", cc));
        let proxy = builder(&origin.url()).start();
        for _ in 0..2 {
            with(&[("authorization", "Bearer t")], &proxy, "/a");
        }
        origin.hits() == 1
    };
    assert!(!case("max-age=60"));
    assert!(case("public, max-age=60"));
    assert!(case("s-maxage=60"));
    assert!(case("must-revalidate, max-age=60"));
}

/// §3, RFC 9110 §15.1: heuristically cacheable status codes get default freshness; others
/// are stored only with explicit freshness.
#[test]
fn default_cacheable_status_codes() {
    for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414] {
        assert!(
            reused(Reply::ok("x").status(status), &[]),
            "{status} with no freshness"
        );
    }
    for status in [302, 307, 400, 403, 500, 503] {
        assert!(
            !reused(Reply::ok("x").status(status), &[]),
            "{status} with no freshness"
        );
    }
    for status in [302, 307, 403, 500] {
        assert!(
            reused(ok("x", "max-age=60").status(status), &[]),
            "{status} with max-age"
        );
    }
}

/// §4.2.2: heuristic freshness is a fraction of the time since Last-Modified.
#[test]
fn heuristic_freshness_from_last_modified() {
    let lm = Reply::ok("x")
        .header("date", &date(0))
        .header("last-modified", &date(-1000));
    // default TTL off: only the heuristic can make this fresh (10% of 1000 s)
    assert!(reused(lm.clone(), &["--cache-ttl", "0"]));
    assert!(!reused(
        lm,
        &["--cache-ttl", "0", "--cache-heuristic-fraction", "0"]
    ));
    let recent = Reply::ok("x")
        .header("date", &date(0))
        .header("last-modified", &date(-5));
    // 10% of 5 s is under a second: not fresh
    assert!(!reused(recent, &["--cache-ttl", "0"]));
}

// ---- §4.3 Validation ------------------------------------------------------------------------

/// §4.3.1, §4.3.4: a stale response with an ETag is revalidated with If-None-Match; a 304
/// refreshes the stored headers and freshness and the client gets the full response.
#[test]
fn stale_etag_revalidated_and_304_refreshes_the_entry() {
    let origin = Origin::start(|r| match r.header("if-none-match") {
        Some("\"v1\"") => Reply::ok("")
            .status(304)
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=60")
            .header("x-version", "2"),
        _ => ok("full body", "max-age=0")
            .header("etag", "\"v1\"")
            .header("x-version", "1"),
    });
    let proxy = builder(&origin.url()).start();
    assert_eq!(get(&proxy.url("/v")).x_cache(), "MISS");
    let revalidated = get(&proxy.url("/v"));
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.body, "full body");
    assert_eq!(revalidated.x_cache(), "REVALIDATED");
    assert_eq!(
        revalidated.header("x-version"),
        Some("2"),
        "304 headers update the stored ones"
    );
    assert_eq!(origin.requests()[1].header("if-none-match"), Some("\"v1\""));

    let fresh = get(&proxy.url("/v"));
    assert_eq!(
        fresh.x_cache(),
        "HIT",
        "the 304 made the entry fresh for 60 s"
    );
    assert_eq!(fresh.header("x-version"), Some("2"));
    assert_eq!(fresh.body, "full body");
    assert_eq!(origin.hits(), 2);
}

/// §4.3.1: with only Last-Modified, revalidation uses If-Modified-Since.
#[test]
fn stale_last_modified_revalidated_with_if_modified_since() {
    let lm = date(-3600);
    let origin = Origin::start(move |r| match r.header("if-modified-since") {
        Some(_) => Reply::ok("")
            .status(304)
            .header("cache-control", "max-age=0"),
        None => ok("body", "max-age=0").header("last-modified", &lm),
    });
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/lm"));
    let second = get(&proxy.url("/lm"));
    assert_eq!((second.status, second.body.as_str()), (200, "body"));
    assert_eq!(second.x_cache(), "REVALIDATED");
    assert!(origin.requests()[1].header("if-modified-since").is_some());
}

/// §5.2.2.4: a no-cache response is stored but validated on every use.
#[test]
fn no_cache_response_is_revalidated_every_time() {
    let origin = Origin::start(|r| match r.header("if-none-match") {
        Some(_) => Reply::ok("").status(304).header("etag", "\"e\""),
        None => ok("body", "no-cache").header("etag", "\"e\""),
    });
    let proxy = builder(&origin.url()).start();
    for _ in 0..3 {
        assert_eq!(get(&proxy.url("/nc")).body, "body");
    }
    let conditional = origin
        .requests()
        .iter()
        .filter(|r| r.header("if-none-match").is_some())
        .count();
    assert_eq!((origin.hits(), conditional), (3, 2));
}

/// A stale response without validators is fetched again in full: X-Cache says EXPIRED.
#[test]
fn stale_without_validators_is_refetched_as_expired() {
    let origin = Origin::start(|_| ok("x", "max-age=0"));
    let proxy = builder(&origin.url()).start();
    assert_eq!(get(&proxy.url("/e")).x_cache(), "MISS");
    assert_eq!(get(&proxy.url("/e")).x_cache(), "EXPIRED");
    assert_eq!(origin.hits(), 2);
}

/// RFC 9110 §13.1.2, §13.2.2: a conditional request against a fresh stored response is
/// answered 304 by the cache.
#[test]
fn client_conditional_requests_get_304_from_the_cache() {
    let lm = date(-3600);
    let origin = Origin::start(move |_| {
        ok("body", "max-age=60")
            .header("etag", "\"abc\"")
            .header("last-modified", &lm)
    });
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/c"));
    let inm = with(&[("if-none-match", "\"abc\"")], &proxy, "/c");
    assert_eq!((inm.status, inm.body.as_str()), (304, ""));
    let other = with(&[("if-none-match", "\"zzz\"")], &proxy, "/c");
    assert_eq!((other.status, other.body.as_str()), (200, "body"));
    let ims = with(&[("if-modified-since", &date(0))], &proxy, "/c");
    assert_eq!(ims.status, 304);
    assert_eq!(origin.hits(), 1, "all answered from the cache");
}

// ---- §4.2.4 Serving stale ---------------------------------------------------------------------

/// RFC 5861 §3: stale-while-revalidate serves the stale response at once and refreshes it
/// once in the background.
#[test]
fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    // The refresh is held at the origin until the stale requests have all been answered,
    // however slowly they run.
    let refresh = Gate::new();
    let held = refresh.clone();
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = fetches.clone();
    let origin = Origin::start(move |_| {
        if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            ok("old", "max-age=1, stale-while-revalidate=60")
        } else {
            held.wait();
            ok("new", "max-age=60")
        }
    });
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/swr"));
    wait(2.1);
    let barrier = Arc::new(Barrier::new(5));
    let stale: Vec<Response> = (0..5)
        .map(|_| {
            let (url, b) = (proxy.url("/swr"), barrier.clone());
            thread::spawn(move || {
                b.wait();
                get(&url)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    for r in &stale {
        assert_eq!((r.body.as_str(), r.x_cache()), ("old", "STALE"));
    }
    refresh.open();
    // The refresh runs in the background; wait for it to land.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(&proxy.url("/swr"));
        if r.body == "new" {
            assert_eq!(r.x_cache(), "HIT");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the background refresh never landed"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        origin.hits(),
        2,
        "one background refresh for all stale requests"
    );
}

/// RFC 5861 §4: stale-if-error serves the stale response when the origin answers 5xx.
#[test]
fn stale_if_error_on_origin_5xx() {
    let origin = Origin::sequence(vec![
        ok("good", "max-age=1, stale-if-error=60"),
        Reply::ok("broken").status(500),
    ]);
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/sie"));
    wait(2.1);
    let r = get(&proxy.url("/sie"));
    assert_eq!(
        (r.status, r.body.as_str(), r.x_cache()),
        (200, "good", "STALE")
    );
}

/// RFC 5861 §4: stale-if-error serves the stale response when the origin is down.
#[test]
fn stale_if_error_on_origin_down() {
    let origin = Origin::start(|_| ok("good", "max-age=1, stale-if-error=60"));
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/down"));
    origin.stop();
    wait(2.1);
    let r = get(&proxy.url("/down"));
    assert_eq!(
        (r.status, r.body.as_str(), r.x_cache()),
        (200, "good", "STALE")
    );
}

/// RFC 5861 §4: stale-if-error also covers an origin that times out.
#[test]
fn stale_if_error_on_origin_timeout() {
    let origin = Origin::sequence(vec![
        ok("good", "max-age=1, stale-if-error=60"),
        ok("late", "max-age=60").delay(Duration::from_secs(3)),
    ]);
    let proxy = builder(&origin.url()).args(&["--timeout", "500ms"]).start();
    get(&proxy.url("/slow"));
    wait(2.1);
    let r = get(&proxy.url("/slow"));
    assert_eq!(
        (r.status, r.body.as_str(), r.x_cache()),
        (200, "good", "STALE")
    );
}

/// §4.2.4: the configured serve-stale-on-error window applies to responses that do not
/// forbid it, and never to those that do.
#[test]
fn configured_stale_if_error_window() {
    let run = |cc: &'static str| {
        let origin = Origin::sequence(vec![ok("good", cc), Reply::ok("broken").status(503)]);
        let proxy = builder(&origin.url())
            .args(&["--cache-stale-if-error", "1h"])
            .start();
        get(&proxy.url("/w"));
        wait(2.1);
        get(&proxy.url("/w"))
    };
    let served = run("max-age=1");
    assert_eq!((served.status, served.x_cache()), (200, "STALE"));
    for forbidding in [
        "max-age=1, must-revalidate",
        "max-age=1, proxy-revalidate",
        "s-maxage=1",
    ] {
        let r = run(forbidding);
        assert_eq!(r.status, 503, "{forbidding} forbids serving stale");
    }
}

/// §4.2.4: stale content is never served past the window the directives allow.
#[test]
fn stale_never_beyond_its_window() {
    let origin = Origin::sequence(vec![
        ok("good", "max-age=1, stale-if-error=1"),
        Reply::ok("broken").status(500),
    ]);
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/old"));
    wait(3.1);
    let r = get(&proxy.url("/old"));
    assert_eq!((r.status, r.body.as_str()), (500, "broken"));
}

// ---- §4.1 Vary ------------------------------------------------------------------------------

/// §4.1: a stored response is used only when the headers named by Vary match; whitespace
/// around values does not matter.
#[test]
fn vary_selects_the_matching_variant() {
    let origin = Origin::start(|r| {
        ok(
            &format!("enc={}", r.header("accept-encoding").unwrap_or("-")),
            "max-age=60",
        )
        .header("vary", "Accept-Encoding")
    });
    let proxy = builder(&origin.url()).start();
    assert_eq!(
        with(&[("accept-encoding", "gzip")], &proxy, "/v").x_cache(),
        "MISS"
    );
    let same = with(&[("accept-encoding", " gzip ")], &proxy, "/v");
    assert_eq!((same.x_cache(), same.body.as_str()), ("HIT", "enc=gzip"));
    let other = with(&[("accept-encoding", "br")], &proxy, "/v");
    assert_eq!((other.x_cache(), other.body.as_str()), ("MISS", "enc=br"));
    let none = with(&[], &proxy, "/v");
    assert_eq!(none.x_cache(), "MISS");
    assert_eq!(origin.hits(), 3);
}

/// §4.1: Vary: * never matches.
#[test]
fn vary_star_is_never_reused() {
    assert!(!reused(ok("x", "max-age=60").header("vary", "*"), &[]));
}

// ---- §4.4 Invalidation ----------------------------------------------------------------------

fn invalidation_origin() -> Origin {
    Origin::start(|r| match (r.method.as_str(), r.path()) {
        ("GET", _) => ok(&format!("get {}", r.target), "max-age=60"),
        (_, "/fail") => Reply::ok("no").status(500),
        (_, "/move") => Reply::ok("moved")
            .status(201)
            .header("location", "/b")
            .header(
                "content-location",
                &format!("http://{}/c", r.header("host").unwrap()),
            ),
        (_, "/away") => Reply::ok("moved")
            .status(201)
            .header("location", "http://other.example/b"),
        _ => Reply::ok("done"),
    })
}

/// §4.4: a successful unsafe request invalidates its target URI.
#[test]
fn unsafe_request_invalidates_its_target() {
    let origin = invalidation_origin();
    let proxy = builder(&origin.url()).arg("--preserve-host").start();
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        get(&proxy.url("/r"));
        assert_eq!(get(&proxy.url("/r")).x_cache(), "HIT");
        assert_eq!(
            request(method, &proxy.url("/r"), &[], Some("x")).status,
            200
        );
        assert_eq!(get(&proxy.url("/r")).x_cache(), "MISS", "after {method}");
    }
}

/// §4.4: Location and Content-Location on the same host are invalidated too, other hosts'
/// are not.
#[test]
fn unsafe_request_invalidates_same_host_locations() {
    let origin = invalidation_origin();
    let proxy = builder(&origin.url()).arg("--preserve-host").start();
    for p in ["/b", "/c"] {
        get(&proxy.url(p));
    }
    request("POST", &proxy.url("/move"), &[], Some("x"));
    assert_eq!(get(&proxy.url("/b")).x_cache(), "MISS");
    assert_eq!(get(&proxy.url("/c")).x_cache(), "MISS");
    request("POST", &proxy.url("/away"), &[], Some("x"));
    assert_eq!(get(&proxy.url("/b")).x_cache(), "HIT");
}

/// §4.4: an unsafe request that fails invalidates nothing.
#[test]
fn failed_unsafe_request_invalidates_nothing() {
    let origin = invalidation_origin();
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/fail"));
    assert_eq!(
        request("POST", &proxy.url("/fail"), &[], Some("x")).status,
        500
    );
    assert_eq!(get(&proxy.url("/fail")).x_cache(), "HIT");
}

// ---- §5.2.1 Request directives ----------------------------------------------------------------

/// §5.2.1.5: request no-store: the response is not stored.
#[test]
fn request_no_store_is_not_stored() {
    let origin = Origin::start(|_| ok("x", "max-age=60"));
    let proxy = builder(&origin.url()).start();
    with(&[("cache-control", "no-store")], &proxy, "/ns");
    assert_eq!(get(&proxy.url("/ns")).x_cache(), "MISS");
}

fn validating_origin() -> Origin {
    Origin::start(|r| match r.header("if-none-match") {
        Some(_) => Reply::ok("")
            .status(304)
            .header("etag", "\"e\"")
            .header("cache-control", "max-age=60"),
        None => ok("body", "max-age=60").header("etag", "\"e\""),
    })
}

/// §5.2.1.4: request no-cache (and Pragma: no-cache without Cache-Control) makes the cache
/// validate before reuse.
#[test]
fn request_no_cache_forces_validation() {
    let origin = validating_origin();
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/x"));
    let r = with(&[("cache-control", "no-cache")], &proxy, "/x");
    assert_eq!((r.body.as_str(), r.x_cache()), ("body", "REVALIDATED"));
    let r = with(&[("pragma", "no-cache")], &proxy, "/x");
    assert_eq!(r.x_cache(), "REVALIDATED");
    assert_eq!(origin.hits(), 3);
}

/// Configuration: the edge can ignore client no-cache/max-age=0 to protect the origin.
#[test]
fn client_no_cache_can_be_ignored() {
    let origin = validating_origin();
    let proxy = builder(&origin.url())
        .arg("--cache-ignore-client-no-cache")
        .start();
    get(&proxy.url("/x"));
    assert_eq!(
        with(&[("cache-control", "no-cache")], &proxy, "/x").x_cache(),
        "HIT"
    );
    assert_eq!(
        with(&[("cache-control", "max-age=0")], &proxy, "/x").x_cache(),
        "HIT"
    );
    assert_eq!(origin.hits(), 1);
}

/// §5.2.1.1: request max-age: stored responses older than it are validated first.
#[test]
fn request_max_age() {
    let origin = Origin::start(|r| match r.header("if-none-match") {
        Some(_) => Reply::ok("").status(304).header("etag", "\"e\""),
        None => ok("body", "max-age=600")
            .header("etag", "\"e\"")
            .header("age", "100"),
    });
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/m"));
    assert_eq!(
        with(&[("cache-control", "max-age=200")], &proxy, "/m").x_cache(),
        "HIT"
    );
    assert_eq!(
        with(&[("cache-control", "max-age=50")], &proxy, "/m").x_cache(),
        "REVALIDATED"
    );
}

/// §5.2.1.3: request min-fresh: the response must stay fresh at least that long.
#[test]
fn request_min_fresh() {
    let origin = validating_origin();
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/f"));
    assert_eq!(
        with(&[("cache-control", "min-fresh=10")], &proxy, "/f").x_cache(),
        "HIT"
    );
    assert_eq!(
        with(&[("cache-control", "min-fresh=120")], &proxy, "/f").x_cache(),
        "REVALIDATED"
    );
}

/// §5.2.1.2: request max-stale: a stale response is acceptable up to that staleness.
#[test]
fn request_max_stale() {
    let origin = Origin::start(|_| ok("x", "max-age=10").header("age", "30"));
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/s"));
    let r = with(&[("cache-control", "max-stale=60")], &proxy, "/s");
    assert_eq!(r.x_cache(), "STALE");
    assert_eq!(origin.hits(), 1);
    assert_ne!(
        with(&[("cache-control", "max-stale=5")], &proxy, "/s").x_cache(),
        "STALE"
    );
    assert_eq!(origin.hits(), 2);
}

/// §5.2.1.7: only-if-cached: 504 when nothing usable is stored, the stored response
/// otherwise; the origin is never contacted.
#[test]
fn request_only_if_cached() {
    let origin = Origin::start(|_| ok("x", "max-age=60"));
    let proxy = builder(&origin.url()).start();
    let none = with(&[("cache-control", "only-if-cached")], &proxy, "/o");
    assert_eq!(none.status, 504);
    assert_eq!(none.json()["code"], "NOT_CACHED");
    assert_eq!(origin.hits(), 0);
    get(&proxy.url("/o"));
    let stored = with(&[("cache-control", "only-if-cached")], &proxy, "/o");
    assert_eq!((stored.status, stored.x_cache()), (200, "HIT"));
    assert_eq!(origin.hits(), 1);
}

// ---- RFC 9110 §14 Ranges --------------------------------------------------------------------

fn range_proxy() -> (Origin, Proxy) {
    let origin = Origin::start(|_| ok("0123456789", "max-age=60").header("etag", "\"r\""));
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/range"));
    (origin, proxy)
}

/// RFC 9110 §14.2: a single range of a stored full response is answered 206 from the cache.
#[test]
fn single_range_from_the_cache() {
    let (origin, proxy) = range_proxy();
    let r = with(&[("range", "bytes=2-5")], &proxy, "/range");
    assert_eq!((r.status, r.body.as_str()), (206, "2345"));
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    let suffix = with(&[("range", "bytes=-3")], &proxy, "/range");
    assert_eq!((suffix.status, suffix.body.as_str()), (206, "789"));
    let beyond = with(&[("range", "bytes=20-30")], &proxy, "/range");
    assert_eq!(beyond.status, 416);
    assert_eq!(origin.hits(), 1);
}

/// RFC 9110 §14.6: several ranges are answered as multipart/byteranges.
#[test]
fn multiple_ranges_from_the_cache() {
    let (origin, proxy) = range_proxy();
    let r = with(&[("range", "bytes=0-1,8-9")], &proxy, "/range");
    assert_eq!(r.status, 206);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("multipart/byteranges"),
        "{r:?}"
    );
    assert!(r.body.contains("01") && r.body.contains("89"), "{}", r.body);
    assert!(r.body.contains("Content-Range: bytes 0-1/10"), "{}", r.body);
    assert_eq!(origin.hits(), 1);
}

/// RFC 9110 §13.1.5: If-Range: the range is served only if the validator matches.
#[test]
fn if_range_is_respected() {
    let (_origin, proxy) = range_proxy();
    let matching = with(
        &[("range", "bytes=0-1"), ("if-range", "\"r\"")],
        &proxy,
        "/range",
    );
    assert_eq!((matching.status, matching.body.as_str()), (206, "01"));
    let stale = with(
        &[("range", "bytes=0-1"), ("if-range", "\"old\"")],
        &proxy,
        "/range",
    );
    assert_eq!((stale.status, stale.body.as_str()), (200, "0123456789"));
}

/// §3.3: a 206 from the origin is not stored as if it were the full response (nor, when
/// no client asked for a range, as a part: see `rules_part3.rs`).
#[test]
fn partial_content_from_the_origin_is_not_stored() {
    let origin = Origin::start(|_| {
        ok("part", "max-age=60")
            .status(206)
            .header("content-range", "bytes 0-3/10")
    });
    let proxy = builder(&origin.url()).start();
    assert_eq!(get(&proxy.url("/p")).status, 206);
    assert_eq!(get(&proxy.url("/p")).x_cache(), "MISS");
    assert_eq!(origin.hits(), 2);
}

// ---- §3.1, RFC 9110 §7.6.1 Hop-by-hop headers --------------------------------------------------

/// Hop-by-hop headers are neither stored nor forwarded, in either direction.
#[test]
fn hop_by_hop_headers_are_neither_stored_nor_forwarded() {
    let origin = Origin::start(|_| {
        ok("x", "max-age=60")
            .header("connection", "X-Hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-end-to-end", "kept")
    });
    let proxy = builder(&origin.url()).start();
    let sent = [
        ("connection", "X-Client-Hop"),
        ("x-client-hop", "1"),
        ("proxy-authorization", "Basic abc"),
        ("x-client-e2e", "kept"),
    ];
    for (i, r) in [with(&sent, &proxy, "/h"), with(&sent, &proxy, "/h")]
        .iter()
        .enumerate()
    {
        assert_eq!(r.x_cache(), ["MISS", "HIT"][i]);
        for hop in ["x-hop", "keep-alive", "proxy-authenticate"] {
            assert_eq!(r.header(hop), None, "{hop} reached the client");
        }
        assert_eq!(r.header("x-end-to-end"), Some("kept"));
    }
    let at_origin = &origin.requests()[0];
    for hop in ["x-client-hop", "proxy-authorization"] {
        assert_eq!(at_origin.header(hop), None, "{hop} reached the origin");
    }
    assert_eq!(at_origin.header("x-client-e2e"), Some("kept"));
}

// ---- Purge --------------------------------------------------------------------------------------

/// PURGE removes a URL and all its variants (when enabled, from loopback without a token).
#[test]
fn purge_method_removes_url_and_variants() {
    let origin = Origin::start(|r| {
        ok(
            &format!("lang={}", r.header("accept-language").unwrap_or("-")),
            "max-age=60",
        )
        .header("vary", "Accept-Language")
    });
    let proxy = builder(&origin.url()).arg("--enable-purge").start();
    for lang in ["en", "fr"] {
        with(&[("accept-language", lang)], &proxy, "/p?q=1");
    }
    let purged = request("PURGE", &proxy.url("/p?q=1"), &[], None);
    assert_eq!(purged.status, 200, "{purged:?}");
    assert_eq!(purged.json()["purged"], true);
    for lang in ["en", "fr"] {
        assert_eq!(
            with(&[("accept-language", lang)], &proxy, "/p?q=1").x_cache(),
            "MISS"
        );
    }
    assert_eq!(
        origin
            .requests()
            .iter()
            .filter(|r| r.method == "PURGE")
            .count(),
        0
    );
}

/// PURGE is refused unless enabled, and needs the admin token when one is set.
#[test]
fn purge_method_is_authorised_like_the_admin_api() {
    let origin = Origin::start(|_| ok("x", "max-age=60"));
    let off = builder(&origin.url()).start();
    assert_eq!(request("PURGE", &off.url("/a"), &[], None).status, 405);

    let proxy = builder(&origin.url())
        .args(&["--enable-purge", "--admin-token", "s3cret"])
        .start();
    get(&proxy.url("/a"));
    assert_eq!(request("PURGE", &proxy.url("/a"), &[], None).status, 401);
    assert_eq!(get(&proxy.url("/a")).x_cache(), "HIT");
    let ok = request(
        "PURGE",
        &proxy.url("/a"),
        &[("authorization", "Bearer s3cret")],
        None,
    );
    assert_eq!(ok.status, 200);
    assert_eq!(get(&proxy.url("/a")).x_cache(), "MISS");
}

/// RFC 9110 §6.6.1: a response that arrives without Date gets one, also when served from
/// the cache later.
#[test]
fn missing_date_is_added() {
    // The Date is added when the response is received and stored with it: a hit a second
    // later still carries it. (Pingora would add the time of each response instead, so a
    // Date added on the way out would differ between the two.)
    let origin = Origin::start(|_| ok("x", "max-age=60"));
    let proxy = builder(&origin.url()).start();
    let miss = get(&proxy.url("/d"));
    assert_eq!(miss.x_cache(), "MISS");
    let date = miss.header("date").expect("Date").to_owned();
    assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let hit = get(&proxy.url("/d"));
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.header("date"), Some(date.as_str()), "the stored Date");
}

/// §4.2.2: `public` allows heuristic or default freshness for other statuses too.
#[test]
fn public_allows_default_freshness_for_any_status() {
    assert!(reused(
        Reply::ok("x").status(302).header("cache-control", "public"),
        &[]
    ));
    assert!(!reused(Reply::ok("x").status(302), &[]));
}
