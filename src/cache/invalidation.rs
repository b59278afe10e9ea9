//! Invalidation by unsafe requests (RFC 9111 §4.4): a successful POST, PUT, PATCH or DELETE
//! (any method that is not safe) invalidates what is stored for its target URI and for the
//! URIs in its response's `Location` and `Content-Location`, when those are on the same
//! host (so one site cannot purge another's entries).

use http::header::{CONTENT_LOCATION, LOCATION};
use http::{Method, Uri};
use pingora_cache::CacheKey;
use pingora_http::{RequestHeader, ResponseHeader};

use super::key;

/// Whether a method is safe (RFC 9110 §9.2.1): safe requests never invalidate.
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The keys to invalidate after `resp` answered `req`; empty when nothing is invalidated.
/// `key_for(host, path_and_query)` builds a key as the cache does (with the request's scheme;
/// routes may leave query parameters out); `tls`: the request came over TLS, so the default
/// port of its host is 443.
pub fn targets(
    req: &RequestHeader,
    resp: &ResponseHeader,
    tls: bool,
    key_for: impl Fn(&str, &str) -> CacheKey,
) -> Vec<CacheKey> {
    let status = resp.status.as_u16();
    if is_safe(&req.method) || !(200..400).contains(&status) {
        return Vec::new();
    }
    let host = key::request_host(req);
    let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut keys = vec![key_for(host, target)];
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(location) = resp.headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Ok(uri) = location.trim().parse::<Uri>() else {
            continue;
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        match uri.authority() {
            // Absolute: only on the same host.
            Some(authority) if key::same_host(authority.as_str(), host, tls) => {
                keys.push(key_for(host, path))
            }
            Some(_) => {}
            None if location.starts_with('/') => keys.push(key_for(host, path)),
            // Relative references other than absolute paths are left alone.
            None => {}
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::key::CacheHashKey;

    fn req(method: &str, path: &str) -> RequestHeader {
        let mut r = RequestHeader::build(method, path.as_bytes(), None).unwrap();
        r.insert_header("host", "example.com").unwrap();
        r
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn hashes(keys: Vec<CacheKey>) -> Vec<String> {
        keys.iter().map(|k| k.combined()).collect()
    }

    fn plain(host: &str, path_and_query: &str) -> CacheKey {
        key::for_parts(false, host, path_and_query)
    }

    fn get(path: &str) -> String {
        key::for_request(&req("GET", path), false).combined()
    }

    #[test]
    fn safe_methods_and_failures_invalidate_nothing() {
        assert!(targets(&req("GET", "/a"), &resp(200, &[]), false, plain).is_empty());
        assert!(targets(&req("HEAD", "/a"), &resp(200, &[]), false, plain).is_empty());
        assert!(targets(&req("POST", "/a"), &resp(500, &[]), false, plain).is_empty());
        assert!(targets(&req("POST", "/a"), &resp(404, &[]), false, plain).is_empty());
    }

    #[test]
    fn unsafe_success_invalidates_target_and_same_host_locations() {
        let keys = hashes(targets(
            &req("POST", "/a?x=1"),
            &resp(
                201,
                &[
                    ("location", "/b"),
                    ("content-location", "http://example.com/c?y"),
                ],
            ),
            false,
            plain,
        ));
        assert_eq!(keys, [get("/a?x=1"), get("/b"), get("/c?y")]);
        let keys = hashes(targets(
            &req("DELETE", "/a"),
            &resp(204, &[("location", "http://other.example/b")]),
            false,
            plain,
        ));
        assert_eq!(keys, [get("/a")], "other hosts are left alone");
        let keys = hashes(targets(&req("PUT", "/a"), &resp(303, &[]), false, plain));
        assert_eq!(keys, [get("/a")]);
    }

    #[test]
    fn over_tls_the_default_port_is_443() {
        let tls_key = |host: &str, pq: &str| key::for_parts(true, host, pq);
        let https_get = |path: &str| key::for_request(&req("GET", path), true).combined();
        let resp = resp(201, &[("content-location", "https://example.com:443/c")]);
        let keys = hashes(targets(&req("POST", "/a"), &resp, true, tls_key));
        assert_eq!(keys, [https_get("/a"), https_get("/c")]);
        let keys = hashes(targets(&req("POST", "/a"), &resp, false, plain));
        assert_eq!(keys, [get("/a")], "port 443 is another host for http");
    }
}
