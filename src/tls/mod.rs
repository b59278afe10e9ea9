//! TLS termination at the edge: the certificates of the TLS listener, chosen by SNI, and the
//! listener's rustls settings.
//!
//! - [`certs`] reads and checks one certificate/key pair (Pingora panics on bad files, so
//!   nothing reaches it unchecked).
//! - [`resolver`] picks a certificate per handshake by SNI, over a set swapped atomically.
//! - [`handshake`] counts handshakes for the metrics.
//!
//! [`Certificates`] ties them together: it loads every configured pair and keeps the resolver
//! given to rustls. Renewed certificates are taken by a reload (SIGHUP, see `lifecycle`):
//! the new process checks every pair before it takes the listeners, so a renewal that went
//! wrong keeps the running process and its certificates. This module knows nothing of HTTP
//! or of the cache.

pub mod certs;
pub mod handshake;
pub mod probe;
pub mod resolver;

use std::sync::Arc;
use std::time::SystemTime;

use log::warn;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::ALPN;

use crate::logging;
use crate::metrics::TLS_METRICS;
pub use certs::{CertError, CertificatePaths, LoadedCertificate};
use resolver::{CertStore, SniResolver};

/// A pair that failed its checks, and its position in the configured list.
#[derive(Debug, thiserror::Error)]
#[error("tls.certificates[{index}].{}: {error}", error.part.as_str())]
pub struct PairError {
    pub index: usize,
    pub error: CertError,
}

/// Loads and checks every pair, in order; the first failure stops.
pub fn load_all(
    paths: &[CertificatePaths],
    now: SystemTime,
) -> Result<Vec<LoadedCertificate>, PairError> {
    paths
        .iter()
        .enumerate()
        .map(|(index, p)| certs::load(p, now).map_err(|error| PairError { index, error }))
        .collect()
}

/// The certificates of the TLS listener.
pub struct Certificates {
    resolver: Arc<SniResolver>,
}

impl Certificates {
    /// Loads every configured pair (already checked once by the configuration: this load
    /// fails only if a file changed in between).
    pub fn load(paths: &[CertificatePaths]) -> Result<Certificates, PairError> {
        let loaded = load_all(paths, SystemTime::now())?;
        let store = CertStore::new(loaded);
        announce(&store, "TLS certificates loaded");
        Ok(Certificates {
            resolver: Arc::new(SniResolver::new(store)),
        })
    }

    /// The rustls settings of the TLS listener: TLS 1.2 and 1.3 (Pingora's rustls build),
    /// certificates from the SNI resolver, ALPN `h2` + `http/1.1` or `http/1.1` only.
    pub fn listener_settings(&self, http2: bool) -> TlsSettings {
        let mut settings = TlsSettings::with_callbacks(Box::new(handshake::HandshakeCounter))
            .expect("building TLS settings with callbacks cannot fail");
        settings.set_cert_resolver(self.resolver.clone());
        settings.set_alpn(if http2 { ALPN::H2H1 } else { ALPN::H1 });
        settings
    }
}

/// Logs the set now in use, warns about certificates close to expiry and publishes their
/// expiry times.
fn announce(store: &CertStore, message: &str) {
    let now = SystemTime::now();
    let gauge = &TLS_METRICS.certificate_expiry;
    gauge.reset();
    let mut fields = Vec::new();
    for cert in store.certificates() {
        gauge
            .with_label_values(&[cert.label().as_str()])
            .set(cert.not_after);
        if cert.expires_soon(now) {
            warn!(
                "TLS certificate {} ({}) expires on {}, within {} days",
                cert.label(),
                cert.paths.cert.display(),
                cert.not_after_text(),
                certs::EXPIRY_WARNING.as_secs() / 86_400
            );
        }
        fields.push(serde_json::json!({
            "names": cert.names,
            "not_after": cert.not_after_text(),
            "cert": cert.paths.cert.display().to_string(),
        }));
    }
    logging::event(message, serde_json::json!({ "certificates": fields }));
}
