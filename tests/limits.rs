//! Request limits (`limits.*`): a request over a bound is answered by the proxy itself in the
//! JSON error shape, never reaches the origin, is counted in
//! `caching_proxy_requests_rejected_total{reason}`, and other connections keep being served.
//! Also what Pingora's own HTTP/1 reader refuses before any proxy code (over 256 fields, over
//! 1 MiB of header, malformed) and the client header timeout.

mod support;

use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::client::KeepAlive;
use support::{parse_response, raw, Origin, Proxy, ProxyBuilder, Response};

fn rejected(proxy: &Proxy, reason: &str) -> f64 {
    proxy.metric(&format!(
        "caching_proxy_requests_rejected_total{{reason=\"{reason}\"}}"
    ))
}

/// The response in `text` is the proxy's own JSON error with `status` and `code`.
fn assert_refused(text: &str, status: u16, code: &str) -> Response {
    let resp = parse_response(text).unwrap_or_else(|| panic!("no response: {text:?}"));
    assert_eq!(resp.status, status, "{text}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(resp.header("connection"), Some("close"));
    let body = resp.json();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["request_id"].as_str(), resp.header("x-request-id"));
    resp
}

/// A GET of `path` with `fields` (each ending in CRLF) after `Host`, on its own connection.
fn get_with(proxy: &Proxy, path: &str, fields: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{fields}\r\n");
    raw(proxy.addr(), req.as_bytes())
}

fn status_of(text: &str) -> u16 {
    parse_response(text).map_or(0, |r| r.status)
}

/// `n` distinct fields of about `size` bytes each.
fn fields(n: usize, size: usize) -> String {
    (0..n)
        .map(|i| format!("x-f{i:03}: {}\r\n", "v".repeat(size.saturating_sub(7))))
        .collect()
}

#[test]
fn a_header_field_over_max_header_bytes_gets_431_and_never_reaches_the_origin() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    // A neighbour: a kept-alive connection that is served before and after the refusals.
    let mut neighbour = KeepAlive::new(proxy.addr());
    assert_eq!(neighbour.get("/before").unwrap().0, 200);

    // The case: one 64 KiB field.
    let big = format!("x-big: {}\r\n", "v".repeat(64 << 10));
    assert_refused(
        &get_with(&proxy, "/big", &big),
        431,
        "REQUEST_HEADER_FIELDS_TOO_LARGE",
    );
    // `x-big: ` is 7 bytes: the line is 8 KiB with 8185 bytes of value, one more is over.
    let at_limit = format!("x-big: {}\r\n", "v".repeat((8 << 10) - 7));
    assert_eq!(status_of(&get_with(&proxy, "/at-limit", &at_limit)), 200);
    let over = format!("x-big: {}\r\n", "v".repeat((8 << 10) - 6));
    assert_refused(
        &get_with(&proxy, "/over", &over),
        431,
        "REQUEST_HEADER_FIELDS_TOO_LARGE",
    );

    assert_eq!(origin.hits_for("/big"), 0);
    assert_eq!(origin.hits_for("/over"), 0);
    assert_eq!(origin.hits_for("/at-limit"), 1);
    assert_eq!(rejected(&proxy, "header_too_large"), 2.0);
    assert_eq!(neighbour.get("/after").unwrap().0, 200);
    assert_eq!(
        (neighbour.connections, neighbour.retries),
        (1, 0),
        "the neighbour's connection was served throughout"
    );
}

#[test]
fn too_many_header_fields_get_431_also_past_the_parsers_own_bound() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--max-header-count", "20"])
        .start();
    // Over Pingora's parser bound (256 fields): refused before any proxy hook, still in our
    // shape and counted.
    assert_refused(
        &get_with(&proxy, "/300", &fields(300, 10)),
        431,
        "REQUEST_HEADER_FIELDS_TOO_LARGE",
    );
    // Host, Connection and 19 more: 21 fields.
    assert_refused(
        &get_with(&proxy, "/21", &fields(19, 10)),
        431,
        "REQUEST_HEADER_FIELDS_TOO_LARGE",
    );
    assert_eq!(
        origin.connections(),
        0,
        "a refused request reached the origin"
    );
    assert_eq!(rejected(&proxy, "too_many_headers"), 2.0);
    assert_eq!(status_of(&get_with(&proxy, "/20", &fields(18, 10))), 200);
    assert_eq!(origin.hits_for("/20"), 1);
}

