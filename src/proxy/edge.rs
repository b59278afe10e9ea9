//! What the client's connection is, and what follows from it at the edge: the scheme of the
//! cache key (`https` on the TLS listener), `X-Forwarded-Proto`, HSTS on TLS responses only,
//! and, with `tls.redirect_http`, a 308 to the https URL for every plaintext request.
//!
//! The connection is read once per request from Pingora's digest (TLS version) and the
//! request's HTTP version, and carried in the request context.

use std::net::IpAddr;

use http::{header, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use crate::cache::key;
use crate::config::Config;
use crate::headers::FieldWriter;
use crate::tls::handshake::version_label;

/// The client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConnection {
    /// `TLSv1.2` / `TLSv1.3` on the TLS listener, `None` on the plaintext one.
    pub tls: Option<&'static str>,
    /// `http/1.1`, `http/1.0` or `h2`.
    pub protocol: &'static str,
}

impl Default for ClientConnection {
    fn default() -> Self {
        ClientConnection {
            tls: None,
            protocol: "http/1.1",
        }
    }
}

/// An address as text (`X-Forwarded-For`): an IPv4 address written digit by digit, where
/// `to_string` runs the formatting machinery for every request to the origin.
pub fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

impl ClientConnection {
    pub fn of(session: &Session) -> ClientConnection {
        let tls = session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .map(|ssl| version_label(&ssl.version));
        let protocol = match session.req_header().version {
            http::Version::HTTP_2 => "h2",
            http::Version::HTTP_10 => "http/1.0",
            _ => "http/1.1",
        };
        ClientConnection { tls, protocol }
    }

    /// Whether the client came over TLS: the scheme of its URL is `https`.
    pub fn https(&self) -> bool {
        self.tls.is_some()
    }

    pub fn scheme(&self) -> &'static str {
        if self.https() {
            "https"
        } else {
            "http"
        }
    }
}

/// The edge settings the proxy applies per request.
#[derive(Debug, Clone, Default)]
pub struct EdgeSettings {
    /// `Strict-Transport-Security` for TLS responses.
    pub hsts: Option<HeaderValue>,
    /// The TLS port plaintext requests are redirected to (`tls.redirect_http`).
    pub redirect_to: Option<u16>,
}

impl EdgeSettings {
    pub fn new(config: &Config) -> EdgeSettings {
        let tls = config.tls.as_ref();
        EdgeSettings {
            hsts: tls.and_then(|t| t.hsts.clone()),
            redirect_to: tls.filter(|t| t.redirect_http).map(|t| t.listen.port()),
        }
    }

    /// The redirect for a plaintext request, when plaintext requests are redirected.
    pub fn redirect(&self, conn: &ClientConnection, req: &RequestHeader) -> Option<ResponseHeader> {
        let port = self.redirect_to.filter(|_| !conn.https())?;
        let mut resp = ResponseHeader::build(308, Some(4)).expect("valid status");
        let _ = resp.insert_header(header::LOCATION, https_location(req, port));
        let _ = resp.insert_header(header::CONTENT_LENGTH, 0);
        let _ = resp.insert_header(header::CACHE_CONTROL, "no-store");
        Some(resp)
    }

    /// Adds HSTS to a TLS response, unless the origin sent its own.
    pub fn apply_hsts(&self, conn: &ClientConnection, fields: &mut FieldWriter<'_>) {
        if let (true, Some(hsts)) = (conn.https(), &self.hsts) {
            fields.set_if_absent(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
}

/// `https://host[:port]/path?query` for a request: its host without the plaintext port,
/// with the TLS port unless it is 443.
pub fn https_location(req: &RequestHeader, tls_port: u16) -> String {
    let authority = key::request_host(req).trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        rest.split_once(']')
            .map_or(authority, |(h, _)| &authority[..h.len() + 2])
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let path_and_query = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    if tls_port == 443 {
        format!("https://{host}{path_and_query}")
    } else {
        format!("https://{host}:{tls_port}{path_and_query}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::write_fields;

    #[test]
    fn addresses_are_written_as_to_string_writes_them() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "127.0.0.1",
            "192.168.255.250",
            "255.255.255.255",
            "::1",
            "2001:db8::8:800:200c:417a",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    fn req(target: &str, host: &str) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        r.insert_header("host", host).unwrap();
        r
    }

    #[test]
    fn location_keeps_host_path_and_query_and_takes_the_tls_port() {
        assert_eq!(
            https_location(&req("/a/b?x=1&y", "example.com:8080"), 8443),
            "https://example.com:8443/a/b?x=1&y"
        );
        assert_eq!(
            https_location(&req("/", "Example.com"), 443),
            "https://Example.com/"
        );
        assert_eq!(
            https_location(&req("/p", "[::1]:3000"), 3443),
            "https://[::1]:3443/p"
        );
        assert_eq!(https_location(&req("/p", "[::1]"), 443), "https://[::1]/p");
    }

    #[test]
    fn redirect_and_hsts_follow_the_connection() {
        let edge = EdgeSettings {
            hsts: Some(HeaderValue::from_static("max-age=60")),
            redirect_to: Some(8443),
        };
        let plain = ClientConnection::default();
        let tls = ClientConnection {
            tls: Some("TLSv1.3"),
            protocol: "h2",
        };
        let r = req("/x", "h");
        let resp = edge.redirect(&plain, &r).unwrap();
        assert_eq!(resp.status, 308);
        assert_eq!(resp.headers["location"], "https://h:8443/x");
        assert!(edge.redirect(&tls, &r).is_none());

        let mut resp = ResponseHeader::build(200, None).unwrap();
        write_fields(&mut resp, |w| edge.apply_hsts(&plain, w));
        assert!(!resp.headers.contains_key("strict-transport-security"));
        write_fields(&mut resp, |w| edge.apply_hsts(&tls, w));
        assert_eq!(resp.headers["strict-transport-security"], "max-age=60");
    }
}
