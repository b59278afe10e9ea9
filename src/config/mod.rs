//! Configuration: gathered from flags, `PROXY_*` env vars and a YAML file (see [`sources`]),
//! then resolved once, here, into the typed [`Config`] the rest of the program reads.
//!
//! Precedence is CLI > env > file > defaults. Every value is parsed and validated before
//! anything listens; a bad value is a [`ConfigError`] naming the setting, the value, where it
//! came from and what is allowed. Nothing downstream re-parses strings.

pub mod limits;
pub mod routing;
pub mod sources;
pub mod tls;
pub mod units;
mod values;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

pub use limits::LimitsConfig;
pub use routing::Routing;
use sources::{lookup, RawSettings, Sourced};
pub use sources::{Cli, Source};
pub use tls::TlsConfig;
use values::*;

/// A configuration problem, reported before the proxy starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {value:?} {problem} (from {from})")]
    Invalid {
        key: &'static str,
        value: String,
        problem: String,
        from: Source,
    },
    #[error("{key} is required: set --{flag}, {env} or {key} in the config file")]
    Missing {
        key: &'static str,
        flag: &'static str,
        env: &'static str,
    },
    #[error("cannot read config file {}: {error}", path.display())]
    ReadFile { path: PathBuf, error: String },
    #[error("config file {} is not valid: {error}", path.display())]
    ParseFile { path: PathBuf, error: String },
    #[error("config file {}: unknown setting {key:?}", path.display())]
    UnknownKey { path: PathBuf, key: String },
    #[error("{key}: {problem} (from file {})", path.display())]
    Section {
        key: String,
        problem: String,
        path: PathBuf,
    },
    #[error("{key}: {value:?} {problem} (from {from})")]
    Certificate {
        key: String,
        value: String,
        problem: String,
        from: Source,
    },
    #[error("{0}")]
    Conflict(String),
}

/// The whole resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the proxy listens on (plaintext).
    pub listen: SocketAddr,
    /// HTTP/2 with prior knowledge on the plaintext listener.
    pub h2c: bool,
    /// The TLS listener, when `tls.port` is set.
    pub tls: Option<TlsConfig>,
    pub upstream: UpstreamConfig,
    pub cache: CacheConfig,
    pub log_level: LevelFilter,
    pub log_format: LogFormat,
    pub cors: CorsConfig,
    pub security_headers: bool,
    pub admin: AdminConfig,
    pub server: ServerSettings,
    /// Upstream groups and the routes to them (`--origin` is one of each).
    pub routing: Routing,
    /// Bounds on client requests, answered by the proxy itself.
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `--origin`, when given (routes may name other upstreams instead).
    pub origin: Option<Origin>,
    pub preserve_host: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// Idle timeout of WebSocket and other upgraded connections.
    pub upgrade_idle_timeout: Duration,
    /// Offer h2 to https origins (the default of every upstream group).
    pub http2: bool,
}

/// The origin server, parsed and resolved at start-up so the request path never touches DNS.
#[derive(Debug, Clone)]
pub struct Origin {
    pub tls: bool,
    /// Host name used for SNI and certificate verification.
    pub host: String,
    /// `host[:port]` as written, sent as the upstream `Host` unless `preserve_host` is set.
    pub authority: String,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Freshness for cacheable responses that carry none; zero means "do not store them".
    pub default_ttl: Duration,
    pub max_bytes: usize,
    pub max_entries: usize,
    pub max_object_bytes: usize,
    /// `cache.max_inflight_size`, when set; see [`CacheConfig::max_inflight_bytes`].
    pub max_inflight_size: Option<usize>,
    pub lock_timeout: Duration,
    pub stale_retention: Duration,
    pub heuristic_fraction: f64,
    pub heuristic_max: Duration,
    pub stale_if_error: Duration,
    pub ignore_client_no_cache: bool,
    /// Targeted cache-control fields (RFC 9213) obeyed before Cache-Control, first match wins.
    /// Header names, lower case; empty turns targeted fields off.
    pub targeted_cache_control: Vec<http::HeaderName>,
    /// Whether `PURGE` requests are accepted on the proxy port.
    pub purge: bool,
    /// Where entries live: this process only, or a shared Redis tier behind it.
    pub backend: BackendConfig,
}

