//! The proxy: Pingora's `ProxyHttp` phases for one request, in the order they run.
//!
//! ```text
//! early_request_filter     request limits: target, header fields, declared body
//!                          (414/431/413, `limits`; Pingora's own refusals and the
//!                          header timeout are answered by `limits::server_options`)
//! request_filter           readiness probe; client connection (TLS, h2); request ID;
//!                          Host; 308 to https (redirect_http); route (404 NO_ROUTE);
//!                          PURGE; CORS preflight
//! request_cache_filter     GET/HEAD on a caching route, no upgrade: enable the cache
//! cache_key_callback       client's scheme + host + path?query, minus the route's
//!                          ignored params
//! cache_vary_filter        picks the stored variant matching the request's Vary
//! cache_hit_filter         request no-cache/max-age/min-fresh/max-stale vs the entry
//! cache_not_modified_filter  304 for matching conditionals (Date without Last-Modified)
//!   |-- usable hit (fresh, or stale as allowed) ----------------------------+
//!   |   miss/expired: concurrent requests for a key wait on the cache lock  |
//! proxy_upstream_filter    a range inside the URL's partial entry: 206 from |
//!                          it (`partial`); only-if-cached: 504 instead of   |
//!                          going upstream                                   |
//! upstream_peer            a server of the route's upstream group (skipping |
//!                          servers that failed this request), timeouts, h2  |
//! upstream_request_filter  Host, X-Request-Id, X-Forwarded-*; hop-by-hop out|
//!                          (Upgrade kept for upgrades); route header rules; |
//!                          Range for partial entries (`partial`)            |
//! upstream_response_filter hop-by-hop out, Date in, HTTP/1.1; 304 fields;  |
//!                          a 206 joined to the stored part (`partial`)      |
//! upstream_response_body_filter  the stored part in front (`partial`)      |
//! response_cache_filter    store or not, and for how long (cache::policy)   |
//! should_serve_stale       stale-while-revalidate / stale-if-error (after an|
//!                          origin failure: Connection: close, its last one) |
//!   |                                                                       |
//! response_filter          X-Cache, counters, invalidation after unsafe  <--+
//!                          methods, POST responses for later GETs
//!                          (`post_reuse`), private targeted fields out,
//!                          X-Request-Id, security headers, HSTS (TLS), CORS,
//!                          route header rules; Connection: close while draining;
//!                          the client's own range of a part (`partial`)
//! fail_to_proxy            any failure above: one JSON error (502, 504, ...)
//! request_body_filter      a body over limits.max_body_bytes as it arrives: 413
//! fail_to_connect,         origin errors counted by kind; retried on another
//!   error_while_proxy      server of the group (see `retry`)
//! response_body_filter     collects a POST response to be stored; the client's
//!                          range of a part
//! logging                  stores it; a superseded partial entry out; then
//!                          `observe`: access record, request metrics, the status
//!                          page's top URLs
//! ```
//!
//! Responses the proxy writes itself (probe and preflight answers, PURGE results, errors)
//! skip `response_filter`, so they get the same headers through `own_headers` (`respond`).
//! The state the phases share is [`RequestCtx`] (`ctx`).

pub mod cors;
mod ctx;
pub mod edge;
pub mod hop_by_hop;
pub mod limits;
mod observe;
pub mod partial;
pub mod post_reuse;
mod respond;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::HeaderValue;
use log::warn;
use std::time::SystemTime;

use pingora_cache::key::HashBinary;
use pingora_cache::{
    CacheKey, CacheMeta, CachePhase, ForcedFreshness, HitHandler, NoCacheReason, RespCacheable,
};
use pingora_core::modules::http::HttpModules;
use pingora_core::protocols::{Digest, ALPN};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{CachedBodyFile, FailToProxy, ProxyHttp, Session};

use crate::admin::{ProbeToken, PROBE_HEADER};
use crate::auth::AdminAuth;
use crate::cache::{
    conditional, invalidation, key, merge_not_modified, storage, vary, Cache, CachePolicy,
    CacheStatus, HitDecision, RequestDirectives,
};
use crate::config::routing::Selection;
use crate::config::{Config, CorsConfig, LimitsConfig, UpstreamConfig};
use crate::error::ErrorKind;
use crate::headers::{self, X_REQUEST_ID};
use crate::metrics::METRICS;
use crate::routes::{self, Route, Router};
use crate::status::StatusBoard;
use crate::upstream;
use cors::CorsDecision;
use edge::{ClientConnection, EdgeSettings};
use partial::{Begin, RangeFill};
use post_reuse::PendingStore;

pub use ctx::RequestCtx;

