//! Memory of responses being stored is bounded: bodies in flight reserve their bytes within
//! the cache's bound (`cache.max_inflight_size`); a response that does not fit is still
//! served whole, not stored, and counted in `caching_proxy_cache_store_aborted_total`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use support::client::Pending;
use support::{request, Gate, ProxyBuilder};

const BODY: usize = 1 << 20;
const HALF: usize = BODY / 2;

/// The byte at `i` of the body of `path`: bodies differ by path, so a mix-up shows.
fn byte(path: &str, i: usize) -> u8 {
    let seed = path.bytes().map(usize::from).sum::<usize>();
    b'a' + ((seed + i) % 26) as u8
}

/// An origin that sends the first half of each 1 MiB body at once and the second half when
/// `gate` opens; returns its address.
fn half_then_gate_origin(gate: Gate) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let gate = gate.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    while line != "\r\n" {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                    }
                    let body: Vec<u8> = (0..BODY).map(|i| byte(&path, i)).collect();
                    let out = reader.get_mut();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncache-control: max-age=600\r\ncontent-length: {BODY}\r\n\r\n"
                    );
                    let _ = out.write_all(head.as_bytes());
                    let _ = out.write_all(&body[..HALF]);
                    let _ = out.flush();
                    gate.wait();
                    if out.write_all(&body[HALF..]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn responses_that_do_not_fit_in_flight_are_served_whole_and_not_stored() {
    let gate = Gate::new();
    let origin = half_then_gate_origin(gate.clone());
    // 8 MiB cache, 2 MiB for bodies in flight: eight half-delivered 1 MiB bodies (4 MiB)
    // cannot all be kept.
    let proxy = ProxyBuilder::new(&origin)
        .args(&[
            "--cache-max-bytes",
            "8MiB",
            "--cache-max-object-size",
            "1MiB",
            "--cache-max-inflight-bytes",
            "2MiB",
        ])
        .start();
    let aborted = |proxy: &support::Proxy| {
        proxy.metric(r#"caching_proxy_cache_store_aborted_total{reason="memory"}"#)
    };
    let paths: Vec<String> = (0..8).map(|i| format!("/big/{i}")).collect();
    let pending: Vec<Pending> = paths
        .iter()
        .map(|p| Pending::get(proxy.addr(), p))
        .collect();
    // Wait until the budget ran out for some of them, while every fetch is half done.
    let deadline = Instant::now() + Duration::from_secs(20);
    while aborted(&proxy) < 1.0 {
        assert!(Instant::now() < deadline, "no store was given up");
        thread::sleep(Duration::from_millis(20));
    }
    gate.open();
    for (path, p) in paths.iter().zip(pending) {
        let resp = p.response();
        assert_eq!(resp.status, 200, "{path}");
        let expected: Vec<u8> = (0..BODY).map(|i| byte(path, i)).collect();
        assert!(
            resp.body.as_bytes() == expected.as_slice(),
            "{path}: body of {} bytes differs",
            resp.body.len()
        );
        assert_eq!(resp.x_cache(), "MISS");
    }
    let given_up = aborted(&proxy) as u64;
    let stats = proxy.stats();
    let entries = stats["entries"].as_u64().unwrap();
    assert!(
        given_up >= 1 && entries <= 8 - given_up,
        "{given_up} given up, {stats}"
    );
    assert!(stats["bytes"].as_u64().unwrap() <= 8 << 20, "{stats}");
    // What was stored is a hit; nothing else is there (asked without fetching, so that no
    // new store evicts another).
    let hits = paths
        .iter()
        .filter(|p| {
            let only_cached = [("cache-control", "only-if-cached")];
            request("GET", &proxy.url(p), &only_cached, None).x_cache() == "HIT"
        })
        .count() as u64;
    assert_eq!(hits, entries);
}
