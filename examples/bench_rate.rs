//! Requests at a fixed rate, for the fixed-rate latency rows of the whole-proxy load benchmark
//! (`benches/load/run.sh`).
//!
//! Why not wrk: wrk keeps every connection busy (a new request as soon as the answer is in),
//! so a faster server gets more requests and the client's own work grows with it; over TLS
//! wrk's one core is nearly full against a server that answers 60k requests a second, and
//! its latencies then measure the client's queue as much as the server. At a fixed rate both
//! servers get the same requests at the same times and the latency is the server's answer
//! to one load.
//!
//! CONNECTIONS keep-alive connections (HTTP/1.1, TLS for an `https://` URL) on one thread;
//! together they send RATE requests a second for SECONDS, after WARMUP seconds not counted.
//! Connection i sends its k-th request at `start + (i + k * CONNECTIONS) / RATE`: the times
//! are spread evenly, but tokio's timer fires on whole milliseconds, so the requests due in
//! one millisecond leave together (RATE / 1000 of them). A request's latency runs from when
//! it left, or, when its connection was still waiting for the previous answer at the time
//! the request was due, from the time it was due (so a server that falls behind is charged
//! for the wait it caused, not measured only on what it let through). Prints one JSON line:
//! `{"requests": N, "errors": N, "late": N, "seconds": .., "rate": .., "target_rate": ..,
//! "mean_ms": .., "p50_ms": .., "p90_ms": .., "p99_ms": .., "p999_ms": .., "max_ms": ..,
//! "cpu_s": .., "statuses": {..}, "last_error": ..}` where `requests` counts answers 200 in
//! the counted part, `late` the requests whose connection was still busy when they were due,
//! and `cpu_s` this client's CPU time (user and system) over the whole run.
//!
//! Run: `cargo run --release --example bench_rate -- http://127.0.0.1:PORT/1k 64 30000 6 1`.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[path = "support/response.rs"]
mod response;
use response::read_response;
#[path = "support/tls.rs"]
mod tls;

/// Bound on one answer; past it the connection is dropped and a new one opened.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the run is asked to do.
struct Plan {
    /// For an `https://` URL.
    tls: Option<TlsConnector>,
    addr: String,
    request: Vec<u8>,
    connections: usize,
    rate: f64,
    /// Requests due before this are sent but not counted.
    counted_from: Instant,
    /// No request is due at or after this.
    end: Instant,
    start: Instant,
}

impl Plan {
    /// When connection `i` is to send its `k`-th request.
    fn due(&self, i: usize, k: u64) -> Instant {
        let n = i as f64 + k as f64 * self.connections as f64;
        self.start + Duration::from_secs_f64(n / self.rate)
    }
}

#[derive(Default)]
struct Tally {
    /// Microseconds, counted requests answered 200.
    latencies: Vec<u32>,
    statuses: BTreeMap<String, u64>,
    errors: u64,
    late: u64,
    last_error: Option<String>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

async fn connect(plan: &Plan) -> io::Result<Box<dyn Stream>> {
    let tcp = TcpStream::connect(&plan.addr).await?;
    tcp.set_nodelay(true)?;
    let Some(connector) = &plan.tls else {
        return Ok(Box::new(tcp));
    };
    let name = ServerName::try_from("localhost").expect("a valid name");
    Ok(Box::new(connector.connect(name, tcp).await?))
}

/// One request on `stream`: its status, or the error that ends the connection.
async fn exchange(stream: &mut Box<dyn Stream>, request: &[u8]) -> io::Result<u16> {
    stream.write_all(request).await?;
    let response = read_response(stream, "content-length").await?;
    if response.field.is_none() {
        // Without a length the answer ends with the connection: no keep-alive to measure.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "answer without Content-Length",
        ));
    }
    Ok(response.status)
}

