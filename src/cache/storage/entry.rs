//! The entry format that crosses a process boundary: values in the shared Redis tier and
//! entries on the cache hand-over stream of an upgrade. One module, one version number.
//!
//! A value starts with a magic and a format version. Anything that does not decode exactly
//! (another version, a truncated or foreign value, lengths past the end) is an error, which
//! callers treat as a miss: a bad value can never crash the process or be served.
//!
//! Layout (integers big-endian):
//! ```text
//! magic "CPE" | version u8
//! fresh_until, created, epoch: u64 ms since the Unix epoch
//! stale_while_revalidate_sec, stale_if_error_sec: u32
//! variance: u8 (0 | 1) [+ 16 bytes]
//! status u16 | http version u8 | reason: u16 len + bytes
//! fields: u16 count, each name u16 len + bytes, value u32 len + bytes
//! body_len u64 | chunks u32 | generation u64
//! inline body (body_len bytes) when chunks = 0
//! ```
//! In Redis, a body larger than one chunk is stored apart in `chunks` values under keys that
//! carry the generation, so a reader never joins the meta of one write with the body of
//! another. On the hand-over stream every body is inline ([`encode_whole`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use pingora_cache::key::HashBinary;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

const MAGIC: &[u8; 3] = b"CPE";
/// Bump on any change of the layout: values of another version are misses.
pub const FORMAT_VERSION: u8 = 1;
/// Bodies up to this size live inside the meta value (one round trip per hit); larger ones
/// are split in chunks of this size, so no single Redis value is many MiB.
pub const CHUNK_BYTES: usize = 512 << 10;
/// The largest body an entry holds (8,192 chunks). A value comes from Redis or another
/// process and may be corrupt or hostile: one announcing more is refused before anything
/// is allocated or fetched for it (the fuzz target `redis_entry` once made a reader
/// allocate the 2^61 bytes a value claimed, which aborts the process). Larger bodies are
/// not written.
pub const MAX_BODY_BYTES: usize = 8192 * CHUNK_BYTES;

/// Why a value was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not an entry (bad magic)")]
    Magic,
    #[error("entry format version {0}, this build reads {FORMAT_VERSION}")]
    Version(u8),
    #[error("entry is truncated")]
    Truncated,
    #[error("entry is malformed: {0}")]
    Malformed(&'static str),
}

/// The decoded head of a stored entry.
pub struct EntryHead {
    pub meta: CacheMeta,
    pub body_len: usize,
    /// 0: the body is inline.
    pub chunks: u32,
    pub generation: u64,
    /// The inline body (empty when chunked).
    pub inline: Bytes,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64)
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// How many chunk values a body of `len` bytes takes (0 = inline).
pub fn chunk_count(len: usize) -> u32 {
    if len <= CHUNK_BYTES {
        0
    } else {
        len.div_ceil(CHUNK_BYTES) as u32
    }
}

/// Encodes the meta (and the body, when it is small enough to be inline).
pub fn encode(meta: &CacheMeta, body: &Bytes, generation: u64) -> Bytes {
    encode_with(meta, body, generation, chunk_count(body.len()))
}

/// Encodes the meta and the whole body inline, whatever its size (the hand-over stream).
pub fn encode_whole(meta: &CacheMeta, body: &Bytes) -> Bytes {
    encode_with(meta, body, 0, 0)
}

