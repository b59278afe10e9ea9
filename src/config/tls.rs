//! The `tls` section: the TLS listener, its certificates, HTTP/2 by ALPN, the redirect of
//! plaintext requests and HSTS, resolved once into [`TlsConfig`].
//!
//! `tls.certificates` is a list of `{cert, key}` file pairs, so it lives only in the file
//! (like routes); `--tls-cert` + `--tls-key` (or `PROXY_TLS_CERT` + `PROXY_TLS_KEY`) give
//! one pair and then replace the file's list, following the usual precedence. Every pair is
//! loaded and checked here (`tls::certs`), so a missing file, a key that does not match or
//! an expired certificate stops the start with exit 2, before anything listens, naming the
//! key (`tls.certificates[1].key`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use http::HeaderValue;
use serde::Deserialize;

use super::sources::{lookup, Source};
use super::{boolean, ip, port, ConfigError, Resolver};
use crate::tls::{self, CertificatePaths};

/// The `tls.*` settings; `None` in [`super::Config`] when `tls.port` is not set.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    /// At least one; the first is served when no name matches the client's SNI.
    pub certificates: Vec<CertificatePaths>,
    /// Offer `h2` by ALPN (else `http/1.1` only).
    pub http2: bool,
    /// The plaintext listener answers every request with 308 to the https URL.
    pub redirect_http: bool,
    /// `Strict-Transport-Security` value sent on TLS responses.
    pub hsts: Option<HeaderValue>,
}

/// One `{cert, key}` entry of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPair {
    cert: PathBuf,
    key: PathBuf,
}

/// Where each configured pair came from, for error messages.
struct PairSource {
    cert: Source,
    key: Source,
}

fn hsts(text: &str) -> Result<HeaderValue, String> {
    let text = text.trim();
    let has_max_age = text.split(';').any(|d| {
        d.trim()
            .to_ascii_lowercase()
            .strip_prefix("max-age=")
            .is_some_and(|v| {
                !v.is_empty() && v.trim_matches('"').bytes().all(|b| b.is_ascii_digit())
            })
    });
    match HeaderValue::from_str(text) {
        Ok(v) if has_max_age => Ok(v),
        _ => Err(
            "is not a Strict-Transport-Security value (example: max-age=31536000; includeSubDomains)"
                .into(),
        ),
    }
}

