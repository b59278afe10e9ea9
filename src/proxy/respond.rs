//! Responses the proxy writes itself: the headers every response gets, JSON errors, PURGE,
//! and answers from a URL's partial entry.

use bytes::Bytes;
use http::{header, HeaderValue};
use log::{info, warn};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::{ProxyHttp, Session};

use super::cors::{self, CorsDecision};
use super::partial::PartialHit;
use super::{request_key, Proxy, RequestCtx};
use crate::cache::CacheStatus;
use crate::error::{json_body, ErrorKind};
use crate::headers::{write_fields, SECURITY_HEADERS, X_CACHE, X_REQUEST_ID};
use crate::metrics::METRICS;

impl Proxy {
    /// Headers every response gets: `X-Cache`, the security headers, `X-Request-Id`, HSTS
    /// and CORS. On origin responses an origin's own security header is kept (it may need,
    /// say, `X-Frame-Options: SAMEORIGIN`); on the proxy's own responses they are set.
    pub(super) fn own_headers(
        &self,
        resp: &mut ResponseHeader,
        ctx: &RequestCtx,
        x_cache: CacheStatus,
        from_origin: bool,
    ) {
        write_fields(resp, |w| {
            w.set(X_CACHE, x_cache.header_value());
            if self.security_headers {
                for (name, value) in SECURITY_HEADERS {
                    if from_origin {
                        w.set_if_absent(name, value);
                    } else {
                        w.set(name, value);
                    }
                }
            }
            if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
                w.set(X_REQUEST_ID, id);
            }
            self.edge.apply_hsts(&ctx.conn, w);
        });
        if let CorsDecision::Allow(origin) = &ctx.cors {
            cors::apply(&self.cors, origin, resp);
        }
    }

    /// Writes a JSON error; the connection is closed afterwards.
    pub(super) async fn respond_error(
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
    pub(super) fn json_response(
        &self,
        ctx: &RequestCtx,
        status: u16,
        len: usize,
    ) -> ResponseHeader {
        let mut resp = ResponseHeader::build(status, Some(8)).expect("valid status");
        let _ = resp.insert_header(header::CONTENT_TYPE, "application/json");
        let _ = resp.insert_header(header::CONTENT_LENGTH, len);
        let _ = resp.insert_header(header::CACHE_CONTROL, "no-store");
        self.own_headers(&mut resp, ctx, ctx.own_response_status(), false);
        resp
    }

    /// `PURGE <url>`: removes the URL and all its variants, when enabled and authorised.
    pub(super) async fn purge(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
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
        let key = request_key(req, ctx.route.as_deref(), ctx.conn.https());
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

    /// Answers from the URL's partial entry; the response goes through `response_filter`
    /// like any hit.
    pub(super) async fn serve_partial(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        hit: PartialHit,
    ) -> Result<()> {
        let PartialHit {
            mut header,
            body,
            stale,
        } = hit;
        ctx.partial_hit = true;
        ctx.served_stale |= stale;
        self.response_filter(session, &mut header, ctx).await?;
        session
            .write_response_header(Box::new(header), false)
            .await?;
        session.write_response_body(Some(body), true).await
    }
}
