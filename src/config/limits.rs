//! `limits.*`: what a client's request may be before the proxy refuses it itself.
//!
//! Resolved here once into [`LimitsConfig`]; the checks live in `proxy::limits`.

use std::time::Duration;

use super::{count, positive_duration, size, size_or_zero, ConfigError, Resolver};

/// Bounds on one request, each answered by the proxy itself (never forwarded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// One header field line (`name: value`), in bytes: 431 beyond.
    pub max_header_bytes: usize,
    /// The request line and every field line, in bytes: 431 beyond.
    pub max_headers_bytes: usize,
    /// Header fields (each repetition of a name counts): 431 beyond.
    pub max_header_count: usize,
    /// The request target as sent, in bytes: 414 beyond.
    pub max_uri_bytes: usize,
    /// The request body, in bytes (declared or, when chunked, as it arrives): 413 beyond.
    /// `None`: no limit.
    pub max_body_bytes: Option<usize>,
    /// The longest a whole request header may take to arrive (HTTP/1).
    pub client_header_timeout: Duration,
}

impl Default for LimitsConfig {
    /// nginx's defaults where nginx has one (8 KiB per line, `client_header_timeout` 60 s but
    /// 10 s here, as proxies in front of caches use), Varnish's field count (`http_max_hdr`).
    fn default() -> Self {
        LimitsConfig {
            max_header_bytes: 8 << 10,
            max_headers_bytes: 64 << 10,
            max_header_count: 100,
            max_uri_bytes: 8 << 10,
            max_body_bytes: None,
            client_header_timeout: Duration::from_secs(10),
        }
    }
}

/// Pingora's HTTP/1 parser refuses more fields, or a longer header section, before any limit
/// of ours is checked: larger settings could never take effect.
pub const PARSER_MAX_FIELDS: usize = 256;
pub const PARSER_MAX_HEADER_BYTES: usize = 1 << 20;

pub(super) fn resolve(r: &Resolver) -> Result<LimitsConfig, ConfigError> {
    let d = LimitsConfig::default();
    let at_most = |max: usize, what: &'static str| {
        move |n: usize| {
            if n > max {
                Err(format!("must be at most {max} ({what})"))
            } else {
                Ok(n)
            }
        }
    };
    let limits = LimitsConfig {
        max_header_bytes: r.get("limits.max_header_bytes", d.max_header_bytes, size)?,
        max_headers_bytes: r.get("limits.max_headers_bytes", d.max_headers_bytes, |t| {
            size(t).and_then(at_most(
                PARSER_MAX_HEADER_BYTES,
                "1MiB, the HTTP parser's own bound",
            ))
        })?,
        max_header_count: r.get("limits.max_header_count", d.max_header_count, |t| {
            count(t).and_then(at_most(PARSER_MAX_FIELDS, "the HTTP parser's own bound"))
        })?,
        max_uri_bytes: r.get("limits.max_uri_bytes", d.max_uri_bytes, size)?,
        max_body_bytes: Some(r.get("limits.max_body_bytes", 0, size_or_zero)?).filter(|n| *n > 0),
        client_header_timeout: r.get(
            "limits.client_header_timeout",
            d.client_header_timeout,
            positive_duration,
        )?,
    };
    if limits.max_header_bytes > limits.max_headers_bytes {
        // Name the setting the operator wrote (the defaults agree with each other).
        let (key, problem) = match r.raw("limits.max_header_bytes") {
            Some(_) => (
                "limits.max_header_bytes",
                format!(
                    "is larger than limits.max_headers_bytes ({} bytes)",
                    limits.max_headers_bytes
                ),
            ),
            None => (
                "limits.max_headers_bytes",
                format!(
                    "is smaller than limits.max_header_bytes ({} bytes)",
                    limits.max_header_bytes
                ),
            ),
        };
        let v = r.raw(key).expect("set, since the defaults agree");
        return Err(r.invalid(key, v, problem));
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::super::load_with_origin as load;
    use super::*;

    fn error(args: &[&str]) -> String {
        load(args).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let l = load(&[]).unwrap().limits;
        assert_eq!(l, LimitsConfig::default());
        assert_eq!(l.max_header_bytes, 8192);
        assert_eq!(l.max_headers_bytes, 65536);
        assert_eq!(l.max_header_count, 100);
        assert_eq!(l.max_uri_bytes, 8192);
        assert_eq!(l.max_body_bytes, None);
        assert_eq!(l.client_header_timeout, Duration::from_secs(10));
    }

    #[test]
    fn flags_set_every_limit() {
        let l = load(&[
            "--max-header-bytes",
            "4KiB",
            "--max-headers-bytes",
            "32KiB",
            "--max-header-count",
            "50",
            "--max-uri-bytes",
            "2KiB",
            "--max-body-bytes",
            "10MiB",
            "--client-header-timeout",
            "5s",
        ])
        .unwrap()
        .limits;
        assert_eq!(
            l,
            LimitsConfig {
                max_header_bytes: 4096,
                max_headers_bytes: 32768,
                max_header_count: 50,
                max_uri_bytes: 2048,
                max_body_bytes: Some(10 << 20),
                client_header_timeout: Duration::from_secs(5),
            }
        );
        assert_eq!(
            load(&["--max-body-bytes", "0"])
                .unwrap()
                .limits
                .max_body_bytes,
            None
        );
    }

    #[test]
    fn invalid_limits_name_their_key() {
        for (args, expected) in [
            (&["--max-header-bytes", "lots"][..], "limits.max_header_bytes: \"lots\" is not a size"),
            (&["--max-header-count", "0"], "limits.max_header_count: \"0\" is not a positive whole number"),
            (&["--max-header-count", "300"], "limits.max_header_count: \"300\" must be at most 256"),
            (&["--max-headers-bytes", "2MiB"], "limits.max_headers_bytes: \"2MiB\" must be at most 1048576"),
            (&["--max-uri-bytes", "0"], "limits.max_uri_bytes: \"0\" is not a size"),
            (&["--max-body-bytes=-1"], "limits.max_body_bytes: \"-1\" is not a size"),
            (&["--client-header-timeout", "0"], "limits.client_header_timeout: \"0\" must be greater than 0"),
            (&["--max-header-bytes", "128KiB"], "limits.max_header_bytes: \"128KiB\" is larger than limits.max_headers_bytes (65536 bytes)"),
            (&["--max-headers-bytes", "4KiB"], "limits.max_headers_bytes: \"4KiB\" is smaller than limits.max_header_bytes (8192 bytes)"),
        ] {
            let e = error(args);
            assert!(e.starts_with(expected), "{args:?}: {e}");
        }
    }
}
