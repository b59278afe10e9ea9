//! The warm cache hand-over of an upgrade (and a reload): the running process streams its
//! cache entries to the new process over a Unix socket next to `server.upgrade_sock`, while
//! both serve, so the new process does not start cold.
//!
//! Order of events, old process O, new process N started with `-u`:
//! 1. Every process listens on [`socket_path`] from its start ([`HandoverService`]).
//! 2. N's service connects to that path, which is still O's socket, and only then puts its
//!    own listener there (for the next upgrade).
//! 3. O sends a header (stream and entry format versions), then its entries most recently
//!    used first, then `Done`. Removals O makes meanwhile (purge, invalidation after an
//!    unsafe method, clear) travel in the same stream, also after `Done`, until O exits, so
//!    a purge that reaches O during the overlap is not lost on N.
//! 4. N adopts entries under its own bounds while it serves: a request for an entry not yet
//!    adopted is served as usual (a miss, or a wait on the cache lock). Entries past
//!    `server.handover_timeout` are not waited for. A header N cannot read (another stream
//!    or entry format version) makes N refuse the stream and start cold, saying why.
//!
//! Pingora starts services after its bootstrap, which is where N takes the listening
//! sockets (and a daemon forks right after), so the transfer starts once O got `SIGQUIT`:
//! it never delays the listeners. O's runtime, and this stream with it, lives on for
//! Pingora's close timeout (5 s) plus `server.grace_period` after `SIGQUIT`; that, or
//! `server.handover_timeout` when shorter, bounds the transfer.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use log::{debug, info, warn};
use pingora_cache::key::HashBinary;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{UnixListener, UnixStream};

use crate::cache::storage::entry::{self, FORMAT_VERSION};
use crate::cache::storage::memory::{Adopted, Removal};
use crate::cache::MemoryStorage;
use crate::metrics::HANDOVER_ENTRIES;

const MAGIC: &[u8; 3] = b"CPH";
/// Bump on any change of the framing below, or of the key hash entries are sent under
/// (`cache::key`). Entries carry their own version (`entry.rs`). 2: BLAKE3 key hashes.
pub const STREAM_VERSION: u8 = 2;

const TAG_ENTRY: u8 = 1;
const TAG_REMOVED_URL: u8 = 2;
const TAG_REMOVED_ALL: u8 = 3;
const TAG_DONE: u8 = 4;

/// Entries exported and written per round; removals are forwarded between rounds.
const BATCH: usize = 256;
/// An entry's value beyond its body (meta, header fields) can be this large at most.
const MAX_META_BYTES: usize = 4 << 20;

/// The hand-over socket of a process whose upgrade socket is `upgrade_sock`.
pub fn socket_path(upgrade_sock: &str) -> PathBuf {
    PathBuf::from(format!("{upgrade_sock}.cache"))
}

/// One record of the stream.
#[derive(Debug, PartialEq)]
enum Record {
    Entry {
        primary: HashBinary,
        combined: HashBinary,
        value: Bytes,
    },
    Removed(Removal),
    Done,
}

fn header() -> [u8; 5] {
    [MAGIC[0], MAGIC[1], MAGIC[2], STREAM_VERSION, FORMAT_VERSION]
}

/// Why a stream's header was refused.
fn check_header(h: [u8; 5]) -> Result<(), String> {
    if h[..3] != MAGIC[..] {
        return Err("not a cache hand-over stream".into());
    }
    if h[3] != STREAM_VERSION {
        return Err(format!(
            "stream version {}, this build reads {STREAM_VERSION}",
            h[3]
        ));
    }
    if h[4] != FORMAT_VERSION {
        return Err(format!(
            "entry format version {}, this build reads {FORMAT_VERSION}",
            h[4]
        ));
    }
    Ok(())
}

