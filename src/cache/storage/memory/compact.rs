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
/// rules). pingora-proxy serves a fresh hit with the header itself and other hits with a
/// copy that keeps this room (`ResponseHeader::clone_keeping_room`, the vendored
/// pingora-http).
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

/// One buffer: a prefix with the status (u16 LE), the version and flags (u8), the field
/// count (u16 LE), numbers of the meta that are read with the header on a hit and rarely
/// otherwise (its two stale windows, u32 LE each; its epoch, u64 LE, only when it is not the
/// meta's creation time, [`HAS_EPOCH`]), and the reason phrase (only one other than the
/// status's canonical one, [`HAS_REASON`]: u16 LE length and bytes); then the fields. Per
/// field: the name's index in [`KNOWN`] plus one (u8), or 0 and the name's length (u16 LE)
/// and bytes; then the value's length (u32 LE) and bytes.
///
/// Only the `Bytes` handle is inline (32 bytes): the memory storage's queue node holds one
/// per entry, and a status, count, the meta's numbers and a boxed reason beside it would
/// put the node in the allocator's next size class, 32 bytes more per entry.
#[derive(Clone)]
pub(crate) struct CompactHeader(Bytes);

/// Bytes of the prefix before the optional parts.
const PREFIX: usize = 13;
/// Flags in the version's byte.
const VERSION_BITS: u8 = 0x0f;
const HAS_EPOCH: u8 = 0x10;
const HAS_REASON: u8 = 0x20;

fn version_code(version: Version) -> u8 {
    match version {
        Version::HTTP_09 => 0,
        Version::HTTP_10 => 1,
        Version::HTTP_2 => 3,
        Version::HTTP_3 => 4,
        _ => 2,
    }
}

fn version_of(code: u8) -> Version {
    match code {
        0 => Version::HTTP_09,
        1 => Version::HTTP_10,
        3 => Version::HTTP_2,
        4 => Version::HTTP_3,
        _ => Version::HTTP_11,
    }
}

