//! Reload on SIGHUP through the real binary: a new process reads the configuration again and
//! takes over, with the cache; an invalid configuration changes nothing; `--reload`.

mod support;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use support::client::{get_once, KeepAlive};
use support::proxy::run;
use support::{get, wait_until, Origin, Proxy, ProxyBuilder, Reply};

/// A config file: the default TTL and whether security headers are added.
fn config(default_ttl: &str, security_headers: bool) -> String {
    format!(
        "cache:\n  default_ttl: {default_ttl}\nsecurity_headers:\n  enabled: {security_headers}\n"
    )
}

fn config_path(proxy: &Proxy) -> std::path::PathBuf {
    proxy.state_dir().join("proxy.yaml")
}

/// An origin whose `/plain/...` answers say nothing about caching (the default TTL decides)
/// and whose `/cached` answer is fresh for a minute.
fn origin() -> Origin {
    Origin::start(|r| match r.path() {
        "/cached" => Reply::ok("cached").header("cache-control", "max-age=60"),
        _ => Reply::ok(format!("plain {}", r.target)).delay(Duration::from_millis(2)),
    })
}

/// Clients over keep-alive and new connections, counting failures until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: &Proxy) -> Load {
        let addr = proxy.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..4)
            .map(|c| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                thread::spawn(move || {
                    let mut keep_alive = KeepAlive::new(addr);
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let path = format!("/plain/c{c}?n={i}");
                        let result = if c % 2 == 0 {
                            get_once(addr, &path)
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
                            Ok(status) => {
                                failures.lock().unwrap().push(format!("{path}: {status}"))
                            }
                            Err(e) => failures.lock().unwrap().push(format!("{path}: {e}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            threads,
        }
    }

    fn served(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.failures)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// SIGHUP with an edited configuration file: a new process serves the new settings (a
/// default TTL, security headers off) under steady load with no failed request, and with
/// the old process's cache.
#[test]
fn sighup_reloads_an_edited_configuration_under_load() {
    let origin = origin();
    let mut proxy = ProxyBuilder::new(&origin.url())
        .config(&config("0", true))
        .grace_period("1s")
        .start();
    let old = proxy.pid();
    assert_eq!(get(&proxy.url("/cached")).x_cache(), "MISS");
    let before = get(&proxy.url("/plain/x"));
    assert!(before.header("x-frame-options").is_some());
    assert_eq!(
        get(&proxy.url("/plain/x")).x_cache(),
        "MISS",
        "TTL 0: not stored"
    );

    let load = Load::start(&proxy);
    wait_until(Duration::from_secs(20), "load", || load.served() >= 100);
    std::fs::write(config_path(&proxy), config("1h", false)).unwrap();
    let new = proxy.reload();
    assert_ne!(new.pid, old);
    let at_switch = load.served();
    wait_until(Duration::from_secs(20), "load on the new process", || {
        load.served() >= at_switch + 200
    });
    let failures = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed requests across the reload: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );

    // Both processes accept until the old one exits; from then on only the new one serves.
    let status = proxy
        .wait_exit(Duration::from_secs(30))
        .expect("the old process exits after the hand-over");
    assert!(status.success(), "{status}");
    assert_eq!(get(&proxy.admin_url("/health/live")).json()["pid"], new.pid);
    let r = get(&proxy.url("/plain/y"));
    assert!(
        r.header("x-frame-options").is_none(),
        "security headers off"
    );
    assert_eq!(
        get(&proxy.url("/plain/y")).x_cache(),
        "HIT",
        "TTL 1h: stored"
    );
    // The old process's cache came along.
    assert_eq!(get(&proxy.url("/cached")).x_cache(), "HIT");
    assert_eq!(origin.hits_for("/cached"), 1);
    assert_eq!(
        proxy.metric(r#"caching_proxy_reloads_total{result="ok"}"#),
        1.0,
        "counted by the new process"
    );
}

/// SIGHUP with a broken configuration file: nothing changes, the child's error is logged,
/// the pid file still names the running process, and it keeps serving.
#[test]
fn sighup_with_an_invalid_configuration_keeps_the_running_process() {
    let origin = origin();
    let mut proxy = ProxyBuilder::new(&origin.url())
        .config(&config("1h", true))
        .start();
    let pid = proxy.pid();
    assert_eq!(get(&proxy.url("/cached")).x_cache(), "MISS");
    std::fs::write(config_path(&proxy), "cache:\n  default_ttl: soon\n").unwrap();
    proxy.signal("HUP");
    let log = proxy.wait_log("reload failed");
    let line = log.lines().find(|l| l.contains("reload failed")).unwrap();
    assert!(
        line.contains("cache.default_ttl") && line.contains("soon"),
        "the child's error is logged: {line}"
    );
    wait_until(Duration::from_secs(10), "the failed reload counted", || {
        proxy.metric(r#"caching_proxy_reloads_total{result="failed"}"#) == 1.0
    });
    assert!(proxy.is_running());
    assert_eq!(proxy.pid_file_pid(), Some(pid));
    assert_eq!(get(&proxy.admin_url("/health/ready")).json()["pid"], pid);
    assert_eq!(
        get(&proxy.url("/cached")).x_cache(),
        "HIT",
        "cache untouched"
    );
}

/// A second SIGHUP while a reload runs is logged and ignored: one new process takes over.
#[test]
fn a_second_sighup_during_a_reload_is_ignored() {
    let origin = origin();
    let mut proxy = ProxyBuilder::new(&origin.url())
        .config(&config("1h", true))
        .grace_period("1s")
        .start();
    let old = proxy.pid();
    // The new process reads its configuration from a pipe that stays shut until the second
    // SIGHUP has been seen: the reload stays open as long as the test needs, where a new
    // process reading a file validates within milliseconds, before a second signal lands.
    let path = config_path(&proxy);
    let yaml = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    assert!(made.unwrap().success(), "mkfifo {}", path.display());
    proxy.signal("HUP");
    proxy.wait_log("reload: started pid");
    proxy.signal("HUP");
    proxy.wait_log("SIGHUP during a reload: ignored");
    // Without waiting on a reader: one that is gone (the new process failed) is an error
    // here, not a test that hangs.
    let mut pipe = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .expect("the new process waits on the configuration pipe");
    pipe.write_all(yaml.as_bytes()).unwrap();
    drop(pipe);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let new = loop {
        if let Some(p) = proxy.pid_file_pid().filter(|p| *p != old) {
            break support::Reloaded { pid: p };
        }
        assert!(std::time::Instant::now() < deadline, "{}", proxy.log());
        thread::sleep(Duration::from_millis(20));
    };
    proxy
        .wait_exit(Duration::from_secs(30))
        .expect("the old process exits after the hand-over");
    assert_eq!(
        get(&proxy.admin_url("/health/ready")).json()["pid"],
        new.pid
    );
    assert_eq!(
        proxy.log().matches("reload: started pid").count(),
        1,
        "one new process:\n{}",
        proxy.log()
    );
    assert_eq!(get(&proxy.url("/cached")).status, 200);
}

/// `caching-proxy --reload` finds the running instance through its pid file, reloads it and
/// says which process serves; with an invalid configuration it says why it failed; with no
/// instance running it fails with a clear error.
#[test]
fn reload_command_reports_the_outcome() {
    let origin = origin();
    let proxy = ProxyBuilder::new(&origin.url())
        .config(&config("1h", true))
        .start();
    let old = proxy.pid();
    let pid_file = proxy.state_dir().join("proxy.pid");
    let pid_flag = format!("--pid-file={}", pid_file.display());

    std::fs::write(config_path(&proxy), "cache:\n  default_ttl: soon\n").unwrap();
    let out = run(&["--reload", &pid_flag], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the reload failed") && stderr.contains("cache.default_ttl"),
        "{stderr}"
    );

    std::fs::write(config_path(&proxy), config("1h", false)).unwrap();
    let out = run(&["--reload", &pid_flag], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new: u32 = proxy.pid_file_pid().unwrap();
    let _new = support::Reloaded { pid: new };
    assert_ne!(new, old);
    assert!(
        stdout.contains(&format!("reloaded: pid {new} serves (was {old})")),
        "{stdout}"
    );

    let missing = proxy.state_dir().join("nothing.pid");
    let out = run(
        &["--reload", &format!("--pid-file={}", missing.display())],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no running instance"), "{stderr}");
}

/// A stale pid file (no such process) is not a running instance.
#[test]
fn reload_command_without_a_running_instance_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("stale.pid");
    // The highest pid Linux hands out, never a live one in a test run.
    std::fs::write(&pid_file, "4194304\n").unwrap();
    let out = run(
        &["--reload", &format!("--pid-file={}", pid_file.display())],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("no running instance") && stderr.contains("not running"),
        "{stderr}"
    );
}
