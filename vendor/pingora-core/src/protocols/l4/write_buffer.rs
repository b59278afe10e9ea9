// caching-proxy patch (see vendor/README.md): the write buffer of an L4 stream, sending a
// large write together with what is buffered in one vectored write instead of copying it.

//! A write buffer for [`Stream`](super::stream::Stream): tokio's `BufWriter`, except for a
//! large write that arrives while something is buffered.
//!
//! An HTTP/1 response is written as its header, then its body. With a buffer larger than
//! the response, tokio's `BufWriter` copies the body in behind the header and sends both
//! at the flush: one send, but a copy of every body byte. Here a write of at least
//! [`DIRECT_WRITE`] bytes while bytes are buffered goes to the socket at once, in one
//! vectored write of the buffered bytes and the new ones: still one send, without the copy.
//! Everything else is `BufWriter`'s behaviour, except that the buffer is allocated by the
//! first write that needs it and released once everything in it is written: a keep-alive
//! connection between requests holds no buffer, and responses, on whichever connection, are
//! written into the few blocks the allocator keeps handing out for it instead of into each
//! connection's own buffer: a working set that does not grow with the number of connections.

use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The smallest write sent with the buffered bytes rather than copied behind them: below
/// this, copying costs less than the extra vectored-write entry.
pub const DIRECT_WRITE: usize = 4096;

/// A buffered writer over `W` (see the module doc).
pub struct WriteBuffer<W> {
    inner: W,
    /// Empty and unallocated while nothing is buffered; `capacity` bytes once it is.
    buf: Vec<u8>,
    /// The buffer's size when it is allocated (0: every write goes straight through).
    capacity: usize,
    /// How much of `buf` has been written (a flush interrupted by a full socket).
    written: usize,
}

impl<W> WriteBuffer<W> {
    pub fn with_capacity(capacity: usize, inner: W) -> Self {
        WriteBuffer {
            inner,
            buf: Vec::new(),
            capacity,
            written: 0,
        }
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner writer; anything still buffered is lost.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: AsyncWrite + Unpin> WriteBuffer<W> {
    /// Appends to the buffer, allocating it first if it is not (the caller checked that
    /// `data` fits in `capacity`).
    fn buffer_up(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.capacity);
        }
        self.buf.extend_from_slice(data);
    }

    /// Everything buffered is written: release the buffer (see the module doc).
    fn release(&mut self) {
        self.buf = Vec::new();
        self.written = 0;
    }

