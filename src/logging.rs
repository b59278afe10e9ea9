//! Logs: application events and one access record per request, on stderr, as JSON lines or
//! as text (`log.format`).
//!
//! JSON: one object per line. Application events are
//! `{"timestamp","level","target","message"}`, plus `fields` for structured events such as
//! the start-up configuration; access records carry the fields of [`AccessRecord`]. Secrets
//! (the admin token) are never part of either: callers log only redacted values.

use std::io::Write;

use chrono::{SecondsFormat, Utc};
use log::{info, LevelFilter};
use once_cell::sync::OnceCell;
use serde::Serialize;

pub use crate::config::LogFormat;

/// Target of access records.
pub const ACCESS: &str = "access";
/// Target of structured application events (see [`event`]).
const EVENT: &str = "caching_proxy::event";

static FORMAT: OnceCell<LogFormat> = OnceCell::new();

fn format() -> LogFormat {
    *FORMAT.get().unwrap_or(&LogFormat::Text)
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn init(level: LevelFilter, format: LogFormat) {
    let _ = FORMAT.set(format);
    let logger = builder(level, format).build();
    // Error records always reach `Observed` (whatever `log.level` says), so that the
    // failures it counts are counted; the inner logger still applies the level.
    let max = logger.filter().max(LevelFilter::Error);
    if log::set_boxed_logger(Box::new(Observed(logger))).is_ok() {
        log::set_max_level(max);
    }
}

/// The logger, with a look at each record first: Pingora reports failed TLS handshakes only
/// as log records (see `tls::handshake`).
struct Observed(env_logger::Logger);

impl log::Log for Observed {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Error || self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        crate::tls::handshake::observe_log(record);
        self.0.log(record);
    }

    fn flush(&self) {
        self.0.flush();
    }
}

fn builder(level: LevelFilter, format: LogFormat) -> env_logger::Builder {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let target = record.target();
            if target == ACCESS || target == EVENT {
                // Already a JSON object, built by `access` or `event`.
                return writeln!(buf, "{}", record.args());
            }
            let line = serde_json::json!({
                "timestamp": now(),
                "level": record.level().as_str(),
                "target": target,
                "message": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    } else {
        builder.format_timestamp_millis();
    }
    builder
}

/// An application event with structured fields: in JSON they are a `fields` object, in text
/// they follow the message.
pub fn event(message: &str, fields: serde_json::Value) {
    match format() {
        LogFormat::Json => {
            let line = serde_json::json!({
                "timestamp": now(),
                "level": "INFO",
                "target": "caching_proxy",
                "message": message,
                "fields": fields,
            });
            info!(target: EVENT, "{line}");
        }
        LogFormat::Text => info!(target: "caching_proxy", "{message} {fields}"),
    }
}

/// One request, as the access log records it.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    pub timestamp: String,
    pub request_id: &'a str,
    pub client: Option<String>,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub status: u16,
    /// `http/1.1`, `http/1.0` or `h2`.
    pub protocol: &'static str,
    /// The TLS version (`TLSv1.3`), null on the plaintext listener.
    pub tls: Option<&'static str>,
    pub cache: &'a str,
    pub bytes_sent: usize,
    pub duration_ms: f64,
    /// Time spent on the origin: connecting, then until its response header arrived.
    pub upstream_ms: Option<f64>,
    pub origin: Option<String>,
    pub user_agent: Option<&'a str>,
    pub error: Option<&'a str>,
}

impl AccessRecord<'_> {
    pub fn timestamp() -> String {
        now()
    }
}

/// Whether access records are written at all: callers check this before building one, so a
/// log level above `info` costs nothing per request.
pub fn access_enabled() -> bool {
    log::log_enabled!(target: ACCESS, log::Level::Info)
}

pub fn access(record: &AccessRecord) {
    match format() {
        LogFormat::Json => match serde_json::to_string(record) {
            Ok(line) => info!(target: ACCESS, "{line}"),
            Err(e) => log::warn!("unloggable access record: {e}"),
        },
        LogFormat::Text => info!(
            target: ACCESS,
            "{} {}{}{} {} {} {}B {:.1}ms {}{} request_id={}{}",
            record.method,
            record.path,
            if record.query.is_some() { "?" } else { "" },
            record.query.unwrap_or(""),
            record.status,
            record.cache,
            record.bytes_sent,
            record.duration_ms,
            record.protocol,
            record.tls.map(|v| format!("+{v}")).unwrap_or_default(),
            record.request_id,
            record.error.map(|e| format!(" error={e}")).unwrap_or_default(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_record_serialises_every_field() {
        let r = AccessRecord {
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            request_id: "id",
            client: Some("127.0.0.1:5000".into()),
            method: "GET",
            path: "/a",
            query: Some("x=1"),
            status: 200,
            protocol: "h2",
            tls: Some("TLSv1.3"),
            cache: "HIT",
            bytes_sent: 12,
            duration_ms: 1.5,
            upstream_ms: None,
            origin: Some("127.0.0.1:9000".into()),
            user_agent: Some("curl/8"),
            error: None,
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for key in [
            "timestamp",
            "request_id",
            "client",
            "method",
            "path",
            "query",
            "status",
            "protocol",
            "tls",
            "cache",
            "bytes_sent",
            "duration_ms",
            "upstream_ms",
            "origin",
            "user_agent",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
    }
}
