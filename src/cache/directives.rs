//! Which cache directives govern this cache for one response: a targeted field (RFC 9213),
//! or else `Cache-Control` with `Expires`.
//!
//! A targeted field such as `CDN-Cache-Control` carries Cache-Control directives for one
//! class of caches. This cache reads the fields of its target list
//! (`cache.targeted_cache_control`) in order; the first one present with a valid, non-empty
//! value governs it, and `Cache-Control` and `Expires` are then ignored by this cache (they
//! still reach the client unchanged). Targeted fields are Structured Field Dictionaries
//! (RFC 8941), parsed with `sfv`: a value that does not parse, or whose known directives have
//! the wrong type (`max-age="60"`, `max-age=1.5`, a negative age), is ignored as a whole,
//! as if the field were absent.
//!
//! Everything that reads response directives (`policy`, `freshness`) goes through
//! [`ResponseDirectives`], so no rule can read `Cache-Control` when a targeted field governs.

use http::header::CACHE_CONTROL;
use http::{HeaderMap, HeaderName};
use sfv::{BareItem, ListEntry, Parser};

use super::freshness::{Delta, Directives, DELTA_SECONDS_MAX};

/// The standard targeted field, aimed at every CDN in a chain (RFC 9213 §3).
pub const CDN_CACHE_CONTROL: &str = "cdn-cache-control";

/// Directives whose value is delta-seconds: in a targeted field, an sf-integer.
const DELTA_DIRECTIVES: [&str; 4] = [
    "max-age",
    "s-maxage",
    "stale-while-revalidate",
    "stale-if-error",
];

/// The targeted fields this cache obeys, first match wins (`cache.targeted_cache_control`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetList(Vec<HeaderName>);

impl TargetList {
    pub fn new(fields: Vec<HeaderName>) -> Self {
        TargetList(fields)
    }

    /// `[CDN-Cache-Control]`.
    pub fn standard() -> Self {
        TargetList(vec![HeaderName::from_static(CDN_CACHE_CONTROL)])
    }

    pub fn fields(&self) -> &[HeaderName] {
        &self.0
    }

    /// The fields meant for this cache alone, removed before a response leaves it.
    /// `CDN-Cache-Control` is meant for every CDN in a chain, so it is passed on (a CDN in
    /// front of this one obeys it too); a field of the operator's own (say
    /// `Edge-Cache-Control`) is this edge's private instruction and stays here.
    pub fn private_fields(&self) -> impl Iterator<Item = &HeaderName> {
        self.0.iter().filter(|f| f.as_str() != CDN_CACHE_CONTROL)
    }
}

/// The directives that govern this cache for one response.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseDirectives<'a> {
    /// A targeted field: its directives, names lower-case, with their delta-seconds.
    Targeted(Vec<(String, Option<u32>)>),
    /// No targeted field applies: `Cache-Control` (and `Expires`), read once.
    CacheControl(Directives<'a>),
}

impl<'a> ResponseDirectives<'a> {
    /// Reads the directives of a response whose header fields are `headers`.
    pub fn read(headers: &'a HeaderMap, targets: &TargetList) -> Self {
        for field in targets.fields() {
            if let Some(directives) = parse_targeted(headers, field) {
                return ResponseDirectives::Targeted(directives);
            }
        }
        ResponseDirectives::CacheControl(Directives::read(headers, &CACHE_CONTROL))
    }

    /// Whether a directive is present (`no-store`, `must-revalidate`, `max-age`, ...).
    pub fn has(&self, name: &str) -> bool {
        self.delta(name).is_present()
    }

    /// A delta-seconds directive (`max-age`), or whether a valueless one is present.
    pub fn delta(&self, name: &str) -> Delta {
        match self {
            ResponseDirectives::CacheControl(directives) => directives.delta(name),
            ResponseDirectives::Targeted(directives) => directives
                .iter()
                .find(|(n, _)| n == name)
                .map_or(Delta::Absent, |(_, secs)| match secs {
                    Some(secs) => Delta::Valid(*secs),
                    None => Delta::Bare,
                }),
        }
    }

    /// Whether `Expires` counts: not when a targeted field governs (RFC 9213 §2.2).
    pub fn uses_expires(&self) -> bool {
        matches!(self, ResponseDirectives::CacheControl(_))
    }
}

