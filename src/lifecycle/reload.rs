//! Reload on SIGHUP: the running process starts the same binary with `-u` and the same
//! arguments and environment, so the new process reads the configuration file, the
//! environment and the flags again; once the new process has validated all of it, the
//! running one hands its listeners over exactly as a zero-downtime upgrade does
//! (`SIGQUIT` to itself), and its cache goes along (`handover`).
//!
//! The order, and why:
//! 1. Start the child with one end of a socket pair (`CACHING_PROXY_RELOAD_FD`). The child
//!    writes `ok` once its whole configuration is valid (certificates included), right
//!    before it waits for the listeners, or `error <why>` and exits non-zero.
//! 2. On `error`, or if the child exits first, nothing changes here: this process keeps
//!    serving, logs the child's error, and records it for `caching-proxy --reload`.
//! 3. On `ok`, wait until the child's upgrade socket exists (a new file at
//!    `server.upgrade_sock`), then send `SIGQUIT` to this process: Pingora hands the
//!    listening sockets over (retrying while the child gets to listen) and drains.
//!
//! A SIGHUP that arrives while a reload runs is logged and ignored.
//!
//! The outcome of the last reload is written next to the pid file
//! (`<pid_file>.reload`), where `caching-proxy --reload` reads it.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use once_cell::sync::OnceCell;

use crate::metrics::RELOADS;

/// The environment variable that tells a process it was started by a reload, and where to
/// report its configuration's validity.
pub const RELOAD_FD_ENV: &str = "CACHING_PROXY_RELOAD_FD";
/// How long the child may take to validate its configuration (it resolves upstream names).
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the child may take from `ok` to listening on the upgrade socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// The binary and arguments this process was started with, kept from before a daemon's
/// `chdir`, so that a relative path still names the binary.
struct Invocation {
    program: PathBuf,
    args: Vec<OsString>,
}

static INVOCATION: OnceCell<Invocation> = OnceCell::new();

/// Records how this process was started; call first thing in `main`.
pub fn remember_invocation() {
    let mut args = std::env::args_os();
    let Some(program) = args.next() else { return };
    let program = PathBuf::from(program);
    // A bare name was found on PATH and is found there again; a path is made absolute.
    let program = if program.components().count() > 1 {
        std::fs::canonicalize(&program).unwrap_or(program)
    } else {
        program
    };
    let _ = INVOCATION.set(Invocation {
        program,
        args: args.collect(),
    });
}

