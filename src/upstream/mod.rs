//! Upstream groups: the servers a route's requests go to, chosen by pingora-load-balancing,
//! with active health checks, DNS re-resolution and the retry choice.
//!
//! The proxy asks a group for a server with [`UpstreamGroup::select`], passing the servers
//! that already failed this request; the group knows nothing of caching. The balancing
//! algorithm is chosen once, at start-up, behind one `select` (the `match` lives only in
//! [`Balancer`]). Health checks and discovery run as a Pingora background service per group
//! ([`UpstreamGroup::service`]); the request path only reads their results.

pub mod discovery;
pub mod health;

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use pingora::lb::selection::{
    BackendIter, BackendSelection, Consistent, FNVHash, Random, RoundRobin,
};
use pingora::lb::{Backend, Backends, LoadBalancer};
use pingora_core::services::background::background_service;
use pingora_core::services::ServiceWithDependents;

use crate::config::routing::{Routing, Selection, UpstreamGroupConfig};
use crate::metrics::{status_class_index, METRICS, STATUS_CLASSES};
use discovery::{DnsDiscovery, Resolver, ServerName, SystemResolver};
use health::{CheckResults, RecordedCheck};
use parking_lot::Mutex;
use pingora_core::protocols::l4::socket::SocketAddr;
use prometheus::IntCounter;

/// Servers looked at per selection; bounds Ketama's linear walk.
const MAX_ITERATIONS: usize = 256;

/// The balancing algorithm, chosen at config time.
enum Balancer {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Random(Arc<LoadBalancer<Random>>),
    Hash(Arc<LoadBalancer<FNVHash>>),
    Consistent(Arc<LoadBalancer<Consistent>>),
}

impl Balancer {
    fn select_with(&self, key: &[u8], accept: impl Fn(&Backend, bool) -> bool) -> Option<Backend> {
        match self {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_ITERATIONS, accept),
            Balancer::Random(lb) => lb.select_with(key, MAX_ITERATIONS, accept),
            Balancer::Hash(lb) => lb.select_with(key, MAX_ITERATIONS, accept),
            Balancer::Consistent(lb) => lb.select_with(key, MAX_ITERATIONS, accept),
        }
    }

    fn backends(&self) -> &Backends {
        match self {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Random(lb) => lb.backends(),
            Balancer::Hash(lb) => lb.backends(),
            Balancer::Consistent(lb) => lb.backends(),
        }
    }
}

/// One upstream group, ready for the request path.
pub struct UpstreamGroup {
    pub name: String,
    pub tls: bool,
    /// Offer h2 by ALPN to these (TLS) servers.
    pub http2: bool,
    /// SNI and certificate name; `None`: the server's own host name.
    pub sni: Option<String>,
    pub retries: usize,
    /// `--origin`'s group, whose Host header follows `upstream.preserve_host`.
    pub from_origin_flag: bool,
    balancer: Balancer,
    checks: Option<Arc<CheckResults>>,
    config: UpstreamGroupConfig,
    /// `caching_proxy_upstream_requests_total` of each server by status class, resolved the
    /// first time a server answers: the label is the server's address, and formatting it for
    /// every response cost more than the rest of the count (a MISS: 2,000 instructions).
    requests: Mutex<HashMap<SocketAddr, [IntCounter; STATUS_CLASSES.len()]>>,
}

/// A server of a group as `GET /upstreams` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerStatus {
    pub server: String,
    pub host: String,
    pub weight: usize,
    pub healthy: bool,
    pub last_check: Option<String>,
    pub last_check_ok: Option<bool>,
    pub last_check_error: Option<String>,
}

fn build<S>(
    config: &UpstreamGroupConfig,
    resolver: Arc<dyn Resolver>,
    check: Option<RecordedCheck>,
) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let discovery = DnsDiscovery::new(&config.name, config.servers.clone(), resolver);
    let mut lb = LoadBalancer::<S>::from_backends(Backends::new(Box::new(discovery)));
    // The first discovery answers from the start-up resolution: no I/O, no waiting.
    lb.update()
        .now_or_never()
        .expect("the first discovery does not wait")
        .expect("the first discovery does not fail");
    if let Some(check) = check {
        lb.set_health_check(Box::new(check));
        lb.health_check_frequency = config.health_check.as_ref().map(|h| h.interval);
        lb.parallel_health_check = true;
    }
    lb.update_frequency = (!config.resolve_interval.is_zero()).then_some(config.resolve_interval);
    lb
}