#[test]
fn the_default_field_count_is_100() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    assert_refused(
        &get_with(&proxy, "/101", &fields(99, 10)),
        431,
        "REQUEST_HEADER_FIELDS_TOO_LARGE",
    );
    assert_eq!(origin.connections(), 0);
    // 100 fields pass the proxy (this test origin parses at most 64, so it cannot answer).
    assert_ne!(status_of(&get_with(&proxy, "/100", &fields(98, 10))), 431);
}

#[test]
fn a_header_section_over_max_headers_bytes_gets_431() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    // Ten 7,000-byte fields: each line under 8 KiB, together over 64 KiB.
    assert_refused(
        &get_with(&proxy, "/70k", &fields(10, 7000)),
        431,
        "REQUEST_HEADER_FIELDS_TOO_LARGE",
    );
    assert_eq!(origin.connections(), 0);
    assert_eq!(rejected(&proxy, "headers_too_large"), 1.0);
    assert_eq!(status_of(&get_with(&proxy, "/63k", &fields(9, 7000))), 200);
}

#[test]
fn a_header_over_the_parsers_1_mib_gets_431_in_the_json_shape() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    // 150 fields of 7,000 bytes and no end of header: Pingora's reader stops past 1 MiB.
    // Everything is sent before the answer is read, so no unread bytes reset the connection.
    let head = format!("GET /huge HTTP/1.1\r\nHost: test\r\n{}", fields(150, 7000));
    assert!(head.len() > 1 << 20);
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    assert_refused(
        &String::from_utf8_lossy(&out),
        431,
        "REQUEST_HEADER_FIELDS_TOO_LARGE",
    );
    assert_eq!(origin.connections(), 0);
    assert_eq!(rejected(&proxy, "headers_too_large"), 1.0);
}

#[test]
fn a_target_over_max_uri_bytes_gets_414() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--max-uri-bytes", "100"])
        .start();
    let long = format!("/{}", "a".repeat(100));
    assert_refused(&get_with(&proxy, &long, ""), 414, "URI_TOO_LONG");
    assert_eq!(origin.connections(), 0);
    assert_eq!(rejected(&proxy, "uri_too_long"), 1.0);
    let fits = format!("/{}", "a".repeat(99));
    assert_eq!(status_of(&get_with(&proxy, &fits, "")), 200);
    assert_eq!(origin.hits_for(&fits), 1);
}

#[test]
fn a_malformed_request_gets_400_in_the_json_shape() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    // A field line without a colon; then two different Content-Lengths (ambiguous framing),
    // then one that is not a number.
    let bad_field = raw(
        proxy.addr(),
        b"GET / HTTP/1.1\r\nHost: test\r\nno colon here\r\n\r\n",
    );
    assert_refused(&bad_field, 400, "BAD_REQUEST");
    let bad_framing = raw(
        proxy.addr(),
        b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    );
    assert_refused(&bad_framing, 400, "BAD_REQUEST");
    // A Content-Length that is no number: present, so not a request without a body.
    let bad_length = raw(
        proxy.addr(),
        b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1x\r\n\r\na",
    );
    assert_refused(&bad_length, 400, "BAD_REQUEST");
    assert_eq!(origin.connections(), 0);
    assert_eq!(rejected(&proxy, "malformed"), 3.0);
}

#[test]
fn a_body_over_max_body_bytes_gets_413_declared_or_chunked() {
    let origin = Origin::start(|r| support::Reply::ok(format!("got {}", r.body.len())));
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--max-body-bytes", "1KiB"])
        .start();

    // Declared: refused before the body is read (none is sent).
    let declared = raw(
        proxy.addr(),
        b"POST /declared HTTP/1.1\r\nHost: test\r\nContent-Length: 1025\r\n\r\n",
    );
    assert_refused(&declared, 413, "CONTENT_TOO_LARGE");
    assert_eq!(origin.connections(), 0);

    // Chunked: four 300-byte chunks and the last chunk, all sent. The request has gone
    // upstream by the time the fourth chunk crosses 1 KiB; the proxy must stop it there, so
    // the origin never receives a whole request.
    let chunk = format!("12c\r\n{}\r\n", "c".repeat(300));
    let chunked = format!(
        "POST /chunked HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(4)
    );
    assert_refused(
        &raw(proxy.addr(), chunked.as_bytes()),
        413,
        "CONTENT_TOO_LARGE",
    );
    assert_eq!(
        origin.hits_for("/chunked"),
        0,
        "the origin got the whole body"
    );
    assert_eq!(rejected(&proxy, "body_too_large"), 2.0);

    // Within the limit, both ways.
    let fits = format!(
        "POST /fits HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 1024\r\n\r\n{}",
        "b".repeat(1024)
    );
    let resp = parse_response(&raw(proxy.addr(), fits.as_bytes())).unwrap();
    assert_eq!((resp.status, resp.body.as_str()), (200, "got 1024"));
    let three = format!(
        "POST /fits-chunked HTTP/1.1\r\nHost: test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(3)
    );
    let resp = parse_response(&raw(proxy.addr(), three.as_bytes())).unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body.ends_with("got 900"), "{resp:?}");
}

