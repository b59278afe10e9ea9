//! Range requests served from, and filling, a URL's partial entry (`cache::partial`), across
//! the proxy's phases. Only a GET with one byte range whose lookup found no full entry comes
//! here; everything else keeps the full-response path, where a stored full response answers
//! any range (Pingora's range filter).
//!
//! ```text
//! proxy_upstream_filter    partial entry covers the range (and is fresh): 206 from it, HIT;
//!                          else plan the origin request (`begin`)
//! upstream_request_filter  Range: the client's own, or `bytes=N-` + If-Range (validator)
//! upstream_response_filter 206 from N: the stored bytes go in front (`prepend`); an interval
//!                          from 0 to the complete length becomes a 200, stored as the
//!                          full response (Pingora's range filter then answers the client);
//!                          otherwise the 206 is stored as the partial entry
//! response_cache_filter    such a 206 goes through the cache policy (`stores_part`)
//! response_filter,         the client gets exactly its range of what arrived (`cut`)
//!   response_body_filter
//! logging                  a partial entry superseded by a full or changed response is
//!                          removed
//! ```
//!
//! Storing goes through Pingora's miss handler like any entry (the backend writes a 206
//! under the partial key), so the byte bound, the Redis tier and the cache lock apply
//! unchanged, and the entry is committed before the client has the last byte.

use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header;
use pingora_cache::CacheKey;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::cache::partial::{self, ByteRange, Part, Plan, Span, Validator};
use crate::cache::{vary, Cache, HitDecision, RequestDirectives};

/// How a range request goes on after [`begin`].
pub enum Begin {
    /// Answer from the partial entry.
    Hit(PartialHit),
    /// Go to the origin for (part of) the range.
    Fetch(RangeFill),
    /// Not a request for partial entries: the full-response path.
    Normal,
}

/// A response made from the partial entry.
pub struct PartialHit {
    pub header: ResponseHeader,
    pub body: Bytes,
    /// Served stale, as the request allowed (`max-stale`).
    pub stale: bool,
}

/// A range request on its way to the origin, and what to do with the answer.
pub struct RangeFill {
    /// The client's range.
    range: ByteRange,
    key: CacheKey,
    /// `Some` when the origin is asked for `bytes=from-` (the plan was a fetch).
    fetch: Option<Fetch>,
    /// Stored bytes to put in front of the origin's, taken by the first body chunk.
    prepend: Option<Bytes>,
    /// The client's range within the body as it arrives.
    cut: Option<Cut>,
    /// The 206 may be stored as the partial entry, if the cache policy allows.
    store_candidate: bool,
    /// It was (its miss handler then replaces the old entry).
    stored: bool,
    /// The origin's answer supersedes the stored partial entry.
    supersedes: bool,
}

struct Fetch {
    from: u64,
    combine: bool,
    part: Part,
}

struct Cut {
    window: Span,
    complete: u64,
    /// Offset in the representation of the next body byte.
    pos: u64,
}

/// Decides how to answer `req` (whose full entry under `full_key` was not found), reading
/// the URL's partial entry.
pub async fn begin(
    cache: &Cache,
    req: &RequestHeader,
    full_key: &CacheKey,
    directives: &RequestDirectives,
) -> Begin {
    let Some(range) = partial::range_of(req) else {
        return Begin::Normal;
    };
    let key = partial::key(full_key);
    // One variant is kept: the one stored last. It serves only requests that select it.
    let part = match cache.backend.peek(&key).await {
        Some((meta, body)) => Part::read(meta, body)
            .filter(|p| vary::variance(p.meta.response_header(), req) == p.meta.variance()),
        None => None,
    };
    if let (Some(part), Some(if_range)) = (&part, req.headers.get(header::IF_RANGE)) {
        if !part.validator.matches_if_range(if_range) {
            // The client holds another representation: it gets the whole current one.
            return Begin::Normal;
        }
    }
    let now = SystemTime::now();
    let (usable, stale) = match &part {
        None => (false, false),
        Some(part) => {
            let fresh = part.meta.is_fresh(now);
            match directives.on_hit(&part.meta, &cache.policy.targets, now) {
                HitDecision::Default => (fresh, false),
                HitDecision::Revalidate => (false, false),
                HitDecision::ServeStale => (true, !fresh),
            }
        }
    };
    let fetch = match partial::plan(part.as_ref(), range, usable) {
        Plan::Hit(span) => {
            let part = part.expect("a hit has a part");
            return Begin::Hit(hit(&part, span, stale));
        }
        Plan::Fetch { from, combine } => Some(Fetch {
            from,
            combine,
            part: part.expect("a fetch has a part"),
        }),
        Plan::Forward => None,
    };
    Begin::Fetch(RangeFill {
        range,
        key,
        fetch,
        prepend: None,
        cut: None,
        store_candidate: false,
        stored: false,
        supersedes: false,
    })
}

