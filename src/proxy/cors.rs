//! CORS at the edge: allowed origins come from configuration, preflight requests are
//! answered here without reaching the origin, and actual responses get
//! `Access-Control-Allow-Origin` for allowed origins.

use http::{header, HeaderValue, Method};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::config::{AllowedOrigins, CorsConfig};

/// Methods announced to browsers in preflight answers.
const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/// How long browsers may cache a preflight answer, in seconds.
const MAX_AGE: &str = "600";

/// What CORS asks of one request.
#[derive(Debug, PartialEq, Eq)]
pub enum CorsDecision {
    /// Not a cross-origin request, or CORS is off: nothing to do.
    None,
    /// An allowed cross-origin request: add headers to the response.
    Allow(HeaderValue),
    /// A preflight from an allowed origin: answer it at the edge.
    Preflight(HeaderValue),
    /// A preflight from an origin that is not allowed: refuse it at the edge.
    DeniedPreflight,
}

pub fn decide(config: &CorsConfig, req: &RequestHeader) -> CorsDecision {
    if !config.enabled {
        return CorsDecision::None;
    }
    let Some(origin) = req.headers.get(header::ORIGIN) else {
        return CorsDecision::None;
    };
    let preflight = req.method == Method::OPTIONS
        && req
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let allowed = origin
        .to_str()
        .is_ok_and(|o| config.allowed_origins.allows(o));
    match (preflight, allowed) {
        (true, true) => CorsDecision::Preflight(origin.clone()),
        (true, false) => CorsDecision::DeniedPreflight,
        (false, true) => CorsDecision::Allow(origin.clone()),
        (false, false) => CorsDecision::None,
    }
}

/// Adds the headers of an allowed cross-origin response.
pub fn apply(config: &CorsConfig, origin: &HeaderValue, resp: &mut ResponseHeader) {
    let value = if config.allowed_origins == AllowedOrigins::Any {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    };
    let _ = resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    if config.allowed_origins != AllowedOrigins::Any {
        // The answer depends on Origin: shared caches downstream must not mix them up.
        let _ = resp.append_header(header::VARY, "Origin");
    }
}

/// The answer to an allowed preflight request.
pub fn preflight_response(
    config: &CorsConfig,
    origin: &HeaderValue,
    req: &RequestHeader,
) -> ResponseHeader {
    let mut resp = ResponseHeader::build(204, Some(6)).expect("204 is a valid status");
    apply(config, origin, &mut resp);
    let _ = resp.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
    if let Some(h) = req.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        let _ = resp.insert_header(header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
    }
    let _ = resp.insert_header(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    let _ = resp.insert_header(header::CONTENT_LENGTH, "0");
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(origins: AllowedOrigins) -> CorsConfig {
        CorsConfig {
            enabled: true,
            allowed_origins: origins,
        }
    }

    fn req(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/", None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn decisions() {
        let c = config(AllowedOrigins::List(vec!["https://app.example".into()]));
        let ok = HeaderValue::from_static("https://app.example");
        assert_eq!(decide(&c, &req("GET", &[])), CorsDecision::None);
        assert_eq!(
            decide(&c, &req("GET", &[("origin", "https://app.example")])),
            CorsDecision::Allow(ok.clone())
        );
        assert_eq!(
            decide(&c, &req("GET", &[("origin", "https://evil.example")])),
            CorsDecision::None
        );
        let pre = [
            ("origin", "https://app.example"),
            ("access-control-request-method", "PUT"),
        ];
        assert_eq!(
            decide(&c, &req("OPTIONS", &pre)),
            CorsDecision::Preflight(ok)
        );
        let bad = [
            ("origin", "https://evil.example"),
            ("access-control-request-method", "PUT"),
        ];
        assert_eq!(
            decide(&c, &req("OPTIONS", &bad)),
            CorsDecision::DeniedPreflight
        );
        let off = CorsConfig::default();
        assert_eq!(decide(&off, &req("OPTIONS", &pre)), CorsDecision::None);
    }

    #[test]
    fn wildcard_answers_star_without_vary() {
        let c = config(AllowedOrigins::Any);
        let mut resp = ResponseHeader::build(200, None).unwrap();
        apply(
            &c,
            &HeaderValue::from_static("https://x.example"),
            &mut resp,
        );
        assert_eq!(resp.headers["access-control-allow-origin"], "*");
        assert!(resp.headers.get("vary").is_none());
    }
}
