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

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    let (status, x_cache, head_len, body_len) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = resp
            .parse(&buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        {
            let header = |name: &str| {
                resp.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
            };
            let body_len = header("content-length").and_then(|v| v.parse::<usize>().ok());
            let x_cache = header("x-cache").unwrap_or_else(|| "-".to_owned());
            break (resp.code.unwrap_or(0), x_cache, len, body_len);
        }
    };
    match body_len {
        Some(body_len) => {
            while buf.len() < head_len + body_len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside the body",
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        // Chunked or close-delimited: the request asked to close, so read to the end.
        None => while stream.read(&mut chunk).await? > 0 {},
    }
    Ok(Answer {
        status,
        x_cache,
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
