//! The `upstreams`, `routes` and `default_route` sections of the config file: upstream
//! groups (servers, selection, health checks, retries) and the routes that send requests to
//! them, parsed and validated once into [`Routing`].
//!
//! These sections are structures, so they live only in the file (flags and env stay flat).
//! `--origin` is shorthand for one upstream (`origin`) with one server and a catch-all route,
//! added after the configured routes, so every command that worked before still does.
//! Every problem is a [`ConfigError::Section`] naming the key (`routes[2].upstream`,
//! `upstreams.app.servers[1]`) and the file.

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::{units, ConfigError, Origin};

/// The name `--origin` gives its upstream.
pub const ORIGIN_UPSTREAM: &str = "origin";

/// Every upstream group and route.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    pub upstreams: Vec<UpstreamGroupConfig>,
    /// In the order written; matching picks the most specific (see `proxy::routes`).
    pub routes: Vec<RouteConfig>,
    /// Where a request that matches no route goes; without it, a JSON 404 `NO_ROUTE`.
    pub default_route: Option<RouteConfig>,
}

#[derive(Debug, Clone)]
pub struct UpstreamGroupConfig {
    pub name: String,
    pub servers: Vec<ServerConfig>,
    pub selection: Selection,
    pub tls: bool,
    /// Offer h2 by ALPN (TLS servers only); `upstream.http2` unless the group sets its own.
    pub http2: bool,
    /// Name for SNI and certificate verification; the server's host when unset.
    pub sni: Option<String>,
    pub health_check: Option<HealthCheckConfig>,
    /// How often DNS names are resolved again; zero: only at start.
    pub resolve_interval: Duration,
    /// Extra attempts on another server of the group.
    pub retries: usize,
    /// `--origin`'s upstream: its Host header follows `upstream.preserve_host`; groups from
    /// the file send the client's Host.
    pub from_origin_flag: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// As written: a name or an address.
    pub host: String,
    pub port: u16,
    pub weight: usize,
    /// Resolved at start-up (a name that does not resolve is a start-up error).
    pub addrs: Vec<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    RoundRobin,
    Random,
    /// FNV hash of the cache key.
    Hash,
    /// Ketama consistent hashing of the cache key.
    Consistent,
}

impl Selection {
    /// The name in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Selection::RoundRobin => "round_robin",
            Selection::Random => "random",
            Selection::Hash => "hash",
            Selection::Consistent => "consistent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    Http { path: String, host: String },
    Tcp,
}

#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    pub expect_status: Vec<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: usize,
    pub unhealthy_after: usize,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// `name:` if given, else the route's index; the `route` metric label.
    pub name: String,
    /// Empty: any host.
    pub hosts: Vec<HostPattern>,
    pub path_prefix: String,
    pub upstream: String,
    pub cache: RouteCache,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    /// `www.example.com`, lower case.
    Exact(String),
    /// `*.example.com`: the suffix `.example.com`, lower case.
    Wildcard(String),
}

