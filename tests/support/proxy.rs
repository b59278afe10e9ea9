//! Runs the real `caching-proxy` binary on ephemeral ports and waits until its admin
//! service reports ready.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_caching-proxy");

/// A port that was free a moment ago. The listener is closed before the port is used, so
/// another process could take it in between; on a test machine that is rare enough.
pub fn listens(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct ProxyBuilder {
    args: Vec<String>,
    port_flag: bool,
    envs: Vec<(String, String)>,
    port: u16,
    admin_port: u16,
}

pub struct Proxy {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    dir: tempfile::TempDir,
}

impl ProxyBuilder {
    pub fn new(origin: &str) -> Self {
        ProxyBuilder {
            args: vec!["--origin".into(), origin.into()],
            port_flag: true,
            envs: Vec::new(),
            port: free_port(),
            admin_port: free_port(),
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

    /// Starts the proxy and waits for `/health/ready`.
    pub fn start(self) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("proxy.log")).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["--host", "127.0.0.1", "--threads", "2"]);
        if self.port_flag {
            cmd.args(["--port", &self.port.to_string()]);
        }
        cmd.args(["--admin-port", &self.admin_port.to_string()])
            .arg(format!(
                "--pid-file={}",
                dir.path().join("proxy.pid").display()
            ))
            .arg(format!(
                "--upgrade-sock={}",
                dir.path().join("upgrade.sock").display()
            ))
            .args(["--grace-period", "0", "--shutdown-timeout", "1s"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log);
        clean_env(&mut cmd);
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().expect("spawn caching-proxy");
        let mut proxy = Proxy {
            child,
            port: self.port,
            admin_port: self.admin_port,
            dir,
        };
        proxy.wait_ready();
        proxy
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    pub fn stats(&self) -> serde_json::Value {
        super::get(&self.admin_url("/cache/stats")).json()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(1))
            .build();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "caching-proxy exited with {status} before ready:\n{}",
                    self.log()
                );
            }
            if agent.get(&self.admin_url("/health/ready")).call().is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!("caching-proxy not ready after 30 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
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
