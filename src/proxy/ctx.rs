//! The per-request state the proxy's phases share (`ProxyHttp::CTX`).

use std::sync::Arc;
use std::time::Instant;

use pingora::lb::Backend;

use super::cors::CorsDecision;
use super::edge::ClientConnection;
use super::limits::RequestLimits;
use super::partial::RangeFill;
use super::post_reuse::PendingStore;
use crate::cache::{CacheStatus, RequestDirectives};
use crate::error::ErrorKind;
use crate::routes::Route;

/// Per-request state carried across the phases.
///
/// It lives in Pingora's per-request future (twice: the argument and its binding), made and
/// moved once per request, so what only some requests need (a 304's fields, a POST response
/// being stored, a partial-entry fill: 568 bytes together) is boxed.
pub struct RequestCtx {
    /// TLS or not, HTTP/1 or h2: the scheme of the cache key and of X-Forwarded-Proto.
    pub(super) conn: ClientConnection,
    pub(super) request_id: String,
    pub(super) started: Instant,
    /// Whether the cache was consulted for this request.
    pub(super) cache_enabled: bool,
    /// Known once the response header is on its way.
    pub(super) cache_status: Option<CacheStatus>,
    pub(super) cors: CorsDecision,
    pub(super) error: Option<ErrorKind>,
    /// The readiness check's own request: answered here, not logged.
    pub(super) probe: bool,
    /// What the request's Cache-Control asks of the cache.
    pub(super) directives: RequestDirectives,
    /// A stale stored response was served (max-stale, stale-while-revalidate, stale-if-error).
    pub(super) served_stale: bool,
    /// The header fields of a 304 answering our revalidation, kept for the merge into the
    /// stored response.
    pub(super) not_modified: Option<Box<http::HeaderMap>>,
    /// When the origin was first asked for a connection, when one was ready, and when its
    /// response header arrived.
    pub(super) upstream_started: Option<Instant>,
    pub(super) upstream_connected: Option<Instant>,
    pub(super) upstream_header: Option<Instant>,
    pub(super) route: Option<Arc<Route>>,
    /// The protocol of an upgrade request (WebSocket): proxied as a tunnel, never cached.
    pub(super) upgrade: Option<http::HeaderValue>,
    /// The server of the current attempt, and those that failed this request before.
    pub(super) server: Option<Backend>,
    pub(super) failed: Vec<Backend>,
    /// A POST response being collected to be stored for GETs of its URL.
    pub(super) post_store: Option<Box<PendingStore>>,
    /// A range request going to the origin for a partial entry.
    pub(super) range_fill: Option<Box<RangeFill>>,
    /// The response came from the URL's partial entry.
    pub(super) partial_hit: bool,
    pub(super) limits: RequestLimits,
}

impl RequestCtx {
    /// What `X-Cache` says on a response the proxy writes itself (an error, a refusal):
    /// nothing came from the cache.
    pub(super) fn own_response_status(&self) -> CacheStatus {
        if self.cache_enabled {
            CacheStatus::Miss
        } else {
            CacheStatus::Bypass
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Was 1,008 bytes with the rare parts inline.
    #[test]
    fn the_context_stays_small() {
        let size = std::mem::size_of::<RequestCtx>();
        assert!(size <= 456, "RequestCtx is {size} bytes");
    }
}
