//! TLS termination and HTTP/2 at the edge, through the real binary: HTTPS over HTTP/1.1 and
//! HTTP/2 with the cache, ALPN, certificates by SNI, HSTS, the redirect to https, h2c,
//! start-up validation, TLS versions, routes over TLS, and the metrics. Certificate reload
//! (SIGHUP) and the upgrade over TLS are in `tls/lifecycle.rs`.

mod support;

use std::time::{Duration, Instant};

use support::client::raw;
use support::proxy::{free_ports, run};
use support::tls::{
    client_hello, first_record, h2_requests, h2_requests_at_once, Ca, CertFiles, ClientTls,
    H2Request,
};
use support::websocket::{self, WsOrigin};
use support::{get, request, Origin, ProxyBuilder, Reply};
use tungstenite::Message;

#[path = "tls/lifecycle.rs"]
mod lifecycle;

/// A CA, a certificate for `localhost` written to a temporary folder, and the folder.
fn localhost_cert() -> (Ca, CertFiles, tempfile::TempDir) {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let files = ca.issue(&["localhost"]).write(dir.path(), "site");
    (ca, files, dir)
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// HTTPS GET: MISS then HIT over HTTP/1.1 (one keep-alive connection, certificate verified
/// against the CA) and over HTTP/2; an entry stored over one protocol is a HIT over the
/// other (same scheme); the plaintext URL is a separate entry; the origin hears
/// `X-Forwarded-Proto: https`; the access log says protocol and TLS version.
#[test]
fn https_miss_then_hit_over_http1_and_h2() {
    let (ca, files, _dir) = localhost_cert();
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url()).tls(&files).start();
    let host = format!("localhost:{}", proxy.tls_port.unwrap());

    let h1 = ClientTls::trusting(&ca.pem, &["http/1.1"]);
    let mut conn = h1.connect(proxy.tls_addr(), "localhost").unwrap();
    assert_eq!(conn.info.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(conn.info.version, "TLSv1_3");
    let first = conn.get(&host, "/one").unwrap();
    assert_eq!((first.status, first.x_cache()), (200, "MISS"), "{first:?}");
    assert_eq!(first.body, "body of /one");
    let second = conn.get(&host, "/one").unwrap();
    assert_eq!((second.status, second.x_cache()), (200, "HIT"));
    assert_eq!(second.body, "body of /one");

    let h2 = ClientTls::trusting(&ca.pem, &["h2", "http/1.1"]);
    let (responses, info) = h2_requests(
        proxy.tls_addr(),
        Some((&h2, "localhost")),
        &[
            H2Request::get(&host, "/two"),
            H2Request::get(&host, "/two"),
            H2Request::get(&host, "/one"),
        ],
    )
    .unwrap();
    assert_eq!(info.unwrap().alpn.as_deref(), Some("h2"), "h2 preferred");
    let cache: Vec<_> = responses.iter().map(|r| (r.status, r.x_cache())).collect();
    assert_eq!(cache, [(200, "MISS"), (200, "HIT"), (200, "HIT")]);
    assert_eq!(responses[1].body, "body of /two");
    assert_eq!(
        responses[2].body, "body of /one",
        "stored over HTTP/1.1, served over h2"
    );

    // The same URL over plaintext is another entry.
    let plain = request("GET", &proxy.url("/one"), &[("host", &host)], None);
    assert_eq!(plain.x_cache(), "MISS");
    assert_eq!(origin.hits_for("/one"), 2, "once per scheme");
    assert_eq!(origin.hits_for("/two"), 1);
    let proto: Vec<_> = origin
        .requests()
        .iter()
        .map(|r| r.header("x-forwarded-proto").unwrap_or("-").to_owned())
        .collect();
    assert_eq!(proto, ["https", "https", "http"]);

    // Access records are written after the response went out: wait for each.
    proxy.wait_log(r#""protocol":"h2","tls":"TLSv1.3""#);
    proxy.wait_log(r#""protocol":"http/1.1","tls":"TLSv1.3""#);
    proxy.wait_log(r#""protocol":"http/1.1","tls":null"#);
    // The two client connections and the readiness probe.
    assert!(proxy.metric(r#"caching_proxy_tls_handshakes_total{version="TLSv1.3"}"#) >= 3.0);
}

/// An HTTPS/1.1 response leaves in as few TLS records as its size allows: the header is
/// sealed with the body, not in a record of its own (each record costs a seal at the proxy,
/// an open at the client and 22 bytes). The bodies around the 16 KiB record size and the
/// 4 KiB point where a body is no longer copied behind the header arrive whole.
#[test]
fn an_https_response_leaves_in_the_fewest_records() {
    let (ca, files, _dir) = localhost_cert();
    let origin = sized_origin();
    let proxy = ProxyBuilder::new(&origin.url()).tls(&files).start();
    let host = format!("localhost:{}", proxy.tls_port.unwrap());
    let mut conn = ClientTls::trusting(&ca.pem, &["http/1.1"])
        .connect(proxy.tls_addr(), "localhost")
        .unwrap();
    // (body size, records for the hit: the header and body together, 16 KiB a record)
    for (size, records) in [
        (0, 1),
        (1024, 1),
        (4095, 1),
        (4096, 1),
        (12_000, 1),
        (15_000, 1),
        (16_384, 2),
        (40_000, 3),
    ] {
        let path = format!("/n/{size}");
        let miss = conn.get(&host, &path).unwrap();
        assert_eq!((miss.status, miss.x_cache()), (200, "MISS"), "{path}");
        let before = conn.records_received();
        let hit = conn.get(&host, &path).unwrap();
        assert_eq!((hit.status, hit.x_cache()), (200, "HIT"), "{path}");
        assert_eq!(hit.body, letters(size), "{path}");
        assert_eq!(
            conn.records_received() - before,
            records,
            "records for a hit of {size} bytes"
        );
    }
}

/// A WebSocket upgrade over TLS (`wss`) is tunnelled both ways: the TLS stream gathers the
/// proxy's writes until they are flushed (vendor/README.md), and a tunnel flushes each one,
/// so every message arrives without waiting for the next.
#[test]
fn websocket_upgrades_over_tls_are_tunnelled() {
    let (ca, files, _dir) = localhost_cert();
    let origin = WsOrigin::start();
    let config = format!(
        "upstreams:\n  ws: {{servers: [\"{}\"]}}\nroutes:\n  - {{upstream: ws, hosts: [localhost]}}\n",
        origin.addr()
    );
    let proxy = ProxyBuilder::with_config(&config).tls(&files).start();
    let client = ClientTls::trusting(&ca.pem, &["http/1.1"]);
    for round in 1..=5 {
        let conn = client.connect(proxy.tls_addr(), "localhost").unwrap();
        let (mut ws, resp) = websocket::connect_over(conn.into_stream(), "localhost", "/socket")
            .unwrap_or_else(|e| panic!("upgrade {round}: {e}\n{}", proxy.log()));
        assert_eq!(resp.status(), 101);
        websocket::greeting_then_echoes(
            &mut ws,
            &[
                Message::text("ping 1"),
                Message::text("ping 2"),
                Message::text(letters(40_000)),
            ],
        );
        ws.close(None).unwrap();
        assert_eq!(
            origin.upgrades().len(),
            round,
            "every upgrade reaches the origin"
        );
    }
}

/// `tls.http2: false` offers only http/1.1: a client offering both gets http/1.1, one that
/// insists on h2 is refused.
#[test]
fn alpn_is_http1_only_with_tls_http2_false() {
    let (_ca, files, _dir) = localhost_cert();
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .tls(&files)
        .arg("--tls-http2=false")
        .start();
    let both = ClientTls::any(&["h2", "http/1.1"]);
    let mut conn = both.connect(proxy.tls_addr(), "localhost").unwrap();
    assert_eq!(conn.info.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(conn.get("localhost", "/a").unwrap().status, 200);
    let h2_only = ClientTls::any(&["h2"]);
    assert!(h2_only.connect(proxy.tls_addr(), "localhost").is_err());
}

/// Two certificates: each name gets its own (exact and wildcard), an unknown name and a
/// client without SNI get the first one.
#[test]
fn certificate_by_sni_with_the_first_as_default() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let a = ca.issue(&["a.example"]);
    let b = ca.issue(&["b.example", "*.b.example"]);
    let (fa, fb) = (a.write(dir.path(), "a"), b.write(dir.path(), "b"));
    let conf = dir.path().join("proxy.yaml");
    std::fs::write(
        &conf,
        format!(
            "tls:\n  certificates:\n    - {{cert: {}, key: {}}}\n    - {{cert: {}, key: {}}}\n",
            fa.cert(),
            fa.key(),
            fb.cert(),
            fb.key()
        ),
    )
    .unwrap();
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .tls_listener()
        .args(&["-c", conf.to_str().unwrap()])
        .start();
    let client = ClientTls::any(&["http/1.1"]);
    let served = |sni: &str| client.connect(proxy.tls_addr(), sni).unwrap().info.cert;
    assert!(served("a.example") == a.der, "a.example");
    assert!(served("b.example") == b.der, "b.example");
    assert!(served("www.B.example") == b.der, "wildcard, any case");
    assert!(served("unknown.example") == a.der, "unknown: the first");
    assert!(served("127.0.0.1") == a.der, "no SNI: the first");

    let verified = ClientTls::trusting(&ca.pem, &["http/1.1"]);
    let mut conn = verified.connect(proxy.tls_addr(), "x.b.example").unwrap();
    assert_eq!(conn.get("x.b.example", "/b").unwrap().body, "body of /b");
    let expiry = proxy.metrics();
    assert!(
        expiry.contains(
            r#"caching_proxy_tls_certificate_expiry_timestamp_seconds{name="a.example"}"#
        ) && expiry.contains(
            r#"caching_proxy_tls_certificate_expiry_timestamp_seconds{name="b.example"}"#
        ),
        "{expiry}"
    );
}

/// `tls.redirect_http`: every plaintext request gets 308 to the same URL on the TLS port;
/// the origin sees none of them; TLS requests are served.
#[test]
fn redirect_http_answers_308_to_the_https_url() {
    let (ca, files, _dir) = localhost_cert();
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .tls(&files)
        .arg("--redirect-http")
        .start();
    let tls_port = proxy.tls_port.unwrap();
    for method in ["GET", "POST"] {
        let answer = raw(
            proxy.addr(),
            format!(
                "{method} /a/b?x=1&y=%20 HTTP/1.1\r\nHost: shop.example:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                proxy.port
            )
            .as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
        let location = format!("location: https://shop.example:{tls_port}/a/b?x=1&y=%20\r\n");
        assert!(answer.to_ascii_lowercase().contains(&location), "{answer}");
    }
    assert_eq!(origin.hits(), 0);
    let client = ClientTls::trusting(&ca.pem, &["http/1.1"]);
    let mut conn = client.connect(proxy.tls_addr(), "localhost").unwrap();
    assert_eq!(conn.get("localhost", "/a/b").unwrap().status, 200);
    assert_eq!(origin.hits(), 1);
}

/// `tls.hsts` is sent on TLS responses (origin responses, hits, the proxy's own errors) and
/// never on plaintext ones.
#[test]
fn hsts_only_on_tls_responses() {
    let (_ca, files, _dir) = localhost_cert();
    let origin = Origin::cacheable();
    let hsts = "max-age=31536000; includeSubDomains";
    let proxy = ProxyBuilder::new(&origin.url())
        .tls(&files)
        .args(&["--hsts", hsts])
        .start();
    let client = ClientTls::any(&["http/1.1"]);
    let mut conn = client.connect(proxy.tls_addr(), "localhost").unwrap();
    let miss = conn.get("localhost", "/h").unwrap();
    let hit = conn.get("localhost", "/h").unwrap();
    assert_eq!(hit.x_cache(), "HIT");
    let mut conn = client.connect(proxy.tls_addr(), "localhost").unwrap();
    let own = conn.request("PURGE", "localhost", "/h", &[]).unwrap();
    assert_eq!(own.status, 405, "{own:?}");
    for r in [&miss, &hit, &own] {
        assert_eq!(r.header("strict-transport-security"), Some(hsts), "{r:?}");
    }
    let plain = [get(&proxy.url("/h")), get(&proxy.url("/h"))];
    for r in &plain {
        assert_eq!(r.header("strict-transport-security"), None, "{r:?}");
    }
}

/// `listen.h2c`: HTTP/2 with prior knowledge on the plaintext listener, with the cache;
/// HTTP/1.1 keeps working on the same port. Without it, prior knowledge is refused.
#[test]
fn h2c_with_prior_knowledge() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url()).arg("--h2c").start();
    let host = format!("127.0.0.1:{}", proxy.port);
    let (responses, _) = h2_requests(
        proxy.addr(),
        None,
        &[H2Request::get(&host, "/c"), H2Request::get(&host, "/c")],
    )
    .unwrap();
    let cache: Vec<_> = responses.iter().map(|r| (r.status, r.x_cache())).collect();
    assert_eq!(cache, [(200, "MISS"), (200, "HIT")]);
    assert_eq!(responses[0].body, "body of /c");
    assert_eq!(get(&proxy.url("/c")).x_cache(), "HIT", "HTTP/1.1 too");
    proxy.wait_log(r#""protocol":"h2","tls":null"#);
    assert_eq!(
        origin.requests()[0].header("x-forwarded-proto"),
        Some("http")
    );

    let without = ProxyBuilder::new(&origin.url()).start();
    let host = format!("127.0.0.1:{}", without.port);
    assert!(h2_requests(without.addr(), None, &[H2Request::get(&host, "/c")]).is_err());
}

/// A body of `size` letters, for `/n/{size}`.
fn letters(size: usize) -> String {
    (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

/// An origin answering `/n/SIZE` with SIZE bytes of [`letters`], cacheable for a minute.
fn sized_origin() -> Origin {
    Origin::start(|req| {
        let size = req.path().trim_start_matches("/n/").parse().unwrap_or(0);
        Reply::ok(letters(size)).header("cache-control", "max-age=60")
    })
}

/// Many streams at once on one HTTP/2 connection, over TLS and over h2c, with bodies from
/// empty to 300 KiB (around h2's 1 KiB point for sending a payload apart, and its 16 KiB
/// frames), first from the origin and then from the cache: every response arrives whole.
/// HTTP/2 connections leave some flushes to the connection's next turn to send fewer,
/// larger writes (vendor/README.md): a write left behind would leave a stream unfinished.
#[test]
fn concurrent_h2_streams_all_arrive_whole() {
    let (ca, files, _dir) = localhost_cert();
    let origin = sized_origin();
    let proxy = ProxyBuilder::new(&origin.url())
        .tls(&files)
        .arg("--h2c")
        .start();
    let sizes = [
        0, 1, 200, 1023, 1024, 1025, 4000, 16_384, 16_400, 70_000, 300_000,
    ];
    let tls_host = format!("localhost:{}", proxy.tls_port.unwrap());
    let plain_host = format!("127.0.0.1:{}", proxy.port);
    let h2 = ClientTls::trusting(&ca.pem, &["h2"]);
    for (label, host, tls, addr) in [
        ("h2", &tls_host, Some((&h2, "localhost")), proxy.tls_addr()),
        ("h2c", &plain_host, None, proxy.addr()),
    ] {
        let paths: Vec<String> = (0..4)
            .flat_map(|_| sizes.iter().map(|n| format!("/n/{n}")))
            .collect();
        for round in ["first", "again"] {
            let requests: Vec<_> = paths.iter().map(|p| H2Request::get(host, p)).collect();
            let (responses, _) = h2_requests_at_once(addr, tls, &requests)
                .unwrap_or_else(|e| panic!("{label}, {round}: {e}"));
            for (path, response) in paths.iter().zip(&responses) {
                let size: usize = path.trim_start_matches("/n/").parse().unwrap();
                assert_eq!(response.status, 200, "{label} {round} {path}");
                assert!(
                    response.body == letters(size),
                    "{label} {round} {path}: {} bytes, not {size}",
                    response.body.len()
                );
            }
            if round == "again" {
                let hits = responses.iter().filter(|r| r.x_cache() == "HIT").count();
                assert_eq!(
                    hits,
                    responses.len(),
                    "{label}: the second round is served from the cache"
                );
            }
        }
    }
}

/// Each certificate problem stops the start with exit 2, naming the key, before anything
/// listens; a certificate that expires within 14 days starts with a warning.
#[test]
fn startup_validation_errors_exit_2_naming_the_key() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let good = ca.issue(&["localhost"]).write(dir.path(), "good");
    let other = ca.issue(&["localhost"]).write(dir.path(), "other");
    let expired = ca
        .issue_valid(&["localhost"], now - 30 * 86_400, now - 86_400)
        .write(dir.path(), "expired");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "this is not PEM\n").unwrap();
    let not_pem = not_pem.to_str().unwrap();
    let unreadable = dir.path().join("missing.pem");
    let unreadable = unreadable.to_str().unwrap();

    let cases: [(&[&str], &str); 6] = [
        (
            &["--tls-cert", unreadable, "--tls-key", good.key()],
            "tls.certificates[0].cert: ",
        ),
        (
            &["--tls-cert", good.cert(), "--tls-key", not_pem],
            "tls.certificates[0].key: ",
        ),
        (
            &["--tls-cert", not_pem, "--tls-key", good.key()],
            "tls.certificates[0].cert: ",
        ),
        (
            &["--tls-cert", good.cert(), "--tls-key", other.key()],
            "tls.certificates[0].key: ",
        ),
        (
            &["--tls-cert", expired.cert(), "--tls-key", expired.key()],
            "tls.certificates[0].cert: ",
        ),
        (&[], "tls.certificates is required when tls.port is set"),
    ];
    let problems = [
        "cannot be read",
        "is not a PEM private key file",
        "is not a PEM certificate file",
        "does not match the certificate",
        "expired on",
        "",
    ];
    for ((extra, key), problem) in cases.iter().zip(problems) {
        // Distinct ports: two draws of `free_port` can give the same one.
        let [port, tls_port, admin_port] = free_ports::<3>();
        let mut args = vec![
            "--origin".to_string(),
            "http://127.0.0.1:9".into(),
            "--port".into(),
            port.to_string(),
            "--admin-port".into(),
            admin_port.to_string(),
            "--tls-port".into(),
            tls_port.to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(problem),
            "{extra:?}: {stderr}"
        );
        for p in [port, tls_port] {
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", p)).is_ok(),
                "nothing listened"
            );
        }
    }

    let soon = ca
        .issue_valid(&["localhost"], now - 86_400, now + 5 * 86_400)
        .write(dir.path(), "soon");
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url()).tls(&soon).start();
    let log = proxy.wait_log("expires on");
    assert!(log.contains("within 14 days"), "{log}");
}

/// TLS 1.2 and 1.3 only: a ClientHello offering only TLS 1.1 gets an alert, never a
/// ServerHello, and counts as a failed handshake; the same hello offering TLS 1.2 gets a
/// ServerHello; a TLS 1.2 client completes and is counted under its version.
#[test]
fn a_tls_1_1_client_fails_the_handshake() {
    let (_ca, files, _dir) = localhost_cert();
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url()).tls(&files).start();
    let errors = "caching_proxy_tls_handshake_errors_total";
    let before = proxy.metric(errors);

    let answer = first_record(proxy.tls_addr(), &client_hello(0x0302, "localhost"));
    assert!(
        matches!(answer, None | Some((0x15, _))),
        "TLS 1.1 got {answer:?}"
    );
    wait_until(
        "the failed handshake to be counted",
        Duration::from_secs(5),
        || proxy.metric(errors) == before + 1.0,
    );
    proxy.wait_log("Downstream handshake error");

    // The hand-made hello itself is sound: offering TLS 1.2, it is answered.
    let answer = first_record(proxy.tls_addr(), &client_hello(0x0303, "localhost"));
    assert!(
        matches!(&answer, Some((0x16, body)) if body.first() == Some(&2)),
        "TLS 1.2 got {answer:?}"
    );

    let tls12 = ClientTls::any_tls12(&["http/1.1"]);
    let mut conn = tls12.connect(proxy.tls_addr(), "localhost").unwrap();
    assert_eq!(conn.info.version, "TLSv1_2");
    assert_eq!(conn.get("localhost", "/v").unwrap().status, 200);
    assert_eq!(
        proxy.metric(r#"caching_proxy_tls_handshakes_total{version="TLSv1.2"}"#),
        1.0
    );
    proxy.wait_log(r#""tls":"TLSv1.2""#);
}

/// Routes and upstream groups over TLS: each host reaches its group with the client's Host
/// and `X-Forwarded-Proto: https`; a route's ignored query parameters leave the https key
/// too; the admin purge of an https URL removes the https entry, as the proxy keys it.
#[test]
fn routes_over_tls() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let files = ca
        .issue(&["a.example", "b.example"])
        .write(dir.path(), "ab");
    let (a, b) = (Origin::cacheable(), Origin::cacheable());
    let conf = dir.path().join("proxy.yaml");
    std::fs::write(
        &conf,
        format!(
            "upstreams:\n  a: {{servers: [\"{}\"]}}\n  b: {{servers: [\"{}\"]}}\n\
             routes:\n  - {{hosts: [a.example], upstream: a, cache: {{key_ignore_query: [utm_source]}}}}\n  - {{hosts: [b.example], upstream: b}}\n\
             tls:\n  certificates:\n    - {{cert: {}, key: {}}}\n",
            a.addr(),
            b.addr(),
            files.cert(),
            files.key()
        ),
    )
    .unwrap();
    let proxy = ProxyBuilder::new(&a.url())
        .tls_listener()
        .args(&["-c", conf.to_str().unwrap()])
        .start();
    let client = ClientTls::trusting(&ca.pem, &["http/1.1"]);
    let mut on_a = client.connect(proxy.tls_addr(), "a.example").unwrap();
    let mut on_b = client.connect(proxy.tls_addr(), "b.example").unwrap();
    assert_eq!(
        on_a.get("a.example", "/p?utm_source=x").unwrap().x_cache(),
        "MISS"
    );
    assert_eq!(on_a.get("a.example", "/p").unwrap().x_cache(), "HIT");
    assert_eq!(on_b.get("b.example", "/p").unwrap().x_cache(), "MISS");
    assert_eq!(on_b.get("b.example", "/p").unwrap().x_cache(), "HIT");
    assert_eq!((a.hits(), b.hits()), (1, 1));
    let to_b = &b.requests()[0];
    assert_eq!(to_b.header("host"), Some("b.example"));
    assert_eq!(to_b.header("x-forwarded-proto"), Some("https"));

    let purge = |url: &str| {
        request(
            "POST",
            &proxy.admin_url("/cache/purge"),
            &[("content-type", "application/json")],
            Some(&format!(r#"{{"url":"{url}"}}"#)),
        )
        .json()["purged"]
            .clone()
    };
    assert_eq!(purge("http://a.example/p"), false, "no http entry");
    assert_eq!(purge("https://a.example/p?utm_source=y"), true);
    assert_eq!(on_a.get("a.example", "/p").unwrap().x_cache(), "MISS");
    assert_eq!(on_b.get("b.example", "/p").unwrap().x_cache(), "HIT");
}
