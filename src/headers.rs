//! Response headers the proxy adds on every path: security headers and request IDs.
//!
//! Used by both the proxy and the admin service, so it depends on neither.

use http::header::{self, HeaderName};
use http::HeaderValue;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// How a response relates to the cache (`HIT`, `MISS`, ...).
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The security headers, as OWASP's HTTP Headers Cheat Sheet recommends them today:
/// - `X-Content-Type-Options: nosniff` stops MIME sniffing of responses.
/// - `X-Frame-Options: DENY` forbids framing (clickjacking); origins that need framing
///   send their own value, which is kept.
/// - `Referrer-Policy: strict-origin-when-cross-origin` keeps paths and queries out of
///   cross-origin referrers.
/// - `X-XSS-Protection: 0` turns the legacy browser XSS auditor off: the auditor is
///   gone from current browsers and, where it remains, it can itself be abused to leak data.
///
/// Names and values are built at compile time: inserting them costs no parsing and no
/// allocation per response.
pub const SECURITY_HEADERS: [(HeaderName, HeaderValue); 4] = [
    (
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    ),
    (header::X_XSS_PROTECTION, HeaderValue::from_static("0")),
];

/// Longest `X-Request-Id` accepted from a client; longer ones are replaced.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Keeps a client's `X-Request-Id` when it is short and made of safe characters (so it can
/// go into logs and upstream requests as is), otherwise generates a new one.
pub fn request_id(incoming: Option<&HeaderValue>) -> String {
    incoming
        .map(HeaderValue::as_bytes)
        .filter(|id| is_valid_request_id(id))
        .map(|id| String::from_utf8_lossy(id).into_owned())
        .unwrap_or_else(new_request_id)
}

fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A random 128-bit ID in hex. Written digit by digit: `format!` would run the formatting
/// machinery for every request that brings no ID of its own.
pub fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id = rand::random::<u128>();
    let digits: Vec<u8> = (0..32)
        .rev()
        .map(|i| HEX[((id >> (4 * i)) & 0xf) as usize])
        .collect();
    String::from_utf8(digits).expect("hex digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_ids_and_replaces_others() {
        let ok = HeaderValue::from_static("req-123_abc.def:9");
        assert_eq!(request_id(Some(&ok)), "req-123_abc.def:9");
        for bad in ["", "has space", "semi;colon", "quote\"", "{json}"] {
            let v = HeaderValue::from_str(bad).unwrap();
            let id = request_id(Some(&v));
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
        }
        let long = HeaderValue::from_str(&"a".repeat(MAX_REQUEST_ID_LEN + 1)).unwrap();
        let new = new_request_id();
        assert!(new
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(request_id(Some(&long)).len(), 32);
        assert_ne!(request_id(None), request_id(None));
    }
}
