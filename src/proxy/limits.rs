//! Request limits (`limits.*`): requests over a bound are refused by the proxy itself, in the
//! JSON error shape, logged and counted (`caching_proxy_requests_rejected_total{reason}`), and
//! never forwarded.
//!
//! Two places refuse:
//! - [`check_request`] and [`check_body`], from the proxy's `early_request_filter` and
//!   `request_body_filter`: the target's length (414), the header fields' number and sizes
//!   (431), the body's size, declared or as it arrives (413).
//! - [`server_options`]: what Pingora's HTTP/1 reader refuses before any proxy hook runs (a
//!   header section over 1 MiB, more than 256 fields, malformed syntax or framing) and the
//!   `client_header_timeout`, answered through the vendored pingora-core's header-read hook
//!   (`vendor/README.md`).
//!
//! This module only decides and answers; it keeps no state beyond one request's body count.

use bytes::Bytes;
use http::header;
use log::info;
use pingora_core::apps::HttpServerOptions;
use pingora_core::protocols::http::v1::header_read::{HeaderRejection, HeaderRejectionHandler};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::sync::Arc;

use crate::cache::CacheStatus;
use crate::config::LimitsConfig;
use crate::error::{json_body, ErrorKind};
use crate::headers::{self, SECURITY_HEADERS, X_CACHE, X_REQUEST_ID};
use crate::metrics::REQUESTS_REJECTED;

/// Why a request was refused: the `reason` label of `caching_proxy_requests_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    UriTooLong,
    /// One field line over `max_header_bytes`.
    HeaderTooLarge,
    /// The request line and fields over `max_headers_bytes` (or Pingora's 1 MiB).
    HeadersTooLarge,
    /// More fields than `max_header_count` (or Pingora's 256).
    TooManyHeaders,
    BodyTooLarge,
    /// The header did not arrive within `client_header_timeout`.
    HeaderTimeout,
    /// Pingora's parser could not read the request (syntax or framing).
    Malformed,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::UriTooLong,
        Reason::HeaderTooLarge,
        Reason::HeadersTooLarge,
        Reason::TooManyHeaders,
        Reason::BodyTooLarge,
        Reason::HeaderTimeout,
        Reason::Malformed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::UriTooLong => "uri_too_long",
            Reason::HeaderTooLarge => "header_too_large",
            Reason::HeadersTooLarge => "headers_too_large",
            Reason::TooManyHeaders => "too_many_headers",
            Reason::BodyTooLarge => "body_too_large",
            Reason::HeaderTimeout => "header_timeout",
            Reason::Malformed => "malformed",
        }
    }

    pub fn kind(self) -> ErrorKind {
        match self {
            Reason::UriTooLong => ErrorKind::UriTooLong,
            Reason::HeaderTooLarge | Reason::HeadersTooLarge | Reason::TooManyHeaders => {
                ErrorKind::RequestHeaderFieldsTooLarge
            }
            Reason::BodyTooLarge => ErrorKind::PayloadTooLarge,
            Reason::HeaderTimeout => ErrorKind::RequestTimeout,
            Reason::Malformed => ErrorKind::BadRequest,
        }
    }
}

/// A refusal: why, and what exactly was over (for the log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
}

impl Refusal {
    fn new(reason: Reason, detail: String) -> Self {
        Refusal { reason, detail }
    }
}

/// One request's state: the body bytes seen so far, and whether it was refused.
#[derive(Debug, Default)]
pub struct RequestLimits {
    body_bytes: usize,
    refused: bool,
}

impl RequestLimits {
    /// Whether this request was refused here (its log line is already written).
    pub fn refused(&self) -> bool {
        self.refused
    }
}

/// The header checks, in the order a client would want them reported.
pub fn check_header(limits: &LimitsConfig, req: &RequestHeader) -> Result<(), Refusal> {
    let target = req.raw_path().len();
    if target > limits.max_uri_bytes {
        return Err(Refusal::new(
            Reason::UriTooLong,
            format!(
                "request target of {target} bytes, limit {}",
                limits.max_uri_bytes
            ),
        ));
    }
    let count = req.headers.len();
    if count > limits.max_header_count {
        return Err(Refusal::new(
            Reason::TooManyHeaders,
            format!("{count} header fields, limit {}", limits.max_header_count),
        ));
    }
    // As on the wire: `METHOD SP target SP HTTP/1.1 CRLF`, then `name: value CRLF` per field.
    let mut total = req.method.as_str().len() + target + 12;
    for (name, value) in &req.headers {
        let line = name.as_str().len() + 2 + value.len();
        if line > limits.max_header_bytes {
            return Err(Refusal::new(
                Reason::HeaderTooLarge,
                format!(
                    "header field {name} of {line} bytes, limit {}",
                    limits.max_header_bytes
                ),
            ));
        }
        total += line + 2;
    }
    if total > limits.max_headers_bytes {
        return Err(Refusal::new(
            Reason::HeadersTooLarge,
            format!(
                "request header of {total} bytes, limit {}",
                limits.max_headers_bytes
            ),
        ));
    }
    // The declared length is looked up only under a limit: most configurations set none.
    if let Some(max) = limits.max_body_bytes {
        if let Some(declared) = declared_length(req).filter(|d| *d > max as u64) {
            return Err(body_refusal(declared, max));
        }
    }
    Ok(())
}

