//! Runs the real `caching-proxy` binary on ephemeral ports and waits until its admin
//! service reports ready.

use std::any::Any;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_caching-proxy");

/// A port that was free a moment ago. The listener is closed before the port is used, so
/// another process could take it in between; on a test machine that is rare enough.
pub fn listens(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// Several distinct ports that were free a moment ago (all held open until all are chosen).
///
/// They are drawn at random below the kernel's ephemeral range: the kernel hands a port just
/// released by `bind(0)` to the next `bind(0)` of another test process, and uses that range
/// for outgoing connections too.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut listeners: Vec<TcpListener> = Vec::with_capacity(N);
    while listeners.len() < N {
        let port = rand::random::<u16>() % 12_000 + 20_000;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(l);
        }
    }
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

pub struct ProxyBuilder {
    args: Vec<String>,
    port_flag: bool,
    grace_period: String,
    /// Where the pid file and the upgrade socket go; a new temporary folder if unset.
    state_dir: Option<PathBuf>,
    upgrade: bool,
    envs: Vec<(String, String)>,
    port: u16,
    admin_port: u16,
    /// Reserved for every proxy; used with [`ProxyBuilder::tls`] or [`ProxyBuilder::tls_listener`].
    tls_port: u16,
    tls: bool,
    keep: Vec<Arc<dyn Any + Send + Sync>>,
    /// A config file's text, written to the proxy's folder and passed with `-c`.
    config: Option<String>,
}

pub struct Proxy {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    /// The TLS listener's port, when the proxy has one.
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    /// Things the proxy needs for as long as it runs (its Redis), dropped after it stops.
    keep: Vec<Arc<dyn Any + Send + Sync>>,
}

impl ProxyBuilder {
    pub fn new(origin: &str) -> Self {
        Self::with_args(vec!["--origin".into(), origin.into()])
    }

    fn with_args(args: Vec<String>) -> Self {
        let ports = free_ports::<3>();
        ProxyBuilder {
            args,
            port_flag: true,
            grace_period: "0".into(),
            state_dir: None,
            upgrade: false,
            envs: Vec::new(),
            port: ports[0],
            admin_port: ports[1],
            tls_port: ports[2],
            tls: false,
            keep: Vec::new(),
            config: None,
        }
    }

    /// A builder for a proxy configured by a config file (`yaml`, its `upstreams` and
    /// `routes`, say) and no `--origin`.
    pub fn with_config(yaml: &str) -> Self {
        Self::with_args(Vec::new()).config(yaml)
    }

    /// Writes `yaml` to `proxy.yaml` in the proxy's folder when it starts and passes it
    /// with `-c`.
    pub fn config(mut self, yaml: &str) -> Self {
        self.config = Some(yaml.to_owned());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// With the Redis tier and no `--redis-timeout` of the test's own, a timeout that holds
    /// on a loaded CI machine: the 50 ms default is meant for a quiet LAN, and a call that
    /// times out is (rightly) a skipped write, which would make the tests flaky.
    fn redis_timeout(&self) -> &'static [&'static str] {
        let has = |flag: &str| self.args.iter().any(|a| a == flag);
        if has("--redis-url") && !has("--redis-timeout") {
            &["--redis-timeout", "500ms"]
        } else {
            &[]
        }
    }

    /// Uses a standalone Redis as the shared cache tier (`--cache-backend redis`).
    pub fn redis(self, url: &str) -> Self {
        self.args(&["--cache-backend", "redis", "--redis-url", url])
    }

    /// Uses a Redis Cluster, given its comma-separated node URLs, as the shared cache tier.
    pub fn redis_cluster(self, urls: &str) -> Self {
        self.redis(urls).arg("--redis-cluster")
    }

    /// Keeps `thing` (a Redis server, say) alive until the proxy has stopped.
    pub fn keep_alive(mut self, thing: Arc<dyn Any + Send + Sync>) -> Self {
        self.keep.push(thing);
        self
    }

    /// Adds the TLS listener (`--tls-port` on a free port) with one certificate.
    pub fn tls(self, files: &super::tls::CertFiles) -> Self {
        self.tls_listener()
            .args(&["--tls-cert", files.cert(), "--tls-key", files.key()])
    }

    /// Adds the TLS listener; its certificates come from the test's config file or flags.
    pub fn tls_listener(mut self) -> Self {
        self.tls = true;
        self
    }

    /// The port the TLS listener will use.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// Sets `--grace-period` (0 by default, so that tests end quickly).
    pub fn grace_period(mut self, value: &str) -> Self {
        self.grace_period = value.to_owned();
        self
    }

