//! Value parsers: one setting's text into its typed value, or the problem, phrased to
//! follow "key: value" in an error message ("is not a duration ..."). Defaults and the
//! sources of values are `config::resolve`'s and `sources`'s.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use http::Uri;
use log::LevelFilter;

use super::units;
use super::{AllowedOrigins, LogFormat, Origin};

pub(super) fn duration(text: &str) -> Result<Duration, String> {
    units::parse_duration(text)
        .ok_or_else(|| "is not a duration (examples: 0, 500ms, 30s, 5m, 1h)".into())
}

pub(super) fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d.is_zero() => Err("must be greater than 0".into()),
        d => Ok(d),
    }
}

pub(super) fn size(text: &str) -> Result<usize, String> {
    units::parse_size(text)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| "is not a size (examples: 512MiB, 2GiB)".into())
}

/// A size where 0 is allowed and means "none".
pub(super) fn size_or_zero(text: &str) -> Result<usize, String> {
    match text.trim() {
        "0" => Ok(0),
        t => size(t),
    }
}

pub(super) fn backend_kind(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "memory" => Ok(false),
        "redis" => Ok(true),
        _ => Err("is not a cache backend (memory or redis)".into()),
    }
}

/// Comma-separated `redis://` / `rediss://` URLs, each parsed (no connection is made here).
pub(super) fn redis_urls(text: &str) -> Result<Vec<redis::ConnectionInfo>, String> {
    use redis::IntoConnectionInfo;
    let urls: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        return Err("must name at least one redis:// URL".into());
    }
    urls.iter()
        .map(|url| {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(format!(
                    "contains {url:?}: expected redis://host:port[/db] or rediss://"
                ));
            }
            url.into_connection_info()
                .map_err(|e| format!("contains an invalid Redis URL: {e}"))
        })
        .collect()
}

/// Keys are `<prefix><generation>:{<hash>}:...`; braces in the prefix would move the hash tag.
pub(super) fn key_prefix(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() || t.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if t.chars()
        .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err("must not contain braces, spaces or control characters".into());
    }
    Ok(t.to_owned())
}

pub(super) fn fraction(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| "is not a fraction between 0 and 1 (example: 0.1)".into())
}

pub(super) fn count(text: &str) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| "is not a positive whole number".into())
}

/// A batch of socket events per poll: positive, and at most 65,536 (the kernel's event
/// buffer is allocated at that size for each worker).
pub(super) fn io_event_batch(text: &str) -> Result<usize, String> {
    let n = count(text)?;
    if n > 65_536 {
        return Err("must be at most 65536".into());
    }
    Ok(n)
}

pub(super) fn port(text: &str) -> Result<u16, String> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| "is not a port (1-65535)".into())
}

pub(super) fn boolean(text: &str) -> Result<bool, String> {
    units::parse_bool(text).ok_or_else(|| "is not a boolean (true or false)".into())
}

pub(super) fn ip(text: &str) -> Result<IpAddr, String> {
    text.trim()
        .parse::<IpAddr>()
        .map_err(|_| "is not an IP address (examples: 0.0.0.0, 127.0.0.1, ::)".into())
}

pub(super) fn non_empty(text: &str) -> Result<String, String> {
    match text.trim() {
        "" => Err("must not be empty".into()),
        t => Ok(t.to_owned()),
    }
}

pub(super) fn log_format(text: &str) -> Result<LogFormat, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        _ => Err("is not a log format (json or text)".into()),
    }
}

/// JSON for log collectors, text for a person at a terminal.
pub(super) fn default_log_format() -> LogFormat {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    }
}

pub(super) fn level(text: &str) -> Result<LevelFilter, String> {
    text.trim()
        .parse::<LevelFilter>()
        .map_err(|_| "is not a log level (off, error, warn, info, debug, trace)".into())
}

/// Parses and resolves the origin URL. DNS is resolved here, once: an origin that does not
/// resolve is a start-up error rather than a 502 on every request.
pub(super) fn origin(text: &str) -> Result<Origin, String> {
    let uri: Uri = text
        .trim()
        .parse()
        .map_err(|_| "is not a URL (example: http://localhost:9000)".to_string())?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("must start with http:// or https://".into()),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| "has no host".to_string())?
        .clone();
    if authority.as_str().contains('@') {
        return Err("must not contain credentials".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must not have a path or query: only scheme, host and port".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("does not resolve: {e}"))?
        .collect();
    // Prefer IPv4: `localhost` often resolves to ::1 first while test and dev origins
    // commonly listen on 127.0.0.1 only.
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| "does not resolve to any address".to_string())?;
    Ok(Origin {
        tls,
        host: host.to_owned(),
        authority: authority.as_str().to_owned(),
        addr,
    })
}

/// A comma-separated list of header field names; empty turns targeted fields off.
pub(super) fn targeted_fields(text: &str) -> Result<Vec<http::HeaderName>, String> {
    let mut fields = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let field = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("contains {name:?}, which is not a header field name"))?;
        if field == http::header::CACHE_CONTROL {
            return Err("lists Cache-Control itself, which is what targeted fields replace".into());
        }
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    Ok(fields)
}

pub(super) fn allowed_origins(text: &str) -> Result<AllowedOrigins, String> {
    let items: Vec<String> = text
        .split(',')
        .map(|s| s.trim().trim_end_matches('/').to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if items.iter().any(|s| s == "*") {
        return if items.len() == 1 {
            Ok(AllowedOrigins::Any)
        } else {
            Err("mixes * with explicit origins".into())
        };
    }
    for item in &items {
        let ok = item
            .parse::<Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
            .filter(|u| u.authority().is_some() && matches!(u.path(), "" | "/"))
            .is_some();
        if !ok {
            return Err(format!(
                "contains {item:?}, which is not an origin (example: https://app.example.com)"
            ));
        }
    }
    Ok(if items.is_empty() {
        AllowedOrigins::None
    } else {
        AllowedOrigins::List(items)
    })
}