/// The configured pairs: from flags/env when given, else from the file's section.
fn pairs(
    r: &Resolver,
    section: Option<&serde_yaml::Value>,
    file: Option<&Path>,
) -> Result<Vec<(CertificatePaths, PairSource)>, ConfigError> {
    let cert = r.raw("tls.cert");
    let key = r.raw("tls.key");
    match (cert, key) {
        (Some(cert), Some(key)) => {
            return Ok(vec![(
                CertificatePaths {
                    cert: PathBuf::from(cert.text.trim()),
                    key: PathBuf::from(key.text.trim()),
                },
                PairSource {
                    cert: cert.source.clone(),
                    key: key.source.clone(),
                },
            )])
        }
        (Some(_), None) | (None, Some(_)) => {
            let (c, k) = (lookup("tls.cert"), lookup("tls.key"));
            return Err(ConfigError::Conflict(format!(
                "tls.certificates: --{} ({}) and --{} ({}) go together: set both",
                c.flag, c.env, k.flag, k.env
            )));
        }
        (None, None) => {}
    }
    let Some(section) = section else {
        return Ok(Vec::new());
    };
    let path = file.map_or_else(|| PathBuf::from("-"), Path::to_owned);
    let err = |key: String, problem: String| ConfigError::Section {
        key,
        problem,
        path: path.clone(),
    };
    let serde_yaml::Value::Sequence(items) = section else {
        return Err(err(
            "tls.certificates".into(),
            "must be a list of {cert, key} file pairs".into(),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let raw: RawPair = serde_yaml::from_value(item.clone())
                .map_err(|e| err(format!("tls.certificates[{i}]"), e.to_string()))?;
            Ok((
                CertificatePaths {
                    cert: raw.cert,
                    key: raw.key,
                },
                PairSource {
                    cert: Source::File(path.clone()),
                    key: Source::File(path.clone()),
                },
            ))
        })
        .collect()
}

/// Resolves the `tls` section; `None` without `tls.port`. `other_ports` are the proxy's
/// plaintext and admin listeners, which the TLS listener must not share.
pub(super) fn resolve(
    r: &Resolver,
    section: Option<&serde_yaml::Value>,
    file: Option<&Path>,
    other_ports: &[(SocketAddr, &str)],
) -> Result<Option<TlsConfig>, ConfigError> {
    // Every value is checked, with or without a TLS listener.
    let tls_port = r.optional("tls.port", port)?;
    let host = r.get("tls.host", "0.0.0.0".parse().unwrap(), ip)?;
    let http2 = r.get("tls.http2", true, boolean)?;
    let hsts = r.optional("tls.hsts", hsts)?;
    let pairs = pairs(r, section, file)?;
    let redirect_http = r.get("tls.redirect_http", false, boolean)?;
    let Some(tls_port) = tls_port else {
        if !pairs.is_empty() {
            return Err(ConfigError::Conflict(
                "tls.certificates: certificates are set but tls.port is not: set tls.port \
                 (--tls-port, PROXY_TLS_PORT) for the TLS listener"
                    .into(),
            ));
        }
        if redirect_http {
            return Err(ConfigError::Conflict(
                "tls.redirect_http: redirecting to https needs the TLS listener: set tls.port \
                 (--tls-port, PROXY_TLS_PORT)"
                    .into(),
            ));
        }
        return Ok(None);
    };
    let listen = SocketAddr::new(host, tls_port);
    for (other, key) in other_ports {
        let overlaps = other.ip() == host || other.ip().is_unspecified() || host.is_unspecified();
        if overlaps && other.port() == tls_port {
            return Err(ConfigError::Conflict(format!(
                "tls.port: {tls_port} is also the {key}; the TLS listener needs its own port"
            )));
        }
    }
    if pairs.is_empty() {
        let (c, k) = (lookup("tls.cert"), lookup("tls.key"));
        return Err(ConfigError::Conflict(format!(
            "tls.certificates is required when tls.port is set: list {{cert, key}} file pairs \
             in the config file, or set --{} and --{} ({}, {})",
            c.flag, k.flag, c.env, k.env
        )));
    }
    let paths: Vec<CertificatePaths> = pairs.iter().map(|(p, _)| p.clone()).collect();
    if let Err(e) = tls::load_all(&paths, SystemTime::now()) {
        let (pair, source) = &pairs[e.index];
        let (path, from) = match e.error.part {
            tls::certs::Part::Cert => (&pair.cert, &source.cert),
            tls::certs::Part::Key => (&pair.key, &source.key),
        };
        return Err(ConfigError::Certificate {
            key: format!("tls.certificates[{}].{}", e.index, e.error.part.as_str()),
            value: path.display().to_string(),
            problem: e.error.problem,
            from: from.clone(),
        });
    }
    Ok(Some(TlsConfig {
        listen,
        certificates: paths,
        http2,
        redirect_http,
        hsts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_with_origin as load;
    use crate::tls::certs::tests::{now, write_pair};

    const DAY: i64 = 86_400;

    #[test]
    fn a_flag_pair_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_pair(
            dir.path(),
            "a",
            &["a.example"],
            now() - DAY,
            now() + 30 * DAY,
        );
        let c = load(&[
            "--tls-port",
            "8443",
            "--tls-cert",
            p.cert.to_str().unwrap(),
            "--tls-key",
            p.key.to_str().unwrap(),
        ])
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(tls.certificates, [p]);
        assert!(tls.http2 && !tls.redirect_http && tls.hsts.is_none());
        assert!(!c.h2c && !c.upstream.http2);
        assert!(
            load(&[]).unwrap().tls.is_none(),
            "no tls.port: no TLS listener"
        );
    }

    #[test]
    fn the_file_lists_pairs_and_flags_replace_them() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(
            dir.path(),
            "a",
            &["a.example"],
            now() - DAY,
            now() + 30 * DAY,
        );
        let b = write_pair(
            dir.path(),
            "b",
            &["b.example"],
            now() - DAY,
            now() + 30 * DAY,
        );
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            format!(
                "tls:\n  port: 8443\n  http2: false\n  redirect_http: true\n  hsts: max-age=60\n  certificates:\n    - {{cert: {}, key: {}}}\n    - {{cert: {}, key: {}}}\n",
                a.cert.display(), a.key.display(), b.cert.display(), b.key.display()
            ),
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let tls = load(&["-c", f]).unwrap().tls.unwrap();
        assert_eq!(tls.certificates, [a.clone(), b.clone()]);
        assert!(!tls.http2 && tls.redirect_http);
        assert_eq!(tls.hsts.unwrap(), "max-age=60");
        let tls = load(&[
            "-c",
            f,
            "--tls-cert",
            b.cert.to_str().unwrap(),
            "--tls-key",
            b.key.to_str().unwrap(),
        ])
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(tls.certificates, [b]);
    }

    #[test]
    fn each_mistake_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let good = write_pair(
            dir.path(),
            "good",
            &["a.example"],
            now() - DAY,
            now() + 30 * DAY,
        );
        let other = write_pair(
            dir.path(),
            "other",
            &["b.example"],
            now() - DAY,
            now() + 30 * DAY,
        );
        let old = write_pair(
            dir.path(),
            "old",
            &["c.example"],
            now() - 9 * DAY,
            now() - DAY,
        );
        let (gc, gk) = (good.cert.to_str().unwrap(), good.key.to_str().unwrap());
        let ok = other.key.to_str().unwrap();
        let (oc, okey) = (old.cert.to_str().unwrap(), old.key.to_str().unwrap());
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            format!("tls:\n  port: 8443\n  certificates:\n    - {{cert: {gc}, key: {gk}}}\n    - {{cert: {gc}, key: {ok}}}\n"),
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let not_a_list = dir.path().join("d.yaml");
        std::fs::write(
            &not_a_list,
            format!("tls:\n  port: 8443\n  certificates: {gc}\n"),
        )
        .unwrap();
        let nl = not_a_list.to_str().unwrap();
        let cases: Vec<(Vec<&str>, String)> = vec![
            (vec!["--tls-port", "8443"], "tls.certificates is required when tls.port is set".into()),
            (vec!["--tls-port", "8443", "--tls-cert", gc], "tls.certificates: --tls-cert (PROXY_TLS_CERT) and --tls-key (PROXY_TLS_KEY) go together".into()),
            (vec!["--tls-cert", gc, "--tls-key", gk], "tls.certificates: certificates are set but tls.port is not".into()),
            (vec!["--redirect-http"], "tls.redirect_http: redirecting to https needs the TLS listener".into()),
            (vec!["--tls-port", "3000", "--tls-cert", gc, "--tls-key", gk], "tls.port: 3000 is also the proxy's listen.port".into()),
            (vec!["--tls-port", "9091", "--tls-cert", gc, "--tls-key", gk], "tls.port: 9091 is also the admin.port".into()),
            (vec!["--tls-port", "8443", "--tls-cert", "/nonexistent.pem", "--tls-key", gk], r#"tls.certificates[0].cert: "/nonexistent.pem" cannot be read"#.into()),
            (vec!["--tls-port", "8443", "--tls-cert", gk, "--tls-key", gk], format!("tls.certificates[0].cert: {gk:?} is not a PEM certificate file")),
            (vec!["--tls-port", "8443", "--tls-cert", gc, "--tls-key", gc], format!("tls.certificates[0].key: {gc:?} is not a PEM private key file")),
            (vec!["--tls-port", "8443", "--tls-cert", gc, "--tls-key", ok], format!("tls.certificates[0].key: {ok:?} does not match the certificate {gc} (from flag --tls-key)")),
            (vec!["--tls-port", "8443", "--tls-cert", oc, "--tls-key", okey], format!("tls.certificates[0].cert: {oc:?} expired on")),
            (vec!["-c", f], format!("tls.certificates[1].key: {ok:?} does not match the certificate {gc} (from file {f})")),
            (vec!["-c", nl], "tls.certificates: must be a list of {cert, key} file pairs".into()),
            (vec!["--hsts", "forever"], r#"tls.hsts: "forever" is not a Strict-Transport-Security value"#.into()),
            (vec!["--tls-http2=maybe"], r#"tls.http2: "maybe" is not a boolean"#.into()),
            (vec!["--h2c=maybe"], r#"listen.h2c: "maybe" is not a boolean"#.into()),
            (vec!["--origin-http2=maybe"], r#"upstream.http2: "maybe" is not a boolean"#.into()),
            (vec!["--tls-port", "0"], r#"tls.port: "0" is not a port"#.into()),
            (vec!["--tls-host", "localhost"], r#"tls.host: "localhost" is not an IP address"#.into()),
        ];
        for (args, expected) in cases {
            let err = load(&args).unwrap_err().to_string();
            assert!(
                err.starts_with(&expected),
                "args {args:?}:\n  got {err}\n  expected {expected}"
            );
        }
    }

    #[test]
    fn hsts_values() {
        assert!(hsts("max-age=31536000; includeSubDomains").is_ok());
        assert!(hsts("max-age=0").is_ok());
        assert!(hsts("includeSubDomains; max-age=\"60\"").is_ok());
        assert!(hsts("").is_err());
        assert!(hsts("includeSubDomains").is_err());
        assert!(hsts("max-age=soon").is_err());
        assert!(hsts("max-age=1\n").is_ok(), "trimmed");
        assert!(hsts("max-age=1; a\u{7f}").is_err());
    }
}