fn encode(record: &Record, out: &mut BytesMut) {
    match record {
        Record::Entry {
            primary,
            combined,
            value,
        } => {
            out.put_u8(TAG_ENTRY);
            out.put_u32(value.len() as u32);
            out.put_slice(primary);
            out.put_slice(combined);
            out.put_slice(value);
        }
        Record::Removed(Removal::Url(primary)) => {
            out.put_u8(TAG_REMOVED_URL);
            out.put_slice(primary);
        }
        Record::Removed(Removal::All) => out.put_u8(TAG_REMOVED_ALL),
        Record::Done => out.put_u8(TAG_DONE),
    }
}

/// Reads one record; `max_value` bounds an entry's length, so a corrupt length cannot make
/// the reader allocate at will.
async fn read_record<R: AsyncReadExt + Unpin>(r: &mut R, max_value: usize) -> io::Result<Record> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    Ok(match r.read_u8().await? {
        TAG_ENTRY => {
            let len = r.read_u32().await? as usize;
            if len > max_value {
                return Err(invalid(format!("entry of {len} bytes")));
            }
            let mut keys = [0u8; 32];
            r.read_exact(&mut keys).await?;
            let mut value = vec![0u8; len];
            r.read_exact(&mut value).await?;
            let (primary, combined) = keys.split_at(16);
            Record::Entry {
                primary: primary.try_into().expect("16 bytes"),
                combined: combined.try_into().expect("16 bytes"),
                value: value.into(),
            }
        }
        TAG_REMOVED_URL => {
            let mut primary = [0u8; 16];
            r.read_exact(&mut primary).await?;
            Record::Removed(Removal::Url(primary))
        }
        TAG_REMOVED_ALL => Record::Removed(Removal::All),
        TAG_DONE => Record::Done,
        tag => return Err(invalid(format!("record tag {tag}"))),
    })
}

/// What [`read_stream`] found in a stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    /// Entry records whose value decoded.
    pub entries: u64,
    /// Entry records whose value did not decode (a receiver skips them).
    pub undecodable: u64,
    pub removals: u64,
    /// The stream ended with its `Done` record.
    pub done: bool,
}

/// Reads a whole hand-over stream from `bytes` as a receiving process does (header, then
/// records until `Done`, each entry's value decoded), without storing anything; an error
/// says why a receiver would stop. The stream comes from another process: whatever its
/// bytes, this must end in a summary or an error, never a panic or an unbounded allocation.
/// An entry point for the fuzz target `handover_stream` and its corpus test (`fuzz/`).
pub fn read_stream(bytes: &[u8], max_value: usize) -> Result<StreamSummary, String> {
    let header: [u8; 5] = bytes
        .get(..5)
        .and_then(|h| h.try_into().ok())
        .ok_or("no header")?;
    check_header(header)?;
    let mut r = &bytes[5..];
    let mut summary = StreamSummary::default();
    loop {
        // Reading from memory never waits: one poll finishes the read.
        let record = {
            let read = std::pin::pin!(read_record(&mut r, max_value));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match read.poll(&mut cx) {
                std::task::Poll::Ready(record) => record.map_err(|e| e.to_string())?,
                std::task::Poll::Pending => return Err("a read from memory waited".into()),
            }
        };
        match record {
            Record::Entry { value, .. } => match entry::decode(value) {
                Ok(_) => summary.entries += 1,
                Err(_) => summary.undecodable += 1,
            },
            Record::Removed(_) => summary.removals += 1,
            Record::Done => {
                summary.done = true;
                return Ok(summary);
            }
        }
    }
}

async fn write_records<W: AsyncWrite + Unpin>(w: &mut W, records: &[Record]) -> io::Result<()> {
    let mut out = BytesMut::new();
    for r in records {
        encode(r, &mut out);
    }
    w.write_all(&out).await
}

