//! The admin service, on its own port and never proxied: health, cache statistics, clear and
//! purge, and a live status page.
//!
//! | method | path            | does                                   | token |
//! |--------|-----------------|----------------------------------------|-------|
//! | GET    | `/health/live`  | 200 while the process serves           | no    |
//! | GET    | `/health/ready` | 200 when serving, 503 starting/draining| no    |
//! | GET    | `/cache/stats`  | counters and usage, JSON               | no    |
//! | GET    | `/metrics`      | Prometheus text format                 | no    |
//! | GET    | `/upstreams`    | each upstream group, each server, health| no   |
//! | GET    | `/`             | the status page (HTML, no data in it)  | no    |
//! | GET    | `/status`       | the status page's figures, JSON        | if set|
//! | DELETE | `/cache`        | removes every entry                    | yes   |
//! | POST   | `/cache/purge`  | removes one URL (`{"url": "..."}`)     | yes   |
//!
//! Health answers name the process (`pid`): during a binary upgrade two processes serve, and
//! an operator can see which one answered.
//!
//! Mutating endpoints need `Authorization: Bearer <admin.token>` when a token is configured;
//! without one they are served only when the admin service listens on a loopback address and
//! the client connects from loopback. `/status` needs the token when one is set.

pub mod health;
pub mod listener;
pub mod status;

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use log::info;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::auth::AdminAuth;
use crate::cache::{key, Cache};
use crate::config::AdminConfig;
use crate::error::{json_body, ErrorKind};
use crate::headers::{self, SECURITY_HEADERS, X_REQUEST_ID};
use crate::metrics::{self, METRICS};
use crate::routes::Router;
use crate::upstream::Upstreams;
pub use health::{Listener, ProbeToken, Readiness, ReadinessService, PROBE_HEADER};
pub use listener::AdminListener;
pub use status::StatusPage;

/// Largest request body the admin service reads.
const MAX_BODY: usize = 64 * 1024;

pub struct AdminApp {
    cache: Arc<Cache>,
    router: Arc<Router>,
    upstreams: Arc<Upstreams>,
    auth: AdminAuth,
    listens_on_loopback: bool,
    readiness: Readiness,
    probe: ProbeToken,
    status: StatusPage,
}

type Reply = Result<(StatusCode, Value), (ErrorKind, String)>;

fn rejection(kind: ErrorKind) -> (ErrorKind, String) {
    (kind, kind.default_message().to_owned())
}

fn fail(kind: ErrorKind) -> Reply {
    Err(rejection(kind))
}

impl AdminApp {
    pub fn new(
        admin: &AdminConfig,
        cache: Arc<Cache>,
        readiness: Readiness,
        probe: ProbeToken,
        router: Arc<Router>,
        upstreams: Arc<Upstreams>,
        status: StatusPage,
    ) -> Self {
        AdminApp {
            status,
            cache,
            router,
            upstreams,
            auth: AdminAuth::new(admin.token.clone()),
            listens_on_loopback: admin.listen.ip().is_loopback(),
            readiness,
            probe,
        }
    }

    fn authorize(&self, session: &ServerSession) -> Result<(), ErrorKind> {
        self.auth.check(
            session.req_header().headers.get(header::AUTHORIZATION),
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            self.listens_on_loopback,
        )
    }

