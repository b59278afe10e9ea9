//! Partial content (RFC 9111 §3.3, §3.4, §4; RFC 9110 §14), continued from `rules.rs` and
//! `rules_part2.rs` (same harness: every rule runs on the memory backend and on the Redis
//! tier). The origin honours `Range` (`Reply::ranged`); the representation is 300 bytes in
//! which bytes `3i..3i+3` spell `i`, so every slice is checked byte for byte.

use super::{builder, support};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::{get, request, Origin, Proxy, Recorded, Reply, Response};

/// The representation: `000001002...099`.
fn body() -> String {
    (0..100).map(|i| format!("{i:03}")).collect()
}

/// An origin serving [`body`] with `fields`, honouring ranges.
fn ranged_origin(fields: &'static [(&'static str, &'static str)]) -> Origin {
    let full = body();
    Origin::start(move |r| Reply::ranged(full.as_bytes(), r, fields))
}

const STRONG: &[(&str, &str)] = &[("etag", "\"v1\""), ("cache-control", "max-age=60")];

fn ranged(proxy: &Proxy, path: &str, spec: &str) -> Response {
    request("GET", &proxy.url(path), &[("range", spec)], None)
}

/// Asserts a 206 of `body()[start..end]`, with the right framing, and its `X-Cache`.
fn assert_part(r: &Response, start: usize, end: usize, x_cache: &str) {
    assert_eq!(r.status, 206, "{r:?}");
    assert_eq!(r.body, body()[start..end], "{r:?}");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {start}-{}/300", end - 1).as_str()),
        "{r:?}"
    );
    assert_eq!(
        r.header("content-length"),
        Some((end - start).to_string().as_str())
    );
    assert_eq!(r.x_cache(), x_cache, "{r:?}");
}

/// The `Range` and `If-Range` of each request the origin received.
fn origin_ranges(origin: &Origin) -> Vec<(Option<String>, Option<String>)> {
    let field = |r: &Recorded, name| r.header(name).map(str::to_owned);
    origin
        .requests()
        .iter()
        .map(|r| (field(r, "range"), field(r, "if-range")))
        .collect()
}

/// Waits until the memory backend holds `n` entries (a superseded partial entry is removed
/// once its request is over). With the Redis tier alone there is no memory tier to count.
fn wait_for_entries(proxy: &Proxy, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = proxy.stats();
        if stats["tiers"].get("l2").is_some() || stats["entries"].as_u64() == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "never {n} entries: {stats}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn range_only(spec: &str) -> (Option<String>, Option<String>) {
    (Some(spec.to_owned()), None)
}

/// §3.3, §4: a 206 is stored as a partial entry, and a range inside it is answered from it
/// without asking the origin.
#[test]
fn a_206_is_stored_and_answers_ranges_inside_it() {
    let origin = ranged_origin(STRONG);
    let proxy = builder(&origin.url()).start();
    assert_part(&ranged(&proxy, "/v", "bytes=0-149"), 0, 150, "MISS");
    assert_part(&ranged(&proxy, "/v", "bytes=10-19"), 10, 20, "HIT");
    assert_part(&ranged(&proxy, "/v", "bytes=0-149"), 0, 150, "HIT");
    assert_part(&ranged(&proxy, "/v", "bytes=140-149"), 140, 150, "HIT");
    assert_eq!(origin_ranges(&origin), vec![range_only("bytes=0-149")]);
}

/// RFC 9110 §14.1.1: open-ended (`N-`) and suffix (`-N`) ranges inside the stored part are
/// answered from it.
#[test]
fn open_ended_and_suffix_ranges_inside_the_stored_part_are_hits() {
    let origin = ranged_origin(STRONG);
    let proxy = builder(&origin.url()).start();
    assert_part(&ranged(&proxy, "/v", "bytes=100-"), 100, 300, "MISS");
    assert_part(&ranged(&proxy, "/v", "bytes=150-"), 150, 300, "HIT");
    assert_part(&ranged(&proxy, "/v", "bytes=-50"), 250, 300, "HIT");
    assert_part(&ranged(&proxy, "/v", "bytes=120-129"), 120, 130, "HIT");
    assert_eq!(origin.hits(), 1);
}