/// Per-route overrides of the `cache` section.
#[derive(Debug, Clone, Default)]
pub struct RouteCache {
    /// `Some(false)`: this route never uses the cache.
    pub enabled: Option<bool>,
    pub default_ttl: Option<Duration>,
    /// Query parameters left out of the cache key.
    pub key_ignore_query: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

// ---- The file's shape -----------------------------------------------------------------------

/// A scalar written as a string, number or boolean.
#[derive(Debug, Clone)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde_yaml::Value;
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Text(s)),
            Value::Number(n) => Ok(Text(n.to_string())),
            Value::Bool(b) => Ok(Text(b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a single value, found {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    servers: Vec<Text>,
    selection: Option<Text>,
    tls: Option<bool>,
    http2: Option<bool>,
    sni: Option<Text>,
    health_check: Option<RawHealthCheck>,
    resolve_interval: Option<Text>,
    retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    #[serde(rename = "type")]
    kind: Option<Text>,
    path: Option<Text>,
    host: Option<Text>,
    expect_status: Option<Vec<u16>>,
    interval: Option<Text>,
    timeout: Option<Text>,
    healthy_after: Option<u32>,
    unhealthy_after: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<Text>,
    hosts: Option<Vec<Text>>,
    path_prefix: Option<Text>,
    upstream: Text,
    cache: Option<RawRouteCache>,
    request_headers: Option<RawHeaderRules>,
    response_headers: Option<RawHeaderRules>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteCache {
    enabled: Option<bool>,
    default_ttl: Option<Text>,
    key_ignore_query: Option<Vec<Text>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderRules {
    set: Option<BTreeMap<String, Text>>,
    remove: Option<Vec<Text>>,
}

// ---- Resolution -----------------------------------------------------------------------------

struct Ctx<'a> {
    file: &'a Path,
    /// `upstream.http2`: what a group that does not set `http2` gets.
    http2: bool,
}

impl Ctx<'_> {
    fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError::Section {
            key: key.into(),
            problem: problem.into(),
            path: self.file.to_owned(),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        value: &serde_yaml::Value,
    ) -> Result<T, ConfigError> {
        serde_yaml::from_value(value.clone()).map_err(|e| self.err(key, e.to_string()))
    }

    fn duration(&self, key: &str, text: &Text) -> Result<Duration, ConfigError> {
        units::parse_duration(&text.0).ok_or_else(|| {
            self.err(
                key,
                format!(
                    "{:?} is not a duration (examples: 0, 500ms, 2s, 1h)",
                    text.0
                ),
            )
        })
    }
}

/// Resolves the structured sections plus `--origin`. `file` is the config file the sections
/// came from (none: no sections); `http2` is `upstream.http2`, the groups' default.
pub fn resolve(
    sections: &std::collections::HashMap<&'static str, serde_yaml::Value>,
    file: Option<&Path>,
    origin: Option<&Origin>,
    http2: bool,
) -> Result<Routing, ConfigError> {
    let path = file.map_or_else(|| PathBuf::from("-"), Path::to_owned);
    let c = Ctx { file: &path, http2 };
    let mut routing = Routing::default();

    if let Some(ups) = sections.get("upstreams") {
        let serde_yaml::Value::Mapping(map) = ups else {
            return Err(c.err("upstreams", "must be a mapping of names to upstream groups"));
        };
        for (name, value) in map {
            let name = match name {
                serde_yaml::Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
                other => return Err(c.err("upstreams", format!("{other:?} is not a name"))),
            };
            if name == ORIGIN_UPSTREAM && origin.is_some() {
                return Err(c.err(
                    format!("upstreams.{name}"),
                    "is the name --origin gives its upstream; choose another",
                ));
            }
            let key = format!("upstreams.{name}");
            let raw: RawUpstream = c.parse(&key, value)?;
            routing.upstreams.push(upstream(&c, &key, name, raw)?);
        }
    }

    if let Some(routes) = sections.get("routes") {
        let serde_yaml::Value::Sequence(items) = routes else {
            return Err(c.err("routes", "must be a list of routes"));
        };
        for (i, value) in items.iter().enumerate() {
            let key = format!("routes[{i}]");
            let raw: RawRoute = c.parse(&key, value)?;
            routing.routes.push(route(&c, &key, i.to_string(), raw)?);
        }
    }
    if let Some(value) = sections.get("default_route") {
        let raw: RawRoute = c.parse("default_route", value)?;
        if raw.hosts.is_some() || raw.path_prefix.is_some() {
            return Err(c.err(
                "default_route",
                "takes no hosts or path_prefix: it serves what no route matches",
            ));
        }
        routing.default_route = Some(route(&c, "default_route", "default".into(), raw)?);
    }

    if let Some(origin) = origin {
        routing.upstreams.push(UpstreamGroupConfig {
            name: ORIGIN_UPSTREAM.into(),
            servers: vec![ServerConfig {
                host: origin.host.clone(),
                port: origin.addr.port(),
                weight: 1,
                addrs: vec![origin.addr],
            }],
            selection: Selection::RoundRobin,
            tls: origin.tls,
            http2,
            sni: Some(origin.host.clone()),
            health_check: None,
            resolve_interval: Duration::ZERO,
            retries: 0,
            from_origin_flag: true,
        });
        let catch_all = RouteConfig {
            name: if routing.routes.is_empty() {
                "0".into()
            } else {
                ORIGIN_UPSTREAM.into()
            },
            hosts: Vec::new(),
            path_prefix: "/".into(),
            upstream: ORIGIN_UPSTREAM.into(),
            cache: RouteCache::default(),
            request_headers: HeaderRules::default(),
            response_headers: HeaderRules::default(),
        };
        if routing
            .routes
            .iter()
            .any(|r| r.hosts.is_empty() && r.path_prefix == "/")
        {
            // A configured catch-all already takes everything; --origin is then only
            // reachable as an upstream.
        } else {
            routing.routes.push(catch_all);
        }
    }

    validate(&c, &routing)?;
    Ok(routing)
}

fn validate(c: &Ctx, routing: &Routing) -> Result<(), ConfigError> {
    let names: HashSet<&str> = routing.upstreams.iter().map(|u| u.name.as_str()).collect();
    let mut seen = HashSet::new();
    for (i, r) in routing.routes.iter().enumerate() {
        if !names.contains(r.upstream.as_str()) {
            return Err(c.err(
                format!("routes[{i}].upstream"),
                format!("{:?} is not a defined upstream", r.upstream),
            ));
        }
        let mut hosts = r.hosts.clone();
        hosts.sort();
        if !seen.insert((hosts, r.path_prefix.clone())) {
            return Err(c.err(
                format!("routes[{i}]"),
                "has the same hosts and path_prefix as an earlier route",
            ));
        }
    }
    if let Some(d) = &routing.default_route {
        if !names.contains(d.upstream.as_str()) {
            return Err(c.err(
                "default_route.upstream",
                format!("{:?} is not a defined upstream", d.upstream),
            ));
        }
    }
    if routing.routes.is_empty() && routing.default_route.is_none() {
        return Err(ConfigError::Missing {
            key: "upstream.origin",
            flag: "origin",
            env: "PROXY_ORIGIN",
        });
    }
    Ok(())
}

fn upstream(
    c: &Ctx,
    key: &str,
    name: String,
    raw: RawUpstream,
) -> Result<UpstreamGroupConfig, ConfigError> {
    if raw.servers.is_empty() {
        return Err(c.err(format!("{key}.servers"), "must list at least one server"));
    }
    let servers = raw
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| server(c, &format!("{key}.servers[{i}]"), &s.0))
        .collect::<Result<Vec<_>, _>>()?;
    let selection = match raw.selection.as_ref().map(|t| t.0.trim()) {
        None | Some("round_robin") => Selection::RoundRobin,
        Some("random") => Selection::Random,
        Some("hash") => Selection::Hash,
        Some("consistent") => Selection::Consistent,
        Some(other) => {
            return Err(c.err(
                format!("{key}.selection"),
                format!("{other:?} is not a selection (round_robin, random, hash, consistent)"),
            ))
        }
    };
    let health_check = raw
        .health_check
        .map(|h| health_check(c, &format!("{key}.health_check"), h, &servers))
        .transpose()?;
    if raw.http2 == Some(true) && raw.tls != Some(true) {
        return Err(c.err(
            format!("{key}.http2"),
            "needs tls: true (h2 is offered to servers by ALPN, over TLS)",
        ));
    }
    let resolve_interval = match &raw.resolve_interval {
        Some(t) => c.duration(&format!("{key}.resolve_interval"), t)?,
        None => Duration::from_secs(30),
    };
    Ok(UpstreamGroupConfig {
        name,
        servers,
        selection,
        tls: raw.tls.unwrap_or(false),
        http2: raw.http2.unwrap_or(c.http2),
        sni: raw
            .sni
            .map(|t| t.0.trim().to_owned())
            .filter(|s| !s.is_empty()),
        health_check,
        resolve_interval,
        retries: raw.retries.unwrap_or(0) as usize,
        from_origin_flag: false,
    })
}

/// `host:port` with an optional ` weight=N`.
fn server(c: &Ctx, key: &str, text: &str) -> Result<ServerConfig, ConfigError> {
    let mut parts = text.split_whitespace();
    let addr = parts
        .next()
        .ok_or_else(|| c.err(key, "is empty: expected host:port [weight=N]"))?;
    let mut weight = 1;
    for part in parts {
        let Some(w) = part.strip_prefix("weight=") else {
            return Err(c.err(
                key,
                format!("{text:?}: unknown option {part:?} (expected weight=N)"),
            ));
        };
        weight = w
            .parse::<usize>()
            .ok()
            .filter(|w| (1..=1000).contains(w))
            .ok_or_else(|| {
                c.err(
                    key,
                    format!("{text:?}: weight {w:?} is not a whole number from 1 to 1000"),
                )
            })?;
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| c.err(key, format!("{addr:?} has no port (expected host:port)")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| c.err(key, format!("{addr:?}: {port:?} is not a port")))?;
    if host.is_empty() {
        return Err(c.err(key, format!("{addr:?} has no host")));
    }
    let addrs = resolve_host(host, port).map_err(|e| c.err(key, format!("{addr:?} {e}")))?;
    Ok(ServerConfig {
        host: host.to_owned(),
        port,
        weight,
        addrs,
    })
}

/// Resolves a server name, IPv4 addresses first (as for `--origin`).
pub fn resolve_host(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("does not resolve: {e}"))?
        .collect();
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs.dedup();
    if addrs.is_empty() {
        return Err("does not resolve to any address".into());
    }
    Ok(addrs)
}

fn health_check(
    c: &Ctx,
    key: &str,
    raw: RawHealthCheck,
    servers: &[ServerConfig],
) -> Result<HealthCheckConfig, ConfigError> {
    let kind = match raw.kind.as_ref().map(|t| t.0.trim()) {
        None | Some("http") => HealthCheckKind::Http {
            path: match raw.path {
                Some(p) if p.0.starts_with('/') => p.0,
                Some(p) => {
                    return Err(c.err(
                        format!("{key}.path"),
                        format!("{:?} must start with /", p.0),
                    ))
                }
                None => "/".into(),
            },
            host: raw
                .host
                .map(|h| h.0)
                .unwrap_or_else(|| servers[0].host.clone()),
        },
        Some("tcp") => HealthCheckKind::Tcp,
        Some(other) => {
            return Err(c.err(
                format!("{key}.type"),
                format!("{other:?} is not a check type (http or tcp)"),
            ))
        }
    };
    let positive = |field: &str, t: Option<Text>, default: Duration| match t {
        None => Ok(default),
        Some(t) => {
            let d = c.duration(&format!("{key}.{field}"), &t)?;
            if d.is_zero() {
                Err(c.err(format!("{key}.{field}"), "must be greater than 0"))
            } else {
                Ok(d)
            }
        }
    };
    let count = |field: &str, n: Option<u32>| match n {
        None => Ok(2),
        Some(0) => Err(c.err(format!("{key}.{field}"), "must be at least 1")),
        Some(n) => Ok(n as usize),
    };
    let expect_status = raw.expect_status.unwrap_or_else(|| vec![200]);
    if expect_status.is_empty() || expect_status.iter().any(|s| !(100..=599).contains(s)) {
        return Err(c.err(
            format!("{key}.expect_status"),
            "must list HTTP statuses (100-599)",
        ));
    }
    Ok(HealthCheckConfig {
        kind,
        expect_status,
        interval: positive("interval", raw.interval, Duration::from_secs(2))?,
        timeout: positive("timeout", raw.timeout, Duration::from_secs(1))?,
        healthy_after: count("healthy_after", raw.healthy_after)?,
        unhealthy_after: count("unhealthy_after", raw.unhealthy_after)?,
    })
}

fn route(c: &Ctx, key: &str, index: String, raw: RawRoute) -> Result<RouteConfig, ConfigError> {
    let hosts = raw
        .hosts
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, h)| host_pattern(&h.0).map_err(|p| c.err(format!("{key}.hosts[{i}]"), p)))
        .collect::<Result<Vec<_>, _>>()?;
    let path_prefix = match raw.path_prefix {
        None => "/".to_owned(),
        Some(p) if p.0.starts_with('/') => p.0,
        Some(p) => {
            return Err(c.err(
                format!("{key}.path_prefix"),
                format!("{:?} must start with /", p.0),
            ))
        }
    };
    let cache = match raw.cache {
        None => RouteCache::default(),
        Some(rc) => RouteCache {
            enabled: rc.enabled,
            default_ttl: rc
                .default_ttl
                .map(|t| c.duration(&format!("{key}.cache.default_ttl"), &t))
                .transpose()?,
            key_ignore_query: rc
                .key_ignore_query
                .unwrap_or_default()
                .into_iter()
                .map(|t| t.0)
                .collect(),
        },
    };
    Ok(RouteConfig {
        name: raw.name.map_or(index, |n| n.0),
        hosts,
        path_prefix,
        upstream: raw.upstream.0.trim().to_owned(),
        cache,
        request_headers: header_rules(c, &format!("{key}.request_headers"), raw.request_headers)?,
        response_headers: header_rules(
            c,
            &format!("{key}.response_headers"),
            raw.response_headers,
        )?,
    })
}

