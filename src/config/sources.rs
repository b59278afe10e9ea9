//! Where raw setting values come from: command-line flags, `PROXY_*` environment variables
//! and the YAML file, merged with the precedence CLI > env > file.
//!
//! Every setting is declared once in [`SETTINGS`]: its dotted file key, its flag and its
//! environment variable. The clap command, the YAML reader and error messages are all derived
//! from that table, so the three spellings of a setting cannot drift apart. This module only
//! gathers text; turning text into typed values is `config::resolve`'s job.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::ConfigError;

/// How a setting is written on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag VALUE`.
    Value,
    /// `--flag` alone means true; `--flag=false` is accepted too.
    Switch,
    /// Comma-separated on the command line and in env vars, a list or a string in YAML.
    List,
}

/// One configurable setting and its three spellings.
#[derive(Debug)]
pub struct Setting {
    /// Dotted path in the YAML file, also the name used in error messages.
    pub key: &'static str,
    /// Long flag, without the leading dashes.
    pub flag: &'static str,
    /// Environment variable.
    pub env: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn setting(
    key: &'static str,
    flag: &'static str,
    env: &'static str,
    kind: Kind,
    help: &'static str,
) -> Setting {
    Setting {
        key,
        flag,
        env,
        kind,
        help,
    }
}

/// Every setting the proxy reads. Defaults live in `config::resolve`, next to the parsing.
pub const SETTINGS: &[Setting] = &[
    setting("listen.host", "host", "PROXY_HOST", Kind::Value, "Address the proxy listens on [default: 0.0.0.0]"),
    setting("listen.port", "port", "PROXY_PORT", Kind::Value, "Port the proxy listens on [default: 3000]"),
    setting("listen.h2c", "h2c", "PROXY_H2C", Kind::Switch, "Accept HTTP/2 with prior knowledge (h2c) on the plaintext listener [default: false]"),
    setting("tls.host", "tls-host", "PROXY_TLS_HOST", Kind::Value, "Address of the TLS listener [default: 0.0.0.0]"),
    setting("tls.port", "tls-port", "PROXY_TLS_PORT", Kind::Value, "Port of the TLS listener [default: none, no TLS listener]"),
    setting("tls.cert", "tls-cert", "PROXY_TLS_CERT", Kind::Value, "PEM certificate chain of the TLS listener (one pair with --tls-key; the file's tls.certificates lists several)"),
    setting("tls.key", "tls-key", "PROXY_TLS_KEY", Kind::Value, "PEM private key of --tls-cert"),
    setting("tls.http2", "tls-http2", "PROXY_TLS_HTTP2", Kind::Switch, "Offer HTTP/2 (ALPN h2) on the TLS listener [default: true]"),
    setting("tls.redirect_http", "redirect-http", "PROXY_REDIRECT_HTTP", Kind::Switch, "Answer every plaintext request with 308 to the same URL on https [default: false]"),
    setting("tls.hsts", "hsts", "PROXY_HSTS", Kind::Value, "Strict-Transport-Security value sent on TLS responses, e.g. max-age=31536000 [default: none]"),
    setting("upstream.origin", "origin", "PROXY_ORIGIN", Kind::Value, "Origin URL, http:// or https:// (required unless the config file has routes)"),
    setting("upstream.preserve_host", "preserve-host", "PROXY_PRESERVE_HOST", Kind::Switch, "Send the client's Host header to the origin instead of the origin's authority [default: false]"),
    setting("upstream.connect_timeout", "connect-timeout", "PROXY_CONNECT_TIMEOUT", Kind::Value, "Timeout for connecting to the origin [default: 5s]"),
    setting("upstream.read_timeout", "timeout", "PROXY_TIMEOUT", Kind::Value, "Timeout for each read from (and write to) the origin [default: 30s]"),
    setting("upstream.upgrade_idle_timeout", "upgrade-idle-timeout", "PROXY_UPGRADE_IDLE_TIMEOUT", Kind::Value, "Idle timeout of WebSocket and other upgraded connections [default: 1h]"),
    setting("upstream.ca_file", "ca-file", "PROXY_CA_FILE", Kind::Value, "PEM file of CA certificates trusted for https origins [default: system roots]"),
    setting("upstream.http2", "origin-http2", "PROXY_ORIGIN_HTTP2", Kind::Switch, "Offer HTTP/2 (ALPN h2) to https origins; upstream groups may set their own [default: false]"),
    setting("cache.default_ttl", "cache-ttl", "PROXY_CACHE_TTL", Kind::Value, "Freshness for cacheable responses without Cache-Control/Expires; 0 = do not store them [default: 5m]"),
    setting("cache.max_size", "cache-max-bytes", "PROXY_CACHE_MAX_BYTES", Kind::Value, "Upper bound on cached bytes, headers included [default: 256MiB]"),
    setting("cache.max_entries", "cache-size", "PROXY_CACHE_SIZE", Kind::Value, "Upper bound on cached entries [default: 100000]"),
    setting("cache.max_object_size", "cache-max-object-size", "PROXY_CACHE_MAX_OBJECT_SIZE", Kind::Value, "Largest response body that is cached [default: 8MiB, at most cache.max_size]"),
    setting("cache.max_inflight_size", "cache-max-inflight-bytes", "PROXY_CACHE_MAX_INFLIGHT_BYTES", Kind::Value, "Cap on the bytes of responses being stored at once, within the cache's bound; past it a response is served but not stored [default: a quarter of cache.max_size (of cache.redis.l1_max_size with redis)]"),
    setting("cache.lock_timeout", "cache-lock-timeout", "PROXY_CACHE_LOCK_TIMEOUT", Kind::Value, "How long concurrent requests for one uncached URL wait for the first fetch [default: 10s]"),
    setting("cache.stale_retention", "cache-stale-retention", "PROXY_CACHE_STALE_RETENTION", Kind::Value, "How long an expired entry is kept for revalidation and max-stale requests [default: 10m]"),
    setting("cache.heuristic_fraction", "cache-heuristic-fraction", "PROXY_CACHE_HEURISTIC_FRACTION", Kind::Value, "Freshness from Last-Modified: this fraction of the time since it; 0 = off [default: 0.1]"),
    setting("cache.heuristic_max", "cache-heuristic-max", "PROXY_CACHE_HEURISTIC_MAX", Kind::Value, "Cap on heuristic freshness [default: 1d]"),
    setting("cache.stale_if_error", "cache-stale-if-error", "PROXY_CACHE_STALE_IF_ERROR", Kind::Value, "Serve stale responses this long past freshness when the origin is unreachable, times out or answers 5xx, unless they forbid it; 0 = never [default: 1d]"),
    setting("cache.targeted_cache_control", "targeted-cache-control", "PROXY_TARGETED_CACHE_CONTROL", Kind::List, "Comma-separated targeted cache-control fields (RFC 9213) that govern this cache before Cache-Control, first valid one wins; empty = none [default: CDN-Cache-Control]"),
    setting("cache.ignore_client_no_cache", "cache-ignore-client-no-cache", "PROXY_CACHE_IGNORE_CLIENT_NO_CACHE", Kind::Switch, "Ignore request no-cache/max-age (forced reloads) to protect the origin [default: false]"),
    setting("cache.backend", "cache-backend", "PROXY_CACHE_BACKEND", Kind::Value, "Where the cache lives: memory, or redis (a shared tier behind an in-process one) [default: memory]"),
    setting("cache.redis.url", "redis-url", "PROXY_REDIS_URL", Kind::List, "redis://[user:pass@]host:port[/db], rediss:// for TLS, or comma-separated node URLs with --redis-cluster (required with the redis backend)"),
    setting("cache.redis.cluster", "redis-cluster", "PROXY_REDIS_CLUSTER", Kind::Switch, "The Redis URLs are nodes of a Redis Cluster [default: false]"),
    setting("cache.redis.timeout", "redis-timeout", "PROXY_REDIS_TIMEOUT", Kind::Value, "Timeout of each Redis call; a slower Redis counts as down for that call [default: 50ms]"),
    setting("cache.redis.key_prefix", "redis-key-prefix", "PROXY_REDIS_KEY_PREFIX", Kind::Value, "Prefix of every Redis key and channel this proxy uses [default: cp:]"),
    setting("cache.redis.l1_max_size", "redis-l1-max-bytes", "PROXY_REDIS_L1_MAX_BYTES", Kind::Value, "Bound of the in-process tier in front of Redis; 0 = none [default: 64MiB]"),
    setting("purge.enabled", "enable-purge", "PROXY_ENABLE_PURGE", Kind::Switch, "Accept PURGE requests on the proxy port, authorised like the admin API [default: false]"),
    setting("log.level", "log-level", "PROXY_LOG_LEVEL", Kind::Value, "error, warn, info, debug or trace [default: info]"),
    setting("log.format", "log-format", "PROXY_LOG_FORMAT", Kind::Value, "json or text [default: json, text when stderr is a terminal]"),
    setting("cors.enabled", "enable-cors", "PROXY_ENABLE_CORS", Kind::Switch, "Add CORS headers and answer preflight requests at the edge [default: false]"),
    setting("cors.allowed_origins", "allowed-origins", "PROXY_ALLOWED_ORIGINS", Kind::List, "Comma-separated origins allowed by CORS, or * [default: none]"),
    setting("security_headers.enabled", "security-headers", "PROXY_SECURITY_HEADERS", Kind::Switch, "Add X-Content-Type-Options, X-Frame-Options, Referrer-Policy, X-XSS-Protection [default: true]"),
    setting("limits.max_header_bytes", "max-header-bytes", "PROXY_MAX_HEADER_BYTES", Kind::Value, "Largest request header field line (name: value); 431 beyond [default: 8KiB]"),
    setting("limits.max_headers_bytes", "max-headers-bytes", "PROXY_MAX_HEADERS_BYTES", Kind::Value, "Largest request header, request line and all fields; 431 beyond; at most 1MiB [default: 64KiB]"),
    setting("limits.max_header_count", "max-header-count", "PROXY_MAX_HEADER_COUNT", Kind::Value, "Most request header fields; 431 beyond; at most 256 [default: 100]"),
    setting("limits.max_uri_bytes", "max-uri-bytes", "PROXY_MAX_URI_BYTES", Kind::Value, "Longest request target; 414 beyond [default: 8KiB]"),
    setting("limits.max_body_bytes", "max-body-bytes", "PROXY_MAX_BODY_BYTES", Kind::Value, "Largest request body, declared or (chunked) as it arrives; 413 beyond; 0 = no limit [default: 0]"),
    setting("limits.client_header_timeout", "client-header-timeout", "PROXY_CLIENT_HEADER_TIMEOUT", Kind::Value, "Longest a whole request header may take to arrive; the connection is closed after it (408 when a request line was read) [default: 10s]"),
    setting("admin.host", "admin-host", "PROXY_ADMIN_HOST", Kind::Value, "Address of the admin service [default: 127.0.0.1]"),
    setting("admin.port", "admin-port", "PROXY_ADMIN_PORT", Kind::Value, "Port of the admin service [default: 9091]"),
    setting("admin.token", "admin-token", "PROXY_ADMIN_TOKEN", Kind::Value, "Bearer token required by mutating admin endpoints [default: none, loopback only]"),
    setting("server.threads", "threads", "PROXY_THREADS", Kind::Value, "Worker threads [default: number of CPUs]"),
    setting("server.max_io_events_per_poll", "max-io-events-per-poll", "PROXY_MAX_IO_EVENTS_PER_POLL", Kind::Value, "Most socket events a worker takes from the kernel when it has nothing to run [default: 128]"),
    setting("server.max_io_events_per_busy_poll", "max-io-events-per-busy-poll", "PROXY_MAX_IO_EVENTS_PER_BUSY_POLL", Kind::Value, "Most socket events a worker takes while it still has work queued; the rest wait in the kernel, in order [default: 32]"),
    setting("server.pid_file", "pid-file", "PROXY_PID_FILE", Kind::Value, "PID file [default: /tmp/caching-proxy.pid]"),
    setting("server.upgrade_sock", "upgrade-sock", "PROXY_UPGRADE_SOCK", Kind::Value, "Socket used to hand listeners to a new binary on upgrade [default: /tmp/caching-proxy_upgrade.sock]"),
    setting("server.grace_period", "grace-period", "PROXY_GRACE_PERIOD", Kind::Value, "On shutdown, how long to keep serving in-flight requests [default: 5s]"),
    setting("server.graceful_shutdown_timeout", "shutdown-timeout", "PROXY_SHUTDOWN_TIMEOUT", Kind::Value, "After the grace period, how long to wait for workers to stop [default: 5s]"),
    setting("server.handover_timeout", "handover-timeout", "PROXY_HANDOVER_TIMEOUT", Kind::Value, "On upgrade or reload, how long the new process takes cache entries from the old one (0 = start cold) [default: 10s]"),
    setting("server.error_log", "error-log", "PROXY_ERROR_LOG", Kind::Value, "File for the error log when running as a daemon [default: stderr]"),
];

/// Where a raw value came from, so an error can tell the operator what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag --{flag}"),
            Source::Env(var) => write!(f, "env {var}"),
            Source::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// A raw setting value with its origin.
#[derive(Debug, Clone)]
pub struct Sourced {
    pub text: String,
    pub source: Source,
}

/// The parsed command line: actions and flags that are not settings, plus the raw settings.
#[derive(Debug)]
pub struct Cli {
    pub config_file: Option<PathBuf>,
    pub upgrade: bool,
    pub daemon: bool,
    pub test: bool,
    pub clear_cache: bool,
    pub reload: bool,
    matches: ArgMatches,
}

/// The clap command, built from [`SETTINGS`].
pub fn command() -> Command {
    let mut cmd = Command::new("caching-proxy")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A caching HTTP edge proxy built on Pingora")
        .after_help("Precedence: command-line flags > PROXY_* environment variables > config file > defaults.")
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .visible_alias("conf")
                .env("PROXY_CONFIG")
                .hide_env_values(true)
                .value_name("FILE")
                .help("YAML config file (see conf/caching-proxy.yaml)"),
        )
        .arg(switch("upgrade", 'u', "Take over the listening sockets of a running instance (zero-downtime upgrade)"))
        .arg(switch("daemon", 'd', "Run in the background"))
        .arg(switch("test", 't', "Check the configuration and exit"))
        .arg(
            Arg::new("clear-cache")
                .long("clear-cache")
                .action(ArgAction::SetTrue)
                .help("Clear the cache of the running instance (through its admin service) and exit"),
        )
        .arg(
            Arg::new("reload")
                .long("reload")
                .action(ArgAction::SetTrue)
                .help("Reload the running instance (SIGHUP through its pid file), report the outcome and exit"),
        );
    for s in SETTINGS {
        // Env values stay out of --help: the admin token is one of them.
        let arg = Arg::new(s.key)
            .long(s.flag)
            .env(s.env)
            .hide_env_values(true)
            .help(s.help);
        let arg = match s.kind {
            Kind::Value | Kind::List => arg.value_name("VALUE"),
            Kind::Switch => arg
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .value_name("BOOL"),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

fn switch(name: &'static str, short: char, help: &'static str) -> Arg {
    Arg::new(name)
        .short(short)
        .long(name)
        .action(ArgAction::SetTrue)
        .help(help)
}

impl Cli {
    /// Parses arguments (the first one is the program name). `--help` and `--version` come
    /// back as a clap error whose `exit()` prints them.
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = command().try_get_matches_from(args)?;
        Ok(Cli {
            config_file: matches.get_one::<String>("config").map(PathBuf::from),
            upgrade: matches.get_flag("upgrade"),
            daemon: matches.get_flag("daemon"),
            test: matches.get_flag("test"),
            clear_cache: matches.get_flag("clear-cache"),
            reload: matches.get_flag("reload"),
            matches,
        })
    }

    /// The flag or env value of one setting, if either was given.
    fn value(&self, setting: &Setting) -> Option<Sourced> {
        let text = self.matches.get_one::<String>(setting.key)?.clone();
        let source = match self.matches.value_source(setting.key) {
            Some(ValueSource::EnvVariable) => Source::Env(setting.env),
            _ => Source::Flag(setting.flag),
        };
        Some(Sourced { text, source })
    }
}

/// File sections that are structures rather than single settings (lists of routes, maps of
/// upstream groups, certificate pairs), by dotted key. They exist only in the file;
/// `config::routing` and `config::tls` read them.
pub const SECTIONS: &[&str] = &["upstreams", "routes", "default_route", "tls.certificates"];

/// Settings given only by flag or env: in the file, `tls.certificates` lists the pairs.
const FLAG_ONLY: &[&str] = &["tls.cert", "tls.key"];

/// All raw settings after layering, keyed by the dotted setting key.
#[derive(Debug, Default)]
pub struct RawSettings {
    values: HashMap<&'static str, Sourced>,
    /// The structured sections of the file, as written, and the file they came from.
    pub sections: HashMap<&'static str, serde_yaml::Value>,
    pub file: Option<PathBuf>,
}

impl RawSettings {
    /// Layers CLI and env (clap already put flags over env) over the file, if any.
    pub fn gather(cli: &Cli) -> Result<Self, ConfigError> {
        let (mut values, sections) = match &cli.config_file {
            Some(path) => read_file(path)?,
            None => (HashMap::new(), HashMap::new()),
        };
        for setting in SETTINGS {
            if let Some(value) = cli.value(setting) {
                values.insert(setting.key, value);
            }
        }
        Ok(RawSettings {
            values,
            sections,
            file: cli.config_file.clone(),
        })
    }

    pub fn get(&self, key: &str) -> Option<&Sourced> {
        self.values.get(key)
    }
}

/// Looks a setting up by its dotted key. Panics on an unknown key: that is a programming
/// error caught by the unit tests, not an operator error.
pub fn lookup(key: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("setting {key} is not declared in SETTINGS"))
}

/// Reads the YAML file into raw values, rejecting keys that are not settings so that a typo
/// (`cache.max_sise`) fails loudly instead of silently keeping the default.
type FileValues = (
    HashMap<&'static str, Sourced>,
    HashMap<&'static str, serde_yaml::Value>,
);

fn read_file(path: &Path) -> Result<FileValues, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ReadFile {
        path: path.to_owned(),
        error: e.to_string(),
    })?;
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| ConfigError::ParseFile {
            path: path.to_owned(),
            error: e.to_string(),
        })?;
    let mut values = HashMap::new();
    let mut sections = HashMap::new();
    for name in SECTIONS {
        // `tls.certificates` is `certificates` inside the `tls` mapping.
        let mut node = &mut doc;
        let mut parts = name.split('.').peekable();
        while let Some(part) = parts.next() {
            let serde_yaml::Value::Mapping(map) = node else {
                break;
            };
            if parts.peek().is_none() {
                if let Some(section) = map.remove(part) {
                    if !section.is_null() {
                        sections.insert(*name, section);
                    }
                }
                break;
            }
            match map.get_mut(part) {
                Some(inner) => node = inner,
                None => break,
            }
        }
    }
    if !doc.is_null() {
        flatten(path, "", &doc, &mut values)?;
    }
    Ok((values, sections))
}

