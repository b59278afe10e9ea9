//! Entry points of the fuzz targets: each takes arbitrary bytes, feeds them to one of the
//! proxy's parsers of outside bytes, and checks what must hold whatever the bytes (no
//! panic, bounded results, round trips). The targets in `fuzz_targets/` call them, and
//! `tests/fuzz_corpus.rs` replays the committed corpus through them on stable Rust.
//!
//! Header-shaped inputs are lines (`\n`): the first byte of a line picks the field name from
//! a short list, the rest is the value (lines that are not valid field values are skipped).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use caching_proxy::cache::directives::{ResponseDirectives, TargetList};
use caching_proxy::cache::freshness::{self, FreshnessRules, DELTA_SECONDS_MAX};
use caching_proxy::cache::storage::entry;
use caching_proxy::cache::{conditional, key, vary, CachePolicy, RequestDirectives};
use caching_proxy::config::units;
use caching_proxy::lifecycle::handover;
use http::{HeaderName, HeaderValue};
use pingora_cache::key::CacheHashKey;
use pingora_cache::{CacheMeta, RespCacheable};
use pingora_http::{RequestHeader, ResponseHeader};

/// A fixed "now" (2025-01-01), so that a corpus input always does the same thing.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_735_689_600)
}

/// Field lines of `data`, the name of each picked from `names` by its first byte.
fn fields<'a>(
    data: &'a [u8],
    names: &'a [&'static str],
) -> impl Iterator<Item = (&'static str, HeaderValue)> + 'a {
    data.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(move |line| {
            let name = names[usize::from(line[0]) % names.len()];
            HeaderValue::from_bytes(&line[1..]).ok().map(|v| (name, v))
        })
}

const RESPONSE_FIELDS: &[&str] = &[
    "cache-control",
    "cdn-cache-control",
    "edge-cache-control",
    "expires",
    "date",
    "age",
    "last-modified",
    "pragma",
    "vary",
    "etag",
    "content-language",
    "set-cookie",
];

const REQUEST_FIELDS: &[&str] = &[
    "cache-control",
    "pragma",
    "if-none-match",
    "if-modified-since",
    "accept-language",
    "accept-encoding",
    "origin",
    "authorization",
];

fn targets() -> TargetList {
    TargetList::new(vec![
        HeaderName::from_static("cdn-cache-control"),
        HeaderName::from_static("edge-cache-control"),
    ])
}

fn policy(default_ttl: Duration) -> CachePolicy {
    CachePolicy {
        freshness: FreshnessRules {
            default_ttl,
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_secs(86_400),
        },
        stale_if_error: Duration::from_secs(86_400),
        ignore_client_no_cache: false,
        targets: targets(),
    }
}

/// A response with the status picked by `pick` and the fields of `data`.
fn response(pick: u8, data: &[u8]) -> ResponseHeader {
    const STATUSES: [u16; 8] = [200, 203, 204, 206, 301, 304, 404, 500];
    let mut resp = ResponseHeader::build(STATUSES[usize::from(pick) % 8], None).unwrap();
    for (name, value) in fields(data, RESPONSE_FIELDS) {
        resp.append_header(name, value).unwrap();
    }
    resp
}

/// Response freshness: Cache-Control, the targeted CDN-Cache-Control, Expires, Date, Age and
/// Last-Modified, through the directives, the freshness rules and the whole store decision.
pub fn response_directives(data: &[u8]) {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let resp = response(pick, data);
    let directives = ResponseDirectives::read(&resp.headers, &targets());
    for name in ["max-age", "s-maxage", "stale-while-revalidate", "no-store"] {
        let _ = directives.delta(name);
    }
    let rules = policy(Duration::from_secs(300)).freshness;
    if let Some((lifetime, _)) =
        freshness::lifetime(&resp.headers, &directives, resp.status, now(), &rules)
    {
        let max = Duration::from_secs(DELTA_SECONDS_MAX.into()).max(rules.default_ttl);
        assert!(lifetime <= max, "lifetime {lifetime:?}");
    }
    let age = freshness::initial_age(&resp.headers, now());
    assert!(age.as_secs() <= u64::from(DELTA_SECONDS_MAX).max(1_735_689_600));
    let req = RequestHeader::build("GET", b"/", None).unwrap();
    for ttl in [Duration::ZERO, Duration::from_secs(300)] {
        if let RespCacheable::Cacheable(meta) = policy(ttl).response_cacheable(&req, &resp, None) {
            let _ = (meta.is_fresh(now()), meta.serve_stale_if_error(now()));
            assert!(!vary::varies_on_everything(meta.response_header()));
        }
    }
}

/// Request directives (Cache-Control, Pragma) applied to a stored response, and conditional
/// requests (If-None-Match, If-Modified-Since) answered from it. The input's first line is
/// the stored response's fields, the rest the request's.
pub fn request_directives(data: &[u8]) {
    let (stored, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    for (name, value) in fields(rest, REQUEST_FIELDS) {
        req.append_header(name, value).unwrap();
    }
    let resp = response(0, stored);
    for ignore in [false, true] {
        let d = RequestDirectives::from_request(&req, ignore);
        let created = now() - Duration::from_secs(100);
        let meta = CacheMeta::new(now(), created, 60, 60, resp.clone());
        let _ = d.on_hit(&meta, &targets(), now());
    }
    let _ = conditional::not_modified(&req, &resp);
}

/// Vary matching: the variance of a request against a stored response's Vary is a pure
/// function of the values, and whitespace around list members does not count.
pub fn vary(data: &[u8]) {
    let (stored, rest) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let resp = response(0, stored);
    let mut req = RequestHeader::build("GET", b"/", None).unwrap();
    let mut spaced = RequestHeader::build("GET", b"/", None).unwrap();
    for (name, value) in fields(rest, REQUEST_FIELDS) {
        let wider: Vec<u8> = value
            .as_bytes()
            .iter()
            .flat_map(|b| {
                if *b == b',' {
                    vec![b' ', b',', b' ']
                } else {
                    vec![*b]
                }
            })
            .collect();
        let Ok(wider) = HeaderValue::from_bytes(&wider) else {
            return;
        };
        req.append_header(name, value).unwrap();
        spaced.append_header(name, wider).unwrap();
    }
    let variance = vary::variance(&resp, &req);
    assert_eq!(variance, vary::variance(&resp, &req.clone()));
    assert_eq!(
        variance,
        vary::variance(&resp, &spaced),
        "whitespace around list members changed the variance"
    );
}

/// The cache key: a request target (origin- or absolute-form) and a Host, and absolute URLs
/// as given to the purge endpoints.
pub fn cache_key(data: &[u8]) {
    let (host, target) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    if let Ok(mut req) = RequestHeader::build("GET", target, None) {
        if let Ok(host) = HeaderValue::from_bytes(host) {
            if !host.is_empty() {
                req.insert_header("host", host).unwrap();
            }
        }
        for tls in [false, true] {
            let k = key::for_request(&req, tls);
            let primary = k.primary_key_str().expect("a text key");
            assert_eq!(primary.matches('\n').count(), 2, "{primary:?}");
            assert_eq!(k.primary_bin(), key::for_request(&req, tls).primary_bin());
        }
        let host = key::request_host(&req);
        assert!(key::same_host(host, &host.to_ascii_uppercase(), false));
    }
    if let Ok(url) = std::str::from_utf8(data) {
        if let Ok((tls, host, path_and_query)) = key::url_parts(url) {
            let k = key::for_url(url).unwrap();
            assert_eq!(
                k.primary_bin(),
                key::for_parts(tls, &host, &path_and_query).primary_bin()
            );
            let ignore = ["utm_source".to_owned(), String::new()];
            let _ = key::for_parts_ignoring(tls, &host, &path_and_query, &ignore);
        }
    }
}

/// The configuration's value parsers: durations, sizes, booleans. What parses round-trips
/// through its canonical spelling.
pub fn config_units(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(d) = units::parse_duration(text) {
        let ms = format!("{}ms", d.as_millis());
        assert_eq!(units::parse_duration(&ms), Some(d), "{text:?}");
    }
    if let Some(n) = units::parse_size(text) {
        assert_eq!(units::parse_size(&n.to_string()), Some(n), "{text:?}");
    }
    if let Some(b) = units::parse_bool(text) {
        assert_eq!(units::parse_bool(&b.to_string()), Some(b));
    }
}

/// The entry format of the Redis tier and the hand-over: whatever a value holds, decoding
/// ends in an entry or an error; an entry re-encodes to a value that decodes to the same;
/// body chunks are checked against the head before they are joined.
pub fn redis_entry(data: &[u8]) {
    let Ok(head) = entry::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    if head.chunks == 0 {
        let again = entry::decode(entry::encode_whole(&head.meta, &head.inline)).unwrap();
        let (a, b) = (&head.meta, &again.meta);
        assert_eq!(a.fresh_until(), b.fresh_until());
        assert_eq!(a.created(), b.created());
        assert_eq!(a.epoch(), b.epoch());
        assert_eq!(a.variance(), b.variance());
        assert_eq!(a.response_header().status, b.response_header().status);
        assert_eq!(a.headers(), b.headers());
        assert_eq!(head.inline, again.inline);
    } else {
        // Chunks as Redis might return them: missing, empty, or of the lengths the head
        // announces (only when that is small: this harness must not allocate at will).
        let n = head.chunks as usize;
        assert!(entry::join_chunks(&head, vec![None; n.min(4)]).is_err() || n == 0);
        if n <= 64 {
            let _ = entry::join_chunks(&head, vec![Some(Bytes::new()); n]);
            if head.body_len <= 64 * entry::CHUNK_BYTES {
                let chunks = (0..n)
                    .map(|i| {
                        let len = (head.body_len - i * entry::CHUNK_BYTES).min(entry::CHUNK_BYTES);
                        Some(Bytes::from(vec![7; len]))
                    })
                    .collect();
                let body = entry::join_chunks(&head, chunks).unwrap();
                assert_eq!(body.len(), head.body_len);
            }
        }
    }
}

/// The cache hand-over stream of an upgrade, as a receiving process reads it.
pub fn handover_stream(data: &[u8]) {
    let _ = handover::read_stream(data, 1 << 20);
}
