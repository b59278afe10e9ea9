//! A stored response header in few bytes, and the `ResponseHeader` a hit is served with.
//!
//! A `ResponseHeader` held per entry costs about 1 KiB for a handful of fields: the header
//! map reserves a third more buckets than asked, each bucket is about 100 bytes, and each
//! value is an allocation of its own. Kept here instead: every field's name and value back
//! to back in one buffer, which the values of the header built for a hit share (slices, no
//! copies). The names a response usually has are kept as one byte, an index in [`KNOWN`]:
//! parsing a name back from its bytes on every hit would cost more than the rest of the
//! build (callgrind: about 2,000 instructions per hit for a response of four fields).
//!
//! Pingora parses an origin's header into values that are views of its read buffer, so
//! storing the header as parsed would keep that whole buffer alive too; this copy owns its
//! bytes. It also leaves out the map that preserves the case of header names: names are
//! sent in their canonical case when served from the cache.

use bytes::{BufMut, Bytes};
use http::header::{self, HeaderMap};
use http::{HeaderName, HeaderValue, StatusCode, Version};
use pingora_http::ResponseHeader;

/// Fields a served hit gains after [`CompactHeader::to_header`]: `Age`, `X-Cache`, four
/// security headers, `X-Request-Id`, `Connection` or HSTS, and a few to spare (CORS, route
/// rules).
const SERVED_FIELDS: usize = 12;

/// Names stored as their index here (plus one; 0 is a name stored as bytes): those of
/// responses an edge cache stores most. Taking a standard `HeaderName` from a table costs
/// nothing; `HeaderName::from_bytes` matches the bytes against every standard name.
static KNOWN: [HeaderName; 32] = [
    header::ACCEPT_RANGES,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
    header::AGE,
    header::ALT_SVC,
    header::CACHE_CONTROL,
    header::CONTENT_DISPOSITION,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LENGTH,
    header::CONTENT_LOCATION,
    header::CONTENT_RANGE,
    header::CONTENT_SECURITY_POLICY,
    header::CONTENT_TYPE,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::LAST_MODIFIED,
    header::LINK,
    header::LOCATION,
    header::REFERRER_POLICY,
    header::SERVER,
    header::SET_COOKIE,
    header::STRICT_TRANSPORT_SECURITY,
    header::VARY,
    header::VIA,
    header::X_CONTENT_TYPE_OPTIONS,
    header::X_FRAME_OPTIONS,
];

#[derive(Clone)]
pub(crate) struct CompactHeader {
    /// Per field: the name's index in [`KNOWN`] plus one (u8), or 0 and the name's length
    /// (u16 LE) and bytes; then the value's length (u32 LE) and bytes.
    fields: Bytes,
    /// A reason phrase other than the status's canonical one (rare).
    reason: Option<Box<str>>,
    count: u16,
    status: StatusCode,
    version: Version,
}

impl CompactHeader {
    pub(crate) fn new(header: &ResponseHeader) -> Self {
        let size: usize = header
            .headers
            .iter()
            .map(|(n, v)| 7 + n.as_str().len() + v.len())
            .sum();
        let mut fields = Vec::with_capacity(size);
        let mut count = 0u16;
        for (name, value) in header.headers.iter() {
            let (Ok(name_len), Ok(value_len)) = (
                u16::try_from(name.as_str().len()),
                u32::try_from(value.len()),
            ) else {
                continue; // no parser lets such a field through
            };
            if count == u16::MAX {
                break;
            }
            match KNOWN.iter().position(|known| known == name) {
                Some(i) => fields.put_u8(i as u8 + 1),
                None => {
                    fields.put_u8(0);
                    fields.put_u16_le(name_len);
                    fields.put_slice(name.as_str().as_bytes());
                }
            }
            fields.put_u32_le(value_len);
            fields.put_slice(value.as_bytes());
            count += 1;
        }
        fields.shrink_to_fit();
        let status = header.status;
        CompactHeader {
            fields: fields.into(),
            reason: header
                .get_reason_phrase()
                .filter(|r| Some(*r) != status.canonical_reason())
                .map(Box::from),
            count,
            status,
            version: header.version,
        }
    }

    /// The header to serve: its values are slices of the stored buffer. Its map's index has
    /// room for the fields added on the way out (Pingora serves a clone, which keeps the
    /// index's size), so adding them rehashes nothing.
    pub(crate) fn to_header(&self) -> ResponseHeader {
        // The map is filled here and the header made from its parts: the header's own
        // `append_header` would convert each name again, and keep no map of name cases.
        let mut map = HeaderMap::with_capacity(usize::from(self.count) + SERVED_FIELDS);
        let buf = &self.fields;
        let mut at = 0;
        for _ in 0..self.count {
            let name = match buf[at] {
                0 => {
                    let len = usize::from(u16::from_le_bytes([buf[at + 1], buf[at + 2]]));
                    at += 3 + len;
                    HeaderName::from_bytes(&buf[at - len..at]).expect("stored from a valid name")
                }
                known => {
                    at += 1;
                    KNOWN[usize::from(known - 1)].clone()
                }
            };
            let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            at += 4 + len;
            // SAFETY: `fields` is private and written only by `new`, from the bytes of
            // `HeaderValue`s, so every value slice is a valid value. The checked form would
            // test each byte again on every hit; debug builds still check (`http` does).
            let value =
                unsafe { HeaderValue::from_maybe_shared_unchecked(buf.slice(at - len..at)) };
            map.append(name, value);
        }
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = self.status;
        parts.version = self.version;
        parts.headers = map;
        let mut header = ResponseHeader::from(parts);
        if let Some(reason) = &self.reason {
            let _ = header.set_reason_phrase(Some(reason));
        }
        header
    }

    /// Bytes held beyond the struct itself: the buffer and the reason phrase.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.fields.len() + self.reason.as_ref().map_or(0, |r| r.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_fields_status_and_reason() {
        let buffer = Bytes::from_static(b"X-Origin-Case: kept");
        let mut h = ResponseHeader::build(404, None).unwrap();
        h.set_reason_phrase(Some("Gone Fishing")).unwrap();
        h.append_header(
            buffer.slice(0..13),
            HeaderValue::from_maybe_shared(buffer.slice(15..)).unwrap(),
        )
        .unwrap();
        h.append_header("vary", "a").unwrap();
        h.append_header("vary", "b").unwrap();
        h.append_header("content-type", "text/plain").unwrap();
        h.append_header("x-empty", "").unwrap();
        let d = CompactHeader::new(&h).to_header();
        assert_eq!(d.status, 404);
        assert_eq!(d.get_reason_phrase(), Some("Gone Fishing"));
        assert_eq!(d.headers["x-origin-case"], "kept");
        assert_eq!(
            d.headers.get_all("vary").iter().collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(d.headers["x-empty"], "");
        assert_eq!(d.headers.len(), 5);
        let mut wire = Vec::new();
        d.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8_lossy(&wire);
        assert!(wire.contains("x-origin-case: kept"), "{wire}");
        assert!(
            wire.contains("Content-Type: text/plain"),
            "canonical case: {wire}"
        );
    }

    #[test]
    fn a_canonical_reason_is_not_stored() {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.set_version(Version::HTTP_10);
        let c = CompactHeader::new(&h);
        assert!(c.reason.is_none());
        assert_eq!(c.heap_bytes(), 0);
        let d = c.to_header();
        assert_eq!(d.get_reason_phrase(), Some("OK"));
        assert_eq!(d.version, Version::HTTP_10);
    }
}
