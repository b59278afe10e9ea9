//! What may be stored in and served from this shared cache (RFC 9111 §3, §4, §5.2).
//!
//! Response side: `no-store` and `private` are never stored; responses to requests with
//! `Authorization` only with `public`, `s-maxage` or `must-revalidate`; `Set-Cookie`
//! responses and `Vary: *` responses are not stored, nor 206 partial responses (except as a
//! URL's partial entry, see `partial_cacheable`). Freshness comes from
//! [`freshness`](super::freshness): explicit, else heuristic, else the default TTL.
//! The age the response already had on arrival is subtracted from its freshness and carried
//! into the `Age` the cache reports.
//!
//! Request side: `no-store`, `no-cache` (and `Pragma: no-cache` without Cache-Control),
//! `max-age`, `min-fresh`, `max-stale` and `only-if-cached` are read into
//! [`RequestDirectives`]; the proxy applies them when it finds a stored response.

use std::time::{Duration, SystemTime};

use http::header::{self, CACHE_CONTROL, PRAGMA};
use http::{Method, StatusCode};
use pingora_cache::{CacheMeta, NoCacheReason, RespCacheable};
use pingora_http::{RequestHeader, ResponseHeader};

use super::directives::{ResponseDirectives, TargetList};
use super::freshness::{self, Delta, Directives, FreshnessRules};
use super::vary;

#[derive(Debug, Clone)]
pub struct CachePolicy {
    pub freshness: FreshnessRules,
    /// How long past freshness a stored response may be served when the origin fails, for
    /// responses whose directives do not forbid it. An origin's `stale-if-error` wins.
    pub stale_if_error: Duration,
    /// Ignore request `no-cache`/`max-age`/`Pragma: no-cache`, protecting the origin from
    /// clients that force reloads.
    pub ignore_client_no_cache: bool,
    /// Targeted fields (RFC 9213) that govern this cache before Cache-Control.
    pub targets: TargetList,
}

impl CachePolicy {
    /// Whether the cache is consulted for this request at all.
    pub fn request_cacheable(req: &RequestHeader) -> bool {
        req.method == Method::GET || req.method == Method::HEAD
    }

    /// Decides whether and for how long a response may be stored. `default_ttl` overrides
    /// the configured one (a route's `cache.default_ttl`).
    pub fn response_cacheable(
        &self,
        req: &RequestHeader,
        resp: &ResponseHeader,
        default_ttl: Option<Duration>,
    ) -> RespCacheable {
        self.with_ttl(default_ttl, |policy| {
            policy.response_cacheable_at(req, resp, SystemTime::now(), false)
        })
    }

    /// [`response_cacheable`](Self::response_cacheable) for a 206 that is to be stored as
    /// the URL's partial entry (`cache::partial`): the same rules, except that a part is
    /// allowed.
    pub fn partial_cacheable(
        &self,
        req: &RequestHeader,
        resp: &ResponseHeader,
        default_ttl: Option<Duration>,
    ) -> RespCacheable {
        self.with_ttl(default_ttl, |policy| {
            policy.response_cacheable_at(req, resp, SystemTime::now(), true)
        })
    }

    fn with_ttl<T>(&self, default_ttl: Option<Duration>, f: impl FnOnce(&Self) -> T) -> T {
        match default_ttl {
            None => f(self),
            Some(default_ttl) => {
                let mut policy = self.clone();
                policy.freshness.default_ttl = default_ttl;
                f(&policy)
            }
        }
    }