    async fn route(&self, session: &mut ServerSession) -> Reply {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        match (path.as_str(), &method) {
            ("/health/live", &Method::GET | &Method::HEAD) => Ok((
                StatusCode::OK,
                json!({"status": "live", "pid": std::process::id()}),
            )),
            ("/health/ready", &Method::GET | &Method::HEAD) => {
                if self.readiness.is_ready() {
                    let mut body = json!({"status": "ready", "pid": std::process::id()});
                    // The proxy serves without Redis, so Redis being down is reported, not
                    // a reason to take the instance out of rotation.
                    if let Some(l2) = self.cache.backend.l2_status() {
                        body["redis"] = json!(if l2.up { "up" } else { "down" });
                    }
                    Ok((StatusCode::OK, body))
                } else {
                    Err((
                        ErrorKind::ServiceUnavailable,
                        "not ready: starting or draining".into(),
                    ))
                }
            }
            ("/cache/stats", &Method::GET) => Ok((StatusCode::OK, self.stats())),
            ("/status", &Method::GET) => {
                self.auth
                    .check_read(session.req_header().headers.get(header::AUTHORIZATION))
                    .map_err(rejection)?;
                let body = self
                    .status
                    .json(&self.cache, &self.upstreams, &self.readiness);
                Ok((StatusCode::OK, body))
            }
            ("/upstreams", &Method::GET) => Ok((StatusCode::OK, self.upstreams())),
            ("/cache", &Method::DELETE) => {
                self.authorize(session).map_err(rejection)?;
                let cleared = self.cache.backend.clear().await.map_err(|e| {
                    (
                        ErrorKind::Internal,
                        format!("clearing the cache failed: {e}"),
                    )
                })?;
                self.cache.stats.record_clear();
                METRICS.admin_actions.with_label_values(&["clear"]).inc();
                info!("admin: cache cleared, {cleared} entries removed");
                Ok((StatusCode::OK, json!({"cleared": cleared})))
            }
            ("/cache/purge", &Method::POST) => {
                self.authorize(session).map_err(rejection)?;
                let url = read_purge_url(session).await?;
                let (tls, host, path_and_query) = key::url_parts(&url)
                    .map_err(|e| (ErrorKind::BadRequest, format!("url: {e}")))?;
                // As the proxy keys it: the URL's scheme, and its route may leave query
                // parameters out.
                let key = self.router.cache_key(tls, &host, &path_and_query);
                let purged = self
                    .cache
                    .backend
                    .remove(&key)
                    .await
                    .map_err(|e| (ErrorKind::Internal, format!("purging failed: {e}")))?;
                METRICS.admin_actions.with_label_values(&["purge"]).inc();
                info!(
                    "admin: purge {url}: {}",
                    if purged { "removed" } else { "not cached" }
                );
                Ok((StatusCode::OK, json!({"url": url, "purged": purged})))
            }
            (
                "/health/live" | "/health/ready" | "/cache/stats" | "/cache" | "/cache/purge"
                | "/metrics" | "/upstreams" | "/status" | "/" | "/index.html"
                | "/assets/status.css" | "/assets/status.js",
                _,
            ) => fail(ErrorKind::MethodNotAllowed),
            _ => fail(ErrorKind::NotFound),
        }
    }

    fn stats(&self) -> Value {
        let s = self.cache.stats.snapshot();
        let u = self.cache.backend.usage();
        let lookups = s.hits + s.misses + s.expired + s.stale + s.revalidated;
        let served_from_cache = s.hits + s.stale + s.revalidated;
        json!({
            "hits": s.hits,
            "misses": s.misses,
            "expired": s.expired,
            "stale": s.stale,
            "revalidated": s.revalidated,
            "bypass": s.bypass,
            "hit_ratio": if lookups == 0 { 0.0 } else { served_from_cache as f64 / lookups as f64 },
            "evictions": u.evictions,
            "expirations": u.expirations,
            "entries": u.entries,
            "bytes": u.bytes,
            "max_entries": self.cache.limits.max_entries,
            "max_bytes": self.cache.limits.max_bytes,
            "coalesced_waits": s.coalesced_waits,
            "tiers": self.tiers(&u),
            "last_cleared": s.last_cleared.map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()),
        })
    }
}

