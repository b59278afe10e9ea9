// caching-proxy patch (see vendor/README.md): a bound on how long a request header may take
// to arrive, and a hook that answers requests refused while their header is read.

//! Reading a request header: its time bound, and the application's answer to a refusal.
//!
//! Pingora's HTTP/1 server refuses some requests before any application hook sees them (a
//! header section over `MAX_HEADER_SIZE`, more than `MAX_HEADERS` fields, malformed syntax or
//! framing) and answers them with a plain, empty 400. With a [`HeaderRejectionHandler`] the
//! application writes that answer instead (its own error shape, counters, a log line).
//!
//! Pingora's only timeouts while a header arrives apply to each read (the keep-alive timeout,
//! or the read timeout), so a client sending a byte now and then holds a connection open for
//! ever. [`HeaderReadOptions::timeout`] bounds the whole header instead.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora_http::ResponseHeader;

use crate::protocols::SocketAddr;

/// Why a request was refused while its header was being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderRejection {
    /// The header section grew past Pingora's `MAX_HEADER_SIZE` (1 MiB) before it ended.
    TooLarge,
    /// More header fields than Pingora's parser holds (`MAX_HEADERS`, 256).
    TooManyFields,
    /// Not a valid HTTP/1 request header, or invalid message framing.
    Malformed,
    /// The header did not arrive within [`HeaderReadOptions::timeout`]; `request_line` tells
    /// whether a whole request line had been read (a request to answer, rather than a
    /// connection to close).
    Timeout { request_line: bool },
}

/// Builds the response to a refused request header, given the client's address; `None`
/// closes the connection without a response.
pub type RejectionResponse =
    dyn Fn(HeaderRejection, Option<&SocketAddr>) -> Option<(ResponseHeader, Bytes)> + Send + Sync;

/// The application's answer to refused request headers (see the module doc).
#[derive(Clone)]
pub struct HeaderRejectionHandler(pub Arc<RejectionResponse>);

impl fmt::Debug for HeaderRejectionHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeaderRejectionHandler")
    }
}

/// How an HTTP/1 session reads its request header.
#[derive(Debug, Clone, Default)]
pub struct HeaderReadOptions {
    /// The longest the whole header may take. It counts from the start of the session when
    /// `from_start` is set (the first request of a connection: a client that connects and
    /// sends nothing is closed after it), else from the header's first byte (later requests
    /// of a kept-alive connection, whose idle time the keep-alive timeout bounds).
    pub timeout: Option<Duration>,
    pub from_start: bool,
    /// Answers refused headers instead of Pingora's plain 400.
    pub on_rejection: Option<HeaderRejectionHandler>,
}

/// Whether `buf` holds a whole request line (leading empty lines, which RFC 9112 §2.2 lets a
/// server ignore, do not count).
pub(crate) fn has_request_line(buf: &[u8]) -> bool {
    buf.iter()
        .skip_while(|b| matches!(b, b'\r' | b'\n'))
        .any(|b| *b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_needs_its_end() {
        assert!(!has_request_line(b""));
        assert!(!has_request_line(b"GET /slo"));
        assert!(!has_request_line(b"\r\n\r\n"));
        assert!(has_request_line(b"GET / HTTP/1.1\r\n"));
        assert!(has_request_line(b"\r\nGET / HTTP/1.1\r\nHost: a"));
    }
}
