//! Response headers the proxy adds on every path: security headers and request IDs.
//!
//! Used by both the proxy and the admin service, so it depends on neither.

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};
use pingora_http::ResponseHeader;

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

/// Where [`write_fields`] writes: straight into the `HeaderMap` of a header without a map of
/// name cases, or through Pingora's `insert_header` for one with it.
pub enum FieldWriter<'a> {
    Map(&'a mut HeaderMap),
    Case(&'a mut ResponseHeader),
}

impl FieldWriter<'_> {
    /// Sets a field, replacing any value it had.
    pub fn set(&mut self, name: HeaderName, value: HeaderValue) {
        match self {
            FieldWriter::Map(map) => {
                map.insert(name, value);
            }
            FieldWriter::Case(resp) => {
                let _ = resp.insert_header(name, value);
            }
        }
    }

    /// Sets a field unless the response has it already.
    pub fn set_if_absent(&mut self, name: HeaderName, value: HeaderValue) {
        match self {
            FieldWriter::Map(map) => {
                map.entry(name).or_insert(value);
            }
            FieldWriter::Case(resp) => {
                if !resp.headers.contains_key(&name) {
                    let _ = resp.insert_header(name, value);
                }
            }
        }
    }
}

/// Writes the proxy's own fields into a response. Pingora's `insert_header` turns each name
/// into bytes and parses it back, for the map of name cases an origin's header keeps: most
/// of an insert's cost, for nothing on a cached response or one the proxy made, which have no
/// such map. Those are edited in their `HeaderMap` (taken out of the header and put back, as
/// `ResponseHeader` lends it only read-only); an origin's header goes through
/// `insert_header`, which keeps its two maps in step.
pub fn write_fields(resp: &mut ResponseHeader, write: impl FnOnce(&mut FieldWriter<'_>)) {
    if resp.has_case() {
        write(&mut FieldWriter::Case(resp));
        return;
    }
    // The parts do not carry a reason phrase of the header's own: keep it.
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(resp, empty));
    write(&mut FieldWriter::Map(&mut parts.headers));
    *resp = ResponseHeader::from(parts);
    if let Some(reason) = reason {
        let _ = resp.set_reason_phrase(Some(&reason));
    }
}

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

    /// The header as it goes on the wire, lines in order.
    fn wire(resp: &ResponseHeader) -> Vec<String> {
        let mut buf = Vec::new();
        resp.header_to_h1_wire(&mut buf);
        String::from_utf8(buf)
            .unwrap()
            .split_terminator("\r\n")
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn fields_are_written_with_and_without_a_map_of_name_cases() {
        for with_case in [true, false] {
            let mut resp = if with_case {
                ResponseHeader::build(200, None).unwrap()
            } else {
                ResponseHeader::build_no_case(200, None).unwrap()
            };
            assert_eq!(resp.has_case(), with_case);
            resp.set_reason_phrase(Some("Fine")).unwrap();
            resp.append_header("X-Frame-Options", "SAMEORIGIN").unwrap();
            resp.append_header("X-Cache", "old").unwrap();
            resp.append_header("Vary", "a").unwrap();
            resp.append_header("Vary", "b").unwrap();
            write_fields(&mut resp, |w| {
                w.set(X_CACHE, HeaderValue::from_static("HIT"));
                w.set_if_absent(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
                w.set_if_absent(header::X_XSS_PROTECTION, HeaderValue::from_static("0"));
            });
            assert_eq!(resp.has_case(), with_case);
            assert_eq!(resp.status, 200);
            assert_eq!(resp.get_reason_phrase(), Some("Fine"));
            let lines = wire(&resp);
            let field = |name: &str| {
                lines
                    .iter()
                    .filter(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
                    .map(|l| l.split_once(": ").unwrap().1.to_owned())
                    .collect::<Vec<_>>()
            };
            assert_eq!(field("x-cache"), ["HIT"], "{lines:?}");
            assert_eq!(field("x-frame-options"), ["SAMEORIGIN"], "{lines:?}");
            assert_eq!(field("x-xss-protection"), ["0"], "{lines:?}");
            assert_eq!(field("vary"), ["a", "b"], "{lines:?}");
            if with_case {
                // The origin's spelling is kept.
                assert!(
                    lines.contains(&"X-Frame-Options: SAMEORIGIN".to_owned()),
                    "{lines:?}"
                );
            }
        }
    }

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
