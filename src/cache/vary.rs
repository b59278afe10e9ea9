//! `Vary`: a stored response is used only for requests that match the request headers it was
//! selected by (RFC 9111 §4.1). The variance is a hash of the named request headers' values;
//! Pingora stores each variant under the primary key plus that hash.
//!
//! Header names are compared case-insensitively and values with surrounding whitespace
//! trimmed; several lines of one header are joined with `, ` as if they were one line.
//! `Vary: *` never matches, so such responses are not stored (see `policy`).

use http::header::VARY;
use pingora_cache::key::HashBinary;
use pingora_cache::VarianceBuilder;
use pingora_http::{RequestHeader, ResponseHeader};

/// Whether a response's `Vary` contains `*`.
pub fn varies_on_everything(resp: &ResponseHeader) -> bool {
    vary_names(resp).any(|n| n == "*")
}

/// The variance of `req` against a stored response's `Vary`, or `None` when it has none.
pub fn variance(resp: &ResponseHeader, req: &RequestHeader) -> Option<HashBinary> {
    let mut builder = VarianceBuilder::new();
    for name in vary_names(resp) {
        let mut value = Vec::new();
        for (i, v) in req.headers.get_all(name.as_str()).iter().enumerate() {
            if i > 0 {
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(v.as_bytes().trim_ascii());
        }
        builder.add_owned_name_value(name, value);
    }
    builder.finalize()
}

fn vary_names(resp: &ResponseHeader) -> impl Iterator<Item = String> + '_ {
    resp.headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(vary: &[&str]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for v in vary {
            r.append_header("vary", *v).unwrap();
        }
        r
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn no_vary_no_variance() {
        assert!(variance(&resp(&[]), &req(&[("accept", "x")])).is_none());
    }

    #[test]
    fn variance_follows_the_named_headers_only() {
        let r = resp(&["Accept-Language"]);
        let en = variance(&r, &req(&[("accept-language", "en")]));
        assert!(en.is_some());
        assert_eq!(
            en,
            variance(&r, &req(&[("Accept-Language", " en "), ("accept", "x")]))
        );
        assert_ne!(en, variance(&r, &req(&[("accept-language", "fr")])));
        assert_ne!(en, variance(&r, &req(&[])));
    }

    #[test]
    fn several_vary_lines_and_names() {
        let a = variance(
            &resp(&["Accept-Encoding, Accept-Language"]),
            &req(&[("accept-encoding", "gzip")]),
        );
        let b = variance(
            &resp(&["accept-encoding", "accept-language"]),
            &req(&[("accept-encoding", "gzip")]),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn star() {
        assert!(varies_on_everything(&resp(&["Accept, *"])));
        assert!(!varies_on_everything(&resp(&["Accept"])));
    }
}