fn declared_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn body_refusal(bytes: u64, max: usize) -> Refusal {
    Refusal::new(
        Reason::BodyTooLarge,
        format!("request body of {bytes} bytes or more, limit {max}"),
    )
}

/// `early_request_filter`: refuses a request whose header is over a limit, before anything
/// else reads it. The error goes to `fail_to_proxy`, which answers it.
pub fn check_request(
    limits: &LimitsConfig,
    session: &Session,
    state: &mut RequestLimits,
    request_id: &mut String,
) -> Result<()> {
    let req = session.req_header();
    match check_header(limits, req) {
        Ok(()) => Ok(()),
        Err(refusal) => {
            *request_id = headers::request_id(req.headers.get(X_REQUEST_ID));
            Err(refuse(refusal, session, state, request_id))
        }
    }
}

/// `request_body_filter`: counts the body as it arrives (chunked bodies declare no length)
/// and refuses it once over `max_body_bytes`, which also ends the upstream request.
pub fn check_body(
    limits: &LimitsConfig,
    session: &Session,
    body: Option<&Bytes>,
    state: &mut RequestLimits,
    request_id: &str,
) -> Result<()> {
    let (Some(max), Some(body)) = (limits.max_body_bytes, body) else {
        return Ok(());
    };
    if session.was_upgraded() {
        // A tunnel's bytes are not a request body.
        return Ok(());
    }
    state.body_bytes += body.len();
    if state.body_bytes > max {
        let refusal = body_refusal(state.body_bytes as u64, max);
        return Err(refuse(refusal, session, state, request_id));
    }
    Ok(())
}

/// Logs and counts a refusal; the error `fail_to_proxy` turns into the JSON answer.
fn refuse(
    refusal: Refusal,
    session: &Session,
    state: &mut RequestLimits,
    request_id: &str,
) -> Box<Error> {
    state.refused = true;
    let client = session.client_addr().map(|a| a.to_string());
    record(&refusal, client.as_deref(), request_id);
    let mut e = Error::explain(
        ErrorType::HTTPStatus(refusal.reason.kind().status()),
        refusal.detail,
    );
    e.set_retry(false);
    e
}

fn record(refusal: &Refusal, client: Option<&str>, request_id: &str) {
    REQUESTS_REJECTED
        .with_label_values(&[refusal.reason.label()])
        .inc();
    info!(
        "request refused ({}): {}, client={}, request_id={request_id}",
        refusal.reason.label(),
        refusal.detail,
        client.unwrap_or("-"),
    );
}

/// Creates every `reason` of `caching_proxy_requests_rejected_total`, so that a scrape shows
/// zeros before the first refusal.
pub fn init_metrics() {
    for reason in Reason::ALL {
        REQUESTS_REJECTED.with_label_values(&[reason.label()]);
    }
}

/// The proxy app's HTTP server options: the header timeout, and our answer to the requests
/// Pingora's HTTP/1 reader refuses before any hook (see the module doc).
pub fn server_options(limits: &LimitsConfig, security_headers: bool) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.header_timeout = Some(limits.client_header_timeout);
    options.header_rejection = Some(HeaderRejectionHandler(Arc::new(
        move |rejection, client| {
            let client = client.map(|a| a.to_string());
            answer_rejection(rejection, client.as_deref(), security_headers)
        },
    )));
    options
}

