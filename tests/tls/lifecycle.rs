//! The TLS listener over the process's life: certificate renewal by SIGHUP (a reload: no
//! dropped connection, a broken renewal keeps the old certificate) and the zero-downtime
//! upgrade handing the TLS listener over under load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::support::client::{get_once_with, KeepAlive};
use super::support::tls::{Ca, ClientTls};
use super::support::{Origin, Proxy, ProxyBuilder, Reply};
use super::wait_until;

/// SIGHUP after the files were replaced: a new process, which read and checked the
/// renewed files, takes the listeners over; new handshakes get the renewed certificate, a
/// connection opened before keeps working until the old process lets it go, and the service
/// never stopped; the expiry metric follows. Then a broken key file: the reload is refused
/// with the reason in the log, and the certificate in use stays.
#[test]
fn sighup_renews_the_certificates_without_stopping_the_service() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let first = ca.issue_valid(&["localhost"], now - 86_400, now + 30 * 86_400);
    let files = first.write(dir.path(), "site");
    let origin = Origin::cacheable();
    let mut proxy = ProxyBuilder::new(&origin.url())
        .tls(&files)
        .grace_period("2s")
        .start();
    let old = proxy.pid();
    let client = ClientTls::trusting(&ca.pem, &["http/1.1"]);
    let addr = proxy.tls_addr();
    let served = || client.connect(addr, "localhost").unwrap().info.cert;

    let mut before = client.connect(proxy.tls_addr(), "localhost").unwrap();
    assert!(before.info.cert == first.der);
    assert_eq!(before.get("localhost", "/a").unwrap().status, 200);

    let renewed = ca.issue_valid(&["localhost"], now - 60, now + 90 * 86_400);
    renewed.write(dir.path(), "site");
    let new = proxy.reload();
    assert_ne!(new.pid, old);
    let r = before.get("localhost", "/a").unwrap();
    assert_eq!(
        r.status, 200,
        "the connection opened before the reload still works"
    );
    wait_until(
        "new handshakes to get the renewed certificate",
        Duration::from_secs(30),
        || served() == renewed.der,
    );
    proxy
        .wait_exit(Duration::from_secs(30))
        .expect("the old process hands over and exits");
    assert!(served() == renewed.der, "served by the new process");
    let expiry =
        proxy.metric(r#"caching_proxy_tls_certificate_expiry_timestamp_seconds{name="localhost"}"#);
    assert!(
        (expiry - (now + 90 * 86_400) as f64).abs() < 5.0,
        "{expiry}"
    );
    let mut after = client.connect(addr, "localhost").unwrap();
    let hit = after.get("localhost", "/a").unwrap();
    assert_eq!(
        (hit.status, hit.x_cache()),
        (200, "HIT"),
        "with the cache handed over"
    );

    // A renewal gone wrong: the key file is not a key. The new process refuses to start,
    // and the one serving keeps its certificate.
    std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\ngarbage\n").unwrap();
    let log_before = proxy.log().len();
    new.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        let log = proxy.log();
        if let Some(line) = log[log_before..]
            .lines()
            .find(|l| l.contains("reload failed"))
        {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed reload:\n{log}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        line.contains("site.key") && line.contains("not a PEM private key"),
        "the log says why: {line}"
    );
    assert!(served() == renewed.der, "the certificate in use stays");
    assert_eq!(after.get("localhost", "/a").unwrap().status, 200);
    assert_eq!(proxy.pid_file_pid(), Some(new.pid));
}

/// Zero-downtime upgrade over TLS under load: the new process (`-u`) takes the TLS listener
/// over with the plaintext one while clients keep TLS keep-alive connections open (retrying
/// once when an idle connection is closed before any response byte, as HTTP clients do) or
/// open a TLS connection per request. No request fails, and the new process serves TLS.
#[test]
fn upgrade_hands_the_tls_listener_over_under_load() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let files = ca.issue(&["localhost"]).write(dir.path(), "site");
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
    let mut old = ProxyBuilder::new(&origin.url())
        .tls(&files)
        .grace_period("1s")
        .start();
    let addr = old.tls_addr();
    let tls = ClientTls::trusting(&ca.pem, &["http/1.1"]);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let connect = tls.connector("localhost");
        clients.push(thread::spawn(move || {
            let mut keep_alive = KeepAlive::with(addr, connect.clone());
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let path = format!(
                    "/c{c}/{}?n={i}",
                    if i % 2 == 0 { "cached" } else { "fresh" }
                );
                let result = if c % 2 == 0 {
                    get_once_with(&connect, addr, &path)
                } else {
                    keep_alive
                        .get(&path)
                        .map(|(status, _)| status)
                        .map_err(|e| e.to_string())
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

    wait_until("load on the old process", Duration::from_secs(20), || {
        ok.load(Ordering::SeqCst) >= 100
    });
    let new = Proxy::spawn_upgrade(
        ProxyBuilder::upgrade_of(&old, &origin.url())
            .tls(&files)
            .grace_period("1s"),
    );
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
    let at_exit = ok.load(Ordering::SeqCst);
    wait_until(
        "load on the new process alone",
        Duration::from_secs(20),
        || ok.load(Ordering::SeqCst) >= at_exit + 100,
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
    let served_tls = |log: &str| {
        log.lines()
            .filter(|l| l.contains(r#""tls":"TLSv1.3""#))
            .count()
    };
    let (by_old, by_new) = (served_tls(&old.log()), served_tls(&new.log()));
    assert!(
        by_old > 0 && by_new > 0,
        "old served {by_old}, new served {by_new} over TLS"
    );
    eprintln!(
        "requests: {} ok, old served {by_old}, new served {by_new}, keep-alive retries {retries}",
        ok.load(Ordering::SeqCst)
    );
}

/// An upgrade whose certificates fail their checks: the new process (`-u`) exits 2 before it
/// takes the listeners, naming the key, and the running process keeps serving over TLS.
#[test]
fn an_upgrade_with_a_bad_certificate_never_takes_the_listeners() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let files = ca.issue(&["localhost"]).write(dir.path(), "site");
    let origin = Origin::cacheable();
    let mut old = ProxyBuilder::new(&origin.url()).tls(&files).start();
    let other = ca.issue(&["localhost"]).write(dir.path(), "other");
    let mismatched = super::support::tls::CertFiles {
        cert: files.cert.clone(),
        key: other.key.clone(),
    };
    let new = Proxy::spawn_upgrade(ProxyBuilder::upgrade_of(&old, &origin.url()).tls(&mismatched));
    let Err(failure) = new.join() else {
        panic!("the new process must not become ready");
    };
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("exited with exit status: 2")
            && message.contains("tls.certificates[0].key"),
        "{message}"
    );
    let client = ClientTls::trusting(&ca.pem, &["http/1.1"]);
    let mut conn = client.connect(old.tls_addr(), "localhost").unwrap();
    assert_eq!(conn.get("localhost", "/still").unwrap().status, 200);
    assert!(old.is_running());
}