/// Without an in-process tier (Redis only), bodies being stored get this budget by default.
const INFLIGHT_WITHOUT_MEMORY_TIER: usize = 16 << 20;

impl CacheConfig {
    /// The cap on bodies being stored at once: `cache.max_inflight_size`, else a quarter of
    /// the in-process tier's bound `tier_bytes` (16 MiB without one). Within that bound:
    /// bodies in flight and stored entries share it.
    pub fn max_inflight_bytes(&self, tier_bytes: usize) -> usize {
        self.max_inflight_size.unwrap_or(match tier_bytes {
            0 => INFLIGHT_WITHOUT_MEMORY_TIER,
            n => n / 4,
        })
    }
}

#[derive(Debug, Clone)]
pub enum BackendConfig {
    Memory,
    Redis(RedisConfig),
}

/// The shared Redis tier (`cache.redis.*`).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// One server, or the seed nodes of a Redis Cluster; parsed, not yet connected.
    pub nodes: Vec<redis::ConnectionInfo>,
    pub cluster: bool,
    /// Bound on each Redis call; past it the call counts as failed and the request goes on
    /// without Redis.
    pub timeout: Duration,
    pub key_prefix: String,
    /// Bound of the in-process tier in front of Redis; 0 = none.
    pub l1_max_bytes: usize,
}

impl RedisConfig {
    /// `host:port` of each node, for logs and the status output (credentials left out).
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr().to_string()).collect()
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(Debug, Clone, Default)]
pub struct CorsConfig {
    pub enabled: bool,
    pub allowed_origins: AllowedOrigins,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `*`: any origin (credentials are then never allowed by browsers).
    Any,
    /// Exact origins such as `https://app.example`, compared case-insensitively.
    List(Vec<String>),
    #[default]
    None,
}

impl AllowedOrigins {
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
            AllowedOrigins::None => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
}

/// Bounds on the socket events a worker takes per poll (see [`ServerSettings::io_events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoEvents {
    pub per_poll: usize,
    pub per_busy_poll: usize,
}

impl Default for IoEvents {
    /// An idle poll's batch leaves room in the 256-task local queue for the batches of busy
    /// polls; a busy poll's batch is below the 61 tasks a worker runs between two polls
    /// (tokio's `event_interval`), so the queue drains between them.
    fn default() -> Self {
        IoEvents {
            per_poll: 128,
            per_busy_poll: 32,
        }
    }
}

/// Pingora's own server settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    /// The most socket events a worker takes from the kernel in one poll when it has no task
    /// to run (tokio's `max_io_events_per_tick`), and while it still has (`..._busy_tick`).
    ///
    /// Each event wakes one connection's task into the worker's local queue, which holds 256;
    /// the overflow goes to a shared queue that a busy worker serves only now and then. With
    /// tokio's default (1024 events per poll), a few hundred busy keep-alive connections on
    /// one worker split into some served at once and some waiting tens of milliseconds
    /// (`benches/README.md`). With these bounds the queue cannot overflow and the events left
    /// behind wait in the kernel, which hands them out in order, as an event loop would.
    pub io_events: IoEvents,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    /// How long a new process adopts the old one's cache entries (0: none).
    pub handover_timeout: Duration,
    pub error_log: Option<String>,
    pub daemon: bool,
    pub upgrade: bool,
}

