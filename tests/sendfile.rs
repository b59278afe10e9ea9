//! Large cached bodies live in a memory-backed file and go to HTTP/1 clients with
//! sendfile(2): the socket holds the file's pages, not a copy. A response still in flight
//! keeps its bytes when its entry goes and a new body takes its place, and every other way
//! of reading a cached body (ranges, HEAD, revalidation) is unchanged.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::thread;
use std::time::Duration;

use support::{get, request, wait_until, Origin, Proxy, Reply};

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
    purge(&proxy, "/a");
    thread::sleep(Duration::from_millis(100)); // the hit's task lets go of the body
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