/// The old side: streams `storage` to a new process, then forwards removals until the new
/// process hangs up (or this one exits).
async fn send(storage: &'static MemoryStorage, stream: UnixStream) -> io::Result<()> {
    // Subscribed before the first entry is read, so no removal falls in between.
    let mut removals = storage.watch_removals();
    let started = Instant::now();
    let (mut peer, writer) = stream.into_split();
    let mut w = BufWriter::with_capacity(256 << 10, writer);
    w.write_all(&header()).await?;
    let (mut entries, mut bytes) = (0u64, 0u64);
    for keys in storage.export_order().chunks(BATCH) {
        let mut records: Vec<Record> = storage
            .export(keys)
            .into_iter()
            .map(|e| Record::Entry {
                primary: e.primary,
                combined: e.combined,
                value: entry::encode_whole(&e.meta, &e.body),
            })
            .collect();
        entries += records.len() as u64;
        bytes += records
            .iter()
            .map(|r| match r {
                Record::Entry { value, .. } => value.len() as u64,
                _ => 0,
            })
            .sum::<u64>();
        while let Ok(r) = removals.try_recv() {
            records.push(Record::Removed(r));
        }
        write_records(&mut w, &records).await?;
    }
    write_records(&mut w, &[Record::Done]).await?;
    w.flush().await?;
    HANDOVER_ENTRIES
        .with_label_values(&["sent"])
        .inc_by(entries);
    info!(
        "cache hand-over: sent {entries} entries ({bytes} bytes) in {} ms",
        started.elapsed().as_millis()
    );
    let mut probe = [0u8; 1];
    loop {
        tokio::select! {
            r = removals.recv() => match r {
                Some(r) => {
                    write_records(&mut w, &[Record::Removed(r)]).await?;
                    w.flush().await?;
                }
                None => return Ok(()),
            },
            // The new process never writes: a read returns when it hangs up.
            _ = peer.read(&mut probe) => return Ok(()),
        }
    }
}

/// What a receiving process did with the stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub stored: u64,
    pub bytes: u64,
    /// Not adopted: newer here, no room, too large, removed here meanwhile or of no use,
    /// or not decodable.
    pub skipped: u64,
    pub completed: bool,
}

/// The new side: adopts the old process's entries until `Done` or `deadline`, then applies
/// the removals it forwards until it exits.
async fn receive(
    storage: &'static MemoryStorage,
    stream: UnixStream,
    deadline: Instant,
) -> io::Result<Received> {
    let started = Instant::now();
    let mut r = BufReader::with_capacity(256 << 10, stream);
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut h = [0u8; 5];
    tokio::time::timeout_at(deadline, r.read_exact(&mut h))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no header"))??;
    if let Err(why) = check_header(h) {
        warn!("cache hand-over refused ({why}): starting with an empty cache");
        return Ok(Received::default());
    }
    let max_value = storage.limits().max_object_bytes + MAX_META_BYTES;
    let mut got = Received::default();
    storage.begin_adoption();
    let adopted = async {
        loop {
            match read_record(&mut r, max_value).await? {
                Record::Entry {
                    primary,
                    combined,
                    value,
                } => {
                    let len = value.len() as u64;
                    let outcome = match entry::decode(value) {
                        // An exact copy of the body: a view would keep the meta's bytes too.
                        Ok(head) => storage.adopt(
                            primary,
                            combined,
                            &head.meta,
                            Bytes::copy_from_slice(&head.inline),
                        ),
                        Err(e) => {
                            debug!("cache hand-over: entry not decodable: {e}");
                            Adopted::Dropped
                        }
                    };
                    if outcome == Adopted::Stored {
                        got.stored += 1;
                        got.bytes += len;
                    } else {
                        got.skipped += 1;
                    }
                }
                Record::Removed(removal) => apply(storage, removal),
                Record::Done => return Ok::<(), io::Error>(()),
            }
        }
    };
    let result = tokio::time::timeout_at(deadline, adopted).await;
    storage.end_adoption();
    HANDOVER_ENTRIES
        .with_label_values(&["received"])
        .inc_by(got.stored);
    let took = started.elapsed().as_millis();
    match result {
        Ok(Ok(())) => {
            got.completed = true;
            info!(
                "cache hand-over: took over {} entries ({} bytes) in {took} ms, {} not taken \
                 (newer here, no room, too large or no longer of use)",
                got.stored, got.bytes, got.skipped
            );
        }
        Ok(Err(e)) => warn!(
            "cache hand-over broke off after {took} ms ({e}): kept {} entries",
            got.stored
        ),
        Err(_) => warn!(
            "cache hand-over stopped at server.handover_timeout ({took} ms): kept {} entries",
            got.stored
        ),
    }
    if got.completed {
        // Removals the old process makes while it drains.
        while let Ok(Record::Removed(removal)) = read_record(&mut r, 0).await {
            apply(storage, removal);
        }
    }
    Ok(got)
}

