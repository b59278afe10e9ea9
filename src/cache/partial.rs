//! Partial entries (RFC 9111 §3.3, §3.4, §4; RFC 9110 §14): what a 206 from the origin
//! leaves in the cache, and how a later range request is answered from it.
//!
//! A URL has at most one partial entry, beside (never instead of) its full one: the same
//! backend, the same byte bound, under [`key`] (the URL's primary key with a fixed variance
//! no `Vary` hash can take, so purging or invalidating the URL removes it too). It holds one
//! contiguous interval of the representation, described by its stored `Content-Range:
//! bytes first-last/complete`, and is stored only with a strong validator (RFC 9110
//! §8.8.1: a strong `ETag`, or without an `ETag` a `Last-Modified` at least a second before
//! `Date`) and a complete length within `cache.max_object_size`. With `Vary` it is one
//! variant (the last stored), used only for requests that select it.
//!
//! A range request for a URL without a usable full entry is planned here ([`plan`]):
//! answered from the interval when it lies inside it; otherwise the origin is asked for the
//! rest of the representation from the end of the interval (`Range: bytes=N-`, with
//! `If-Range` carrying the stored validator, so that a changed representation comes back as
//! a 200 and replaces everything). Parts are combined only when the new 206 carries the same
//! validator and complete length (§3.4). An interval that reaches from 0 to the complete
//! length is no longer partial: it is stored as the URL's full response.
//!
//! This module is pure: headers in, decisions and headers out. The proxy's phases that use
//! it are in `proxy::partial`.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::StatusCode;
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_http::{RequestHeader, ResponseHeader};

/// The variance of every partial entry's key. A `Vary` variance is a hash; these 16 bytes
/// start with a zero byte and spell a name, so no hash collides with them in practice.
const PARTIAL_VARIANCE: HashBinary = *b"\0partial-content";

/// The key of the partial entry of the URL whose (full) key is `full`.
pub fn key(full: &CacheKey) -> CacheKey {
    let mut key = full.clone();
    key.set_variance_key(PARTIAL_VARIANCE);
    key
}

/// Where a storage backend writes an entry: a 206 is only ever admitted as the URL's partial
/// entry (the proxy lets Pingora store it only then), so it goes under [`key`] and never
/// takes the place of the full response.
pub fn storage_key(key: &CacheKey, meta: &CacheMeta) -> CacheKey {
    if meta.response_header().status == StatusCode::PARTIAL_CONTENT {
        self::key(key)
    } else {
        key.clone()
    }
}

/// One range of a request's `Range` (RFC 9110 §14.1.1), before the length is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last` (inclusive) or, without `last`, `first-`.
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// A `Range` value holding exactly one byte range; anything else (several ranges, other
    /// units, bad syntax) is `None` and is left to the full-response path.
    pub fn parse(value: &HeaderValue) -> Option<ByteRange> {
        let (unit, set) = value.to_str().ok()?.trim().split_once('=')?;
        if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
            return None;
        }
        let (first, last) = set.trim().split_once('-')?;
        let (first, last) = (first.trim(), last.trim());
        if first.is_empty() {
            return Some(ByteRange::Suffix(number(last)?));
        }
        let first = number(first)?;
        if last.is_empty() {
            return Some(ByteRange::From(first, None));
        }
        let last = number(last)?;
        (last >= first).then_some(ByteRange::From(first, Some(last)))
    }

    /// The bytes `[start, end)` this range selects of a representation of `len` bytes;
    /// `None` when it selects none (RFC 9110 §14.1.1: unsatisfiable).
    pub fn resolve(self, len: u64) -> Option<Span> {
        match self {
            ByteRange::From(first, _) if first >= len => None,
            ByteRange::From(first, last) => Some(Span {
                start: first,
                end: last.map_or(len, |l| l.saturating_add(1).min(len)),
            }),
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(_) if len == 0 => None,
            ByteRange::Suffix(n) => Some(Span {
                start: len - n.min(len),
                end: len,
            }),
        }
    }
}

/// Digits only (`u64::from_str` would take a sign).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Bytes `[start, end)` of a representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: u64,
}

impl Span {
    pub fn size(self) -> u64 {
        self.end - self.start
    }

