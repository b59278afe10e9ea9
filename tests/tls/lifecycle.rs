//! The TLS listener over the process's life: certificate renewal by SIGHUP (no restart, no
//! dropped connection, a broken renewal keeps the old certificate) and the zero-downtime
//! upgrade handing the TLS listener over under load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::support::client::{get_once_with, KeepAlive};
use super::support::tls::{Ca, ClientTls};
use super::support::{get, Origin, Proxy, ProxyBuilder, Reply};
use super::wait_until;

/// SIGHUP after the files were replaced: new handshakes get the new certificate, a
/// connection opened before keeps working, the process is the same one and never stopped
/// serving; the expiry metric follows. Then a broken key file: the reload is refused with
/// the reason in the log, and the certificate in use stays.
#[test]
fn sighup_reloads_the_certificates_in_place() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let first = ca.issue_valid(&["localhost"], now - 86_400, now + 30 * 86_400);
    let files = first.write(dir.path(), "site");
    let origin = Origin::cacheable();
    let mut proxy = ProxyBuilder::new(&origin.url()).tls(&files).start();
    let pid = proxy.pid();
    let client = ClientTls::trusting(&ca.pem, &["http/1.1"]);
    let addr = proxy.tls_addr();
    let served = || client.connect(addr, "localhost").unwrap().info.cert;

    let mut before = client.connect(proxy.tls_addr(), "localhost").unwrap();
    assert!(before.info.cert == first.der);
    assert_eq!(before.get("localhost", "/a").unwrap().status, 200);

    let renewed = ca.issue_valid(&["localhost"], now - 60, now + 90 * 86_400);
    renewed.write(dir.path(), "site");
    proxy.signal("HUP");
    wait_until(
        "new handshakes to get the renewed certificate",
        Duration::from_secs(10),
        || served() == renewed.der,
    );
    let r = before.get("localhost", "/a").unwrap();
    assert_eq!(
        (r.status, r.x_cache()),
        (200, "HIT"),
        "the connection opened before the reload still works"
    );
    assert!(proxy.is_running());
    assert_eq!(proxy.pid(), pid);
    assert_eq!(
        get(&proxy.admin_url("/health/ready")).json()["pid"],
        pid,
        "the same process serves"
    );
    proxy.wait_log("TLS certificates reloaded");
    let expiry =
        proxy.metric(r#"caching_proxy_tls_certificate_expiry_timestamp_seconds{name="localhost"}"#);
    assert!(
        (expiry - (now + 90 * 86_400) as f64).abs() < 5.0,
        "{expiry}"
    );

    // A renewal gone wrong: the key file is not a key.
    std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\ngarbage\n").unwrap();
    proxy.signal("HUP");
    let log = proxy.wait_log("not reloaded");
    let line = log.lines().find(|l| l.contains("not reloaded")).unwrap();
    assert!(
        line.contains("site.key") && line.contains("not a PEM private key"),
        "the log says why: {line}"
    );
    assert!(served() == renewed.der, "the certificate in use stays");
    assert_eq!(before.get("localhost", "/a").unwrap().status, 200);
    assert!(proxy.is_running());
    assert_eq!(proxy.pid(), pid);
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

/// SIGHUP never ends the process (its default action would): without a TLS listener there
/// is nothing to reload, and the process says so and keeps serving.
#[test]
fn sighup_without_a_tls_listener_keeps_serving() {
    let origin = Origin::cacheable();
    let mut proxy = ProxyBuilder::new(&origin.url()).start();
    proxy.signal("HUP");
    proxy.wait_log("nothing to reload");
    assert!(proxy.is_running());
    assert_eq!(get(&proxy.url("/x")).status, 200);
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
