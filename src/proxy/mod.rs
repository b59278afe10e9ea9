//! The proxy: Pingora's `ProxyHttp` phases for one request, in the order they run.
//!
//! ```text
//! request_filter          readiness probe; request ID; CORS preflight answered here;
//!                         Host required
//!   │
//! request_cache_filter    GET/HEAD only: enable the cache (backend, lock, max object size)
//! cache_key_callback      scheme + host + path?query (cache::key)
//! cache_vary_filter       picks the stored variant matching the request's Vary headers
//!   ├─ fresh hit ─────────────────────────────────────────────────────────┐
//!   │  miss/expired: concurrent requests for the key wait on the cache lock │
//! upstream_peer           the origin, with connect/read timeouts          │
//! upstream_request_filter Host, X-Request-Id, X-Forwarded-*               │
//! response_cache_filter   store or not, and for how long (cache::policy)  │
//!   │                                                                      │
//! response_filter         X-Cache, counters, X-Request-Id, security     ◄┘
//!                         headers, CORS
//! fail_to_proxy           any failure above: one JSON error (502, 504, ...)
//! logging                 access log line
//! ```
//!
//! Responses the proxy writes itself (preflight answers, errors) skip `response_filter`, so
//! they get the same headers through [`Proxy::own_headers`].

pub mod cors;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use log::{info, warn};
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheKey, CacheMeta, CachePhase, RespCacheable};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::admin::{ProbeToken, PROBE_HEADER};
use crate::cache::{key, vary, Cache, CachePolicy, CacheStatus};
use crate::config::{Config, CorsConfig, UpstreamConfig};
use crate::error::{json_body, ErrorKind};
use crate::headers::{self, SECURITY_HEADERS, X_REQUEST_ID};
use cors::CorsDecision;

/// Idle upstream connections are kept this long for reuse.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The caching proxy application.
pub struct Proxy {
    cache: Arc<Cache>,
    /// Lets the readiness check recognise this process's own listener.
    probe: ProbeToken,
    upstream: UpstreamConfig,
    cors: CorsConfig,
    security_headers: bool,
}

/// Per-request state carried across the phases.
pub struct RequestCtx {
    request_id: String,
    started: Instant,
    /// Whether the cache was consulted for this request.
    cache_enabled: bool,
    /// Known once the response header is on its way.
    cache_status: Option<CacheStatus>,
    cors: CorsDecision,
    error: Option<ErrorKind>,
    /// The readiness check's own request: answered here, not logged.
    probe: bool,
}

impl Proxy {
    pub fn new(config: &Config, cache: Arc<Cache>, probe: ProbeToken) -> Self {
        Proxy {
            cache,
            probe,
            upstream: config.upstream.clone(),
            cors: config.cors.clone(),
            security_headers: config.security_headers,
        }
    }

    /// Headers every response gets. On origin responses an origin's own security header is
    /// kept (it may need, say, `X-Frame-Options: SAMEORIGIN`); on the proxy's own responses
    /// they are set.
    fn own_headers(&self, resp: &mut ResponseHeader, ctx: &RequestCtx, from_origin: bool) {
        if self.security_headers {
            for (name, value) in SECURITY_HEADERS {
                if !from_origin || !resp.headers.contains_key(name) {
                    let _ = resp.insert_header(name, value);
                }
            }
        }
        let _ = resp.insert_header(X_REQUEST_ID, ctx.request_id.as_str());
        if let CorsDecision::Allow(origin) = &ctx.cors {
            cors::apply(&self.cors, origin, resp);
        }
    }

    /// Writes a JSON error; the connection is closed afterwards.
    async fn respond_error(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        kind: ErrorKind,
        message: &str,
    ) {
        ctx.error = Some(kind);
        let body = json_body(kind, message, &ctx.request_id);
        let mut resp = ResponseHeader::build(kind.status(), Some(8)).expect("valid status");
        let _ = resp.insert_header(header::CONTENT_TYPE, "application/json");
        let _ = resp.insert_header(header::CONTENT_LENGTH, body.len());
        let _ = resp.insert_header(header::CACHE_CONTROL, "no-store");
        let status = if ctx.cache_enabled {
            CacheStatus::Miss
        } else {
            CacheStatus::Bypass
        };
        let _ = resp.insert_header("x-cache", status.as_str());
        self.own_headers(&mut resp, ctx, false);
        if let Err(e) = session
            .as_downstream_mut()
            .write_error_response(resp, Bytes::from(body))
            .await
        {
            warn!(
                "failed to send error response, request_id={}: {e}",
                ctx.request_id
            );
        }
    }
}

