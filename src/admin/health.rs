//! Readiness: ready once the proxy and admin listeners accept connections; not ready from
//! the moment a shutdown (SIGTERM) begins, while in-flight requests drain and the admin
//! service keeps answering. A zero-downtime upgrade (SIGQUIT) is not a shutdown of the
//! service: the old process hands its listeners over and stays ready while it drains.
//!
//! Pingora reports a listening service started before its sockets are bound, retries a bind
//! to a port in use for 30 s, and then panics that service's thread while the rest of the
//! process runs on. So readiness is established by asking our own listeners a question only
//! this process can answer (a per-process [`ProbeToken`], echoed back), and a listener that
//! never answers ends the process instead of leaving it half up. A plain connect would not
//! do: while our bind is being retried, another process may be the one accepting.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use log::{error, info};
use parking_lot::Mutex;
use pingora_core::server::ExecutionPhase;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::{broadcast, watch};

use crate::logging;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the listeners may take to start accepting.
const STARTUP_DEADLINE: Duration = Duration::from_secs(10);

/// Whether the process takes traffic; it remembers having been ready, so that the status
/// page can tell starting from draining.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    was_ready: Arc<AtomicBool>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set(&self, ready: bool) {
        if ready {
            self.was_ready.store(true, Ordering::Release);
        }
        self.ready.store(ready, Ordering::Release);
    }

    /// `starting`, `ready` or `draining`.
    pub fn state(&self) -> &'static str {
        match (self.is_ready(), self.was_ready.load(Ordering::Acquire)) {
            (true, _) => "ready",
            (false, false) => "starting",
            (false, true) => "draining",
        }
    }
}

/// Header carrying the probe token; a listener of this process echoes it back. A parsed name:
/// the proxy looks for it in every request, and a lookup by text would parse it each time.
pub const PROBE_HEADER: HeaderName = HeaderName::from_static("x-caching-proxy-probe");

/// A random value known only to this process, used to recognise its own listeners.
#[derive(Debug, Clone)]
pub struct ProbeToken(HeaderValue);

impl ProbeToken {
    pub fn new() -> Self {
        let token = crate::headers::new_request_id();
        ProbeToken(HeaderValue::from_str(&token).expect("hex is a valid header value"))
    }

    /// Whether a request carries this process's token.
    pub fn matches(&self, value: Option<&HeaderValue>) -> bool {
        value == Some(&self.0)
    }

    pub fn value(&self) -> &HeaderValue {
        &self.0
    }
}

impl Default for ProbeToken {
    fn default() -> Self {
        Self::new()
    }
}

/// A listener of this process, and whether it speaks TLS.
#[derive(Debug, Clone, Copy)]
pub struct Listener {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// Marks the process ready once every address in `listeners` answers the probe, and not
/// ready when a graceful termination begins.
pub struct ReadinessService {
    pub readiness: Readiness,
    pub listeners: Vec<Listener>,
    pub token: ProbeToken,
    /// Pingora's execution phases: tell a termination from an upgrade.
    pub phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    /// Turns true when a service that must have started first has (the Redis tier's first
    /// connection attempt); waited for at most [`BEFORE_READY_WAIT`].
    pub before_ready: Mutex<Option<watch::Receiver<bool>>>,
}

/// Bound on the wait for `before_ready`: past it the process is ready anyway.
const BEFORE_READY_WAIT: Duration = Duration::from_secs(3);

/// Writes the probe on `stream` and reads the whole answer.
async fn exchange<S>(mut stream: S, token: &ProbeToken) -> std::io::Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!(
        "GET /health/live HTTP/1.1\r\nHost: readiness\r\n{PROBE_HEADER}: {}\r\nConnection: close\r\n\r\n",
        token.value().to_str().unwrap_or_default()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::with_capacity(1024);
    // A TLS peer that closes without close_notify is fine: the answer is what counts.
    let _ = stream.read_to_end(&mut answer).await;
    Ok(answer)
}

/// Sends the probe to `listener`; true when the answer echoes our token.
async fn answers_probe(listener: Listener, token: &ProbeToken) -> bool {
    let addr = connectable(listener.addr);
    let probe = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        if listener.tls {
            let name = rustls::pki_types::ServerName::from(addr.ip());
            let stream = crate::tls::probe::connector().connect(name, stream).await?;
            exchange(stream, token).await
        } else {
            exchange(stream, token).await
        }
    };
    match tokio::time::timeout(Duration::from_secs(1), probe).await {
        Ok(Ok(answer)) => {
            let expected = format!(
                "{PROBE_HEADER}: {}",
                token.value().to_str().unwrap_or_default()
            );
            String::from_utf8_lossy(&answer)
                .to_ascii_lowercase()
                .contains(&expected)
        }
        _ => false,
    }
}

/// Where to connect to reach a listener: wildcard addresses are reached through loopback.
pub fn connectable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

#[async_trait]
impl BackgroundService for ReadinessService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        for &listener in &self.listeners {
            let listen = listener.addr;
            loop {
                if *shutdown.borrow() {
                    return;
                }
                if answers_probe(listener, &self.token).await {
                    break;
                }
                if Instant::now() > deadline {
                    error!(
                        "cannot listen on {listen}: this process does not answer there after \
                         {STARTUP_DEADLINE:?} (is the port held by another process?); exiting"
                    );
                    std::process::exit(1);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let before = self.before_ready.lock().take();
        if let Some(mut before) = before {
            let _ = tokio::time::timeout(BEFORE_READY_WAIT, before.wait_for(|done| *done)).await;
        }
        self.readiness.set(true);
        let addrs: Vec<String> = self
            .listeners
            .iter()
            .map(|l| format!("{}{}", l.addr, if l.tls { " (tls)" } else { "" }))
            .collect();
        info!("ready: accepting on {addrs:?}");
        let Some(mut phases) = self.phases.lock().take() else {
            return;
        };
        loop {
            match phases.recv().await {
                Ok(ExecutionPhase::GracefulTerminate) => {
                    self.readiness.set(false);
                    logging::event(
                        "draining: not ready, finishing in-flight requests",
                        serde_json::json!({}),
                    );
                }
                Ok(ExecutionPhase::GracefulUpgradeTransferringFds) => {
                    logging::event(
                        "upgrading: handing the listeners to the new process",
                        serde_json::json!({}),
                    );
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_tells_starting_from_draining() {
        let r = Readiness::default();
        assert_eq!(r.state(), "starting");
        r.set(true);
        assert_eq!(r.state(), "ready");
        r.set(false);
        assert_eq!((r.state(), r.is_ready()), ("draining", false));
    }

    #[test]
    fn wildcard_listen_is_reached_on_loopback() {
        let c = |a: &str| connectable(a.parse().unwrap());
        assert_eq!(c("0.0.0.0:9091"), "127.0.0.1:9091".parse().unwrap());
        assert_eq!(c("[::]:9091"), "[::1]:9091".parse().unwrap());
        assert_eq!(c("10.1.2.3:9091"), "10.1.2.3:9091".parse().unwrap());
    }
}
