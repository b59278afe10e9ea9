//! Fires N requests for one URL at the same moment and reports their latency, for the
//! coalescing rows of the whole-proxy load benchmark (`benches/load/run.sh`).
//!
//! All N connections are opened first; then every request is written at once, each timed
//! from its own write to the last byte of its answer. Prints one JSON line:
//! `{"requests": N, "ok": N, "errors": N, "mean_ms": .., "p50_ms": .., "p99_ms": .., "max_ms": ..,
//! "min_ms": .., "statuses": {..}, "x_cache": {..}}` (`x_cache` counts the `X-Cache` values
//! the answers carried; an answer without one counts as `-`).
//!
//! Run: `cargo run --release --example bench_burst -- 127.0.0.1:PORT /slow?key=K 200`.

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[path = "support/response.rs"]
mod response;
use response::read_response;

/// Bound on the whole burst, connecting included.
const TIMEOUT: Duration = Duration::from_secs(30);

struct Answer {
    status: u16,
    x_cache: String,
    elapsed: Duration,
}

/// Sends one request and reads its answer (by `Content-Length`, or to the end).
async fn fetch(mut stream: TcpStream, request: Vec<u8>) -> io::Result<Answer> {
    let start = Instant::now();
    stream.write_all(&request).await?;
    let response = read_response(&mut stream, "x-cache").await?;
    Ok(Answer {
        status: response.status,
        x_cache: response.field.unwrap_or_else(|| "-".to_owned()),
        elapsed: start.elapsed(),
    })
}

async fn burst(addr: &str, target: &str, n: usize) -> io::Result<serde_json::Value> {
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes();
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    // One thread: the tasks run once this loop is done, each writing its request at once.
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(fetch(s, request.clone())))
        .collect();
    let mut statuses = BTreeMap::<String, u64>::new();
    let mut x_cache = BTreeMap::<String, u64>::new();
    let mut elapsed = Vec::with_capacity(n);
    let mut errors = 0u64;
    for task in tasks {
        match task.await.map_err(io::Error::other)? {
            Ok(a) => {
                *statuses.entry(a.status.to_string()).or_default() += 1;
                *x_cache.entry(a.x_cache).or_default() += 1;
                elapsed.push(a.elapsed.as_secs_f64() * 1000.0);
            }
            Err(_) => errors += 1,
        }
    }
    let ok = statuses.get("200").copied().unwrap_or(0);
    elapsed.sort_by(f64::total_cmp);
    let mean = elapsed.iter().sum::<f64>() / elapsed.len().max(1) as f64;
    // Nearest-rank percentiles.
    let pct = |p: f64| {
        let rank = ((p * elapsed.len() as f64).ceil() as usize).max(1);
        elapsed.get(rank - 1).copied().unwrap_or(0.0)
    };
    let ms = |v: f64| (v * 10.0).round() / 10.0;
    Ok(serde_json::json!({
        "requests": n,
        "ok": ok,
        "errors": errors,
        "mean_ms": ms(mean),
        "p50_ms": ms(pct(0.50)),
        "p99_ms": ms(pct(0.99)),
        "max_ms": ms(elapsed.last().copied().unwrap_or(0.0)),
        "min_ms": ms(elapsed.first().copied().unwrap_or(0.0)),
        "statuses": statuses,
        "x_cache": x_cache,
    }))
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, target, n) = match args.as_slice() {
        [addr, target, n] => match n.parse::<usize>() {
            Ok(n) if n > 0 => (addr.clone(), target.clone(), n),
            _ => usage(),
        },
        _ => usage(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        tokio::time::timeout(TIMEOUT, burst(&addr, &target, n))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "burst took longer than 30 s"))?
    })?;
    println!("{report}");
    Ok(())
}

fn usage() -> ! {
    eprintln!("usage: bench_burst HOST:PORT TARGET N");
    std::process::exit(2)
}