/// Idle upstream connections are kept this long for reuse.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Concurrent streams on one h2 connection to an origin (Pingora's default is 1, which would
/// open a connection per concurrent request and lose h2's point).
const UPSTREAM_H2_STREAMS: usize = 100;

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
    /// HSTS and the redirect to https.
    edge: EdgeSettings,
    /// The cache has a shared tier, whose fill locks a fetch must end (see `logging`).
    shared_tier: bool,
    router: Arc<Router>,
    /// Where the busiest URLs are counted, for the admin status page.
    status: Arc<StatusBoard>,
    limits: LimitsConfig,
}

impl Proxy {
    pub fn new(
        config: &Config,
        cache: Arc<Cache>,
        probe: ProbeToken,
        router: Arc<Router>,
        status: Arc<StatusBoard>,
    ) -> Self {
        limits::init_metrics();
        Proxy {
            limits: config.limits.clone(),
            router,
            status,
            shared_tier: cache.backend.l2_status().is_some(),
            cache,
            auth: AdminAuth::new(config.admin.token.clone()),
            purge_enabled: config.cache.purge,
            probe,
            upstream: config.upstream.clone(),
            cors: config.cors.clone(),
            security_headers: config.security_headers,
            edge: EdgeSettings::new(config),
        }
    }

    /// Marks the current server failed for this request; whether another may be tried.
    fn retry(&self, ctx: &mut RequestCtx) -> bool {
        let Some(route) = ctx.route.as_ref() else {
            return false;
        };
        if let Some(server) = ctx.server.take() {
            ctx.failed.push(server);
        }
        let again = ctx.failed.len() <= route.upstream.retries;
        if again {
            METRICS
                .upstream_retries
                .with_label_values(&[route.upstream.name.as_str()])
                .inc();
        }
        again
    }
}