/// Connection `i`'s requests, each at its time, until the plan's end.
async fn connection(plan: Arc<Plan>, i: usize) -> Tally {
    let mut tally = Tally::default();
    let mut stream = None;
    for k in 0.. {
        let due = plan.due(i, k);
        if due >= plan.end {
            break;
        }
        let from = if Instant::now() < due {
            tokio::time::sleep_until(due.into()).await;
            Instant::now()
        } else {
            // Still busy with the previous request when this one was due.
            if k > 0 {
                tally.late += 1;
            }
            due
        };
        let counted = due >= plan.counted_from;
        let outcome = async {
            if stream.is_none() {
                stream = Some(connect(&plan).await?);
            }
            let s = stream.as_mut().expect("connected above");
            tokio::time::timeout(ANSWER_TIMEOUT, exchange(s, &plan.request))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer in 10 s"))?
        }
        .await;
        let took = from.elapsed();
        match outcome {
            Ok(status) if counted => {
                *tally.statuses.entry(status.to_string()).or_default() += 1;
                if status == 200 {
                    tally
                        .latencies
                        .push(took.as_micros().min(u32::MAX as u128) as u32);
                } else {
                    tally.errors += 1;
                }
            }
            Ok(_) => {}
            Err(e) => {
                stream = None;
                if counted {
                    tally.errors += 1;
                    tally.last_error = Some(e.to_string());
                }
            }
        }
    }
    tally
}

/// User plus system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

async fn run(plan: Plan, seconds: f64) -> io::Result<String> {
    let plan = Arc::new(plan);
    let tasks: Vec<_> = (0..plan.connections)
        .map(|i| tokio::spawn(connection(plan.clone(), i)))
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.map_err(io::Error::other)?;
        all.latencies.extend(t.latencies);
        for (k, v) in t.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.errors += t.errors;
        all.late += t.late;
        all.last_error = t.last_error.or(all.last_error);
    }
    let latencies = &mut all.latencies;
    latencies.sort_unstable();
    // (An empty sum of floats is -0.0.)
    let mean =
        latencies.iter().map(|&v| v as f64).sum::<f64>() / latencies.len().max(1) as f64 + 0.0;
    // Nearest-rank percentiles, in milliseconds.
    let pct = |p: f64| {
        let rank = ((p * latencies.len() as f64).ceil() as usize).max(1);
        latencies.get(rank - 1).copied().unwrap_or(0) as f64 / 1000.0
    };
    let ms = |v: f64| (v * 1000.0).round() / 1000.0;
    Ok(serde_json::json!({
        "requests": latencies.len(),
        "errors": all.errors,
        "late": all.late,
        "seconds": seconds,
        "rate": (latencies.len() as f64 / seconds).round(),
        "target_rate": plan.rate,
        "mean_ms": ms(mean / 1000.0),
        "p50_ms": ms(pct(0.50)),
        "p90_ms": ms(pct(0.90)),
        "p99_ms": ms(pct(0.99)),
        "p999_ms": ms(pct(0.999)),
        "max_ms": ms(latencies.last().copied().unwrap_or(0) as f64 / 1000.0),
        "cpu_s": ms(cpu_seconds()),
        "statuses": all.statuses,
        "last_error": all.last_error,
    })
    .to_string())
}

/// `http://HOST:PORT/PATH` or `https://...`: (TLS, HOST:PORT, PATH).
fn split_url(url: &str) -> Option<(bool, &str, &str)> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let slash = rest.find('/')?;
    Some((tls, &rest[..slash], &rest[slash..]))
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, c, r, s, w] = args.as_slice() else {
        usage()
    };
    let (Some((tls, addr, path)), Ok(connections), Ok(rate), Ok(seconds), Ok(warmup)) = (
        split_url(url),
        c.parse::<usize>(),
        r.parse::<f64>(),
        s.parse::<f64>(),
        w.parse::<f64>(),
    ) else {
        usage()
    };
    let seconds_ok = |v: f64| (0.0..=600.0).contains(&v);
    if connections == 0 || !rate.is_finite() || rate <= 0.0 {
        usage()
    }
    if !seconds_ok(seconds) || seconds == 0.0 || !seconds_ok(warmup) {
        usage()
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The first requests leave a moment after the connections' tasks start.
    let start = Instant::now() + Duration::from_millis(50);
    let plan = Plan {
        tls: if tls { Some(tls::connector()?) } else { None },
        addr: addr.to_owned(),
        request: format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes(),
        connections,
        rate,
        counted_from: start + Duration::from_secs_f64(warmup),
        end: start + Duration::from_secs_f64(warmup + seconds),
        start,
    };
    println!("{}", runtime.block_on(run(plan, seconds))?);
    Ok(())
}

fn usage() -> ! {
    eprintln!(
        "usage: bench_rate http[s]://HOST:PORT/PATH CONNECTIONS RATE SECONDS WARMUP \
         (seconds at most 600 each)"
    );
    std::process::exit(2)
}