/// Maps Pingora's cache phase to what `X-Cache` reports.
fn cache_status(phase: CachePhase, cache_enabled: bool) -> CacheStatus {
    match phase {
        CachePhase::Hit => CacheStatus::Hit,
        CachePhase::Stale | CachePhase::StaleUpdating => CacheStatus::Stale,
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => CacheStatus::Revalidated,
        CachePhase::Bypass => CacheStatus::Bypass,
        _ if !cache_enabled => CacheStatus::Bypass,
        _ => CacheStatus::Miss,
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            request_id: String::new(),
            started: Instant::now(),
            cache_enabled: false,
            cache_status: None,
            cors: CorsDecision::None,
            error: None,
            probe: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        if self.probe.matches(req.headers.get(PROBE_HEADER)) {
            ctx.probe = true;
            let mut resp = ResponseHeader::build(204, Some(2)).expect("valid status");
            resp.insert_header(PROBE_HEADER, self.probe.value())?;
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(true);
        }
        ctx.request_id = headers::request_id(req.headers.get(X_REQUEST_ID));
        if !req.headers.contains_key(header::HOST) && req.uri.authority().is_none() {
            self.respond_error(
                session,
                ctx,
                ErrorKind::BadRequest,
                "the request has no Host header",
            )
            .await;
            return Ok(true);
        }
        match cors::decide(&self.cors, req) {
            CorsDecision::Preflight(origin) => {
                let mut resp = cors::preflight_response(&self.cors, &origin, req);
                let _ = resp.insert_header("x-cache", CacheStatus::Bypass.as_str());
                self.own_headers(&mut resp, ctx, false);
                ctx.cache_status = Some(CacheStatus::Bypass);
                session.write_response_header(Box::new(resp), true).await?;
                Ok(true)
            }
            CorsDecision::DeniedPreflight => {
                self.respond_error(
                    session,
                    ctx,
                    ErrorKind::Forbidden,
                    "the Origin is not allowed by the CORS policy",
                )
                .await;
                Ok(true)
            }
            decision => {
                ctx.cors = decision;
                Ok(false)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if !CachePolicy::request_cacheable(session.req_header()) {
            return Ok(());
        }
        session.cache.enable(
            self.cache.backend.as_storage(),
            None, // the backend enforces its own bounds
            None,
            Some(self.cache.lock),
            Some(self.cache.lock_options()),
        );
        session
            .cache
            .set_max_file_size_bytes(self.cache.max_object_bytes);
        ctx.cache_enabled = true;
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, _ctx: &mut RequestCtx) -> Result<CacheKey> {
        Ok(key::for_request(session.req_header(), false))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        Ok(self
            .cache
            .policy
            .response_cacheable(session.req_header(), resp))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        vary::variance(meta.response_header(), req)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let origin = &self.upstream.origin;
        let mut peer = HttpPeer::new(origin.addr, origin.tls, origin.host.clone());
        let opts = &mut peer.options;
        opts.connection_timeout = Some(self.upstream.connect_timeout);
        // Connect plus TLS handshake.
        opts.total_connection_timeout = Some(self.upstream.connect_timeout * 2);
        opts.read_timeout = Some(self.upstream.read_timeout);
        opts.write_timeout = Some(self.upstream.read_timeout);
        opts.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if !self.upstream.preserve_host {
            upstream_request.insert_header(header::HOST, &self.upstream.origin.authority)?;
        }
        upstream_request.insert_header(X_REQUEST_ID, &ctx.request_id)?;
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            let ip = client.ip().to_string();
            let xff = match upstream_request.headers.get("x-forwarded-for") {
                Some(prev) => format!("{}, {ip}", String::from_utf8_lossy(prev.as_bytes())),
                None => ip,
            };
            upstream_request.insert_header("x-forwarded-for", xff)?;
        }
        upstream_request.insert_header("x-forwarded-proto", "http")?;
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = cache_status(session.cache.phase(), ctx.cache_enabled);
        ctx.cache_status = Some(status);
        // Counted before the response leaves, so a client that reads the stats right after
        // a response sees it counted.
        self.cache.stats.record(status);
        upstream_response.insert_header("x-cache", status.as_str())?;
        self.own_headers(upstream_response, ctx, true);
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let Some(kind) = ErrorKind::from_proxy_error(e) else {
            // The client went away: nobody to answer.
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        };
        if ctx.request_id.is_empty() {
            ctx.request_id = headers::new_request_id();
        }
        self.respond_error(session, ctx, kind, kind.default_message())
            .await;
        FailToProxy {
            error_code: kind.status(),
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.probe {
            return;
        }
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let cache = ctx
            .cache_status
            .or(ctx.error.map(|_| CacheStatus::Miss))
            .map_or("-", CacheStatus::as_str);
        let error = match (ctx.error, e) {
            (Some(kind), Some(e)) => format!(" error={} cause=\"{e}\"", kind.code()),
            (Some(kind), None) => format!(" error={}", kind.code()),
            (None, Some(e)) => format!(" cause=\"{e}\""),
            (None, None) => String::new(),
        };
        info!(
            target: "access",
            "{} {} {} {} {}ms request_id={}{}",
            req.method,
            req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            status,
            cache,
            ctx.started.elapsed().as_millis(),
            ctx.request_id,
            error
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::NoCacheReason;

    #[test]
    fn x_cache_follows_the_cache_phase() {
        assert_eq!(cache_status(CachePhase::Hit, true), CacheStatus::Hit);
        assert_eq!(cache_status(CachePhase::Miss, true), CacheStatus::Miss);
        assert_eq!(cache_status(CachePhase::Expired, true), CacheStatus::Miss);
        assert_eq!(cache_status(CachePhase::Stale, true), CacheStatus::Stale);
        assert_eq!(
            cache_status(CachePhase::Revalidated, true),
            CacheStatus::Revalidated
        );
        assert_eq!(
            cache_status(CachePhase::Disabled(NoCacheReason::OriginNotCache), true),
            CacheStatus::Miss
        );
        assert_eq!(
            cache_status(CachePhase::Disabled(NoCacheReason::NeverEnabled), false),
            CacheStatus::Bypass
        );
    }
}
