//! The admin service and `--clear-cache`, against a running proxy.

mod support;

use support::proxy::run;
use support::{free_port, get, request, Origin, Proxy, ProxyBuilder};

#[test]
fn health_endpoints() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    let live = get(&proxy.admin_url("/health/live"));
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["status"], "live");
    let ready = get(&proxy.admin_url("/health/ready"));
    assert_eq!(ready.status, 200);
    assert_eq!(ready.header("x-frame-options"), Some("DENY"));
    assert_eq!(origin.hits(), 0, "admin requests never reach the origin");
}

#[test]
fn unknown_paths_and_methods_get_json_errors() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    let missing = get(&proxy.admin_url("/nope"));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["code"], "NOT_FOUND");
    let wrong = request("POST", &proxy.admin_url("/health/live"), &[], Some(""));
    assert_eq!(wrong.status, 405);
    assert_eq!(wrong.json()["code"], "METHOD_NOT_ALLOWED");
}

#[test]
fn stats_report_usage_and_last_clear() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--cache-size", "50"])
        .start();
    get(&proxy.url("/s"));
    get(&proxy.url("/s"));
    let stats = proxy.stats();
    assert_eq!(stats["hits"], 1);
    assert_eq!(stats["misses"], 1);
    assert_eq!(stats["entries"], 1);
    assert!(stats["bytes"].as_u64().unwrap() > "body of /s".len() as u64);
    assert_eq!(stats["max_entries"], 50);
    assert_eq!(stats["hit_ratio"], 0.5);
    assert!(stats["last_cleared"].is_null());
    request("DELETE", &proxy.admin_url("/cache"), &[], None);
    let after = proxy.stats();
    assert_eq!(after["entries"], 0);
    assert_eq!(after["bytes"], 0);
    assert!(
        after["last_cleared"].as_str().unwrap().contains('T'),
        "RFC 3339 time"
    );
}

#[test]
fn clear_cache_flag_clears_a_running_instance() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    get(&proxy.url("/c"));
    assert_eq!(get(&proxy.url("/c")).x_cache(), "HIT");

    let admin_port = proxy.admin_port.to_string();
    let out = run(&["--clear-cache", "--admin-port", &admin_port], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("cache cleared: 1 entries removed"),
        "{stdout}"
    );

    assert_eq!(get(&proxy.url("/c")).x_cache(), "MISS");
    assert_eq!(origin.hits(), 2);
}

#[test]
fn clear_cache_reads_the_admin_port_from_env() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    get(&proxy.url("/c"));
    proxy.wait_stored(1);
    let admin_port = proxy.admin_port.to_string();
    let out = run(&["--clear-cache"], &[("PROXY_ADMIN_PORT", &admin_port)]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(get(&proxy.url("/c")).x_cache(), "MISS");
}

#[test]
fn clear_cache_fails_clearly_when_no_instance_answers() {
    let port = free_port().to_string();
    let out = run(&["--clear-cache", "--admin-port", &port], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no admin service answers at http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.contains("is caching-proxy running?"), "{stderr}");
}

#[test]
fn mutating_endpoints_need_the_token_when_one_is_set() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--admin-token", "s3cret"])
        .start();
    get(&proxy.url("/t"));
    proxy.wait_stored(1);

    let none = request("DELETE", &proxy.admin_url("/cache"), &[], None);
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["code"], "UNAUTHORIZED");
    let wrong = request(
        "DELETE",
        &proxy.admin_url("/cache"),
        &[("Authorization", "Bearer nope")],
        None,
    );
    assert_eq!(wrong.status, 401);
    let purge = request(
        "POST",
        &proxy.admin_url("/cache/purge"),
        &[],
        Some(r#"{"url":"http://x/"}"#),
    );
    assert_eq!(purge.status, 401);
    assert_eq!(
        proxy.stats()["entries"],
        1,
        "refused requests changed nothing"
    );

    let admin_port = proxy.admin_port.to_string();
    let refused = run(&["--clear-cache", "--admin-port", &admin_port], &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refused"),
        "{refused:?}"
    );

    let ok = request(
        "DELETE",
        &proxy.admin_url("/cache"),
        &[("Authorization", "Bearer s3cret")],
        None,
    );
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["cleared"], 1);

    get(&proxy.url("/t"));
    proxy.wait_stored(1);
    let cli = run(
        &["--clear-cache", "--admin-port", &admin_port],
        &[("PROXY_ADMIN_TOKEN", "s3cret")],
    );
    assert!(cli.status.success(), "{cli:?}");
    assert_eq!(proxy.stats()["entries"], 0);
}

#[test]
fn purge_removes_one_url() {
    let origin = Origin::cacheable();
    let proxy = Proxy::start(&origin.url());
    get(&proxy.url("/keep"));
    get(&proxy.url("/drop?x=1"));
    proxy.wait_stored(2);
    let url = proxy.url("/drop?x=1");
    let purged = request(
        "POST",
        &proxy.admin_url("/cache/purge"),
        &[],
        Some(&format!(r#"{{"url":"{url}"}}"#)),
    );
    assert_eq!(purged.status, 200, "{purged:?}");
    assert_eq!(purged.json()["purged"], true);
    assert_eq!(get(&proxy.url("/drop?x=1")).x_cache(), "MISS");
    assert_eq!(get(&proxy.url("/keep")).x_cache(), "HIT");

    let again = request(
        "POST",
        &proxy.admin_url("/cache/purge"),
        &[],
        Some(r#"{"url":"http://127.0.0.1:1/none"}"#),
    );
    assert_eq!(again.json()["purged"], false);
    let bad = request(
        "POST",
        &proxy.admin_url("/cache/purge"),
        &[],
        Some("not json"),
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["code"], "BAD_REQUEST");
}

#[test]
fn without_a_token_mutations_need_a_loopback_admin_address() {
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&["--admin-host", "0.0.0.0"])
        .start();
    get(&proxy.url("/t"));
    proxy.wait_stored(1);
    let refused = request("DELETE", &proxy.admin_url("/cache"), &[], None);
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["code"], "FORBIDDEN");
    assert_eq!(proxy.stats()["entries"], 1);
    assert!(
        proxy.log().contains("without admin.token"),
        "a warning at start-up"
    );
}

#[test]
fn purge_without_a_token_is_refused_to_a_client_off_loopback() {
    use std::io::{Read, Write};
    let origin = Origin::cacheable();
    let proxy = ProxyBuilder::new(&origin.url())
        .arg("--enable-purge")
        .start();
    get(&proxy.url("/p"));
    proxy.wait_stored(1);
    // The proxy listens on 127.0.0.1; connecting from another address of this machine makes
    // a client that is not on loopback.
    let from = support::net::non_loopback_ipv4()
        .expect("this test needs an IPv4 address other than loopback on this machine");
    let purge = |source: std::net::IpAddr| {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&std::net::SocketAddr::new(source, 0).into())
            .unwrap();
        socket.connect(&proxy.addr().into()).unwrap();
        let mut stream: std::net::TcpStream = socket.into();
        let req = format!(
            "PURGE /p HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            proxy.addr()
        );
        stream.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        support::parse_response(&out).unwrap()
    };
    let refused = purge(from.into());
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.json()["code"], "FORBIDDEN");
    assert_eq!(proxy.stats()["entries"], 1);
    let allowed = purge([127, 0, 0, 1].into());
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.json()["purged"], true);
    assert_eq!(proxy.stats()["entries"], 0);
}