    /// The bytes buffered and not yet written.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.written..]
    }

    /// Marks the first `n` bytes of [`Self::buffer`] as written by the caller, straight to
    /// the inner writer's socket.
    pub fn consume_buffered(&mut self, n: usize) {
        self.consume(n.min(self.buf.len() - self.written));
    }

    /// Marks `n` buffered bytes as written; drops the buffer's contents once all are.
    fn consume(&mut self, n: usize) {
        self.written += n;
        if self.written == self.buf.len() {
            self.release();
        }
    }

    fn flush_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..])) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "failed to write the buffered data",
                    )))
                }
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        if self.buf.capacity() != 0 {
            self.release();
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the buffered bytes and the start of `data` in one vectored write until the
    /// buffer is empty; returns how much of `data` went with them (possibly 0, then `data`
    /// is written as by an empty buffer).
    fn write_with_buffered(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        while self.written < self.buf.len() {
            let pending = self.buf.len() - self.written;
            let bufs = [IoSlice::new(&self.buf[self.written..]), IoSlice::new(data)];
            match ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs)) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "failed to write the buffered data",
                    )))
                }
                Ok(n) if n >= pending => {
                    self.consume(pending);
                    return Poll::Ready(Ok(n - pending));
                }
                Ok(n) => self.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(0))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for WriteBuffer<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        if data.len() >= DIRECT_WRITE && me.written < me.buf.len() && me.inner.is_write_vectored() {
            let n = ready!(me.write_with_buffered(cx, data))?;
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
        }
        // tokio's `BufWriter::poll_write`.
        if me.buf.len() + data.len() > me.capacity {
            ready!(me.flush_buf(cx))?;
        }
        if data.len() >= me.capacity {
            Pin::new(&mut me.inner).poll_write(cx, data)
        } else {
            me.buffer_up(data);
            Poll::Ready(Ok(data.len()))
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // tokio's `BufWriter::poll_write_vectored` for a vectored inner writer; otherwise
        // the first non-empty slice as one write.
        let me = &mut *self;
        if !me.inner.is_write_vectored() {
            let data = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return Pin::new(me).poll_write(cx, data);
        }
        let total = bufs
            .iter()
            .fold(0usize, |acc, b| acc.saturating_add(b.len()));
        if total > me.capacity - me.buf.len() {
            ready!(me.flush_buf(cx))?;
        }
        if total >= me.capacity {
            Pin::new(&mut me.inner).poll_write_vectored(cx, bufs)
        } else {
            bufs.iter().for_each(|b| me.buffer_up(b));
            Poll::Ready(Ok(total))
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.flush_buf(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.flush_buf(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<W: AsyncRead + Unpin> AsyncRead for WriteBuffer<W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<W: fmt::Debug> fmt::Debug for WriteBuffer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBuffer")
            .field("writer", &self.inner)
            .field(
                "buffer",
                &format_args!("{}/{}", self.buf.len() - self.written, self.capacity),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Takes at most `limit` bytes per write (vectored or not), `Pending` every other call.
    struct Trickle {
        out: Vec<u8>,
        limit: usize,
        calls: usize,
        vectored_writes: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = data.len().min(self.limit);
            self.out.extend_from_slice(&data[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.vectored_writes += 1;
            let mut left = self.limit;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(left);
                self.out.extend_from_slice(&b[..take]);
                left -= take;
                n += take;
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn trickle(limit: usize) -> Trickle {
        Trickle {
            out: Vec::new(),
            limit,
            calls: 0,
            vectored_writes: 0,
        }
    }

    /// Header-then-body writes of every size class arrive whole and in order, however the
    /// inner writer splits them.
    #[tokio::test]
    async fn bytes_arrive_in_order_through_partial_writes() {
        for limit in [1, 7, 300, 5000, 1 << 20] {
            for body in [0, 100, DIRECT_WRITE - 1, DIRECT_WRITE, 16 * 1024, 40 * 1024] {
                let mut w = WriteBuffer::with_capacity(32 * 1024, trickle(limit));
                let mut expected = Vec::new();
                for i in 0..3u8 {
                    let header = vec![b'h' + i; 300];
                    let data: Vec<u8> = (0..body).map(|j| (j % 251) as u8 ^ i).collect();
                    w.write_all(&header).await.unwrap();
                    w.write_all(&data).await.unwrap();
                    expected.extend_from_slice(&header);
                    expected.extend_from_slice(&data);
                }
                w.flush().await.unwrap();
                assert!(w.buffer().is_empty());
                assert_eq!(w.get_ref().out, expected, "limit {limit}, body {body}");
            }
        }
    }

    /// A 16 KiB body after a buffered header leaves in one vectored write with it, not
    /// copied into the buffer; a small body is buffered behind the header.
    #[tokio::test]
    async fn a_large_write_goes_out_with_the_buffered_bytes() {
        let mut w = WriteBuffer::with_capacity(32 * 1024, trickle(1 << 20));
        w.write_all(&[b'h'; 300]).await.unwrap();
        w.write_all(&[b'b'; 16 * 1024]).await.unwrap();
        assert!(w.buffer().is_empty(), "nothing copied into the buffer");
        assert_eq!(w.get_ref().vectored_writes, 1);
        assert_eq!(w.get_ref().out.len(), 300 + 16 * 1024);

        w.write_all(&[b'h'; 300]).await.unwrap();
        w.write_all(&[b'b'; 1024]).await.unwrap();
        assert_eq!(w.buffer().len(), 1324, "a small body waits for the flush");
        w.flush().await.unwrap();
        assert_eq!(w.get_ref().out.len(), 2 * 300 + 17 * 1024);
    }

    /// The buffer is held only while something is in it: allocated whole by the first
    /// buffered write, released by the flush that empties it and by a large write that
    /// takes the buffered bytes with it; never allocated for empty writes.
    #[tokio::test]
    async fn the_buffer_is_held_only_while_bytes_wait() {
        let mut w = WriteBuffer::with_capacity(32 * 1024, trickle(1 << 20));
        assert_eq!(w.buf.capacity(), 0, "no buffer before the first write");
        w.write_all(&[]).await.unwrap();
        assert_eq!(w.buf.capacity(), 0, "an empty write allocates nothing");

        w.write_all(&[b'h'; 300]).await.unwrap();
        assert_eq!(w.buf.capacity(), 32 * 1024, "allocated whole, never grown");
        w.write_all(&[b'b'; 1024]).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.buf.capacity(), 0, "released by the flush");

        w.write_all(&[b'h'; 300]).await.unwrap();
        w.write_all(&[b'b'; 16 * 1024]).await.unwrap();
        assert_eq!(
            w.buf.capacity(),
            0,
            "released when the large write took it along"
        );
        assert_eq!(w.get_ref().out.len(), 2 * 300 + 17 * 1024);

        let mut unbuffered = WriteBuffer::with_capacity(0, trickle(1 << 20));
        unbuffered.write_all(&[b'h'; 300]).await.unwrap();
        assert_eq!(
            unbuffered.buf.capacity(),
            0,
            "capacity 0 writes straight through"
        );
        assert_eq!(unbuffered.get_ref().out.len(), 300);
    }
}