    /// A builder for the binary that takes over from `running` with `-u`: same ports, pid
    /// file and upgrade socket.
    pub fn upgrade_of(running: &Proxy, origin: &str) -> Self {
        let mut b = ProxyBuilder::new(origin);
        b.port = running.port;
        b.admin_port = running.admin_port;
        if let Some(tls_port) = running.tls_port {
            b.tls_port = tls_port;
        }
        b.state_dir = Some(running.state_dir());
        b.upgrade = true;
        b
    }

    /// Leaves the listen port to env or file; the caller must then know which port the
    /// proxy will use and pass it through them.
    pub fn without_port_flag(mut self) -> Self {
        self.port_flag = false;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Starts the proxy and waits for `/health/ready`. Ports picked here can be taken by
    /// another process before the proxy binds them; then the start is retried on new ones.
    pub fn start(mut self) -> Proxy {
        for _ in 0..3 {
            match self.try_start() {
                Ok(proxy) => return proxy,
                Err(log) if log.contains("cannot listen on") => {
                    [self.port, self.admin_port, self.tls_port] = free_ports::<3>();
                }
                Err(log) => panic!("caching-proxy did not become ready:\n{log}"),
            }
        }
        panic!("caching-proxy could not get free ports in 3 attempts");
    }

    fn try_start(&self) -> Result<Proxy, String> {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let state = self
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().to_owned());
        let mut cmd = Command::new(BIN);
        cmd.args(["--host", "127.0.0.1", "--threads", "2"]);
        if self.port_flag {
            cmd.args(["--port", &self.port.to_string()]);
        }
        if self.tls {
            cmd.args([
                "--tls-host",
                "127.0.0.1",
                "--tls-port",
                &self.tls_port.to_string(),
            ]);
        }
        cmd.args(["--admin-port", &self.admin_port.to_string()])
            .arg(format!("--pid-file={}", state.join("proxy.pid").display()))
            .arg(format!(
                "--upgrade-sock={}",
                state.join("upgrade.sock").display()
            ))
            .args([
                "--grace-period",
                &self.grace_period,
                "--shutdown-timeout",
                "1s",
            ])
            .args(&self.args)
            .args(self.redis_timeout())
            .args(self.config.as_ref().map(|text| {
                let path = dir.path().join("proxy.yaml");
                std::fs::write(&path, text).unwrap();
                format!("--config={}", path.display())
            }))
            .stdout(Stdio::null())
            .stderr(log);
        if self.upgrade {
            cmd.arg("-u");
        }
        clean_env(&mut cmd);
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().expect("spawn caching-proxy");
        let mut proxy = Proxy {
            child,
            port: self.port,
            admin_port: self.admin_port,
            tls_port: self.tls.then_some(self.tls_port),
            dir,
            keep: self.keep.clone(),
        };
        proxy.wait_ready().map(|()| proxy)
    }
}

