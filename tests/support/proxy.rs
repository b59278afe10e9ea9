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
    keep: Vec<Arc<dyn Any + Send + Sync>>,
}

pub struct Proxy {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    dir: tempfile::TempDir,
    /// Things the proxy needs for as long as it runs (its Redis), dropped after it stops.
    keep: Vec<Arc<dyn Any + Send + Sync>>,
}

impl ProxyBuilder {
    pub fn new(origin: &str) -> Self {
        let ports = free_ports::<2>();
        ProxyBuilder {
            args: vec!["--origin".into(), origin.into()],
            port_flag: true,
            grace_period: "0".into(),
            state_dir: None,
            upgrade: false,
            envs: Vec::new(),
            port: ports[0],
            admin_port: ports[1],
            keep: Vec::new(),
        }
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
                    [self.port, self.admin_port] = free_ports::<2>();
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

    /// The value of one series of `/metrics`, written as exposed (`name{label="value"}`);
    /// 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = super::get(&self.admin_url("/metrics")).body;
        text.lines()
            .filter_map(|line| line.rsplit_once(' '))
            .find(|(name, _)| *name == series)
            .map_or(0.0, |(_, value)| value.parse().unwrap())
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
            // Another test's process may hold the port this one was given: only an answer
            // naming our own process counts.
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