fn host_pattern(text: &str) -> Result<HostPattern, String> {
    let h = text.trim().to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '[' | ']'))
    };
    if let Some(rest) = h.strip_prefix("*.") {
        if valid(rest) {
            return Ok(HostPattern::Wildcard(format!(".{rest}")));
        }
    } else if valid(&h) {
        return Ok(HostPattern::Exact(h));
    }
    Err(format!(
        "{text:?} is not a host name (examples: www.example.com, *.example.com)"
    ))
}

fn header_rules(
    c: &Ctx,
    key: &str,
    raw: Option<RawHeaderRules>,
) -> Result<HeaderRules, ConfigError> {
    let Some(raw) = raw else {
        return Ok(HeaderRules::default());
    };
    let name = |k: &str, n: &str| {
        HeaderName::from_bytes(n.trim().as_bytes())
            .map_err(|_| c.err(k, format!("{n:?} is not a header name")))
    };
    let mut rules = HeaderRules::default();
    for (n, v) in raw.set.unwrap_or_default() {
        let k = format!("{key}.set.{n}");
        let value = HeaderValue::from_str(&v.0)
            .map_err(|_| c.err(&k, format!("{:?} is not a header value", v.0)))?;
        rules.set.push((name(&k, &n)?, value));
    }
    for (i, n) in raw.remove.unwrap_or_default().iter().enumerate() {
        rules
            .remove
            .push(name(&format!("{key}.remove[{i}]"), &n.0)?);
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Routing, ConfigError> {
        let sections = match serde_yaml::from_str::<serde_yaml::Value>(yaml).unwrap() {
            serde_yaml::Value::Mapping(m) => m
                .into_iter()
                .filter_map(|(k, v)| {
                    let k = k.as_str()?.to_owned();
                    let name = crate::config::sources::SECTIONS.iter().find(|s| **s == k)?;
                    Some((*name, v))
                })
                .collect(),
            _ => Default::default(),
        };
        resolve(&sections, Some(Path::new("t.yaml")), None, false)
    }

    const OK: &str = "upstreams:\n  app:\n    servers: [\"127.0.0.1:81\", \"localhost:82 weight=3\"]\n    selection: consistent\n    retries: 2\n    health_check: {type: tcp, interval: 1s}\nroutes:\n  - hosts: [\"WWW.Example.com\", \"*.example.com\"]\n    path_prefix: /s/\n    upstream: app\n    cache: {default_ttl: 1h, key_ignore_query: [utm_source]}\n    request_headers: {set: {X-Edge: \"1\"}, remove: [X-Debug]}\n";

    #[test]
    fn a_full_section_resolves() {
        let r = load(OK).unwrap();
        let app = &r.upstreams[0];
        assert_eq!(
            (app.name.as_str(), app.selection, app.retries),
            ("app", Selection::Consistent, 2)
        );
        assert_eq!(app.servers[1].weight, 3);
        assert!(
            app.servers[1].addrs.iter().any(|a| a.is_ipv4()),
            "localhost resolved"
        );
        assert_eq!(
            app.health_check.as_ref().unwrap().kind,
            HealthCheckKind::Tcp
        );
        let route = &r.routes[0];
        assert_eq!(route.name, "0");
        assert_eq!(
            route.hosts,
            [
                HostPattern::Exact("www.example.com".into()),
                HostPattern::Wildcard(".example.com".into())
            ]
        );
        assert_eq!(route.cache.default_ttl, Some(Duration::from_secs(3600)));
        assert_eq!(route.request_headers.set.len(), 1);
        assert_eq!(route.request_headers.remove.len(), 1);
    }

    #[test]
    fn http2_follows_upstream_http2_unless_the_group_sets_it() {
        let yaml = "upstreams:\n  a:\n    servers: [\"127.0.0.1:81\"]\n    tls: true\n  b:\n    servers: [\"127.0.0.1:82\"]\n    tls: true\n    http2: false\n  c:\n    servers: [\"127.0.0.1:83\"]\n    tls: true\n    http2: true\nroutes:\n  - upstream: a\n";
        let doc: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
        let sections = ["upstreams", "routes"]
            .into_iter()
            .map(|name| (name, doc[name].clone()))
            .collect();
        let http2 = |default: bool| {
            resolve(&sections, Some(Path::new("t.yaml")), None, default)
                .unwrap()
                .upstreams
                .iter()
                .map(|u| u.http2)
                .collect::<Vec<_>>()
        };
        assert_eq!(http2(false), [false, false, true]);
        assert_eq!(http2(true), [true, false, true]);
    }

    #[test]
    fn each_mistake_names_its_key() {
        let up = |body: &str| format!("upstreams:\n  app:\n{body}\nroutes:\n  - upstream: app\n");
        let cases = [
            (
                "upstreams:\n  app:\n    servers: [\"127.0.0.1:81\"]\nroutes:\n  - upstream: nope\n".to_string(),
                "routes[0].upstream: \"nope\" is not a defined upstream",
            ),
            (up("    servers: []"), "upstreams.app.servers: must list at least one server"),
            (up("    servers: [\"127.0.0.1:81 weight=0\"]"), "upstreams.app.servers[0]: \"127.0.0.1:81 weight=0\": weight \"0\""),
            (up("    servers: [\"127.0.0.1\"]"), "upstreams.app.servers[0]: \"127.0.0.1\" has no port"),
            (up("    servers: [\"no-such-host.invalid:80\"]"), "upstreams.app.servers[0]: \"no-such-host.invalid:80\" does not resolve"),
            (up("    servers: [\"127.0.0.1:81\"]\n    selection: fastest"), "upstreams.app.selection: \"fastest\" is not a selection"),
            (up("    servers: [\"127.0.0.1:81\"]\n    health_check: {interval: 0}"), "upstreams.app.health_check.interval: must be greater than 0"),
            (up("    servers: [\"127.0.0.1:81\"]\n    colour: red"), "upstreams.app: unknown field `colour`"),
            (up("    servers: [\"127.0.0.1:81\"]\n    http2: true"), "upstreams.app.http2: needs tls: true"),
            (
                "upstreams:\n  app:\n    servers: [\"127.0.0.1:81\"]\nroutes:\n  - {upstream: app, path_prefix: /a}\n  - {upstream: app, path_prefix: /a}\n".to_string(),
                "routes[1]: has the same hosts and path_prefix as an earlier route",
            ),
            (
                "upstreams:\n  app:\n    servers: [\"127.0.0.1:81\"]\nroutes:\n  - {upstream: app, hosts: [\"a.*.com\"]}\n".to_string(),
                "routes[0].hosts[0]: \"a.*.com\" is not a host name",
            ),
        ];
        for (yaml, expected) in cases {
            let err = load(&yaml).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{yaml}\n  got: {err}");
            assert!(err.ends_with("(from file t.yaml)"), "{err}");
        }
    }

    #[test]
    fn origin_flag_adds_a_group_and_a_catch_all_after_the_routes() {
        let origin = Origin {
            tls: false,
            host: "127.0.0.1".into(),
            authority: "127.0.0.1:9000".into(),
            addr: "127.0.0.1:9000".parse().unwrap(),
        };
        let r = resolve(&Default::default(), None, Some(&origin), false).unwrap();
        assert_eq!(r.upstreams[0].name, ORIGIN_UPSTREAM);
        assert!(r.upstreams[0].from_origin_flag);
        assert_eq!((r.routes.len(), r.routes[0].path_prefix.as_str()), (1, "/"));
        let err = resolve(&Default::default(), None, None, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream.origin is required"), "{err}");
    }
}
