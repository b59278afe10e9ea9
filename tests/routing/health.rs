//! Health checks and failures: a server killed under load, every server down, retries
//! after a refused connection or a reset, and `GET /upstreams`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use crate::helpers::*;
use crate::support::client::{get_once, KeepAlive};
use crate::support::proxy::free_ports;
use crate::support::{free_port, get, request, wait_until, Origin, ProxyBuilder, Reply};

/// Steady GETs from several threads, half on kept-alive connections and half on a new
/// connection each, until stopped; every failure is recorded.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let threads = (0..4)
            .map(|t| {
                let (stop, done) = (stop.clone(), done.clone());
                thread::spawn(move || {
                    let mut failures = Vec::new();
                    let mut keep_alive = KeepAlive::new(addr);
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let path = format!("/load/{t}/{i}");
                        let result = if t % 2 == 0 {
                            keep_alive
                                .get(&path)
                                .map(|(status, _)| status)
                                .map_err(|e| e.to_string())
                        } else {
                            get_once(addr, &path)
                        };
                        match result {
                            Ok(200) => {}
                            Ok(status) => failures.push(format!("{path}: status {status}")),
                            Err(e) => failures.push(format!("{path}: {e}")),
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    if keep_alive.retries > 0 {
                        failures.push(format!(
                            "thread {t}: {} requests retried on a new connection",
                            keep_alive.retries
                        ));
                    }
                    failures
                })
            })
            .collect();
        Load {
            stop,
            done,
            threads,
        }
    }

    fn completed(&self) -> usize {
        self.done.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests have completed.
    fn wait_for(&self, n: usize) {
        let target = self.completed() + n;
        wait_until(SOON, &format!("{n} more requests"), || {
            self.completed() >= target
        });
    }

    /// Stops the load; the failures.
    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    }
}

const HEALTH_CHECK: &str = "{type: http, path: /healthz, host: app.test, interval: 200ms, \
                            timeout: 1s, healthy_after: 2, unhealthy_after: 2}";

#[test]
fn a_server_killed_under_load_fails_no_request_and_comes_back_after_restart() {
    let health = Arc::new(AtomicBool::new(true));
    let [pa, pb, pc] = free_ports::<3>();
    let a = named_with_health("a", pa, &health);
    let b = named_with_health("b", pb, &health);
    let c = named_with_health("c", pc, &health);
    let config = format!(
        "upstreams:\n  app: {{servers: {}, retries: 2, health_check: {HEALTH_CHECK}}}\n\
         routes:\n  - {{upstream: app}}\n",
        servers(&[&a, &b, &c])
    );
    let proxy = ProxyBuilder::with_config(&config).start();
    wait_until(SOON, "a first health check of every server", || {
        upstream_servers(&proxy, "app")
            .iter()
            .all(|s| s["last_check_ok"] == true)
    });

    let load = Load::start(proxy.addr());
    wait_until(SOON, "traffic on every server", || {
        [&a, &b, &c].iter().all(|o| traffic(o) >= 10)
    });
    c.stop();
    let took = wait_health(&proxy, "app", &c, false);
    eprintln!("c reported unhealthy {took:?} after it stopped");
    assert!(retries(&proxy, "app") > 0.0, "requests to c were retried");

    // No more attempts on c: its count stays put while the others serve more requests.
    load.wait_for(30);
    let attempts_on_c = attempts(&proxy, "app", &c);
    let others = traffic(&a) + traffic(&b);
    wait_until(SOON, "150 more requests on a and b", || {
        traffic(&a) + traffic(&b) >= others + 150
    });
    assert_eq!(
        attempts(&proxy, "app", &c),
        attempts_on_c,
        "an unhealthy server gets no traffic"
    );

    let c = c.restart();
    wait_health(&proxy, "app", &c, true);
    wait_until(SOON, "traffic on the restarted server", || traffic(&c) >= 5);

    let done = load.completed();
    let failures = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(done > 200, "{done} requests");
}

#[test]
fn all_servers_down_is_a_502_and_the_proxy_recovers_by_itself() {
    let health = Arc::new(AtomicBool::new(false));
    let [p1, p2] = free_ports::<2>();
    let one = named_with_health("one", p1, &health);
    let two = named_with_health("two", p2, &health);
    let config = format!(
        "upstreams:\n  app: {{servers: {}, retries: 1, health_check: {HEALTH_CHECK}}}\n\
         routes:\n  - {{upstream: app}}\n",
        servers(&[&one, &two])
    );
    let proxy = ProxyBuilder::with_config(&config).start();

    // Every server fails its checks but serves: requests still go to them (fail open).
    wait_health(&proxy, "app", &one, false);
    wait_health(&proxy, "app", &two, false);
    assert_eq!(fetch(&proxy, "app.test", "/open").status, 200);

    one.stop();
    two.stop();
    let resp = fetch(&proxy, "app.test", "/down");
    assert_eq!(resp.status, 502, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.json()["code"], "ORIGIN_UNREACHABLE");

    health.store(true, Ordering::SeqCst);
    let one = one.restart();
    wait_until(SOON, "a 200 once a server is back", || {
        fetch(&proxy, "app.test", "/back").status == 200
    });
    wait_health(&proxy, "app", &one, true);
    assert_eq!(server_status(&proxy, "app", &two)["healthy"], false);
    assert_eq!(served_by(&fetch(&proxy, "app.test", "/again")), "one");
}