impl AdminApp {
    /// Each upstream group and its servers: health, weight, the last active check.
    fn upstreams(&self) -> Value {
        let groups: Vec<Value> = self
            .upstreams
            .iter()
            .map(|g| {
                json!({
                    "name": g.name,
                    "selection": g.config().selection.as_str(),
                    "tls": g.tls,
                    "retries": g.retries,
                    "health_check": g.has_health_check(),
                    "servers": g.servers(),
                })
            })
            .collect();
        json!({ "upstreams": groups })
    }

    /// Each tier: this process's memory, and the shared Redis tier when there is one.
    fn tiers(&self, u: &crate::cache::Usage) -> Value {
        let backend = self.cache.backend;
        let mut tiers = json!({
            "l1": {
                "entries": u.entries,
                "bytes": u.bytes,
                "max_bytes": self.cache.limits.max_bytes,
                "hits": backend.l1_hits().unwrap_or_else(|| self.cache.stats.snapshot().hits),
            }
        });
        if let Some(l2) = backend.l2_status() {
            tiers["l2"] = json!({
                "backend": "redis",
                "up": l2.up,
                "circuit": if l2.circuit_open { "open" } else { "closed" },
                "hits": l2.hits,
                "misses": l2.misses,
                "writes": l2.writes,
                "errors": l2.errors,
            });
        }
        tiers
    }
}

async fn read_purge_url(session: &mut ServerSession) -> Result<String, (ErrorKind, String)> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err((
                        ErrorKind::PayloadTooLarge,
                        ErrorKind::PayloadTooLarge.default_message().into(),
                    ));
                }
            }
            Ok(None) => break,
            Err(e) => return Err((ErrorKind::BadRequest, format!("cannot read the body: {e}"))),
        }
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| {
        (
            ErrorKind::BadRequest,
            format!("the body must be JSON like {{\"url\": \"http://host/path\"}}: {e}"),
        )
    })?;
    v.get("url")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            (
                ErrorKind::BadRequest,
                "the body needs a \"url\" string".into(),
            )
        })
}

/// `GET /metrics`: the Prometheus text format.
fn metrics_response() -> Response<Vec<u8>> {
    let body = metrics::render();
    response_builder(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        &body,
    )
    .body(body)
    .expect("static headers are valid")
}

/// A file of the status page.
fn page_response(content_type: &str, body: &'static str) -> Response<Vec<u8>> {
    response_builder(StatusCode::OK, content_type, body.as_bytes())
        .header("content-security-policy", status::CONTENT_SECURITY_POLICY)
        .body(body.as_bytes().to_vec())
        .expect("static headers are valid")
}

/// The headers every admin response carries. The security headers are always set, whatever
/// the proxy's setting: the admin API is ours, not an origin's.
fn response_builder(
    status: StatusCode,
    content_type: &str,
    body: &[u8],
) -> http::response::Builder {
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::CACHE_CONTROL, "no-store");
    for (name, value) in SECURITY_HEADERS {
        builder = builder.header(name, value);
    }
    builder
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method == Method::GET && req.uri.path() == "/metrics" {
            return metrics_response();
        }
        if req.method == Method::GET {
            if let Some((content_type, body)) = status::asset(req.uri.path()) {
                return page_response(content_type, body);
            }
        }
        let request_id = headers::request_id(session.req_header().headers.get(X_REQUEST_ID));
        let probed = self
            .probe
            .matches(session.req_header().headers.get(PROBE_HEADER));
        let (status, body) = match self.route(session).await {
            Ok((status, value)) => {
                let mut body = serde_json::to_vec(&value).expect("JSON values serialise");
                body.push(b'\n');
                (status, body)
            }
            Err((kind, message)) => (
                StatusCode::from_u16(kind.status()).expect("valid status"),
                json_body(kind, &message, &request_id),
            ),
        };
        let mut builder =
            response_builder(status, "application/json", &body).header(X_REQUEST_ID, request_id);
        if probed {
            builder = builder.header(PROBE_HEADER, self.probe.value());
        }
        builder.body(body).expect("static headers are valid")
    }
}