impl Config {
    /// Gathers and resolves the configuration for a parsed command line.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let raw = RawSettings::gather(cli)?;
        let r = Resolver { raw: &raw };
        let mut config = resolve(&r)?;
        config.routing = routing::resolve(
            &raw.sections,
            raw.file.as_deref(),
            config.upstream.origin.as_ref(),
            config.upstream.http2,
        )?;
        config.tls = tls::resolve(
            &r,
            raw.sections.get("tls.certificates"),
            raw.file.as_deref(),
            &[
                (config.listen, "proxy's listen.port"),
                (config.admin.listen, "admin.port"),
            ],
        )?;
        config.server.daemon = cli.daemon;
        config.server.upgrade = cli.upgrade;
        Ok(config)
    }

    /// Resolves only what is needed to reach a running instance's admin service, so that
    /// `--clear-cache` works without the proxy-only settings (the origin, above all).
    pub fn load_admin(cli: &Cli) -> Result<AdminConfig, ConfigError> {
        let raw = RawSettings::gather(cli)?;
        resolve_admin(&Resolver { raw: &raw })
    }

    /// Only the pid file (for `--reload`), from the same sources as a start.
    pub fn load_pid_file(cli: &Cli) -> Result<String, ConfigError> {
        let raw = RawSettings::gather(cli)?;
        resolve_pid_file(&Resolver { raw: &raw })
    }

    /// The resolved settings for the start-up log, secrets left out.
    pub fn summary(&self) -> serde_json::Value {
        let c = &self.cache;
        serde_json::json!({
            "listen": self.listen.to_string(),
            "h2c": self.h2c,
            "tls": self.tls.as_ref().map(|t| serde_json::json!({
                "listen": t.listen.to_string(),
                "certificates": t.certificates.iter().map(|c| c.cert.display().to_string()).collect::<Vec<_>>(),
                "http2": t.http2,
                "redirect_http": t.redirect_http,
                "hsts": t.hsts.as_ref().and_then(|v| v.to_str().ok()),
            })),
            "origin_http2": self.upstream.http2,
            "origin": self.upstream.origin.as_ref().map(|o| format!(
                "{}://{} ({})",
                if o.tls { "https" } else { "http" },
                o.authority,
                o.addr
            )),
            "upstreams": self.routing.upstreams.iter().map(|u| (
                u.name.clone(),
                serde_json::json!(u.servers.iter().map(|s| format!("{}:{} weight={}", s.host, s.port, s.weight)).collect::<Vec<_>>()),
            )).collect::<serde_json::Map<_, _>>(),
            "routes": self.routing.routes.len(),
            "preserve_host": self.upstream.preserve_host,
            "connect_timeout_ms": self.upstream.connect_timeout.as_millis() as u64,
            "read_timeout_ms": self.upstream.read_timeout.as_millis() as u64,
            "cache": {
                "default_ttl_s": c.default_ttl.as_secs(),
                "max_bytes": c.max_bytes,
                "max_entries": c.max_entries,
                "max_object_bytes": c.max_object_bytes,
                "max_inflight_bytes": c.max_inflight_bytes(match &c.backend {
                    BackendConfig::Memory => c.max_bytes,
                    BackendConfig::Redis(redis) => redis.l1_max_bytes,
                }),
                "stale_if_error_s": c.stale_if_error.as_secs(),
                "targeted_cache_control": c.targeted_cache_control.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                "heuristic_fraction": c.heuristic_fraction,
                "purge": c.purge,
                "backend": match &c.backend {
                    BackendConfig::Memory => serde_json::json!("memory"),
                    BackendConfig::Redis(redis) => serde_json::json!({
                        "redis": redis.addresses(),
                        "cluster": redis.cluster,
                        "timeout_ms": redis.timeout.as_millis() as u64,
                        "key_prefix": redis.key_prefix,
                        "l1_max_bytes": redis.l1_max_bytes,
                    }),
                },
            },
            "limits": {
                "max_header_bytes": self.limits.max_header_bytes,
                "max_headers_bytes": self.limits.max_headers_bytes,
                "max_header_count": self.limits.max_header_count,
                "max_uri_bytes": self.limits.max_uri_bytes,
                "max_body_bytes": self.limits.max_body_bytes.unwrap_or(0),
                "client_header_timeout_ms": self.limits.client_header_timeout.as_millis() as u64,
            },
            "cors": self.cors.enabled,
            "security_headers": self.security_headers,
            "admin": self.admin.listen.to_string(),
            "admin_token": if self.admin.token.is_some() { "set" } else { "unset" },
            "threads": self.server.threads,
            "max_io_events_per_poll": self.server.io_events.per_poll,
            "max_io_events_per_busy_poll": self.server.io_events.per_busy_poll,
            "grace_period_s": self.server.grace_period.as_secs(),
        })
    }

    /// Pingora's `ServerConf` for these settings.
    pub fn pingora_conf(&self) -> pingora_core::server::configuration::ServerConf {
        let s = &self.server;
        pingora_core::server::configuration::ServerConf {
            threads: s.threads,
            runtime_max_io_events_per_tick: Some(s.io_events.per_poll),
            runtime_max_io_events_per_busy_tick: Some(s.io_events.per_busy_poll),
            pid_file: s.pid_file.clone(),
            upgrade_sock: s.upgrade_sock.clone(),
            grace_period_seconds: Some(s.grace_period.as_secs()),
            graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout.as_secs()),
            error_log: s.error_log.clone(),
            daemon: s.daemon,
            ca_file: self
                .upstream
                .ca_file
                .as_ref()
                .map(|p| p.display().to_string()),
            ..Default::default()
        }
    }

    /// Pingora's command-line options for these settings.
    pub fn pingora_opt(&self) -> pingora_core::server::configuration::Opt {
        pingora_core::server::configuration::Opt {
            upgrade: self.server.upgrade,
            daemon: self.server.daemon,
            ..Default::default()
        }
    }
}

