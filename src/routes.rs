//! Matching a request to a route: the upstream group it goes to and that route's cache and
//! header settings, decided once per request and carried in the request context.
//!
//! The most specific host wins (exact, then the longest wildcard suffix, then routes for any
//! host); among routes of that host, the longest matching `path_prefix`. A host whose routes
//! match no prefix falls through to less specific hosts. The admin service uses the same
//! matching to build purge keys, so a route that leaves query parameters out of its keys
//! is purged by the URL a client would send.

use std::collections::HashMap;
use std::sync::Arc;

use pingora_cache::CacheKey;
use pingora_http::{RequestHeader, ResponseHeader};

use crate::cache::key;
use crate::config::routing::{HeaderRules, HostPattern, RouteCache, RouteConfig, Routing};
use crate::metrics::RequestSeries;
use crate::upstream::{UpstreamGroup, Upstreams};

pub struct Route {
    /// `name:` or the route's index: the `route` metric label.
    pub name: String,
    pub upstream: Arc<UpstreamGroup>,
    pub cache: RouteCache,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    path_prefix: String,
    /// This route's per-request metric series.
    pub series: RequestSeries,
}

impl Route {
    fn new(config: &RouteConfig, upstreams: &Upstreams) -> Arc<Route> {
        Arc::new(Route {
            name: config.name.clone(),
            upstream: upstreams
                .get(&config.upstream)
                .expect("routes name defined upstreams (validated)")
                .clone(),
            cache: config.cache.clone(),
            request_headers: config.request_headers.clone(),
            response_headers: config.response_headers.clone(),
            path_prefix: config.path_prefix.clone(),
            series: RequestSeries::new(&config.name),
        })
    }

    /// The cache key of a URL on this route; `tls`: an https URL.
    pub fn cache_key(&self, tls: bool, host: &str, path_and_query: &str) -> CacheKey {
        key::for_parts_ignoring(tls, host, path_and_query, &self.cache.key_ignore_query)
    }

    /// Whether responses on this route may use the cache at all.
    pub fn caches(&self) -> bool {
        self.cache.enabled != Some(false)
    }
}

/// Applies header rules: removals first, then the values to set.
pub fn apply_request_rules(rules: &HeaderRules, req: &mut RequestHeader) {
    for name in &rules.remove {
        req.remove_header(name);
    }
    for (name, value) in &rules.set {
        let _ = req.insert_header(name.clone(), value.clone());
    }
}

pub fn apply_response_rules(rules: &HeaderRules, resp: &mut ResponseHeader) {
    for name in &rules.remove {
        resp.remove_header(name);
    }
    for (name, value) in &rules.set {
        let _ = resp.insert_header(name.clone(), value.clone());
    }
}

/// Routes of one host pattern, longest prefix first.
type Candidates = Vec<Arc<Route>>;

#[derive(Default)]
pub struct Router {
    exact: HashMap<String, Candidates>,
    /// By suffix (`.example.com`), longest suffix first.
    wildcard: Vec<(String, Candidates)>,
    any: Candidates,
    default: Option<Arc<Route>>,
}

impl Router {
    pub fn new(routing: &Routing, upstreams: &Upstreams) -> Router {
        let mut router = Router {
            default: routing
                .default_route
                .as_ref()
                .map(|r| Route::new(r, upstreams)),
            ..Router::default()
        };
        let mut wildcard: HashMap<String, Candidates> = HashMap::new();
        for config in &routing.routes {
            let route = Route::new(config, upstreams);
            if config.hosts.is_empty() {
                router.any.push(route.clone());
            }
            for host in &config.hosts {
                match host {
                    HostPattern::Exact(h) => router
                        .exact
                        .entry(h.clone())
                        .or_default()
                        .push(route.clone()),
                    HostPattern::Wildcard(suffix) => wildcard
                        .entry(suffix.clone())
                        .or_default()
                        .push(route.clone()),
                }
            }
        }
        router.wildcard = wildcard.into_iter().collect();
        router
            .wildcard
            .sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        let by_prefix = |c: &mut Candidates| {
            c.sort_by_key(|r| std::cmp::Reverse(r.path_prefix.len()));
        };
        router.exact.values_mut().for_each(by_prefix);
        router.wildcard.iter_mut().for_each(|(_, c)| by_prefix(c));
        by_prefix(&mut router.any);
        router
    }

