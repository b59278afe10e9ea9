//! Choosing the certificate of a handshake by the client's SNI, over a set that can be
//! replaced while connections are open.
//!
//! rustls asks [`SniResolver::resolve`] once per handshake (Pingora's rustls backend has no
//! certificate callback, so this is the hook: `TlsSettings::set_cert_resolver`). The lookup
//! is an exact name, then a wildcard (`*.example.com` covers one label: `a.example.com`, not
//! `example.com` nor `a.b.example.com`), then the first configured certificate, which also
//! answers clients that send no SNI. The whole set sits behind an atomic pointer: a reload
//! builds a new set and swaps it in, handshakes in progress keep the set they started with,
//! and established connections are not touched (their keys were agreed at handshake time).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::LoadedCertificate;

/// One generation of certificates, indexed by name.
#[derive(Debug)]
pub struct CertStore {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the suffix after `*.` (`example.com` for `*.example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    /// As loaded, in configuration order (for metrics and logs).
    certificates: Vec<LoadedCertificate>,
}

impl CertStore {
    /// Indexes `certificates`; the first one is the default. When two certificates share a
    /// name, the one listed first serves it. Panics on an empty list: configuration
    /// requires at least one certificate.
    pub fn new(certificates: Vec<LoadedCertificate>) -> CertStore {
        let default = certificates
            .first()
            .expect("at least one certificate (checked by the configuration)")
            .key
            .clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for cert in &certificates {
            for name in &cert.names {
                let map = match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_owned()),
                    None => exact.entry(name.clone()),
                };
                map.or_insert_with(|| cert.key.clone());
            }
        }
        CertStore {
            exact,
            wildcard,
            default,
            certificates,
        }
    }

    /// The certificate for a server name (`None`: the client sent no SNI).
    pub fn lookup(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return &self.default;
        };
        let name = name.trim_end_matches('.');
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(key) = self.exact.get(name) {
            return key;
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(key) = self.wildcard.get(parent) {
                return key;
            }
        }
        &self.default
    }

    pub fn certificates(&self) -> &[LoadedCertificate] {
        &self.certificates
    }
}

/// The resolver handed to rustls; [`SniResolver::swap`] replaces its certificates.
#[derive(Debug)]
pub struct SniResolver {
    store: ArcSwap<CertStore>,
}

impl SniResolver {
    pub fn new(store: CertStore) -> SniResolver {
        SniResolver {
            store: ArcSwap::from_pointee(store),
        }
    }

    /// Makes `store` the set new handshakes use.
    pub fn swap(&self, store: CertStore) {
        self.store.store(Arc::new(store));
    }

    /// The set in use.
    pub fn current(&self) -> Arc<CertStore> {
        self.store.load_full()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.store.load().lookup(client_hello.server_name()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::certs::tests::{now, write_pair};
    use crate::tls::certs::{load, CertificatePaths};
    use std::time::SystemTime;

    fn loaded(dir: &std::path::Path, stem: &str, names: &[&str]) -> LoadedCertificate {
        let paths: CertificatePaths = write_pair(dir, stem, names, now() - 60, now() + 86_400);
        load(&paths, SystemTime::now()).unwrap()
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let first = loaded(dir.path(), "first", &["first.example"]);
        let wild = loaded(dir.path(), "wild", &["*.example.com"]);
        let www = loaded(dir.path(), "www", &["www.example.com"]);
        let store = CertStore::new(vec![first.clone(), wild.clone(), www.clone()]);
        let is =
            |name: Option<&str>, c: &LoadedCertificate| Arc::ptr_eq(store.lookup(name), &c.key);
        assert!(is(Some("www.example.com"), &www), "exact beats wildcard");
        assert!(is(Some("WWW.Example.com."), &www), "case and trailing dot");
        assert!(is(Some("img.example.com"), &wild));
        assert!(
            is(Some("example.com"), &first),
            "a wildcard does not cover its parent"
        );
        assert!(
            is(Some("a.b.example.com"), &first),
            "a wildcard covers one label"
        );
        assert!(is(Some("first.example"), &first));
        assert!(is(Some("unknown.test"), &first));
        assert!(is(None, &first), "no SNI: the first certificate");
    }

    #[test]
    fn the_first_listed_serves_a_shared_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = loaded(dir.path(), "a", &["x.example"]);
        let b = loaded(dir.path(), "b", &["y.example", "x.example"]);
        let store = CertStore::new(vec![a.clone(), b.clone()]);
        assert!(Arc::ptr_eq(store.lookup(Some("x.example")), &a.key));
        assert!(Arc::ptr_eq(store.lookup(Some("y.example")), &b.key));
    }

    #[test]
    fn swap_replaces_the_set() {
        let dir = tempfile::tempdir().unwrap();
        let a = loaded(dir.path(), "a", &["x.example"]);
        let b = loaded(dir.path(), "b", &["x.example"]);
        let resolver = SniResolver::new(CertStore::new(vec![a.clone()]));
        let before = resolver.current();
        resolver.swap(CertStore::new(vec![b.clone()]));
        assert!(Arc::ptr_eq(before.lookup(Some("x.example")), &a.key));
        assert!(Arc::ptr_eq(
            resolver.current().lookup(Some("x.example")),
            &b.key
        ));
    }
}