/// §3.4: a range beyond the stored part fetches only the missing rest (`bytes=N-`, with
/// `If-Range` carrying the stored validator); the client gets exactly its range, and the
/// entry, now complete, is the full response: a later GET is a hit, byte for byte.
#[test]
fn a_range_beyond_the_stored_part_fetches_only_the_rest_and_completes_the_entry() {
    let origin = ranged_origin(STRONG);
    let proxy = builder(&origin.url()).start();
    assert_part(&ranged(&proxy, "/v", "bytes=0-99"), 0, 100, "MISS");
    assert_part(&ranged(&proxy, "/v", "bytes=50-199"), 50, 200, "MISS");
    assert_eq!(
        origin_ranges(&origin),
        vec![
            range_only("bytes=0-99"),
            (Some("bytes=100-".into()), Some("\"v1\"".into()))
        ]
    );
    let full = get(&proxy.url("/v"));
    assert_eq!((full.status, full.x_cache()), (200, "HIT"));
    assert_eq!(full.body, body());
    assert_eq!(full.header("content-length"), Some("300"));
    assert_part(&ranged(&proxy, "/v", "bytes=-10"), 290, 300, "HIT");
    assert_eq!(origin.hits(), 2);
    // The partial entry went when the full one took its place.
    wait_for_entries(&proxy, 1);
}

/// §3.4: parts combined into an interval that still misses its beginning stay a partial
/// entry, which then answers ranges inside the whole interval.
#[test]
fn combined_parts_stay_partial_until_complete() {
    let origin = ranged_origin(STRONG);
    let proxy = builder(&origin.url()).start();
    assert_part(&ranged(&proxy, "/v", "bytes=100-199"), 100, 200, "MISS");
    assert_part(&ranged(&proxy, "/v", "bytes=150-249"), 150, 250, "MISS");
    assert_eq!(
        origin_ranges(&origin)[1],
        (Some("bytes=200-".into()), Some("\"v1\"".into()))
    );
    assert_part(&ranged(&proxy, "/v", "bytes=-50"), 250, 300, "HIT");
    assert_part(&ranged(&proxy, "/v", "bytes=100-"), 100, 300, "HIT");
    assert_eq!(origin.hits(), 2);
    // Bytes before the stored interval: fetched from there on, which completes it.
    assert_part(&ranged(&proxy, "/v", "bytes=0-9"), 0, 10, "MISS");
    assert_eq!(
        origin_ranges(&origin)[2],
        (Some("bytes=0-".into()), Some("\"v1\"".into()))
    );
    let full = get(&proxy.url("/v"));
    assert_eq!(
        (full.x_cache(), full.body.as_str()),
        ("HIT", body().as_str())
    );
    assert_eq!(origin.hits(), 3);
}

/// A 206 that encloses the whole representation (`bytes=0-`, as video players ask first) is
/// the full response: stored as such.
#[test]
fn a_206_of_the_whole_representation_is_stored_as_the_full_response() {
    let origin = ranged_origin(STRONG);
    let proxy = builder(&origin.url()).start();
    assert_part(&ranged(&proxy, "/v", "bytes=0-"), 0, 300, "MISS");
    let full = get(&proxy.url("/v"));
    assert_eq!((full.status, full.x_cache()), (200, "HIT"));
    assert_eq!(full.body, body());
    assert_eq!(origin.hits(), 1);
}

/// RFC 9110 §13.1.5: when the representation changed, the origin answers the `If-Range`
/// fetch with the whole new one (200), which replaces the partial entry; no byte of the old
/// one reaches a client again.
#[test]
fn a_changed_representation_replaces_the_partial_entry() {
    let changed = Arc::new(AtomicBool::new(false));
    let flag = changed.clone();
    let new_body: String = body().chars().rev().chain("extra".chars()).collect();
    let expected = new_body.clone();
    let origin = Origin::start(move |r| {
        if flag.load(Ordering::SeqCst) {
            let fields = [("etag", "\"v2\""), ("cache-control", "max-age=60")];
            Reply::ranged(new_body.as_bytes(), r, &fields)
        } else {
            Reply::ranged(body().as_bytes(), r, STRONG)
        }
    });
    let proxy = builder(&origin.url()).start();
    assert_part(&ranged(&proxy, "/v", "bytes=0-99"), 0, 100, "MISS");
    changed.store(true, Ordering::SeqCst);
    let r = ranged(&proxy, "/v", "bytes=50-199");
    assert_eq!(origin.requests()[1].header("if-range"), Some("\"v1\""));
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 50-199/305"));
    assert_eq!(r.body, expected[50..200]);
    let head = ranged(&proxy, "/v", "bytes=0-9");
    assert_eq!(
        (head.x_cache(), head.body.as_str()),
        ("HIT", &expected[..10])
    );
    assert_eq!(head.header("etag"), Some("\"v2\""));
    assert_eq!(origin.hits(), 2);
    wait_for_entries(&proxy, 1);
}