fn flatten(
    path: &Path,
    prefix: &str,
    node: &serde_yaml::Value,
    out: &mut HashMap<&'static str, Sourced>,
) -> Result<(), ConfigError> {
    use serde_yaml::Value;
    let Value::Mapping(map) = node else {
        return Err(ConfigError::ParseFile {
            path: path.to_owned(),
            error: format!(
                "expected a mapping at {}",
                if prefix.is_empty() {
                    "the top level"
                } else {
                    prefix
                }
            ),
        });
    };
    for (k, v) in map {
        let name = match k {
            Value::String(s) => s.clone(),
            other => format!("{other:?}"),
        };
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        let setting = SETTINGS
            .iter()
            .find(|s| s.key == key && !FLAG_ONLY.contains(&s.key));
        match (setting, v) {
            (None, Value::Mapping(_))
                if SETTINGS
                    .iter()
                    .any(|s| s.key.starts_with(&format!("{key}."))) =>
            {
                flatten(path, &key, v, out)?
            }
            (None, _) => {
                return Err(ConfigError::UnknownKey {
                    path: path.to_owned(),
                    key,
                })
            }
            (Some(_), Value::Null) => {}
            (Some(s), value) => {
                let text = scalar_text(value, s.kind).ok_or_else(|| ConfigError::Invalid {
                    key: s.key,
                    value: format!("{value:?}"),
                    problem: "is not a single value".into(),
                    from: Source::File(path.to_owned()),
                })?;
                out.insert(
                    s.key,
                    Sourced {
                        text,
                        source: Source::File(path.to_owned()),
                    },
                );
            }
        }
    }
    Ok(())
}

