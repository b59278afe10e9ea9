//! Wiring: builds the Pingora server and its services from a resolved [`Config`].
//!
//! Services: the proxy on `listen`, the admin service on `admin.listen`, a sweeper that frees
//! expired cache entries, and the readiness flag, which turns ready once the proxy and admin
//! services are up.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::{debug, info, warn};
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;
use pingora_proxy::http_proxy_service_with_name;

use crate::admin::{AdminApp, Readiness, ReadinessService};
use crate::cache::Cache;
use crate::config::Config;
use crate::proxy::Proxy;

/// How often expired cache entries are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Builds the server, ready for `run_forever`. With `-u`, `bootstrap` waits here for the
/// old process to hand over its listening sockets.
pub fn build(config: &Config) -> Server {
    info!(
        "caching-proxy {}: proxy on {}, admin on {}, origin {} ({}), cache {} bytes / {} entries",
        env!("CARGO_PKG_VERSION"),
        config.listen,
        config.admin.listen,
        config.upstream.origin.authority,
        config.upstream.origin.addr,
        config.cache.max_bytes,
        config.cache.max_entries,
    );
    if config.admin.token.is_none() && !config.admin.listen.ip().is_loopback() {
        warn!(
            "admin service on non-loopback {} without admin.token: clear and purge are refused",
            config.admin.listen
        );
    }
    let mut server = Server::new_with_opt_and_conf(config.pingora_opt(), config.pingora_conf());
    server.bootstrap();

    let cache = Arc::new(Cache::in_memory(&config.cache));
    let readiness = Readiness::default();

    let mut proxy = http_proxy_service_with_name(
        &server.configuration,
        Proxy::new(config, cache.clone()),
        "caching-proxy",
    );
    proxy.add_tcp(&config.listen);

    let mut admin = Service::new(
        "admin".to_owned(),
        AdminApp::new(
            &config.admin,
            &config.cache,
            cache.clone(),
            readiness.clone(),
        ),
    );
    admin.add_tcp(&config.admin.listen.to_string());

    let proxy = server.add_service(proxy);
    let admin = server.add_service(admin);
    server.add_service(background_service(
        "cache sweeper",
        Sweeper {
            cache,
            every: SWEEP_INTERVAL,
        },
    ));
    let ready = server.add_service(background_service("readiness", ReadinessService(readiness)));
    ready.add_dependency(&proxy);
    ready.add_dependency(&admin);
    server
}

/// Periodically frees cache entries that can no longer be served.
struct Sweeper {
    cache: Arc<Cache>,
    every: Duration,
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    let freed = self.cache.backend.sweep_expired();
                    if freed > 0 {
                        debug!("cache sweeper freed {freed} expired entries");
                    }
                }
            }
        }
    }
}
