//! Large cached bodies live in a memory-backed file and go to HTTP/1 clients with
//! sendfile(2): the socket holds the file's pages, not a copy. A response still in flight
//! keeps its bytes when its entry goes and a new body takes its place, and every other way
//! of reading a cached body (ranges, HEAD, revalidation) is unchanged.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use support::tls::{Ca, ClientTls};
use support::{get, request, wait_until, Origin, Proxy, ProxyBuilder, Reply};

/// Large enough for the body file (16 KiB and up), small enough to sit whole in a loopback
/// socket's first receive window.
const BODY: usize = 32 * 1024;

/// Every path's body is one letter, its last path character's: a mix-up shows in any byte.
fn body_for(path: &str) -> Vec<u8> {
    let letter = path
        .bytes()
        .last()
        .filter(u8::is_ascii_lowercase)
        .unwrap_or(b'x');
    vec![letter; BODY]
}

fn origin() -> Origin {
    Origin::start(|req| {
        Reply::ok(body_for(req.path()))
            .header("cache-control", "max-age=600")
            .header("etag", &format!("\"{}\"", req.path()))
    })
}

/// Bytes the kernel holds for `stream` that it has not read yet.
fn queued(stream: &TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    // Safety: FIONREAD writes one int.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD");
    n as usize
}

fn purge(proxy: &Proxy, path: &str) {
    let url = proxy.url(path);
    let purged = request(
        "POST",
        &proxy.admin_url("/cache/purge"),
        &[],
        Some(&format!(r#"{{"url":"{url}"}}"#)),
    );
    assert_eq!(purged.json()["purged"], true, "{purged:?}");
}

#[test]
fn a_hit_in_flight_keeps_its_bytes_when_its_entry_is_replaced() {
    let origin = origin();
    let proxy = Proxy::start(&origin.url());
    assert_eq!(get(&proxy.url("/a")).x_cache(), "MISS");

    // A hit the client has not read yet: the whole response waits in its socket, in pages
    // of the body file that the socket holds.
    let mut client = TcpStream::connect(proxy.addr()).unwrap();
    let host = proxy.addr();
    let ask = format!("GET /a HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    client.write_all(ask.as_bytes()).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the whole hit in the socket",
        || queued(&client) > BODY,
    );

    // The entry goes, its range is given back, and the next body of the same size is
    // written where it was.
    // Its access record is written once the hit let go of the body.
    proxy.wait_log(
        r#""path":"/a","query":null,"status":200,"protocol":"http/1.1","tls":null,"cache":"HIT""#,
    );
    purge(&proxy, "/a");
    for path in ["/b", "/c"] {
        assert_eq!(get(&proxy.url(path)).x_cache(), "MISS");
        let hit = get(&proxy.url(path));
        assert_eq!(hit.x_cache(), "HIT");
        assert_eq!(hit.body.as_bytes(), body_for(path), "{path}");
    }

    let mut response = Vec::new();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("x-cache: hit"), "{head}");
    assert_eq!(body.len(), BODY);
    assert!(
        body.bytes().all(|b| b == b'a'),
        "the response in flight changed: {} bytes of it are not /a's",
        body.bytes().filter(|b| *b != b'a').count()
    );
}

#[test]
fn large_cached_bodies_serve_whole_ranges_head_and_revalidation() {
    let origin = origin();
    let proxy = Proxy::start(&origin.url());
    assert_eq!(get(&proxy.url("/r")).x_cache(), "MISS");
    for _ in 0..3 {
        let hit = get(&proxy.url("/r"));
        assert_eq!(hit.x_cache(), "HIT");
        assert_eq!(hit.header("content-length"), Some("32768"));
        assert_eq!(hit.body.as_bytes(), body_for("/r"));
    }

    let range = request("GET", &proxy.url("/r"), &[("range", "bytes=100-199")], None);
    assert_eq!(range.status, 206, "{range:?}");
    assert_eq!(range.header("content-range"), Some("bytes 100-199/32768"));
    assert_eq!(range.body, "r".repeat(100));

    let head = request("HEAD", &proxy.url("/r"), &[], None);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("32768"));
    assert_eq!(head.x_cache(), "HIT");
    assert!(head.body.is_empty());

    let unchanged = request(
        "GET",
        &proxy.url("/r"),
        &[("if-none-match", "\"/r\"")],
        None,
    );
    assert_eq!(unchanged.status, 304, "{unchanged:?}");
    assert!(unchanged.body.is_empty());

    // One origin fetch for all of it; then a keep-alive connection takes hits one after
    // the other, each whole.
    assert_eq!(origin.hits_for("/r"), 1);
    let mut conn = support::client::KeepAlive::new(proxy.addr());
    for _ in 0..5 {
        let (status, body) = conn.get("/r").unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, body_for("/r"));
    }
    assert_eq!(
        conn.connections, 1,
        "the connection stays usable after each hit"
    );
}

/// Over TLS the session is HTTP/1 but the socket is not plain TCP: the same stored body is
/// read through the file's mapping and written as before, byte for byte, on one kept-alive
/// connection. (HTTP/2 and h2c over large stored bodies: `tests/tls.rs`; the Redis tier:
/// `tests/redis_tier.rs`; a hand-over: `tests/handover.rs`, a 3 MiB body.)
#[test]
fn over_tls_a_large_hit_is_written_from_the_mapping() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let files = ca.issue(&["localhost"]).write(dir.path(), "site");
    let origin = origin();
    let proxy = ProxyBuilder::new(&origin.url()).tls(&files).start();
    let host = format!("localhost:{}", proxy.tls_port.unwrap());
    let client = ClientTls::trusting(&ca.pem, &["http/1.1"]);
    let mut conn = client.connect(proxy.tls_addr(), "localhost").unwrap();
    let expected = String::from_utf8(body_for("/t")).unwrap();
    for x_cache in ["MISS", "HIT", "HIT"] {
        let response = conn.get(&host, "/t").unwrap();
        assert_eq!((response.status, response.x_cache()), (200, x_cache));
        assert!(response.body == expected, "{} bytes", response.body.len());
    }
    assert_eq!(origin.hits_for("/t"), 1);
}