/// §3.4: a 206 of another representation (an origin that ignores `If-Range`) is not
/// combined with the stored part: the client gets the new representation's bytes of its
/// range only (a 206 for the part of its range that arrived).
#[test]
fn parts_of_different_representations_are_never_combined() {
    let changed = Arc::new(AtomicBool::new(false));
    let flag = changed.clone();
    let new_body = body().to_uppercase().replace('0', "o");
    let expected = new_body.clone();
    let origin = Origin::start(move |r| {
        let mut r = r.clone();
        r.headers.remove("if-range");
        if flag.load(Ordering::SeqCst) {
            let fields = [("etag", "\"v2\""), ("cache-control", "max-age=60")];
            Reply::ranged(new_body.as_bytes(), &r, &fields)
        } else {
            Reply::ranged(body().as_bytes(), &r, STRONG)
        }
    });
    let proxy = builder(&origin.url()).start();
    assert_part(&ranged(&proxy, "/v", "bytes=0-99"), 0, 100, "MISS");
    changed.store(true, Ordering::SeqCst);
    let r = ranged(&proxy, "/v", "bytes=50-199");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/300"));
    assert_eq!(
        r.body,
        expected[100..200],
        "only the new representation's bytes"
    );
    // The old part is gone: its bytes are asked for again.
    let old = ranged(&proxy, "/v", "bytes=0-9");
    assert_eq!((old.status, old.body.as_str()), (206, &expected[..10]));
    assert_eq!(old.x_cache(), "MISS");
}

/// RFC 9110 §13.1.5, §8.8.1: with a weak `ETag` there is no strong validator, so parts are
/// neither stored nor combined: each range goes to the origin as the client sent it.
#[test]
fn a_weak_etag_never_combines() {
    let origin = ranged_origin(&[("etag", "W/\"w\""), ("cache-control", "max-age=60")]);
    let proxy = builder(&origin.url()).start();
    assert_part(&ranged(&proxy, "/v", "bytes=0-99"), 0, 100, "MISS");
    assert_part(&ranged(&proxy, "/v", "bytes=10-19"), 10, 20, "MISS");
    assert_part(&ranged(&proxy, "/v", "bytes=50-199"), 50, 200, "MISS");
    assert_eq!(
        origin_ranges(&origin),
        vec![
            range_only("bytes=0-99"),
            range_only("bytes=10-19"),
            range_only("bytes=50-199")
        ]
    );
}

/// A strong `Last-Modified` (a second or more before `Date`) is a validator too: parts are
/// combined with `If-Range: <date>`.
#[test]
fn a_strong_last_modified_combines() {
    let origin = Origin::start(|r| {
        let fields = [
            ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("cache-control", "max-age=60"),
        ];
        Reply::ranged(body().as_bytes(), r, &fields)
    });
    let proxy = builder(&origin.url()).start();
    assert_part(&ranged(&proxy, "/v", "bytes=0-99"), 0, 100, "MISS");
    assert_part(&ranged(&proxy, "/v", "bytes=20-29"), 20, 30, "HIT");
    assert_part(&ranged(&proxy, "/v", "bytes=250-"), 250, 300, "MISS");
    assert_eq!(
        origin_ranges(&origin)[1],
        (
            Some("bytes=100-".into()),
            Some("Mon, 01 Jan 2024 00:00:00 GMT".into())
        )
    );
    assert_eq!(get(&proxy.url("/v")).x_cache(), "HIT");
}

/// A partial entry is used only while fresh, like any stored response: a stale one is
/// brought up to date with the `If-Range` fetch.
#[test]
fn a_stale_partial_entry_is_not_served() {
    let origin = ranged_origin(&[("etag", "\"v1\""), ("cache-control", "max-age=0")]);
    let proxy = builder(&origin.url()).start();
    assert_part(&ranged(&proxy, "/v", "bytes=0-99"), 0, 100, "MISS");
    assert_part(&ranged(&proxy, "/v", "bytes=10-19"), 10, 20, "MISS");
    assert_eq!(
        origin_ranges(&origin)[1],
        (Some("bytes=100-".into()), Some("\"v1\"".into()))
    );
}