fn scalar_text(value: &serde_yaml::Value, kind: Kind) -> Option<String> {
    use serde_yaml::Value;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Sequence(items) if kind == Kind::List => items
            .iter()
            .map(|item| scalar_text(item, Kind::Value))
            .collect::<Option<Vec<_>>>()
            .map(|items| items.join(",")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_table_is_consistent() {
        command().debug_assert();
        for (i, a) in SETTINGS.iter().enumerate() {
            assert!(a.env.starts_with("PROXY_"), "{}", a.key);
            for b in &SETTINGS[i + 1..] {
                assert_ne!(a.key, b.key);
                assert_ne!(a.flag, b.flag);
                assert_ne!(a.env, b.env);
            }
        }
    }

    #[test]
    fn flag_beats_env_and_reports_source() {
        // Env vars are process-global: use one that no other test sets.
        std::env::set_var("PROXY_CACHE_STALE_RETENTION", "1m");
        let cli = Cli::try_parse_from(["caching-proxy"]).unwrap();
        let v = cli.value(lookup("cache.stale_retention")).unwrap();
        assert_eq!(v.text, "1m");
        assert_eq!(v.source, Source::Env("PROXY_CACHE_STALE_RETENTION"));

        let cli = Cli::try_parse_from(["caching-proxy", "--cache-stale-retention", "2m"]).unwrap();
        let v = cli.value(lookup("cache.stale_retention")).unwrap();
        assert_eq!(v.text, "2m");
        assert_eq!(v.source, Source::Flag("cache-stale-retention"));
        std::env::remove_var("PROXY_CACHE_STALE_RETENTION");
    }

    #[test]
    fn switch_without_value_means_true() {
        let cli = Cli::try_parse_from(["caching-proxy", "--enable-cors"]).unwrap();
        assert_eq!(cli.value(lookup("cors.enabled")).unwrap().text, "true");
        let cli = Cli::try_parse_from(["caching-proxy", "--enable-cors=false"]).unwrap();
        assert_eq!(cli.value(lookup("cors.enabled")).unwrap().text, "false");
    }

    #[test]
    fn file_keys_flatten_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "listen:\n  port: 8080\ncors:\n  allowed_origins: [https://a.example, https://b.example]\n",
        )
        .unwrap();
        let (values, _) = read_file(&path).unwrap();
        assert_eq!(values["listen.port"].text, "8080");
        assert_eq!(
            values["cors.allowed_origins"].text,
            "https://a.example,https://b.example"
        );

        std::fs::write(&path, "cache:\n  max_sise: 1GiB\n").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("cache.max_sise"), "{err}");
    }

    #[test]
    fn nested_sections_are_taken_out_and_flag_only_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "tls:\n  port: 8443\n  certificates:\n    - {cert: a.crt, key: a.key}\n",
        )
        .unwrap();
        let (values, sections) = read_file(&path).unwrap();
        assert_eq!(values["tls.port"].text, "8443");
        assert!(sections["tls.certificates"].is_sequence());

        std::fs::write(&path, "tls:\n  cert: a.crt\n").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("unknown setting \"tls.cert\""), "{err}");
    }
}