impl CompactHeader {
    /// `stale_windows`: stale-while-revalidate and stale-if-error, in seconds; `epoch`: the
    /// meta's reference point of `Age` in the storage's units, if not its creation time
    /// (a response not updated since it was stored).
    pub(crate) fn new(
        header: &ResponseHeader,
        stale_windows: [u32; 2],
        epoch: Option<u64>,
    ) -> Self {
        let status = header.status;
        // A reason phrase other than the status's canonical one (rare). An empty one, or one
        // longer than the prefix can say (no parser lets one through), is served as the
        // canonical one: the phrase carries no meaning (RFC 9112, section 4).
        let reason = header
            .get_reason_phrase()
            .filter(|r| Some(*r) != status.canonical_reason())
            .filter(|r| !r.is_empty() && u16::try_from(r.len()).is_ok());
        let size: usize = header
            .headers
            .iter()
            .map(|(n, v)| 7 + n.as_str().len() + v.len())
            .sum();
        let optional = epoch.map_or(0, |_| 8) + reason.map_or(0, |r| 2 + r.len());
        let mut buf = Vec::with_capacity(PREFIX + optional + size);
        let flags = epoch.map_or(0, |_| HAS_EPOCH) | reason.map_or(0, |_| HAS_REASON);
        buf.put_u16_le(status.as_u16());
        buf.put_u8(version_code(header.version) | flags);
        buf.put_u16_le(0); // the count, written below
        buf.put_u32_le(stale_windows[0]);
        buf.put_u32_le(stale_windows[1]);
        if let Some(epoch) = epoch {
            buf.put_u64_le(epoch);
        }
        if let Some(reason) = reason {
            buf.put_u16_le(reason.len() as u16);
            buf.put_slice(reason.as_bytes());
        }
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
                Some(i) => buf.put_u8(i as u8 + 1),
                None => {
                    buf.put_u8(0);
                    buf.put_u16_le(name_len);
                    buf.put_slice(name.as_str().as_bytes());
                }
            }
            buf.put_u32_le(value_len);
            buf.put_slice(value.as_bytes());
            count += 1;
        }
        buf[3..5].copy_from_slice(&count.to_le_bytes());
        buf.shrink_to_fit();
        CompactHeader(buf.into())
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_u16(u16::from_le_bytes([self.0[0], self.0[1]]))
            .expect("stored from a valid status")
    }

    /// Stale-while-revalidate and stale-if-error, in seconds.
    pub(crate) fn stale_windows(&self) -> [u32; 2] {
        let b = &self.0;
        [
            u32::from_le_bytes([b[5], b[6], b[7], b[8]]),
            u32::from_le_bytes([b[9], b[10], b[11], b[12]]),
        ]
    }

    /// The epoch, if it is not the meta's creation time.
    pub(crate) fn epoch(&self) -> Option<u64> {
        (self.0[2] & HAS_EPOCH != 0)
            .then(|| u64::from_le_bytes(self.0[PREFIX..PREFIX + 8].try_into().expect("8 bytes")))
    }

    /// The reason phrase, if not the canonical one, and where the fields start.
    fn reason_and_fields(&self) -> (Option<&str>, usize) {
        let flags = self.0[2];
        let at = PREFIX + if flags & HAS_EPOCH != 0 { 8 } else { 0 };
        if flags & HAS_REASON == 0 {
            return (None, at);
        }
        let len = usize::from(u16::from_le_bytes([self.0[at], self.0[at + 1]]));
        // The bytes were a `&str` when stored.
        let reason = std::str::from_utf8(&self.0[at + 2..at + 2 + len]).ok();
        (reason, at + 2 + len)
    }

    /// The header to serve: its values are slices of the stored buffer. Its map's index has
    /// room for the fields added on the way out (Pingora serves a fresh hit with this header
    /// itself, and others with a copy that keeps the index's size), so adding them rehashes
    /// nothing.
    pub(crate) fn to_header(&self) -> ResponseHeader {
        let buf = &self.0;
        let count = u16::from_le_bytes([buf[3], buf[4]]);
        let (reason, mut at) = self.reason_and_fields();
        // The map is filled here and the header made from its parts: the header's own
        // `append_header` would convert each name again, and keep no map of name cases.
        let mut map = HeaderMap::with_capacity(usize::from(count) + SERVED_FIELDS);
        for _ in 0..count {
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
            // SAFETY: the buffer is private and written only by `new`, from the bytes of
            // `HeaderValue`s, so every value slice is a valid value. The checked form would
            // test each byte again on every hit; debug builds still check (`http` does).
            let value =
                unsafe { HeaderValue::from_maybe_shared_unchecked(buf.slice(at - len..at)) };
            map.append(name, value);
        }
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = self.status();
        parts.version = version_of(buf[2] & VERSION_BITS);
        parts.headers = map;
        let mut header = ResponseHeader::from(parts);
        if let Some(reason) = reason {
            let _ = header.set_reason_phrase(Some(reason));
        }
        header
    }

    /// Bytes held beyond the handle itself.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0.len()
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
        let c = CompactHeader::new(&h, [7, u32::MAX], Some(u64::MAX - 1));
        assert_eq!(c.stale_windows(), [7, u32::MAX]);
        assert_eq!(c.epoch(), Some(u64::MAX - 1));
        let d = c.to_header();
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
        let c = CompactHeader::new(&h, [0, 0], None);
        assert!(c.reason_and_fields().0.is_none());
        assert!(c.epoch().is_none());
        assert_eq!(c.heap_bytes(), PREFIX);
        let d = c.to_header();
        assert_eq!(d.get_reason_phrase(), Some("OK"));
        assert_eq!(d.version, Version::HTTP_10);
    }

    #[test]
    fn keeps_every_version_and_status() {
        for version in [
            Version::HTTP_09,
            Version::HTTP_10,
            Version::HTTP_11,
            Version::HTTP_2,
            Version::HTTP_3,
        ] {
            for status in [100, 200, 206, 304, 404, 599, 999] {
                let mut h = ResponseHeader::build(status, None).unwrap();
                h.set_version(version);
                h.append_header("etag", "\"v\"").unwrap();
                let d = CompactHeader::new(&h, [0, 0], None).to_header();
                assert_eq!((d.status.as_u16(), d.version), (status, version));
                assert_eq!(d.headers["etag"], "\"v\"");
                assert_eq!(d.headers.len(), 1);
            }
        }
    }
}
