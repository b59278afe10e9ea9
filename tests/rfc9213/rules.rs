//! RFC 9213: a targeted field (`CDN-Cache-Control` by default) governs this cache instead
//! of `Cache-Control` and `Expires`, which still reach the client unchanged. Every proxy
//! runs with `--cache-ttl 0`, so that only the directives under test can make a response
//! reusable. Staleness comes from `Age` or a past `Date` sent by the origin, not from
//! waiting.

use super::{builder, support};

use std::time::{Duration, SystemTime};

use support::{get, Origin, Reply};

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

fn cdn(value: &str) -> Reply {
    Reply::ok("body").header("cdn-cache-control", value)
}

/// Serves each case on a path of its own through one origin and one proxy, and checks
/// whether the second GET of each was answered from the cache.
fn check_reuse(cases: Vec<(&'static str, Reply, bool)>, extra: &[&str]) {
    let replies: Vec<Reply> = cases.iter().map(|(_, r, _)| r.clone()).collect();
    let origin = Origin::start(move |r| {
        let i: usize = r.path().trim_start_matches("/c").parse().unwrap();
        replies[i].clone()
    });
    let proxy = builder(&origin.url())
        .args(&["--cache-ttl", "0"])
        .args(extra)
        .start();
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

/// §2.2, §3: CDN-Cache-Control's max-age governs, at any size (capped, not rejected), with
/// extension directives, and Age counts against it.
#[test]
fn cdn_max_age_governs_freshness() {
    check_reuse(
        vec![
            ("max-age=3600", cdn("max-age=3600"), true),
            ("max-age=2147483648", cdn("max-age=2147483648"), true),
            ("max-age=99999999999", cdn("max-age=99999999999"), true),
            ("extension first", cdn("foobar, max-age=3600"), true),
            ("max-age=0", cdn("max-age=0"), false),
            (
                "Age beyond max-age",
                cdn("max-age=3600")
                    .header("date", &date(0))
                    .header("age", "7200"),
                false,
            ),
        ],
        &[],
    );
}

/// §2.2: Cache-Control and Expires are ignored when a targeted field governs, in both
/// directions.
#[test]
fn cdn_cache_control_wins_over_cache_control_and_expires() {
    check_reuse(
        vec![
            (
                "long CDN max-age, short Cache-Control max-age",
                cdn("max-age=3600").header("cache-control", "max-age=0"),
                true,
            ),
            (
                "short CDN max-age, long Cache-Control max-age",
                cdn("max-age=2")
                    .header("cache-control", "max-age=3600")
                    .header("date", &date(-10)),
                false,
            ),
            (
                "CDN max-age=0, future Expires",
                cdn("max-age=0")
                    .header("expires", &date(10_000))
                    .header("date", &date(0)),
                false,
            ),
            (
                "CDN max-age, past Expires",
                cdn("max-age=3600")
                    .header("expires", &date(-10_000))
                    .header("date", &date(0)),
                true,
            ),
            (
                "CDN max-age, invalid Expires",
                cdn("max-age=3600")
                    .header("expires", "0")
                    .header("date", &date(0)),
                true,
            ),
            (
                "CDN max-age, Cache-Control no-store",
                cdn("max-age=10000").header("cache-control", "no-store"),
                true,
            ),
            (
                "CDN s-maxage, Cache-Control max-age=0",
                cdn("s-maxage=3600").header("cache-control", "max-age=0"),
                true,
            ),
        ],
        &[],
    );
}

/// §2.2: no-store, no-cache and private in the targeted field apply even with a fresh
/// Cache-Control and Expires.
#[test]
fn cdn_no_store_no_cache_and_private_apply() {
    let fresh = |value: &str| {
        cdn(value)
            .header("cache-control", "max-age=10000")
            .header("expires", &date(10_000))
            .header("date", &date(0))
    };
    check_reuse(
        vec![
            ("no-store", fresh("no-store"), false),
            ("no-cache", fresh("no-cache"), false),
            ("private", fresh("private"), false),
            ("control: max-age only", fresh("max-age=10000"), true),
        ],
        &[],
    );
}

/// §2.1, RFC 8941: a targeted field that is not a valid Dictionary, or whose directive has
/// the wrong type, is ignored as a whole and Cache-Control applies.
#[test]
fn invalid_targeted_field_is_ignored() {
    let with_cc = |value: &str, cc: &str| cdn(value).header("cache-control", cc);
    check_reuse(
        vec![
            (
                "unknown type",
                with_cc("max-age=10000, &&&&&", "no-store"),
                false,
            ),
            (
                "wrong type",
                with_cc("max-age=\"10000\"", "no-store"),
                false,
            ),
            (
                "space before =",
                with_cc("max-age =100", "max-age=0"),
                false,
            ),
            (
                "invalid, Cache-Control fresh",
                with_cc("max-age=\"0\"", "max-age=3600"),
                true,
            ),
        ],
        &[],
    );
}

/// §3: Cache-Control and CDN-Cache-Control reach the client as the origin sent them, on
/// a miss and on a hit.
#[test]
fn fields_reach_the_client_unchanged() {
    let origin = Origin::start(|_| cdn("max-age=3600").header("cache-control", "no-store"));
    let proxy = builder(&origin.url()).args(&["--cache-ttl", "0"]).start();
    for expected in ["MISS", "HIT"] {
        let r = get(&proxy.url("/f"));
        assert_eq!(r.x_cache(), expected);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("cdn-cache-control"), Some("max-age=3600"));
    }
}

/// `cache.targeted_cache_control`: the operator's own field comes first and is removed
/// before responding (it is meant for this edge alone); CDN-Cache-Control still applies
/// when the first field is absent or invalid, and is passed on.
#[test]
fn configured_targeted_fields_first_match_wins() {
    let origin = Origin::start(|r| match r.path() {
        "/own" => cdn("no-store").header("edge-cache-control", "max-age=3600"),
        "/invalid" => cdn("max-age=3600").header("edge-cache-control", "max-age=\"x\""),
        _ => cdn("max-age=3600").header("edge-cache-control", "no-store"),
    });
    let proxy = builder(&origin.url())
        .args(&[
            "--cache-ttl",
            "0",
            "--targeted-cache-control",
            "Edge-Cache-Control, CDN-Cache-Control",
        ])
        .start();
    for (path, reused) in [("/own", true), ("/invalid", true), ("/store", false)] {
        let first = get(&proxy.url(path));
        let second = get(&proxy.url(path));
        assert_eq!(origin.hits_for(path) == 1, reused, "{path}");
        for r in [first, second] {
            assert_eq!(r.header("edge-cache-control"), None, "{path}: stripped");
            assert!(r.header("cdn-cache-control").is_some(), "{path}: passed on");
        }
    }
}

/// `cache.targeted_cache_control` empty: no targeted field, Cache-Control alone.
#[test]
fn targeted_fields_can_be_turned_off() {
    check_reuse(
        vec![(
            "CDN max-age, Cache-Control no-store",
            cdn("max-age=3600").header("cache-control", "no-store"),
            false,
        )],
        &["--targeted-cache-control", ""],
    );
}

/// §2.2: stale-while-revalidate and stale-if-error come from the targeted field, and
/// must-revalidate there forbids serving stale; the same directives in Cache-Control are
/// ignored.
#[test]
fn cdn_stale_directives_apply() {
    let stale = |value: &str, cc: &str| {
        cdn(value)
            .header("cache-control", cc)
            .header("date", &date(0))
            .header("age", "100")
    };
    let origin = Origin::start(move |r| match r.path() {
        "/swr" => stale("max-age=10, stale-while-revalidate=600", "max-age=10"),
        "/cc-swr" => stale("max-age=10", "max-age=10, stale-while-revalidate=600"),
        "/sie" => stale("max-age=10, stale-if-error=600", "max-age=10"),
        "/cc-sie" => stale("max-age=10", "max-age=10, stale-if-error=600"),
        _ => stale(
            "max-age=10, must-revalidate, stale-if-error=600",
            "max-age=10, stale-if-error=600",
        ),
    });
    let proxy = builder(&origin.url())
        .args(&["--cache-ttl", "0", "--cache-stale-if-error", "0"])
        .start();
    for path in ["/swr", "/cc-swr", "/sie", "/cc-sie", "/must"] {
        assert_eq!(get(&proxy.url(path)).x_cache(), "MISS", "{path}");
    }
    assert_eq!(get(&proxy.url("/swr")).x_cache(), "STALE");
    assert_ne!(get(&proxy.url("/cc-swr")).x_cache(), "STALE");
    origin.stop();
    let sie = get(&proxy.url("/sie"));
    assert_eq!((sie.status, sie.x_cache()), (200, "STALE"));
    assert_eq!(get(&proxy.url("/cc-sie")).status, 502);
    assert_eq!(get(&proxy.url("/must")).status, 502, "must-revalidate");
}
