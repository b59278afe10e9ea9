//! RFC 9111 and RFC 9110 rules, continued from `rules.rs` (same harness: every rule runs
//! on the memory backend and on the Redis tier). Staleness comes from `Age`, `Date` or
//! `Expires` values the origin sets in the past, not from waiting.

use super::{builder, support};

use std::time::{Duration, SystemTime};

use support::{get, request, Origin, Reply};

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

/// Serves each case on a path of its own through one origin and one proxy (with `extra`
/// arguments), and checks whether the second GET of each was answered from the cache.
fn check_reuse(cases: Vec<(&'static str, Reply, bool)>, extra: &[&str]) {
    let replies: Vec<Reply> = cases.iter().map(|(_, r, _)| r.clone()).collect();
    let origin = Origin::start(move |r| {
        let i: usize = r.path().trim_start_matches("/c").parse().unwrap();
        replies[i].clone()
    });
    let proxy = builder(&origin.url()).args(extra).start();
    for (i, (name, _, expect_reused)) in cases.iter().enumerate() {
        let path = format!("/c{i}");
        get(&proxy.url(&path));
        let second = get(&proxy.url(&path));
        let reused = origin.hits_for(&path) == 1;
        assert_eq!(
            reused,
            second.x_cache() == "HIT",
            "{name}: X-Cache must agree with the origin's count"
        );
        assert_eq!(reused, *expect_reused, "{name}: reused");
    }
}

/// RFC 9111 §4, RFC 9110 §6.6.1: a response served from the cache carries the Date it
/// was stored with (the origin's), not the time of serving, with max-age or Expires.
#[test]
fn date_of_stored_response_is_kept() {
    let origin_date = date(-100);
    let (d, expires) = (origin_date.clone(), date(3600));
    let origin = Origin::start(move |r| match r.path() {
        "/max-age" => Reply::ok("x")
            .header("cache-control", "max-age=3600")
            .header("date", &d),
        _ => Reply::ok("x")
            .header("expires", &expires)
            .header("date", &d),
    });
    let proxy = builder(&origin.url()).start();
    for path in ["/max-age", "/expires"] {
        for expected in ["MISS", "HIT"] {
            let r = get(&proxy.url(path));
            assert_eq!(r.x_cache(), expected, "{path}");
            assert_eq!(
                r.header("date"),
                Some(origin_date.as_str()),
                "{path} {expected}"
            );
        }
    }
}

/// §5.1: of an Age that holds a list, the first member counts: `7200, 0` is stale for a
/// max-age of 3600, `0, 7200` fresh.
#[test]
fn age_list_uses_its_first_member() {
    let aged = |age: &str| {
        Reply::ok("x")
            .header("cache-control", "max-age=3600")
            .header("date", &date(0))
            .header("age", age)
    };
    check_reuse(
        vec![
            ("7200, 0", aged("7200, 0"), false),
            ("0, 7200", aged("0, 7200"), true),
        ],
        &[],
    );
}

/// §4.2.2, RFC 9110 §15.1: 501 is heuristically cacheable like the other listed statuses.
#[test]
fn heuristic_freshness_for_501() {
    let lm = |status| {
        Reply::ok("x")
            .status(status)
            .header("date", &date(0))
            .header("last-modified", &date(-100_000))
    };
    check_reuse(
        vec![("501", lm(501), true), ("500", lm(500), false)],
        &["--cache-ttl", "0"],
    );
}

/// §5.3, RFC 9110 §5.6.7: Expires in the three HTTP-date forms, with any letter case.
#[test]
fn expires_in_every_date_form_and_case() {
    let expires = |value: &str| {
        Reply::ok("x")
            .header("expires", value)
            .header("date", &date(0))
    };
    check_reuse(
        vec![
            (
                "IMF-fixdate",
                expires("Thu, 18 Aug 2050 02:01:18 GMT"),
                true,
            ),
            ("RFC 850", expires("Thursday, 18-Aug-50 02:01:18 GMT"), true),
            ("asctime", expires("Thu Aug 18 02:01:18 2050"), true),
            (
                "weekday case",
                expires("THU, 18 Aug 2050 02:01:18 GMT"),
                true,
            ),
            ("month case", expires("Thu, 18 AUG 2050 02:01:18 GMT"), true),
            ("zone case", expires("Thu, 18 Aug 2050 02:01:18 gMT"), true),
            ("past", expires("Thu, 18 Aug 2000 02:01:18 GMT"), false),
        ],
        &["--cache-ttl", "0"],
    );
}

/// §4.3.2: If-Modified-Since against a fresh stored response without Last-Modified is
/// compared with its Date: 304 when not modified since, the full response otherwise.
#[test]
fn if_modified_since_against_date_without_last_modified() {
    let stored_date = date(-100);
    let d = stored_date.clone();
    let origin = Origin::start(move |_| {
        Reply::ok("body")
            .header("cache-control", "max-age=3600")
            .header("date", &d)
    });
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/ims"));
    let ims = |since: &str| {
        request(
            "GET",
            &proxy.url("/ims"),
            &[("if-modified-since", since)],
            None,
        )
    };
    let same = ims(&stored_date);
    assert_eq!((same.status, same.body.as_str()), (304, ""));
    let later = ims(&date(0));
    assert_eq!(later.status, 304);
    let earlier = ims(&date(-200));
    assert_eq!((earlier.status, earlier.body.as_str()), (200, "body"));
    assert_eq!(origin.hits(), 1, "all answered from the cache");
}

/// §5.2.2.3: `no-store, must-understand` on a status this cache understands is stored as
/// if no-store were absent; on a status it does not understand, must-understand forbids
/// storing, whatever else the response says.
#[test]
fn must_understand_overrides_no_store_for_understood_statuses() {
    let cc = |status, value: &str| Reply::ok("x").status(status).header("cache-control", value);
    check_reuse(
        vec![
            (
                "200",
                cc(200, "no-store, must-understand, max-age=3600"),
                true,
            ),
            (
                "302",
                cc(302, "must-understand, no-store, max-age=3600"),
                true,
            ),
            (
                "299",
                cc(299, "no-store, must-understand, max-age=3600"),
                false,
            ),
            ("422", cc(422, "must-understand, max-age=3600"), false),
            ("422 without", cc(422, "max-age=3600"), true),
            ("no-store alone", cc(200, "no-store, max-age=3600"), false),
        ],
        &[],
    );
}

/// RFC 9110 §6.2: the proxy answers with its own version, HTTP/1.1, also when the origin
/// answered HTTP/1.0 (on a miss and on a hit).
#[test]
fn http10_origin_is_answered_as_http11() {
    let origin = Origin::start(|_| {
        Reply::ok("old")
            .http10()
            .header("cache-control", "max-age=3600")
    });
    let proxy = builder(&origin.url()).start();
    let addr = format!("127.0.0.1:{}", proxy.port).parse().unwrap();
    for expected in ["MISS", "HIT"] {
        let out = support::raw(
            addr,
            b"GET /v HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 200"), "{expected}: {out}");
        let x_cache = format!("x-cache: {}", expected.to_ascii_lowercase());
        assert!(out.to_ascii_lowercase().contains(&x_cache), "{out}");
        assert!(out.ends_with("old"), "{out}");
    }
}

