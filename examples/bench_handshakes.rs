//! New TLS 1.3 connections, one request each, for the handshake row of the whole-proxy load
//! benchmark (`benches/load/run.sh`).
//!
//! CONNECTIONS tasks on one thread, each in a loop for SECONDS: TCP connect, a full TLS 1.3
//! handshake (no session resumption, ALPN http/1.1), `GET PATH` with `Connection: close`, the
//! whole answer read, then the server's close awaited (so the server, not this client, holds
//! the TIME_WAIT and the client's ports never run out). Prints one JSON line:
//! `{"handshakes": N, "errors": N, "seconds": .., "rate": .., "mean_ms": .., "p50_ms": ..,
//! "p99_ms": .., "max_ms": .., "statuses": {..}, "versions": {..}}`, where the times are TCP
//! connect plus TLS handshake and `handshakes` counts connections answered 200.
//!
//! Why not h2load: its cost per new connection on the client (about 0.8 ms of CPU here) is
//! higher than either server's (0.3-0.4 ms), so with one core each the row measured the
//! client. This client checks no certificate and no handshake signature: a TLS 1.3 client
//! cannot do much less work per handshake (key share, key schedule, a few records; about
//! 0.2 ms of CPU here with the TCP connect and close), so the server under test is the
//! bottleneck. Never point it at anything that matters.
//!
//! Run: `cargo run --release --example bench_handshakes -- 127.0.0.1:PORT /1k 64 6`.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[path = "support/response.rs"]
mod response;
use response::read_response;
#[path = "support/tls.rs"]
mod tls;
use tls::connector;

/// Bound on one connection, from connect to the server's close.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

struct Outcome {
    status: u16,
    version: &'static str,
    /// TCP connect plus TLS handshake.
    connect: Duration,
}

/// One connection: handshake, one request, the answer, the server's close.
async fn one(
    addr: &str,
    connector: &TlsConnector,
    name: &ServerName<'static>,
    request: &[u8],
) -> io::Result<Outcome> {
    let start = Instant::now();
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name.clone(), tcp).await?;
    let connect = start.elapsed();
    let version = match tls.get_ref().1.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "other",
    };
    tls.write_all(request).await?;
    let response = read_response(&mut tls, "content-length").await?;
    if response.field.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "answer without Content-Length",
        ));
    }
    let mut chunk = [0u8; 4096];
    // The request said close: wait for the server's end (a close without close_notify is an
    // end as well; the answer is complete).
    while let Ok(n) = tls.read(&mut chunk).await {
        if n == 0 {
            break;
        }
    }
    Ok(Outcome {
        status: response.status,
        version,
        connect,
    })
}

#[derive(Default)]
struct Tally {
    connects: Vec<f64>,
    statuses: BTreeMap<String, u64>,
    versions: BTreeMap<&'static str, u64>,
    errors: u64,
    last_error: Option<String>,
}

/// One task's loop until `end`.
async fn worker(
    addr: Arc<str>,
    connector: TlsConnector,
    request: Arc<[u8]>,
    end: Instant,
) -> Tally {
    let name = ServerName::try_from("localhost").expect("a valid name");
    let mut tally = Tally::default();
    while Instant::now() < end {
        match tokio::time::timeout(CONNECTION_TIMEOUT, one(&addr, &connector, &name, &request))
            .await
        {
            Ok(Ok(o)) => {
                *tally.statuses.entry(o.status.to_string()).or_default() += 1;
                *tally.versions.entry(o.version).or_default() += 1;
                if o.status == 200 {
                    tally.connects.push(o.connect.as_secs_f64() * 1000.0);
                } else {
                    tally.errors += 1;
                }
            }
            Ok(Err(e)) => {
                tally.errors += 1;
                tally.last_error = Some(e.to_string());
            }
            Err(_) => {
                tally.errors += 1;
                tally.last_error = Some("timed out".to_owned());
            }
        }
    }
    tally
}

async fn run(addr: &str, path: &str, connections: usize, seconds: f64) -> io::Result<String> {
    let connector = connector()?;
    let request: Arc<[u8]> =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .into_bytes()
            .into();
    let addr: Arc<str> = addr.into();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(worker(
                addr.clone(),
                connector.clone(),
                request.clone(),
                end,
            ))
        })
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.map_err(io::Error::other)?;
        all.connects.extend(t.connects);
        for (k, v) in t.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        for (k, v) in t.versions {
            *all.versions.entry(k).or_default() += v;
        }
        all.errors += t.errors;
        all.last_error = t.last_error.or(all.last_error);
    }
    let wall = start.elapsed().as_secs_f64();
    let connects = &mut all.connects;
    connects.sort_by(f64::total_cmp);
    // (An empty sum of floats is -0.0.)
    let mean = connects.iter().sum::<f64>() / connects.len().max(1) as f64 + 0.0;
    // Nearest-rank percentiles.
    let pct = |p: f64| {
        let rank = ((p * connects.len() as f64).ceil() as usize).max(1);
        connects.get(rank - 1).copied().unwrap_or(0.0)
    };
    let ms = |v: f64| (v * 1000.0).round() / 1000.0;
    Ok(serde_json::json!({
        "handshakes": connects.len(),
        "errors": all.errors,
        "seconds": ms(wall),
        "rate": (connects.len() as f64 / wall).round(),
        "mean_ms": ms(mean),
        "p50_ms": ms(pct(0.50)),
        "p99_ms": ms(pct(0.99)),
        "max_ms": ms(connects.last().copied().unwrap_or(0.0)),
        "statuses": all.statuses,
        "versions": all.versions,
        "last_error": all.last_error,
    })
    .to_string())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, path, connections, seconds) = match args.as_slice() {
        [addr, path, c, s] => match (c.parse::<usize>(), s.parse::<f64>()) {
            (Ok(c), Ok(s)) if c > 0 && s > 0.0 && s <= 600.0 => (addr, path, c, s),
            _ => usage(),
        },
        _ => usage(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "{}",
        runtime.block_on(run(addr, path, connections, seconds))?
    );
    Ok(())
}

fn usage() -> ! {
    eprintln!("usage: bench_handshakes HOST:PORT PATH CONNECTIONS SECONDS (SECONDS at most 600)");
    std::process::exit(2)
}
