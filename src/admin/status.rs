//! The status page: `GET /` serves one self-contained page (HTML, CSS and JavaScript from
//! `status/`, embedded in the binary; nothing is loaded from anywhere else), which reads
//! `GET /status` once a second and draws it.
//!
//! The page itself holds no data, so it is served to anyone; `/status` needs the admin
//! token when one is set (the page then asks for it, keeps it in memory only and sends it
//! as `Authorization: Bearer`). The figures come from [`crate::status`]: reading them
//! costs the request path nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};

use super::Readiness;
use crate::cache::Cache;
use crate::config::{BackendConfig, Config};
use crate::status::{StatusBoard, ORIGIN_ERRORS, TOP_URLS, X_CACHE};
use crate::upstream::Upstreams;

const INDEX_HTML: &str = include_str!("status/index.html");
const STYLE_CSS: &str = include_str!("status/style.css");
const APP_JS: &str = include_str!("status/app.js");

/// Only this origin's own files and `/status`: the page loads nothing from elsewhere, and
/// nothing injected into it could.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The page's files by path: content type and body.
pub fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "/assets/status.css" => Some(("text/css; charset=utf-8", STYLE_CSS)),
        "/assets/status.js" => Some(("text/javascript; charset=utf-8", APP_JS)),
        _ => None,
    }
}

/// What `/status` reports beyond the counters: this instance's settings, read once.
pub struct StatusPage {
    pub board: Arc<StatusBoard>,
    /// [`Config::summary`]: no secrets.
    pub config: Value,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// `host:port` of each Redis node (credentials left out); empty without the tier.
    pub redis_nodes: Vec<String>,
}

impl StatusPage {
    pub fn new(config: &Config, board: Arc<StatusBoard>) -> Self {
        StatusPage {
            board,
            config: config.summary(),
            listen: config.listen,
            admin: config.admin.listen,
            redis_nodes: match &config.cache.backend {
                BackendConfig::Redis(redis) => redis.addresses(),
                BackendConfig::Memory => Vec::new(),
            },
        }
    }

    /// The `GET /status` document (README, "Admin API", lists every field and its unit).
    pub fn json(&self, cache: &Cache, upstreams: &Upstreams, readiness: &Readiness) -> Value {
        let r = self.board.report();
        let usage = cache.backend.usage();
        let x_cache: serde_json::Map<String, Value> = X_CACHE
            .iter()
            .enumerate()
            .map(|(i, status)| (status.as_str().to_owned(), r.counter(|s| s.x_cache[i])))
            .collect();
        let errors: serde_json::Map<String, Value> = ORIGIN_ERRORS
            .iter()
            .enumerate()
            .map(|(i, kind)| ((*kind).to_owned(), r.counter(|s| s.origin_errors[i])))
            .collect();
        let top = &self.board.top;
        json!({
            "instance": {
                "version": env!("CARGO_PKG_VERSION"),
                "git_sha": env!("CACHING_PROXY_GIT_SHA"),
                "pid": std::process::id(),
                "started": chrono::DateTime::<chrono::Utc>::from(self.board.started_at())
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "uptime_s": self.board.uptime().as_secs(),
                "listen": self.listen.to_string(),
                "admin": self.admin.to_string(),
                "state": readiness.state(),
                "ready": readiness.is_ready(),
                "config": self.config,
            },
            "windows_s": r.spans(),
            "requests": r.counter(|s| s.requests),
            "hit_ratio": r.hit_ratio(),
            "chart": r.chart(),
            "cache": {
                "entries": usage.entries,
                "max_entries": cache.limits.max_entries,
                "bytes": usage.bytes,
                "max_bytes": cache.limits.max_bytes,
                "evictions": r.counter(|s| s.evictions),
                "expirations": r.counter(|s| s.expirations),
                "coalesced_waits": r.counter(|s| s.coalesced_waits),
                "x_cache": x_cache,
            },
            "origin": {
                "requests": r.counter(|s| s.origin_requests),
                "errors": errors,
                "latency": r.latency(),
            },
            "top_urls": {
                "window_s": (crate::status::top::SLICES - 1) as u64
                    * crate::status::top::SLICE.as_secs(),
                "urls": top.top(TOP_URLS),
                "tracked": top.tracked(),
                "bound": top.bound(),
            },
            "upstreams": upstreams_json(upstreams),
            "redis": self.redis_json(cache),
        })
    }

    fn redis_json(&self, cache: &Cache) -> Value {
        match cache.backend.l2_status() {
            None => Value::Null,
            Some(l2) => json!({
                "nodes": self.redis_nodes,
                "up": l2.up,
                "circuit": if l2.circuit_open { "open" } else { "closed" },
                "hits": l2.hits,
                "misses": l2.misses,
                "writes": l2.writes,
                "errors": l2.errors,
            }),
        }
    }
}

/// Each upstream group and its servers; null when the only group is `--origin`'s (no
/// groups configured: the page leaves the section out).
fn upstreams_json(upstreams: &Upstreams) -> Value {
    if upstreams.iter().all(|g| g.from_origin_flag) {
        return Value::Null;
    }
    Value::Array(
        upstreams
            .iter()
            .map(|g| {
                let servers = g.servers();
                json!({
                    "name": g.name,
                    "selection": g.config().selection.as_str(),
                    "health_check": g.has_health_check(),
                    "healthy": servers.iter().filter(|s| s.healthy).count(),
                    "servers": servers,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for path in ["/", "/assets/status.css", "/assets/status.js"] {
            let (_, body) = asset(path).unwrap();
            for external in ["http://", "https://", "//cdn", "@import", "url("] {
                assert!(!body.contains(external), "{path} contains {external:?}");
            }
        }
        let (html_type, html) = asset("/").unwrap();
        assert!(html_type.starts_with("text/html"));
        assert!(html.contains(r#"src="/assets/status.js""#));
        assert!(html.contains(r#"href="/assets/status.css""#));
        assert!(asset("/status").is_none(), "the data is not an asset");
    }

    #[test]
    fn the_script_keeps_the_token_in_memory_only() {
        let (_, js) = asset("/assets/status.js").unwrap();
        for storage in [
            "localStorage",
            "sessionStorage",
            "document.cookie",
            "indexedDB",
        ] {
            assert!(!js.contains(storage), "{storage}");
        }
        assert!(js.contains("Authorization"));
        assert!(js.contains("Bearer "));
    }
}
