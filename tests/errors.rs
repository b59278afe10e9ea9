//! Failures: unreachable and slow origins, bad requests. Each gets a JSON error with the
//! right status, and the proxy keeps serving afterwards.

mod support;

use std::time::Duration;

use support::{free_port, get, raw, request, Origin, Proxy, ProxyBuilder, Reply};

fn assert_json_error(resp: &support::Response, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body = resp.json();
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(
        body["request_id"].as_str(),
        resp.header("x-request-id"),
        "the body names the request ID the headers carry"
    );
    assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
}

#[test]
fn origin_down_gives_502_then_the_proxy_serves_normally_once_it_is_back() {
    let port = free_port();
    let proxy = Proxy::start(&format!("http://127.0.0.1:{port}"));

    let down = get(&proxy.url("/a"));
    assert_json_error(&down, 502, "ORIGIN_UNREACHABLE");
    assert_eq!(down.x_cache(), "MISS");
    // Again, to show the failure left nothing behind (no cached error, no stuck lock).
    assert_json_error(&get(&proxy.url("/a")), 502, "ORIGIN_UNREACHABLE");

    let origin = Origin::start_on(port, |_| {
        Reply::ok("back").header("cache-control", "max-age=60")
    });
    let up = get(&proxy.url("/a"));
    assert_eq!(up.status, 200);
    assert_eq!(up.body, "back");
    assert_eq!(up.x_cache(), "MISS");
    assert_eq!(get(&proxy.url("/a")).x_cache(), "HIT");
    assert_eq!(origin.hits(), 1);
}

#[test]
fn origin_slower_than_the_read_timeout_gives_504() {
    let origin = Origin::start(|r| match r.path() {
        "/slow" => Reply::ok("late").delay(Duration::from_secs(3)),
        _ => Reply::ok("fast"),
    });
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--timeout", "500ms"])
        .start();
    let slow = get(&proxy.url("/slow"));
    assert_json_error(&slow, 504, "ORIGIN_TIMEOUT");
    let fast = get(&proxy.url("/fast"));
    assert_eq!(fast.status, 200);
    assert_eq!(fast.body, "fast");
}

#[test]
fn unparseable_requests_are_refused_and_the_proxy_keeps_serving() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    let answer = raw(proxy.addr(), b"GARBAGE\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let answer = raw(proxy.addr(), b"GET / HTTP/1.1\r\nBad Header\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert_eq!(origin.hits(), 0);
    assert_eq!(get(&proxy.url("/ok")).status, 200);
}

#[test]
fn request_without_host_gets_a_json_400() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    let answer = raw(
        proxy.addr(),
        b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(answer.contains("\"code\":\"BAD_REQUEST\""), "{answer:?}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-frame-options: deny"),
        "{answer:?}"
    );
    assert_eq!(origin.hits(), 0);
}

#[test]
fn origin_5xx_is_passed_through_not_rewritten() {
    let origin = Origin::start(|_| Reply::ok("origin says no").status(503));
    let proxy = Proxy::start(&origin.url());
    let resp = get(&proxy.url("/x"));
    assert_eq!(resp.status, 503);
    assert_eq!(resp.body, "origin says no");
}

#[test]
fn port_in_use_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let admin = free_port().to_string();
    let out = support::proxy::run(
        &[
            "--origin",
            "http://127.0.0.1:9",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--admin-port",
            &admin,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (listen.host/listen.port)"
        )),
        "{stderr}"
    );
}