/// The directives of targeted field `field`, or `None` when it is absent, empty or invalid.
fn parse_targeted(headers: &HeaderMap, field: &HeaderName) -> Option<Vec<(String, Option<u32>)>> {
    let mut lines = headers.get_all(field).iter().peekable();
    lines.peek()?;
    // Several lines of a Dictionary field are one list (RFC 8941 §4.2).
    let mut value = Vec::new();
    for (i, line) in lines.enumerate() {
        if i > 0 {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(line.as_bytes());
    }
    let dictionary: sfv::Dictionary = Parser::new(&value).parse().ok()?;
    let mut directives = Vec::with_capacity(dictionary.len());
    for (key, entry) in &dictionary {
        let name = key.as_str();
        let bare = match entry {
            ListEntry::Item(item) => Some(&item.bare_item),
            ListEntry::InnerList(_) => None,
        };
        if DELTA_DIRECTIVES.contains(&name) {
            let secs = bare.and_then(BareItem::as_integer).map(i64::from)?;
            let secs = u32::try_from(secs.min(DELTA_SECONDS_MAX.into())).ok()?;
            directives.push((name.to_owned(), Some(secs)));
        } else if bare.and_then(BareItem::as_boolean) != Some(false) {
            // `no-cache="..."`, `private="..."` and extensions: present, whatever their value.
            directives.push((name.to_owned(), None));
        }
    }
    (!directives.is_empty()).then_some(directives)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn targeted(value: &str) -> Option<Vec<(String, Option<u32>)>> {
        let h = headers(&[("cdn-cache-control", value)]);
        match ResponseDirectives::read(&h, &TargetList::standard()) {
            ResponseDirectives::Targeted(d) => Some(d),
            ResponseDirectives::CacheControl(_) => None,
        }
    }

    #[test]
    fn valid_dictionaries_govern() {
        assert_eq!(
            targeted("max-age=60, must-revalidate"),
            Some(vec![
                ("max-age".into(), Some(60)),
                ("must-revalidate".into(), None)
            ])
        );
        assert_eq!(
            targeted("foobar, max-age=99999999999"),
            Some(vec![
                ("foobar".into(), None),
                ("max-age".into(), Some(DELTA_SECONDS_MAX))
            ])
        );
        assert_eq!(
            targeted("no-cache=\"set-cookie\""),
            Some(vec![("no-cache".into(), None)])
        );
        assert_eq!(
            targeted("max-age=5;x=1"),
            Some(vec![("max-age".into(), Some(5))])
        );
    }

    #[test]
    fn invalid_values_are_ignored_as_a_whole() {
        for value in [
            "max-age=\"60\"",
            "max-age=1.5",
            "max-age=-1",
            "max-age=10000, &&&&&",
            "max-age =100",
            "max-age= 100",
            "MaX-aGe=60",
            "max-age=(1 2)",
            "",
            "no-store=?0",
        ] {
            assert_eq!(targeted(value), None, "{value:?}");
        }
    }

    #[test]
    fn first_valid_target_wins_and_cache_control_is_the_fallback() {
        let targets = TargetList::new(vec![
            HeaderName::from_static("edge-cache-control"),
            HeaderName::from_static("cdn-cache-control"),
        ]);
        let h = headers(&[
            ("cache-control", "max-age=1"),
            ("edge-cache-control", "max-age=\"bad\""),
            ("cdn-cache-control", "max-age=60"),
        ]);
        let d = ResponseDirectives::read(&h, &targets);
        assert_eq!(d.delta("max-age"), Delta::Valid(60));
        assert!(!d.uses_expires());
        let h = headers(&[("cache-control", "max-age=1, no-store")]);
        let d = ResponseDirectives::read(&h, &targets);
        assert_eq!(d.delta("max-age"), Delta::Valid(1));
        assert!(d.has("no-store") && d.uses_expires());
    }

    #[test]
    fn several_lines_are_one_dictionary() {
        let h = headers(&[
            ("cdn-cache-control", "max-age=60"),
            ("cdn-cache-control", "no-cache"),
        ]);
        let d = ResponseDirectives::read(&h, &TargetList::standard());
        assert!(d.has("no-cache") && d.has("max-age"));
    }

    #[test]
    fn only_the_standard_field_is_passed_on() {
        let targets = TargetList::new(vec![
            HeaderName::from_static("edge-cache-control"),
            HeaderName::from_static("cdn-cache-control"),
        ]);
        let private: Vec<_> = targets.private_fields().map(|f| f.as_str()).collect();
        assert_eq!(private, ["edge-cache-control"]);
    }
}