fn hit(part: &Part, span: Span, stale: bool) -> PartialHit {
    let mut header = part.meta.response_header_copy();
    partial::set_range(&mut header, span, part.complete);
    // RFC 9111 §4: a response served without validation carries its Age.
    let _ = header.insert_header(header::AGE, part.meta.age().as_secs());
    header.set_version(http::Version::HTTP_11);
    PartialHit {
        header,
        body: part.slice(span),
        stale,
    }
}

impl RangeFill {
    /// Puts the range back on the request (Pingora takes `Range` and `If-Range` off every
    /// request that may fill the cache).
    pub fn upstream_request(&self, client: &RequestHeader, upstream: &mut RequestHeader) {
        match &self.fetch {
            None => {
                for name in [header::RANGE, header::IF_RANGE] {
                    if let Some(value) = client.headers.get(&name) {
                        let _ = upstream.insert_header(name, value.clone());
                    }
                }
            }
            Some(fetch) => {
                let _ = upstream.insert_header(header::RANGE, format!("bytes={}-", fetch.from));
                let _ = upstream.insert_header(header::IF_RANGE, fetch.part.validator.value());
            }
        }
    }

    /// Shapes the origin's answer before Pingora decides whether to store it.
    pub fn upstream_response(&mut self, resp: &mut ResponseHeader, max_object_bytes: usize) {
        let had_part = self.fetch.is_some();
        match resp.status.as_u16() {
            // A new representation (If-Range did not match), or none of the stored length.
            200 | 416 => {
                self.supersedes = had_part;
                return;
            }
            206 => {}
            _ => return,
        }
        let Some((got, complete)) = partial::content_range(resp) else {
            self.supersedes = had_part;
            return;
        };
        // §3.4: parts are combined only when the new one continues the stored interval, of
        // the same complete length, under the same strong validator.
        let combined = self.fetch.as_ref().filter(|f| {
            f.combine
                && got.start == f.from
                && complete == f.part.complete
                && f.part.validator.matches(resp)
        });
        let span = match combined {
            Some(fetch) => {
                self.prepend = Some(fetch.part.body.clone());
                Span {
                    start: fetch.part.span.start,
                    end: got.end,
                }
            }
            None => got,
        };
        self.supersedes = had_part && combined.is_none();
        if span.start == 0 && span.end == complete && complete <= max_object_bytes as u64 {
            // Complete: stored as the full response, and ranged for the client from it.
            partial::set_complete(resp, complete);
            self.supersedes = had_part;
            return;
        }
        if combined.is_some() {
            partial::set_range(resp, span, complete);
        }
        self.store_candidate =
            Validator::strong(resp).is_some() && complete <= max_object_bytes as u64;
        // The client gets what it asked for of what arrived (less when the origin sent less).
        if let Some(wanted) = self.range.resolve(complete) {
            let window = Span {
                start: wanted.start.max(span.start),
                end: wanted.end.min(span.end),
            };
            if window.start < window.end && window != span {
                self.cut = Some(Cut {
                    window,
                    complete,
                    pos: span.start,
                });
            }
        }
    }

    /// Whether the response is a part that may be stored (the cache policy decides).
    pub fn stores_part(&self) -> bool {
        self.store_candidate
    }