    fn response_cacheable_at(
        &self,
        req: &RequestHeader,
        resp: &ResponseHeader,
        now: SystemTime,
        partial: bool,
    ) -> RespCacheable {
        use RespCacheable::Uncacheable;
        if freshness::has(&req.headers, "no-store") {
            return Uncacheable(NoCacheReason::Custom("request-no-store"));
        }
        // Directives are read by one reader for all of them (Pingora's parser keeps only the
        // last of duplicate directives), from a targeted field when one governs this cache.
        let directives = self.directives(resp);
        let has = |directive| directives.has(directive);
        // §5.2.2.3: `must-understand` stores only a status this cache understands, and then
        // overrides the `no-store` sent along for caches that do not know it.
        let must_understand = has("must-understand");
        if must_understand && !understood(resp.status) {
            return Uncacheable(NoCacheReason::Custom("must-understand"));
        }
        if (has("no-store") && !must_understand) || has("private") {
            return Uncacheable(NoCacheReason::OriginNotCache);
        }
        // §3.5: a response to an authenticated request is shared only when it says so.
        let authorized = req.headers.contains_key(header::AUTHORIZATION);
        if authorized && !(has("public") || has("s-maxage") || has("must-revalidate")) {
            return Uncacheable(NoCacheReason::Custom("authorization"));
        }
        if resp.headers.contains_key(header::SET_COOKIE) {
            return Uncacheable(NoCacheReason::Custom("set-cookie"));
        }
        if vary::varies_on_everything(resp) {
            return Uncacheable(NoCacheReason::Custom("vary-star"));
        }
        if resp.status == StatusCode::PARTIAL_CONTENT && !partial {
            // A part is never stored as if it were the whole object.
            return Uncacheable(NoCacheReason::Custom("partial-content"));
        }
        let Some((lifetime, _)) = freshness::lifetime(
            &resp.headers,
            &directives,
            resp.status,
            now,
            &self.freshness,
        ) else {
            return Uncacheable(NoCacheReason::OriginNotCache);
        };

        let age = freshness::initial_age(&resp.headers, now);
        let fresh_until = match lifetime.checked_sub(age) {
            Some(left) if !left.is_zero() => now.checked_add(left).unwrap_or(now),
            // Stale on arrival, by this much (at least a second, so that a zero lifetime is
            // stale at once): stored, revalidated before use.
            _ => {
                let stale_for = age.saturating_sub(lifetime).max(Duration::from_secs(1));
                now.checked_sub(stale_for).unwrap_or(SystemTime::UNIX_EPOCH)
            }
        };
        let (swr, sie) = self.stale_windows(&directives);
        // Fields named by `no-cache="..."` are kept: every use of such a response is
        // revalidated first (`freshness::lifetime` gives it no freshness), which is what the
        // qualified form asks for those fields. `private` responses are not stored at all.
        let mut meta = CacheMeta::new(fresh_until, now, swr, sie, resp.clone());
        if !age.is_zero() {
            // Age on hits = age on arrival + time in this cache.
            meta.set_epoch_override(now.checked_sub(age).unwrap_or(now));
        }
        RespCacheable::Cacheable(meta)
    }

    /// Whether a response to a POST may be stored for later GETs of its URL (RFC 9111 §4,
    /// RFC 9110 §9.3.3): only with explicit freshness and a `Content-Location` that is the
    /// request's own URI, and then by the same rules as any response.
    pub fn post_response_cacheable(
        &self,
        req: &RequestHeader,
        resp: &ResponseHeader,
    ) -> Option<CacheMeta> {
        let directives = self.directives(resp);
        let explicit = directives.delta("s-maxage").is_present()
            || directives.delta("max-age").is_present()
            || (directives.uses_expires() && resp.headers.contains_key(header::EXPIRES));
        if req.method != Method::POST || !explicit || !content_location_is_target(req, resp) {
            return None;
        }
        match self.response_cacheable_at(req, resp, SystemTime::now(), false) {
            RespCacheable::Cacheable(meta) => Some(meta),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    /// The directives that govern this cache for `resp` (a targeted field or Cache-Control).
    pub fn directives<'a>(&self, resp: &'a ResponseHeader) -> ResponseDirectives<'a> {
        ResponseDirectives::read(&resp.headers, &self.targets)
    }

    /// Seconds a stale response may be served while revalidating and on origin errors.
    fn stale_windows(&self, directives: &ResponseDirectives) -> (u32, u32) {
        if forbids_stale(directives) {
            return (0, 0);
        }
        let secs = |name| match directives.delta(name) {
            Delta::Valid(s) => Some(s),
            _ => None,
        };
        let swr = secs("stale-while-revalidate").unwrap_or(0);
        let configured = u32::try_from(self.stale_if_error.as_secs()).unwrap_or(u32::MAX);
        let sie = secs("stale-if-error").unwrap_or(configured);
        (swr, sie)
    }
}

