//! The admin service's own listener.
//!
//! Pingora's listening services close their sockets the moment shutdown begins, but the
//! admin service must keep answering while the proxy drains: `/health/ready` says 503 then,
//! and a probe that cannot connect at all is a poor signal. So the admin service runs as a
//! background service with a listener of its own, served by Pingora's HTTP server code, that
//! lives until the process exits.
//!
//! The socket is opened with `SO_REUSEPORT`: during a zero-downtime upgrade the new process
//! binds the admin port while the old one still holds it, and both answer until the old one
//! exits (its proxy listeners are handed over by Pingora; this one is not). Only that new
//! process may share the port: any other start first checks that the port is free, so a
//! second instance on the same admin port is a start-up error, not a silent neighbour that
//! would answer half of the scrapes and `--clear-cache` calls.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use log::{error, warn};
use parking_lot::Mutex;
use pingora_core::apps::http_app::HttpServer;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::listener::Listener;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use socket2::{Domain, Socket, Type};
use tokio::sync::watch;

use super::AdminApp;

pub struct AdminListener {
    app: Arc<HttpServer<AdminApp>>,
    listener: Mutex<Option<std::net::TcpListener>>,
}

impl AdminListener {
    /// Binds the admin address now, so that a port in use is a start-up error. `upgrade`:
    /// this process takes over from a running one, which holds the port until it exits.
    pub fn bind(app: AdminApp, listen: SocketAddr, upgrade: bool) -> std::io::Result<Self> {
        if !upgrade {
            check_free(listen)?;
        }
        Ok(AdminListener {
            app: Arc::new(HttpServer::new_app(app)),
            listener: Mutex::new(Some(bind(listen)?)),
        })
    }
}

/// Fails when another socket listens on `addr`, whether or not it allows sharing: a socket
/// without `SO_REUSEPORT` cannot bind beside one.
fn check_free(addr: SocketAddr) -> std::io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Connections of an earlier run in TIME_WAIT do not count as "in use".
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

/// Opens the admin socket (`SO_REUSEADDR` and `SO_REUSEPORT`, see the module doc).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

#[async_trait]
impl BackgroundService for AdminListener {
    /// Serves until the process exits; the shutdown signal is deliberately not awaited.
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(listener) = self.listener.lock().take() else {
            return; // started twice
        };
        // Pingora's listener wrapper records each client's address in its stream.
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => Listener::from(listener),
            Err(e) => {
                error!("admin service cannot use its socket: {e}; exiting");
                std::process::exit(1);
            }
        };
        // Connections are never told to wind down: they end with the process.
        let (_keep, never) = watch::channel(false);
        loop {
            let stream = match listener.accept().await {
                Ok(stream) => stream,
                Err(e) => {
                    warn!("admin accept failed: {e}");
                    continue;
                }
            };
            let app = self.app.clone();
            let never = never.clone();
            tokio::spawn(async move {
                let mut stream: Option<pingora_core::protocols::Stream> = Some(Box::new(stream));
                while let Some(s) = stream.take() {
                    stream = app.process_new(s, &never).await;
                }
            });
        }
    }
}