/// Reads one setting at a time and turns parse failures into errors that name it.
struct Resolver<'a> {
    raw: &'a RawSettings,
}

impl Resolver<'_> {
    fn raw(&self, key: &'static str) -> Option<&Sourced> {
        lookup(key); // a key missing from SETTINGS is a bug: fail in tests, not in production
        self.raw.get(key)
    }

    /// Parses a setting with `parse`, or returns `default` when it is not set.
    fn get<T>(
        &self,
        key: &'static str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => parse(&v.text).map_err(|problem| self.invalid(key, v, problem)),
        }
    }

    fn optional<T>(
        &self,
        key: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(key, None, |text| parse(text).map(Some))
    }

    fn invalid(&self, key: &'static str, v: &Sourced, problem: String) -> ConfigError {
        ConfigError::Invalid {
            key,
            value: v.text.clone(),
            problem,
            from: v.source.clone(),
        }
    }
}

fn resolve_backend(r: &Resolver) -> Result<BackendConfig, ConfigError> {
    if !r.get("cache.backend", false, backend_kind)? {
        return Ok(BackendConfig::Memory);
    }
    let url_setting = lookup("cache.redis.url");
    let nodes = r
        .optional("cache.redis.url", redis_urls)?
        .ok_or(ConfigError::Missing {
            key: url_setting.key,
            flag: url_setting.flag,
            env: url_setting.env,
        })?;
    let cluster = r.get("cache.redis.cluster", false, boolean)?;
    if !cluster && nodes.len() > 1 {
        let v = r.raw("cache.redis.url").expect("set");
        return Err(r.invalid(
            "cache.redis.url",
            v,
            "names several servers: set cache.redis.cluster: true for a Redis Cluster".into(),
        ));
    }
    Ok(BackendConfig::Redis(RedisConfig {
        nodes,
        cluster,
        timeout: r.get(
            "cache.redis.timeout",
            Duration::from_millis(50),
            positive_duration,
        )?,
        key_prefix: r.get("cache.redis.key_prefix", "cp:".into(), key_prefix)?,
        l1_max_bytes: r.get("cache.redis.l1_max_size", 64 << 20, size_or_zero)?,
    }))
}

fn resolve_pid_file(r: &Resolver) -> Result<String, ConfigError> {
    r.get(
        "server.pid_file",
        "/tmp/caching-proxy.pid".into(),
        non_empty,
    )
}

fn resolve_admin(r: &Resolver) -> Result<AdminConfig, ConfigError> {
    let host = r.get("admin.host", "127.0.0.1".parse().unwrap(), ip)?;
    Ok(AdminConfig {
        listen: SocketAddr::new(host, r.get("admin.port", 9091, port)?),
        token: r.optional("admin.token", non_empty)?,
    })
}