/// Whether `resp`'s `Content-Location` names the URI `req` was sent to (absolute on the
/// same host, or an absolute path).
fn content_location_is_target(req: &RequestHeader, resp: &ResponseHeader) -> bool {
    let Some(location) = resp
        .headers
        .get(header::CONTENT_LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    else {
        return false;
    };
    let Ok(uri) = location.parse::<http::Uri>() else {
        return false;
    };
    let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let same_host = match uri.authority() {
        Some(authority) => {
            super::key::same_host(authority.as_str(), super::key::request_host(req), false)
        }
        None => location.starts_with('/'),
    };
    same_host && uri.path_and_query().map_or("/", |pq| pq.as_str()) == target
}

/// Status codes whose caching semantics this cache implements (for `must-understand`): the
/// heuristically cacheable ones and the redirects stored with explicit freshness.
fn understood(status: StatusCode) -> bool {
    freshness::cacheable_by_default(status) || matches!(status.as_u16(), 302 | 303 | 307)
}

/// The stored header updated from a 304 (§3.2, §4.3.4): every field of the 304 replaces the
/// stored one, except Content-Length, which describes the stored body. (Pingora's own merge
/// takes only Cache-Control, Expires and ETag.)
pub fn merge_not_modified(
    stored: &ResponseHeader,
    not_modified: &http::HeaderMap,
) -> ResponseHeader {
    let mut merged = stored.clone();
    for name in not_modified.keys() {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        merged.remove_header(name);
        for value in not_modified.get_all(name) {
            let _ = merged.append_header(name.clone(), value.clone());
        }
    }
    merged
}

/// Whether a stored response may never be served stale (§4.2.4): `must-revalidate`,
/// `proxy-revalidate`, `s-maxage` (for a shared cache) and `no-cache` forbid it.
pub fn forbids_stale(directives: &ResponseDirectives) -> bool {
    [
        "must-revalidate",
        "proxy-revalidate",
        "s-maxage",
        "no-cache",
    ]
    .iter()
    .any(|d| directives.has(d))
}

/// What a request asks of the cache (§5.2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-cache` (or `Pragma: no-cache`): revalidate before using a stored response.
    pub no_cache: bool,
    /// `max-age`: the oldest stored response acceptable.
    pub max_age: Option<u32>,
    /// `min-fresh`: how long the response must stay fresh.
    pub min_fresh: Option<u32>,
    /// `max-stale`: `Some(None)` accepts any staleness, `Some(Some(n))` up to n seconds.
    pub max_stale: Option<Option<u32>>,
    pub only_if_cached: bool,
}

/// What to do with a stored response found for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitDecision {
    /// Serve it if fresh, otherwise follow the usual stale and revalidation rules.
    Default,
    /// Revalidate with the origin before using it.
    Revalidate,
    /// Serve it although it is stale: the client accepts that (`max-stale`).
    ServeStale,
}

impl RequestDirectives {
    pub fn from_request(req: &RequestHeader, ignore_no_cache: bool) -> Self {
        let h = &req.headers;
        if !h.contains_key(CACHE_CONTROL) && !h.contains_key(PRAGMA) {
            return RequestDirectives::default(); // most requests
        }
        let cc = Directives::read(h, &CACHE_CONTROL);
        let secs = |name| match cc.delta(name) {
            Delta::Valid(s) => Some(s),
            _ => None,
        };
        let pragma_no_cache = !h.contains_key(CACHE_CONTROL)
            && h.get_all(PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| {
                    v.split(',')
                        .any(|p| p.trim().eq_ignore_ascii_case("no-cache"))
                });
        let max_stale = match cc.delta("max-stale") {
            Delta::Absent | Delta::Invalid => None,
            Delta::Bare => Some(None),
            Delta::Valid(s) => Some(Some(s)),
        };
        let mut d = RequestDirectives {
            no_cache: cc.has("no-cache") || pragma_no_cache,
            max_age: secs("max-age"),
            min_fresh: secs("min-fresh"),
            max_stale,
            only_if_cached: cc.has("only-if-cached"),
        };
        if ignore_no_cache {
            d.no_cache = false;
            d.max_age = None;
        }
        d
    }

