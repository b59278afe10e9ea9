//! Shutdown and zero-downtime upgrade of the real binary, with requests in flight.

mod support;

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use support::client::{KeepAlive, RequestError};
use support::load::{self, Load};
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

/// SIGTERM under steady load (kept-alive connections, new connections, requests in flight at
/// the signal, slow ones among them): no request fails. Each request either gets its 200 or
/// was never taken: its connection was refused once the listener closed, or was closed
/// before any response byte as the listener closed (and the origin never saw it).
#[test]
fn sigterm_under_load_fails_nothing() {
    let origin = load::origin(Duration::from_millis(300));
    let mut proxy = ProxyBuilder::new(&origin.url()).grace_period("3s").start();
    let load = Load::start(proxy.addr(), 6, true);
    load.wait_ok(100, Duration::from_secs(20));
    // Right after the origin took a slow request (it answers 300 ms later).
    let slow = || {
        origin
            .requests()
            .iter()
            .filter(|r| r.target.contains("/slow/"))
            .count()
    };
    let before = slow();
    wait_until("a slow request", Duration::from_secs(10), || {
        slow() > before
    });
    let signalled = Instant::now();
    proxy.signal("TERM");
    let report = load.finish();
    let status = proxy.wait_exit(Duration::from_secs(15)).expect("exited");
    assert!(status.success(), "{status}");
    eprintln!("{}", report.summary());

    let in_flight = report
        .outcomes
        .iter()
        .filter(|o| o.spans(signalled))
        .collect::<Vec<_>>();
    assert!(
        in_flight.iter().any(|o| o.path.contains("/slow/")),
        "no slow request was in flight at the signal: {in_flight:?}"
    );
    let not_taken = |o: &load::Outcome| {
        o.done > signalled
            && matches!(
                o.result,
                Err(RequestError::Refused(_)) | Err(RequestError::Unanswered(_))
            )
    };
    let failures = report.failures(not_taken);
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        in_flight.iter().all(|o| o.ok()),
        "requests in flight at the signal: {in_flight:?}"
    );
    let mismatches = report.against_origin(&origin);
    assert!(mismatches.is_empty(), "{mismatches:?}");
}

/// Zero-downtime upgrade under continuous load: the new binary (`-u`) takes the listeners
/// over while clients open a connection per request or keep one open. No request fails, the
/// origin received exactly the requests answered (POSTs included, which are never sent
/// twice), and both processes serve traffic. The only retry is the one HTTP allows: an
/// idempotent request on a reused connection that closed before any response byte, which
/// each process does at most once per connection as it stops.
#[test]
fn zero_downtime_upgrade_under_load_loses_nothing() {
    let origin = load::origin(Duration::from_millis(50));
    let mut old = ProxyBuilder::new(&origin.url()).grace_period("1s").start();
    let load = Load::start(old.addr(), 6, false);
    load.wait_ok(200, Duration::from_secs(20));

    let new =
        Proxy::spawn_upgrade(ProxyBuilder::upgrade_of(&old, &origin.url()).grace_period("1s"));
    // The new process listens on the upgrade socket, waiting for the old one's listeners.
    let sock = old.state_dir().join("upgrade.sock");
    wait_until(
        "the new process's upgrade socket",
        Duration::from_secs(10),
        || sock.exists(),
    );
    old.signal("QUIT");
    let new = new.join().expect("the new process became ready");
    let status = old
        .wait_exit(Duration::from_secs(20))
        .expect("the old process exited");
    assert!(status.success(), "{status}");
    load.wait_ok(200, Duration::from_secs(20)); // on the new process alone
    let report = load.stop();
    eprintln!("{}", report.summary());

    let failures = report.failures(|_| false);
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    let mismatches = report.against_origin(&origin);
    assert!(mismatches.is_empty(), "{mismatches:?}");
    assert!(report.count("POST") >= 50, "{}", report.summary());
    assert!(
        report.retries.iter().all(|r| *r <= 2),
        "more retries than two closes per connection explain: {}",
        report.summary()
    );
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

/// Whether transparent huge pages may back process `pid`'s memory, as the kernel reports it
/// (`THP_enabled` in /proc/PID/status: 0 once the process set PR_SET_THP_DISABLE).
fn thp_enabled(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .expect("the kernel reports THP_enabled");
    line.trim() == "1"
}

/// The proxy turns transparent huge pages off for itself (the kernel's synchronous zeroing of
/// a 2 MiB page stalls the worker while the cache grows; see `main.rs`), unless
/// `MIMALLOC_ALLOW_THP` hands the choice to the allocator (mimalloc's default allows them).
#[test]
fn transparent_huge_pages_are_off_unless_the_allocator_is_given_the_choice() {
    let origin = Origin::start(|_| Reply::ok("x"));
    let proxy = Proxy::start(&origin.url());
    assert!(!thp_enabled(proxy.pid()), "huge pages off by default");

    assert!(
        thp_enabled(std::process::id()),
        "the test runs where huge pages are allowed, or it proves nothing"
    );
    let allowed = ProxyBuilder::new(&origin.url())
        .env("MIMALLOC_ALLOW_THP", "1")
        .start();
    assert!(thp_enabled(allowed.pid()), "left to mimalloc");
}
