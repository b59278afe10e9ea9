//! Shutdown and zero-downtime upgrade of the real binary, with requests in flight.

mod support;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::client::{get_once, KeepAlive};
use support::{get, Origin, Proxy, ProxyBuilder, RedisServer, Reply};

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM: readiness turns 503 at once while the admin service keeps answering, new
/// connections are refused, idle keep-alive connections are closed, the request in flight
/// completes, and the process exits 0 after the grace period.
#[test]
fn sigterm_drains_in_flight_requests_and_exits_cleanly() {
    let origin = Origin::start(|r| match r.path() {
        "/slow" => Reply::ok("slow done").delay(Duration::from_secs(2)),
        _ => Reply::ok("fast"),
    });
    let mut proxy = ProxyBuilder::new(&origin.url()).grace_period("4s").start();

    let mut idle = KeepAlive::new(proxy.addr());
    assert_eq!(idle.get("/fast").unwrap().0, 200);

    let slow_url = proxy.url("/slow");
    let slow = thread::spawn(move || get(&slow_url));
    wait_until(
        "the slow request to reach the origin",
        Duration::from_secs(5),
        || origin.hits_for("/slow") == 1,
    );

    let signalled = Instant::now();
    proxy.signal("TERM");

    wait_until("/health/ready to turn 503", Duration::from_secs(2), || {
        get(&proxy.admin_url("/health/ready")).status == 503
    });
    assert_eq!(
        get(&proxy.admin_url("/health/live")).status,
        200,
        "admin keeps answering"
    );
    wait_until(
        "the proxy port to refuse connections",
        Duration::from_secs(2),
        || TcpStream::connect(proxy.addr()).is_err(),
    );

    let slow = slow.join().unwrap();
    assert_eq!((slow.status, slow.body.as_str()), (200, "slow done"));
    assert_eq!(
        slow.header("connection"),
        Some("close"),
        "no keep-alive while draining"
    );

    // The idle keep-alive connection was closed without a response.
    assert!(
        idle.get("/fast").is_err(),
        "the proxy no longer accepts connections"
    );
    assert_eq!(
        idle.retries, 1,
        "the idle connection had been closed cleanly"
    );

    let status = proxy.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status}");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "waited out the grace period ({took:?})"
    );
    let log = proxy.log();
    assert!(log.contains("draining"), "{log}");
}

/// Zero-downtime upgrade under continuous load: the new binary (`-u`) takes the listeners
/// over while clients open a connection per request or keep one open (retrying once, as
/// HTTP clients do, when an idle connection is closed before any response byte). No request
/// fails, and both processes serve traffic.
#[test]
fn zero_downtime_upgrade_under_load_loses_nothing() {
    let origin = Origin::start(|r| {
        Reply::ok(format!("item {}", r.target))
            .header(
                "cache-control",
                if r.target.contains("cached") {
                    "max-age=60"
                } else {
                    "no-store"
                },
            )
            .delay(Duration::from_millis(5))
    });
    let mut old = ProxyBuilder::new(&origin.url()).grace_period("1s").start();
    let addr = old.addr();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for c in 0..6 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        clients.push(thread::spawn(move || {
            let mut keep_alive = KeepAlive::new(addr);
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let path = format!(
                    "/c{c}/{}?n={i}",
                    if i % 2 == 0 { "cached" } else { "fresh" }
                );
                let result = if c % 2 == 0 {
                    get_once(addr, &path)
                } else {
                    keep_alive.get(&path).map(|(status, _)| status)
                };
                match result {
                    Ok(200) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(status) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{path}: status {status}")),
                    Err(e) => failures.lock().unwrap().push(format!("{path}: {e}")),
                }
            }
            keep_alive.retries
        }));
    }

    wait_until("load on the old process", Duration::from_secs(10), || {
        ok.load(Ordering::SeqCst) >= 200
    });
    let new =
        Proxy::spawn_upgrade(ProxyBuilder::upgrade_of(&old, &origin.url()).grace_period("1s"));
    // The new process listens on the upgrade socket, waiting for the old one's listeners.
    let sock = old.state_dir().join("upgrade.sock");
    wait_until(
        "the new process's upgrade socket",
        Duration::from_secs(10),
        || sock.exists(),
    );
    let before_switch = ok.load(Ordering::SeqCst);
    old.signal("QUIT");
    let new = new.join().expect("the new process became ready");

    let status = old
        .wait_exit(Duration::from_secs(20))
        .expect("the old process exited");
    assert!(status.success(), "{status}");
    let at_exit = ok.load(Ordering::SeqCst);
    wait_until(
        "load on the new process alone",
        Duration::from_secs(10),
        || ok.load(Ordering::SeqCst) >= at_exit + 200,
    );
    stop.store(true, Ordering::SeqCst);
    let retries: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();

    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(before_switch >= 200 && at_exit > before_switch);
    let served = |log: &str| {
        log.lines()
            .filter(|l| l.contains(r#""request_id""#))
            .count()
    };
    let (by_old, by_new) = (served(&old.log()), served(&new.log()));
    assert!(
        by_old > 0 && by_new > 0,
        "old served {by_old}, new served {by_new}"
    );
    eprintln!(
        "requests: {} ok, old served {by_old}, new served {by_new}, keep-alive retries {retries}",
        ok.load(Ordering::SeqCst)
    );
}

/// With the Redis tier, the new process of an upgrade serves what the old one stored from
/// Redis, from its first request, even with an empty memory tier (no hand-over here: the
/// hand-over of the memory tier is `tests/handover.rs`'s).
#[test]
fn upgrade_with_the_redis_tier_starts_warm() {
    let redis = RedisServer::start();
    let origin = Origin::cacheable();
    let old = ProxyBuilder::new(&origin.url())
        .redis(&redis.url())
        .grace_period("1s")
        .start();
    assert_eq!(get(&old.url("/warm")).x_cache(), "MISS");
    assert_eq!(get(&old.url("/warm")).x_cache(), "HIT");

    let builder = ProxyBuilder::upgrade_of(&old, &origin.url())
        .redis(&redis.url())
        .args(&["--handover-timeout", "0"])
        .grace_period("1s");
    let (new, _old) = old.upgrade_to(builder);

    let first = get(&new.url("/warm"));
    assert_eq!(first.x_cache(), "HIT", "the new process's first request");
    assert_eq!(origin.hits(), 1);
    let tiers = &new.stats()["tiers"];
    assert_eq!(tiers["l2"]["hits"], 1, "{tiers}");
    assert_eq!(
        tiers["l1"]["entries"], 1,
        "copied into the memory tier: {tiers}"
    );
}