impl UpstreamGroup {
    /// Builds the group and the background service that keeps it current.
    pub fn new(
        config: &UpstreamGroupConfig,
        resolver: Arc<dyn Resolver>,
    ) -> (Arc<UpstreamGroup>, Box<dyn ServiceWithDependents>) {
        let check = config.health_check.as_ref().map(|h| {
            let sni = config
                .sni
                .clone()
                .unwrap_or_else(|| config.servers[0].host.clone());
            RecordedCheck::new(&config.name, h, config.tls, &sni)
        });
        let checks = check.as_ref().map(RecordedCheck::results);
        let name = format!("upstream {}", config.name);
        macro_rules! service {
            ($variant:ident) => {{
                let svc = background_service(&name, build(config, resolver, check));
                (
                    Balancer::$variant(svc.task()),
                    Box::new(svc) as Box<dyn ServiceWithDependents>,
                )
            }};
        }
        let (balancer, service) = match config.selection {
            Selection::RoundRobin => service!(RoundRobin),
            Selection::Random => service!(Random),
            Selection::Hash => service!(Hash),
            Selection::Consistent => service!(Consistent),
        };
        for s in &config.servers {
            for a in &s.addrs {
                METRICS
                    .upstream_healthy
                    .with_label_values(&[config.name.as_str(), a.to_string().as_str()])
                    .set(1);
            }
        }
        let group = UpstreamGroup {
            name: config.name.clone(),
            tls: config.tls,
            http2: config.tls && config.http2,
            sni: config.sni.clone(),
            retries: config.retries,
            from_origin_flag: config.from_origin_flag,
            balancer,
            checks,
            config: config.clone(),
            requests: Mutex::default(),
        };
        (Arc::new(group), service)
    }

    /// Counts a request sent to `server` by the status of its answer (0: no answer).
    pub fn count_request(&self, server: &SocketAddr, status: u16) {
        let i = status_class_index(status);
        let mut requests = self.requests.lock();
        if let Some(counters) = requests.get(server) {
            counters[i].inc();
            return;
        }
        let label = server.to_string();
        let counters = STATUS_CLASSES.map(|class| {
            METRICS.upstream_requests.with_label_values(&[
                self.name.as_str(),
                label.as_str(),
                class,
            ])
        });
        counters[i].inc();
        requests.insert(server.clone(), counters);
    }

    /// A server for a request: a healthy one that has not failed this request yet; failing
    /// that, any that has not failed it (all unhealthy: try them anyway); `None` when every
    /// server already failed this request.
    pub fn select(&self, key: &[u8], failed: &[Backend]) -> Option<Backend> {
        let fresh = |b: &Backend| !failed.contains(b);
        self.balancer
            .select_with(key, |b, healthy| healthy && fresh(b))
            .or_else(|| self.balancer.select_with(key, |b, _| fresh(b)))
    }

    pub fn servers(&self) -> Vec<ServerStatus> {
        let backends = self.balancer.backends();
        backends
            .get_backend()
            .iter()
            .map(|b| {
                let addr = b.addr.to_string();
                let check = self.checks.as_ref().and_then(|c| c.get(&addr));
                let host = server_name(b).unwrap_or_default().to_owned();
                ServerStatus {
                    host,
                    weight: b.weight,
                    healthy: backends.ready(b),
                    last_check: check
                        .as_ref()
                        .map(|c| chrono::DateTime::<chrono::Utc>::from(c.at).to_rfc3339()),
                    last_check_ok: check.as_ref().map(|c| c.ok),
                    last_check_error: check.and_then(|c| c.error),
                    server: addr,
                }
            })
            .collect()
    }

    pub fn config(&self) -> &UpstreamGroupConfig {
        &self.config
    }

    /// Whether a health check is configured (else only passive retries apply).
    pub fn has_health_check(&self) -> bool {
        self.checks.is_some()
    }
}

/// The host name a server was configured with (for SNI), if known.
pub fn server_name(server: &Backend) -> Option<&str> {
    server.ext.get::<ServerName>().map(|n| n.0.as_str())
}

