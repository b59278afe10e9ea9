//! Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection: they are removed from
//! requests before they go upstream and from responses before they are stored or passed on.
//! Pingora sets the framing (`Content-Length`/`Transfer-Encoding`) of each side itself.
//!
//! `Upgrade` is among them; a protocol upgrade (WebSocket) is the one exchange where it is
//! meant for the next hop, so [`upgrade`] reads it first and the proxy puts it back.

use http::header::CONNECTION;
use http::{HeaderMap, HeaderName};
use pingora_http::{RequestHeader, ResponseHeader};

const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Every hop-by-hop header name present: the fixed ones, those `Connection` names, and any
/// `Proxy-*` header (`Proxy-Authorization`, `Proxy-Authenticate`, `Proxy-Connection`).
fn names(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    names.extend(
        headers
            .keys()
            .filter(|k| HOP_BY_HOP.contains(&k.as_str()) || k.as_str().starts_with("proxy-"))
            .cloned(),
    );
    names
}

/// The protocol an upgrade request or a 101 response asks for: `Upgrade`, when `Connection`
/// names it.
pub fn upgrade(headers: &HeaderMap) -> Option<http::HeaderValue> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(http::header::UPGRADE).cloned())
        .flatten()
}

pub fn strip_request(req: &mut RequestHeader) {
    for name in names(&req.headers) {
        req.remove_header(&name);
    }
}

pub fn strip_response(resp: &mut ResponseHeader) {
    for name in names(&resp.headers) {
        resp.remove_header(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_fixed_listed_and_proxy_headers() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in [
            ("connection", "close, X-Hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("trailer", "x-t"),
            ("upgrade", "h2c"),
            ("proxy-authenticate", "Basic"),
            ("proxy-connection", "keep-alive"),
            ("x-end-to-end", "kept"),
            ("content-length", "3"),
        ] {
            r.append_header(k.to_string(), v).unwrap();
        }
        strip_response(&mut r);
        let left: Vec<_> = r.headers.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(left, ["x-end-to-end", "content-length"]);
    }

    #[test]
    fn strips_request_headers() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in [
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("accept", "*/*"),
        ] {
            r.append_header(k.to_string(), v).unwrap();
        }
        strip_request(&mut r);
        let left: Vec<_> = r.headers.keys().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(left, ["accept"]);
    }
}
