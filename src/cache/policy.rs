//! What may be served from and stored in this shared cache.
//!
//! Origin directives win: `no-store` and `private` are never stored, `s-maxage` over
//! `max-age` over `Expires` give the freshness. A response with no freshness information gets
//! the configured default TTL when its status is cacheable by default; a default TTL of zero
//! leaves such responses unstored. Whatever the headers say, this cache does not store by
//! default responses that set cookies, responses to requests with `Authorization` (unless
//! `public`, `s-maxage` or `must-revalidate` allow it) and 5xx errors without explicit
//! freshness.

use std::time::{Duration, SystemTime};

use http::{header, Method, StatusCode};
use pingora_cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora_cache::filters::{calculate_expires_header_time, calculate_serve_stale_durations};
use pingora_cache::{CacheMeta, CacheMetaDefaults, NoCacheReason, RespCacheable};
use pingora_http::{RequestHeader, ResponseHeader};

/// Defaults for stale windows when the origin gives none: serve no stale content.
static NO_DEFAULTS: CacheMetaDefaults = CacheMetaDefaults::new(|_| None, 0, 0);

#[derive(Debug, Clone)]
pub struct CachePolicy {
    /// Freshness for responses without explicit freshness; zero disables storing them.
    pub default_ttl: Duration,
}

impl CachePolicy {
    /// Whether the cache is consulted for this request at all.
    pub fn request_cacheable(req: &RequestHeader) -> bool {
        req.method == Method::GET || req.method == Method::HEAD
    }

    /// Decides whether and for how long a response may be stored.
    pub fn response_cacheable(&self, req: &RequestHeader, resp: &ResponseHeader) -> RespCacheable {
        self.response_cacheable_at(req, resp, SystemTime::now())
    }

    fn response_cacheable_at(
        &self,
        req: &RequestHeader,
        resp: &ResponseHeader,
        now: SystemTime,
    ) -> RespCacheable {
        use RespCacheable::Uncacheable;
        let cc = CacheControl::from_resp_headers(resp);
        if cc
            .as_ref()
            .is_some_and(|cc| cc.is_cacheable() == Cacheable::No)
        {
            return Uncacheable(NoCacheReason::OriginNotCache);
        }
        let authorized = req.headers.contains_key(header::AUTHORIZATION);
        if authorized
            && !cc
                .as_ref()
                .is_some_and(|cc| cc.allow_caching_authorized_req())
        {
            return Uncacheable(NoCacheReason::Custom("authorization"));
        }
        if resp.headers.contains_key(header::SET_COOKIE) {
            return Uncacheable(NoCacheReason::Custom("set-cookie"));
        }
        if super::vary::varies_on_everything(resp) {
            return Uncacheable(NoCacheReason::Custom("vary-star"));
        }
        if resp.status == StatusCode::PARTIAL_CONTENT {
            // A part is never stored as if it were the whole object.
            return Uncacheable(NoCacheReason::Custom("partial-content"));
        }

        let explicit = cc
            .as_ref()
            .and_then(|cc| cc.fresh_duration())
            .map(|ttl| fresh_until(now, ttl))
            .or_else(|| calculate_expires_header_time(resp));
        let fresh_until = match explicit {
            Some(t) => t,
            None if self.default_ttl.is_zero() => {
                return Uncacheable(NoCacheReason::Custom("no-freshness"))
            }
            None if !cacheable_by_default(resp.status) => {
                return Uncacheable(NoCacheReason::OriginNotCache)
            }
            None => fresh_until(now, self.default_ttl),
        };

        let (swr, sie) = calculate_serve_stale_durations(cc.as_ref(), &NO_DEFAULTS);
        let mut header = resp.clone();
        if let Some(cc) = &cc {
            cc.strip_private_headers(&mut header);
        }
        RespCacheable::Cacheable(CacheMeta::new(fresh_until, now, swr, sie, header))
    }
}

/// A zero TTL means "stored but already stale" (`no-cache`, `max-age=0`).
fn fresh_until(now: SystemTime, ttl: Duration) -> SystemTime {
    if ttl.is_zero() {
        now.checked_sub(Duration::from_secs(1)).unwrap_or(now)
    } else {
        now.checked_add(ttl).unwrap_or(now)
    }
}