    /// Applies the directives to a stored response; `targets` tells which of its fields
    /// govern this cache.
    pub fn on_hit(&self, meta: &CacheMeta, targets: &TargetList, now: SystemTime) -> HitDecision {
        if self.no_cache {
            return HitDecision::Revalidate;
        }
        if self
            .max_age
            .is_some_and(|max| meta.age().as_secs() > max.into())
        {
            return HitDecision::Revalidate;
        }
        let fresh_for = meta.fresh_until().duration_since(now).ok();
        if let Some(min) = self.min_fresh {
            if fresh_for.is_none_or(|left| left.as_secs() < min.into()) {
                return HitDecision::Revalidate;
            }
        }
        if fresh_for.is_none() {
            if let Some(limit) = self.max_stale {
                let stale_for = now.duration_since(meta.fresh_until()).unwrap_or_default();
                let within = limit.is_none_or(|max| stale_for.as_secs() <= max.into());
                let stored = ResponseDirectives::read(meta.headers(), targets);
                if within && !forbids_stale(&stored) {
                    return HitDecision::ServeStale;
                }
            }
        }
        HitDecision::Default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CachePolicy {
        CachePolicy {
            freshness: FreshnessRules {
                default_ttl: Duration::from_secs(300),
                heuristic_fraction: 0.1,
                heuristic_max: Duration::from_secs(86_400),
            },
            stale_if_error: Duration::ZERO,
            ignore_client_no_cache: false,
            targets: TargetList::standard(),
        }
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn get() -> RequestHeader {
        req(&[])
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn meta(
        p: &CachePolicy,
        req: &RequestHeader,
        r: &ResponseHeader,
        now: SystemTime,
    ) -> Option<CacheMeta> {
        match p.response_cacheable_at(req, r, now, false) {
            RespCacheable::Cacheable(meta) => Some(meta),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    /// Remaining freshness in seconds, or None when not storable.
    fn ttl(p: &CachePolicy, req: &RequestHeader, r: &ResponseHeader) -> Option<u64> {
        let now = SystemTime::now();
        meta(p, req, r, now).map(|m| {
            m.fresh_until()
                .duration_since(now)
                .map_or(0, |d| d.as_secs())
        })
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
    }

    #[test]
    fn age_on_arrival_shortens_freshness_and_counts_in_age() {
        let p = policy();
        let now = SystemTime::now();
        let m = meta(
            &p,
            &get(),
            &resp(200, &[("cache-control", "max-age=100"), ("age", "40")]),
            now,
        )
        .unwrap();
        assert_eq!(m.fresh_until().duration_since(now).unwrap().as_secs(), 60);
        assert!(m.age().as_secs() >= 40);
        let old = meta(
            &p,
            &get(),
            &resp(200, &[("cache-control", "max-age=100"), ("age", "400")]),
            now,
        )
        .unwrap();
        assert!(
            !old.is_fresh(now),
            "older than its lifetime: stale on arrival"
        );
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
        let no_store = req(&[("cache-control", "no-store")]);
        assert_eq!(
            ttl(
                &p,
                &no_store,
                &resp(200, &[("cache-control", "max-age=60")])
            ),
            None
        );
    }

    #[test]
    fn must_understand_overrides_no_store_for_understood_statuses() {
        let p = policy();
        let cc = |status, v| ttl(&p, &get(), &resp(status, &[("cache-control", v)]));
        assert_eq!(cc(200, "no-store, must-understand, max-age=60"), Some(60));
        assert_eq!(cc(302, "must-understand, no-store, max-age=60"), Some(60));
        assert_eq!(cc(299, "no-store, must-understand, max-age=60"), None);
        assert_eq!(cc(422, "must-understand, max-age=60"), None);
        assert_eq!(cc(422, "max-age=60"), Some(60));
        assert_eq!(cc(200, "no-store, must-understand, private"), None);
    }

    #[test]
    fn post_responses_need_content_location_and_explicit_freshness() {
        let p = policy();
        let mut post = RequestHeader::build("POST", b"/form?x=1", None).unwrap();
        post.insert_header("host", "example.com").unwrap();
        let ok = |h: &[(&str, &str)]| p.post_response_cacheable(&post, &resp(200, h)).is_some();
        assert!(ok(&[
            ("content-location", "/form?x=1"),
            ("cache-control", "max-age=60")
        ]));
        assert!(ok(&[
            ("content-location", "http://example.com/form?x=1"),
            ("cache-control", "max-age=60")
        ]));
        assert!(
            !ok(&[("content-location", "/form?x=1")]),
            "no explicit freshness"
        );
        assert!(!ok(&[
            ("content-location", "/other"),
            ("cache-control", "max-age=60")
        ]));
        assert!(!ok(&[
            ("content-location", "http://other.example/form?x=1"),
            ("cache-control", "max-age=60")
        ]));
        assert!(
            !ok(&[("cache-control", "max-age=60")]),
            "no Content-Location"
        );
        assert!(!ok(&[
            ("content-location", "/form?x=1"),
            ("cache-control", "max-age=60, no-store")
        ]));
    }

    #[test]
    fn authorization_needs_explicit_permission() {
        let p = policy();
        let auth = req(&[("authorization", "Bearer x")]);
        assert_eq!(ttl(&p, &auth, &resp(200, &[])), None);
        assert_eq!(
            ttl(&p, &auth, &resp(200, &[("cache-control", "max-age=60")])),
            None
        );
        assert_eq!(
            ttl(
                &p,
                &auth,
                &resp(200, &[("cache-control", "public, max-age=60")])
            ),
            Some(60)
        );
        assert_eq!(
            ttl(&p, &auth, &resp(200, &[("cache-control", "s-maxage=60")])),
            Some(60)
        );
        assert_eq!(
            ttl(
                &p,
                &auth,
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
        assert_eq!(
            ttl(&p, &get(), &resp(302, &[("cache-control", "max-age=5")])),
            Some(5)
        );
    }

    #[test]
    fn zero_default_ttl_stores_only_responses_with_freshness() {
        let mut p = policy();
        p.freshness.default_ttl = Duration::ZERO;
        assert_eq!(ttl(&p, &get(), &resp(200, &[])), None);
        assert_eq!(
            ttl(&p, &get(), &resp(200, &[("cache-control", "max-age=60")])),
            Some(60)
        );
    }

    #[test]
    fn stale_windows_follow_directives_and_config() {
        let mut p = policy();
        let now = SystemTime::now();
        let m = |p: &CachePolicy, cc: &str| {
            let m = meta(p, &get(), &resp(200, &[("cache-control", cc)]), now).unwrap();
            (m.stale_while_revalidate_sec(), m.stale_if_error_sec())
        };
        assert_eq!(
            m(
                &p,
                "max-age=1, stale-while-revalidate=30, stale-if-error=60"
            ),
            (30, 60)
        );
        assert_eq!(m(&p, "max-age=1"), (0, 0));
        p.stale_if_error = Duration::from_secs(3600);
        assert_eq!(m(&p, "max-age=1"), (0, 3600));
        assert_eq!(
            m(&p, "max-age=1, stale-if-error=5"),
            (0, 5),
            "the origin's value wins"
        );
        assert_eq!(
            m(&p, "max-age=1, must-revalidate, stale-if-error=60"),
            (0, 0)
        );
        assert_eq!(m(&p, "s-maxage=1, stale-while-revalidate=60"), (0, 0));
        assert_eq!(m(&p, "max-age=1, proxy-revalidate"), (0, 0));
    }

    #[test]
    fn a_304_replaces_stored_fields_but_not_content_length() {
        let stored = resp(
            200,
            &[
                ("content-length", "10"),
                ("x-version", "1"),
                ("etag", "\"a\""),
                ("x-keep", "k"),
            ],
        );
        let update = resp(
            304,
            &[("content-length", "0"), ("x-version", "2"), ("x-new", "n")],
        );
        let merged = merge_not_modified(&stored, &update.headers);
        assert_eq!(merged.status, 200);
        assert_eq!(merged.headers["content-length"], "10");
        assert_eq!(merged.headers["x-version"], "2");
        assert_eq!(merged.headers["x-new"], "n");
        assert_eq!(merged.headers["x-keep"], "k");
        assert_eq!(merged.headers["etag"], "\"a\"");
    }

    #[test]
    fn request_directives() {
        let d = |h: &[(&str, &str)]| RequestDirectives::from_request(&req(h), false);
        assert!(d(&[("cache-control", "no-cache")]).no_cache);
        assert!(d(&[("pragma", "no-cache")]).no_cache);
        assert!(!d(&[("pragma", "no-cache"), ("cache-control", "max-stale")]).no_cache);
        assert_eq!(d(&[("cache-control", "max-age=5")]).max_age, Some(5));
        assert_eq!(d(&[("cache-control", "max-stale")]).max_stale, Some(None));
        assert_eq!(
            d(&[("cache-control", "max-stale=9")]).max_stale,
            Some(Some(9))
        );
        assert_eq!(d(&[("cache-control", "min-fresh=3")]).min_fresh, Some(3));
        assert!(d(&[("cache-control", "only-if-cached")]).only_if_cached);
        let ignored = RequestDirectives::from_request(
            &req(&[("cache-control", "no-cache, max-age=0")]),
            true,
        );
        assert!(!ignored.no_cache);
        assert_eq!(ignored.max_age, None);
    }

    #[test]
    fn hit_decisions() {
        let p = policy();
        let now = SystemTime::now();
        let fresh = meta(
            &p,
            &get(),
            &resp(200, &[("cache-control", "max-age=100"), ("age", "10")]),
            now,
        )
        .unwrap();
        let d = |h: &[(&str, &str)]| RequestDirectives::from_request(&req(h), false);
        let t = TargetList::standard();
        assert_eq!(d(&[]).on_hit(&fresh, &t, now), HitDecision::Default);
        assert_eq!(
            d(&[("cache-control", "no-cache")]).on_hit(&fresh, &t, now),
            HitDecision::Revalidate
        );
        assert_eq!(
            d(&[("cache-control", "max-age=5")]).on_hit(&fresh, &t, now),
            HitDecision::Revalidate
        );
        assert_eq!(
            d(&[("cache-control", "max-age=50")]).on_hit(&fresh, &t, now),
            HitDecision::Default
        );
        assert_eq!(
            d(&[("cache-control", "min-fresh=95")]).on_hit(&fresh, &t, now),
            HitDecision::Revalidate
        );
        assert_eq!(
            d(&[("cache-control", "min-fresh=10")]).on_hit(&fresh, &t, now),
            HitDecision::Default
        );

        let stale = meta(
            &p,
            &get(),
            &resp(200, &[("cache-control", "max-age=10"), ("age", "30")]),
            now,
        )
        .unwrap();
        assert_eq!(
            d(&[("cache-control", "max-stale")]).on_hit(&stale, &t, now),
            HitDecision::ServeStale
        );
        assert_eq!(
            d(&[("cache-control", "max-stale=60")]).on_hit(&stale, &t, now),
            HitDecision::ServeStale
        );
        assert_eq!(
            d(&[("cache-control", "max-stale=5")]).on_hit(&stale, &t, now),
            HitDecision::Default
        );
        let must = meta(
            &p,
            &get(),
            &resp(
                200,
                &[
                    ("cache-control", "max-age=10, must-revalidate"),
                    ("age", "30"),
                ],
            ),
            now,
        )
        .unwrap();
        assert_eq!(
            d(&[("cache-control", "max-stale")]).on_hit(&must, &t, now),
            HitDecision::Default
        );
    }
}
