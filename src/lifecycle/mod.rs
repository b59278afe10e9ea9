//! The process's life beyond serving requests: signals Pingora leaves to the application,
//! reload, the warm cache hand-over, and draining.
//!
//! Pingora handles SIGQUIT (hand the listeners to a new process, then drain), SIGTERM
//! (graceful stop) and SIGINT (fast stop) itself, and nothing else: the default action of
//! SIGHUP terminates the process. This module is the one place where SIGHUP is handled:
//!
//! 1. [`catch_sighup`] runs first in `server::build`, before Pingora's bootstrap: from then on
//!    a SIGHUP only raises a flag, so it can no longer kill the process, even while a new
//!    process (`-u`) waits for the old one's listeners or the daemon forks.
//! 2. [`SighupService`], a Pingora background service, waits for SIGHUP (and takes a signal
//!    that arrived during start-up) and reloads everything ([`reload`]): a new process of the
//!    same binary reads the configuration file, the environment, the flags and the TLS
//!    certificates again and, once it has validated them, takes the listeners over as an
//!    upgrade does, with this process's cache ([`handover`]). An invalid configuration
//!    changes nothing here. A SIGHUP that arrives while a reload runs is logged and ignored.
//!
//! [`drain`] serves connections accepted just before the listeners stop.

pub mod drain;
pub mod handover;
pub mod reload;

pub use drain::ServeAccepted;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use log::{error, info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use reload::Reexec;

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

/// Reloads on each SIGHUP.
pub struct SighupService {
    pub sighup: Sighup,
    pub reload: Arc<Reexec>,
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
                info!("SIGHUP: reloading the configuration");
                let reload = self.reload.clone();
                let mut running = tokio::task::spawn_blocking(move || reload.reload());
                loop {
                    tokio::select! {
                        result = &mut running => {
                            if let Ok(Ok(pid)) = result {
                                info!("SIGHUP: pid {pid} takes over");
                            }
                            break;
                        }
                        _ = hangups.recv() => warn!("SIGHUP during a reload: ignored"),
                    }
                }
                // Signals that came during the reload were answered above.
                self.sighup.take();
                continue;
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hangups.recv() => {}
            }
        }
    }
}