#[test]
fn connect_failures_are_retried_for_any_method_later_failures_only_when_idempotent() {
    let live = Origin::start(|r| {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        Reply::ok(format!("live {body}")).header("cache-control", "no-store")
    });
    let resetting = Origin::resetting();
    let config = format!(
        "\
upstreams:
  refusing: {{servers: [\"127.0.0.1:{dead}\", \"{live}\"], retries: 1, selection: hash}}
  resetting: {{servers: [\"{reset}\", \"{live}\"], retries: 2, selection: hash}}
routes:
  - {{upstream: refusing, path_prefix: /refusing/}}
  - {{upstream: resetting, path_prefix: /resetting/}}
",
        dead = free_port(),
        live = live.addr(),
        reset = resetting.addr(),
    );
    let proxy = ProxyBuilder::with_config(&config).start();
    let post = |path: &str, body: &str| {
        request(
            "POST",
            &proxy.url(path),
            &[("Host", "app.test")],
            Some(body),
        )
    };

    // With `hash`, a URL keeps choosing the same server first: a retry must skip it.
    // Refused connections: the request never reached a server, so even a POST goes on.
    for i in 0..6 {
        let resp = post(&format!("/refusing/form-{i}"), &i.to_string());
        assert_eq!(
            (resp.status, resp.body.as_str()),
            (200, &*format!("live {i}"))
        );
    }
    let bodies: Vec<Vec<u8>> = live.requests().iter().map(|r| r.body.clone()).collect();
    assert_eq!(bodies.len(), 6, "each POST reached the live server once");
    let refused = retries(&proxy, "refusing");
    assert!(refused >= 1.0, "some URLs hash to the refusing server");

    // A reset after the request was sent: a POST is not sent again ...
    let mut failed = 0;
    for i in 0..6 {
        let resp = post(&format!("/resetting/form-{i}"), &format!("r{i}"));
        match resp.status {
            200 => {}
            502 => failed += 1,
            other => panic!("POST: {other} {resp:?}"),
        }
    }
    let reset_posts = resetting.hits();
    assert!(reset_posts >= 1, "some URLs hash to the resetting server");
    assert_eq!(failed, reset_posts, "each POST that was reset failed");
    assert_eq!(
        live.hits() - 6 + reset_posts,
        6,
        "no POST reached two servers"
    );
    assert_eq!(retries(&proxy, "resetting"), 0.0);

    // ... a GET is.
    for i in 0..6 {
        let resp = fetch(&proxy, "app.test", &format!("/resetting/page-{i}"));
        assert_eq!(resp.status, 200, "{resp:?}");
    }
    let reset_gets = resetting.hits() - reset_posts;
    assert!(reset_gets >= 1, "some URLs hash to the resetting server");
    assert_eq!(retries(&proxy, "resetting"), reset_gets as f64);
    assert_eq!(retries(&proxy, "refusing"), refused);
}

// ---- GET /upstreams -------------------------------------------------------------------------

#[test]
fn upstreams_endpoint_reports_each_server() {
    let up = named("up");
    let dead = free_port();
    let config = format!(
        "\
upstreams:
  checked:
    servers: [\"{up} weight=3\", \"127.0.0.1:{dead}\"]
    selection: consistent
    retries: 1
    health_check: {{type: tcp, interval: 200ms, unhealthy_after: 1}}
  plain: {{servers: [\"{up}\"]}}
routes:
  - {{upstream: checked}}
  - {{upstream: plain, path_prefix: /plain/}}
",
        up = up.addr()
    );
    let proxy = ProxyBuilder::with_config(&config).start();
    let dead_addr = format!("127.0.0.1:{dead}");
    wait_until(SOON, "the dead server reported unhealthy", || {
        let servers = upstream_servers(&proxy, "checked");
        servers
            .iter()
            .any(|s| s["server"] == dead_addr.as_str() && s["healthy"] == false)
            && servers.iter().all(|s| !s["last_check"].is_null())
    });

    let all = get(&proxy.admin_url("/upstreams")).json();
    let groups = all["upstreams"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{all}");
    let checked = groups.iter().find(|g| g["name"] == "checked").unwrap();
    assert_eq!(checked["selection"], "consistent");
    assert_eq!(checked["retries"], 1);
    assert_eq!(checked["tls"], false);
    assert_eq!(checked["health_check"], true);
    let now = chrono::Utc::now();
    for server in checked["servers"].as_array().unwrap() {
        let is_up = server["server"] == up.addr().to_string().as_str();
        assert_eq!(server["host"], "127.0.0.1");
        assert_eq!(server["weight"], if is_up { 3 } else { 1 }, "{server}");
        assert_eq!(server["healthy"], is_up, "{server}");
        assert_eq!(server["last_check_ok"], is_up, "{server}");
        assert_eq!(server["last_check_error"].is_string(), !is_up, "{server}");
        let at = chrono::DateTime::parse_from_rfc3339(server["last_check"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("last_check is RFC 3339 ({e}): {server}"));
        let age = now.signed_duration_since(at).num_seconds().abs();
        assert!(age < 60, "last check {age} s from now: {server}");
    }

    let plain = groups.iter().find(|g| g["name"] == "plain").unwrap();
    assert_eq!(plain["health_check"], false);
    assert_eq!(plain["selection"], "round_robin");
    let server = &plain["servers"][0];
    assert_eq!(server["healthy"], true);
    assert_eq!(server["weight"], 1);
    assert!(server["last_check"].is_null() && server["last_check_ok"].is_null());
}
