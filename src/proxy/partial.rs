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
        if let Some(window) = self.range.resolve(complete) {
            if span.contains(window) && window != span {
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
