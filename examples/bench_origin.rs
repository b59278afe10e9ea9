//! The origin behind the whole-proxy load benchmark (`benches/load/run.sh`).
//!
//! Hand-written HTTP/1.1 on one thread (keep-alive and pipelining, no framework), so that the
//! origin costs little next to the caches it stands behind: it shares a core with the load
//! generator. It counts the requests it answers, so the script can tell how many reached it.
//!
//! | path (any `/suffix` or `?query` too) | answer |
//! |---|---|
//! | `/1k`, `/16k`, `/64k`, `/256k`, `/8m` | a body of 1 KiB, 16 KiB, 64 KiB, 256 KiB, 8 MiB; `public, max-age=300` |
//! | `/slow` | 1 KiB after 50 ms; `public, max-age=300` |
//! | `/slow-expiring` | 1 KiB after 50 ms; `public, max-age=1` |
//! | `/1k-vary` | 1 KiB, `public, max-age=300`, `Vary: X-Variant` (the memory run's Vary workload) |
//! | `/__stats` | the counts as JSON, not counted, `no-store` |
//! | anything else | 404, `no-store` |
//!
//! `/__stats` answers `{"total": N, "paths": {"/1k": N, ...}, "urls": {"/slow?key=K": N, ...}}`:
//! `paths` counts per route, `urls` counts each URL of the two slow routes (the coalescing
//! rows ask for one URL each).
//!
//! Run: `cargo run --release --example bench_origin -- PORT` (listens on 127.0.0.1:PORT).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long the slow routes wait before answering.
const SLOW_DELAY: Duration = Duration::from_millis(50);

/// Routes, in the order of [`Counts::paths`].
const ROUTES: [&str; 8] = [
    "/1k",
    "/16k",
    "/256k",
    "/slow",
    "/slow-expiring",
    "/8m",
    "/64k",
    "/1k-vary",
];
/// The route of the 8 MiB body (the memory run's in-flight case).
const BIG: usize = 5;

#[derive(Clone, Copy, PartialEq)]
enum Route {
    Body(usize),
    Slow(usize),
    /// 1 KiB, varying on `X-Variant`.
    Vary(usize),
    Stats,
    NotFound,
}

fn route(target: &str) -> Route {
    let path = target.split('?').next().unwrap_or("");
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "1k" => Route::Body(0),
        "16k" => Route::Body(1),
        "256k" => Route::Body(2),
        "64k" => Route::Body(6),
        "slow" => Route::Slow(3),
        "slow-expiring" => Route::Slow(4),
        "8m" => Route::Body(BIG),
        "1k-vary" => Route::Vary(7),
        "__stats" => Route::Stats,
        _ => Route::NotFound,
    }
}

/// Everything the connections share; the runtime has one thread, so `Rc<RefCell>` does.
#[derive(Default)]
struct Counts {
    total: u64,
    paths: [u64; 8],
    /// Per URL, for the slow routes only (the others see millions of distinct URLs).
    urls: BTreeMap<String, u64>,
}

impl Counts {
    fn json(&self) -> String {
        let paths: serde_json::Map<String, serde_json::Value> = ROUTES
            .iter()
            .zip(self.paths)
            .map(|(r, n)| (r.to_string(), n.into()))
            .collect();
        serde_json::json!({"total": self.total, "paths": paths, "urls": self.urls}).to_string()
    }
}

struct Bodies {
    /// By route index (the slow routes and `BIG` have bodies of their own).
    sizes: [Vec<u8>; 7],
    big: Vec<u8>,
    slow: Vec<u8>,
}

/// One parsed request: what the answer needs.
struct Request {
    head: bool,
    close: bool,
    target: String,
    body_len: usize,
}

fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let mut close = req.version == Some(0);
    let mut body_len = 0;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        }
    }
    let request = Request {
        head: req.method == Some("HEAD"),
        close,
        target: req.path.unwrap_or("/").to_owned(),
        body_len,
    };
    Ok(Some((request, len)))
}

fn write_response(
    out: &mut Vec<u8>,
    status: &str,
    cache_control: &str,
    content_type: &str,
    body: &[u8],
    req: &Request,
) {
    write_response_with(out, status, cache_control, content_type, "", body, req)
}

/// The same, with `extra` header lines (each ending in CRLF).
fn write_response_with(
    out: &mut Vec<u8>,
    status: &str,
    cache_control: &str,
    content_type: &str,
    extra: &str,
    body: &[u8],
    req: &Request,
) {
    let date = httpdate::fmt_http_date(SystemTime::now());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status}\r\nDate: {date}\r\nContent-Type: {content_type}\r\n\
             Cache-Control: {cache_control}\r\n{extra}Content-Length: {}\r\n{}\r\n",
            body.len(),
            if req.close {
                "Connection: close\r\n"
            } else {
                ""
            },
        )
        .as_bytes(),
    );
    if !req.head {
        out.extend_from_slice(body);
    }
}

