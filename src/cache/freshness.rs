//! Freshness and age of a response, read as RFC 9111 §4.2 says.
//!
//! This module turns response headers into numbers: how long a response is fresh for
//! (§4.2.1; without explicit freshness, the configured default TTL, or when that is 0 the
//! heuristic of §4.2.2) and how old it already is on arrival (§4.2.3). Malformed input errs towards
//! staleness: an invalid, negative or conflicting `max-age`/`s-maxage`, an invalid `Expires`
//! or several `Expires` lines make the response stale on arrival (stored, but revalidated
//! before use). Pingora's own Cache-Control parser keeps only the last of duplicate
//! directives and reads an invalid value as "absent", so delta-seconds are read here.

use std::time::{Duration, SystemTime};

use http::header::{AGE, CACHE_CONTROL, DATE, EXPIRES, LAST_MODIFIED};
use http::{HeaderMap, StatusCode};

use super::directives::ResponseDirectives;

/// Delta-seconds beyond this are read as this (RFC 9111 §1.2.2).
pub const DELTA_SECONDS_MAX: u32 = 2_147_483_648;

/// A delta-seconds directive (`max-age=60`) as found in a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delta {
    Absent,
    /// Present without a value (`max-stale`).
    Bare,
    Valid(u32),
    /// Malformed, negative, or present several times with different values.
    Invalid,
}

impl Delta {
    pub fn is_present(self) -> bool {
        self != Delta::Absent
    }
}

/// The directives of every line of a field (`Cache-Control`), read once: each name once (in
/// its first spelling), with what its values say. A response's directives are asked for a
/// dozen times on the way into the cache; reading the field for each would split and trim it
/// a dozen times.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directives<'h>(Vec<(&'h str, Delta)>);

impl<'h> Directives<'h> {
    pub fn read(headers: &'h HeaderMap, header: &http::HeaderName) -> Self {
        let mut found: Vec<(&str, Delta)> = Vec::new();
        for line in headers.get_all(header) {
            let Ok(line) = line.to_str() else { continue };
            for directive in split_directives(line) {
                let (key, value) = match directive.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(v.trim())),
                    None => (directive.trim(), None),
                };
                let this = match value {
                    None => Delta::Bare,
                    Some(v) => parse_delta(v.trim_matches('"')),
                };
                match found.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
                    // Repeated with another value (or without one): conflicting.
                    Some((_, prev)) if *prev != this => *prev = Delta::Invalid,
                    Some(_) => {}
                    None => found.push((key, this)),
                }
            }
        }
        Directives(found)
    }

    /// Directive `name` (any case).
    pub fn delta(&self, name: &str) -> Delta {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map_or(Delta::Absent, |(_, d)| *d)
    }

    /// Whether a valueless or valued directive is present (`no-cache`, `must-revalidate`).
    pub fn has(&self, name: &str) -> bool {
        self.delta(name).is_present()
    }
}

/// Whether `Cache-Control` has a valueless or valued directive (`no-store`, ...).
pub fn has(headers: &HeaderMap, name: &str) -> bool {
    Directives::read(headers, &CACHE_CONTROL).has(name)
}

fn parse_delta(v: &str) -> Delta {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Delta::Invalid;
    }
    match v.parse::<u64>() {
        Ok(n) => Delta::Valid(n.min(DELTA_SECONDS_MAX as u64) as u32),
        // Only digits, so the only failure is overflow.
        Err(_) => Delta::Valid(DELTA_SECONDS_MAX),
    }
}

/// Splits a list on commas outside quoted strings.
fn split_directives(line: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in line.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&line[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

/// Where a freshness lifetime came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `s-maxage`, `max-age`, `Expires` or `no-cache` (lifetime zero).
    Explicit,
    /// A fraction of the time since `Last-Modified` (§4.2.2).
    Heuristic,
    /// The configured default TTL.
    Default,
}

/// How to give freshness to responses that carry none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreshnessRules {
    pub default_ttl: Duration,
    /// Fraction of `Date - Last-Modified`; zero turns heuristic freshness off.
    pub heuristic_fraction: f64,
    pub heuristic_max: Duration,
}

