//! A small blocking HTTP client for tests: any method, any headers (Host included), and
//! error statuses returned as responses rather than errors.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("<none>")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

pub fn get(url: &str) -> Response {
    request("GET", url, &[], None)
}

pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> Response {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .redirects(0)
        .build();
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url} failed: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|name| {
            let value = resp.all(&name).join(", ");
            (name.to_ascii_lowercase(), value)
        })
        .collect();
    let body = resp.into_string().unwrap_or_default();
    Response {
        status,
        headers,
        body,
    }
}

/// Sends raw bytes and returns everything the server sends back until it closes the
/// connection (or 5 s pass).
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A request written on a connection of its own, whose response is read later: lets a test
/// have several requests in the proxy at once and wait on events in between.
pub struct Pending {
    stream: TcpStream,
}

impl Pending {
    /// Sends `GET path` (`Connection: close`).
    pub fn get(addr: SocketAddr, path: &str) -> Pending {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).unwrap();
        Pending { stream }
    }

    /// The client's port, to find the connection in the system's socket table.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }

    /// Reads the whole response.
    pub fn response(mut self) -> Response {
        let mut out = Vec::new();
        let _ = self.stream.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        parse_response(&text).unwrap_or_else(|| panic!("no response: {text:?}"))
    }
}

/// Parses one HTTP/1.1 response as `raw` returns it (a body up to the end of the text).
pub fn parse_response(text: &str) -> Option<Response> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Response {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The connection could not be opened (refused: nothing listens): the request was never
    /// sent anywhere.
    Refused(String),
    /// The connection ended before any byte of a response, and the request was not sent
    /// again (not idempotent, or not on a reused connection): the server may or may not have
    /// processed it; only the origin's count can tell.
    Unanswered(String),
    /// Anything else: a timeout, part of a response, an invalid response.
    Failed(String),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Refused(e) => write!(f, "refused: {e}"),
            RequestError::Unanswered(e) => write!(f, "unanswered: {e}"),
            RequestError::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

/// How one attempt failed.
#[derive(Debug)]
enum Failure {
    /// Connecting failed.
    Connect(String),
    /// The connection ended before any byte of a response (the request could not be
    /// written, or the read saw the connection's end or a reset): the one case where HTTP
    /// lets a client send an idempotent request again on a new connection (RFC 9110 §9.2.2,
    /// RFC 9112 §9.3.1), as a server may close an idle connection at any time.
    NoResponse(String),
    /// Anything else: a timeout, part of a response, an invalid response.
    Other(String),
}

impl Failure {
    fn into_error(self, context: &str) -> RequestError {
        match self {
            Failure::Connect(e) => RequestError::Refused(format!("{context}connect: {e}")),
            Failure::NoResponse(e) => {
                RequestError::Unanswered(format!("{context}no response byte: {e}"))
            }
            Failure::Other(e) => RequestError::Failed(format!("{context}{e}")),
        }
    }
}

/// A byte stream to the server: TCP, or TLS over TCP.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Opens a connection to the server (with a read timeout set).
pub type Connector =
    std::sync::Arc<dyn Fn(SocketAddr) -> std::io::Result<Box<dyn Stream>> + Send + Sync>;

/// Plain TCP, with a 10 s read timeout.
pub fn tcp() -> Connector {
    std::sync::Arc::new(|addr| {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Box::new(s) as Box<dyn Stream>)
    })
}

/// Idempotent methods (RFC 9110 §9.2.2): the only ones a client may send again by itself.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
    )
}

/// An HTTP/1.1 client on one kept-alive connection that behaves as HTTP allows real clients
/// to when a server closes an idle connection: it sends an idempotent request once more, on a
/// new connection, if the reused connection ended before any byte of the response. Nothing
/// else is retried (not after a timeout, a partial response, or for a POST), every retry is
/// counted with its cause, and each request is counted once.
pub struct KeepAlive {
    addr: SocketAddr,
    connect: Connector,
    conn: Option<std::io::BufReader<Box<dyn Stream>>>,
    /// Requests made, each counted once however many attempts it took.
    pub requests: usize,
    /// How many requests were sent again on a new connection.
    pub retries: usize,
    /// Why each retried request's first attempt failed.
    pub retry_causes: Vec<String>,
    /// How many connections were opened.
    pub connections: usize,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> Self {
        Self::with(addr, tcp())
    }

