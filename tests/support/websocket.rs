//! A WebSocket echo origin on 127.0.0.1 and a client, for upgrades through the proxy.
//!
//! The origin greets each connection first (a message from the server before any from the
//! client), then echoes every text and binary message; it records the upgrades it accepted,
//! so a test sees whether a handshake reached it. Its 101 says `Cache-Control: public,
//! max-age=60`, so that only the proxy's own rule keeps upgrades out of the cache.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tungstenite::client::IntoClientRequest;
pub use tungstenite::handshake::client::Response as ClientResponse;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::{Message, WebSocket};

/// What the origin sends as soon as the connection is upgraded.
pub const GREETING: &str = "hello from the origin";

pub struct WsOrigin {
    addr: SocketAddr,
    /// Path and `Host` of each accepted upgrade.
    upgrades: Arc<Mutex<Vec<(String, String)>>>,
}

impl WsOrigin {
    pub fn start() -> WsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind websocket origin");
        let addr = listener.local_addr().unwrap();
        let upgrades = Arc::new(Mutex::new(Vec::new()));
        let seen = upgrades.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let seen = seen.clone();
                thread::spawn(move || echo(stream, &seen));
            }
        });
        WsOrigin { addr, upgrades }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Path and `Host` of each upgrade accepted so far.
    pub fn upgrades(&self) -> Vec<(String, String)> {
        self.upgrades.lock().unwrap().clone()
    }
}

// The handshake callback's error type is tungstenite's.
#[allow(clippy::result_large_err)]
fn echo(stream: TcpStream, seen: &Mutex<Vec<(String, String)>>) {
    let record = |req: &Request, mut resp: Response| {
        let host = req
            .headers()
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        seen.lock()
            .unwrap()
            .push((req.uri().path().to_owned(), host.to_owned()));
        // Even a switch of protocols that says it may be stored must not be.
        resp.headers_mut()
            .insert("cache-control", "public, max-age=60".parse().unwrap());
        Ok(resp)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(stream, record) else {
        return;
    };
    if ws.send(Message::text(GREETING)).is_err() {
        return;
    }
    while let Ok(message) = ws.read() {
        if message.is_close() {
            return;
        }
        if (message.is_text() || message.is_binary()) && ws.send(message).is_err() {
            return;
        }
    }
}

/// Opens a WebSocket to `path` through `addr` (the proxy) with the `Host` `host`; the
/// socket and the response to the handshake.
pub fn connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(WebSocket<TcpStream>, ClientResponse), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    connect_over(stream, host, path)
}

/// An upgrade made over a connection already open (a TLS one, for `wss`).
pub fn connect_over<S: Read + Write>(
    stream: S,
    host: &str,
    path: &str,
) -> Result<(WebSocket<S>, ClientResponse), String> {
    let request = format!("ws://{host}{path}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    tungstenite::client(request, stream).map_err(|e| e.to_string())
}

/// The origin's greeting, then each of `messages` sent and echoed back whole.
pub fn greeting_then_echoes<S: Read + Write>(ws: &mut WebSocket<S>, messages: &[Message]) {
    assert_eq!(
        next_message(ws),
        Message::text(GREETING),
        "server to client"
    );
    for message in messages {
        ws.send(message.clone()).unwrap();
        assert_eq!(&next_message(ws), message, "client to server and back");
    }
}

/// The next text or binary message (skipping pings and pongs).
pub fn next_message<S: Read + Write>(ws: &mut WebSocket<S>) -> Message {
    loop {
        let message = ws.read().expect("read a websocket message");
        if message.is_text() || message.is_binary() || message.is_close() {
            return message;
        }
    }
}