/// A process started by a reload tells the reloading process whether its configuration is
/// valid (once; later calls do nothing).
pub fn report_to_parent(outcome: Result<(), &str>) {
    let Some(fd) = std::env::var(RELOAD_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    std::env::remove_var(RELOAD_FD_ENV);
    // SAFETY: the reloading process passed this descriptor, open, for this one use; it is
    // owned (and closed) here and nowhere else.
    let mut pipe = unsafe { UnixStream::from_raw_fd(fd) };
    let message = match outcome {
        Ok(()) => "ok".to_owned(),
        Err(why) => format!("error {why}"),
    };
    let _ = pipe.write_all(message.as_bytes());
    RELOADS
        .with_label_values(&[if outcome.is_ok() { "ok" } else { "failed" }])
        .inc();
}

/// Where the outcome of the last reload is kept.
pub fn outcome_path(pid_file: &str) -> PathBuf {
    PathBuf::from(format!("{pid_file}.reload"))
}

/// Reloads the whole configuration by starting a new process (see the module doc).
pub struct Reexec {
    pub pid_file: String,
    pub upgrade_sock: String,
    running: AtomicBool,
}

impl Reexec {
    pub fn new(pid_file: &str, upgrade_sock: &str) -> Self {
        Reexec {
            pid_file: pid_file.to_owned(),
            upgrade_sock: upgrade_sock.to_owned(),
            running: AtomicBool::new(false),
        }
    }

    /// Runs one reload; blocks while the child validates. `Ok` once the hand-over to the
    /// child has begun.
    pub fn reload(&self) -> Result<u32, String> {
        if self.running.swap(true, Ordering::AcqRel) {
            warn!("SIGHUP during a reload: ignored");
            return Err("a reload is already running".into());
        }
        let result = self.run();
        let (result_label, record) = match &result {
            Ok(pid) => ("ok", format!("{{\"result\":\"ok\",\"new_pid\":{pid}}}")),
            Err(why) => (
                "failed",
                serde_json::json!({"result": "failed", "pid": std::process::id(), "error": why})
                    .to_string(),
            ),
        };
        if result.is_err() {
            // A successful one is counted by the new process, which lives on.
            RELOADS.with_label_values(&[result_label]).inc();
            self.running.store(false, Ordering::Release);
        }
        if let Err(e) = std::fs::write(outcome_path(&self.pid_file), record) {
            warn!("cannot record the reload's outcome: {e}");
        }
        result
    }

    fn run(&self) -> Result<u32, String> {
        let invocation = INVOCATION
            .get()
            .ok_or("the process's own command line is unknown")?;
        let sock = Path::new(&self.upgrade_sock);
        let before = socket_id(sock);
        let (mut ours, theirs) = UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(&invocation.program);
        cmd.args(&invocation.args)
            .env(RELOAD_FD_ENV, fd.to_string())
            .stdin(Stdio::null());
        if !invocation
            .args
            .iter()
            .any(|a| a == "-u" || a == "--upgrade")
        {
            cmd.arg("-u");
        }
        // SAFETY: runs in the child between fork and exec, and only clears close-on-exec on
        // the child's end of the pair (fcntl is async-signal-safe).
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", invocation.program.display()))?;
        drop(theirs);
        let pid = child.id();
        info!("reload: started pid {pid}, waiting for it to validate its configuration");
        let mut answer = String::new();
        ours.set_read_timeout(Some(VALIDATION_TIMEOUT)).ok();
        let _ = ours.read_to_string(&mut answer);
        if answer != "ok" {
            let why = match answer.strip_prefix("error ") {
                Some(why) => why.to_owned(),
                None if answer.is_empty() => exited(&mut child),
                None => format!("unexpected answer {answer:?}"),
            };
            let _ = child.kill();
            let _ = child.wait();
            error!("reload failed, this process keeps serving: {why}");
            return Err(why);
        }
        // The child now waits for the listeners on its own upgrade socket.
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        while socket_id(sock) == before || socket_id(sock).is_none() {
            if let Ok(Some(status)) = child.try_wait() {
                let why = format!("the new process exited ({status}) before taking over");
                error!("reload failed, this process keeps serving: {why}");
                return Err(why);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let why = "the new process did not open its upgrade socket".to_owned();
                error!("reload failed, this process keeps serving: {why}");
                return Err(why);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        info!("reload: pid {pid} validated its configuration; handing over");
        // Reaps the child when it exits (a daemon's first process does at once).
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        // SAFETY: sending a signal to this very process.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGQUIT);
        }
        Ok(pid)
    }
}

/// How long `caching-proxy --reload` waits for an outcome.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Why `caching-proxy --reload` failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no running instance: cannot read the pid file {0} ({1})")]
    NoPidFile(String, std::io::Error),
    #[error("no running instance: the pid file {0} names pid {1}, which is not running")]
    NotRunning(String, i32),
    #[error("cannot signal pid {0}: {1}")]
    Signal(i32, std::io::Error),
    #[error("the reload failed, pid {0} keeps serving: {1}")]
    Failed(i32, String),
    #[error("no outcome after {} s (see the running instance's log)", REQUEST_TIMEOUT.as_secs())]
    Timeout,
}

fn read_pid(pid_file: &str) -> Result<i32, RequestError> {
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| RequestError::NoPidFile(pid_file.to_owned(), e))?;
    text.trim().parse().map_err(|_| {
        RequestError::NoPidFile(
            pid_file.to_owned(),
            std::io::Error::new(std::io::ErrorKind::InvalidData, "not a pid"),
        )
    })
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// `caching-proxy --reload`: sends SIGHUP to the instance named by `pid_file` and waits for
/// the outcome. `Ok((old pid, new pid))` once the new process serves.
pub fn request(pid_file: &str) -> Result<(i32, i32), RequestError> {
    let old = read_pid(pid_file)?;
    if !alive(old) {
        return Err(RequestError::NotRunning(pid_file.to_owned(), old));
    }
    let outcome = outcome_path(pid_file);
    let _ = std::fs::remove_file(&outcome);
    // SAFETY: sending a signal to another process.
    if unsafe { libc::kill(old, libc::SIGHUP) } != 0 {
        return Err(RequestError::Signal(old, std::io::Error::last_os_error()));
    }
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(record) = std::fs::read_to_string(&outcome)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        {
            if record["result"] == "failed" {
                let why = record["error"].as_str().unwrap_or("unknown").to_owned();
                return Err(RequestError::Failed(old, why));
            }
            // Handed over: done once the new process names itself in the pid file (a
            // daemon's pid is not the one started, it forks).
            if record["result"] == "ok" {
                if let Ok(new) = read_pid(pid_file) {
                    if new != old && alive(new) {
                        return Ok((old, new));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(RequestError::Timeout)
}

/// The socket file's identity (device, inode, change time), to tell a new one from a stale
/// one left by an earlier upgrade.
fn socket_id(path: &Path) -> Option<(u64, u64, i64, i64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

fn exited(child: &mut Child) -> String {
    match child.wait() {
        Ok(status) => format!("the new process exited ({status}) without a word"),
        Err(e) => format!("the new process could not be waited for: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_sits_next_to_the_pid_file() {
        assert_eq!(
            outcome_path("/run/caching-proxy/caching-proxy.pid"),
            PathBuf::from("/run/caching-proxy/caching-proxy.pid.reload")
        );
    }
}
