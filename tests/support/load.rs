//! Steady mixed load for shutdown and upgrade tests, with an account of every request.
//!
//! Clients run on their own threads until stopped: half open a connection per request, half
//! keep one open (see [`KeepAlive`] for the only retry HTTP allows). They send GETs of URLs
//! never asked before (some cacheable, some slow at the origin) and POSTs, always on a new
//! connection and never retried. Each request is recorded once, with its outcome and when it
//! was sent and answered, so a test can hold the outcomes against what the origin received:
//! a request answered 200 reached the origin exactly once, and no request the origin received
//! went unanswered.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::client::{request_once, KeepAlive, RequestError};
use super::origin::{Origin, Recorded, Reply};

/// Paths of the load start with this, so a test can tell them from its own requests.
pub const PREFIX: &str = "/load/";

/// What the origin of a load answers: 200 naming the request, `max-age=60` for `cached`
/// paths, `no-store` otherwise; `slow` paths take `slow`, the others 5 ms.
pub fn origin(slow: Duration) -> Origin {
    Origin::start(move |r: &Recorded| {
        let cacheable = r.target.contains("/cached/");
        let delay = if r.target.contains("/slow/") {
            slow
        } else {
            Duration::from_millis(5)
        };
        Reply::ok(format!("{} {} {}", r.method, r.target, r.body.len()))
            .header(
                "cache-control",
                if cacheable { "max-age=60" } else { "no-store" },
            )
            .delay(delay)
    })
}

/// One request and what came of it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub method: &'static str,
    pub path: String,
    /// Whether it went on a kept-alive connection.
    pub kept_alive: bool,
    pub sent: Instant,
    pub done: Instant,
    pub result: Result<u16, RequestError>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.result == Ok(200)
    }

    /// Whether it was in flight at `t`.
    pub fn spans(&self, t: Instant) -> bool {
        self.sent < t && t < self.done
    }
}

/// What one client did.
struct ClientReport {
    outcomes: Vec<Outcome>,
    keep_alive: Option<KeepAlive>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<ClientReport>>,
}

impl Load {
    /// Starts `clients` clients against `addr`. With `until_refused`, a client also stops
    /// once a connection is refused (the listener is gone).
    pub fn start(addr: SocketAddr, clients: usize, until_refused: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|c| {
                let (stop, ok) = (stop.clone(), ok.clone());
                thread::spawn(move || run_client(addr, c, &stop, &ok, until_refused))
            })
            .collect();
        Load { stop, ok, clients }
    }

    /// Requests answered 200 so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests than now are answered 200 (`limit` at most).
    pub fn wait_ok(&self, n: usize, limit: Duration) {
        let target = self.ok() + n;
        let deadline = Instant::now() + limit;
        while self.ok() < target {
            assert!(
                Instant::now() < deadline,
                "load: {} of {target} requests answered after {limit:?}",
                self.ok()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the clients (each finishes its request) and returns the account.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        self.finish()
    }

    /// Waits for clients that stop by themselves (`until_refused`).
    pub fn finish(self) -> Report {
        let mut report = Report::default();
        for client in self.clients {
            let client = client.join().expect("load client");
            report.outcomes.extend(client.outcomes);
            if let Some(k) = client.keep_alive {
                report.keep_alive_clients += 1;
                report.retries.push(k.retries);
                report.retry_causes.extend(k.retry_causes);
            }
        }
        report
    }
}

fn run_client(
    addr: SocketAddr,
    c: usize,
    stop: &AtomicBool,
    ok: &AtomicUsize,
    until_refused: bool,
) -> ClientReport {
    let mut keep_alive = (c % 2 == 1).then(|| KeepAlive::new(addr));
    let mut outcomes = Vec::new();
    // Clients start at different points of the mix, so that slow requests do not all
    // happen at once.
    let mut i = c;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let (method, kind) = match i % 6 {
            0 => ("POST", "post"),
            1 | 4 => ("GET", "cached"),
            3 => ("GET", "slow"),
            _ => ("GET", "fresh"),
        };
        let path = format!("{PREFIX}c{c}/{kind}/{i}");
        let body = format!("body of {path}");
        let body = (method == "POST").then_some(body.as_bytes());
        let sent = Instant::now();
        let (kept_alive, result) = match (&mut keep_alive, method) {
            (Some(k), "GET") => (true, k.get(&path)),
            _ => (false, request_once(addr, method, &path, body)),
        };
        let result = result.map(|(status, _)| status);
        if result == Ok(200) {
            ok.fetch_add(1, Ordering::SeqCst);
        }
        let refused = matches!(result, Err(RequestError::Refused(_)));
        outcomes.push(Outcome {
            method,
            path,
            kept_alive,
            sent,
            done: Instant::now(),
            result,
        });
        if refused && until_refused {
            break;
        }
    }
    ClientReport {
        outcomes,
        keep_alive,
    }
}

/// The account of a load run.
#[derive(Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub keep_alive_clients: usize,
    /// Retries per kept-alive client.
    pub retries: Vec<usize>,
    pub retry_causes: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> usize {
        self.outcomes.iter().filter(|o| o.ok()).count()
    }

    pub fn count(&self, method: &str) -> usize {
        self.outcomes.iter().filter(|o| o.method == method).count()
    }

    /// Requests whose outcome is neither a 200 nor one of those `allowed` says is fine.
    pub fn failures(&self, allowed: impl Fn(&Outcome) -> bool) -> Vec<&Outcome> {
        self.outcomes
            .iter()
            .filter(|o| !o.ok() && !allowed(o))
            .collect()
    }

    /// Every request answered 200 reached the origin exactly once, and every load request
    /// the origin received was answered 200: nothing processed was lost, nothing was sent
    /// twice. Returns the discrepancies.
    pub fn against_origin(&self, origin: &Origin) -> Vec<String> {
        let mut at_origin = std::collections::HashMap::<String, Vec<Recorded>>::new();
        for r in origin.requests() {
            if r.target.starts_with(PREFIX) {
                at_origin.entry(r.target.clone()).or_default().push(r);
            }
        }
        let mut problems = Vec::new();
        for o in &self.outcomes {
            let seen = at_origin.remove(&o.path).unwrap_or_default();
            match (o.ok(), seen.len()) {
                (true, 1) => {
                    let r = &seen[0];
                    if r.method != o.method {
                        problems.push(format!("{}: arrived as {}", o.path, r.method));
                    }
                }
                (true, n) => problems.push(format!(
                    "{} {}: 200, origin got it {n} times",
                    o.method, o.path
                )),
                (false, 0) => {}
                (false, n) => problems.push(format!(
                    "{} {}: {:?}, yet the origin got it {n} times",
                    o.method, o.path, o.result
                )),
            }
        }
        for path in at_origin.keys() {
            problems.push(format!("{path}: at the origin, never sent by the load"));
        }
        problems
    }

    /// A one-line summary for the test output.
    pub fn summary(&self) -> String {
        let by = |m| self.count(m);
        format!(
            "{} requests ({} GET, {} POST), {} answered 200; kept-alive clients {}, retries {:?} {:?}",
            self.outcomes.len(),
            by("GET"),
            by("POST"),
            self.ok(),
            self.keep_alive_clients,
            self.retries,
            &self.retry_causes[..self.retry_causes.len().min(6)],
        )
    }
}