/// The cache key of a request, with its route's query rules; `https`: it came over TLS.
fn request_key(req: &RequestHeader, route: Option<&Route>, https: bool) -> CacheKey {
    match route {
        Some(route) => {
            let pq = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
            route.cache_key(https, key::request_host(req), pq)
        }
        None => key::for_request(req, https),
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

/// Names of the fields the proxy adds to every upstream request, parsed once: a name given as
/// text is parsed on every use.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = RequestCtx;

    /// No downstream modules. Pingora's default adds its response compression module,
    /// disabled (level 0), which still costs every request its context, an allocation and a
    /// call per header and body chunk; the proxy compresses nothing (stored bodies are served
    /// as the origin sent them, with their `Content-Encoding` and `Vary`).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            conn: ClientConnection::default(),
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
            route: None,
            upgrade: None,
            server: None,
            failed: Vec::new(),
            post_store: None,
            range_fill: None,
            partial_hit: false,
            limits: limits::RequestLimits::default(),
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        limits::check_request(&self.limits, session, &mut ctx.limits, &mut ctx.request_id)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (state, id) = (&mut ctx.limits, ctx.request_id.as_str());
        limits::check_body(&self.limits, session, body.as_ref(), state, id)
    }

    /// A refusal of `limits` is logged there, once, as a client's mistake.
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, _e: &Error) -> bool {
        ctx.limits.refused()
    }

    /// Every path that answers here awaits its own box: `async_trait` boxes this future on
    /// every request, and it is as large as its largest await (a purge's, an error
    /// response's), so the path every proxied request takes would copy 1,400 bytes.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        // Any process's readiness probe is answered here with this process's token, never
        // proxied: during an upgrade the new process probes the listener while the old one
        // still owns it, and the origin must not see those probes.
        if req.headers.contains_key(PROBE_HEADER) {
            ctx.probe = true;
            let mut resp = ResponseHeader::build(204, Some(2)).expect("valid status");
            resp.insert_header(PROBE_HEADER, self.probe.value())?;
            Box::pin(session.write_response_header(Box::new(resp), true)).await?;
            return Ok(true);
        }
        ctx.conn = ClientConnection::of(session);
        ctx.request_id = headers::request_id(req.headers.get(X_REQUEST_ID));
        // One lookup of the host serves the check and the route; the rest only when it
        // came out empty (no Host, an empty one, or one that is not text).
        let host = key::request_host(req);
        if host.is_empty()
            && !req.headers.contains_key(header::HOST)
            && req.uri.authority().is_none()
        {
            Box::pin(self.respond_error(
                session,
                ctx,
                ErrorKind::BadRequest,
                "the request has no Host header",
            ))
            .await;
            return Ok(true);
        }
        if let Some(mut resp) = self.edge.redirect(&ctx.conn, req) {
            ctx.cache_status = Some(CacheStatus::Bypass);
            self.own_headers(&mut resp, ctx, CacheStatus::Bypass, false);
            Box::pin(session.write_response_header(Box::new(resp), true)).await?;
            return Ok(true);
        }
        let Some(route) = self.router.route(host, req.uri.path()) else {
            let kind = ErrorKind::NoRoute;
            Box::pin(self.respond_error(session, ctx, kind, kind.default_message())).await;
            return Ok(true);
        };
        ctx.route = Some(route.clone());
        ctx.upgrade = hop_by_hop::upgrade(&req.headers);
        if req.method.as_str() == "PURGE" {
            Box::pin(self.purge(session, ctx)).await?;
            return Ok(true);
        }
        match cors::decide(&self.cors, req) {
            CorsDecision::Preflight(origin) => {
                let mut resp = cors::preflight_response(&self.cors, &origin, req);
                self.own_headers(&mut resp, ctx, CacheStatus::Bypass, false);
                ctx.cache_status = Some(CacheStatus::Bypass);
                Box::pin(session.write_response_header(Box::new(resp), true)).await?;
                Ok(true)
            }
            CorsDecision::DeniedPreflight => {
                Box::pin(self.respond_error(
                    session,
                    ctx,
                    ErrorKind::Forbidden,
                    "the Origin is not allowed by the CORS policy",
                ))
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
        let route_caches = ctx.route.as_ref().is_some_and(|r| r.caches());
        if !route_caches
            || ctx.upgrade.is_some()
            || !CachePolicy::request_cacheable(session.req_header())
        {
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

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        Ok(request_key(
            session.req_header(),
            ctx.route.as_deref(),
            ctx.conn.https(),
        ))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let policy = &self.cache.policy;
        let ttl = ctx.route.as_ref().and_then(|r| r.cache.default_ttl);
        if let Some(fill) = ctx.range_fill.as_mut() {
            if fill.stores_part() {
                let cacheable = policy.partial_cacheable(session.req_header(), resp, ttl);
                fill.set_stored(matches!(cacheable, RespCacheable::Cacheable(_)));
                return Ok(cacheable);
            }
            if RangeFill::answers_range_only(resp) {
                let reason = NoCacheReason::Custom("range-not-satisfiable");
                return Ok(RespCacheable::Uncacheable(reason));
            }
        }
        // After a 304, `resp` is Pingora's merge; complete it with every field of the 304.
        Ok(match ctx.not_modified.take() {
            Some(fields) => {
                let merged = merge_not_modified(resp, &fields);
                policy.response_cacheable(session.req_header(), &merged, ttl)
            }
            None => policy.response_cacheable(session.req_header(), resp, ttl),
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
        let targets = &self.cache.policy.targets;
        Ok(
            match ctx.directives.on_hit(meta, targets, SystemTime::now()) {
                HitDecision::Default => None,
                HitDecision::Revalidate => Some(ForcedFreshness::ForceExpired),
                HitDecision::ServeStale => {
                    ctx.served_stale = true;
                    Some(ForcedFreshness::ForceFresh)
                }
            },
        )
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        if ctx.cache_enabled && session.cache.phase() == CachePhase::Miss {
            // The key the lookup used: building it again would hash it again.
            let key = session.cache.cache_key();
            match partial::begin(&self.cache, session.req_header(), key, &ctx.directives).await {
                Begin::Hit(hit) => {
                    self.serve_partial(session, ctx, hit).await?;
                    return Ok(false);
                }
                Begin::Fetch(fill) => ctx.range_fill = Some(Box::new(fill)),
                Begin::Normal => {}
            }
        }
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
        session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        // The stored response's own windows were checked by Pingora before this is asked.
        let serve =
            !ctx.directives.no_cache && error.is_none_or(|e| e.esource() == &ErrorSource::Upstream);
        ctx.served_stale |= serve;
        if serve && error.is_some() {
            // Pingora drops the client's connection after a stale response served for an
            // origin failure: say so, or the client's next request on it is lost.
            session.set_keepalive(None);
        }
        serve
    }

    fn cache_not_modified_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<bool> {
        Ok(conditional::not_modified(session.req_header(), resp))
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
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.upstream_started.get_or_insert_with(Instant::now);
        let route = ctx.route.clone().expect("routed in request_filter");
        let group = &route.upstream;
        // Hash selections follow the cache key, so one URL keeps going to one server.
        let key = match group.config().selection {
            Selection::Hash | Selection::Consistent => {
                request_key(session.req_header(), Some(&route), ctx.conn.https())
                    .primary_key_str()
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec()
            }
            Selection::RoundRobin | Selection::Random => Vec::new(),
        };
        let Some(server) = group.select(&key, &ctx.failed) else {
            return Error::e_explain(
                ErrorType::ConnectRefused,
                format!("upstream {}: every server failed this request", group.name),
            )
            .map_err(|e| e.into_up());
        };
        let addr = *server.addr.as_inet().expect("servers are IP addresses");
        let sni = group
            .sni
            .clone()
            .or_else(|| upstream::server_name(&server).map(str::to_owned))
            .unwrap_or_else(|| addr.ip().to_string());
        ctx.server = Some(server);
        let mut peer = HttpPeer::new(addr, group.tls, sni);
        let opts = &mut peer.options;
        opts.connection_timeout = Some(self.upstream.connect_timeout);
        // Connect plus TLS handshake.
        opts.total_connection_timeout = Some(self.upstream.connect_timeout * 2);
        let read_timeout = if ctx.upgrade.is_some() {
            // A tunnel is idle between messages: its own, longer timeout.
            self.upstream.upgrade_idle_timeout
        } else {
            self.upstream.read_timeout
        };
        opts.read_timeout = Some(read_timeout);
        opts.write_timeout = Some(read_timeout);
        opts.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        // h2 to the origin when the group offers it; a tunnel (WebSocket) needs HTTP/1.1.
        if group.http2 && ctx.upgrade.is_none() {
            opts.alpn = ALPN::H2H1;
            opts.max_h2_streams = UPSTREAM_H2_STREAMS;
        }
        if ctx.upgrade.is_some() {
            session.set_read_timeout(Some(self.upstream.upgrade_idle_timeout));
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        hop_by_hop::strip_request(upstream_request);
        if let Some(protocol) = &ctx.upgrade {
            upstream_request.insert_header(header::CONNECTION, "Upgrade")?;
            upstream_request.insert_header(header::UPGRADE, protocol.clone())?;
        }
        let route = ctx.route.as_ref().expect("routed in request_filter");
        // `--origin`'s upstream gets the origin's authority unless told to keep the client's
        // Host; upstream groups serve sites, and get the client's Host.
        if let (true, false, Some(origin)) = (
            route.upstream.from_origin_flag,
            self.upstream.preserve_host,
            &self.upstream.origin,
        ) {
            upstream_request.insert_header(header::HOST, &origin.authority)?;
        }
        routes::apply_request_rules(&route.request_headers, upstream_request);
        upstream_request.insert_header(X_REQUEST_ID, &ctx.request_id)?;
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            let ip = edge::ip_text(client.ip());
            let xff = match upstream_request.headers.get(&X_FORWARDED_FOR) {
                Some(prev) => format!("{}, {ip}", String::from_utf8_lossy(prev.as_bytes())),
                None => ip,
            };
            upstream_request.insert_header(X_FORWARDED_FOR, xff)?;
        }
        let proto = HeaderValue::from_static(ctx.conn.scheme());
        upstream_request.insert_header(X_FORWARDED_PROTO, proto)?;
        if let Some(fill) = &ctx.range_fill {
            fill.upstream_request(session.req_header(), upstream_request);
        }
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
        self.count_upstream(ctx, upstream_response.status.as_u16());
        let switching = upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS;
        let upgrade = switching
            .then(|| hop_by_hop::upgrade(&upstream_response.headers))
            .flatten();
        hop_by_hop::strip_response(upstream_response);
        // RFC 9110 §6.2: the version is per hop; this proxy speaks HTTP/1.1 to its clients
        // whatever the origin spoke (an HTTP/1.0 origin's status line must not leak).
        upstream_response.set_version(http::Version::HTTP_11);
        if let Some(protocol) = upgrade {
            upstream_response.insert_header(header::CONNECTION, "Upgrade")?;
            upstream_response.insert_header(header::UPGRADE, protocol)?;
        }
        if !upstream_response.headers.contains_key(header::DATE) {
            // RFC 9110 §6.6.1: a recipient with a clock adds the Date it received it at.
            upstream_response
                .insert_header(header::DATE, httpdate::fmt_http_date(SystemTime::now()))?;
        }
        if ctx.cache_enabled && upstream_response.status == http::StatusCode::NOT_MODIFIED {
            ctx.not_modified = Some(Box::new(upstream_response.headers.clone()));
        }
        if let Some(fill) = ctx.range_fill.as_mut() {
            fill.upstream_response(upstream_response, self.cache.max_object_bytes);
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(fill) = ctx.range_fill.as_mut() {
            fill.upstream_body(body);
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Before the client sees the response, so its next request sees the invalidation.
        let route = ctx.route.clone();
        let https = ctx.conn.https();
        let key_for = |host: &str, pq: &str| match &route {
            Some(route) => route.cache_key(https, host, pq),
            None => key::for_parts(https, host, pq),
        };
        let req = session.req_header();
        for key in invalidation::targets(req, upstream_response, https, key_for) {
            if let Err(e) = self.cache.backend.remove(&key).await {
                warn!("invalidation failed, request_id={}: {e}", ctx.request_id);
            }
        }
        let req = session.req_header();
        if req.method == http::Method::POST
            && ctx.upgrade.is_none()
            && ctx.route.as_ref().is_some_and(|r| r.caches())
        {
            let key = request_key(req, ctx.route.as_deref(), ctx.conn.https());
            ctx.post_store =
                PendingStore::start(&self.cache, key, req, upstream_response).map(Box::new);
        }
        if session.is_process_shutting_down() {
            // Draining: this response is the connection's last, and says so, so that the
            // client does not send another request on a connection about to close.
            session.set_keepalive(None);
        }
        let status = match ctx.partial_hit {
            true if ctx.served_stale => CacheStatus::Stale,
            true => CacheStatus::Hit,
            false => cache_status(session.cache.phase(), ctx.cache_enabled, ctx.served_stale),
        };
        if session.cache.lock_duration().is_some() {
            self.cache.stats.record_coalesced_wait();
        }
        ctx.cache_status = Some(status);
        // Counted before the response leaves, so a client that reads the stats right after
        // a response sees it counted.
        self.cache.stats.record(status);
        // Targeted fields of the operator's own are this cache's instructions alone.
        for field in self.cache.policy.targets.private_fields() {
            upstream_response.remove_header(field);
        }
        self.own_headers(upstream_response, ctx, status, true);
        if let Some(route) = &ctx.route {
            routes::apply_response_rules(&route.response_headers, upstream_response);
        }
        if let Some(fill) = &ctx.range_fill {
            fill.client_header(upstream_response);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if let Some(store) = ctx.post_store.as_mut() {
            if !store.push(body.as_ref(), end_of_stream) {
                ctx.post_store = None;
            }
        }
        if let Some(fill) = ctx.range_fill.as_mut() {
            fill.client_body(body);
        }
        Ok(None)
    }

    /// A hit's whole body in the body file goes out with sendfile(2) where the client's
    /// connection allows: [`Self::response_body_filter`] has nothing to do on a hit that
    /// neither stores a POST response nor fills a range.
    fn cache_hit_body_file(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Option<CachedBodyFile> {
        if ctx.post_store.is_some() || ctx.range_fill.is_some() {
            return None;
        }
        let (fd, offset, len) = storage::hit_body_file(session.cache.hit_handler())?;
        Some(CachedBodyFile { fd, offset, len })
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
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let kind = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout => "timeout",
            _ => "connect",
        };
        METRICS.origin_errors.with_label_values(&[kind]).inc();
        self.count_upstream(ctx, 0);
        // The request never reached the server: any method may go to another one.
        if self.retry(ctx) {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if e.esource() == &ErrorSource::Upstream {
            let kind = match e.etype() {
                ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
                _ => "reset",
            };
            METRICS.origin_errors.with_label_values(&[kind]).inc();
        }
        let mut e = e.more_context(format!("Peer: {peer}"));
        // The request may have reached the server: only idempotent requests go again, only
        // while nothing was sent to the client and the body can be replayed.
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated()
            && session.response_written().is_none()
            && ctx.upgrade.is_none();
        if !replayable {
            e.set_retry(false);
        } else if e.esource() == &ErrorSource::Upstream && self.retry(ctx) {
            e.set_retry(true);
        } else {
            // Pingora's default: a failure on a reused connection may be a stale keep-alive.
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
        // The rare awaits in their own boxes, as in `request_filter`: this future is boxed
        // on every request.
        if let (None, Some(store)) = (e, ctx.post_store.take()) {
            Box::pin((*store).commit(&self.cache)).await;
        }
        if let Some(fill) = ctx.range_fill.take() {
            Box::pin((*fill).finish(&self.cache)).await;
        }
        // A fetch, or an answer from the partial entry, holds the fill lock its lookup took.
        let filled = ctx.upstream_started.is_some() || ctx.partial_hit;
        if self.shared_tier && ctx.cache_enabled && filled {
            // A fetch that stored nothing ends the fill here, so other instances waiting
            // on it in a shared tier go on at once.
            let key = request_key(session.req_header(), ctx.route.as_deref(), ctx.conn.https());
            Box::pin(self.cache.backend.fill_done(&key)).await;
        }
        self.observe(session, e, ctx);
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
