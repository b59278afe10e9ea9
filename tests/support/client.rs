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

/// How a request on a kept-alive connection failed.
#[derive(Debug)]
enum Failure {
    /// The connection ended before any byte of a response: the server closed an idle
    /// connection. Clients retry idempotent requests once on a new connection.
    NoResponse(String),
    Other(String),
}

/// An HTTP/1.1 client on one kept-alive connection, that behaves like real clients when
/// the server closes an idle connection: it retries an idempotent request once on a new
/// connection if the old one ended before any response byte.
pub struct KeepAlive {
    addr: SocketAddr,
    conn: Option<std::io::BufReader<TcpStream>>,
    /// How many requests were retried on a new connection.
    pub retries: usize,
    /// How many connections were opened.
    pub connections: usize,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> Self {
        KeepAlive {
            addr,
            conn: None,
            retries: 0,
            connections: 0,
        }
    }

    /// GETs `path`; returns the status and body.
    pub fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), String> {
        let reused = self.conn.is_some();
        match self.once(path) {
            Ok(r) => Ok(r),
            Err(Failure::NoResponse(_)) if reused => {
                self.retries += 1;
                self.once(path).map_err(|e| format!("after retry: {e:?}"))
            }
            Err(e) => Err(format!("{e:?}")),
        }
    }

    fn once(&mut self, path: &str) -> Result<(u16, Vec<u8>), Failure> {
        use std::io::{BufRead, BufReader};
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr)
                .map_err(|e| Failure::Other(format!("connect: {e}")))?;
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            self.conn = Some(BufReader::new(s));
            self.connections += 1;
        }
        let result = (|| {
            let conn = self.conn.as_mut().unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
            conn.get_mut()
                .write_all(req.as_bytes())
                .map_err(|e| Failure::NoResponse(format!("write: {e}")))?;
            let mut status_line = String::new();
            match conn.read_line(&mut status_line) {
                Ok(0) => return Err(Failure::NoResponse("closed".into())),
                Ok(_) => {}
                Err(e) => return Err(Failure::NoResponse(format!("read: {e}"))),
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
            let mut body =
                vec![0; length.ok_or_else(|| Failure::Other("no content-length".into()))?];
            conn.read_exact(&mut body)
                .map_err(|e| Failure::Other(format!("body: {e}")))?;
            Ok((status, body, close))
        })();
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

/// GETs `path` on a new connection (`Connection: close`); returns the status.
pub fn get_once(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    stream
        .read_to_end(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no response: {text:?}"))
}
