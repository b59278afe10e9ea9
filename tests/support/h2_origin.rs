//! An https origin that offers `h2` and `http/1.1` by ALPN, records which one each
//! connection chose, and answers every request with 200, `Cache-Control: max-age=60` and a
//! body naming the protocol and the path. For the proxy's HTTP/2 to origins.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::TestPki;

pub struct H2Origin {
    addr: SocketAddr,
    /// The ALPN protocol of each connection, in accept order.
    protocols: Arc<Mutex<Vec<String>>>,
    streams: Arc<Streams>,
    _runtime: std::thread::JoinHandle<()>,
}

impl H2Origin {
    /// Starts on an ephemeral port with `pki`'s certificate; each response waits `delay`.
    pub fn start(pki: &TestPki, delay: Duration) -> H2Origin {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let protocols = Arc::new(Mutex::new(Vec::new()));
        let seen = protocols.clone();
        let streams = Arc::new(Streams::default());
        let counted = streams.clone();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, seen, counted) =
                        (acceptor.clone(), seen.clone(), counted.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let alpn = tls
                            .get_ref()
                            .1
                            .alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .unwrap_or_default();
                        seen.lock().unwrap().push(alpn.clone());
                        if alpn == "h2" {
                            serve_h2(tls, delay, counted).await;
                        } else {
                            serve_h1(tls, delay).await;
                        }
                    });
                }
            });
        });
        H2Origin {
            addr,
            protocols,
            streams,
            _runtime: runtime,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The ALPN protocol each connection so far negotiated.
    pub fn protocols(&self) -> Vec<String> {
        self.protocols.lock().unwrap().clone()
    }

    /// HTTP/2 streams (requests) received so far, on all connections.
    pub fn streams(&self) -> usize {
        self.streams.total.load(Ordering::SeqCst)
    }

    /// The most streams one connection has had open at once.
    pub fn most_concurrent_streams(&self) -> usize {
        self.streams.most_at_once.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
struct Streams {
    total: AtomicUsize,
    most_at_once: AtomicUsize,
}

async fn serve_h2<S>(io: S, delay: Duration, streams: Arc<Streams>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    // Streams open on this connection right now.
    let open = Arc::new(AtomicUsize::new(0));
    while let Some(Ok((request, mut respond))) = conn.accept().await {
        let now = open.fetch_add(1, Ordering::SeqCst) + 1;
        streams.most_at_once.fetch_max(now, Ordering::SeqCst);
        streams.total.fetch_add(1, Ordering::SeqCst);
        let open = open.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let body = format!("h2 {}", request.uri().path());
            let response = http::Response::builder()
                .status(200)
                .header("cache-control", "max-age=60")
                .header("content-length", body.len())
                .body(())
                .unwrap();
            if let Ok(mut send) = respond.send_response(response, false) {
                let _ = send.send_data(body.into(), true);
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn serve_h1<S>(io: S, delay: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut io = BufReader::new(io);
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        loop {
            let mut header = String::new();
            if io.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
        }
        tokio::time::sleep(delay).await;
        let body = format!("http/1.1 {path}");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if io.get_mut().write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