fn resolve(r: &Resolver) -> Result<Config, ConfigError> {
    let listen_host = r.get("listen.host", "0.0.0.0".parse().unwrap(), ip)?;
    let listen_port = r.get("listen.port", 3000, port)?;
    // Required unless the file has routes: `routing::resolve` checks that.
    let origin = r.optional("upstream.origin", origin)?;

    let max_bytes = r.get("cache.max_size", 256 << 20, size)?;
    let cache = CacheConfig {
        default_ttl: r.get("cache.default_ttl", Duration::from_secs(300), duration)?,
        max_bytes,
        max_entries: r.get("cache.max_entries", 100_000, count)?,
        max_object_bytes: r.get("cache.max_object_size", (8 << 20).min(max_bytes), size)?,
        max_inflight_size: r.optional("cache.max_inflight_size", size)?,
        lock_timeout: r.get(
            "cache.lock_timeout",
            Duration::from_secs(10),
            positive_duration,
        )?,
        stale_retention: r.get("cache.stale_retention", Duration::from_secs(600), duration)?,
        heuristic_fraction: r.get("cache.heuristic_fraction", 0.1, fraction)?,
        heuristic_max: r.get("cache.heuristic_max", Duration::from_secs(86_400), duration)?,
        // A day: long enough to ride out an origin outage that needs someone woken up.
        stale_if_error: r.get(
            "cache.stale_if_error",
            Duration::from_secs(86_400),
            duration,
        )?,
        ignore_client_no_cache: r.get("cache.ignore_client_no_cache", false, boolean)?,
        targeted_cache_control: r.get(
            "cache.targeted_cache_control",
            vec![http::HeaderName::from_static("cdn-cache-control")],
            targeted_fields,
        )?,
        purge: r.get("purge.enabled", false, boolean)?,
        backend: resolve_backend(r)?,
    };
    if cache.max_object_bytes > cache.max_bytes {
        let v = r
            .raw("cache.max_object_size")
            .expect("set, since it exceeds the default");
        return Err(r.invalid(
            "cache.max_object_size",
            v,
            format!("is larger than cache.max_size ({} bytes)", cache.max_bytes),
        ));
    }

    let cors = CorsConfig {
        enabled: r.get("cors.enabled", false, boolean)?,
        allowed_origins: r.get(
            "cors.allowed_origins",
            AllowedOrigins::None,
            allowed_origins,
        )?,
    };

    let admin = resolve_admin(r)?;
    let admin_host = admin.listen.ip();
    let ip_overlaps =
        listen_host == admin_host || listen_host.is_unspecified() || admin_host.is_unspecified();
    if ip_overlaps && admin.listen.port() == listen_port {
        return Err(ConfigError::Conflict(format!(
            "admin.port: {} is also the proxy's listen.port; the admin service needs its own port",
            listen_port
        )));
    }

    let default_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let server = ServerSettings {
        threads: r.get("server.threads", default_threads, count)?,
        io_events: IoEvents {
            per_poll: r.get(
                "server.max_io_events_per_poll",
                IoEvents::default().per_poll,
                io_event_batch,
            )?,
            per_busy_poll: r.get(
                "server.max_io_events_per_busy_poll",
                IoEvents::default().per_busy_poll,
                io_event_batch,
            )?,
        },
        pid_file: resolve_pid_file(r)?,
        upgrade_sock: r.get(
            "server.upgrade_sock",
            "/tmp/caching-proxy_upgrade.sock".into(),
            non_empty,
        )?,
        grace_period: r.get("server.grace_period", Duration::from_secs(5), duration)?,
        graceful_shutdown_timeout: r.get(
            "server.graceful_shutdown_timeout",
            Duration::from_secs(5),
            duration,
        )?,
        handover_timeout: r.get("server.handover_timeout", Duration::from_secs(10), duration)?,
        error_log: r.optional("server.error_log", non_empty)?,
        daemon: false,
        upgrade: false,
    };

    Ok(Config {
        listen: SocketAddr::new(listen_host, listen_port),
        h2c: r.get("listen.h2c", false, boolean)?,
        tls: None,
        upstream: UpstreamConfig {
            origin,
            preserve_host: r.get("upstream.preserve_host", false, boolean)?,
            connect_timeout: r.get(
                "upstream.connect_timeout",
                Duration::from_secs(5),
                positive_duration,
            )?,
            read_timeout: r.get(
                "upstream.read_timeout",
                Duration::from_secs(30),
                positive_duration,
            )?,
            ca_file: r.optional("upstream.ca_file", |t| {
                let path = PathBuf::from(t.trim());
                if path.is_file() {
                    Ok(path)
                } else {
                    Err("is not a readable file".into())
                }
            })?,
            upgrade_idle_timeout: r.get(
                "upstream.upgrade_idle_timeout",
                Duration::from_secs(3600),
                positive_duration,
            )?,
            http2: r.get("upstream.http2", false, boolean)?,
        },
        cache,
        log_level: r.get("log.level", LevelFilter::Info, level)?,
        log_format: r.get("log.format", default_log_format(), log_format)?,
        cors,
        security_headers: r.get("security_headers.enabled", true, boolean)?,
        admin,
        server,
        routing: Routing::default(),
        limits: limits::resolve(r)?,
    })
}

