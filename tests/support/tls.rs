//! TLS and HTTP/2 on the client side of the whole-proxy tests: a test CA issuing
//! certificates (made here, never committed), a blocking HTTP/1.1-over-TLS client that
//! reports what the handshake gave (ALPN, version, the certificate served), an HTTP/2 client
//! (over TLS, or h2c with prior knowledge), and raw ClientHellos for versions rustls clients
//! cannot offer.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::client::{Connector, Response, Stream};

const DAY: i64 = 86_400;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn time_of(seconds: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(seconds).unwrap()
}

/// A certificate authority for one test.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pub pem: String,
}

/// A certificate issued by a [`Ca`], in PEM, with its DER to recognise it in a handshake.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

/// The files of a certificate, as given to `--tls-cert` / `--tls-key` or `tls.certificates`.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn cert(&self) -> &str {
        self.cert.to_str().unwrap()
    }
    pub fn key(&self) -> &str {
        self.key.to_str().unwrap()
    }
}

impl Ca {
    pub fn new() -> Ca {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "caching-proxy test CA");
        let cert = params.self_signed(&key).unwrap();
        let pem = cert.pem();
        Ca { cert, key, pem }
    }

    /// A certificate for `names`, valid from yesterday for 90 days.
    pub fn issue(&self, names: &[&str]) -> Leaf {
        self.issue_valid(names, now() - DAY, now() + 90 * DAY)
    }

    /// A certificate for `names` valid between two Unix times.
    pub fn issue_valid(&self, names: &[&str], not_before: i64, not_after: i64) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = time_of(not_before);
        params.not_after = time_of(not_after);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Default for Ca {
    fn default() -> Self {
        Self::new()
    }
}

impl Leaf {
    /// Writes `<stem>.crt` and `<stem>.key` in `dir` (replacing them, as a renewal does).
    pub fn write(&self, dir: &Path, stem: &str) -> CertFiles {
        let files = CertFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        // Through a rename, as ACME clients do, so a reload never reads half a file.
        for (path, text) in [(&files.cert, &self.cert_pem), (&files.key, &self.key_pem)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        files
    }
}

/// Accepts any server certificate (the tests look at which one was served).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How the test client does TLS: which CA it trusts (none: any certificate) and which
/// protocols it offers by ALPN.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl ClientTls {
    fn build(ca_pem: Option<&str>, alpn: &[&str], tls12_only: bool) -> ClientTls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap();
        let mut config = match ca_pem {
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(cert.unwrap()).unwrap();
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        // New handshakes every time: a resumed session would not show the certificate.
        config.resumption = rustls::client::Resumption::disabled();
        ClientTls {
            config: Arc::new(config),
        }
    }

    /// Verifies the server against `ca_pem`, offering `alpn`.
    pub fn trusting(ca_pem: &str, alpn: &[&str]) -> ClientTls {
        Self::build(Some(ca_pem), alpn, false)
    }

    /// Accepts any certificate, offering `alpn`.
    pub fn any(alpn: &[&str]) -> ClientTls {
        Self::build(None, alpn, false)
    }

    /// Accepts any certificate, TLS 1.2 only.
    pub fn any_tls12(alpn: &[&str]) -> ClientTls {
        Self::build(None, alpn, true)
    }

    /// Connects and completes the handshake, sending `sni` (an IP address sends none).
    pub fn connect(&self, addr: SocketAddr, sni: &str) -> std::io::Result<TlsConn> {
        let name = ServerName::try_from(sni.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut conn = rustls::ClientConnection::new(self.config.clone(), name)
            .map_err(std::io::Error::other)?;
        let sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut sock = Records::new(sock);
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        let info = Handshake {
            alpn: conn
                .alpn_protocol()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            version: conn
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
            cert: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec())
                .unwrap_or_default(),
        };
        Ok(TlsConn {
            stream: BufReader::new(rustls::StreamOwned::new(conn, sock)),
            info,
        })
    }

    /// A connector for [`super::client::KeepAlive`] and `get_once_with`.
    pub fn connector(&self, sni: &'static str) -> Connector {
        let tls = self.clone();
        Arc::new(move |addr| {
            let conn = tls.connect(addr, sni)?;
            Ok(Box::new(conn.stream.into_inner()) as Box<dyn Stream>)
        })
    }