/// An origin whose first answer for each path is `first`, and whose later answers come
/// from `then(path)`.
fn first_then(first: Reply, then: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Origin {
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    Origin::start(move |r| {
        if seen.lock().unwrap().insert(r.path().to_owned()) {
            first.clone()
        } else {
            then(r.path())
        }
    })
}

/// A response already stale on arrival (Age beyond max-age), with these directives.
fn stale_on_arrival(cache_control: &str) -> Reply {
    Reply::ok("good")
        .header("cache-control", cache_control)
        .header("date", &date(0))
        .header("age", "100")
}

/// §4.2.4: a cache disconnected from the origin (connection refused, reset, closed
/// without a response, timed out) serves its stale response, within the default
/// `cache.stale_if_error` window (no stale-if-error from the origin).
#[test]
fn stale_served_when_the_origin_is_unreachable() {
    use support::Failure;
    let origin = first_then(stale_on_arrival("max-age=10"), |path| match path {
        "/reset" => Reply::fail(Failure::Reset),
        "/close" => Reply::fail(Failure::Close),
        _ => Reply::ok("late").delay(Duration::from_secs(10)),
    });
    let proxy = builder(&origin.url()).args(&["--timeout", "1s"]).start();
    for path in ["/reset", "/close", "/timeout", "/refused"] {
        assert_eq!(get(&proxy.url(path)).x_cache(), "MISS", "{path}");
    }
    for path in ["/reset", "/close", "/timeout"] {
        let r = get(&proxy.url(path));
        assert_eq!(
            (r.status, r.body.as_str(), r.x_cache()),
            (200, "good", "STALE"),
            "{path}"
        );
    }
    origin.stop();
    let r = get(&proxy.url("/refused"));
    assert_eq!(
        (r.status, r.body.as_str(), r.x_cache()),
        (200, "good", "STALE"),
        "refused"
    );
}

/// §4.2.4: must-revalidate, proxy-revalidate, no-cache and s-maxage forbid serving stale:
/// a disconnected cache answers with the error. With `cache.stale_if_error` 0, nothing
/// is served stale without the origin's stale-if-error.
#[test]
fn stale_never_served_when_forbidden_or_configured_off() {
    use support::Failure;
    let forbidding = [
        "max-age=10, must-revalidate",
        "max-age=10, proxy-revalidate",
        "no-cache",
        "s-maxage=10",
    ];
    for (cc, args) in forbidding
        .iter()
        .map(|cc| (*cc, &[][..]))
        .chain([("max-age=10", &["--cache-stale-if-error", "0"][..])])
    {
        let origin = first_then(stale_on_arrival(cc), |_| Reply::fail(Failure::Reset));
        let proxy = builder(&origin.url()).args(args).start();
        get(&proxy.url("/f"));
        let r = get(&proxy.url("/f"));
        assert!(r.status >= 500, "{cc} {args:?}: {r:?}");
        assert_ne!(r.x_cache(), "STALE", "{cc} {args:?}");
    }
}

/// §4.1: selecting header values are normalised: whitespace around list members does not
/// count; for Accept-Language neither do order and case, and a stored response whose
/// Content-Language is the request's most preferred language (by q-value) is selected.
#[test]
fn vary_normalises_values_and_selects_by_language() {
    let origin = Origin::start(|r| {
        let reply =
            Reply::ok(format!("{} {}", r.path(), r.target)).header("cache-control", "max-age=3600");
        match r.path() {
            "/foo" => reply.header("vary", "Foo"),
            "/lang" => reply.header("vary", "Accept-Language"),
            _ => reply
                .header("vary", "Accept-Language")
                .header("content-language", "fr"),
        }
    });
    let proxy = builder(&origin.url()).start();
    let send = |path: &str, name: &str, value: &str| {
        request("GET", &proxy.url(path), &[(name, value)], None)
            .x_cache()
            .to_owned()
    };
    assert_eq!(send("/foo", "foo", "1,2"), "MISS");
    assert_eq!(send("/foo", "foo", " 1, 2 "), "HIT");
    assert_eq!(send("/foo", "foo", "2,1"), "MISS");

    assert_eq!(send("/lang", "accept-language", "en, de"), "MISS");
    for same in ["de, en", "eN, De", " en ,   de", "de;q=1.0, en"] {
        assert_eq!(send("/lang", "accept-language", same), "HIT", "{same}");
    }
    assert_eq!(send("/lang", "accept-language", "en, fr"), "MISS");

    // Stored in French for "de, fr": French is one of its top choices, and the top choice
    // of the next request.
    assert_eq!(send("/select", "accept-language", "de, fr"), "MISS");
    assert_eq!(
        send("/select", "accept-language", "en;q=0.5, fr;q=1.0"),
        "HIT"
    );
    assert_eq!(send("/select", "accept-language", "de"), "MISS");
}

/// RFC 9111 §4, RFC 9110 §9.3.3: a POST response whose Content-Location is its own URL
/// and that has explicit freshness is reused for a later GET of that URL; without either,
/// the GET goes to the origin.
#[test]
fn post_response_with_content_location_is_reused_for_get() {
    let origin = Origin::start(|r| {
        let reply = Reply::ok(format!("{} {}", r.method, r.target));
        match (r.method.as_str(), r.path()) {
            ("POST", "/form") => reply
                .header("content-location", &r.target)
                .header("expires", &date(30 * 86_400))
                .header("date", &date(0)),
            ("POST", "/no-freshness") => reply.header("content-location", &r.target),
            ("POST", "/elsewhere") => reply
                .header("content-location", "/other")
                .header("cache-control", "max-age=3600"),
            _ => reply.header("cache-control", "max-age=3600"),
        }
    });
    let proxy = builder(&origin.url()).start();
    for path in ["/form?id=1", "/no-freshness", "/elsewhere"] {
        let post = request("POST", &proxy.url(path), &[], Some("12345"));
        assert_eq!((post.status, post.x_cache()), (200, "BYPASS"), "{path}");
    }
    let got = get(&proxy.url("/form?id=1"));
    assert_eq!(
        (got.x_cache(), got.body.as_str()),
        ("HIT", "POST /form?id=1")
    );
    for path in ["/no-freshness", "/elsewhere"] {
        let got = get(&proxy.url(path));
        let expected = format!("GET {path}");
        assert_eq!(
            (got.x_cache(), got.body.as_str()),
            ("MISS", expected.as_str()),
            "{path}"
        );
    }
}