/// What Pingora's reader refused, as a refusal of ours; the response, unless the connection
/// is to be closed without one (a timeout before a whole request line).
fn answer_rejection(
    rejection: HeaderRejection,
    client: Option<&str>,
    security_headers: bool,
) -> Option<(ResponseHeader, Bytes)> {
    let (reason, detail, answer) = match rejection {
        HeaderRejection::TooLarge => (
            Reason::HeadersTooLarge,
            "request header over the HTTP parser's 1 MiB",
            true,
        ),
        HeaderRejection::TooManyFields => (
            Reason::TooManyHeaders,
            "more header fields than the HTTP parser's 256",
            true,
        ),
        HeaderRejection::Malformed => (
            Reason::Malformed,
            "the request header could not be parsed",
            true,
        ),
        HeaderRejection::Timeout { request_line } => (
            Reason::HeaderTimeout,
            if request_line {
                "request header not complete within limits.client_header_timeout"
            } else {
                "no request line within limits.client_header_timeout: connection closed"
            },
            request_line,
        ),
    };
    let request_id = headers::new_request_id();
    record(&Refusal::new(reason, detail.into()), client, &request_id);
    answer.then(|| {
        let kind = reason.kind();
        let body = json_body(kind, kind.default_message(), &request_id);
        let mut resp = ResponseHeader::build(kind.status(), Some(8)).expect("valid status");
        let _ = resp.insert_header(header::CONTENT_TYPE, "application/json");
        let _ = resp.insert_header(header::CONTENT_LENGTH, body.len());
        let _ = resp.insert_header(header::CACHE_CONTROL, "no-store");
        let _ = resp.insert_header(X_CACHE, CacheStatus::Bypass.as_str());
        let _ = resp.insert_header(X_REQUEST_ID, request_id.as_str());
        if security_headers {
            for (name, value) in SECURITY_HEADERS {
                let _ = resp.insert_header(name, value);
            }
        }
        (resp, Bytes::from(body))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            max_header_bytes: 100,
            max_headers_bytes: 300,
            max_header_count: 5,
            max_uri_bytes: 50,
            max_body_bytes: Some(1000),
            ..LimitsConfig::default()
        }
    }

    fn request(target: &str, fields: &[(&str, String)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        for (name, value) in fields {
            req.append_header(name.to_string(), value.as_str()).unwrap();
        }
        req
    }

    fn reason(req: &RequestHeader) -> Option<Reason> {
        check_header(&limits(), req).err().map(|r| r.reason)
    }

    #[test]
    fn within_every_limit_passes() {
        let req = request("/a", &[("host", "example.com".into())]);
        assert_eq!(reason(&req), None);
    }

    #[test]
    fn target_length_counts_the_whole_target() {
        assert_eq!(reason(&request(&format!("/{}", "a".repeat(49)), &[])), None);
        assert_eq!(
            reason(&request(&format!("/{}", "a".repeat(50)), &[])),
            Some(Reason::UriTooLong)
        );
        let absolute = format!("http://example.com/{}", "a".repeat(40));
        assert_eq!(reason(&request(&absolute, &[])), Some(Reason::UriTooLong));
    }

    #[test]
    fn every_field_counts_also_repeated_names() {
        let five: Vec<_> = (0..5).map(|_| ("x-a", "1".to_string())).collect();
        assert_eq!(reason(&request("/", &five)), None);
        let six: Vec<_> = (0..6).map(|_| ("x-a", "1".to_string())).collect();
        assert_eq!(reason(&request("/", &six)), Some(Reason::TooManyHeaders));
    }

    #[test]
    fn one_field_line_is_name_colon_space_value() {
        // "x-a: " is 5 bytes: a 95-byte value makes a 100-byte line.
        let fits = request("/", &[("x-a", "v".repeat(95))]);
        assert_eq!(reason(&fits), None);
        let over = request("/", &[("x-a", "v".repeat(96))]);
        assert_eq!(reason(&over), Some(Reason::HeaderTooLarge));
    }

    #[test]
    fn the_section_counts_the_request_line_and_every_line() {
        // Request line "GET / HTTP/1.1\r\n" = 16; each field line 90 + 2.
        let three: Vec<_> = (0..3)
            .map(|i| ("x-a", format!("{i}{}", "v".repeat(84))))
            .collect();
        assert_eq!(reason(&request("/", &three)), None); // 16 + 3 * 92 = 292
        let four: Vec<_> = (0..4)
            .map(|i| ("x-a", format!("{i}{}", "v".repeat(84))))
            .collect();
        assert_eq!(reason(&request("/", &four)), Some(Reason::HeadersTooLarge));
    }

    #[test]
    fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
        let ok = request("/", &[("content-length", "1000".into())]);
        assert_eq!(reason(&ok), None);
        let over = request("/", &[("content-length", "1001".into())]);
        assert_eq!(reason(&over), Some(Reason::BodyTooLarge));
        let mut unlimited = limits();
        unlimited.max_body_bytes = None;
        assert!(check_header(&unlimited, &over).is_ok());
    }

    #[test]
    fn parser_refusals_are_answered_in_the_json_shape() {
        let (resp, body) = answer_rejection(HeaderRejection::TooManyFields, None, true).unwrap();
        assert_eq!(resp.status, 431);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "REQUEST_HEADER_FIELDS_TOO_LARGE");
        assert_eq!(
            v["request_id"].as_str().unwrap().as_bytes(),
            resp.headers.get(X_REQUEST_ID).unwrap().as_bytes()
        );
        assert_eq!(resp.headers.get("x-frame-options").unwrap(), "DENY");
        let (resp, _) = answer_rejection(HeaderRejection::Malformed, None, false).unwrap();
        assert_eq!(resp.status, 400);
        assert!(resp.headers.get("x-frame-options").is_none());
        let timeout = |request_line| HeaderRejection::Timeout { request_line };
        assert_eq!(
            answer_rejection(timeout(true), None, true)
                .unwrap()
                .0
                .status,
            408
        );
        assert!(answer_rejection(timeout(false), None, true).is_none());
    }
}
