//! Errors a client sees, and the one JSON shape they are written in.
//!
//! Both the proxy and the admin service answer errors through [`ErrorKind`] and
//! [`json_body`], so every error a client receives from this process looks the same:
//! `{"code": "...", "message": "...", "request_id": "..."}`. Logging is the caller's job.

use pingora_error::{Error, ErrorSource, ErrorType};
use serde::Serialize;

/// The kinds of error the proxy answers with itself, each with a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// 408: the request header did not arrive within `limits.client_header_timeout`.
    RequestTimeout,
    /// 413 Content Too Large (RFC 9110 §15.5.14; "Payload Too Large" in older RFCs): a request
    /// body over `limits.max_body_bytes`, or an admin request body over its bound.
    PayloadTooLarge,
    /// 414: a request target over `limits.max_uri_bytes`.
    UriTooLong,
    /// 431: a header field, the header section or the field count over its `limits.*`.
    RequestHeaderFieldsTooLarge,
    Internal,
    /// The origin could not be connected to (refused, unreachable, TLS failure).
    OriginUnreachable,
    /// The origin answered with something that is not valid HTTP, or broke off the response.
    OriginBadResponse,
    ServiceUnavailable,
    /// Connecting to or reading from the origin took longer than the configured timeout.
    OriginTimeout,
    /// The request said `only-if-cached` and no usable response is stored.
    NotCached,
    /// No route matches the request's host and path, and there is no default route.
    NoRoute,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound | ErrorKind::NoRoute => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UriTooLong => 414,
            ErrorKind::RequestHeaderFieldsTooLarge => 431,
            ErrorKind::Internal => 500,
            ErrorKind::OriginUnreachable | ErrorKind::OriginBadResponse => 502,
            ErrorKind::ServiceUnavailable => 503,
            ErrorKind::OriginTimeout | ErrorKind::NotCached => 504,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "BAD_REQUEST",
            ErrorKind::Unauthorized => "UNAUTHORIZED",
            ErrorKind::Forbidden => "FORBIDDEN",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorKind::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorKind::PayloadTooLarge => "CONTENT_TOO_LARGE",
            ErrorKind::UriTooLong => "URI_TOO_LONG",
            ErrorKind::RequestHeaderFieldsTooLarge => "REQUEST_HEADER_FIELDS_TOO_LARGE",
            ErrorKind::Internal => "INTERNAL_ERROR",
            ErrorKind::OriginUnreachable => "ORIGIN_UNREACHABLE",
            ErrorKind::OriginBadResponse => "ORIGIN_BAD_RESPONSE",
            ErrorKind::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ErrorKind::OriginTimeout => "ORIGIN_TIMEOUT",
            ErrorKind::NotCached => "NOT_CACHED",
            ErrorKind::NoRoute => "NO_ROUTE",
        }
    }

    /// A message that is safe to show any client: it never includes addresses or internals.
    pub fn default_message(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "the request could not be parsed",
            ErrorKind::Unauthorized => "a valid bearer token is required",
            ErrorKind::Forbidden => "this action is not allowed from this address",
            ErrorKind::NotFound => "no such endpoint",
            ErrorKind::MethodNotAllowed => "method not allowed on this endpoint",
            ErrorKind::RequestTimeout => "the request header did not arrive in time",
            ErrorKind::PayloadTooLarge => "the request body is too large",
            ErrorKind::UriTooLong => "the request target is too long",
            ErrorKind::RequestHeaderFieldsTooLarge => {
                "the request header is too large (a field, all fields, or their number)"
            }
            ErrorKind::Internal => "internal error",
            ErrorKind::OriginUnreachable => "the origin server could not be reached",
            ErrorKind::OriginBadResponse => "the origin server sent an invalid response",
            ErrorKind::ServiceUnavailable => "the service is not ready",
            ErrorKind::OriginTimeout => "the origin server did not answer in time",
            ErrorKind::NotCached => "only-if-cached was requested and no usable response is stored",
            ErrorKind::NoRoute => "no route serves this host and path",
        }
    }

    /// Classifies a Pingora error raised while proxying a request.
    ///
    /// Returns `None` when the client connection itself failed: there is nobody left to
    /// answer.
    pub fn from_proxy_error(e: &Error) -> Option<ErrorKind> {
        use ErrorType::*;
        let kind = match e.etype() {
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
                if e.esource() == &ErrorSource::Downstream {
                    return None;
                }
                ErrorKind::OriginTimeout
            }
            ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure
            | TLSHandshakeFailure | InvalidCert | HandshakeError | SocketError | BindError => {
                ErrorKind::OriginUnreachable
            }
            HTTPStatus(code) => match *code {
                400 => ErrorKind::BadRequest,
                401 => ErrorKind::Unauthorized,
                403 => ErrorKind::Forbidden,
                404 => ErrorKind::NotFound,
                405 => ErrorKind::MethodNotAllowed,
                408 => ErrorKind::RequestTimeout,
                413 => ErrorKind::PayloadTooLarge,
                414 => ErrorKind::UriTooLong,
                431 => ErrorKind::RequestHeaderFieldsTooLarge,
                503 => ErrorKind::ServiceUnavailable,
                504 => ErrorKind::OriginTimeout,
                c if (400..500).contains(&c) => ErrorKind::BadRequest,
                _ => ErrorKind::OriginBadResponse,
            },
            _ => match e.esource() {
                ErrorSource::Upstream => ErrorKind::OriginBadResponse,
                ErrorSource::Downstream => match e.etype() {
                    WriteError | ReadError | ConnectionClosed => return None,
                    _ => ErrorKind::BadRequest,
                },
                ErrorSource::Internal | ErrorSource::Unset => ErrorKind::Internal,
            },
        };
        Some(kind)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'static str,
    message: &'a str,
    request_id: &'a str,
}

/// The JSON body of an error response.
pub fn json_body(kind: ErrorKind, message: &str, request_id: &str) -> Vec<u8> {
    let mut body = serde_json::to_vec(&Body {
        code: kind.code(),
        message,
        request_id,
    })
    .expect("serialising plain strings cannot fail");
    body.push(b'\n');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape_is_stable() {
        let body = json_body(ErrorKind::OriginTimeout, "slow \"origin\"", "abc");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "ORIGIN_TIMEOUT");
        assert_eq!(v["message"], "slow \"origin\"");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v.as_object().unwrap().len(), 3);
    }

    #[test]
    fn proxy_errors_map_to_status() {
        let up = |t| {
            let mut e = Error::new(t);
            e.esource = ErrorSource::Upstream;
            ErrorKind::from_proxy_error(&e)
        };
        assert_eq!(
            up(ErrorType::ConnectRefused),
            Some(ErrorKind::OriginUnreachable)
        );
        assert_eq!(
            up(ErrorType::ConnectTimedout),
            Some(ErrorKind::OriginTimeout)
        );
        assert_eq!(up(ErrorType::ReadTimedout), Some(ErrorKind::OriginTimeout));
        assert_eq!(
            up(ErrorType::InvalidHTTPHeader),
            Some(ErrorKind::OriginBadResponse)
        );
        let mut down = Error::new(ErrorType::ReadError);
        down.esource = ErrorSource::Downstream;
        assert_eq!(ErrorKind::from_proxy_error(&down), None);
        let mut bad = Error::new(ErrorType::InvalidHTTPHeader);
        bad.esource = ErrorSource::Downstream;
        assert_eq!(
            ErrorKind::from_proxy_error(&bad),
            Some(ErrorKind::BadRequest)
        );
    }
}