impl Proxy {
    pub fn start(origin: &str) -> Proxy {
        ProxyBuilder::new(origin).start()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The TLS listener's address (panics without one).
    pub fn tls_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.tls_port.expect("a TLS listener")))
    }

    /// Prometheus text from `/metrics`.
    pub fn metrics(&self) -> String {
        super::get(&self.admin_url("/metrics")).body
    }

    /// The value of one sample of `/metrics` (`name{labels}` as printed), 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Waits until the log contains `needle` (access records are written after the response
    /// has gone out) and returns the log.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(Instant::now() < deadline, "{needle:?} not logged:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stats(&self) -> serde_json::Value {
        super::get(&self.admin_url("/cache/stats")).json()
    }

    /// Waits until the cache holds `n` entries: a miss is committed to the cache as its
    /// last body bytes go out, so a client can see the response slightly before it is stored.
    pub fn wait_stored(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let entries = self.stats()["entries"].as_u64().unwrap();
            if entries == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cache holds {entries} entries, expected {n}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The folder of the pid file and the upgrade socket.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// The pid the proxy's pid file names, if any.
    pub fn pid_file_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.state_dir().join("proxy.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The processes this proxy's reloads started that still run: its children, and the
    /// process its pid file names (once the old process has exited, the new one is nobody's
    /// child). Only those whose command line names this proxy's pid file, and never a
    /// process the test started itself (an upgrade's, which shares the pid file).
    fn started_by_reload(&self) -> Vec<u32> {
        let own = self.pid();
        let pid_file = self.state_dir().join("proxy.pid").display().to_string();
        let mut pids: Vec<u32> = self.pid_file_pid().into_iter().collect();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            pids.extend(
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter(|&pid| parent_of(pid) == Some(own)),
            );
        }
        pids.retain(|&pid| {
            pid != own
                && parent_of(pid) != Some(std::process::id())
                && std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&pid_file))
        });
        pids
    }

    /// Sends SIGHUP and waits (30 s) until a new process, named in the pid file, answers
    /// `/health/ready` on the admin port. The new process is stopped when the guard drops.
    pub fn reload(&self) -> Reloaded {
        let old = self.pid();
        self.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(new) = self.pid_file_pid().filter(|p| *p != old) {
                let answer = ureq::get(&self.admin_url("/health/ready"))
                    .call()
                    .ok()
                    .and_then(|r| r.into_string().ok())
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok());
                if answer.is_some_and(|v| v["pid"] == new) {
                    return Reloaded { pid: new };
                }
            }
            assert!(
                Instant::now() < deadline,
                "no new process after SIGHUP:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`TERM`, `QUIT`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A zero-downtime upgrade, whole: starts `builder` (an [`ProxyBuilder::upgrade_of`]
    /// this proxy), waits until it listens on the upgrade socket, sends SIGQUIT here, and
    /// waits (30 s) until this process has handed over and exited 0. Returns the new one,
    /// and this one, exited: keep it while the new one runs, since it owns the folder of
    /// the pid file and the upgrade socket they share.
    pub fn upgrade_to(mut self, builder: ProxyBuilder) -> (Proxy, Proxy) {
        let new = Proxy::spawn_upgrade(builder);
        let sock = self.state_dir().join("upgrade.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "no upgrade socket:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.signal("QUIT");
        let new = new.join().expect("the new process became ready");
        let status = self
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the old process still runs:\n{}", self.log()));
        assert!(status.success(), "{status}:\n{}", self.log());
        (new, self)
    }

    /// Starts the process without waiting for it to be ready (for `-u`, which waits for
    /// the running instance to hand over its sockets).
    pub fn spawn_upgrade(builder: ProxyBuilder) -> std::thread::JoinHandle<Proxy> {
        std::thread::spawn(move || builder.start())
    }

    /// Waits for `/health/ready`; on failure returns the proxy's log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(1))
            .build();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            // Another test's process may hold the port this one was given: ask only once our
            // own process listens on it (a request to another test's proxy port would reach
            // that test's origin), and only an answer naming our own process counts.
            if !listens_on(self.child.id(), self.admin_port) {
                if Instant::now() > deadline {
                    return Err(format!("not listening after 30 s:\n{}", self.log()));
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let answer = agent
                .get(&self.admin_url("/health/ready"))
                .call()
                .ok()
                .and_then(|r| r.into_string().ok())
                .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok());
            if answer.is_some_and(|v| v["pid"] == self.child.id()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 30 s:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- caching-proxy log (port {}, admin {}) ---\n{}",
                self.port,
                self.admin_port,
                self.log()
            );
        }
        // A reload's new process is the proxy's child, not the test's: a test that fails
        // mid-reload would leave it running. Stopped before its parent, while still its child.
        for pid in self.started_by_reload() {
            drop(Reloaded { pid });
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The parent of process `pid` (Linux `/proc`).
fn parent_of(pid: u32) -> Option<u32> {
    // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether process `pid` holds a TCP socket listening on `port` (Linux `/proc`; elsewhere
/// assumed).
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    // Columns: sl local_address rem_address st ... inode (the 10th).
    let listening: std::collections::HashSet<&str> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols.get(1)?.rsplit(':').next()?;
            let ours = u16::from_str_radix(local_port, 16).ok()? == port;
            (ours && *cols.get(3)? == "0A").then(|| cols.get(9).copied())?
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            let target = target.to_string_lossy();
            target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .is_some_and(|inode| listening.contains(inode))
        })
    })
}

/// Runs the binary to completion (for `-t`, `--clear-cache` and configuration errors).
pub fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    clean_env(&mut cmd);
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run caching-proxy")
}

/// Checks a config file's text with `-t` (and `args`); the process's output.
pub fn check_config(yaml: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let path = path.display().to_string();
    let mut all = vec!["-t", "-c", path.as_str()];
    all.extend_from_slice(args);
    run(&all, &[])
}

/// Keeps the test machine's own `PROXY_*` variables away from the proxy under test.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PROXY_") {
            cmd.env_remove(key);
        }
    }
}

pub fn conf_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf")
}

/// A process started by a reload (SIGHUP) of a test's proxy: a child of that proxy, not of
/// the test, so it is stopped here, by pid, when dropped.
pub struct Reloaded {
    pub pid: u32,
}

impl Reloaded {
    /// Sends a signal (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {} failed", self.pid);
    }
}

impl Drop for Reloaded {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}