    /// A tokio-rustls connector with the same settings (for HTTP/2).
    fn tokio(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }
}

/// What a handshake gave.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub alpn: Option<String>,
    /// `TLSv1_3`, `TLSv1_2` (rustls' names).
    pub version: String,
    /// The DER of the certificate the server presented.
    pub cert: Vec<u8>,
}

/// One TLS connection, for HTTP/1.1 requests one after the other.
pub struct TlsConn {
    stream: BufReader<rustls::StreamOwned<rustls::ClientConnection, Records<TcpStream>>>,
    pub info: Handshake,
}

/// A transport that counts the TLS records it reads, by their 5-byte headers.
pub struct Records<S> {
    inner: S,
    /// Records whose header has been read.
    count: usize,
    /// The bytes of the current record's header read so far.
    header: [u8; 5],
    header_read: usize,
    /// The bytes of the current record's body still to come.
    body_left: usize,
}

impl<S> Records<S> {
    fn new(inner: S) -> Self {
        Records {
            inner,
            count: 0,
            header: [0; 5],
            header_read: 0,
            body_left: 0,
        }
    }
}

impl<S: Read> Read for Records<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut at = 0;
        while at < n {
            if self.body_left > 0 {
                let skip = self.body_left.min(n - at);
                self.body_left -= skip;
                at += skip;
                continue;
            }
            self.header[self.header_read] = buf[at];
            self.header_read += 1;
            at += 1;
            if self.header_read == self.header.len() {
                self.header_read = 0;
                self.count += 1;
                self.body_left = u16::from_be_bytes([self.header[3], self.header[4]]) as usize;
            }
        }
        Ok(n)
    }
}

impl<S: Write> Write for Records<S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl TlsConn {
    /// The TLS stream itself, for a protocol of the caller's own (nothing is read yet).
    pub fn into_stream(self) -> impl Read + Write {
        self.stream.into_inner()
    }

    /// How many TLS records the connection has received, the handshake's included.
    pub fn records_received(&self) -> usize {
        self.stream.get_ref().sock.count
    }

    /// GETs `path` with `Host: host` on this connection.
    pub fn get(&mut self, host: &str, path: &str) -> std::io::Result<Response> {
        self.request("GET", host, path, &[])
    }

    pub fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let s = self.stream.get_mut();
        s.write_all(req.as_bytes())?;
        s.flush()?;
        read_response(&mut self.stream, method == "HEAD")
    }
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// Reads one HTTP/1.1 response (Content-Length or chunked body).
fn read_response<R: BufRead>(r: &mut R, head_only: bool) -> std::io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before a response",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let mut body = Vec::new();
    if head_only || status == 204 || status == 304 {
    } else if let Some(len) = headers.get("content-length") {
        body.resize(
            len.parse().map_err(|_| invalid(format!("length {len}")))?,
            0,
        );
        r.read_exact(&mut body)?;
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| invalid(format!("chunk size {size:?}")))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A request for [`h2_requests`]: method, authority (`:authority`), path.
pub struct H2Request<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
}

impl<'a> H2Request<'a> {
    pub fn get(authority: &'a str, path: &'a str) -> Self {
        H2Request {
            method: "GET",
            authority,
            path,
        }
    }
}

/// Sends `requests` one after the other on one HTTP/2 connection: over TLS with `tls`
/// (offering only `h2` must have been asked of it) and `sni`, else h2c with prior
/// knowledge. Returns the responses and, over TLS, the handshake.
pub fn h2_requests(
    addr: SocketAddr,
    tls: Option<(&ClientTls, &str)>,
    requests: &[H2Request],
) -> Result<(Vec<Response>, Option<Handshake>), String> {
    h2_run(addr, tls, requests, false)
}

/// As [`h2_requests`], but every request is sent before any response is read, and the
/// responses are read side by side: concurrent streams on one connection. Gives up after
/// 20 s (a response that never completes).
pub fn h2_requests_at_once(
    addr: SocketAddr,
    tls: Option<(&ClientTls, &str)>,
    requests: &[H2Request],
) -> Result<(Vec<Response>, Option<Handshake>), String> {
    h2_run(addr, tls, requests, true)
}

