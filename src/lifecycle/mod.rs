//! Process signals that Pingora leaves to the application: SIGHUP, the operator's "reload";
//! and [`drain`], which serves connections accepted just before the listeners stop.
//!
//! Pingora handles SIGQUIT (hand the listeners to a new process, then drain), SIGTERM
//! (graceful stop) and SIGINT (fast stop) itself, and nothing else: the default action of
//! SIGHUP terminates the process. This module is the one place where SIGHUP is handled:
//!
//! 1. [`catch_sighup`] runs first in `server::build`, before Pingora's bootstrap: from then on
//!    a SIGHUP only raises a flag, so it can no longer kill the process, even while a new
//!    process (`-u`) waits for the old one's listeners or the daemon forks.
//! 2. [`SighupService`], a Pingora background service, waits for SIGHUP (and takes a signal
//!    that arrived during start-up) and runs each registered [`Reload`] in turn, logging
//!    what each did. A reload that fails leaves what it reloads as it was; the process
//!    keeps serving either way, and connections are never touched.
//!
//! What SIGHUP reloads is the list of [`Reload`]s given by `server::build`. Today that is
//! the TLS certificates, swapped in place (`tls::Certificates::reload`): no new process, no
//! dropped connection. A reload of the whole configuration (issue 11: start the same binary
//! with `-u` and the same arguments and environment, wait until it has validated its
//! configuration, then hand the listeners over as the upgrade does) plugs in here as one
//! more `Reload`, or replaces the certificate one, since the new process loads the
//! certificates itself; the signal plumbing above stays as it is. A second SIGHUP that
//! arrives while reloads run is taken once they finish (signals are coalesced, never lost).

pub mod drain;

pub use drain::ServeAccepted;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use log::{error, info};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::logging;

/// Something SIGHUP reloads.
pub trait Reload: Send + Sync {
    /// What is reloaded, for logs (`tls certificates`).
    fn name(&self) -> &'static str;
    /// Reloads; on an error what was in use stays in use. Runs on a blocking thread: it may
    /// read files or wait for a child process.
    fn reload(&self) -> Result<(), String>;
}

/// The SIGHUP flag, raised by the signal itself from the moment [`catch_sighup`] returns.
#[derive(Clone)]
pub struct Sighup {
    pending: Arc<AtomicBool>,
}

/// Replaces SIGHUP's default action (terminate) with raising a flag. Call before anything
/// else that takes time: Pingora's bootstrap may wait for an upgrade hand-over.
pub fn catch_sighup() -> std::io::Result<Sighup> {
    let pending = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, pending.clone())?;
    Ok(Sighup { pending })
}

impl Sighup {
    /// Whether a SIGHUP arrived since the last call.
    fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }
}

/// Runs the reloads on each SIGHUP.
pub struct SighupService {
    pub sighup: Sighup,
    pub reloads: Vec<Arc<dyn Reload>>,
}

impl SighupService {
    async fn run_reloads(&self) {
        logging::event(
            "SIGHUP: reloading",
            serde_json::json!({ "what": self.reloads.iter().map(|r| r.name()).collect::<Vec<_>>() }),
        );
        if self.reloads.is_empty() {
            info!("SIGHUP: nothing to reload (no TLS listener)");
        }
        for reload in &self.reloads {
            let task = reload.clone();
            match tokio::task::spawn_blocking(move || task.reload()).await {
                Ok(Ok(())) => info!("SIGHUP: {} reloaded", reload.name()),
                Ok(Err(why)) => error!(
                    "SIGHUP: {} not reloaded, the ones in use stay: {why}",
                    reload.name()
                ),
                Err(e) => error!("SIGHUP: reloading {} failed: {e}", reload.name()),
            }
        }
    }
}

#[async_trait]
impl BackgroundService for SighupService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                // The flag registered at start-up still keeps SIGHUP from killing us.
                error!("cannot wait for SIGHUP, reloads are off: {e}");
                return;
            }
        };
        loop {
            // Includes a SIGHUP that arrived before this service started.
            if self.sighup.take() {
                self.run_reloads().await;
                continue;
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hangups.recv() => {}
            }
        }
    }
}