fn encode_with(meta: &CacheMeta, body: &Bytes, generation: u64, chunks: u32) -> Bytes {
    let header = meta.response_header();
    let mut out = BytesMut::with_capacity(128 + if chunks == 0 { body.len() } else { 0 });
    out.put_slice(MAGIC);
    out.put_u8(FORMAT_VERSION);
    out.put_u64(millis(meta.fresh_until()));
    out.put_u64(millis(meta.created()));
    out.put_u64(millis(meta.epoch()));
    out.put_u32(meta.stale_while_revalidate_sec());
    out.put_u32(meta.stale_if_error_sec());
    match meta.variance() {
        Some(v) => {
            out.put_u8(1);
            out.put_slice(&v);
        }
        None => out.put_u8(0),
    }
    out.put_u16(header.status.as_u16());
    out.put_u8(version_code(header.version));
    let reason = header.get_reason_phrase().unwrap_or("").as_bytes();
    let reason = &reason[..reason.len().min(u16::MAX as usize)];
    out.put_u16(reason.len() as u16);
    out.put_slice(reason);
    let fields: Vec<_> = header.headers.iter().take(u16::MAX as usize).collect();
    out.put_u16(fields.len() as u16);
    for (name, value) in fields {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
    out.put_u64(body.len() as u64);
    out.put_u32(chunks);
    out.put_u64(generation);
    if chunks == 0 {
        out.put_slice(body);
    }
    out.freeze()
}

/// The body's chunk `i`, as written to its own value.
pub fn chunk(body: &Bytes, i: u32) -> Bytes {
    let start = i as usize * CHUNK_BYTES;
    body.slice(start..(start + CHUNK_BYTES).min(body.len()))
}

fn version_code(v: http::Version) -> u8 {
    match v {
        http::Version::HTTP_09 => 0,
        http::Version::HTTP_10 => 1,
        http::Version::HTTP_2 => 3,
        http::Version::HTTP_3 => 4,
        _ => 2,
    }
}

fn version_of(code: u8) -> Result<http::Version, DecodeError> {
    Ok(match code {
        0 => http::Version::HTTP_09,
        1 => http::Version::HTTP_10,
        2 => http::Version::HTTP_11,
        3 => http::Version::HTTP_2,
        4 => http::Version::HTTP_3,
        _ => return Err(DecodeError::Malformed("http version")),
    })
}

/// A bounds-checked reader over a value.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        if end > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let out = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.take(N)?;
        Ok(b[..].try_into().expect("length checked"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

/// Decodes a meta value written by [`encode`].
pub fn decode(value: Bytes) -> Result<EntryHead, DecodeError> {
    let mut r = Reader { buf: value, pos: 0 };
    if &r.array::<3>()? != MAGIC {
        return Err(DecodeError::Magic);
    }
    match r.u8()? {
        FORMAT_VERSION => {}
        other => return Err(DecodeError::Version(other)),
    }
    let fresh_until = time(r.u64()?);
    let created = time(r.u64()?);
    let epoch = time(r.u64()?);
    let swr = r.u32()?;
    let sie = r.u32()?;
    let variance: Option<HashBinary> = match r.u8()? {
        0 => None,
        1 => Some(r.array::<16>()?),
        _ => return Err(DecodeError::Malformed("variance flag")),
    };
    let status = r.u16()?;
    let version = version_of(r.u8()?)?;
    let reason_len = r.u16()? as usize;
    let reason = r.take(reason_len)?;
    let n_fields = r.u16()? as usize;
    let mut header = ResponseHeader::build_no_case(status, Some(n_fields))
        .map_err(|_| DecodeError::Malformed("status"))?;
    header.set_version(version);
    if !reason.is_empty() {
        let reason = std::str::from_utf8(&reason).map_err(|_| DecodeError::Malformed("reason"))?;
        header
            .set_reason_phrase(Some(reason))
            .map_err(|_| DecodeError::Malformed("reason"))?;
    }
    for _ in 0..n_fields {
        let name_len = r.u16()? as usize;
        let name = r.take(name_len)?;
        let value_len = r.u32()? as usize;
        let value = r.take(value_len)?;
        let name = http::HeaderName::from_bytes(&name)
            .map_err(|_| DecodeError::Malformed("field name"))?;
        // A view of the value, checked like any field value: no copy per field. It keeps the
        // Redis value alive only while this meta lives; the memory tier stores compact
        // copies (see memory storage's `CompactHeader`).
        let value = http::HeaderValue::from_maybe_shared(value)
            .map_err(|_| DecodeError::Malformed("field value"))?;
        header
            .append_header(name, value)
            .map_err(|_| DecodeError::Malformed("field"))?;
    }
    let body_len = usize::try_from(r.u64()?)
        .ok()
        .filter(|len| *len <= MAX_BODY_BYTES)
        .ok_or(DecodeError::Malformed("body length"))?;
    let chunks = r.u32()?;
    let generation = r.u64()?;
    // Inline (any size), or exactly the chunks its length needs.
    if chunks != 0 && chunks != chunk_count(body_len) {
        return Err(DecodeError::Malformed("chunk count"));
    }
    let inline = if chunks == 0 {
        r.take(body_len)?
    } else {
        Bytes::new()
    };
    if r.pos != r.buf.len() {
        return Err(DecodeError::Malformed("trailing bytes"));
    }
    let mut meta = CacheMeta::new(fresh_until, created, swr, sie, header);
    meta.set_epoch_override(epoch);
    if let Some(v) = variance {
        meta.set_variance(v);
    }
    Ok(EntryHead {
        meta,
        body_len,
        chunks,
        generation,
        inline,
    })
}

/// Joins chunk values into the body, checking each one's length.
pub fn join_chunks(head: &EntryHead, chunks: Vec<Option<Bytes>>) -> Result<Bytes, DecodeError> {
    if chunks.len() != head.chunks as usize {
        return Err(DecodeError::Truncated);
    }
    // Every chunk checked before the body is allocated: its size is then the chunks' own.
    let mut parts = Vec::with_capacity(chunks.len());
    for (i, c) in chunks.into_iter().enumerate() {
        let c = c.ok_or(DecodeError::Truncated)?;
        let expected = head
            .body_len
            .saturating_sub(i * CHUNK_BYTES)
            .min(CHUNK_BYTES);
        if c.len() != expected {
            return Err(DecodeError::Malformed("chunk length"));
        }
        parts.push(c);
    }
    let mut body = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for c in parts {
        body.put_slice(&c);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> CacheMeta {
        let now = UNIX_EPOCH + Duration::from_millis(millis(SystemTime::now()));
        let mut h = ResponseHeader::build(203, None).unwrap();
        h.set_reason_phrase(Some("Odd")).unwrap();
        h.append_header("vary", "a").unwrap();
        h.append_header("vary", "b").unwrap();
        h.append_header("etag", "\"x\"").unwrap();
        let mut m = CacheMeta::new(now + Duration::from_secs(60), now, 7, 9, h);
        m.set_epoch_override(now - Duration::from_secs(30));
        m.set_variance([5; 16]);
        m
    }

    #[test]
    fn round_trips_inline() {
        let m = meta();
        let body = Bytes::from_static(b"hello");
        let head = decode(encode(&m, &body, 42)).unwrap();
        assert_eq!(head.inline, body);
        assert_eq!((head.chunks, head.generation, head.body_len), (0, 42, 5));
        let got = head.meta;
        assert_eq!(got.response_header().status, 203);
        assert_eq!(got.response_header().get_reason_phrase(), Some("Odd"));
        assert_eq!(got.headers().get_all("vary").iter().count(), 2);
        assert_eq!(got.fresh_until(), m.fresh_until());
        assert_eq!(got.created(), m.created());
        assert_eq!(got.epoch(), m.epoch());
        assert_eq!(got.variance(), Some([5; 16]));
        assert_eq!(
            (got.stale_while_revalidate_sec(), got.stale_if_error_sec()),
            (7, 9)
        );
    }

    #[test]
    fn large_bodies_are_chunked() {
        let body: Bytes = (0..(CHUNK_BYTES * 2 + 10))
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let head = decode(encode(&meta(), &body, 1)).unwrap();
        assert_eq!(head.chunks, 3);
        assert!(head.inline.is_empty());
        let chunks = (0..3).map(|i| Some(chunk(&body, i))).collect();
        assert_eq!(join_chunks(&head, chunks).unwrap(), body);
        let missing = vec![Some(chunk(&body, 0)), None, Some(chunk(&body, 2))];
        assert_eq!(
            join_chunks(&head, missing).unwrap_err(),
            DecodeError::Truncated
        );
        let short = vec![Some(chunk(&body, 0)), Some(chunk(&body, 2)), None];
        assert!(join_chunks(&head, short).is_err());
    }

    #[test]
    fn whole_entries_keep_large_bodies_inline() {
        let body: Bytes = vec![7u8; CHUNK_BYTES + 1].into();
        let head = decode(encode_whole(&meta(), &body)).unwrap();
        assert_eq!((head.chunks, head.body_len), (0, body.len()));
        assert_eq!(head.inline, body);
        // A chunked entry announcing the wrong number of chunks is refused.
        let mut value = encode(&meta(), &body, 1).to_vec();
        let at = value.len() - 12; // chunks u32, then generation u64
        value[at..at + 4].copy_from_slice(&5u32.to_be_bytes());
        assert_eq!(
            decode(value.into()).err(),
            Some(DecodeError::Malformed("chunk count"))
        );
    }

    #[test]
    fn a_value_claiming_a_huge_body_is_refused_before_any_allocation() {
        let body: Bytes = vec![7u8; CHUNK_BYTES + 1].into();
        let value = encode(&meta(), &body, 1).to_vec();
        let at = value.len() - 20; // body_len u64, chunks u32, generation u64
                                   // 2^61 + 512 KiB: its chunk count truncated to u32 is 1, as the value says... so far.
        for (len, chunks) in [((1u64 << 61) + (512 << 10), 1u32), (u64::MAX, 0)] {
            let mut hostile = value.clone();
            hostile[at..at + 8].copy_from_slice(&len.to_be_bytes());
            hostile[at + 8..at + 12].copy_from_slice(&chunks.to_be_bytes());
            assert_eq!(
                decode(hostile.into()).err(),
                Some(DecodeError::Malformed("body length")),
                "{len}"
            );
        }
        let largest = chunk_count(MAX_BODY_BYTES);
        assert_eq!(largest, 8192);
    }

    #[test]
    fn every_truncation_and_foreign_value_is_an_error() {
        let value = encode(&meta(), &Bytes::from_static(b"body"), 3);
        for n in 0..value.len() {
            assert!(decode(value.slice(..n)).is_err(), "prefix of {n} bytes");
        }
        let mut other = value.to_vec();
        other[3] = FORMAT_VERSION + 1;
        assert_eq!(
            decode(other.into()).err(),
            Some(DecodeError::Version(FORMAT_VERSION + 1))
        );
        assert_eq!(
            decode(Bytes::from_static(b"garbage")).err(),
            Some(DecodeError::Magic)
        );
        let mut longer = value.to_vec();
        longer.push(0);
        assert!(decode(longer.into()).is_err());
    }
}