fn h2_run(
    addr: SocketAddr,
    tls: Option<(&ClientTls, &str)>,
    requests: &[H2Request],
    at_once: bool,
) -> Result<(Vec<Response>, Option<Handshake>), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        match tls {
            Some((tls, sni)) => {
                let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
                let stream = tls
                    .tokio()
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                let (_, conn) = stream.get_ref();
                let info = Handshake {
                    alpn: conn
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned()),
                    version: conn
                        .protocol_version()
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    cert: conn
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.to_vec())
                        .unwrap_or_default(),
                };
                let responses = h2_exchange(stream, "https", requests, at_once).await?;
                Ok((responses, Some(info)))
            }
            None => Ok((h2_exchange(tcp, "http", requests, at_once).await?, None)),
        }
    };
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .map_err(|_| "no complete answer within 20 s".to_owned())?
    })
}

async fn h2_exchange<S>(
    io: S,
    scheme: &str,
    requests: &[H2Request<'_>],
    at_once: bool,
) -> Result<Vec<Response>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut client, connection) = h2::client::handshake(io)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    let driver = tokio::spawn(connection);
    let mut out = Vec::new();
    let mut pending = Vec::new();
    for r in requests {
        let req = http::Request::builder()
            .method(r.method)
            .uri(format!("{scheme}://{}{}", r.authority, r.path))
            .body(())
            .unwrap();
        client = client.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
        let (response, _) = client
            .send_request(req, true)
            .map_err(|e| format!("h2 send: {e}"))?;
        if at_once {
            // Read side by side: one stream's unread body must not hold back another's.
            pending.push(tokio::spawn(h2_response(response)));
        } else {
            out.push(h2_response(response).await?);
        }
    }
    for response in pending {
        out.push(response.await.map_err(|e| e.to_string())??);
    }
    drop(client);
    driver.abort();
    Ok(out)
}

async fn h2_response(response: h2::client::ResponseFuture) -> Result<Response, String> {
    let response = response.await.map_err(|e| format!("h2 response: {e}"))?;
    let status = response.status().as_u16();
    let mut headers = HashMap::new();
    for (name, value) in response.headers() {
        headers.insert(
            name.as_str().to_owned(),
            value.to_str().unwrap_or_default().to_owned(),
        );
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("h2 body: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// A ClientHello offering only `version` (0x0302: TLS 1.1, 0x0303: TLS 1.2), with ECDHE
/// suites and the extensions a TLS 1.2 server needs (groups, point formats, signature
/// algorithms) and no `supported_versions`, so it cannot mean TLS 1.3.
pub fn client_hello(version: u16, sni: &str) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    let mut exts = Vec::new();
    let mut name = vec![0u8];
    name.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    name.extend_from_slice(sni.as_bytes());
    let mut list = (name.len() as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&name);
    ext(&mut exts, 0x0000, &list); // server_name
    ext(&mut exts, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]); // groups: x25519, P-256
    ext(&mut exts, 0x000b, &[1, 0]); // ec_point_formats: uncompressed
    ext(
        &mut exts,
        0x000d,
        &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01],
    ); // signature_algorithms
    ext(&mut exts, 0xff01, &[0]); // renegotiation_info (empty)

    let mut hello = Vec::new();
    hello.extend_from_slice(&version.to_be_bytes());
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    let suites: [u16; 4] = [0xc02b, 0xc02f, 0xc013, 0x002f];
    hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        hello.extend_from_slice(&s.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // compression: null
    hello.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    hello.extend_from_slice(&exts);

    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);

    let mut record = vec![0x16, 0x03, 0x01]; // handshake, record version TLS 1.0
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Sends `hello` and returns the first record the server answers with: its content type
/// (0x16 handshake, 0x15 alert) and its first bytes; `None` if it closed without a word.
pub fn first_record(addr: SocketAddr, hello: &[u8]) -> Option<(u8, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(hello).unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).ok()?;
    let len = u16::from_be_bytes([head[3], head[4]]) as usize;
    let mut body = vec![0; len.min(64)];
    s.read_exact(&mut body).ok()?;
    Some((head[0], body))
}