/// Partial entries live in the same bounded storage as full ones: filling the cache with
/// them beyond `--cache-max-bytes` evicts, and the bytes stay within the bound.
#[test]
fn partial_entries_count_against_the_byte_bound() {
    let big: String = (0..8000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let origin = Origin::start(move |r| Reply::ranged(big.as_bytes(), r, STRONG));
    let max_bytes = 65_536;
    let proxy = builder(&origin.url())
        .args(&[
            "--cache-max-bytes",
            "64KiB",
            "--cache-max-object-size",
            "8KiB",
        ])
        .start();
    let urls = 40;
    for i in 0..urls {
        let r = ranged(&proxy, &format!("/p{i}"), "bytes=0-3999");
        assert_eq!((r.status, r.body.len()), (206, 4000));
    }
    // The last one is a stored partial entry.
    let again = ranged(&proxy, &format!("/p{}", urls - 1), "bytes=0-9");
    assert_eq!(again.x_cache(), "HIT");
    let stats = proxy.stats();
    match stats["tiers"].get("l2") {
        // Only Redis holds them (no memory tier): they were written there.
        Some(l2) => assert!(l2["writes"].as_u64().unwrap() >= urls, "{stats}"),
        None => {
            let bytes = stats["bytes"].as_u64().unwrap();
            assert!(bytes > 4000 && bytes <= max_bytes, "{stats}");
            assert_eq!(stats["max_bytes"].as_u64(), Some(max_bytes), "{stats}");
            assert!(stats["evictions"].as_u64().unwrap() > 0, "{stats}");
        }
    }
}

/// A complete length beyond `cache.max_object_size` is never stored as a part (it could
/// never be completed within the bound): ranges of it go to the origin each time.
#[test]
fn parts_of_objects_too_large_to_cache_are_not_stored() {
    let origin = ranged_origin(STRONG);
    let proxy = builder(&origin.url())
        .args(&["--cache-max-object-size", "200"])
        .start();
    assert_part(&ranged(&proxy, "/v", "bytes=0-99"), 0, 100, "MISS");
    assert_part(&ranged(&proxy, "/v", "bytes=0-9"), 0, 10, "MISS");
    assert_eq!(
        origin_ranges(&origin),
        vec![range_only("bytes=0-99"), range_only("bytes=0-9")]
    );
}

/// Several ranges on a miss keep the full-response path: the whole representation is
/// fetched and stored, and answers them.
#[test]
fn several_ranges_on_a_miss_fetch_the_full_response() {
    let origin = ranged_origin(STRONG);
    let proxy = builder(&origin.url()).start();
    let r = ranged(&proxy, "/v", "bytes=0-1,8-9");
    assert_eq!(r.status, 206);
    assert!(
        r.body.contains("Content-Range: bytes 0-1/300"),
        "{}",
        r.body
    );
    assert_eq!(origin_ranges(&origin), vec![(None, None)]);
    assert_eq!(get(&proxy.url("/v")).x_cache(), "HIT");
}

/// A stored full response answers any range, before any partial entry is looked at.
#[test]
fn a_full_entry_answers_ranges_without_the_origin() {
    let origin = ranged_origin(STRONG);
    let proxy = builder(&origin.url()).start();
    get(&proxy.url("/v"));
    assert_part(&ranged(&proxy, "/v", "bytes=-7"), 293, 300, "HIT");
    assert_part(&ranged(&proxy, "/v", "bytes=30-"), 30, 300, "HIT");
    assert_eq!(origin_ranges(&origin), vec![(None, None)]);
}

/// §4.1: a partial entry of a response with `Vary` serves only requests that select it.
#[test]
fn a_partial_entry_serves_only_its_own_variant() {
    let origin = ranged_origin(&[
        ("etag", "\"v1\""),
        ("cache-control", "max-age=60"),
        ("vary", "X-Variant"),
    ]);
    let proxy = builder(&origin.url()).start();
    let variant = |v: &str, spec: &str| {
        request(
            "GET",
            &proxy.url("/v"),
            &[("range", spec), ("x-variant", v)],
            None,
        )
    };
    assert_part(&variant("a", "bytes=0-99"), 0, 100, "MISS");
    assert_part(&variant("a", "bytes=10-19"), 10, 20, "HIT");
    assert_part(&variant("b", "bytes=10-19"), 10, 20, "MISS");
    assert_eq!(origin_ranges(&origin)[1], range_only("bytes=10-19"));
    assert_eq!(origin.hits(), 2);
}

/// Purging a URL, or an unsafe method's invalidation of it (§4.4), removes its partial
/// entry with its full one.
#[test]
fn purge_and_invalidation_remove_the_partial_entry() {
    let origin = ranged_origin(STRONG);
    let proxy = builder(&origin.url()).arg("--enable-purge").start();
    assert_part(&ranged(&proxy, "/v", "bytes=0-99"), 0, 100, "MISS");
    let purged = request("PURGE", &proxy.url("/v"), &[], None);
    assert_eq!(purged.json()["purged"], true, "{purged:?}");
    assert_part(&ranged(&proxy, "/v", "bytes=0-9"), 0, 10, "MISS");
    assert_eq!(
        request("POST", &proxy.url("/v"), &[], Some("x")).status,
        200
    );
    assert_part(&ranged(&proxy, "/v", "bytes=0-9"), 0, 10, "MISS");
    assert_eq!(origin.hits(), 4);
}

/// A 416 answers the client's range, not the URL: it is not stored as the URL's response
/// even with explicit freshness.
#[test]
fn an_unsatisfiable_range_answer_is_not_stored() {
    let origin = ranged_origin(STRONG);
    let proxy = builder(&origin.url()).start();
    let r = ranged(&proxy, "/v", "bytes=500-");
    assert_eq!(
        (r.status, r.header("content-range")),
        (416, Some("bytes */300"))
    );
    let full = get(&proxy.url("/v"));
    assert_eq!((full.status, full.x_cache()), (200, "MISS"));
    assert_eq!(full.body, body());
}