    pub fn contains(self, other: Span) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// A response's `Content-Range: bytes first-last/complete` (RFC 9110 §14.4), as the span it
/// encloses and the complete length; `None` for anything else (`*` lengths, other units).
pub fn content_range(resp: &ResponseHeader) -> Option<(Span, u64)> {
    let value = resp.headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (unit, rest) = value.trim().split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, complete) = rest.trim().split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last, complete) = (number(first)?, number(last)?, number(complete)?);
    if first > last || last >= complete {
        return None;
    }
    Some((
        Span {
            start: first,
            end: last + 1,
        },
        complete,
    ))
}

/// The validator that lets parts of one representation be combined (RFC 9110 §13.1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validator {
    ETag(HeaderValue),
    LastModified(HeaderValue),
}

impl Validator {
    /// The response's strong validator: its `ETag` when strong; without an `ETag`, its
    /// `Last-Modified` when at least one second before its `Date` (RFC 9110 §8.8.2.2). A weak
    /// `ETag` means none: such parts are never combined.
    pub fn strong(resp: &ResponseHeader) -> Option<Validator> {
        if let Some(etag) = resp.headers.get(header::ETAG) {
            return is_strong_etag(etag.as_bytes()).then(|| Validator::ETag(etag.clone()));
        }
        let last_modified = resp.headers.get(header::LAST_MODIFIED)?;
        let date = |v: &HeaderValue| httpdate::parse_http_date(v.to_str().ok()?).ok();
        let modified = date(last_modified)?;
        let sent = date(resp.headers.get(header::DATE)?)?;
        (sent.duration_since(modified).ok()? >= std::time::Duration::from_secs(1))
            .then(|| Validator::LastModified(last_modified.clone()))
    }

    /// The value sent in `If-Range`.
    pub fn value(&self) -> &HeaderValue {
        match self {
            Validator::ETag(v) | Validator::LastModified(v) => v,
        }
    }

    /// Whether `resp` is of the same representation (strong comparison).
    pub fn matches(&self, resp: &ResponseHeader) -> bool {
        match self {
            Validator::ETag(v) => resp.headers.get(header::ETAG) == Some(v),
            Validator::LastModified(v) => {
                resp.headers.get(header::LAST_MODIFIED) == Some(v)
                    && !resp.headers.contains_key(header::ETAG)
            }
        }
    }

    /// Whether a request's `If-Range` value names this validator: an entity tag is compared
    /// strongly with the `ETag`, a date exactly with `Last-Modified` (RFC 9110 §13.1.5).
    pub fn matches_if_range(&self, if_range: &HeaderValue) -> bool {
        match self {
            Validator::ETag(v) => is_strong_etag(if_range.as_bytes()) && if_range == v,
            Validator::LastModified(v) => if_range == v,
        }
    }
}

fn is_strong_etag(value: &[u8]) -> bool {
    value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"'
}

/// A stored partial entry, read back.
pub struct Part {
    pub meta: CacheMeta,
    pub body: Bytes,
    /// The stored interval.
    pub span: Span,
    /// The complete length of the representation.
    pub complete: u64,
    pub validator: Validator,
}

impl Part {
    /// The entry as a part, when it is a consistent one (its `Content-Range` matches its body
    /// and it has a strong validator).
    pub fn read(meta: CacheMeta, body: Bytes) -> Option<Part> {
        let header = meta.response_header();
        if header.status != StatusCode::PARTIAL_CONTENT {
            return None;
        }
        let (span, complete) = content_range(header)?;
        let validator = Validator::strong(header)?;
        (span.size() == body.len() as u64).then_some(Part {
            span,
            complete,
            validator,
            meta,
            body,
        })
    }

    /// The stored bytes of `span`, which must lie inside the stored interval.
    pub fn slice(&self, span: Span) -> Bytes {
        let from = (span.start - self.span.start) as usize;
        self.body.slice(from..from + span.size() as usize)
    }
}

/// What to do with a range request, given the URL's partial entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Answer these bytes from the partial entry.
    Hit(Span),
    /// Ask the origin for `bytes=from-`, with `If-Range`. With `combine`, `from` is the end
    /// of the stored interval and the answer extends it; without, the answer covers the
    /// stored interval itself and takes its place.
    Fetch { from: u64, combine: bool },
    /// Send the client's own range to the origin.
    Forward,
}

