//! `Vary`: a stored response is used only for requests that match the request headers it was
//! selected by (RFC 9111 §4.1). The variance is a hash of the named request headers' values;
//! Pingora stores each variant under the primary key plus that hash.
//!
//! Values are normalised first (§4.1 allows it where the header's semantics do): several
//! lines of one header are one list, and whitespace around list members does not count, so
//! `1,2`, ` 1, 2 ` and two lines `1` and `2` select the same variant. `Accept-Language` is
//! read as the language preferences it is (order, case and whitespace do not count), and a
//! stored response whose `Content-Language` is one of the request's most preferred
//! languages (by q-value) is selected for it: the variance then names that language. The
//! function is the same at store time (against the new response) and at lookup time
//! (against the stored primary variant), so both sides agree. `Vary: *` never matches, so
//! such responses are not stored (see `policy`).

use http::header::{ACCEPT_LANGUAGE, CONTENT_LANGUAGE, VARY};
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
        let value = if name == ACCEPT_LANGUAGE.as_str() {
            language_value(resp, req)
        } else {
            list_value(req, &name)
        };
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

/// Every line of header `name`, as one list without whitespace around its members.
fn list_value(req: &RequestHeader, name: &str) -> Vec<u8> {
    let mut value = Vec::new();
    let members = req
        .headers
        .get_all(name)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|m| !m.is_empty());
    for (i, member) in members.enumerate() {
        if i > 0 {
            value.push(b',');
        }
        value.extend_from_slice(member);
    }
    value
}

/// A language range and its q-value in thousandths.
type Preference = (String, u16);

/// The request's `Accept-Language`, lower-case, or `None` when it does not parse.
fn preferences(req: &RequestHeader) -> Option<Vec<Preference>> {
    let mut prefs = Vec::new();
    for line in req.headers.get_all(ACCEPT_LANGUAGE) {
        for member in line.to_str().ok()?.split(',') {
            let mut parts = member.split(';').map(str::trim);
            let range = parts.next()?.to_ascii_lowercase();
            if range.is_empty() {
                continue;
            }
            if !range
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
            {
                return None;
            }
            let mut q = 1000;
            for param in parts {
                let (key, value) = param.split_once('=')?;
                if key.trim().eq_ignore_ascii_case("q") {
                    q = qvalue(value.trim())?;
                }
            }
            prefs.push((range, q));
        }
    }
    Some(prefs)
}

/// A qvalue (`0`, `0.5`, `1.000`) in thousandths (RFC 9110 §12.4.2).
fn qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(frac),
        "1" if frac == 0 => Some(1000),
        _ => None,
    }
}

/// Whether language range `range` matches language tag `tag` (RFC 4647 basic filtering).
fn matches(range: &str, tag: &str) -> bool {
    tag == range || (tag.starts_with(range) && tag.as_bytes().get(range.len()) == Some(&b'-'))
}

fn language_value(resp: &ResponseHeader, req: &RequestHeader) -> Vec<u8> {
    let Some(mut prefs) = preferences(req) else {
        return list_value(req, ACCEPT_LANGUAGE.as_str());
    };
    // The response's one language, when it names exactly one.
    let language = resp
        .headers
        .get(CONTENT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty() && !v.contains(','));
    let best = prefs
        .iter()
        .filter(|(range, q)| *q > 0 && range != "*")
        .map(|(_, q)| *q)
        .max();
    if let (Some(language), Some(best)) = (language, best) {
        let mut top: Vec<&str> = prefs
            .iter()
            .filter(|(range, q)| *q == best && range != "*")
            .map(|(range, _)| range.as_str())
            .collect();
        if top.iter().any(|range| matches(range, &language)) {
            return format!("={language}").into_bytes();
        }
        // The variant the origin would choose for this request is not known here: name
        // its first choice, as the origin's answer to such a request was stored.
        top.sort_unstable();
        return format!("={}", top[0]).into_bytes();
    }
    // Without Content-Language: the whole preference list, in a canonical order.
    prefs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    prefs.dedup();
    let parts: Vec<String> = prefs
        .iter()
        .map(|(range, q)| format!("{range};q={q}"))
        .collect();
    parts.join(",").into_bytes()
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
    fn whitespace_and_lines_are_normalised() {
        let r = resp(&["Foo"]);
        let v = |h: &[(&str, &str)]| variance(&r, &req(h));
        assert_eq!(v(&[("foo", "1,2")]), v(&[("foo", " 1, 2 ")]));
        assert_eq!(v(&[("foo", "1, 2")]), v(&[("foo", "1"), ("foo", "2")]));
        assert_ne!(v(&[("foo", "1,2")]), v(&[("foo", "2,1")]));
    }

    #[test]
    fn accept_language_ignores_order_case_and_whitespace() {
        let r = resp(&["Accept-Language"]);
        let v = |al: &str| variance(&r, &req(&[("accept-language", al)]));
        assert_eq!(v("en, de"), v("de, en"));
        assert_eq!(v("en, de"), v("eN, De"));
        assert_eq!(v("en, de"), v(" en ,   de"));
        assert_eq!(v("en;q=0.5, de"), v("de;q=1.0, EN;q=0.500"));
        assert_ne!(v("en, de"), v("en, fr"));
        assert_ne!(v("en;q=0.5, de"), v("en, de;q=0.5"));
    }

    #[test]
    fn content_language_selects_by_q_value() {
        let mut stored = resp(&["Accept-Language"]);
        stored.append_header("content-language", "de").unwrap();
        let v = |al: &str| variance(&stored, &req(&[("accept-language", al)]));
        // Stored for "en, de" (de is among the top choices), selected for any request
        // whose top choice is de.
        assert_eq!(v("en, de"), v("fr;q=0.5, de;q=1.0"));
        assert_eq!(v("en, de"), v("de-DE;q=0.9, de"));
        assert_ne!(v("en, de"), v("en"));
        // A request whose top choice the stored language is not: keyed by its top choice,
        // as the origin's answer to it was stored.
        let mut en = resp(&["Accept-Language"]);
        en.append_header("content-language", "en").unwrap();
        assert_eq!(
            v("en;q=1, de;q=0.5"),
            variance(&en, &req(&[("accept-language", "en")]))
        );
    }

    #[test]
    fn star() {
        assert!(varies_on_everything(&resp(&["Accept, *"])));
        assert!(!varies_on_everything(&resp(&["Accept"])));
    }
}
