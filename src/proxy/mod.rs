//! The proxy: Pingora's `ProxyHttp` phases for one request, in the order they run.
//!
//! ```text
//! request_filter           readiness probe; request ID; PURGE; CORS preflight; Host
//! request_cache_filter     GET/HEAD only: enable the cache; read request Cache-Control
//! cache_key_callback       scheme + host + path?query (cache::key)
//! cache_vary_filter        picks the stored variant matching the request's Vary
//! cache_hit_filter         request no-cache/max-age/min-fresh/max-stale vs the entry
//!   |-- usable hit (fresh, or stale as allowed) ----------------------------+
//!   |   miss/expired: concurrent requests for a key wait on the cache lock  |
//! proxy_upstream_filter    only-if-cached: 504 instead of going upstream    |
//! upstream_peer            the origin, with connect/read timeouts           |
//! upstream_request_filter  Host, X-Request-Id, X-Forwarded-*; hop-by-hop out|
//! upstream_response_filter hop-by-hop out, Date in; keeps 304 fields        |
//! response_cache_filter    store or not, and for how long (cache::policy)   |
//! should_serve_stale       stale-while-revalidate / stale-if-error          |
//!   |                                                                       |
//! response_filter          X-Cache, counters, invalidation after unsafe  <--+
//!                          methods, X-Request-Id, security headers, CORS;
//!                          Connection: close while draining
//! fail_to_proxy            any failure above: one JSON error (502, 504, ...)
//! fail_to_connect,         origin errors counted by kind
//!   error_while_proxy
//! logging                  access record; request metrics
//! ```
//!
//! Responses the proxy writes itself (probe and preflight answers, PURGE results, errors)
//! skip `response_filter`, so they get the same headers through [`Proxy::own_headers`].

pub mod cors;
pub mod hop_by_hop;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header;
use log::{info, warn};
use std::time::SystemTime;

use pingora_cache::key::HashBinary;
use pingora_cache::{CacheKey, CacheMeta, CachePhase, ForcedFreshness, HitHandler, RespCacheable};
use pingora_core::protocols::Digest;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::admin::{ProbeToken, PROBE_HEADER};
use crate::auth::AdminAuth;
use crate::cache::{
    invalidation, key, merge_not_modified, vary, Cache, CachePolicy, CacheStatus, HitDecision,
    RequestDirectives,
};
use crate::config::{Config, CorsConfig, UpstreamConfig};
use crate::error::{json_body, ErrorKind};
use crate::headers::{self, SECURITY_HEADERS, X_CACHE, X_REQUEST_ID};
use crate::logging::{self, AccessRecord};
use crate::metrics::{status_class, METRICS};
use cors::CorsDecision;

/// Idle upstream connections are kept this long for reuse.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The caching proxy application.
pub struct Proxy {
    cache: Arc<Cache>,
    auth: AdminAuth,
    purge_enabled: bool,
    /// Lets the readiness check recognise this process's own listener.
    probe: ProbeToken,
    upstream: UpstreamConfig,
    cors: CorsConfig,
    security_headers: bool,
    /// The cache has a shared tier, whose fill locks a fetch must end (see `logging`).
    shared_tier: bool,
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
    /// What the request's Cache-Control asks of the cache.
    directives: RequestDirectives,
    /// A stale stored response was served (max-stale, stale-while-revalidate, stale-if-error).
    served_stale: bool,
    /// The header fields of a 304 answering our revalidation, kept for the merge into the
    /// stored response.
    not_modified: Option<http::HeaderMap>,
    /// When the origin was first asked for a connection, when one was ready, and when its
    /// response header arrived.
    upstream_started: Option<Instant>,
    upstream_connected: Option<Instant>,
    upstream_header: Option<Instant>,
}

impl RequestCtx {
    /// What `X-Cache` says on a response the proxy writes itself (an error, a refusal):
    /// nothing came from the cache.
    fn own_response_status(&self) -> CacheStatus {
        if self.cache_enabled {
            CacheStatus::Miss
        } else {
            CacheStatus::Bypass
        }
    }
}

