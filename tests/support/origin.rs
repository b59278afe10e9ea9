//! A real HTTP/1.1 origin on 127.0.0.1 whose answers are scripted per request and which
//! records every request it receives (method, target, headers, body).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A request as the origin received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// What the origin answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
    /// The status line's version, `HTTP/1.1` unless set.
    pub version: &'static str,
    /// Instead of answering: end the connection this way.
    pub failure: Option<Failure>,
}

/// How an origin fails a request instead of answering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Closes the connection without a response.
    Close,
    /// Resets the connection (TCP RST) without a response.
    Reset,
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            version: "HTTP/1.1",
            failure: None,
        }
    }

    /// Answers with an `HTTP/1.0` status line.
    pub fn http10(mut self) -> Self {
        self.version = "HTTP/1.0";
        self
    }

    /// Fails the request: closes or resets the connection without answering.
    pub fn fail(failure: Failure) -> Self {
        let mut reply = Reply::ok("");
        reply.failure = Some(failure);
        reply
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// What an origin that supports ranges (RFC 9110 §14) answers `req` with, for the
    /// representation `full` with header fields `fields` (its `ETag`, `Cache-Control`, ...):
    /// a single satisfiable byte range gets a 206 with `Content-Range`, an unsatisfiable one a
    /// 416; no `Range`, several ranges, or an `If-Range` that is not the representation's
    /// strong `ETag` (or its `Last-Modified`) get the whole body with 200.
    pub fn ranged(full: &[u8], req: &Recorded, fields: &[(&str, &str)]) -> Reply {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        let mut reply = Reply::ok(full.to_vec());
        for (name, value) in fields {
            reply = reply.header(name, value);
        }
        let current = req.header("if-range").is_none_or(|v| {
            let strong = field("etag").is_some_and(|e| !e.starts_with("W/") && e == v);
            strong || field("last-modified") == Some(v)
        });
        let Some(spec) = req.header("range").and_then(|r| r.strip_prefix("bytes=")) else {
            return reply;
        };
        if !current || spec.contains(',') {
            return reply;
        }
        let len = full.len();
        let (first, last) = spec.split_once('-').expect("a byte range");
        let span = match (first.parse::<usize>(), last.parse::<usize>()) {
            (Ok(first), Ok(last)) if first < len => Some((first, last.min(len - 1))),
            (Ok(first), Err(_)) if first < len => Some((first, len - 1)),
            (Err(_), Ok(n)) if n > 0 && len > 0 => Some((len - n.min(len), len - 1)),
            _ => None,
        };
        match span {
            Some((first, last)) => {
                reply.status = 206;
                reply.body = full[first..=last].to_vec();
                reply.header("content-range", &format!("bytes {first}-{last}/{len}"))
            }
            None => {
                reply.status = 416;
                reply.body = Vec::new();
                reply.header("content-range", &format!("bytes */{len}"))
            }
        }
    }
}