/// A request body many socket reads long reaches the origin byte for byte, and the kept-alive
/// connection serves the next request: plain HTTP reads straight into Pingora's session, with
/// no L4 read buffer in between (`server::client_listener`).
#[test]
fn a_large_request_body_reaches_the_origin_whole_and_the_connection_goes_on() {
    let origin = Origin::start(|r| support::Reply::ok(format!("got {}", r.body.len())));
    let proxy = ProxyBuilder::new(&origin.url()).start();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut client = KeepAlive::new(proxy.addr());
    let (status, answer) = client.post("/upload", &body).unwrap();
    assert_eq!((status, answer.as_slice()), (200, &b"got 300000"[..]));
    let (status, _) = client.get("/after").unwrap();
    assert_eq!(status, 200);
    assert_eq!(client.connections, 1, "one kept-alive connection");
    let uploads: Vec<_> = origin
        .requests()
        .into_iter()
        .filter(|r| r.path() == "/upload")
        .collect();
    assert_eq!(uploads.len(), 1);
    assert!(uploads[0].body == body, "the body arrived altered");
}

/// Sends `prefix`, then `trickle` one byte every 200 ms, until the proxy closes the
/// connection; returns what it answered and how long after connecting it closed. `None`
/// if the proxy still had not closed once everything was sent.
fn trickle(proxy: &Proxy, prefix: &[u8], trickle: &[u8]) -> Option<(String, Duration)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream.write_all(prefix).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut answer = Vec::new();
    let mut rest = trickle.iter();
    loop {
        let mut buf = [0; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut) => {
                match rest.next() {
                    Some(byte) => {
                        if stream.write_all(&[*byte]).is_err() {
                            break;
                        }
                    }
                    None => return None,
                }
            }
            Err(_) => break,
        }
    }
    Some((
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    ))
}

#[test]
fn a_slowly_sent_request_line_is_cut_at_the_client_header_timeout() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--client-header-timeout", "1s"])
        .start();
    // 75 bytes at one per 200 ms: 15 s if nobody cuts it; each read is well within
    // Pingora's own per-read timeouts.
    let line = format!("GET /{} HTTP/1.1\r\n", "s".repeat(60));
    let (answer, after) = trickle(&proxy, b"", line.as_bytes())
        .expect("the connection was still open after 15 s of a partial request line");
    assert_eq!(answer, "", "no request line was read: nothing to answer");
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    assert_eq!(rejected(&proxy, "header_timeout"), 1.0);
    assert_eq!(origin.connections(), 0);
}

#[test]
fn a_slow_header_after_its_request_line_gets_408() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--client-header-timeout", "1s"])
        .start();
    let fields = format!("Host: test\r\nx-slow: {}\r\n\r\n", "s".repeat(60));
    let (answer, _) = trickle(&proxy, b"GET /slow HTTP/1.1\r\n", fields.as_bytes())
        .expect("the connection was still open after 15 s of a partial header");
    assert_refused(&answer, 408, "REQUEST_TIMEOUT");
    assert_eq!(origin.connections(), 0);
}

#[test]
fn a_connection_that_sends_nothing_is_closed_at_the_client_header_timeout() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--client-header-timeout", "1s"])
        .start();
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    // Pingora alone would keep it for its 60 s keep-alive timeout.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == IoErrorKind::ConnectionReset => {}
        Err(e) => panic!("still open after 30 s: {e}"),
    }
}

#[test]
fn a_kept_alive_connection_may_idle_longer_than_the_header_timeout() {
    // The header timeout counts from a later request's first byte: idle time between
    // requests is the keep-alive timeout's.
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--client-header-timeout", "1s"])
        .start();
    let mut client = KeepAlive::new(proxy.addr());
    assert_eq!(client.get("/one").unwrap().0, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(client.get("/two").unwrap().0, 200);
    assert_eq!((client.connections, client.retries), (1, 0));
}
