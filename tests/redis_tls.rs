//! The Redis tier over TLS (`rediss://`): a real `redis-server` with a TLS port and a
//! certificate from a test CA, which the proxy trusts through `SSL_CERT_FILE`.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, get, Origin, ProxyBuilder, TestPki};

/// A `redis-server` that accepts only TLS, stopped by PID on drop.
struct TlsRedis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start(pki: &TestPki) -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path.display().to_string()
        };
        let (cert, key, ca) = (
            file("cert.pem", &pki.cert_pem),
            file("key.pem", &pki.key_pem),
            file("ca.pem", &pki.ca_pem),
        );
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .args(["--tls-cert-file", &cert, "--tls-key-file", &key])
            .args(["--tls-ca-cert-file", &ca, "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsRedis {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response stored through `rediss://` by one proxy is a hit on another that has no
/// memory tier, so it came from Redis over TLS.
#[test]
fn rediss_url_connects_over_tls() {
    let pki = TestPki::new(&["localhost"]);
    let redis = TlsRedis::start(&pki);
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), &pki.ca_pem).unwrap();
    let origin = Origin::cacheable();
    let url = format!("rediss://localhost:{}", redis.port);
    let start = || {
        ProxyBuilder::new(&origin.url())
            .redis(&url)
            .args(&["--redis-l1-max-bytes", "0"])
            .env("SSL_CERT_FILE", ca.path().to_str().unwrap())
            .start()
    };
    let (a, b) = (start(), start());
    let ready: serde_json::Value = get(&a.admin_url("/health/ready")).json();
    assert_eq!(ready["redis"], "up", "{ready}");

    let host = [("host", "tls.test")];
    let first = support::request("GET", &a.url("/s"), &host, None);
    assert_eq!(first.x_cache(), "MISS");
    let second = support::request("GET", &b.url("/s"), &host, None);
    assert_eq!(second.x_cache(), "HIT", "served from Redis over TLS");
    assert_eq!(origin.hits(), 1);
    assert_eq!(b.stats()["tiers"]["l2"]["hits"], 1);
}