    /// Whether the response answers the range rather than the URL (a 416), so that it must
    /// not be stored as the URL's response whatever its freshness. (A 206 the policy refuses
    /// by itself.)
    pub fn answers_range_only(resp: &ResponseHeader) -> bool {
        resp.status == http::StatusCode::RANGE_NOT_SATISFIABLE
    }

    /// The cache policy's answer for the part.
    pub fn set_stored(&mut self, stored: bool) {
        self.stored = stored;
        if stored {
            // The new entry replaces the old one.
            self.supersedes = false;
        }
    }

    /// Puts the stored bytes in front of the first chunk from the origin.
    pub fn upstream_body(&mut self, body: &mut Option<Bytes>) {
        let Some(stored) = self.prepend.take() else {
            return;
        };
        *body = Some(match body.take() {
            Some(chunk) if !chunk.is_empty() => {
                let mut joined = BytesMut::with_capacity(stored.len() + chunk.len());
                joined.extend_from_slice(&stored);
                joined.extend_from_slice(&chunk);
                joined.freeze()
            }
            _ => stored,
        });
    }

    /// The client's header: its own range, when more arrives than it asked for.
    pub fn client_header(&self, resp: &mut ResponseHeader) {
        if let Some(cut) = &self.cut {
            partial::set_range(resp, cut.window, cut.complete);
        }
    }

    /// The client's bytes of a body chunk.
    pub fn client_body(&mut self, body: &mut Option<Bytes>) {
        let Some(cut) = self.cut.as_mut() else {
            return;
        };
        let Some(data) = body.take() else {
            return;
        };
        let start = cut.pos;
        let end = start + data.len() as u64;
        cut.pos = end;
        let (from, to) = (start.max(cut.window.start), end.min(cut.window.end));
        if from < to {
            *body = Some(data.slice((from - start) as usize..(to - start) as usize));
        }
    }

    /// Once the request is over: a partial entry that the origin's answer superseded (a
    /// complete or changed representation) is removed.
    pub async fn finish(self, cache: &Cache) {
        if self.supersedes && !self.stored {
            cache.backend.remove_entry(&self.key).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::CacheMeta;
    use std::time::Duration;

    const FULL: &[u8; 30] = b"abcdefghijklmnopqrstuvwxyz0123";

    fn resp(status: u16, content_range: &str, etag: &str) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        r.insert_header("content-range", content_range).unwrap();
        r.insert_header("etag", etag).unwrap();
        r
    }

    /// A fill for `range` whose partial entry holds `FULL[start..end]`, planned as `plan`.
    fn fill(range: &str, stored: Option<(usize, usize)>, plan: Option<(u64, bool)>) -> RangeFill {
        let range = ByteRange::parse(&http::HeaderValue::from_str(range).unwrap()).unwrap();
        let fetch = stored.zip(plan).map(|((start, end), (from, combine))| {
            let header = resp(206, &format!("bytes {start}-{}/30", end - 1), "\"a\"");
            let now = SystemTime::now();
            let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, header);
            let body = Bytes::copy_from_slice(&FULL[start..end]);
            Fetch {
                from,
                combine,
                part: Part::read(meta, body).unwrap(),
            }
        });
        RangeFill {
            range,
            key: crate::cache::key::for_parts(false, "h", "/"),
            fetch,
            prepend: None,
            cut: None,
            store_candidate: false,
            stored: false,
            supersedes: false,
        }
    }

    /// What the client receives of `chunks`, after the stored part is put in front.
    fn client_bytes(fill: &mut RangeFill, chunks: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks {
            let mut body = Some(Bytes::copy_from_slice(chunk));
            fill.upstream_body(&mut body);
            fill.client_body(&mut body);
            out.extend_from_slice(body.as_deref().unwrap_or_default());
        }
        out
    }

