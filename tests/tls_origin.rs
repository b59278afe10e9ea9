//! `https://` origins: TLS with SNI and certificate verification.

mod support;

use support::{get, Origin, Proxy, ProxyBuilder, Reply, TestPki};

fn tls_origin(pki: &TestPki) -> Origin {
    Origin::start_tls(pki, |r| {
        Reply::ok(format!(
            "secure {} via {}",
            r.target,
            r.header("host").unwrap_or("?")
        ))
        .header("cache-control", "max-age=60")
    })
}

/// A proxy in front of `origin` as `https://localhost:PORT`, trusting `pki`'s CA if asked.
fn proxy_for(origin: &Origin, pki: &TestPki, trust: bool, dir: &tempfile::TempDir) -> Proxy {
    let origin_url = format!("https://localhost:{}", origin.addr().port());
    let mut builder = ProxyBuilder::new(&origin_url);
    if trust {
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, &pki.ca_pem).unwrap();
        builder = builder.args(&["--ca-file", path.to_str().unwrap()]);
    }
    builder.start()
}

#[test]
fn https_origin_with_sni_and_a_trusted_certificate() {
    let pki = TestPki::new(&["localhost"]);
    let origin = tls_origin(&pki);
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&origin, &pki, true, &dir);

    let first = get(&proxy.url("/s?q=1"));
    assert_eq!(first.status, 200, "{first:?}\n{}", proxy.log());
    assert_eq!(
        first.body,
        format!("secure /s?q=1 via localhost:{}", origin.addr().port())
    );
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(get(&proxy.url("/s?q=1")).x_cache(), "HIT");
    assert_eq!(origin.sni(), ["localhost"]);
}

#[test]
fn untrusted_certificate_is_refused_with_502() {
    let pki = TestPki::new(&["localhost"]);
    let origin = tls_origin(&pki);
    let dir = tempfile::tempdir().unwrap();
    // The test CA is not trusted.
    let proxy = proxy_for(&origin, &pki, false, &dir);
    let resp = get(&proxy.url("/s"));
    assert_eq!(resp.status, 502);
    assert_eq!(resp.json()["code"], "ORIGIN_UNREACHABLE");
    assert_eq!(
        origin.hits(),
        0,
        "no request is sent over an unverified connection"
    );
}

#[test]
fn certificate_for_another_name_is_refused_with_502() {
    let pki = TestPki::new(&["origin.example"]);
    let origin = tls_origin(&pki);
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_for(&origin, &pki, true, &dir);
    let resp = get(&proxy.url("/s"));
    assert_eq!(resp.status, 502);
    assert_eq!(resp.json()["code"], "ORIGIN_UNREACHABLE");
    assert_eq!(origin.hits(), 0);
}
