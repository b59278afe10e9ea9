//! Serving the first request of connections accepted just before the listeners stop.
//!
//! When Pingora stops a service (SIGTERM, or the end of an upgrade's hand-over window) it
//! stops accepting, then calls the app's `http_cleanup`, and pingora-proxy then drops every
//! connection still waiting for a request header: idle keep-alive connections, which is
//! intended (clients retry an idempotent request on a new connection), but also connections
//! accepted a moment earlier whose first request has not arrived yet. Over TLS that moment
//! is a whole handshake plus a round trip, so during an upgrade under load some fresh
//! connections were reset right after their handshake, and a client cannot tell that from a
//! failure. [`ServeAccepted`] wraps the proxy and delays the cleanup by a short bound: a
//! connection the old process accepted still gets its first request read and answered (with
//! `Connection: close`, since the service is stopping) before waiting connections are
//! dropped. The bound is within the grace period, so the exit is never delayed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;

/// Longest wait for the first request of a connection accepted before the stop: a TLS
/// handshake and a request, over a slow network.
pub const FIRST_REQUEST_WAIT: Duration = Duration::from_secs(1);

/// An HTTP app whose cleanup (dropping connections that wait for a request) comes `wait`
/// after the listeners stopped.
pub struct ServeAccepted<A> {
    inner: Arc<A>,
    wait: Duration,
}

impl<A> ServeAccepted<A> {
    /// `grace_period` bounds the wait: in-flight requests get that long anyway.
    pub fn new(inner: A, grace_period: Duration) -> Self {
        ServeAccepted {
            inner: Arc::new(inner),
            wait: FIRST_REQUEST_WAIT.min(grace_period),
        }
    }
}

#[async_trait]
impl<A> HttpServerApp for ServeAccepted<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    // Not `async`: it hands back the proxy's own future (already boxed by `async_trait`),
    // so each request's session is not moved into one more future on its way in.
    fn process_new_http<'life0, 'life1, 'async_trait>(
        self: &'life0 Arc<Self>,
        session: ServerSession,
        shutdown: &'life1 ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<ReusedHttpStream>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.process_new_http(session, shutdown)
    }

    // The proxy's own loop over a connection's requests: one future per connection (see
    // `HttpServerApp::process_h1_connection` in vendor/pingora-core).
    fn process_h1_connection<'life0, 'life1, 'async_trait>(
        self: &'life0 Arc<Self>,
        session: ServerSession,
        shutdown: &'life1 ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait + Send + Sync,
    {
        self.inner.process_h1_connection(session, shutdown)
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        tokio::time::sleep(self.wait).await;
        self.inner.http_cleanup().await;
    }
}
