//! Loading one certificate/key pair from PEM files and checking it before it is used.
//!
//! Pingora's rustls `TlsSettings::build()` panics on a bad file, and a certificate that fails
//! only at the first handshake is an outage found by clients. So every pair is read and
//! checked here, at start-up (where a problem is a configuration error, exit 2) and on each
//! reload (where a problem keeps the certificates in use): the files are readable PEM, the
//! key is one rustls can sign with and matches the certificate's public key, and the
//! certificate has not expired. This module only reads files; it knows nothing of
//! configuration keys or listeners.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate close to expiry is still served, with a warning at load time.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// The two files of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Which file of a pair a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Cert,
    Key,
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Cert => "cert",
            Part::Key => "key",
        }
    }
}

/// Why a pair cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct CertError {
    pub part: Part,
    pub path: PathBuf,
    pub problem: String,
}

/// A checked certificate, ready for the SNI resolver.
#[derive(Debug, Clone)]
pub struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    /// DNS names of the subject alternative names (the subject's common name when there are
    /// none), lower case; wildcards as written (`*.example.com`).
    pub names: Vec<String>,
    /// The `notAfter` time, in seconds since the Unix epoch.
    pub not_after: i64,
    pub paths: CertificatePaths,
}

impl LoadedCertificate {
    /// The name the certificate is known by in logs and metrics: its first name, else its
    /// file.
    pub fn label(&self) -> String {
        self.names
            .first()
            .cloned()
            .unwrap_or_else(|| self.paths.cert.display().to_string())
    }

    /// Whether it expires within [`EXPIRY_WARNING`] of `now`.
    pub fn expires_soon(&self, now: SystemTime) -> bool {
        let now = unix_seconds(now);
        self.not_after - now < EXPIRY_WARNING.as_secs() as i64
    }

    /// `notAfter` as an RFC 3339 date, for messages.
    pub fn not_after_text(&self) -> String {
        date_text(self.not_after)
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

fn date_text(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| seconds.to_string())
}

fn read(part: Part, path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| CertError {
        part,
        path: path.to_owned(),
        problem: format!("cannot be read: {e}"),
    })
}

/// Reads and checks one pair at time `now`.
pub fn load(paths: &CertificatePaths, now: SystemTime) -> Result<LoadedCertificate, CertError> {
    let cert_err = |problem: String| CertError {
        part: Part::Cert,
        path: paths.cert.clone(),
        problem,
    };
    let key_err = |problem: String| CertError {
        part: Part::Key,
        path: paths.key.clone(),
        problem,
    };

    let cert_pem = read(Part::Cert, &paths.cert)?;
    let key_pem = read(Part::Key, &paths.key)?;

    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("is not a PEM certificate file ({e})")))?;
    if chain.is_empty() {
        return Err(cert_err(
            "is not a PEM certificate file (no BEGIN CERTIFICATE block)".into(),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        key_err(format!(
            "is not a PEM private key file (no BEGIN PRIVATE KEY block: {e})"
        ))
    })?;
    let signing_key = any_supported_type(&key_der)
        .map_err(|e| key_err(format!("is not a usable private key: {e}")))?;

    let (names, not_before, not_after) = leaf_fields(&chain[0]).map_err(cert_err)?;
    let key = CertifiedKey::new(chain, signing_key);
    match key.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(key_err(format!(
                "does not match the certificate {}",
                paths.cert.display()
            )))
        }
        // The public key could not be compared (an unusual key type): rustls will still
        // refuse a mismatch at the first handshake, and the type was accepted above.
        Err(_) => {}
    }
    let now_s = unix_seconds(now);
    if not_after <= now_s {
        return Err(cert_err(format!("expired on {}", date_text(not_after))));
    }
    if not_before > now_s {
        log::warn!(
            "TLS certificate {} is not valid before {}",
            paths.cert.display(),
            date_text(not_before)
        );
    }
    Ok(LoadedCertificate {
        key: Arc::new(key),
        names,
        not_after,
        paths: paths.clone(),
    })
}