/// Plans a request for `range` when the URL's partial entry is `part`, which may answer by
/// itself only when `usable` (fresh, or stale as the request allows).
pub fn plan(part: Option<&Part>, range: ByteRange, usable: bool) -> Plan {
    let Some(part) = part else {
        return Plan::Forward;
    };
    let Some(wanted) = range.resolve(part.complete) else {
        // Unsatisfiable for the stored length: the origin says what is true now.
        return Plan::Forward;
    };
    let stored = part.span;
    if usable && stored.contains(wanted) {
        return Plan::Hit(wanted);
    }
    if wanted.start >= stored.start && stored.end < part.complete {
        Plan::Fetch {
            from: stored.end,
            combine: true,
        }
    } else {
        // Wanted bytes before the stored ones, or the stored interval (reaching the end)
        // may not answer by itself: fetch from where the wanted bytes or the stored ones
        // begin, which supersedes the stored interval.
        Plan::Fetch {
            from: wanted.start.min(stored.start),
            combine: false,
        }
    }
}

/// Whether a range request may use partial entries at all: a GET with one byte range and
/// no conditional other than `If-Range` (those are answered on the full-response path).
pub fn range_of(req: &RequestHeader) -> Option<ByteRange> {
    if req.method != http::Method::GET {
        return None;
    }
    let conditional = [
        header::IF_MATCH,
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_UNMODIFIED_SINCE,
    ];
    if conditional.iter().any(|h| req.headers.contains_key(h)) {
        return None;
    }
    ByteRange::parse(req.headers.get(header::RANGE)?)
}

/// Turns `resp` into a 206 for `span` of a representation of `complete` bytes.
pub fn set_range(resp: &mut ResponseHeader, span: Span, complete: u64) {
    let _ = resp.set_status(StatusCode::PARTIAL_CONTENT);
    let _ = resp.insert_header(
        header::CONTENT_RANGE,
        format!("bytes {}-{}/{complete}", span.start, span.end - 1),
    );
    let _ = resp.insert_header(header::CONTENT_LENGTH, span.size());
}

