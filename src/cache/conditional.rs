//! Conditional requests answered from the cache (RFC 9111 §4.3.2).
//!
//! Pingora's `not_modified_filter` evaluates `If-None-Match` against `ETag` and
//! `If-Modified-Since` against `Last-Modified`. A stored response without `Last-Modified`
//! has no modification time of its own, and RFC 9111 §4.3.2 says to use its `Date` then;
//! this module adds that case and leaves the rest to Pingora.

use http::header::{DATE, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use http::{Method, StatusCode};
use pingora_core::protocols::http::conditional_filter::not_modified_filter;
use pingora_http::{RequestHeader, ResponseHeader};

use super::freshness::parse_http_date;

/// Whether `req` gets a 304 made from `resp`.
pub fn not_modified(req: &RequestHeader, resp: &ResponseHeader) -> bool {
    if not_modified_filter(req, resp) {
        return true;
    }
    if resp.status != StatusCode::OK || !matches!(req.method, Method::GET | Method::HEAD) {
        return false;
    }
    let date = |h: &http::HeaderMap, name| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
    };
    // Every hit comes here, most without If-Modified-Since: it is looked for first, and
    // the rest (and the stored Date) only for a request that has it.
    let Some(since) = date(&req.headers, IF_MODIFIED_SINCE) else {
        return false;
    };
    // If-None-Match, when present, decides alone (RFC 9110 §13.1.3).
    if req.headers.contains_key(IF_NONE_MATCH) || resp.headers.contains_key(LAST_MODIFIED) {
        return false;
    }
    date(&resp.headers, DATE).is_some_and(|date| since >= date)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn resp(headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    const DATE_V: &str = "Thu, 18 Aug 2050 02:01:18 GMT";
    const BEFORE: &str = "Wed, 17 Aug 2050 02:01:18 GMT";

    #[test]
    fn if_modified_since_uses_date_without_last_modified() {
        let stored = resp(&[("date", DATE_V)]);
        assert!(not_modified(
            &req(&[("if-modified-since", DATE_V)]),
            &stored
        ));
        assert!(!not_modified(
            &req(&[("if-modified-since", BEFORE)]),
            &stored
        ));
        assert!(!not_modified(
            &req(&[("if-modified-since", DATE_V), ("if-none-match", "\"x\"")]),
            &stored
        ));
        // With Last-Modified, that decides (Pingora's rule).
        let lm = resp(&[
            ("date", DATE_V),
            ("last-modified", "Mon, 01 Aug 2050 02:01:18 GMT"),
        ]);
        assert!(not_modified(&req(&[("if-modified-since", BEFORE)]), &lm));
        assert!(!not_modified(
            &req(&[("if-modified-since", "Sun, 31 Jul 2050 02:01:18 GMT")]),
            &lm
        ));
    }
}
