//! Wiring: builds the Pingora server and its services from a resolved [`Config`].
//!
//! Services: the proxy on `listen` (plaintext, h2c when enabled) and on `tls.listen` (TLS,
//! certificates by SNI, h2 by ALPN), both listeners of one Pingora service so that an upgrade
//! hands both over; the admin service on `admin.listen`; the status sampler (the admin status
//! page's once-a-second figures); a sweeper that frees expired cache entries; the cache
//! hand-over to and from another process on an upgrade or reload (`lifecycle::handover`);
//! the Redis tier's upkeep (when configured); SIGHUP reloads (`lifecycle::reload`); and the
//! readiness flag, which turns ready once the proxy and admin services answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::{debug, warn};
use parking_lot::Mutex;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::{Server, ShutdownWatch};
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::listening::Service;
use pingora_proxy::http_proxy;
use socket2::{Domain, Socket, Type};
use tokio::sync::watch;

use crate::admin::{
    AdminApp, AdminListener, Listener, ProbeToken, Readiness, ReadinessService, StatusPage,
};
use crate::cache::storage::TierService;
use crate::cache::Cache;
use crate::config::Config;
use crate::lifecycle::handover::{self, HandoverService};
use crate::lifecycle::reload::{self, Reexec};
use crate::lifecycle::{self, ServeAccepted, SighupService};
use crate::proxy::{limits, Proxy};
use crate::routes::Router;
use crate::status::{Sampler, StatusBoard};
use crate::tls::{Certificates, PairError};
use crate::upstream::Upstreams;
use crate::{logging, metrics};

/// How often expired cache entries are swept: every part of the cache once per interval.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// The parts the sweep goes through one at a time, evenly over the interval (the memory
/// storage has up to 16 shards: one each), so that the removals of a pass are spread over
/// it on a core the workers share.
const SWEEP_PARTS: usize = 16;

/// Write buffer of each client connection. Pingora's default is one TCP segment (1,460
/// bytes): the header of a 1 KiB response went out in one send and its body in another
/// (over TLS, two records). With room for a header and a 16 KiB body, a response up to that
/// size leaves in one send (a body of 4 KiB or more in one vectored write with the buffered
/// header, not copied: the vendored pingora-core's `WriteBuffer`). Measured
/// (A/B, one thread, 64 connections): 1 KiB HIT +40%, 16 KiB +35%, HTTPS/1.1 1 KiB +20%,
/// 256 KiB and HTTP/2 unchanged.
const CLIENT_WRITE_BUFFER: usize = 32 * 1024;

/// A client-facing listener of the proxy: Pingora's endpoint with our write buffer.
///
/// Plain HTTP reads without Pingora's 64 KiB read buffer: an HTTP/1 session reads a request
/// head into its own buffer, so the L4 buffer only added a copy out of memory that is cold
/// once there are many connections, and up to 64 KiB of RSS per connection (the buffer is
/// zeroed when it is set up, which touches its pages when the allocator reuses memory).
/// A/B (one thread, 1 KiB hits, 3 rounds): 1,000 connections 48.7-51.5k -> 51.9-54.1k req/s
/// and RSS 111-116 -> 67-69 MiB; 64 and 256 connections unchanged or better. TLS keeps the
/// read buffer: rustls reads a record at a time.
fn client_listener(addr: SocketAddr, tls: bool) -> ListenerConfig {
    let buffers = L4BufferSettings::default().write(CLIENT_WRITE_BUFFER);
    ListenerConfig::tcp(addr.to_string()).l4_buffer(if tls { buffers } else { buffers.read(0) })
}

/// A reason the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({setting}): {error}")]
    Listen {
        setting: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("cannot catch SIGHUP: {0}")]
    Signal(std::io::Error),
    #[error("{0} (the file changed since the configuration was checked)")]
    Certificates(PairError),
}

/// Checks that the proxy's listen address can be bound, so that a port in use is a clear
/// start-up error: Pingora binds inside a service thread, where a failure only panics that
/// thread. Skipped on upgrade (`-u`), where the running instance hands its sockets over.
fn check_listen_addresses(config: &Config) -> Result<(), StartError> {
    if config.server.upgrade {
        return Ok(());
    }
    let mut listeners = vec![(config.listen, "listen.host/listen.port")];
    if let Some(tls) = &config.tls {
        listeners.push((tls.listen, "tls.host/tls.port"));
    }
    for (addr, setting) in listeners {
        let bind = || -> std::io::Result<()> {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            // As Pingora does, so that connections in TIME_WAIT from a previous run do not
            // count as "in use".
            socket.set_reuse_address(true)?;
            socket.bind(&addr.into())
        };
        bind().map_err(|error| StartError::Listen {
            setting,
            addr,
            error,
        })?;
    }
    Ok(())
}

