// caching-proxy: not part of the published pingora-core (see vendor/README.md).

//! The writer of a server-side HTTP/2 connection: every other flush waits for the next poll.
//!
//! h2 does not copy a DATA payload of 1 KiB or more into its write buffer; it keeps it aside
//! and can hold one such frame at a time, so it flushes the connection to make room after
//! each. A 1 KiB response (HEADERS and DATA, then an empty DATA with END_STREAM) left in two
//! sends, and the responses of concurrent streams each in their own. Each send on a busy
//! connection costs a system call, a TCP segment and a wake-up of the client.
//!
//! Here a flush that follows a real one returns at once and leaves the bytes in the
//! connection's write buffer, and the connection's task is woken. h2 flushes at the end of
//! every poll of the connection, so that next poll, after the tasks that were ready before
//! it (often the other streams writing their responses), sends everything in one write.
//! No byte waits for more than one turn of the connection's task; shutdown flushes first.

use async_trait::async_trait;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::protocols::raw_connect::ProxyDigest;
use crate::protocols::tls::{SslDigest, TlsRef};
use crate::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};

#[derive(Debug)]
pub(super) struct DeferredFlush {
    inner: Stream,
    /// The last flush was deferred: the next one is real.
    deferred: bool,
}

impl DeferredFlush {
    pub(super) fn new(inner: Stream) -> Self {
        DeferredFlush {
            inner,
            deferred: false,
        }
    }
}

impl AsyncRead for DeferredFlush {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for DeferredFlush {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.deferred {
            self.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if flushed.is_ready() {
            self.deferred = false;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The inner stream flushes what it holds before it shuts down.
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for DeferredFlush {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for DeferredFlush {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for DeferredFlush {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for DeferredFlush {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for DeferredFlush {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for DeferredFlush {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

#[async_trait]
impl Peek for DeferredFlush {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}
