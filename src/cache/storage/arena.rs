//! Large cached bodies in one memory-backed file (a memfd), so that an HTTP/1 hit can send
//! them with sendfile(2): the socket then takes references to the file's pages instead of a
//! fresh copy of the body per response, which is most of what a large hit costs the CPU that
//! serves it (the copy's writes miss every cache line of the socket's buffer).
//!
//! Every other reader (TLS, HTTP/2, range requests, the Redis tier) sees the same body as a
//! `Bytes` over a read-only mapping of the file, so nothing else changes. A body's pages are
//! held while any `Bytes` of it lives; when the last one goes, its range is punched out of the
//! file before the range is handed out again. Pages a socket still holds from an earlier
//! sendfile are the socket's own by then (the punch drops only the file's references), so a
//! response in flight never sees a later body's bytes.
//!
//! Space is page-granular: [`footprint`] is what a stored body counts against the cache's
//! byte bound. Without a memfd (an old kernel, a sandbox) or once the file's address range is
//! used up, bodies stay on the heap as before.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use bytes::Bytes;
use log::warn;
use once_cell::sync::Lazy;
use parking_lot::Mutex;

/// Bodies from this size go into the file. A file body costs a system call more per hit
/// (the header is sent before it) and its last page's unused part; at 16 KiB the load
/// benchmark shows the two ways even, and from there on the copy saved wins (256 KiB hits:
/// 1.4 times the requests per second).
pub(super) const MIN_BODY: usize = 16 * 1024;

const PAGE: u64 = 4096;

/// The file's size and the mapping's: address space only (holes take no memory), enough for
/// any cache this machine can hold. A full range sends new bodies to the heap.
const SPAN: u64 = 256 << 30;

/// The process's body file; `None` where it cannot be made.
static ARENA: Lazy<Option<Arena>> = Lazy::new(|| match Arena::new(SPAN) {
    Ok(arena) => Some(arena),
    Err(e) => {
        warn!(
            "cached bodies stay on the heap (no memory-backed file: {e}); hits cannot use sendfile"
        );
        None
    }
});

struct Arena {
    fd: OwnedFd,
    /// The start of a read-only shared mapping of the whole file.
    base: *const u8,
    span: u64,
    space: Mutex<Space>,
}

// Safety: the mapping is read-only and lives as long as the process; `space` is locked.
unsafe impl Send for Arena {}
unsafe impl Sync for Arena {}