/// Builds the server, ready for `run_forever`. With `-u`, `bootstrap` waits here for the
/// old process to hand over its listening sockets.
pub fn build(config: &Config) -> Result<Server, StartError> {
    // First: from here on a SIGHUP cannot terminate the process.
    let sighup = lifecycle::catch_sighup().map_err(StartError::Signal)?;
    check_listen_addresses(config)?;
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
    let certificates = match &config.tls {
        Some(tls) => Some(Certificates::load(&tls.certificates).map_err(StartError::Certificates)?),
        None => None,
    };
    // Everything is checked: a process started by a reload tells the running one, which
    // then hands its listeners over (`bootstrap` below waits for them).
    reload::report_to_parent(Ok(()));
    let mut server = Server::new_with_opt_and_conf(config.pingora_opt(), config.pingora_conf());
    server.bootstrap();
    // A daemon's pid file is Pingora's (written after it forks); in the foreground this
    // process writes it once it has the listeners, so `--reload` finds the one serving.
    if !config.server.daemon {
        let pid = format!("{}\n", std::process::id());
        if let Err(e) = std::fs::write(&config.server.pid_file, pid) {
            warn!("cannot write the pid file {}: {e}", config.server.pid_file);
        }
    }

    let (cache, tier) = Cache::from_config(&config.cache);
    let cache = Arc::new(cache);
    metrics::register(cache.clone());
    let readiness = Readiness::default();
    let probe = ProbeToken::new();
    let board = Arc::new(StatusBoard::default());

    let (upstreams, upstream_services) = Upstreams::build(&config.routing);
    let router = Arc::new(Router::new(&config.routing, &upstreams));
    let mut app = http_proxy(
        &server.configuration,
        Proxy::new(
            config,
            cache.clone(),
            probe.clone(),
            router.clone(),
            board.clone(),
        ),
    );
    // The header timeout and our answer to what Pingora's reader refuses; h2c if enabled.
    let mut options = limits::server_options(&config.limits, config.security_headers);
    options.h2c = config.h2c;
    app.server_options = Some(options);
    let mut proxy = Service::new(
        "caching-proxy".to_owned(),
        ServeAccepted::new(app, config.server.grace_period),
    );
    proxy.add_listener(client_listener(config.listen, false));
    let mut listeners = vec![
        Listener {
            addr: config.listen,
            tls: false,
        },
        Listener {
            addr: config.admin.listen,
            tls: false,
        },
    ];
    if let (Some(tls), Some(certificates)) = (&config.tls, &certificates) {
        proxy.add_listener(
            client_listener(tls.listen, true).tls(certificates.listener_settings(tls.http2)),
        );
        listeners.push(Listener {
            addr: tls.listen,
            tls: true,
        });
    }

    let admin_app = AdminApp::new(
        &config.admin,
        cache.clone(),
        readiness.clone(),
        probe.clone(),
        router,
        upstreams,
        StatusPage::new(config, board.clone()),
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
        "status sampler",
        Sampler {
            board,
            cache: cache.clone(),
        },
    ));
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
            listeners,
            token: probe,
            phases: Mutex::new(Some(server.watch_execution_phase())),
            before_ready: Mutex::new(Some(tier_attempted)),
        },
    ));
    ready.add_dependency(&proxy);
    ready.add_dependency(&admin);
    server.add_service(background_service(
        "sighup",
        SighupService {
            sighup,
            reload: Arc::new(Reexec::new(
                &config.server.pid_file,
                &config.server.upgrade_sock,
            )),
        },
    ));
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
        let mut tick = tokio::time::interval(self.every / SWEEP_PARTS as u32);
        let mut part = 0;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    let freed = self.cache.backend.sweep_expired(part, SWEEP_PARTS);
                    if freed > 0 {
                        debug!("cache sweeper freed {freed} expired entries (part {part})");
                    }
                    part = (part + 1) % SWEEP_PARTS;
                }
            }
        }
    }
}
