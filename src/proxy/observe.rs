//! What a finished request leaves behind: its metrics, its count in the status page's
//! top URLs, and its access record.

use http::header;
use once_cell::sync::Lazy;
use pingora_error::Error;
use pingora_proxy::Session;

use super::{Proxy, RequestCtx};
use crate::cache::key;
use crate::error::ErrorKind;
use crate::logging::{self, AccessRecord};
use crate::metrics::RequestSeries;
use crate::status::Lookup;

/// The series of requests that matched no route (answered by the proxy itself).
static NO_ROUTE: Lazy<RequestSeries> = Lazy::new(|| RequestSeries::new("none"));

impl Proxy {
    /// Records a finished request (the `logging` phase, once the cache's work is done).
    pub(super) fn observe(&self, session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let cache_status = ctx
            .cache_status
            .unwrap_or_else(|| ctx.own_response_status());
        let cache = cache_status.as_str();
        self.status.top.record(
            key::request_host(req),
            req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            Lookup::of(cache_status),
        );
        let elapsed = ctx.started.elapsed();
        ctx.route.as_ref().map_or(&*NO_ROUTE, |r| &r.series).record(
            &req.method,
            status,
            cache_status,
            elapsed.as_secs_f64(),
        );
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
            protocol: ctx.conn.protocol,
            tls: ctx.conn.tls,
            cache,
            bytes_sent: session.as_downstream().body_bytes_sent(),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            upstream_ms,
            origin: ctx.server.as_ref().map(|s| s.addr.to_string()),
            user_agent: req
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
            error: ctx.error.map(ErrorKind::code).or(cause.as_deref()),
        });
    }

    /// Counts a response of the current server of the request's upstream group by its
    /// status (0: none came).
    pub(super) fn count_upstream(&self, ctx: &RequestCtx, status: u16) {
        if let (Some(route), Some(server)) = (&ctx.route, &ctx.server) {
            route.upstream.count_request(&server.addr, status);
        }
    }
}