impl Arena {
    fn new(span: u64) -> io::Result<Self> {
        // Safety: plain system calls on a descriptor this function owns.
        unsafe {
            let fd = libc::memfd_create(c"caching-proxy-bodies".as_ptr(), libc::MFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let size = libc::off_t::try_from(span).map_err(|_| io::ErrorKind::InvalidInput)?;
            if libc::ftruncate(fd.as_raw_fd(), size) != 0 {
                return Err(io::Error::last_os_error());
            }
            let base = libc::mmap(
                std::ptr::null_mut(),
                span as usize,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                fd.as_raw_fd(),
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            Ok(Arena {
                fd,
                base: base as *const u8,
                span,
                space: Mutex::new(Space::default()),
            })
        }
    }

    /// Writes `chunks` (`len` bytes together) into a new range; `None` when no range is free
    /// or the write fails.
    fn store(&'static self, chunks: &[Bytes], len: usize) -> Option<Bytes> {
        let pages = round_up(len as u64);
        let offset = self.space.lock().take(pages, self.span)?;
        if let Err(e) = self.write(chunks, offset) {
            warn!("storing a body in the body file failed, it stays on the heap: {e}");
            self.release(offset, pages);
            return None;
        }
        Some(Bytes::from_owner(Body {
            arena: self,
            offset,
            len,
        }))
    }

    fn write(&self, chunks: &[Bytes], mut offset: u64) -> io::Result<()> {
        let mut iov: Vec<libc::iovec> = chunks
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| libc::iovec {
                iov_base: c.as_ptr() as *mut libc::c_void,
                iov_len: c.len(),
            })
            .collect();
        let mut first = 0;
        while first < iov.len() {
            // At most IOV_MAX (1024) slices per call.
            let count = (iov.len() - first).min(1024);
            // Safety: every slice points into a `Bytes` borrowed for the call.
            let n = unsafe {
                libc::pwritev(
                    self.fd.as_raw_fd(),
                    iov[first..].as_ptr(),
                    count as libc::c_int,
                    offset as libc::off_t,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let mut n = n as usize;
            offset += n as u64;
            while n > 0 {
                let v = &mut iov[first];
                if n >= v.iov_len {
                    n -= v.iov_len;
                    first += 1;
                } else {
                    // Safety: advancing within the same slice.
                    v.iov_base = unsafe { (v.iov_base as *mut u8).add(n) } as *mut _;
                    v.iov_len -= n;
                    n = 0;
                }
            }
        }
        Ok(())
    }

    /// Gives a range back: its pages leave the file first, so that the next body written
    /// there gets new ones. A range whose pages cannot be dropped is not reused.
    fn release(&self, offset: u64, pages: u64) {
        // Safety: a plain system call on the arena's descriptor.
        let rc = unsafe {
            libc::fallocate(
                self.fd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                pages as libc::off_t,
            )
        };
        if rc != 0 {
            warn!(
                "dropping {pages} bytes of a body from the body file failed, the range is not reused: {}",
                io::Error::last_os_error()
            );
            return;
        }
        self.space.lock().give(offset, pages);
    }

    fn offset_of(&self, body: &Bytes) -> Option<u64> {
        let at = (body.as_ptr() as usize).checked_sub(self.base as usize)? as u64;
        (at + body.len() as u64 <= self.span && !body.is_empty()).then_some(at)
    }
}

/// The owner of a stored body's range: the `Bytes` over it keep it alive.
struct Body {
    arena: &'static Arena,
    offset: u64,
    len: usize,
}

// Safety: read-only memory of a process-long mapping.
unsafe impl Send for Body {}
unsafe impl Sync for Body {}

impl AsRef<[u8]> for Body {
    fn as_ref(&self) -> &[u8] {
        // Safety: the range was written before this owner was made and stays mapped and
        // unchanged until it is dropped.
        unsafe { std::slice::from_raw_parts(self.arena.base.add(self.offset as usize), self.len) }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.arena.release(self.offset, round_up(self.len as u64));
    }
}

/// Free ranges of the file: best fit from the freed ones, else the untouched end.
#[derive(Default)]
struct Space {
    by_offset: BTreeMap<u64, u64>,
    by_size: BTreeSet<(u64, u64)>,
    /// Everything from here on has never been handed out, or came back.
    top: u64,
}

impl Space {
    fn take(&mut self, size: u64, span: u64) -> Option<u64> {
        if let Some(&(free, offset)) = self.by_size.range((size, 0)..).next() {
            self.remove(offset, free);
            if free > size {
                self.insert(offset + size, free - size);
            }
            return Some(offset);
        }
        let offset = self.top;
        (offset + size <= span).then(|| {
            self.top += size;
            offset
        })
    }

    fn give(&mut self, mut offset: u64, mut size: u64) {
        if let Some((&before, &len)) = self.by_offset.range(..offset).next_back() {
            if before + len == offset {
                self.remove(before, len);
                offset = before;
                size += len;
            }
        }
        if let Some(&len) = self.by_offset.get(&(offset + size)) {
            self.remove(offset + size, len);
            size += len;
        }
        if offset + size == self.top {
            self.top = offset;
        } else {
            self.insert(offset, size);
        }
    }

    fn insert(&mut self, offset: u64, size: u64) {
        self.by_offset.insert(offset, size);
        self.by_size.insert((size, offset));
    }

    fn remove(&mut self, offset: u64, size: u64) {
        self.by_offset.remove(&offset);
        self.by_size.remove(&(size, offset));
    }
}

fn round_up(len: u64) -> u64 {
    len.div_ceil(PAGE) * PAGE
}

/// The body of `chunks` (`len` bytes together) in the body file when it is large enough
/// and there is room; `None` leaves it to the caller's heap copy.
pub(super) fn store(chunks: &[Bytes], len: usize) -> Option<Bytes> {
    if len < MIN_BODY {
        return None;
    }
    ARENA.as_ref()?.store(chunks, len)
}

/// `body` in the body file: as it is when it already lives there or is too small to
/// belong there (or there is no room), else a copy.
pub(super) fn place(body: Bytes) -> Bytes {
    if body.len() < MIN_BODY || region(&body).is_some() {
        return body;
    }
    store(std::slice::from_ref(&body), body.len()).unwrap_or(body)
}

/// Where `body` lies in the body file: its descriptor and offset; `None` for a body on the
/// heap.
pub fn region(body: &Bytes) -> Option<(RawFd, u64)> {
    let arena = ARENA.as_ref()?;
    Some((arena.fd.as_raw_fd(), arena.offset_of(body)?))
}

/// What `body` takes in memory: whole pages in the body file, its length on the heap.
pub(super) fn footprint(body: &Bytes) -> usize {
    match region(body) {
        Some((_, offset)) => (round_up(offset + body.len() as u64) - offset / PAGE * PAGE) as usize,
        None => body.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_at(fd: RawFd, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        // Safety: reading into an owned buffer of `len` bytes.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr() as *mut _, len, offset as libc::off_t) };
        assert_eq!(n as usize, len);
        buf
    }

    #[test]
    fn a_large_body_lives_in_the_file_and_reads_back() {
        let chunks: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![i; 1000])).collect();
        let body = store(&chunks, 40_000).expect("in the file");
        let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(&body[..], &expected[..]);
        let (fd, offset) = region(&body).expect("a region");
        assert_eq!(offset % PAGE, 0);
        assert_eq!(read_at(fd, offset, 40_000), expected);
        assert_eq!(footprint(&body), 40_960);
        // A slice is still in the file, and so are its pages.
        let tail = body.slice(5000..);
        assert_eq!(region(&tail).map(|r| r.1), Some(offset + 5000));
        assert_eq!(footprint(&tail), 36_864);
    }

    #[test]
    fn small_bodies_stay_on_the_heap() {
        assert!(store(&[Bytes::from(vec![1; 100])], 100).is_none());
        let body = place(Bytes::from(vec![1; MIN_BODY - 1]));
        assert!(region(&body).is_none());
        assert_eq!(footprint(&body), MIN_BODY - 1);
        let body = place(Bytes::from(vec![2; MIN_BODY]));
        assert!(region(&body).is_some());
        assert_eq!(&body[..], &vec![2; MIN_BODY][..]);
    }

    #[test]
    fn a_range_is_emptied_before_it_is_used_again() {
        // An arena of its own: another test could reuse a range of the shared one.
        let arena: &'static Arena = Box::leak(Box::new(Arena::new(1 << 30).unwrap()));
        let body = arena
            .store(&[Bytes::from(vec![7; 3 * 4096])], 3 * 4096)
            .unwrap();
        let (fd, offset) = (arena.fd.as_raw_fd(), arena.offset_of(&body).unwrap());
        let copy = body.slice(..);
        drop(body);
        // A slice still holds the range.
        assert_eq!(read_at(fd, offset, 4096), vec![7; 4096]);
        drop(copy);
        assert_eq!(read_at(fd, offset, 4096), vec![0; 4096], "punched out");
        let next = arena.store(&[Bytes::from(vec![8; 4096])], 4096).unwrap();
        assert_eq!(
            arena.offset_of(&next),
            Some(offset),
            "the range is used again"
        );
    }

    #[test]
    fn freed_space_is_merged_and_reused() {
        let mut s = Space::default();
        let span = 100 * PAGE;
        let a = s.take(PAGE, span).unwrap();
        let b = s.take(2 * PAGE, span).unwrap();
        let c = s.take(PAGE, span).unwrap();
        assert_eq!((a, b, c), (0, PAGE, 3 * PAGE));
        s.give(a, PAGE);
        s.give(b, 2 * PAGE);
        // One free range of three pages now: a three-page body fits at the start.
        assert_eq!(s.take(3 * PAGE, span), Some(0));
        s.give(0, 3 * PAGE);
        s.give(c, PAGE);
        assert_eq!(s.top, 0);
        assert!(s.by_offset.is_empty() && s.by_size.is_empty());
        assert_eq!(s.take(span + PAGE, span), None, "more than the file holds");
    }
}