    #[test]
    fn an_extension_is_joined_and_cut_to_the_client_range_across_chunks() {
        let mut f = fill("bytes=5-19", Some((0, 10)), Some((10, true)));
        let mut r = resp(206, "bytes 10-19/30", "\"a\"");
        f.upstream_response(&mut r, 1 << 20);
        // Stored as the part 0-19; the client gets 5-19.
        assert!(f.stores_part());
        assert_eq!(r.headers["content-range"], "bytes 0-19/30");
        assert_eq!(r.headers["content-length"], "20");
        let mut client = r.clone();
        f.client_header(&mut client);
        assert_eq!(client.headers["content-range"], "bytes 5-19/30");
        assert_eq!(client.headers["content-length"], "15");
        let got = client_bytes(&mut f, &[b"kl", b"mnop", b"qrst"]);
        assert_eq!(got, &FULL[5..20]);
    }

    #[test]
    fn an_origin_that_sends_less_gives_the_client_what_overlaps() {
        let mut f = fill("bytes=5-24", Some((0, 10)), Some((10, true)));
        let mut r = resp(206, "bytes 10-19/30", "\"a\"");
        f.upstream_response(&mut r, 1 << 20);
        let mut client = r.clone();
        f.client_header(&mut client);
        assert_eq!(client.headers["content-range"], "bytes 5-19/30");
        assert_eq!(client_bytes(&mut f, &[b"klmnopqrst"]), &FULL[5..20]);
    }

    #[test]
    fn a_complete_interval_becomes_the_full_response() {
        let mut f = fill("bytes=25-", Some((0, 10)), Some((10, true)));
        let mut r = resp(206, "bytes 10-29/30", "\"a\"");
        f.upstream_response(&mut r, 1 << 20);
        assert_eq!(r.status, 200);
        assert!(!r.headers.contains_key("content-range"));
        assert_eq!(r.headers["content-length"], "30");
        assert!(!f.stores_part(), "Pingora stores it as the full response");
        assert!(f.supersedes, "the partial entry goes");
        // No cut: Pingora's range filter answers the client from the 200.
        let got = client_bytes(&mut f, &[b"klmnopqrst", b"uvwxyz0123"]);
        assert_eq!(got, FULL);
    }

    #[test]
    fn a_complete_interval_too_large_to_cache_stays_a_206() {
        let mut f = fill("bytes=0-", None, None);
        let mut r = resp(206, "bytes 0-29/30", "\"a\"");
        f.upstream_response(&mut r, 29);
        assert_eq!(r.status, 206);
        assert!(!f.stores_part());
    }

    #[test]
    fn another_representation_is_not_joined() {
        let mut f = fill("bytes=5-19", Some((0, 10)), Some((10, true)));
        let mut r = resp(206, "bytes 10-29/30", "\"b\"");
        f.upstream_response(&mut r, 1 << 20);
        assert_eq!(r.headers["content-range"], "bytes 10-29/30");
        assert!(f.prepend.is_none());
        assert!(f.supersedes);
        // The client gets the new representation's bytes of its range, and only those.
        let mut client = r.clone();
        f.client_header(&mut client);
        assert_eq!(client.headers["content-range"], "bytes 10-19/30");
        let got = client_bytes(&mut f, &[b"KLMNOPQRST", b"UVWXYZ0123"]);
        assert_eq!(got, b"KLMNOPQRST");
    }

    #[test]
    fn forwarded_ranges_ask_for_the_client_range() {
        let f = fill("bytes=3-4", None, None);
        let mut client = RequestHeader::build("GET", b"/", None).unwrap();
        client.insert_header("range", "bytes=3-4").unwrap();
        client.insert_header("if-range", "\"a\"").unwrap();
        let mut upstream = RequestHeader::build("GET", b"/", None).unwrap();
        f.upstream_request(&client, &mut upstream);
        assert_eq!(upstream.headers["range"], "bytes=3-4");
        assert_eq!(upstream.headers["if-range"], "\"a\"");
        let fetch = fill("bytes=15-", Some((0, 10)), Some((10, true)));
        let mut upstream = RequestHeader::build("GET", b"/", None).unwrap();
        fetch.upstream_request(&client, &mut upstream);
        assert_eq!(upstream.headers["range"], "bytes=10-");
        assert_eq!(upstream.headers["if-range"], "\"a\"");
    }
}