async fn serve(
    mut stream: TcpStream,
    counts: Rc<RefCell<Counts>>,
    bodies: Rc<Bodies>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(16 * 1024);
    // Request body bytes still to be dropped (the benchmark sends none; a client may).
    let mut skip = 0usize;
    loop {
        // Answer every complete request in the buffer (pipelining), then write once.
        let mut close = false;
        loop {
            if skip > 0 {
                let n = skip.min(buf.len());
                buf.advance(n);
                skip -= n;
                if skip > 0 {
                    break;
                }
            }
            let (req, len) = match parse(&buf) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(_) => {
                    out.extend_from_slice(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    close = true;
                    break;
                }
            };
            buf.advance(len);
            skip = req.body_len;
            let route = route(&req.target);
            match route {
                Route::Stats => {
                    let json = counts.borrow().json();
                    write_response(
                        &mut out,
                        "200 OK",
                        "no-store",
                        "application/json",
                        json.as_bytes(),
                        &req,
                    );
                }
                Route::NotFound => write_response(
                    &mut out,
                    "404 Not Found",
                    "no-store",
                    "text/plain",
                    b"",
                    &req,
                ),
                Route::Vary(i) => {
                    {
                        let mut c = counts.borrow_mut();
                        c.total += 1;
                        c.paths[i] += 1;
                    }
                    write_response_with(
                        &mut out,
                        "200 OK",
                        "public, max-age=300",
                        "application/octet-stream",
                        "Vary: X-Variant\r\n",
                        &bodies.sizes[0],
                        &req,
                    );
                }
                Route::Body(i) | Route::Slow(i) => {
                    {
                        let mut c = counts.borrow_mut();
                        c.total += 1;
                        c.paths[i] += 1;
                        if let Route::Slow(_) = route {
                            *c.urls.entry(req.target.clone()).or_default() += 1;
                        }
                    }
                    let (body, cache_control) = match route {
                        Route::Body(BIG) => (&bodies.big, "public, max-age=300"),
                        Route::Body(i) => (&bodies.sizes[i], "public, max-age=300"),
                        _ => {
                            // Answers already prepared go first, so that pipelined
                            // requests before this one are not held up by its delay.
                            if !out.is_empty() {
                                stream.write_all(&out).await?;
                                out.clear();
                            }
                            tokio::time::sleep(SLOW_DELAY).await;
                            let cc = if i == 4 {
                                "public, max-age=1"
                            } else {
                                "public, max-age=300"
                            };
                            (&bodies.slow, cc)
                        }
                    };
                    if route == Route::Body(BIG) && !req.head {
                        // Written from the shared body, not copied per response: a hundred
                        // of them at once are the point of this route.
                        if !out.is_empty() {
                            stream.write_all(&out).await?;
                            out.clear();
                        }
                        write_response(
                            &mut out,
                            "200 OK",
                            cache_control,
                            "application/octet-stream",
                            b"",
                            &req,
                        );
                        let len = format!("Content-Length: {}\r\n", body.len());
                        let head =
                            String::from_utf8_lossy(&out).replace("Content-Length: 0\r\n", &len);
                        stream.write_all(head.as_bytes()).await?;
                        out.clear();
                        stream.write_all(body).await?;
                    } else {
                        write_response(
                            &mut out,
                            "200 OK",
                            cache_control,
                            "application/octet-stream",
                            body,
                            &req,
                        );
                    }
                }
            }
            if req.close {
                close = true;
                break;
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            return stream.shutdown().await;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

fn main() -> io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("usage: bench_origin PORT");
            std::process::exit(2)
        });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("bench_origin listening on {}", listener.local_addr()?);
        let counts = Rc::new(RefCell::new(Counts::default()));
        let bodies = Rc::new(Bodies {
            sizes: [1024, 16 * 1024, 256 * 1024, 0, 0, 0, 64 * 1024].map(|n| vec![b'x'; n]),
            big: vec![b'x'; 8 << 20],
            slow: vec![b's'; 1024],
        });
        loop {
            let (stream, _) = listener.accept().await?;
            let (counts, bodies) = (counts.clone(), bodies.clone());
            tokio::task::spawn_local(async move {
                let _ = serve(stream, counts, bodies).await;
            });
        }
    })
}