/// Names, `notBefore` and `notAfter` of a leaf certificate.
fn leaf_fields(der: &CertificateDer<'_>) -> Result<(Vec<String>, i64, i64), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("does not hold a valid X.509 certificate ({e})"))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                let dns = dns.trim_end_matches('.').to_ascii_lowercase();
                if !names.contains(&dns) {
                    names.push(dns);
                }
            }
        }
    }
    if names.is_empty() {
        if let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
        {
            names.push(cn.to_ascii_lowercase());
        }
    }
    let validity = cert.validity();
    Ok((
        names,
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    /// A self-signed certificate for `names` valid from `not_before` to `not_after` (Unix
    /// seconds), written to `dir` as `<stem>.crt` / `<stem>.key`.
    pub fn write_pair(
        dir: &Path,
        stem: &str,
        names: &[&str],
        not_before: i64,
        not_after: i64,
    ) -> CertificatePaths {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = time_of(not_before);
        params.not_after = time_of(not_after);
        let cert = params.self_signed(&key).unwrap();
        let paths = CertificatePaths {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&paths.cert, cert.pem()).unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        paths
    }

    fn time_of(seconds: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(seconds).unwrap()
    }

    pub fn now() -> i64 {
        unix_seconds(SystemTime::now())
    }

    const DAY: i64 = 86_400;

    #[test]
    fn a_valid_pair_loads_with_its_names_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_pair(
            dir.path(),
            "a",
            &["www.example.com", "*.Example.com"],
            now() - DAY,
            now() + 90 * DAY,
        );
        let c = load(&paths, SystemTime::now()).unwrap();
        assert_eq!(c.names, ["www.example.com", "*.example.com"]);
        assert_eq!(c.label(), "www.example.com");
        assert!((c.not_after - (now() + 90 * DAY)).abs() < 5);
        assert!(!c.expires_soon(SystemTime::now()));
    }

    #[test]
    fn each_problem_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_pair(
            dir.path(),
            "good",
            &["a.example"],
            now() - DAY,
            now() + DAY * 30,
        );
        let other = write_pair(
            dir.path(),
            "other",
            &["b.example"],
            now() - DAY,
            now() + DAY * 30,
        );
        let expired = write_pair(
            dir.path(),
            "old",
            &["c.example"],
            now() - 9 * DAY,
            now() - DAY,
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello\n").unwrap();
        let missing = dir.path().join("missing.pem");

        let case = |cert: &Path, key: &Path| {
            let paths = CertificatePaths {
                cert: cert.to_owned(),
                key: key.to_owned(),
            };
            let e = load(&paths, SystemTime::now()).unwrap_err();
            (e.part, e.problem)
        };
        let (part, problem) = case(&missing, &good.key);
        assert_eq!(part, Part::Cert);
        assert!(problem.starts_with("cannot be read"), "{problem}");
        let (part, problem) = case(&good.cert, &missing);
        assert_eq!(part, Part::Key);
        assert!(problem.starts_with("cannot be read"), "{problem}");
        let (part, problem) = case(&garbage, &good.key);
        assert_eq!(part, Part::Cert);
        assert!(problem.contains("not a PEM certificate"), "{problem}");
        let (part, problem) = case(&good.cert, &garbage);
        assert_eq!(part, Part::Key);
        assert!(problem.contains("not a PEM private key"), "{problem}");
        let (part, problem) = case(&good.cert, &other.key);
        assert_eq!(part, Part::Key);
        assert!(
            problem.contains("does not match the certificate"),
            "{problem}"
        );
        let (part, problem) = case(&expired.cert, &expired.key);
        assert_eq!(part, Part::Cert);
        assert!(problem.starts_with("expired on"), "{problem}");
        // A key file given as the certificate: PEM, but no certificate in it.
        let (part, problem) = case(&good.key, &good.key);
        assert_eq!(part, Part::Cert);
        assert!(problem.contains("not a PEM certificate"), "{problem}");
    }

    #[test]
    fn expiry_within_14_days_is_soon() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_pair(
            dir.path(),
            "s",
            &["s.example"],
            now() - DAY,
            now() + 13 * DAY,
        );
        let c = load(&paths, SystemTime::now()).unwrap();
        assert!(c.expires_soon(SystemTime::now()));
    }
}
