//! How the proxy's worker threads take work from the kernel: the batch of socket events per
//! poll (`server.max_io_events_per_poll`, `server.max_io_events_per_busy_poll`), seen in the
//! `epoll_wait` calls of the real binary under load, traced with strace.
//!
//! Why it matters (README "Many connections on one worker"): with tokio's default batch of
//! 1,024 events, a few hundred ready connections overflow a worker's run queue and some of
//! them wait for tens of milliseconds; what the batch does to latency is measured by the load
//! benchmark (`benches/load/run.sh`, rows at 256 and 1,000 connections), not asserted here.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use support::{wait_until, Origin, Proxy, ProxyBuilder, Reply};

/// The service's worker threads are named after it.
const WORKER_THREAD: &str = "caching-proxy";
/// More ready connections than a worker's run queue holds (256), so that workers poll the
/// kernel while they still have tasks queued.
const CONNECTIONS: usize = 320;

/// strace attached to every thread of a running process, recording its `epoll_wait` calls
/// with raw arguments (the third is the most events the call may return).
struct Trace {
    child: Child,
    out: tempfile::NamedTempFile,
}

impl Trace {
    fn attach(pid: u32) -> Trace {
        let out = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-e",
                "trace=epoll_wait,epoll_pwait",
                "-e",
                "raw=all",
            ])
            .arg("-o")
            .arg(out.path())
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strace (the Debian package of the same name; .ci/run installs it)");
        // strace writes a line per thread as it attaches: each blocked `epoll_wait` shows
        // up unfinished.
        wait_until(Duration::from_secs(10), "strace to attach", || {
            std::fs::read_to_string(out.path()).is_ok_and(|t| t.contains("epoll_wait"))
        });
        Trace { child, out }
    }

    /// Detaches (strace detaches on SIGINT) and returns, per thread, the distinct
    /// `maxevents` of its `epoll_wait` calls.
    fn finish(mut self) -> BTreeMap<u32, BTreeSet<u64>> {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        self.child.wait().unwrap();
        let text = std::fs::read_to_string(self.out.path()).unwrap();
        let mut calls: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for line in text.lines() {
            // `TID epoll_wait(0x1c, 0x7f00d4c2a000, 0x80, 0xffffffff <unfinished ...>`, the
            // thread id padded with spaces.
            let Some((tid, call)) = line.split_once(' ') else {
                continue;
            };
            let call = call.trim_start();
            let Some(args) = call
                .strip_prefix("epoll_wait(")
                .or_else(|| call.strip_prefix("epoll_pwait("))
            else {
                continue;
            };
            let max = args.split(", ").nth(2).expect("maxevents argument");
            let max = u64::from_str_radix(max.trim_start_matches("0x"), 16).unwrap();
            calls.entry(tid.parse().unwrap()).or_default().insert(max);
        }
        calls
    }
}

/// The threads of a process named `name`.
fn threads_named(pid: u32, name: &str) -> BTreeSet<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let task = task.ok()?;
            let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
            (comm.trim_end() == name).then(|| task.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

/// One response on a keep-alive connection: the status, after reading the whole body.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> u16 {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).expect("read a response");
        assert!(n > 0, "the proxy closed a keep-alive connection");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .expect("a content-length")
            .trim()
            .parse()
            .unwrap();
        if buf.len() >= end + 4 + length {
            return head.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
}

/// Keeps `CONNECTIONS` keep-alive connections busy for `rounds` rounds: in each, every
/// connection of a client thread sends a request before any response is read, so hundreds
/// of sockets are ready at once.
fn load(addr: SocketAddr, rounds: usize) {
    let clients: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let mut conns: Vec<TcpStream> = (0..CONNECTIONS / 4)
                    .map(|_| {
                        let s = TcpStream::connect(addr).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                        s
                    })
                    .collect();
                let mut buf = Vec::new();
                for _ in 0..rounds {
                    for c in &mut conns {
                        c.write_all(b"GET /hit HTTP/1.1\r\nHost: test\r\n\r\n")
                            .unwrap();
                    }
                    for c in &mut conns {
                        assert_eq!(read_response(c, &mut buf), 200);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

/// The batches of socket events the proxy's workers take per poll, under load.
fn worker_batches(proxy: &Proxy) -> BTreeSet<u64> {
    assert_eq!(support::get(&proxy.url("/hit")).status, 200);
    let workers = threads_named(proxy.pid(), WORKER_THREAD);
    assert!(!workers.is_empty(), "worker threads named {WORKER_THREAD}");
    let trace = Trace::attach(proxy.pid());
    load(proxy.addr(), 20);
    let calls = trace.finish();
    workers
        .iter()
        .filter_map(|tid| calls.get(tid))
        .flatten()
        .copied()
        .collect()
}

fn origin() -> Origin {
    Origin::start(|_| Reply::ok("x").header("cache-control", "max-age=60"))
}

/// By default a worker takes at most 128 events when idle and 32 while it has tasks queued;
/// tokio's own default would be 1,024 for both.
#[test]
fn workers_take_bounded_batches_of_socket_events() {
    let origin = origin();
    let proxy = Proxy::start(&origin.url());
    assert_eq!(
        worker_batches(&proxy),
        BTreeSet::from([32, 128]),
        "idle polls take 128 events, busy polls 32"
    );
}

#[test]
fn the_batches_are_settings() {
    let origin = origin();
    let proxy = ProxyBuilder::new(&origin.url())
        .args(&[
            "--max-io-events-per-poll",
            "200",
            "--max-io-events-per-busy-poll",
            "50",
        ])
        .start();
    assert_eq!(worker_batches(&proxy), BTreeSet::from([50, 200]));
}