impl Proxy {
    pub fn new(config: &Config, cache: Arc<Cache>, probe: ProbeToken) -> Self {
        Proxy {
            shared_tier: cache.backend.l2_status().is_some(),
            cache,
            auth: AdminAuth::new(config.admin.token.clone()),
            purge_enabled: config.cache.purge,
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
        let resp = self.json_response(ctx, kind.status(), body.len());
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

    /// The header of a JSON response written by the proxy itself.
    fn json_response(&self, ctx: &RequestCtx, status: u16, len: usize) -> ResponseHeader {
        let mut resp = ResponseHeader::build(status, Some(8)).expect("valid status");
        let _ = resp.insert_header(header::CONTENT_TYPE, "application/json");
        let _ = resp.insert_header(header::CONTENT_LENGTH, len);
        let _ = resp.insert_header(header::CACHE_CONTROL, "no-store");
        let _ = resp.insert_header(X_CACHE, ctx.own_response_status().as_str());
        self.own_headers(&mut resp, ctx, false);
        resp
    }

    /// `PURGE <url>`: removes the URL and all its variants, when enabled and authorised.
    async fn purge(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        if !self.purge_enabled {
            let message = "PURGE is not enabled (purge.enabled)";
            self.respond_error(session, ctx, ErrorKind::MethodNotAllowed, message)
                .await;
            return Ok(());
        }
        let req = session.req_header();
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // Without a token, only loopback clients may purge, whatever the listen address.
        if let Err(kind) = self
            .auth
            .check(req.headers.get(header::AUTHORIZATION), client, true)
        {
            self.respond_error(session, ctx, kind, kind.default_message())
                .await;
            return Ok(());
        }
        let key = key::for_request(req, false);
        let purged = match self.cache.backend.remove(&key).await {
            Ok(purged) => purged,
            Err(e) => {
                let message = format!("purging failed: {e}");
                self.respond_error(session, ctx, ErrorKind::Internal, &message)
                    .await;
                return Ok(());
            }
        };
        METRICS.admin_actions.with_label_values(&["purge"]).inc();
        info!(
            "PURGE {}: {}",
            req.uri,
            if purged { "removed" } else { "not cached" }
        );
        ctx.cache_status = Some(CacheStatus::Bypass);
        let mut body = serde_json::to_vec(&serde_json::json!({"purged": purged}))
            .expect("JSON values serialise");
        body.push(b'\n');
        let resp = self.json_response(ctx, 200, body.len());
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(Bytes::from(body)), true)
            .await
    }
}

/// Maps Pingora's cache phase to what `X-Cache` reports.
fn cache_status(phase: CachePhase, cache_enabled: bool, served_stale: bool) -> CacheStatus {
    match phase {
        _ if served_stale => CacheStatus::Stale,
        CachePhase::Hit => CacheStatus::Hit,
        CachePhase::Expired => CacheStatus::Expired,
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
            directives: RequestDirectives::default(),
            served_stale: false,
            not_modified: None,
            upstream_started: None,
            upstream_connected: None,
            upstream_header: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        // Any process's readiness probe is answered here with this process's token, never
        // proxied: during an upgrade the new process probes the listener while the old one
        // still owns it, and the origin must not see those probes.
        if req.headers.contains_key(PROBE_HEADER) {
            ctx.probe = true;
            let mut resp = ResponseHeader::build(204, Some(2)).expect("valid status");
            resp.insert_header(PROBE_HEADER, self.probe.value())?;
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(true);
        }
        ctx.request_id = headers::request_id(req.headers.get(X_REQUEST_ID));
        if req.method.as_str() == "PURGE" {
            self.purge(session, ctx).await?;
            return Ok(true);
        }
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
                let _ = resp.insert_header(X_CACHE, CacheStatus::Bypass.as_str());
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
        ctx.directives = RequestDirectives::from_request(
            session.req_header(),
            self.cache.policy.ignore_client_no_cache,
        );
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, _ctx: &mut RequestCtx) -> Result<CacheKey> {
        Ok(key::for_request(session.req_header(), false))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let policy = &self.cache.policy;
        // After a 304, `resp` is Pingora's merge; complete it with every field of the 304.
        Ok(match ctx.not_modified.take() {
            Some(fields) => {
                let merged = merge_not_modified(resp, &fields);
                policy.response_cacheable(session.req_header(), &merged)
            }
            None => policy.response_cacheable(session.req_header(), resp),
        })
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<ForcedFreshness>> {
        Ok(match ctx.directives.on_hit(meta, SystemTime::now()) {
            HitDecision::Default => None,
            HitDecision::Revalidate => Some(ForcedFreshness::ForceExpired),
            HitDecision::ServeStale => {
                ctx.served_stale = true;
                Some(ForcedFreshness::ForceFresh)
            }
        })
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        if ctx.cache_enabled && ctx.directives.only_if_cached {
            let kind = ErrorKind::NotCached;
            self.respond_error(session, ctx, kind, kind.default_message())
                .await;
            return Ok(false);
        }
        Ok(true)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        // The stored response's own windows were checked by Pingora before this is asked.
        let serve =
            !ctx.directives.no_cache && error.is_none_or(|e| e.esource() == &ErrorSource::Upstream);
        ctx.served_stale |= serve;
        serve
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
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.upstream_started.get_or_insert_with(Instant::now);
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
        hop_by_hop::strip_request(upstream_request);
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

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let now = Instant::now();
        if let Some(connected) = ctx.upstream_connected {
            METRICS
                .upstream_response
                .observe((now - connected).as_secs_f64());
        }
        ctx.upstream_header = Some(now);
        if upstream_response.status.is_server_error() {
            METRICS.origin_errors.with_label_values(&["5xx"]).inc();
        }
        hop_by_hop::strip_response(upstream_response);
        if !upstream_response.headers.contains_key(header::DATE) {
            // RFC 9110 §6.6.1: a recipient with a clock adds the Date it received it at.
            upstream_response
                .insert_header(header::DATE, httpdate::fmt_http_date(SystemTime::now()))?;
        }
        if ctx.cache_enabled && upstream_response.status == http::StatusCode::NOT_MODIFIED {
            ctx.not_modified = Some(upstream_response.headers.clone());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Before the client sees the response, so its next request sees the invalidation.
        for key in invalidation::targets(session.req_header(), upstream_response, false) {
            if let Err(e) = self.cache.backend.remove(&key).await {
                warn!("invalidation failed, request_id={}: {e}", ctx.request_id);
            }
        }
        if session.is_process_shutting_down() {
            // Draining: this response is the connection's last, and says so, so that the
            // client does not send another request on a connection about to close.
            session.set_keepalive(None);
        }
        let status = cache_status(session.cache.phase(), ctx.cache_enabled, ctx.served_stale);
        if session.cache.lock_duration().is_some() {
            self.cache.stats.record_coalesced_wait();
        }
        ctx.cache_status = Some(status);
        // Counted before the response leaves, so a client that reads the stats right after
        // a response sees it counted.
        self.cache.stats.record(status);
        upstream_response.insert_header(X_CACHE, status.as_str())?;
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

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        _ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        let kind = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout => "timeout",
            _ => "connect",
        };
        METRICS.origin_errors.with_label_values(&[kind]).inc();
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        _ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if e.esource() == &ErrorSource::Upstream {
            let kind = match e.etype() {
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
                _ => "reset",
            };
            METRICS.origin_errors.with_label_values(&[kind]).inc();
        }
        // Pingora's default retry policy: only idempotent requests, only on a reused
        // connection, only while the request body can be replayed.
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let now = Instant::now();
        if let (false, Some(started)) = (reused, ctx.upstream_started) {
            METRICS
                .upstream_connect
                .observe((now - started).as_secs_f64());
        }
        ctx.upstream_connected = Some(now);
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if ctx.probe {
            return;
        }
        if self.shared_tier && ctx.cache_enabled && ctx.upstream_started.is_some() {
            // A fetch that stored nothing ends the fill here, so other instances waiting
            // on it in a shared tier go on at once.
            let key = key::for_request(session.req_header(), false);
            self.cache.backend.fill_done(&key).await;
        }
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let cache = ctx
            .cache_status
            .unwrap_or_else(|| ctx.own_response_status())
            .as_str();
        let elapsed = ctx.started.elapsed();
        METRICS
            .requests
            .with_label_values(&[method_label(&req.method), status_class(status), cache])
            .inc();
        METRICS
            .request_duration
            .with_label_values(&[cache])
            .observe(elapsed.as_secs_f64());
        if !logging::access_enabled() {
            return;
        }
        let cause = e.map(|e| e.to_string());
        let upstream_ms = ctx.upstream_started.and_then(|start| {
            ctx.upstream_header
                .map(|end| (end - start).as_secs_f64() * 1000.0)
        });
        logging::access(&AccessRecord {
            timestamp: AccessRecord::timestamp(),
            request_id: &ctx.request_id,
            client: session.client_addr().map(|a| a.to_string()),
            method: req.method.as_str(),
            path: req.uri.path(),
            query: req.uri.query(),
            status,
            cache,
            bytes_sent: session.as_downstream().body_bytes_sent(),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            upstream_ms,
            origin: ctx
                .upstream_started
                .map(|_| self.upstream.origin.addr.to_string()),
            user_agent: req
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
            error: ctx.error.map(ErrorKind::code).or(cause.as_deref()),
        });
    }
}

/// The method as a metric label: the standard ones, everything else as OTHER, so clients
/// cannot create label values at will.
fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ if method.as_str() == "PURGE" => "PURGE",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::NoCacheReason;

    #[test]
    fn x_cache_follows_the_cache_phase() {
        assert_eq!(cache_status(CachePhase::Hit, true, false), CacheStatus::Hit);
        assert_eq!(
            cache_status(CachePhase::Hit, true, true),
            CacheStatus::Stale
        );
        assert_eq!(
            cache_status(CachePhase::Miss, true, false),
            CacheStatus::Miss
        );
        assert_eq!(
            cache_status(CachePhase::Expired, true, false),
            CacheStatus::Expired
        );
        assert_eq!(
            cache_status(CachePhase::Expired, true, true),
            CacheStatus::Stale
        );
        assert_eq!(
            cache_status(CachePhase::Stale, true, false),
            CacheStatus::Stale
        );
        assert_eq!(
            cache_status(CachePhase::Revalidated, true, false),
            CacheStatus::Revalidated
        );
        assert_eq!(
            cache_status(
                CachePhase::Disabled(NoCacheReason::OriginNotCache),
                true,
                false
            ),
            CacheStatus::Miss
        );
        assert_eq!(
            cache_status(
                CachePhase::Disabled(NoCacheReason::NeverEnabled),
                false,
                false
            ),
            CacheStatus::Bypass
        );
    }
}