/// Turns a 206 that encloses the whole representation into the 200 it stands for.
pub fn set_complete(resp: &mut ResponseHeader, complete: u64) {
    let _ = resp.set_status(StatusCode::OK);
    resp.remove_header(&header::CONTENT_RANGE);
    let _ = resp.insert_header(header::CONTENT_LENGTH, complete);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn range(s: &str) -> Option<ByteRange> {
        ByteRange::parse(&HeaderValue::from_str(s).unwrap())
    }

    fn span(start: u64, end: u64) -> Span {
        Span { start, end }
    }

    #[test]
    fn single_byte_ranges_parse() {
        assert_eq!(range("bytes=0-99"), Some(ByteRange::From(0, Some(99))));
        assert_eq!(range("Bytes = 5 - "), Some(ByteRange::From(5, None)));
        assert_eq!(range("bytes=-20"), Some(ByteRange::Suffix(20)));
        for bad in [
            "bytes=0-1,4-5",
            "items=0-1",
            "bytes=5-2",
            "bytes=+1-2",
            "bytes=-",
            "bytes",
        ] {
            assert_eq!(range(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges_resolve_against_the_length() {
        let r = |s| range(s).unwrap().resolve(100);
        assert_eq!(r("bytes=10-19"), Some(span(10, 20)));
        assert_eq!(r("bytes=90-200"), Some(span(90, 100)));
        assert_eq!(r("bytes=50-"), Some(span(50, 100)));
        assert_eq!(r("bytes=-30"), Some(span(70, 100)));
        assert_eq!(r("bytes=-300"), Some(span(0, 100)));
        assert_eq!(r("bytes=100-"), None);
        assert_eq!(r("bytes=-0"), None);
    }

    fn resp(fields: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(206, None).unwrap();
        for (k, v) in fields {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn content_range_is_read() {
        let r = resp(&[("content-range", "bytes 0-99/300")]);
        assert_eq!(content_range(&r), Some((span(0, 100), 300)));
        for bad in [
            "bytes */300",
            "bytes 5-4/300",
            "bytes 0-300/300",
            "none 0-1/2",
        ] {
            assert_eq!(content_range(&resp(&[("content-range", bad)])), None);
        }
    }

    #[test]
    fn only_strong_validators_count() {
        let etag = resp(&[("etag", "\"a\"")]);
        assert_eq!(
            Validator::strong(&etag),
            Some(Validator::ETag(HeaderValue::from_static("\"a\"")))
        );
        let weak = resp(&[("etag", "W/\"a\""), ("last-modified", "x")]);
        assert_eq!(Validator::strong(&weak), None);
        let now = SystemTime::now();
        let date = |t| httpdate::fmt_http_date(t);
        let old = date(now - Duration::from_secs(60));
        let lm = resp(&[("last-modified", &old), ("date", &date(now))]);
        assert!(matches!(
            Validator::strong(&lm),
            Some(Validator::LastModified(_))
        ));
        let same_second = resp(&[("last-modified", &date(now)), ("date", &date(now))]);
        assert_eq!(Validator::strong(&same_second), None);
    }

    #[test]
    fn if_range_is_compared_strongly() {
        let v = Validator::ETag(HeaderValue::from_static("\"a\""));
        assert!(v.matches_if_range(&HeaderValue::from_static("\"a\"")));
        assert!(!v.matches_if_range(&HeaderValue::from_static("W/\"a\"")));
        assert!(!v.matches_if_range(&HeaderValue::from_static("\"b\"")));
        assert!(v.matches(&resp(&[("etag", "\"a\"")])));
        assert!(!v.matches(&resp(&[("etag", "\"b\"")])));
    }

    fn part(start: u64, end: u64, complete: u64) -> Part {
        let header = resp(&[
            (
                "content-range",
                &format!("bytes {start}-{}/{complete}", end - 1),
            ),
            ("etag", "\"a\""),
        ]);
        let now = SystemTime::now();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
        let body = Bytes::from(vec![b'x'; (end - start) as usize]);
        Part::read(meta, body).expect("a consistent part")
    }

    #[test]
    fn requests_are_planned_against_the_stored_interval() {
        let head = part(0, 100, 300);
        let p = |s, usable| plan(Some(&head), range(s).unwrap(), usable);
        assert_eq!(p("bytes=10-19", true), Plan::Hit(span(10, 20)));
        assert_eq!(
            p("bytes=10-19", false),
            Plan::Fetch {
                from: 100,
                combine: true
            }
        );
        assert_eq!(
            p("bytes=50-199", true),
            Plan::Fetch {
                from: 100,
                combine: true
            }
        );
        assert_eq!(
            p("bytes=-10", true),
            Plan::Fetch {
                from: 100,
                combine: true
            }
        );
        assert_eq!(p("bytes=300-", true), Plan::Forward);
        let tail = part(100, 300, 300);
        let t = |s, usable| plan(Some(&tail), range(s).unwrap(), usable);
        assert_eq!(t("bytes=150-", true), Plan::Hit(span(150, 300)));
        assert_eq!(t("bytes=-50", true), Plan::Hit(span(250, 300)));
        assert_eq!(
            t("bytes=50-149", true),
            Plan::Fetch {
                from: 50,
                combine: false
            }
        );
        assert_eq!(
            t("bytes=150-", false),
            Plan::Fetch {
                from: 100,
                combine: false
            }
        );
        assert_eq!(plan(None, range("bytes=0-1").unwrap(), true), Plan::Forward);
    }

    #[test]
    fn a_part_must_match_its_body() {
        let header = resp(&[("content-range", "bytes 0-9/20"), ("etag", "\"a\"")]);
        let now = SystemTime::now();
        let meta = CacheMeta::new(now, now, 0, 0, header);
        assert!(Part::read(meta, Bytes::from_static(b"short")).is_none());
    }

    #[test]
    fn partial_entries_have_a_key_of_their_own() {
        let full = crate::cache::key::for_parts(false, "h", "/v");
        let partial = key(&full);
        assert_eq!(partial.primary_bin(), full.primary_bin());
        assert_ne!(partial.combined_bin(), full.combined_bin());
        let now = SystemTime::now();
        let meta =
            |status| CacheMeta::new(now, now, 0, 0, ResponseHeader::build(status, None).unwrap());
        use pingora_cache::key::CacheHashKey;
        assert_eq!(
            storage_key(&full, &meta(206)).combined_bin(),
            partial.combined_bin()
        );
        assert_eq!(
            storage_key(&full, &meta(200)).combined_bin(),
            full.combined_bin()
        );
    }
}