/// A second instance on a running one's admin port does not start: only the new process of
/// an upgrade may share that port (`tests/lifecycle.rs`).
#[test]
fn admin_port_of_a_running_instance_is_a_clear_start_up_error() {
    let running = support::Proxy::start("http://127.0.0.1:9");
    let dir = tempfile::tempdir().unwrap();
    let mut second = std::process::Command::new(support::proxy::BIN)
        .args(["--origin", "http://127.0.0.1:9", "--host", "127.0.0.1"])
        .args(["--port", &free_port().to_string()])
        .args(["--admin-port", &running.admin_port.to_string()])
        .arg(format!("--pid-file={}", dir.path().join("pid").display()))
        .arg(format!(
            "--upgrade-sock={}",
            dir.path().join("sock").display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            second.kill().unwrap();
            panic!("a second instance started on a running instance's admin port");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    let expected = format!(
        "cannot listen on 127.0.0.1:{} (admin.host/admin.port)",
        running.admin_port
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn errors_carry_no_store_and_bypass_for_other_methods() {
    let port = free_port();
    let proxy = Proxy::start(&format!("http://127.0.0.1:{port}"));
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let resp = request(method, &proxy.url("/x"), &[], Some("body"));
        assert_json_error(&resp, 502, "ORIGIN_UNREACHABLE");
        assert_eq!(resp.header("cache-control"), Some("no-store"), "{method}");
        assert_eq!(resp.x_cache(), "BYPASS", "{method}");
    }
    let resp = get(&proxy.url("/x"));
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_eq!(resp.x_cache(), "MISS", "the cache was consulted for a GET");
}

/// A listener whose accept queue is full: Linux drops further SYNs, so a connection to it
/// neither succeeds nor fails until the client gives up. Keep the returned streams alive.
fn unanswering_origin() -> (
    std::net::SocketAddr,
    Vec<std::net::TcpStream>,
    socket2::Socket,
) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let mut queued = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => queued.push(s),
            Err(_) => break, // the queue is full: this attempt timed out
        }
        assert!(queued.len() < 64, "the accept queue never filled");
    }
    (addr, queued, listener)
}

#[test]
fn origin_connect_timeout_gives_504() {
    let (addr, _queued, _listener) = unanswering_origin();
    let proxy = ProxyBuilder::new(&format!("http://{addr}"))
        .args(&["--connect-timeout", "300ms"])
        .start();
    let resp = get(&proxy.url("/x"));
    assert_json_error(&resp, 504, "ORIGIN_TIMEOUT");
    assert_eq!(
        proxy.metric(r#"caching_proxy_origin_errors_total{kind="timeout"}"#),
        1.0
    );
}

#[test]
fn invalid_origin_response_gives_502_origin_bad_response() {
    // An origin that answers anything but HTTP.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0; 4096];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let _ = std::io::Write::write_all(&mut stream, b"SSH-2.0-OpenSSH\r\n\r\nnot http\r\n");
        }
    });
    let proxy = Proxy::start(&format!("http://{addr}"));
    let resp = get(&proxy.url("/x"));
    assert_json_error(&resp, 502, "ORIGIN_BAD_RESPONSE");
    assert_eq!(resp.x_cache(), "MISS");
    assert_eq!(
        get(&proxy.url("/x")).status,
        502,
        "and again: nothing was stored"
    );
}

/// A stale response served because the origin failed is the connection's last: Pingora drops
/// the client's connection after it, so the response must say `Connection: close`, or the
/// client's next request on that connection (a POST, which it must not resend) is lost.
#[test]
fn stale_served_on_an_origin_failure_closes_the_connection_cleanly() {
    use support::client::KeepAlive;
    use support::Failure;
    let origin = Origin::sequence(vec![
        Reply::ok("good").header("cache-control", "max-age=1, stale-if-error=60"),
        Reply::fail(Failure::Reset),
        Reply::ok("posted"),
    ]);
    let proxy = Proxy::start(&origin.url());
    let mut client = KeepAlive::new(proxy.addr());
    assert_eq!(client.get("/s").unwrap(), (200, b"good".to_vec()));
    // Waiting out the 1 s lifetime is the behaviour under test.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        client.get("/s").unwrap(),
        (200, b"good".to_vec()),
        "served stale"
    );
    let posted = client.post("/p", b"x");
    assert_eq!(posted, Ok((200, b"posted".to_vec())), "the POST after it");
    assert_eq!(client.retries, 0);
}