/// Status codes that may get the default TTL (RFC 9110 §15.1's heuristically cacheable
/// codes, minus 206, which is never stored, and 501, as no 5xx is stored without explicit
/// freshness).
fn cacheable_by_default(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(300);

    fn policy() -> CachePolicy {
        CachePolicy { default_ttl: TTL }
    }

    fn get() -> RequestHeader {
        RequestHeader::build("GET", b"/", None).unwrap()
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    /// Remaining freshness in seconds, or None when not storable.
    fn ttl(p: &CachePolicy, req: &RequestHeader, r: &ResponseHeader) -> Option<u64> {
        let now = SystemTime::now();
        match p.response_cacheable_at(req, r, now) {
            RespCacheable::Cacheable(meta) => Some(
                meta.fresh_until()
                    .duration_since(now)
                    .map_or(0, |d| d.as_secs()),
            ),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    #[test]
    fn only_get_and_head_use_the_cache() {
        for (m, ok) in [
            ("GET", true),
            ("HEAD", true),
            ("POST", false),
            ("PUT", false),
            ("DELETE", false),
        ] {
            let r = RequestHeader::build(m, b"/", None).unwrap();
            assert_eq!(CachePolicy::request_cacheable(&r), ok, "{m}");
        }
    }

    #[test]
    fn origin_freshness_wins_over_default() {
        let p = policy();
        assert_eq!(
            ttl(&p, &get(), &resp(200, &[("cache-control", "max-age=60")])),
            Some(60)
        );
        assert_eq!(
            ttl(
                &p,
                &get(),
                &resp(200, &[("cache-control", "max-age=60, s-maxage=120")])
            ),
            Some(120)
        );
        assert_eq!(ttl(&p, &get(), &resp(200, &[])), Some(300));
        let expires = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(1000));
        let t = ttl(&p, &get(), &resp(200, &[("expires", &expires)])).unwrap();
        assert!((990..=1000).contains(&t), "{t}");
    }

    #[test]
    fn never_stored() {
        let p = policy();
        for headers in [
            &[("cache-control", "no-store")][..],
            &[("cache-control", "private")],
            &[("cache-control", "private, max-age=60")],
            &[("set-cookie", "a=b")],
            &[("set-cookie", "a=b"), ("cache-control", "max-age=60")],
            &[("vary", "*"), ("cache-control", "max-age=60")],
        ] {
            assert_eq!(ttl(&p, &get(), &resp(200, headers)), None, "{headers:?}");
        }
        assert_eq!(
            ttl(&p, &get(), &resp(206, &[("cache-control", "max-age=60")])),
            None
        );
    }

    #[test]
    fn authorization_needs_explicit_permission() {
        let p = policy();
        let mut req = get();
        req.insert_header("authorization", "Bearer x").unwrap();
        assert_eq!(ttl(&p, &req, &resp(200, &[])), None);
        assert_eq!(
            ttl(&p, &req, &resp(200, &[("cache-control", "max-age=60")])),
            None
        );
        assert_eq!(
            ttl(
                &p,
                &req,
                &resp(200, &[("cache-control", "public, max-age=60")])
            ),
            Some(60)
        );
        assert_eq!(
            ttl(&p, &req, &resp(200, &[("cache-control", "s-maxage=60")])),
            Some(60)
        );
        assert_eq!(
            ttl(
                &p,
                &req,
                &resp(200, &[("cache-control", "must-revalidate, max-age=60")])
            ),
            Some(60)
        );
    }

    #[test]
    fn errors_need_explicit_freshness() {
        let p = policy();
        assert_eq!(ttl(&p, &get(), &resp(500, &[])), None);
        assert_eq!(ttl(&p, &get(), &resp(503, &[])), None);
        assert_eq!(
            ttl(&p, &get(), &resp(502, &[("cache-control", "max-age=5")])),
            Some(5)
        );
        assert_eq!(ttl(&p, &get(), &resp(404, &[])), Some(300));
        assert_eq!(ttl(&p, &get(), &resp(302, &[])), None);
    }

    #[test]
    fn zero_default_ttl_stores_only_explicit_freshness() {
        let p = CachePolicy {
            default_ttl: Duration::ZERO,
        };
        assert_eq!(ttl(&p, &get(), &resp(200, &[])), None);
        assert_eq!(
            ttl(&p, &get(), &resp(200, &[("cache-control", "max-age=60")])),
            Some(60)
        );
    }
}
