//! Real `redis-server` processes for the Redis tier tests: one standalone server, or a
//! three-node Redis Cluster, each on free loopback ports with its own temporary folder,
//! no persistence, and killed (by PID) when dropped.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::proxy::free_ports;

/// How long a node may take to answer `PING` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One `redis-server` process on a fixed port; restartable on the same port.
struct Node {
    child: Option<Child>,
    port: u16,
    /// Options besides `--port` (cluster settings), the same on every restart.
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

impl Node {
    /// Spawns a node and waits until it answers; on failure returns its log. `extra` gives
    /// the options besides the common ones, from the node's folder.
    fn start(port: u16, extra: impl FnOnce(&Path) -> Vec<String>) -> Result<Node, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut node = Node {
            child: None,
            port,
            extra: extra(dir.path()),
            dir,
        };
        node.launch().map(|()| node)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the process (again) on `self.port` and waits for `PING`.
    fn launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "redis-server is already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn redis-server (is it installed? .ci/run installs it)");
        self.child = Some(child);
        self.wait_ready().inspect_err(|_| self.kill())
    }

    /// Waits until `PING` answers and `INFO` names our own process: another test's server
    /// could hold the port this one was given.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                return Err(format!(
                    "redis-server exited with {status}:\n{}",
                    self.log()
                ));
            }
            let pid = child.id();
            if ask(self.port, b"PING\r\nINFO server\r\n").is_some_and(|a| {
                a.starts_with("+PONG") && a.contains(&format!("process_id:{pid}\r"))
            }) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server did not answer PING on port {} within {START_TIMEOUT:?}:\n{}",
                    self.port,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL by PID, then reaps the process.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        // The port was ours a moment ago; retry briefly in case something grabbed it.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(log) if Instant::now() > deadline => {
                    panic!("redis-server did not restart on port {}:\n{log}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        redis_cli(&["-p", &self.port.to_string()], args)
    }

    fn keys(&self, pattern: &str) -> Vec<String> {
        lines(&self.cli(&["--scan", "--pattern", pattern]))
    }
}

impl Drop for Node {
    /// Prints the end of the log when the test failed, then kills the process.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- redis-server log (port {}, last lines) ---\n{}",
                self.port,
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        self.kill();
    }
}

/// A standalone `redis-server`.
pub struct RedisServer {
    node: Node,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers `PING`; another
    /// port is tried if the chosen one was taken in between.
    pub fn start() -> RedisServer {
        let mut last = String::new();
        for _ in 0..3 {
            match Node::start(free_ports::<1>()[0], |_| Vec::new()) {
                Ok(node) => return RedisServer { node },
                Err(log) => last = log,
            }
        }
        panic!("redis-server did not start in 3 attempts:\n{last}");
    }

    pub fn port(&self) -> u16 {
        self.node.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.node.port)
    }

    /// Runs `redis-cli -p PORT args...`; returns its trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        self.node.cli(args)
    }

    /// Kills the server (SIGKILL) and waits for it to exit; its data is gone.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Starts the server again on the same port (empty) and waits for `PING`.
    pub fn restart(&mut self) {
        self.node.restart();
    }

    /// Suspends every client's commands for `ms` milliseconds (`CLIENT PAUSE ms ALL`).
    pub fn pause(&self, ms: u64) {
        let answer = self.cli(&["CLIENT", "PAUSE", &ms.to_string(), "ALL"]);
        assert_eq!(answer, "OK", "CLIENT PAUSE");
    }

    /// Keys matching a glob pattern (`SCAN`, not `KEYS`).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.node.keys(pattern)
    }

    pub fn log(&self) -> String {
        self.node.log()
    }
}

/// A Redis Cluster of three masters without replicas.
pub struct RedisCluster {
    nodes: Vec<Node>,
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes, joins them with `redis-cli --cluster create`,
    /// and waits until every node reports `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start() {
                Ok(cluster) => return cluster,
                Err(log) => last = log,
            }
        }
        panic!("redis cluster did not start in 3 attempts:\n{last}");
    }

    fn try_start() -> Result<RedisCluster, String> {
        // Data ports and cluster bus ports, all chosen here: the default bus port
        // (port + 10000) could fall in the kernel's ephemeral range.
        let ports = free_ports::<6>();
        let mut nodes = Vec::with_capacity(3);
        for (&port, &bus) in ports[..3].iter().zip(&ports[3..]) {
            nodes.push(Node::start(port, |dir| {
                let conf = dir.join(format!("nodes-{port}.conf"));
                vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    conf.display().to_string(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                    "--cluster-port".into(),
                    bus.to_string(),
                ]
            })?);
        }
        let cluster = RedisCluster { nodes };
        let addrs: Vec<String> = cluster
            .nodes()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = Command::new("redis-cli")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if !out.status.success() || !text.contains("All 16384 slots covered") {
            return Err(format!("redis-cli --cluster create failed:\n{text}"));
        }
        cluster.wait_ok()?;
        Ok(cluster)
    }

    /// Waits until every node sees all slots served (`cluster_state:ok`) and knows all
    /// three nodes.
    fn wait_ok(&self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let infos: Vec<String> = self
                .nodes
                .iter()
                .map(|n| n.cli(&["CLUSTER", "INFO"]))
                .collect();
            if infos
                .iter()
                .all(|i| i.contains("cluster_state:ok") && i.contains("cluster_known_nodes:3"))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "cluster not ok within {START_TIMEOUT:?}:\n{infos:#?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The node URLs, comma-separated, as `--redis-url` takes them with `--redis-cluster`.
    pub fn urls(&self) -> String {
        self.nodes()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes' ports.
    pub fn nodes(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Runs `redis-cli -c -p P1 args...` (following redirections); returns trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(&["-c", "-p", &self.nodes[0].port.to_string()], args)
    }

    /// Keys matching a glob pattern, on all nodes.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.nodes.iter().flat_map(|n| n.keys(pattern)).collect()
    }
}

/// Runs `redis-cli` with connection options `conn`, then `args`; panics if it fails.
fn redis_cli(conn: &[&str], args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(conn)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redis-cli {conn:?} {args:?} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().to_owned()
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Sends inline commands over one connection and returns what came back within a short
/// time; `None` if nothing listens. Used for readiness, where `redis-cli` could hang on a
/// port some other kind of server holds.
fn ask(port: u16, commands: &[u8]) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    stream.write_all(commands).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    // PONG, then the INFO bulk string: `$len\r\n` + len bytes + `\r\n`.
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if info_complete(&out) {
            break;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn info_complete(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    let Some(rest) = text.strip_prefix("+PONG\r\n") else {
        return false;
    };
    let Some((len, body)) = rest.strip_prefix('$').and_then(|r| r.split_once("\r\n")) else {
        return false;
    };
    len.parse::<usize>().is_ok_and(|len| body.len() >= len + 2)
}