/// Every group, by name.
#[derive(Default)]
pub struct Upstreams {
    groups: Vec<Arc<UpstreamGroup>>,
}

impl Upstreams {
    /// Builds every group of `routing`; the services keep them current and must be added to
    /// the server.
    pub fn build(routing: &Routing) -> (Arc<Upstreams>, Vec<Box<dyn ServiceWithDependents>>) {
        Self::build_with_resolver(routing, Arc::new(SystemResolver))
    }

    pub fn build_with_resolver(
        routing: &Routing,
        resolver: Arc<dyn Resolver>,
    ) -> (Arc<Upstreams>, Vec<Box<dyn ServiceWithDependents>>) {
        let mut groups = Vec::new();
        let mut services = Vec::new();
        for config in &routing.upstreams {
            let (group, service) = UpstreamGroup::new(config, resolver.clone());
            groups.push(group);
            services.push(service);
        }
        (Arc::new(Upstreams { groups }), services)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<UpstreamGroup>> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<UpstreamGroup>> {
        self.groups.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use pingora_core::services::background::BackgroundService;

    use super::discovery::testing::Table;
    use super::*;
    use crate::config::routing::ServerConfig;

    fn group_config(resolve_interval: Duration) -> UpstreamGroupConfig {
        UpstreamGroupConfig {
            name: "app".into(),
            servers: vec![ServerConfig {
                host: "app.internal".into(),
                port: 80,
                weight: 1,
                addrs: vec!["10.0.0.1:80".parse().unwrap()],
            }],
            selection: Selection::RoundRobin,
            tls: false,
            sni: None,
            health_check: None,
            resolve_interval,
            retries: 0,
            http2: false,
            from_origin_flag: false,
        }
    }

    /// Waits (at most 10 s) until `done`, polling while the runtime runs the group's service.
    async fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The group's background service re-resolves every `resolve_interval` and requests are
    /// sent to the new address; a failed lookup keeps the last good one.
    #[tokio::test]
    async fn a_group_follows_a_changed_dns_answer() {
        let table = Arc::new(Table::default());
        table.set("app.internal", &["10.0.0.1:80"]);
        let (group, _service) =
            UpstreamGroup::new(&group_config(Duration::from_millis(20)), table.clone());
        let Balancer::RoundRobin(lb) = &group.balancer else {
            unreachable!("round_robin was configured")
        };
        let (shutdown, watch) = tokio::sync::watch::channel(false);
        let lb = lb.clone();
        let service = tokio::spawn(async move { lb.start(watch).await });
        let selected = || group.select(b"", &[]).unwrap().addr.to_string();
        assert_eq!(selected(), "10.0.0.1:80");

        table.set("app.internal", &["10.0.0.2:80"]);
        wait_for("the new address", || selected() == "10.0.0.2:80").await;
        let servers = group.servers();
        assert_eq!(servers.len(), 1);
        assert_eq!(
            (servers[0].server.as_str(), servers[0].host.as_str()),
            ("10.0.0.2:80", "app.internal")
        );

        table.fail("app.internal");
        let lookups = table.lookups();
        wait_for("two failed lookups", || table.lookups() >= lookups + 2).await;
        assert_eq!(selected(), "10.0.0.2:80", "the last good answer is kept");

        shutdown.send(true).unwrap();
        service.await.unwrap();
    }

    /// `resolve_interval: 0`: the names are resolved at start only.
    #[tokio::test]
    async fn a_zero_interval_resolves_only_at_start() {
        let table = Arc::new(Table::default());
        table.set("app.internal", &["10.0.0.2:80"]);
        let (group, _service) = UpstreamGroup::new(&group_config(Duration::ZERO), table.clone());
        let Balancer::RoundRobin(lb) = &group.balancer else {
            unreachable!("round_robin was configured")
        };
        assert_eq!(lb.update_frequency, None);
        let (_shutdown, watch) = tokio::sync::watch::channel(false);
        // Without periodic work the service returns after its one pass at start.
        tokio::time::timeout(Duration::from_secs(10), lb.start(watch))
            .await
            .expect("the service ends after its start-up pass");
        assert_eq!(table.lookups(), 1);
    }
}