/// Status codes whose responses may be given heuristic or default freshness: exactly the
/// heuristically cacheable ones of RFC 9110 §15.1. (A 206 is never stored whole: see
/// `policy`.)
pub fn cacheable_by_default(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// An HTTP-date in any of its three forms (IMF-fixdate, obsolete RFC 850, asctime; RFC 9110
/// §5.6.7), with any letter case in weekday, month and `GMT`: recipients are asked to be
/// lenient, and origins do send `THU` or `gmt`.
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    // Most dates arrive in the canonical spelling, which httpdate reads as is; the rewrite
    // below (a tenfold cost) is for the rest.
    if let Ok(time) = httpdate::parse_http_date(value) {
        return Some(time);
    }
    if !value.is_ascii() {
        return None;
    }
    // httpdate reads the canonical spelling: `Thu`, `Thursday`, `Aug`, `GMT`.
    let mut canonical = String::with_capacity(value.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.eq_ignore_ascii_case("gmt") {
            out.push_str("GMT");
        } else {
            for (i, c) in word.chars().enumerate() {
                out.push(if i == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                });
            }
        }
        word.clear();
    };
    for c in value.chars() {
        if c.is_ascii_alphabetic() {
            word.push(c);
        } else {
            flush(&mut word, &mut canonical);
            canonical.push(c);
        }
    }
    flush(&mut word, &mut canonical);
    httpdate::parse_http_date(&canonical).ok()
}

fn http_date(headers: &HeaderMap, name: &http::HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    parse_http_date(value.to_str().ok()?)
}

/// The freshness lifetime (§4.2.1), or `None` when the response has none and gets none.
/// `directives` are the ones that govern this cache (a targeted field or Cache-Control).
pub fn lifetime(
    headers: &HeaderMap,
    directives: &ResponseDirectives,
    status: StatusCode,
    now: SystemTime,
    rules: &FreshnessRules,
) -> Option<(Duration, Source)> {
    let explicit = |secs: u32| Some((Duration::from_secs(secs.into()), Source::Explicit));
    if directives.has("no-cache") {
        return explicit(0);
    }
    for name in ["s-maxage", "max-age"] {
        match directives.delta(name) {
            Delta::Valid(secs) => return explicit(secs),
            Delta::Invalid | Delta::Bare => return explicit(0),
            Delta::Absent => {}
        }
    }
    if directives.uses_expires() && headers.contains_key(EXPIRES) {
        // Several Expires lines or an invalid date: already expired (§5.3).
        let Some(expires) = http_date(headers, &EXPIRES) else {
            return explicit(0);
        };
        let date = http_date(headers, &DATE).unwrap_or(now);
        let secs = expires.duration_since(date).map_or(0, |d| d.as_secs());
        return explicit(secs.min(DELTA_SECONDS_MAX as u64) as u32);
    }
    // `public` lets a shared cache give heuristic freshness to any non-error status (§4.2.2).
    let public = directives.has("public") && status.as_u16() < 500;
    if !cacheable_by_default(status) && !public {
        return None;
    }
    // An operator's default TTL is their heuristic: it wins over the one from Last-Modified,
    // which would give a file saved a moment ago a lifetime of a fraction of a second and
    // a year-old one a day, neither of which the operator chose.
    if !rules.default_ttl.is_zero() {
        return Some((rules.default_ttl, Source::Default));
    }
    if rules.heuristic_fraction > 0.0 {
        if let Some(last_modified) = http_date(headers, &LAST_MODIFIED) {
            let date = http_date(headers, &DATE).unwrap_or(now);
            if let Ok(since) = date.duration_since(last_modified) {
                let heuristic = since
                    .mul_f64(rules.heuristic_fraction)
                    .min(rules.heuristic_max);
                return Some((Duration::from_secs(heuristic.as_secs()), Source::Heuristic));
            }
        }
    }
    None
}

