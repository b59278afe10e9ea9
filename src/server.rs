//! Wiring: builds the Pingora server and its services from a resolved [`Config`].
//!
//! Services: the proxy on `listen`, the admin service on `admin.listen`, a sweeper that frees
//! expired cache entries, the Redis tier's upkeep (when configured), and the readiness flag,
//! which turns ready once the proxy and admin services are up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::{debug, warn};
use parking_lot::Mutex;
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_proxy::http_proxy_service_with_name;
use socket2::{Domain, Socket, Type};
use tokio::sync::watch;

use crate::admin::{AdminApp, AdminListener, ProbeToken, Readiness, ReadinessService};
use crate::cache::storage::TierService;
use crate::cache::Cache;
use crate::config::Config;
use crate::lifecycle::handover::{self, HandoverService};
use crate::proxy::{limits, Proxy};
use crate::routes::Router;
use crate::upstream::Upstreams;
use crate::{logging, metrics};

/// How often expired cache entries are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// A reason the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({setting}): {error}")]
    Listen {
        setting: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// Checks that the proxy's listen address can be bound, so that a port in use is a clear
/// start-up error: Pingora binds inside a service thread, where a failure only panics that
/// thread. Skipped on upgrade (`-u`), where the running instance hands its sockets over.
fn check_listen_address(config: &Config) -> Result<(), StartError> {
    if config.server.upgrade {
        return Ok(());
    }
    let addr = config.listen;
    let bind = || -> std::io::Result<()> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        // As Pingora does, so that connections in TIME_WAIT from a previous run do not
        // count as "in use".
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())
    };
    bind().map_err(|error| StartError::Listen {
        setting: "listen.host/listen.port",
        addr,
        error,
    })
}

/// Builds the server, ready for `run_forever`. With `-u`, `bootstrap` waits here for the
/// old process to hand over its listening sockets.
pub fn build(config: &Config) -> Result<Server, StartError> {
    check_listen_address(config)?;
    logging::event(
        &format!("starting caching-proxy {}", env!("CARGO_PKG_VERSION")),
        config.summary(),
    );
    if config.admin.token.is_none() && !config.admin.listen.ip().is_loopback() {
        warn!(
            "admin service on non-loopback {} without admin.token: clear and purge are refused",
            config.admin.listen
        );
    }
    let mut server = Server::new_with_opt_and_conf(config.pingora_opt(), config.pingora_conf());
    server.bootstrap();

    let (cache, tier) = Cache::from_config(&config.cache);
    let cache = Arc::new(cache);
    metrics::register(cache.clone());
    let readiness = Readiness::default();
    let probe = ProbeToken::new();

    let (upstreams, upstream_services) = Upstreams::build(&config.routing);
    let router = Arc::new(Router::new(&config.routing, &upstreams));
    let mut proxy = http_proxy_service_with_name(
        &server.configuration,
        Proxy::new(config, cache.clone(), probe.clone(), router.clone()),
        "caching-proxy",
    );
    if let Some(app) = proxy.app_logic_mut() {
        app.server_options = Some(limits::server_options(
            &config.limits,
            config.security_headers,
        ));
    }
    proxy.add_tcp(&config.listen.to_string());

    let admin_app = AdminApp::new(
        &config.admin,
        cache.clone(),
        readiness.clone(),
        probe.clone(),
        router,
        upstreams,
    );
    let admin = AdminListener::bind(admin_app, config.admin.listen, config.server.upgrade)
        .map_err(|error| StartError::Listen {
            setting: "admin.host/admin.port",
            addr: config.admin.listen,
            error,
        })?;
    let admin = background_service("admin", admin);

    // Health checks and DNS discovery, one service per upstream group.
    for service in upstream_services {
        server.add_boxed_service(service);
    }
    let proxy = server.add_service(proxy);
    let admin = server.add_service(admin);
    server.add_service(background_service(
        "cache sweeper",
        Sweeper {
            cache: cache.clone(),
            every: SWEEP_INTERVAL,
        },
    ));
    // The cache hand-over: taken from the running process on an upgrade, offered to the next.
    if let Some(storage) = cache.backend.memory_tier() {
        server.add_service(background_service(
            "cache hand-over",
            HandoverService {
                storage,
                path: handover::socket_path(&config.server.upgrade_sock),
                upgrade: config.server.upgrade,
                timeout: config.server.handover_timeout,
            },
        ));
    }
    // With the Redis tier, readiness waits for its first connection attempt, so that a
    // restarted instance serves what Redis holds from its first request.
    let (first_attempt, tier_attempted) = watch::channel(tier.is_none());
    if let Some(tier) = tier {
        server.add_service(background_service(
            "redis tier",
            TierService {
                tier,
                first_attempt,
            },
        ));
    }
    let ready = server.add_service(background_service(
        "readiness",
        ReadinessService {
            readiness,
            listeners: vec![config.listen, config.admin.listen],
            token: probe,
            phases: Mutex::new(Some(server.watch_execution_phase())),
            before_ready: Mutex::new(Some(tier_attempted)),
        },
    ));
    ready.add_dependency(&proxy);
    ready.add_dependency(&admin);
    Ok(server)
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