/// The configuration of `--origin http://127.0.0.1:9000` plus `args`, as the config
/// modules' tests load it.
#[cfg(test)]
pub(crate) fn load_with_origin(args: &[&str]) -> Result<Config, ConfigError> {
    let mut argv = vec!["caching-proxy", "--origin", "http://127.0.0.1:9000"];
    argv.extend_from_slice(args);
    Config::load(&Cli::try_parse_from(argv).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["caching-proxy"];
        argv.extend_from_slice(args);
        Config::load(&Cli::try_parse_from(argv).unwrap())
    }

    #[test]
    fn defaults_with_only_an_origin() {
        let c = load(&["--origin", "http://127.0.0.1:9000"]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:3000".parse().unwrap());
        let o = c.upstream.origin.as_ref().unwrap();
        assert_eq!(o.addr, "127.0.0.1:9000".parse().unwrap());
        assert!(!o.tls);
        assert_eq!(o.authority, "127.0.0.1:9000");
        assert_eq!(c.routing.upstreams.len(), 1);
        assert_eq!(c.routing.routes[0].upstream, "origin");
        assert_eq!(c.cache.default_ttl, Duration::from_secs(300));
        assert_eq!(c.admin.listen, "127.0.0.1:9091".parse().unwrap());
        assert!(c.security_headers);
        assert!(!c.cors.enabled);
        assert_eq!(
            c.log_format,
            LogFormat::Json,
            "stderr is not a terminal under cargo test"
        );
    }

    #[test]
    fn io_event_batches_default_to_bounds_that_fit_the_run_queue_and_reach_pingora() {
        let c = load(&["--origin", "http://127.0.0.1:9000"]).unwrap();
        assert_eq!(c.server.io_events, IoEvents::default());
        let conf = c.pingora_conf();
        assert_eq!(conf.runtime_max_io_events_per_tick, Some(128));
        assert_eq!(conf.runtime_max_io_events_per_busy_tick, Some(32));
        let opts = conf.runtime_opts();
        assert_eq!(opts.max_io_events_per_tick, Some(128));
        assert_eq!(opts.max_io_events_per_busy_tick, Some(32));

        let c = load(&[
            "--origin",
            "http://127.0.0.1:9000",
            "--max-io-events-per-poll",
            "1024",
            "--max-io-events-per-busy-poll",
            "61",
        ])
        .unwrap();
        let conf = c.pingora_conf();
        assert_eq!(conf.runtime_max_io_events_per_tick, Some(1024));
        assert_eq!(conf.runtime_max_io_events_per_busy_tick, Some(61));
    }

    #[test]
    fn summary_leaves_secrets_out() {
        let c = load(&[
            "--origin",
            "http://127.0.0.1:9000",
            "--admin-token",
            "hunter2",
        ])
        .unwrap();
        let text = c.summary().to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("\"admin_token\":\"set\""), "{text}");
        // The status page shows this summary: no Redis credentials either, in any URL form.
        for url in [
            "redis://:redis-pw@127.0.0.1:6379/0",
            "redis://app:redis-pw@127.0.0.1:6379",
            "rediss://app:redis-pw@127.0.0.1:6380",
        ] {
            let c = load(&[
                "--origin",
                "http://127.0.0.1:9000",
                "--admin-token",
                "hunter2",
                "--cache-backend",
                "redis",
                "--redis-url",
                url,
            ])
            .unwrap();
            let text = c.summary().to_string();
            assert!(
                !text.contains("redis-pw") && !text.contains("hunter2"),
                "{text}"
            );
            assert!(!text.contains("app@"), "{text}");
        }
    }

    #[test]
    fn inflight_budget_defaults_to_a_quarter_of_the_in_process_tier() {
        let c = load(&[
            "--origin",
            "http://127.0.0.1:9000",
            "--cache-max-bytes",
            "64MiB",
        ])
        .unwrap();
        assert_eq!(c.cache.max_inflight_bytes(c.cache.max_bytes), 16 << 20);
        assert_eq!(
            c.cache.max_inflight_bytes(0),
            16 << 20,
            "no in-process tier"
        );
        let set = load(&[
            "--origin",
            "http://127.0.0.1:9000",
            "--cache-max-inflight-bytes",
            "8MiB",
        ])
        .unwrap();
        assert_eq!(set.cache.max_inflight_bytes(set.cache.max_bytes), 8 << 20);
        let bad = load(&[
            "--origin",
            "http://127.0.0.1:9000",
            "--cache-max-inflight-bytes",
            "0",
        ]);
        assert!(bad
            .unwrap_err()
            .to_string()
            .starts_with("cache.max_inflight_size: \"0\" is not a size"));
    }

    #[test]
    fn https_origin_defaults_to_443() {
        let o = origin("https://127.0.0.1").unwrap();
        assert!(o.tls);
        assert_eq!(o.addr.port(), 443);
        assert_eq!(o.host, "127.0.0.1");
    }

    #[test]
    fn origin_is_required() {
        let err = load(&[]).unwrap_err().to_string();
        assert!(err.contains("upstream.origin is required"), "{err}");
        assert!(
            err.contains("--origin") && err.contains("PROXY_ORIGIN"),
            "{err}"
        );
    }

    #[test]
    fn invalid_values_name_the_setting_value_and_source() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--cache-max-bytes", "12XB"],
                r#"cache.max_size: "12XB" is not a size (examples: 512MiB, 2GiB) (from flag --cache-max-bytes)"#,
            ),
            (
                &["--port", "70000"],
                r#"listen.port: "70000" is not a port"#,
            ),
            (
                &["--cache-ttl", "5 minutes"],
                r#"cache.default_ttl: "5 minutes" is not a duration"#,
            ),
            (
                &["--cache-size", "0"],
                r#"cache.max_entries: "0" is not a positive whole number"#,
            ),
            (
                &["--timeout", "0"],
                r#"upstream.read_timeout: "0" must be greater than 0"#,
            ),
            (
                &["--log-level", "loud"],
                r#"log.level: "loud" is not a log level"#,
            ),
            (
                &["--enable-cors=perhaps"],
                r#"cors.enabled: "perhaps" is not a boolean"#,
            ),
            (
                &["--allowed-origins", "app.example"],
                r#"cors.allowed_origins: "app.example" contains"#,
            ),
            (
                &["--host", "example.com"],
                r#"listen.host: "example.com" is not an IP address"#,
            ),
            (
                &[
                    "--cache-max-bytes",
                    "1MiB",
                    "--cache-max-object-size",
                    "2MiB",
                ],
                "cache.max_object_size: \"2MiB\" is larger than cache.max_size",
            ),
            (
                &["--admin-port", "3000"],
                "admin.port: 3000 is also the proxy's listen.port",
            ),
            (
                &["--admin-token", " "],
                r#"admin.token: " " must not be empty"#,
            ),
            (
                &["--max-io-events-per-poll", "0"],
                r#"server.max_io_events_per_poll: "0" is not a positive whole number"#,
            ),
            (
                &["--max-io-events-per-busy-poll", "100000"],
                r#"server.max_io_events_per_busy_poll: "100000" must be at most 65536"#,
            ),
        ];
        for (args, expected) in cases {
            let mut argv = vec!["--origin", "http://127.0.0.1:9000"];
            argv.extend_from_slice(args);
            let err = load(&argv).unwrap_err().to_string();
            assert!(err.starts_with(expected), "args {args:?}: got {err:?}");
        }
    }

    #[test]
    fn redis_backend_settings() {
        let c = load(&["--origin", "http://127.0.0.1:9000"]).unwrap();
        assert!(matches!(c.cache.backend, BackendConfig::Memory));
        let c = load(&[
            "--origin",
            "http://127.0.0.1:9000",
            "--cache-backend",
            "redis",
            "--redis-url",
            "redis://:secret@127.0.0.1:6379/2",
        ])
        .unwrap();
        let BackendConfig::Redis(r) = &c.cache.backend else {
            panic!("redis backend expected");
        };
        assert_eq!(r.timeout, Duration::from_millis(50));
        assert_eq!(r.key_prefix, "cp:");
        assert_eq!(r.l1_max_bytes, 64 << 20);
        assert!(!r.cluster);
        assert_eq!(r.addresses(), ["127.0.0.1:6379"]);
        let summary = c.summary().to_string();
        assert!(!summary.contains("secret"), "{summary}");

        let c = load(&[
            "--origin",
            "http://127.0.0.1:9000",
            "--cache-backend=redis",
            "--redis-cluster",
            "--redis-url",
            "redis://127.0.0.1:7000, redis://127.0.0.1:7001",
            "--redis-l1-max-bytes",
            "0",
        ])
        .unwrap();
        let BackendConfig::Redis(r) = &c.cache.backend else {
            panic!("redis backend expected");
        };
        assert_eq!((r.nodes.len(), r.cluster, r.l1_max_bytes), (2, true, 0));
    }

    #[test]
    fn bad_redis_settings_name_the_key() {
        let cases: &[(&[&str], &str)] = &[
            (&["--cache-backend", "disk"], r#"cache.backend: "disk" is not a cache backend"#),
            (&["--cache-backend", "redis"], "cache.redis.url is required"),
            (
                &["--cache-backend", "redis", "--redis-url", "http://127.0.0.1:6379"],
                r#"cache.redis.url: "http://127.0.0.1:6379" contains"#,
            ),
            (
                &[
                    "--cache-backend",
                    "redis",
                    "--redis-url",
                    "redis://127.0.0.1:1,redis://127.0.0.1:2",
                ],
                "cache.redis.url: \"redis://127.0.0.1:1,redis://127.0.0.1:2\" names several servers",
            ),
            (
                &["--cache-backend", "redis", "--redis-url", "redis://h:1", "--redis-timeout", "0"],
                r#"cache.redis.timeout: "0" must be greater than 0"#,
            ),
            (
                &["--cache-backend", "redis", "--redis-url", "redis://h:1", "--redis-key-prefix", "a{b"],
                r#"cache.redis.key_prefix: "a{b" must not contain braces"#,
            ),
            (
                &["--cache-backend", "redis", "--redis-url", "redis://h:1", "--redis-l1-max-bytes", "lots"],
                r#"cache.redis.l1_max_size: "lots" is not a size"#,
            ),
        ];
        for (args, expected) in cases {
            let mut argv = vec!["--origin", "http://127.0.0.1:9000"];
            argv.extend_from_slice(args);
            let err = load(&argv).unwrap_err().to_string();
            assert!(err.starts_with(expected), "args {args:?}: got {err:?}");
        }
    }

    #[test]
    fn bad_origins_are_rejected() {
        for (url, problem) in [
            ("localhost:9000", "must start with http:// or https://"),
            ("ftp://127.0.0.1", "must start with http:// or https://"),
            ("http://127.0.0.1/api", "must not have a path"),
            ("http://user:pw@127.0.0.1", "must not contain credentials"),
            ("http://no-such-host.invalid", "does not resolve"),
        ] {
            let err = origin(url).unwrap_err();
            assert!(err.contains(problem), "{url}: {err}");
        }
    }

    #[test]
    fn allowed_origins_parse() {
        assert_eq!(allowed_origins("*").unwrap(), AllowedOrigins::Any);
        assert_eq!(allowed_origins("").unwrap(), AllowedOrigins::None);
        let list = allowed_origins("https://a.example, https://b.example/").unwrap();
        assert!(list.allows("https://A.example"));
        assert!(list.allows("https://b.example"));
        assert!(!list.allows("https://c.example"));
        assert!(allowed_origins("*,https://a.example").is_err());
    }
}