/// The age of a response when it arrives (§4.2.3): the larger of the origin's `Age` and
/// the time elapsed since its `Date`. Of an `Age` that holds a list (`7200, 0`), or of
/// several `Age` lines, the first member counts.
pub fn initial_age(headers: &HeaderMap, now: SystemTime) -> Duration {
    let age_value = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| match parse_delta(v.trim()) {
            Delta::Valid(secs) => Some(Duration::from_secs(secs.into())),
            _ => None,
        })
        .unwrap_or_default();
    let apparent_age = http_date(headers, &DATE)
        .and_then(|date| now.duration_since(date).ok())
        .map(|d| Duration::from_secs(d.as_secs()))
        .unwrap_or_default();
    age_value.max(apparent_age)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: FreshnessRules = FreshnessRules {
        default_ttl: Duration::from_secs(300),
        heuristic_fraction: 0.1,
        heuristic_max: Duration::from_secs(86_400),
    };

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn life(
        h: &HeaderMap,
        status: StatusCode,
        now: SystemTime,
        rules: &FreshnessRules,
    ) -> Option<(Duration, Source)> {
        lifetime(
            h,
            &ResponseDirectives::CacheControl(Directives::read(h, &CACHE_CONTROL)),
            status,
            now,
            rules,
        )
    }

    fn secs(pairs: &[(&str, &str)]) -> Option<(u64, Source)> {
        life(&headers(pairs), StatusCode::OK, SystemTime::now(), &RULES)
            .map(|(d, s)| (d.as_secs(), s))
    }

    #[test]
    fn delta_seconds_parsing() {
        let cc = |v: &str| {
            Directives::read(&headers(&[("cache-control", v)]), &CACHE_CONTROL).delta("max-age")
        };
        assert_eq!(cc("max-age=60"), Delta::Valid(60));
        assert_eq!(cc("public, MAX-AGE=60"), Delta::Valid(60));
        assert_eq!(cc("max-age=\"60\""), Delta::Valid(60));
        assert_eq!(cc("max-age=-1"), Delta::Invalid);
        assert_eq!(cc("max-age=1.5"), Delta::Invalid);
        assert_eq!(cc("max-age=abc"), Delta::Invalid);
        assert_eq!(cc("max-age="), Delta::Invalid);
        assert_eq!(cc("max-age"), Delta::Bare);
        assert_eq!(
            cc("max-age=99999999999999999999"),
            Delta::Valid(DELTA_SECONDS_MAX)
        );
        assert_eq!(cc("max-age=60, max-age=60"), Delta::Valid(60));
        assert_eq!(cc("max-age=60, max-age=120"), Delta::Invalid);
        assert_eq!(cc("no-cache=\"a, max-age=5\""), Delta::Absent);
        assert_eq!(cc("s-maxage=5"), Delta::Absent);
    }

    #[test]
    fn duplicate_across_lines_conflict() {
        let h = headers(&[
            ("cache-control", "max-age=60"),
            ("cache-control", "max-age=10"),
        ]);
        let cc = Directives::read(&h, &CACHE_CONTROL);
        assert_eq!(cc.delta("max-age"), Delta::Invalid);
    }

    #[test]
    fn explicit_freshness_order() {
        assert_eq!(
            secs(&[("cache-control", "max-age=60, s-maxage=120")]),
            Some((120, Source::Explicit))
        );
        assert_eq!(
            secs(&[("cache-control", "max-age=60")]),
            Some((60, Source::Explicit))
        );
        assert_eq!(
            secs(&[("cache-control", "max-age=-5")]),
            Some((0, Source::Explicit))
        );
        assert_eq!(
            secs(&[("cache-control", "no-cache, max-age=60")]),
            Some((0, Source::Explicit))
        );
        let now = SystemTime::now();
        let date = httpdate::fmt_http_date(now - Duration::from_secs(100));
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(100));
        // Expires counts from Date, not from now.
        assert_eq!(
            secs(&[("date", &date), ("expires", &expires)]),
            Some((200, Source::Explicit))
        );
        assert_eq!(
            secs(&[("expires", "not a date")]),
            Some((0, Source::Explicit))
        );
        assert_eq!(secs(&[("expires", "0")]), Some((0, Source::Explicit)));
        assert_eq!(
            secs(&[("expires", &expires), ("expires", &expires)]),
            Some((0, Source::Explicit)),
            "several Expires lines"
        );
        assert_eq!(
            secs(&[("cache-control", "max-age=10"), ("expires", &expires)]),
            Some((10, Source::Explicit)),
            "max-age wins over Expires"
        );
    }

    #[test]
    fn heuristic_and_default() {
        let now = SystemTime::now();
        let date = httpdate::fmt_http_date(now);
        let lm = httpdate::fmt_http_date(now - Duration::from_secs(1000));
        assert_eq!(
            secs(&[("date", &date), ("last-modified", &lm)]),
            Some((300, Source::Default)),
            "the operator's default TTL wins over the heuristic"
        );
        let heuristic_only = FreshnessRules {
            default_ttl: Duration::ZERO,
            ..RULES
        };
        let life_with = |fields: &[(&str, &str)]| {
            life(&headers(fields), StatusCode::OK, now, &heuristic_only)
                .map(|(d, source)| (d.as_secs(), source))
        };
        assert_eq!(
            life_with(&[("date", &date), ("last-modified", &lm)]),
            Some((100, Source::Heuristic))
        );
        let old = httpdate::fmt_http_date(now - Duration::from_secs(100 * 86_400));
        assert_eq!(
            life_with(&[("date", &date), ("last-modified", &old)]),
            Some((86_400, Source::Heuristic)),
            "capped"
        );
        assert_eq!(life_with(&[]), None);
        assert_eq!(secs(&[]), Some((300, Source::Default)));
        let none = FreshnessRules {
            default_ttl: Duration::ZERO,
            heuristic_fraction: 0.0,
            ..RULES
        };
        assert_eq!(
            life(
                &headers(&[("last-modified", &lm)]),
                StatusCode::OK,
                now,
                &none
            ),
            None
        );
        assert_eq!(life(&headers(&[]), StatusCode::FOUND, now, &RULES), None);
        assert_eq!(
            life(
                &headers(&[]),
                StatusCode::INTERNAL_SERVER_ERROR,
                now,
                &RULES
            ),
            None
        );
    }

    #[test]
    fn http_dates_in_every_form_and_case() {
        let t = httpdate::parse_http_date("Thu, 18 Aug 2050 02:01:18 GMT").unwrap();
        for v in [
            "Thu, 18 Aug 2050 02:01:18 GMT",
            "THU, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 AUG 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 gMT",
            " thu, 18 aug 2050 02:01:18 gmt ",
            "Thursday, 18-Aug-50 02:01:18 GMT",
            "THURSDAY, 18-aug-50 02:01:18 Gmt",
            "Thu Aug 18 02:01:18 2050",
            "thu AUG 18 02:01:18 2050",
        ] {
            assert_eq!(parse_http_date(v), Some(t), "{v:?}");
        }
        for v in [
            "0",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Fri, 18 Aug 2050 02:01:18 GMT",
            "é",
        ] {
            assert_eq!(parse_http_date(v), None, "{v:?}");
        }
    }

    #[test]
    fn age_list_uses_its_first_member() {
        let now = SystemTime::now();
        let age = |v: &str| initial_age(&headers(&[("age", v)]), now).as_secs();
        assert_eq!(age("7200, 0"), 7200);
        assert_eq!(age("0, 7200"), 0);
        assert_eq!(age("7200,0"), 7200);
        let two_lines = headers(&[("age", "0"), ("age", "7200")]);
        assert_eq!(initial_age(&two_lines, now).as_secs(), 0);
    }

    #[test]
    fn initial_age_is_the_larger_of_age_and_apparent_age() {
        let now = SystemTime::now();
        assert_eq!(
            initial_age(&headers(&[("age", "30")]), now),
            Duration::from_secs(30)
        );
        let date = httpdate::fmt_http_date(now - Duration::from_secs(50));
        assert_eq!(
            initial_age(&headers(&[("age", "30"), ("date", &date)]), now).as_secs(),
            50
        );
        assert_eq!(initial_age(&headers(&[("age", "-3")]), now), Duration::ZERO);
        assert_eq!(initial_age(&headers(&[]), now), Duration::ZERO);
        let future = httpdate::fmt_http_date(now + Duration::from_secs(50));
        assert_eq!(
            initial_age(&headers(&[("date", &future)]), now),
            Duration::ZERO
        );
    }
}