/// Holds back origin answers until a test lets them go: a handler calls [`Gate::wait`],
/// the test [`Gate::open`]s it once what it wants to observe has happened (instead of an
/// origin delay that hopes to be long enough).
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Blocks until the gate is open (60 s at most, so that a failing test still ends).
    pub fn wait(&self) {
        let (open, changed) = &*self.0;
        let guard = open.lock().unwrap();
        let _ = changed
            .wait_timeout_while(guard, Duration::from_secs(60), |open| !*open)
            .unwrap();
    }

    pub fn open(&self) {
        let (open, changed) = &*self.0;
        *open.lock().unwrap() = true;
        changed.notify_all();
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

struct State {
    /// Shared, so that a restarted origin answers as before.
    handler: Arc<Handler>,
    stopped: std::sync::atomic::AtomicBool,
    requests: Mutex<Vec<Recorded>>,
    /// Connections accepted (requests the origin could not parse are not recorded, but their
    /// connection is counted).
    connections: AtomicUsize,
    /// Server names clients asked for in TLS handshakes, one per connection.
    sni: Mutex<Vec<String>>,
}

/// A CA and a certificate it signed, in PEM, for TLS origins.
pub struct TestPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    /// A fresh CA and a leaf certificate for `names`.
    pub fn new(names: &[&str]) -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        TestPki {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

pub struct Origin {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Origin {
    /// Starts an origin on an ephemeral port.
    pub fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Origin {
        Self::start_on(0, handler)
    }

    /// Starts an origin on a given port (0 for an ephemeral one).
    pub fn start_on(
        port: u16,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Origin {
        Self::listen(port, handler, serve)
    }

    /// Binds, then serves each connection on its own thread with `per_connection`.
    fn listen(
        port: u16,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
        per_connection: impl Fn(TcpStream, &State) + Send + Sync + 'static,
    ) -> Origin {
        Self::listen_with(port, new_state(Arc::new(handler)), per_connection)
    }

    fn listen_with(
        port: u16,
        state: Arc<State>,
        per_connection: impl Fn(TcpStream, &State) + Send + Sync + 'static,
    ) -> Origin {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind origin");
        let addr = listener.local_addr().unwrap();
        let s = state.clone();
        let per_connection = Arc::new(per_connection);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stopped.load(Ordering::SeqCst) {
                    break; // drops the listener: connections are refused from now on
                }
                let Ok(stream) = stream else { continue };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let (s, per_connection) = (s.clone(), per_connection.clone());
                thread::spawn(move || per_connection(stream, &s));
            }
        });
        Origin { addr, state }
    }

    /// Starts an HTTPS origin on an ephemeral port, presenting `pki`'s certificate.
    pub fn start_tls(
        pki: &TestPki,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Origin {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        let config = Arc::new(config);
        Self::listen(0, handler, move |stream, state| {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = Tls(rustls::StreamOwned::new(conn, stream));
            let tls_stream = &mut tls.0;
            while tls_stream.conn.is_handshaking() {
                if tls_stream.conn.complete_io(&mut tls_stream.sock).is_err() {
                    return;
                }
            }
            if let Some(name) = tls_stream.conn.server_name() {
                state.sni.lock().unwrap().push(name.to_owned());
            }
            serve(tls, state);
        })
    }

    /// An origin answering requests with `replies` in turn, repeating the last one.
    pub fn sequence(replies: Vec<Reply>) -> Origin {
        assert!(!replies.is_empty());
        let next = AtomicUsize::new(0);
        Self::start(move |_| {
            let i = next.fetch_add(1, Ordering::SeqCst);
            replies[i.min(replies.len() - 1)].clone()
        })
    }

    /// Stops the origin: the listener closes and open connections are closed before their
    /// next request, as when an origin server goes down.
    pub fn stop(&self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(self.addr).is_ok() {
            assert!(std::time::Instant::now() < deadline, "origin did not stop");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts a plain origin again on this stopped one's port with the same handler, as a
    /// server process restarted; the new one's records start empty. Start the first one on
    /// a port from `free_ports` (below the kernel's ephemeral range): a port the kernel
    /// picked can be handed to an outgoing connection while the origin is down.
    pub fn restart(&self) -> Origin {
        assert!(
            self.state.stopped.load(Ordering::SeqCst),
            "stop the origin before restarting it"
        );
        let state = new_state(self.state.handler.clone());
        Self::listen_with(self.addr.port(), state, serve)
    }

    /// An origin that reads each request, records it and resets the connection (RST)
    /// without answering: a server that fails after the request reached it.
    pub fn resetting() -> Origin {
        Self::listen(
            0,
            |_| Reply::ok(""),
            |stream, state| {
                let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
                if let Some(request) = read_request(&mut reader) {
                    state.requests.lock().unwrap().push(request);
                }
                // Closing with a zero linger time sends RST instead of FIN.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            },
        )
    }

    /// The server names asked for in TLS handshakes so far.
    pub fn sni(&self) -> Vec<String> {
        self.state.sni.lock().unwrap().clone()
    }

    /// An origin answering every request with 200 and `Cache-Control: max-age=60`, with a
    /// body naming the request target.
    pub fn cacheable() -> Origin {
        Self::start(|r| {
            Reply::ok(format!("body of {}", r.target)).header("cache-control", "max-age=60")
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// How many requests arrived in all.
    pub fn hits(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// How many requests arrived for this path and query.
    pub fn hits_for(&self, target: &str) -> usize {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.target == target)
            .count()
    }
}

fn new_state(handler: Arc<Handler>) -> Arc<State> {
    Arc::new(State {
        handler,
        stopped: std::sync::atomic::AtomicBool::new(false),
        requests: Mutex::new(Vec::new()),
        connections: AtomicUsize::new(0),
        sni: Mutex::new(Vec::new()),
    })
}

/// A connection the origin can reset (SO_LINGER 0: closing sends RST).
trait Resettable {
    fn arm_reset(&self);
}

impl Resettable for TcpStream {
    fn arm_reset(&self) {
        let _ = socket2::SockRef::from(self).set_linger(Some(Duration::ZERO));
    }
}

/// A TLS connection: resets its TCP connection.
struct Tls(rustls::StreamOwned<rustls::ServerConnection, TcpStream>);

impl Read for Tls {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Tls {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Resettable for Tls {
    fn arm_reset(&self) {
        self.0.sock.arm_reset();
    }
}

fn serve<S: Read + Write + Resettable>(stream: S, state: &State) {
    let mut reader = BufReader::new(stream);
    loop {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        if state.stopped.load(Ordering::SeqCst) {
            return;
        }
        let close = request
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        state.requests.lock().unwrap().push(request.clone());
        let reply = (state.handler)(&request);
        if !reply.delay.is_zero() {
            thread::sleep(reply.delay);
        }
        match reply.failure {
            Some(Failure::Reset) => return reader.get_ref().arm_reset(),
            Some(Failure::Close) => return,
            None => {}
        }
        let mut head = format!("{} {} X\r\n", reply.version, reply.status);
        let mut has_length = false;
        for (k, v) in &reply.headers {
            has_length |= k.eq_ignore_ascii_case("content-length");
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !has_length {
            head.push_str(&format!("content-length: {}\r\n", reply.body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if request.method != "HEAD" {
            out.extend_from_slice(&reply.body);
        }
        let writer = reader.get_mut();
        if writer.write_all(&out).and_then(|_| writer.flush()).is_err() || close {
            return;
        }
    }
}

fn read_request<S: Read>(reader: &mut BufReader<S>) -> Option<Recorded> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&head).ok()?;
    let headers: HashMap<String, String> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    if let Some(len) = headers
        .get("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        body.resize(len, 0);
        reader.read_exact(&mut body).ok()?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).ok()?;
            let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(Recorded {
        method: req.method?.to_owned(),
        target: req.path?.to_owned(),
        headers,
        body,
    })
}
