//! The cache key: scheme, host, path and query of the request, never the method.
//!
//! Leaving the method out lets HEAD be answered from a stored GET and lets PURGE and the admin
//! purge address the same entry as the GET that filled it. The host is lower-cased and a
//! default port dropped, so `Example.com:80` and `example.com` share entries; the path and
//! query are kept byte for byte (`/a?x=1&y=2` and `/a?y=2&x=1` are different entries, as the
//! origin may treat them differently).

use http::Uri;
use pingora_cache::key::HashBinary;
use pingora_cache::CacheKey;
use pingora_http::RequestHeader;

/// Builds the cache key for a request received on a plain (`tls == false`) or TLS listener.
pub fn for_request(req: &RequestHeader, tls: bool) -> CacheKey {
    let path_and_query = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    for_parts(tls, request_host(req), path_and_query)
}

/// The host a request is for: its `Host` header, else the authority of an absolute URI.
pub fn request_host(req: &RequestHeader) -> &str {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// Builds the cache key from its parts.
///
/// The primary hash is computed here, once: Pingora asks a key for it several times per
/// request (cache lock, lookup, storage) and would otherwise hash the key text every time.
pub fn for_parts(tls: bool, host: &str, path_and_query: &str) -> CacheKey {
    for_parts_ignoring(tls, host, path_and_query, &[])
}

/// [`for_parts`] without the query parameters named in `ignore` (a route's
/// `key_ignore_query`: tracking parameters that do not change the response).
pub fn for_parts_ignoring(
    tls: bool,
    host: &str,
    path_and_query: &str,
    ignore: &[String],
) -> CacheKey {
    let kept;
    let path_and_query = match path_and_query.split_once('?') {
        Some((path, query)) if !ignore.is_empty() => {
            let params: Vec<&str> = query
                .split('&')
                .filter(|p| {
                    let name = p.split_once('=').map_or(*p, |(n, _)| n);
                    !p.is_empty() && !ignore.iter().any(|i| i == name)
                })
                .collect();
            kept = if params.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", params.join("&"))
            };
            kept.as_str()
        }
        _ => path_and_query,
    };
    let primary = primary(tls, host, path_and_query);
    let hash = hash(&primary);
    let mut key = CacheKey::new(primary, "");
    key.set_primary_bin_override(hash);
    key
}

/// Whether two host[:port] values name the same host once normalised as in the key.
pub fn same_host(a: &str, b: &str, tls: bool) -> bool {
    let default_port = if tls { ":443" } else { ":80" };
    let norm = |h: &str| {
        h.strip_suffix(default_port)
            .unwrap_or(h)
            .to_ascii_lowercase()
    };
    norm(a) == norm(b)
}

/// Builds the cache key for an absolute URL, as given to the purge endpoints.
pub fn for_url(url: &str) -> Result<CacheKey, &'static str> {
    let (tls, host, path_and_query) = url_parts(url)?;
    Ok(for_parts(tls, &host, &path_and_query))
}

/// Scheme (`true`: https), host and path?query of an absolute URL.
pub fn url_parts(url: &str) -> Result<(bool, String, String), &'static str> {
    let uri: Uri = url.parse().map_err(|_| "not a valid URL")?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err("the URL must start with http:// or https://"),
    };
    let host = uri.authority().ok_or("the URL has no host")?.as_str();
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    Ok((tls, host.to_owned(), path_and_query.to_owned()))
}

/// The key's 128-bit hash, by which storage, the cache lock, the Redis tier and the cache
/// handed over on reload find an entry (the key text is not kept).
///
/// A cryptographic hash, so that no client can make two URLs share an entry; BLAKE3 rather
/// than Pingora's `hash_key` (BLAKE2b-128): BLAKE2b compresses a 128-byte block in 12 rounds
/// of 64-bit words and finishes with a second compression for a short key, BLAKE3 a 64-byte
/// block in 7 rounds with SIMD. Changing it changes every key: entries handed over by a
/// build hashing otherwise are refused (`lifecycle::handover::STREAM_VERSION`).
fn hash(primary: &str) -> HashBinary {
    let digest = blake3::hash(primary.as_bytes());
    let mut out = HashBinary::default();
    let n = out.len();
    out.copy_from_slice(&digest.as_bytes()[..n]);
    out
}