    /// A client whose connections are opened by `connect` (TLS, say).
    pub fn with(addr: SocketAddr, connect: Connector) -> Self {
        KeepAlive {
            addr,
            connect,
            conn: None,
            requests: 0,
            retries: 0,
            retry_causes: Vec::new(),
            connections: 0,
        }
    }

    /// GETs `path`; returns the status and body.
    pub fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), RequestError> {
        self.request("GET", path, None)
    }

    /// POSTs `body` to `path`: never sent twice.
    pub fn post(&mut self, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), RequestError> {
        self.request("POST", path, Some(body))
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), RequestError> {
        self.requests += 1;
        let reused = self.conn.is_some();
        match self.once(method, path, body) {
            Ok(r) => Ok(r),
            Err(Failure::NoResponse(cause)) if reused && is_idempotent(method) => {
                self.retries += 1;
                self.retry_causes.push(format!("{method} {path}: {cause}"));
                self.once(method, path, body)
                    .map_err(|e| e.into_error("after a retry: "))
            }
            Err(e) => Err(e.into_error("")),
        }
    }

    fn once(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), Failure> {
        if self.conn.is_none() {
            let s = (self.connect)(self.addr).map_err(|e| Failure::Connect(e.to_string()))?;
            self.conn = Some(std::io::BufReader::new(s));
            self.connections += 1;
        }
        let conn = self.conn.as_mut().unwrap();
        let result = exchange(conn, self.addr, method, path, body, false);
        match result {
            Ok((status, body, close)) => {
                if close {
                    self.conn = None;
                }
                Ok((status, body))
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

/// Sends one request on `conn` and reads its response: status, body, and whether the
/// server closes the connection after it.
fn exchange(
    conn: &mut std::io::BufReader<Box<dyn Stream>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    close: bool,
) -> Result<(u16, Vec<u8>, bool), Failure> {
    use std::io::BufRead;
    use std::io::ErrorKind::*;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if close {
        req.push_str("Connection: close\r\n");
    }
    if let Some(body) = body {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    conn.get_mut()
        .write_all(&bytes)
        .map_err(|e| Failure::NoResponse(format!("write: {e}")))?;
    let mut status_line = String::new();
    match conn.read_line(&mut status_line) {
        Ok(0) => return Err(Failure::NoResponse("closed".into())),
        Ok(_) => {}
        Err(e) if matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe) => {
            return Err(Failure::NoResponse(format!("read: {e}")))
        }
        Err(e) => return Err(Failure::Other(format!("read: {e}"))),
    }
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::Other(format!("bad status line {status_line:?}")))?;
    let (mut length, mut close) = (None, false);
    loop {
        let mut line = String::new();
        conn.read_line(&mut line)
            .map_err(|e| Failure::Other(format!("headers: {e}")))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse::<usize>().ok(),
            "connection" => close |= value.trim().eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = vec![0; length.ok_or_else(|| Failure::Other("no content-length".into()))?];
    conn.read_exact(&mut body)
        .map_err(|e| Failure::Other(format!("body: {e}")))?;
    Ok((status, body, close))
}

/// One request on a new connection (`Connection: close`); never retried.
pub fn request_once(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), RequestError> {
    request_once_with(&tcp(), addr, method, path, body)
}

/// [`request_once`] on a connection opened by `connect` (TLS, say).
pub fn request_once_with(
    connect: &Connector,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), RequestError> {
    let stream = connect(addr).map_err(|e| Failure::Connect(e.to_string()).into_error(""))?;
    let mut conn = std::io::BufReader::new(stream);
    exchange(&mut conn, addr, method, path, body, true)
        .map(|(status, body, _)| (status, body))
        .map_err(|e| e.into_error(""))
}

/// GETs `path` on a new connection (`Connection: close`); returns the status.
pub fn get_once(addr: SocketAddr, path: &str) -> Result<u16, String> {
    get_once_with(&tcp(), addr, path)
}

/// [`get_once`] on a connection opened by `connect`.
pub fn get_once_with(connect: &Connector, addr: SocketAddr, path: &str) -> Result<u16, String> {
    request_once_with(connect, addr, "GET", path, None)
        .map(|(status, _)| status)
        .map_err(|e| e.to_string())
}