    /// The route for a request to `host` (as sent: any port and case) and `path`.
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        let host = normalise(host);
        let first = |c: &'_ Candidates| -> Option<usize> {
            c.iter().position(|r| path.starts_with(&r.path_prefix))
        };
        if let Some(c) = self.exact.get(host.as_ref()) {
            if let Some(i) = first(c) {
                return Some(&c[i]);
            }
        }
        for (suffix, c) in &self.wildcard {
            if host.ends_with(suffix.as_str()) {
                if let Some(i) = first(c) {
                    return Some(&c[i]);
                }
            }
        }
        first(&self.any)
            .map(|i| &self.any[i])
            .or(self.default.as_ref())
    }

    /// The cache key of a URL as the proxy builds it (with its route's query rules); `tls`:
    /// an https URL.
    pub fn cache_key(&self, tls: bool, host: &str, path_and_query: &str) -> CacheKey {
        let path = path_and_query.split('?').next().unwrap_or("/");
        match self.route(host, path) {
            Some(route) => route.cache_key(tls, host, path_and_query),
            None => key::for_parts(tls, host, path_and_query),
        }
    }
}

/// Lower case, without the port; borrowed when already lower case (the common case), so
/// matching allocates nothing per request.
fn normalise(host: &str) -> std::borrow::Cow<'_, str> {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        host.split_once(']')
            .map_or(host, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    if without_port.bytes().any(|b| b.is_ascii_uppercase()) {
        without_port.to_ascii_lowercase().into()
    } else {
        without_port.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routing::{Selection, ServerConfig, UpstreamGroupConfig};
    use std::time::Duration;

    fn group(name: &str) -> UpstreamGroupConfig {
        UpstreamGroupConfig {
            name: name.into(),
            servers: vec![ServerConfig {
                host: "127.0.0.1".into(),
                port: 1,
                weight: 1,
                addrs: vec!["127.0.0.1:1".parse().unwrap()],
            }],
            selection: Selection::RoundRobin,
            tls: false,
            http2: false,
            sni: None,
            health_check: None,
            resolve_interval: Duration::ZERO,
            retries: 0,
            from_origin_flag: false,
        }
    }

    fn route(name: &str, hosts: &[HostPattern], prefix: &str, upstream: &str) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            hosts: hosts.to_vec(),
            path_prefix: prefix.into(),
            upstream: upstream.into(),
            cache: RouteCache::default(),
            request_headers: HeaderRules::default(),
            response_headers: HeaderRules::default(),
        }
    }

    #[test]
    fn most_specific_host_then_longest_prefix() {
        let exact = HostPattern::Exact("www.example.com".into());
        let wild = HostPattern::Wildcard(".example.com".into());
        let routing = Routing {
            upstreams: vec![group("a"), group("b")],
            routes: vec![
                route("any", &[], "/", "a"),
                route("wild", &[wild], "/", "b"),
                route("www", std::slice::from_ref(&exact), "/", "a"),
                route("www-static", &[exact], "/static/", "b"),
            ],
            default_route: None,
        };
        let (upstreams, _) = Upstreams::build(&routing);
        let r = Router::new(&routing, &upstreams);
        let name = |h, p| r.route(h, p).map(|r| r.name.clone());
        assert_eq!(name("www.example.com", "/x").as_deref(), Some("www"));
        assert_eq!(
            name("WWW.example.com:8080", "/static/a").as_deref(),
            Some("www-static")
        );
        assert_eq!(
            name("img.example.com", "/static/a").as_deref(),
            Some("wild")
        );
        assert_eq!(name("example.org", "/").as_deref(), Some("any"));
        assert_eq!(
            name("example.com", "/").as_deref(),
            Some("any"),
            "no bare-domain wildcard"
        );
    }

    #[test]
    fn a_host_without_a_matching_prefix_falls_through() {
        let exact = HostPattern::Exact("api.example.com".into());
        let routing = Routing {
            upstreams: vec![group("a")],
            routes: vec![route("api-v1", &[exact], "/v1/", "a")],
            default_route: Some(route("default", &[], "/", "a")),
        };
        let (upstreams, _) = Upstreams::build(&routing);
        let r = Router::new(&routing, &upstreams);
        assert_eq!(r.route("api.example.com", "/v1/x").unwrap().name, "api-v1");
        assert_eq!(r.route("api.example.com", "/v2/x").unwrap().name, "default");
        let no_default = Routing {
            default_route: None,
            ..routing
        };
        let r = Router::new(&no_default, &upstreams);
        assert!(r.route("other.example", "/").is_none());
    }
}
