//! Helpers of the routing tests: origins that name themselves in their answers, server
//! lists for the config file, requests with a `Host`, and the admin API's `/upstreams`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::support::metrics;
use crate::support::{request, wait_until, Origin, Proxy, Reply, Response};

/// Generous bound for anything that happens "soon" on a loaded CI machine.
pub const SOON: Duration = Duration::from_secs(20);

/// How an origin's health check endpoint answers: 200 while the flag is set, 503 otherwise.
pub type Health = Arc<AtomicBool>;

/// An origin whose every answer is `<name> <target>`, never stored (`no-store`), so each
/// request reaches an origin; `/healthz` answers 200 and no request of the tests uses it.
pub fn named(name: &str) -> Origin {
    named_with_health(name, 0, &Arc::new(AtomicBool::new(true)))
}

/// [`named`] on `port` (0: any), with `/healthz` following `health`.
pub fn named_with_health(name: &str, port: u16, health: &Health) -> Origin {
    let (name, health) = (name.to_owned(), health.clone());
    Origin::start_on(port, move |r| {
        if r.path() == "/healthz" {
            let status = if health.load(Ordering::SeqCst) {
                200
            } else {
                503
            };
            return Reply::ok("")
                .status(status)
                .header("cache-control", "no-store");
        }
        Reply::ok(format!("{name} {}", r.target)).header("cache-control", "no-store")
    })
}

/// The requests an origin got, without its health checks.
pub fn traffic(origin: &Origin) -> usize {
    origin
        .requests()
        .iter()
        .filter(|r| r.path() != "/healthz")
        .count()
}

/// `servers:` entries for these origins, as a YAML flow list.
pub fn servers(origins: &[&Origin]) -> String {
    let list: Vec<String> = origins
        .iter()
        .map(|o| format!("\"{}\"", o.addr()))
        .collect();
    format!("[{}]", list.join(", "))
}

/// GET `path` with `Host: host`.
pub fn fetch(proxy: &Proxy, host: &str, path: &str) -> Response {
    request("GET", &proxy.url(path), &[("Host", host)], None)
}

/// The name of the origin that answered ([`named`]'s first word).
pub fn served_by(resp: &Response) -> &str {
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.body.split(' ').next().unwrap()
}

/// The servers of upstream `name` as `GET /upstreams` reports them.
pub fn upstream_servers(proxy: &Proxy, name: &str) -> Vec<Value> {
    let all = crate::support::get(&proxy.admin_url("/upstreams")).json();
    let group = all["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no upstream {name} in {all}"))
        .clone();
    group["servers"].as_array().unwrap().clone()
}

/// `/upstreams`' report of one server of `upstream`.
pub fn server_status(proxy: &Proxy, upstream: &str, origin: &Origin) -> Value {
    let addr = origin.addr().to_string();
    upstream_servers(proxy, upstream)
        .into_iter()
        .find(|s| s["server"] == addr.as_str())
        .unwrap_or_else(|| panic!("{addr} is not a server of {upstream}"))
}

/// The `caching_proxy_upstream_healthy` gauge of one server.
pub fn healthy_gauge(proxy: &Proxy, upstream: &str, origin: &Origin) -> Option<f64> {
    let addr = origin.addr().to_string();
    metrics::value(
        &metrics::scrape(proxy),
        "caching_proxy_upstream_healthy",
        &[("upstream", upstream), ("server", &addr)],
    )
}

/// Waits until `/upstreams` and the gauge both report `origin` as `healthy`.
pub fn wait_health(proxy: &Proxy, upstream: &str, origin: &Origin, healthy: bool) -> Duration {
    let what = format!(
        "{} to be reported {}",
        origin.addr(),
        if healthy { "healthy" } else { "unhealthy" }
    );
    let gauge = if healthy { 1.0 } else { 0.0 };
    wait_until(SOON, &what, || {
        server_status(proxy, upstream, origin)["healthy"] == healthy
            && healthy_gauge(proxy, upstream, origin) == Some(gauge)
    })
}

/// Attempts the proxy made on one server (every status class, and `none` for a failed
/// connection), from `caching_proxy_upstream_requests_total`.
pub fn attempts(proxy: &Proxy, upstream: &str, origin: &Origin) -> f64 {
    let addr = origin.addr().to_string();
    metrics::sum(
        &metrics::scrape(proxy),
        "caching_proxy_upstream_requests_total",
        &[("upstream", upstream), ("server", &addr)],
    )
}

/// `caching_proxy_upstream_retries_total` of one upstream.
pub fn retries(proxy: &Proxy, upstream: &str) -> f64 {
    metrics::sum(
        &metrics::scrape(proxy),
        "caching_proxy_upstream_retries_total",
        &[("upstream", upstream)],
    )
}
