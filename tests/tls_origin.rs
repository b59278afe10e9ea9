//! `https://` origins: TLS with SNI and certificate verification, and HTTP/2 to them.

mod support;

use std::time::Duration;

use support::h2_origin::H2Origin;
use support::{get, wait_until, Origin, Proxy, ProxyBuilder, Reply, TestPki};

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

/// `upstream.http2`: h2 is offered to https origins and chosen; concurrent requests share
/// one connection (many streams per connection), and responses are cached as usual.
#[test]
fn origin_http2_offers_h2_and_multiplexes() {
    let pki = TestPki::new(&["localhost"]);
    let origin = H2Origin::start(&pki, Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let proxy = ProxyBuilder::new(&format!("https://localhost:{}", origin.addr().port()))
        .args(&["--ca-file", ca.to_str().unwrap(), "--origin-http2"])
        .start();
    let first = get(&proxy.url("/warm"));
    assert_eq!(
        (first.status, first.body.as_str()),
        (200, "h2 /warm"),
        "{first:?}"
    );
    assert_eq!(first.x_cache(), "MISS");
    // One request first, and the others once its stream is open at the origin: its
    // connection is then in Pingora's pool of connections with streams in use, where the
    // others find it. (Sent all at once, some may find no connection there, the first
    // being between its previous stream's end and its return to the pool, and open their
    // own.)
    let spawn = |i: usize| {
        let url = proxy.url(&format!("/p{i}"));
        std::thread::spawn(move || get(&url))
    };
    let mut concurrent = vec![spawn(0)];
    wait_until(Duration::from_secs(10), "the first stream", || {
        origin.streams() >= 2
    });
    concurrent.extend((1..5).map(spawn));
    for (i, r) in concurrent.into_iter().enumerate() {
        let r = r.join().unwrap();
        assert_eq!((r.status, r.body), (200, format!("h2 /p{i}")));
    }
    assert_eq!(get(&proxy.url("/warm")).x_cache(), "HIT");
    // Multiplexed: one connection carried several of the five requests at once (with one
    // stream per connection, each would have opened its own), and they needed at most two
    // connections (the second when /warm's was not yet back in the pool for /p0).
    let protocols = origin.protocols();
    assert!(
        origin.most_concurrent_streams() >= 2,
        "streams at once on one connection: {}, connections: {protocols:?}",
        origin.most_concurrent_streams()
    );
    assert!(
        protocols.iter().all(|p| p == "h2") && !protocols.is_empty() && protocols.len() <= 2,
        "h2 connections shared by the requests: {protocols:?}"
    );
}

/// Without `upstream.http2` the origin is asked over HTTP/1.1; an upstream group's own
/// `http2: true` turns h2 on for that group.
#[test]
fn h2_to_origins_is_off_by_default_and_per_group() {
    let pki = TestPki::new(&["localhost"]);
    let origin = H2Origin::start(&pki, Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let url = format!("https://localhost:{}", origin.addr().port());
    let proxy = ProxyBuilder::new(&url)
        .args(&["--ca-file", ca.to_str().unwrap()])
        .start();
    assert_eq!(get(&proxy.url("/a")).body, "http/1.1 /a");
    assert_eq!(origin.protocols(), ["http/1.1"]);
    drop(proxy);

    let conf = dir.path().join("proxy.yaml");
    std::fs::write(
        &conf,
        format!(
            "upstreams:\n  site:\n    servers: [\"localhost:{}\"]\n    tls: true\n    http2: true\nroutes:\n  - {{hosts: [site.example], upstream: site}}\n",
            origin.addr().port()
        ),
    )
    .unwrap();
    let proxy = ProxyBuilder::new(&url)
        .args(&[
            "--ca-file",
            ca.to_str().unwrap(),
            "-c",
            conf.to_str().unwrap(),
        ])
        .start();
    let r = support::request("GET", &proxy.url("/b"), &[("host", "site.example")], None);
    assert_eq!(r.body, "h2 /b", "{r:?}");
    assert_eq!(
        get(&proxy.url("/c")).body,
        "http/1.1 /c",
        "--origin's group"
    );
    assert_eq!(origin.protocols(), ["http/1.1", "h2", "http/1.1"]);
}