/// The primary key text: `scheme \n host \n path?query`. A newline cannot occur in a valid
/// host or request target, so the framing is unambiguous.
fn primary(tls: bool, host: &str, path_and_query: &str) -> String {
    let scheme = if tls { "https" } else { "http" };
    let default_port = if tls { ":443" } else { ":80" };
    let host = host.strip_suffix(default_port).unwrap_or(host);
    let path_and_query = if path_and_query.is_empty() {
        "/"
    } else {
        path_and_query
    };
    let mut key = String::with_capacity(scheme.len() + host.len() + path_and_query.len() + 2);
    key.push_str(scheme);
    key.push('\n');
    key.push_str(host);
    // In place over the bytes: mapping `chars` would encode every character back.
    key[scheme.len() + 1..].make_ascii_lowercase();
    key.push('\n');
    key.push_str(path_and_query);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_query_parameters_leave_the_key() {
        let ignore = ["utm_source".to_string(), "fbclid".to_string()];
        let k = |pq| {
            for_parts_ignoring(false, "h", pq, &ignore)
                .primary_key_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(k("/p?utm_source=x&a=1&fbclid=2"), k("/p?a=1"));
        assert_eq!(k("/p?utm_source=x"), k("/p"));
        assert_ne!(k("/p?a=1"), k("/p?a=2"));
        assert_eq!(
            k("/p?a=1"),
            for_parts(false, "h", "/p?a=1").primary_key_str().unwrap()
        );
    }
    use pingora_cache::key::CacheHashKey;

    fn req(method: &str, target: &str, host: &str) -> RequestHeader {
        let mut r = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        r.insert_header("host", host).unwrap();
        r
    }

    fn hash(r: &RequestHeader) -> String {
        for_request(r, false).combined()
    }

    /// The hash is pinned: entries handed over on an upgrade and entries in a shared Redis
    /// are found by it, so a change must come with a new handover `STREAM_VERSION`.
    #[test]
    fn the_hash_is_blake3_of_the_key_text() {
        let key = for_parts(false, "example.com", "/a?b");
        assert_eq!(key.primary_key_str(), Some("http\nexample.com\n/a?b"));
        assert_eq!(key.combined(), "a3c0f5437c88220b1e8ef8f1155e8f99");
        let digest = blake3::hash(b"http\nexample.com\n/a?b").to_hex();
        assert_eq!(key.combined(), digest[..32]);
    }

    #[test]
    fn method_is_not_part_of_the_key() {
        assert_eq!(
            hash(&req("GET", "/a?x=1", "example.com")),
            hash(&req("HEAD", "/a?x=1", "example.com"))
        );
        assert_eq!(
            hash(&req("GET", "/a", "example.com")),
            hash(&req("PURGE", "/a", "example.com"))
        );
    }

    #[test]
    fn query_and_host_are_part_of_the_key() {
        let base = hash(&req("GET", "/a?x=1", "example.com"));
        assert_ne!(base, hash(&req("GET", "/a?x=2", "example.com")));
        assert_ne!(base, hash(&req("GET", "/a", "example.com")));
        assert_ne!(base, hash(&req("GET", "/a?x=1", "other.example")));
        assert_ne!(base, hash(&req("GET", "/a?x=1", "example.com:8080")));
    }

    #[test]
    fn host_is_normalised() {
        let base = hash(&req("GET", "/", "example.com"));
        assert_eq!(base, hash(&req("GET", "/", "EXAMPLE.com")));
        assert_eq!(base, hash(&req("GET", "/", "example.com:80")));
    }

    #[test]
    fn scheme_is_part_of_the_key() {
        let r = req("GET", "/", "example.com");
        assert_ne!(
            for_request(&r, false).combined(),
            for_request(&r, true).combined()
        );
    }

    #[test]
    fn url_key_matches_request_key() {
        let r = req("GET", "/p?q=1", "example.com:8080");
        assert_eq!(
            for_url("http://example.com:8080/p?q=1").unwrap().combined(),
            for_request(&r, false).combined()
        );
        let r = req("GET", "/", "example.com");
        assert_eq!(
            for_url("http://Example.com").unwrap().combined(),
            for_request(&r, false).combined()
        );
        assert!(for_url("/relative").is_err());
        assert!(for_url("ftp://example.com/").is_err());
    }
}