fn apply(storage: &MemoryStorage, removal: Removal) {
    match removal {
        Removal::Url(primary) => {
            storage.remove_primary(primary);
        }
        Removal::All => {
            storage.clear_now();
        }
    }
}

/// Replaces whatever is at `path` (a stale socket of an earlier run, or the running
/// process's, which this process has already connected to) with a listener of its own,
/// readable by this user only: the stream carries every cached response.
fn listen(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Takes over the running process's cache when this one is an upgrade, and offers this
/// process's cache to the next one.
pub struct HandoverService {
    pub storage: &'static MemoryStorage,
    pub path: PathBuf,
    /// This process was started with `-u`: ask the running one for its entries.
    pub upgrade: bool,
    /// 0: neither take nor offer entries.
    pub timeout: Duration,
}

#[async_trait]
impl BackgroundService for HandoverService {
    async fn start(&self, _shutdown: ShutdownWatch) {
        if self.timeout.is_zero() {
            return;
        }
        let deadline = Instant::now() + self.timeout;
        // Connect before replacing the path: until then it is the old process's socket.
        let old = if self.upgrade {
            match UnixStream::connect(&self.path).await {
                Ok(stream) => Some(stream),
                Err(e) => {
                    info!(
                        "no cache to take over at {} ({e}): starting with an empty cache",
                        self.path.display()
                    );
                    None
                }
            }
        } else {
            None
        };
        let listener = match listen(&self.path) {
            Ok(l) => Some(l),
            Err(e) => {
                warn!(
                    "cache hand-over socket {}: {e}; the next upgrade starts cold",
                    self.path.display()
                );
                None
            }
        };
        if let Some(stream) = old {
            let storage = self.storage;
            tokio::spawn(async move {
                if let Err(e) = receive(storage, stream, deadline).await {
                    warn!("cache hand-over failed ({e}): starting with an empty cache");
                }
            });
        }
        // Offered until the process exits: an upgrade's transfer runs during the grace
        // period, after the shutdown signal.
        let Some(listener) = listener else { return };
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let storage = self.storage;
                    tokio::spawn(async move {
                        if let Err(e) = send(storage, stream).await {
                            debug!("cache hand-over ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    warn!("cache hand-over socket: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_round_trip_and_bad_ones_are_refused() {
        let records = [
            Record::Entry {
                primary: [1; 16],
                combined: [2; 16],
                value: Bytes::from_static(b"value"),
            },
            Record::Removed(Removal::Url([3; 16])),
            Record::Removed(Removal::All),
            Record::Done,
        ];
        let mut wire = BytesMut::new();
        for r in &records {
            encode(r, &mut wire);
        }
        let mut reader = &wire[..];
        for r in records {
            assert_eq!(read_record(&mut reader, 100).await.unwrap(), r);
        }
        let mut too_long = BytesMut::new();
        encode(
            &Record::Entry {
                primary: [0; 16],
                combined: [0; 16],
                value: Bytes::from(vec![0; 101]),
            },
            &mut too_long,
        );
        assert!(read_record(&mut &too_long[..], 100).await.is_err());
        assert!(read_record(&mut &[9u8][..], 100).await.is_err());
        let truncated = &wire[..10];
        assert!(read_record(&mut &truncated[..], 100).await.is_err());
    }

    #[test]
    fn a_whole_stream_reads_to_its_summary() {
        let mut wire = BytesMut::from(&header()[..]);
        for r in [
            Record::Entry {
                primary: [1; 16],
                combined: [2; 16],
                value: Bytes::from_static(b"not an entry"),
            },
            Record::Removed(Removal::All),
            Record::Done,
        ] {
            encode(&r, &mut wire);
        }
        let summary = read_stream(&wire, 100).unwrap();
        assert_eq!(
            summary,
            StreamSummary {
                entries: 0,
                undecodable: 1,
                removals: 1,
                done: true
            }
        );
        assert!(
            read_stream(&wire[..wire.len() - 1], 100).is_err(),
            "no Done"
        );
        assert!(read_stream(b"CPH", 100).is_err());
    }

    #[test]
    fn headers_of_other_versions_are_refused() {
        assert!(check_header(header()).is_ok());
        let mut other = header();
        other[4] = FORMAT_VERSION + 1;
        assert!(check_header(other).unwrap_err().contains("entry format"));
        other = header();
        other[3] = STREAM_VERSION + 1;
        assert!(check_header(other).unwrap_err().contains("stream version"));
        assert!(check_header(*b"HTTP/").is_err());
    }

    #[test]
    fn the_socket_sits_next_to_the_upgrade_socket() {
        assert_eq!(
            socket_path("/run/caching-proxy/upgrade.sock"),
            PathBuf::from("/run/caching-proxy/upgrade.sock.cache")
        );
    }

    #[tokio::test]
    async fn a_stream_moves_entries_and_later_removals() {
        use crate::cache::storage::memory::MemoryLimits;
        use pingora_cache::key::CacheHashKey;
        use pingora_cache::{CacheKey, CacheMeta};
        use pingora_http::ResponseHeader;
        use std::time::SystemTime;

        let limits = MemoryLimits {
            max_bytes: 1 << 30,
            max_entries: 300,
            max_object_bytes: 4 << 20,
            stale_retention: Duration::ZERO,
            max_inflight_bytes: usize::MAX,
        };
        let old = MemoryStorage::new_static(limits);
        let new = MemoryStorage::new_static(limits);
        let now = SystemTime::now();
        let meta = CacheMeta::new(
            now + Duration::from_secs(60),
            now,
            0,
            0,
            ResponseHeader::build(200, None).unwrap(),
        );
        let big = Bytes::from(vec![5u8; 3 << 20]);
        old.put(&CacheKey::new("/big", ""), &meta, big.clone())
            .unwrap();
        old.put(
            &CacheKey::new("/small", ""),
            &meta,
            Bytes::from_static(b"s"),
        )
        .unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let sender = tokio::spawn(send(old, a));
        let receiver = tokio::spawn(receive(new, b, Instant::now() + Duration::from_secs(30)));
        // Wait until both entries arrived, then purge one on the old side.
        let deadline = Instant::now() + Duration::from_secs(30);
        while new.get(&CacheKey::new("/small", "")).is_none()
            || new.get(&CacheKey::new("/big", "")).is_none()
        {
            assert!(Instant::now() < deadline, "entries never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(new.get(&CacheKey::new("/big", "")).unwrap().1, big);
        old.remove_primary(CacheKey::new("/small", "").primary_bin());
        while new.get(&CacheKey::new("/small", "")).is_some() {
            assert!(Instant::now() < deadline, "removal never forwarded");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sender.abort();
        let got = receiver.await.unwrap().unwrap();
        assert_eq!((got.stored, got.completed), (2, true));
    }
}
